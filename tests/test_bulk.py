"""Issue 21: ``fh-screen bulk`` sweeps systems through the one screen service into the store,
resumes and skips what is stored, reports bad input in one line, and ``fh-screen query --top``
answers across every stored screen. Real data: the shipped model and OQMD reference entries in
an SQLite store on disk (small systems, --max-atoms 6 to keep the file fast)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from jobs_fixtures import fh_settings, reference_store  # noqa: F401 - fixtures
from typer.testing import CliRunner

from fh_screen.screening import ScreenOptions
from fh_screen.store import FhScreenStore
from fh_screen.sweep import (
    SweepInputError,
    SweepOptions,
    parse_nelements,
    read_systems_file,
    run_sweep,
    systems_from_elements,
)

SMALL = ["--max-atoms", "6"]


@pytest.fixture
def store_file(tmp_path, fh_settings) -> Path:  # noqa: F811 - the fixture above
    """An embedded store file whose reference collection holds the real OQMD entries of Li-Fe-P-O-Mn."""
    path = tmp_path / "sweep.sqlite"
    reference_store(path, "Li-Fe-P-O-Mn")
    return path


def _invoke(*args: str):
    from fh_screen.cli import build_app

    return CliRunner().invoke(build_app(), list(args))


def _screens(path: Path) -> list[dict]:
    with FhScreenStore.embedded(path) as store:
        return list(store.screens.query(properties=["run_id", "chemsys", "origin", "keep_top", "candidates"]))


def test_systems_are_every_combination_once_in_a_fixed_order_and_bad_lists_fail_in_one_line(tmp_path):
    systems = systems_from_elements("Li,Fe,P,O", "2,3")
    assert len(systems) == 6 + 4 and systems[0] == "Fe-Li" and systems[-1] == "Li-O-P"
    assert systems == systems_from_elements(["O", "P", "Fe", "Li"], [3, 2])  # order does not matter
    assert len(systems_from_elements("all", "2")) == 86 * 85 // 2
    assert parse_nelements("2-4") == (2, 3, 4)
    for elements, sizes, message in [
        ("Li,Xx,O", "2", "unknown element 'Xx'"), ("li,fe", "2", "did you mean Li?"), (" , ", "2", "empty element list"),
        ("Li,Fe", "1", "between 2 and"), ("Li,Fe", "two", "must be an integer"), ("Li,Fe", "3", "give no system"),
        ("Li,Li,O", "2", "duplicate element 'Li'"), (["O", "P", "Fe", "Li", "Li"], "3", "duplicate element 'Li'"),
    ]:
        with pytest.raises(SweepInputError, match=message) as info:
            systems_from_elements(elements, sizes)
        assert "\n" not in str(info.value)
    listed = tmp_path / "systems.txt"
    listed.write_text("# ternaries\nLi-Fe-O\nO-Fe-Li   # the same system\n\nNa-Cl\n")
    assert read_systems_file(listed) == ["Fe-Li-O", "Cl-Na"]
    listed.write_text("Li-Fe-O\nLi-Qq\n")
    with pytest.raises(SweepInputError, match=r"systems.txt line 2: unknown element 'Qq'"):
        read_systems_file(listed)
    with pytest.raises(SweepInputError, match="not found"):
        read_systems_file(tmp_path / "missing.txt")



def test_bulk_refuses_a_repeated_element_in_one_line_before_any_store_is_made(tmp_path):
    """``--elements Li,Li,O`` used to run as Li,O; it is refused as ``Li-Li-O`` is everywhere else."""
    store_file = tmp_path / "bulk.sqlite"
    result = _invoke("bulk", "--elements", "Li,Li,O", "--nelements", "2", "--store", str(store_file))
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert "duplicate element 'Li' in the element list" in result.output and not store_file.exists()


def test_bulk_saves_one_screen_document_per_system_and_a_rerun_skips_them(store_file, tmp_path):
    summary = tmp_path / "summary.json"
    result = _invoke("bulk", "--elements", "Li,Fe,O", "--nelements", "2,3", *SMALL, "--store", str(store_file),
                     "--json", str(summary))
    assert result.exit_code == 0, result.output
    report = json.loads(summary.read_text())
    assert {"systems_done", "systems_skipped", "systems_failed", "candidates", "seconds"} <= set(report)
    assert (report["systems_done"], report["systems_skipped"], report["systems_failed"]) == (4, 0, 0)
    docs = _screens(store_file)
    assert sorted(d["chemsys"] for d in docs) == ["Fe-Li", "Fe-Li-O", "Fe-O", "Li-O"]
    assert {d["origin"] for d in docs} == {"bulk"} and {d["keep_top"] for d in docs} == {100}
    assert report["candidates"] == sum(FhScreenStore.embedded(store_file).connect().get_screen(d["run_id"]).n_candidates
                                       for d in docs)

    # the same sweep again: everything is stored with this model and these options
    result = _invoke("bulk", "--elements", "Li,Fe,O", "--nelements", "2,3", *SMALL, "--store", str(store_file),
                     "--json", "-")
    assert result.exit_code == 0, result.output
    assert "4 of 4 systems already stored" in result.output
    again = json.loads(result.stdout[result.stdout.index("{"):])
    assert (again["systems_done"], again["systems_skipped"]) == (0, 4)
    # a wider sweep screens only the new systems; other options are another screen
    result = _invoke("bulk", "--elements", "Li,Fe,O,P", "--nelements", "2,3", *SMALL, "--store", str(store_file))
    assert result.exit_code == 0 and "4 of 10 systems already stored" in result.output
    assert "6 systems screened, 4 skipped" in result.output
    result = _invoke("bulk", "--elements", "Li,O", "--nelements", "2", "--max-atoms", "5", "--store", str(store_file))
    assert result.exit_code == 0 and "1 systems screened, 0 skipped" in result.output
    # a screen that kept 100 rows does not stand for one asked to keep all (--keep-top 0)
    for expected in ("1 systems screened, 0 skipped", "0 systems screened, 1 skipped"):
        result = _invoke("bulk", "--elements", "Li,O", "--nelements", "2", *SMALL, "--keep-top", "0",
                         "--store", str(store_file))
        assert result.exit_code == 0 and expected in result.output, result.output
    counts = Counter(d["chemsys"] for d in _screens(store_file))
    assert len(counts) == 10 and counts["Li-O"] == 3 and set(counts.values()) == {1, 3}
    # a screen whose hull counted only some sources (fh-screen SYSTEM --sources oqmd) does not stand for a sweep's
    with FhScreenStore.embedded(store_file) as store:
        fe_o = [d for d in store.screens.query({"chemsys": "Fe-O"})]
        store.screens.update([{**fe_o[0], "sources": ["oqmd"]}], key="run_id")
    result = _invoke("bulk", "--elements", "Fe,O", "--nelements", "2", *SMALL, "--store", str(store_file))
    assert result.exit_code == 0 and "1 systems screened, 0 skipped" in result.output, result.output

    # the cross-system answer, by the CLI and the API
    result = _invoke("query", "--top", "5", "--min-p", "0", "--store", str(store_file), "--json", "-")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 5 and all({"system", "formula", "p_stable", "model"} <= set(r) for r in rows)
    assert [r["p_stable"] for r in rows] == sorted((r["p_stable"] for r in rows), reverse=True)
    assert all(r["model"].startswith("attention-ensemble@") for r in rows)
    with FhScreenStore.embedded(store_file) as store:
        assert store.top_candidates(top=5, min_p=0) == rows
        stored = {(d["run_id"], c["formula"]): c for d in store.screens.query({}) for c in d["candidates"]}
    # ΔH_f is credited to the model that predicted it: the cascade's prefilter on a row the screen did not refine
    for row in rows:
        candidate = stored[(row["run_id"], row["formula"])]
        assert row["dhf_model"] == candidate["model"]
        assert row["dhf_model"].startswith("attention-ensemble@" if candidate["refined"] else "paper@")
    with FhScreenStore.embedded(store_file) as store:
        assert store.n_predictions() > 0  # the one saving rule: the model's predictions beside the screens
        high = store.top_candidates(top=0, min_p=0.2)
        within = store.top_candidates(top=0, chemsys="Li-O")
    assert all(r["p_stable"] >= 0.2 for r in high)
    assert {r["system"] for r in within} <= {"Li-O"} and within
    assert len({(r["formula"], r["model"]) for r in within}) == len(within)  # each composition once per model
    result = _invoke("query", "--top", "3", "--store", str(store_file))
    assert result.exit_code == 0 and "best 3 new candidates" in result.output
    for args, message in [(["--min-p", "2"], "between 0 and 1"), (["--top", "-1"], "--top must be"),
                          (["--top", "3", "--formula", "LiO2"], "--top/--min-p ranks stored screens")]:
        result = _invoke("query", *args, "--store", str(store_file))
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_bad_input_is_one_line_exit_2_and_a_refused_system_is_skipped_while_the_sweep_goes_on(store_file, tmp_path):
    for args, message in [
        (["--elements", "Li,Xx"], "unknown element 'Xx'"),
        (["--elements", ","], "empty element list"),
        ([], "give either --elements"),
        (["--elements", "Li,O", "--systems-file", "x.txt"], "give either --elements"),
        (["--systems-file", str(tmp_path / "none.txt")], "systems file not found"),
        (["--elements", "Li,O", "--processes", "0"], "--processes must be"),
        (["--elements", "Li,O", "--model", "no-such-model"], "no-such-model"),
    ]:
        result = _invoke("bulk", *args, "--store", str(store_file))
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output
        assert result.output.count("error:") == 1
    listed = tmp_path / "systems.txt"
    listed.write_text("Li-O\nLi-Fe-P-O\nFe-O\n")
    summary = tmp_path / "summary.json"
    result = _invoke("bulk", "--systems-file", str(listed), *SMALL, "--max-candidates", "100", "--store",
                     str(store_file), "--json", str(summary), "--no-predictions")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "skipped Fe-Li-O-P" in result.output and "above the limit" in result.output
    report = json.loads(summary.read_text())
    assert (report["systems_done"], report["systems_failed"]) == (2, 1)
    assert report["failures"][0]["system"] == "Fe-Li-O-P"
    assert sorted(d["chemsys"] for d in _screens(store_file)) == ["Fe-O", "Li-O"]
    with FhScreenStore.embedded(store_file) as store:
        assert store.n_predictions() == 0  # --no-predictions: the screen documents only


def test_an_interrupted_sweep_resumes_with_nothing_lost_or_doubled(store_file):
    systems = systems_from_elements("Li,Fe,O", "2,3")
    options = ScreenOptions(max_atoms=6)
    sweep = SweepOptions(store_file=store_file)
    seen: list[str] = []

    def stop_after_three(outcome) -> None:
        seen.append(outcome.system)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(systems, options, sweep, on_outcome=stop_after_three)
    assert sorted(d["chemsys"] for d in _screens(store_file)) == sorted(seen)
    report = run_sweep(systems, options, sweep)
    assert (report.systems_done, report.systems_skipped, report.systems_failed) == (2, 2, 0)
    assert Counter(d["chemsys"] for d in _screens(store_file)) == Counter(systems)


def test_two_worker_processes_write_each_system_once_and_a_killed_sweep_resumes(store_file, tmp_path):
    systems = systems_from_elements("Li,Fe,Mn,P,O", "2")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), *sys.path])}
    command = [sys.executable, "-m", "fh_screen.cli", "bulk", "--elements", "Li,Fe,Mn,P,O", "--nelements", "2",
               *SMALL, "--store", str(store_file), "--processes", "2"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None and len(_screens(store_file)) < 2:
        time.sleep(0.05)
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)  # kill -9 of the parent mid-sweep
    process.wait()
    saved = Counter(d["chemsys"] for d in _screens(store_file))
    assert saved and set(saved.values()) == {1}
    time.sleep(0.2)  # the workers die with their parent (PR_SET_PDEATHSIG): nothing is written after this
    after_kill = _screens(store_file)
    time.sleep(0.5)
    assert len(_screens(store_file)) == len(after_kill)
    report = run_sweep(systems, ScreenOptions(max_atoms=6), SweepOptions(store_file=store_file))  # resume here
    assert report.systems_failed == 0 and report.systems_skipped == len(after_kill)
    assert report.systems_done + report.systems_skipped == len(systems)
    assert Counter(d["chemsys"] for d in _screens(store_file)) == Counter(systems)


def test_the_maggma_builder_runs_the_same_sweep_skips_what_is_stored_and_prechunks_disjoint_slices(store_file):
    from maggma.cli.serial import serial

    from fh_screen.sweep.builder import SweepBuilder

    store = FhScreenStore.embedded(store_file)
    systems = ["Fe-O", "Li-O", "Fe-Li-O", "Fe-Li-Mn-O-P"]
    builder = SweepBuilder(store.reference, store.screens, systems, predictions=store.predictions,
                           screen_options={"max_atoms": 6, "max_candidates": 100})
    serial(builder, no_bars=True)
    docs = _screens(store_file)
    assert sorted(d["chemsys"] for d in docs) == ["Fe-Li-O", "Fe-O", "Li-O"]  # the quinary is refused, logged, skipped
    assert {d["origin"] for d in docs} == {"bulk"}
    # `fh-screen bulk` with the same options sees the builder's screens as done
    result = _invoke("bulk", "--elements", "Li,Fe,O", "--nelements", "2,3", *SMALL, "--max-candidates", "100",
                     "--store", str(store_file))
    assert result.exit_code == 0 and "3 of 4 systems already stored" in result.output
    again = SweepBuilder(store.reference, store.screens, systems, predictions=store.predictions,
                         screen_options={"max_atoms": 6, "max_candidates": 100})
    again.connect()
    assert [i["system"] for i in again.get_items()] == ["Fe-Li-Mn-O-P"]
    chunks = list(again.prechunk(3))
    assert sorted(s for c in chunks for s in c["systems"]) == sorted(systems) and len(chunks) == 3


def test_a_store_that_fails_mid_sweep_stops_it_with_one_line_and_a_rerun_resumes(store_file, monkeypatch):
    import sqlite3

    from fh_screen.store.stores import FhScreenStore as StoreClass
    from fh_screen.sweep import SweepStoreError

    systems = systems_from_elements("Li,Fe,O", "2,3")
    options, sweep = ScreenOptions(max_atoms=6), SweepOptions(store_file=store_file)
    original, calls = StoreClass.save_screen, []

    def full_after_two(self, doc):
        calls.append(doc)
        if len(calls) > 2:
            raise sqlite3.OperationalError("database or disk is full")
        return original(self, doc)

    monkeypatch.setattr(StoreClass, "save_screen", full_after_two)
    with pytest.raises(SweepStoreError) as info:
        run_sweep(systems, options, sweep)
    message = str(info.value)
    assert "database or disk is full" in message and "rerun the same command to resume" in message
    assert "\n" not in message and len(_screens(store_file)) == 2
    monkeypatch.setattr(StoreClass, "save_screen", original)  # the disk has room again
    report = run_sweep(systems, options, sweep)
    assert (report.systems_done, report.systems_skipped) == (2, 2)
    assert Counter(d["chemsys"] for d in _screens(store_file)) == Counter(systems)


def test_the_jobflow_maker_splits_the_sweep_into_batches_that_write_each_system_once(store_file):
    from jobflow import run_locally
    from jobs_fixtures import memory_job_store

    from fh_screen.errors import FhScreenError
    from fh_screen.jobs.bulk import BulkScreenMaker

    maker = BulkScreenMaker(screen_options={"max_atoms": 6}, batch_size=2, store_file=str(store_file))
    flow = maker.make(["Li-O", "O-Fe", "Li-Fe-O", "Fe-O"])
    assert len(flow.jobs) == 2
    outputs = run_locally(flow, store=memory_job_store(), log=False, ensure_success=True)
    reports = [outputs[j.uuid][1].output for j in flow.jobs]
    assert sum(r.systems_done for r in reports) == 3 and {r.systems_failed for r in reports} == {0}
    assert Counter(d["chemsys"] for d in _screens(store_file)) == Counter(["Li-O", "Fe-O", "Fe-Li-O"])
    again = run_locally(maker.make(["Li-O", "Fe-O", "Fe-Li-O"]), store=memory_job_store(), log=False,
                        ensure_success=True)
    assert sum(r[1].output.systems_skipped for r in again.values()) == 3
    for bad, message in [(["Li-Xx"], "unknown element"), ([], "no system")]:
        with pytest.raises(FhScreenError, match=message):
            maker.make(bad)
    with pytest.raises(FhScreenError, match="unknown screen option 'max_atom' \\(did you mean 'max_atoms'\\?\\)"):
        BulkScreenMaker(screen_options={"max_atom": 6}).make(["Li-O"])


def test_a_sweep_with_the_slow_default_model_gives_each_system_the_answer_of_its_own_screen(store_file):
    """The sweep remembers the slow model's predictions across systems (Fe-Li is met in Fe-Li-O
    and Fe-Li-P); every stored screen still equals the screen of that system alone."""
    from fh_screen.models.predictor import load_predictor
    from fh_screen.service import run_screen

    options = ScreenOptions(max_atoms=6)
    report = run_sweep(["Fe-Li-O", "Fe-Li-P", "Fe-O-P"], options, SweepOptions(store_file=store_file, keep_top=None))
    assert report.systems_done == 3
    predictor = load_predictor(None)
    assert predictor.is_slow
    with FhScreenStore.embedded(store_file) as store:
        docs = {d["chemsys"]: store.get_screen(d["run_id"]) for d in store.screens.query(properties=["chemsys", "run_id"])}
    for system in ("Fe-Li-O", "Fe-Li-P", "Fe-O-P"):
        swept = {c.formula: c for c in docs[system].candidates}
        alone, _, _ = run_screen(system, predictor, options=options, store=FhScreenStore.embedded(store_file), save=False)
        own = alone.table.set_index("formula")
        assert set(swept) == set(own.index) and len(swept) > 10
        for formula, candidate in swept.items():
            row = own.loc[formula]
            assert abs(candidate.dhf_pred_ev_per_atom - row["dhf_pred_ev_per_atom"]) < 1e-6
            assert abs(candidate.p_stable - row["p_stable"]) < 1e-6
            assert abs(candidate.e_above_hull_pred_ev_per_atom - row["e_above_hull_pred_ev_per_atom"]) < 1e-6


def test_a_sweep_counts_the_sources_it_is_given_and_resumes_by_them(store_file):
    """`--sources` / SweepOptions.sources / SweepBuilder(reference_sources=) shape each hull and what counts as stored."""
    from fh_screen.store import ReferenceEntryDoc
    from fh_screen.sweep.builder import SweepBuilder

    with FhScreenStore.embedded(store_file) as store:
        oqmd_li2o = store.reference_frame(formula="Li2O")["dhf_ev_per_atom"].item()
        store.reference.update([ReferenceEntryDoc.from_formula("Li2O", oqmd_li2o - 0.5, source="chgnet").model_dump()],
                               key=["formula", "source"])
    for sources, expected in (("oqmd", "1 systems screened, 0 skipped"), (" OQMD", "0 systems screened, 1 skipped"),
                              ("oqmd,chgnet", "1 systems screened, 0 skipped"),
                              ("chgnet,oqmd", "0 systems screened, 1 skipped"),  # a set: the order does not matter
                              (None, "1 systems screened, 0 skipped"), (None, "0 systems screened, 1 skipped")):
        args = ["--sources", sources] if sources else []
        result = _invoke("bulk", "--elements", "Li,O", "--nelements", "2", *SMALL, *args, "--store", str(store_file))
        assert result.exit_code == 0 and expected in result.output, (sources, result.output)
        assert "no reference entry" not in result.output
    with FhScreenStore.embedded(store_file) as store:
        docs = {tuple(d["sources"]) if d.get("sources") else None: d
                for d in store.screens.query({"chemsys": "Li-O"}, properties=["sources", "candidates"])}
    assert set(docs) == {("oqmd",), ("chgnet", "oqmd"), None}
    # a source the store holds nothing of (a typo) is named once, before the sweep, as the screen does
    typo = _invoke("bulk", "--elements", "Li,O", "--nelements", "2", *SMALL, "--sources", "oqmd,chgent",
                   "--store", str(store_file), "--json", "-")
    assert typo.exit_code == 0, typo.output
    assert json.loads(typo.stdout)["notes"] == [
        "source chgent: no reference entry in the store (it holds chgnet, oqmd): a misspelt name, or nothing of it "
        "computed yet"]
    assert " ".join(typo.stderr.split()).count("source chgent: no reference entry") == 1

    def li2o(doc: dict) -> float:
        return next(c for c in doc["candidates"] if c["formula"] == "Li2O")["known_dhf_ev_per_atom"]

    assert li2o(docs[("oqmd",)]) == pytest.approx(oqmd_li2o)
    assert li2o(docs[("chgnet", "oqmd")]) == li2o(docs[None]) == pytest.approx(oqmd_li2o - 0.5)  # the lower counts
    # the maggma builder resumes by the same rule
    store = FhScreenStore.embedded(store_file)
    builder = SweepBuilder(store.reference, store.screens, ["Li-O", "Fe-O"], reference_sources="oqmd",
                           screen_options={"max_atoms": 6})
    builder.connect()
    assert [item["system"] for item in builder.get_items()] == ["Fe-O"]
    result = _invoke("bulk", "--elements", "Li,O", "--nelements", "2", "--sources", ",", "--store", str(store_file))
    assert result.exit_code == 2 and "no source named" in result.output and "Traceback" not in result.output


def test_an_interrupted_sweep_with_workers_counts_the_systems_the_store_holds(store_file):
    """Workers save a chunk of systems before the sweep hears of them: the count is the store's, not the outcomes heard."""
    from fh_screen.sweep import SweepInterrupted

    systems = systems_from_elements("Li,Fe,Mn,P,O", "2")
    options = ScreenOptions(max_atoms=6)
    heard: list[str] = []

    def stop_at_the_first(outcome) -> None:
        heard.append(outcome.system)
        raise KeyboardInterrupt

    with pytest.raises(SweepInterrupted) as info:
        run_sweep(systems, options, SweepOptions(store_file=store_file, processes=2, chunk_size=3),
                  on_outcome=stop_at_the_first)
    stored = _screens(store_file)
    assert len(heard) == 1 and info.value.saved == len(stored) >= 3  # a whole chunk of three was saved first
    report = run_sweep(systems, options, SweepOptions(store_file=store_file))
    assert report.systems_skipped == len(stored) and report.systems_done == len(systems) - len(stored)


def test_bulk_interrupted_with_two_processes_reports_the_systems_saved(store_file, monkeypatch):
    from fh_screen.cli import bulk

    def interrupt(self, outcome) -> None:  # Ctrl-C as the first outcome arrives: the workers saved it already
        raise KeyboardInterrupt

    monkeypatch.setattr(bulk._Bar, "advance", interrupt)
    result = _invoke("bulk", "--elements", "Li,Fe,Mn,P,O", "--nelements", "2", *SMALL, "--store", str(store_file),
                     "--processes", "2")
    saved = len(_screens(store_file))
    assert result.exit_code == 130 and saved >= 1, result.output
    assert f"interrupted after {saved:,} saved systems; rerun the same command to resume" in result.output


def test_a_store_error_after_workers_saved_unheard_systems_names_the_stored_count(store_file, monkeypatch):
    """Workers hand their outcomes over a chunk at a time: a full disk is reported with what the store holds."""
    from fh_screen.sweep import SweepStoreError, runner

    original = runner._outcomes

    def workers_ahead_of_the_parent(pending, work, processes, chunk_size):
        screened = original(pending[:3], work, 1, None)  # three systems saved ...
        first = next(screened)
        list(screened)
        yield first  # ... one heard of, then the disk is full
        yield runner.SystemOutcome(pending[3], "store-error", error="database or disk is full")

    monkeypatch.setattr(runner, "_outcomes", workers_ahead_of_the_parent)
    with pytest.raises(SweepStoreError) as info:
        run_sweep(systems_from_elements("Li,Fe,Mn,O", "2"), ScreenOptions(max_atoms=6), SweepOptions(store_file=store_file))
    assert len(_screens(store_file)) == 3
    assert "after 3 saved systems: database or disk is full" in str(info.value), str(info.value)
