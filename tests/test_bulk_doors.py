"""`fh-screen bulk`, ``run_sweep`` and ``BulkScreenMaker`` give the answers and errors of the other doors:
a new ``--store`` file is filled with the shipped OQMD table as the configured store is, a system
screened with no reference compound is named and screened again once one arrives, a systems file
is read line by line by the one chemical-system parser, ``keep_top`` 0 keeps every candidate
everywhere, the screen's limits are refused before anything is loaded, and a store that cannot
be opened is named without a resume hint. Real data: slices of the shipped OQMD table in SQLite
files on disk, the shipped ``paper`` model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jobs_fixtures import fh_settings, reference_store  # noqa: F401 - fixtures
from typer.testing import CliRunner

from fh_screen.errors import FhScreenError
from fh_screen.screening import ScreenOptions
from fh_screen.store import FhScreenStore
from fh_screen.store import bootstrap
from fh_screen.sweep import SweepInputError, SweepOptions, SweepStoreError, read_systems_file, run_sweep

SMALL = ["--max-atoms", "6", "--model", "paper"]


def _invoke(*args: str):
    from fh_screen.cli import build_app

    return CliRunner().invoke(build_app(), list(args))


def _screens(path: Path) -> list[dict]:
    with FhScreenStore.embedded(path) as store:
        return list(store.screens.query(properties=["chemsys", "n_reference", "problems", "keep_top", "n_candidates",
                                                    "candidates"]))


@pytest.fixture
def shipped_slice(fh_settings, monkeypatch):  # noqa: F811 - the fixture above
    """The shipped table cut to the entries of Li-Fe-O (real OQMD values), filling on first use switched on."""
    full = bootstrap.load_reference_table()
    table = full[full["formula"].isin(set(bootstrap.packaged_reference_frame("Li-Fe-O")["formula"]))]
    table = table.reset_index(drop=True)
    monkeypatch.setattr(bootstrap, "_cached_table", lambda: table)
    monkeypatch.setenv("FH_SCREEN_REFERENCE_DATA", "true")
    return table


def test_a_new_store_file_is_filled_with_the_shipped_table_on_first_use_as_the_configured_store(shipped_slice,
                                                                                               tmp_path):
    listed = tmp_path / "systems.txt"
    listed.write_text("Li-O\n")
    fresh = tmp_path / "fresh.sqlite"
    result = _invoke("bulk", "--systems-file", str(listed), *SMALL, "--store", str(fresh), "--json", "-")
    assert result.exit_code == 0, result.output
    assert "first use: filling" in result.stderr
    report = json.loads(result.stdout)
    assert report["systems_done"] == 1 and report["no_reference"] == [] and report["notes"] == []
    with FhScreenStore.embedded(fresh) as store:
        assert store.n_reference() == len(shipped_slice)
    (doc,) = _screens(fresh)
    assert doc["n_reference"] > 0 and doc["problems"] == []
    # the Python door and the jobflow door fill a new file the same way
    api_file = tmp_path / "api.sqlite"
    report = run_sweep(["Fe-O"], ScreenOptions(max_atoms=6), SweepOptions(model="paper", store_file=api_file))
    assert report.systems_done == 1 and not report.no_reference
    assert _screens(api_file)[0]["n_reference"] > 0
    # a file holding only the user's own entries is used as it is, never mixed with the shipped table
    own = tmp_path / "own.sqlite"
    reference_store(own, "Li-O")
    with FhScreenStore.embedded(own) as store:
        n_own = store.n_reference()
    assert run_sweep(["Li-O"], ScreenOptions(max_atoms=6), SweepOptions(model="paper", store_file=own)).systems_done == 1
    with FhScreenStore.embedded(own) as store:
        assert store.n_reference() == n_own and "oqmd_reference.csv.gz" not in set(store.reference.distinct("source_file"))


def test_a_system_screened_with_no_reference_compound_is_named_and_screened_again_once_one_arrives(
        fh_settings, tmp_path):  # noqa: F811 - the fixture above
    path = tmp_path / "sweep.sqlite"
    reference_store(path, "Li-O")  # entries of another system only
    sweep = SweepOptions(model="paper", store_file=path)
    options = ScreenOptions(max_atoms=6)
    report = run_sweep(["Cl-Na", "Li-O"], options, sweep)
    assert report.systems_done == 2 and report.no_reference == ["Cl-Na"]
    assert any("1 system(s) screened with no reference compound" in n and "Cl-Na" in n for n in report.notes)
    docs = {d["chemsys"]: d for d in _screens(path)}
    assert docs["Cl-Na"]["n_reference"] == 0 and docs["Li-O"]["n_reference"] > 0
    assert any("no reference compound in Cl-Na" in p["message"] for p in docs["Cl-Na"]["problems"])
    # nothing new to anchor it: the rerun skips it
    again = run_sweep(["Cl-Na", "Li-O"], options, sweep)
    assert (again.systems_done, again.systems_skipped) == (0, 2)
    # reference entries of Cl-Na arrive: the rerun screens it again, on its compounds
    reference_store(path, "Cl-Na")
    again = run_sweep(["Cl-Na", "Li-O"], options, sweep)
    assert (again.systems_done, again.systems_skipped, again.no_reference) == (1, 1, [])
    assert max(d["n_reference"] for d in _screens(path) if d["chemsys"] == "Cl-Na") > 0
    # the CLI says it: an empty store (reference data off) once before the sweep, the systems after it
    listed = tmp_path / "systems.txt"
    listed.write_text("Li-O\n")
    empty = tmp_path / "empty.sqlite"
    result = _invoke("bulk", "--systems-file", str(listed), *SMALL, "--store", str(empty), "--json", "-")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["no_reference"] == ["Li-O"] and report["notes"][0].startswith("no reference entries in the store")
    stderr = " ".join(result.stderr.split())
    assert "note: no reference entries in the store" in stderr and "1 system(s) screened with no reference" in stderr


def test_each_line_of_a_systems_file_is_read_by_the_one_chemical_system_parser(fh_settings, tmp_path):  # noqa: F811
    from fh_screen.chem.candidates import ChemsysError, parse_chemsys

    listed = tmp_path / "systems.txt"
    listed.write_text("# ternaries\nLi-Fe-O\n  O-Fe-Li   # the same system\n\nNa-Cl\n")
    assert read_systems_file(listed) == ["Fe-Li-O", "Cl-Na"]
    for bad in ("Li--O", "Li-O-", "-Li-O", "Li,O", "Li O", "Li;O", "Li-Li"):
        listed.write_text(f"# a comment\nFe-O\n{bad}\n")
        with pytest.raises(ChemsysError) as expected:
            parse_chemsys(bad)  # what fh-screen SYSTEM, screen() and the Makers say
        with pytest.raises(SweepInputError) as info:
            read_systems_file(listed)
        assert str(info.value) == f"{listed} line 3: {expected.value}"
        result = _invoke("bulk", "--systems-file", str(listed), *SMALL, "--store", str(tmp_path / "never.sqlite"))
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert result.output.count("error:") == 1 and "line 3: " in result.output
    assert not (tmp_path / "never.sqlite").exists()


def test_keep_top_0_keeps_every_candidate_at_every_door_and_a_bad_value_is_one_line(fh_settings, tmp_path):  # noqa: F811
    from jobflow import run_locally
    from jobs_fixtures import memory_job_store

    from fh_screen.jobs.bulk import BulkScreenMaker

    path = tmp_path / "sweep.sqlite"
    reference_store(path, "Li-O")
    assert SweepOptions(keep_top=0).keep_top is None and SweepOptions(keep_top=None).keep_top is None
    maker = BulkScreenMaker(screen_options={"max_atoms": 6}, model="paper", keep_top=0, store_file=str(path))
    flow = maker.make(["Li-O"])
    outputs = run_locally(flow, store=memory_job_store(), log=False, ensure_success=True)
    assert outputs[flow.jobs[0].uuid][1].output.systems_done == 1
    (doc,) = _screens(path)
    assert doc["keep_top"] is None and len(doc["candidates"]) == doc["n_candidates"] > 0
    # the CLI's --keep-top 0 sees the Maker's screen as done
    listed = tmp_path / "systems.txt"
    listed.write_text("Li-O\n")
    result = _invoke("bulk", "--systems-file", str(listed), *SMALL, "--keep-top", "0", "--store", str(path))
    assert result.exit_code == 0 and "0 systems screened, 1 skipped" in result.output, result.output
    for bad in (-1, True, "5", 2.5):
        with pytest.raises(FhScreenError, match="keep_top must be a positive integer, or 0 or None") as info:
            BulkScreenMaker(keep_top=bad).make(["Li-O"])
        assert "\n" not in str(info.value)
        with pytest.raises(SweepInputError, match="keep_top must be") as info:
            SweepOptions(keep_top=bad)
        assert "\n" not in str(info.value)
    for options, message in [({"processes": 0}, "sweep option processes: Input should be greater than or equal to 1"),
                             ({"threads": 0}, "sweep option threads"), ({"sources": ","}, "no source named"),
                             ({"keep_tops": 5}, "sweep option keep_tops")]:
        with pytest.raises(SweepInputError, match=message) as info:
            SweepOptions(**options)
        assert "\n" not in str(info.value)


def test_the_screen_limits_are_refused_before_anything_is_loaded_with_the_screens_message(fh_settings, tmp_path,  # noqa: F811
                                                                                          monkeypatch):
    from fh_screen.jobs.bulk import BulkScreenMaker
    from fh_screen.jobs.prescreen import PrescreenMaker
    from fh_screen.models import predictor

    path = tmp_path / "sweep.sqlite"
    for value in (0, 1, -1):
        screened = _invoke("screen", "Li-O", "--max-atoms", str(value), "--model", "paper", "--no-store")
        assert screened.exit_code == 2
        message = screened.output.strip().removeprefix("error: ")
        # the commands name the flag a user typed; the Python doors the field, in the same words
        assert message == f"--max-atoms must be an integer from 2 to 200, got {value}"
        with pytest.raises(FhScreenError) as prescreen:
            PrescreenMaker(screen_options={"max_atoms": value}).make("Li-O")
        with pytest.raises(FhScreenError) as bulk:
            BulkScreenMaker(screen_options={"max_atoms": value}).make(["Li-O"])
        assert str(bulk.value) == str(prescreen.value) == message.replace("--max-atoms", "max_atoms")

        def no_model(*args, **kwargs):
            raise AssertionError("the model was loaded")

        with monkeypatch.context() as patch:
            patch.setattr(predictor, "load_predictor", no_model)
            result = _invoke("bulk", "--elements", "Li,Fe,O", "--nelements", "2,3", "--max-atoms", str(value),
                             "--model", "paper", "--store", str(path))
        assert result.exit_code == 2 and result.output.strip() == f"error: {message}", result.output
    with pytest.raises(FhScreenError, match="max_per_element must be a positive integer, got 0"):
        BulkScreenMaker(screen_options={"max_atoms": 6, "max_per_element": 0}).make(["Li-O"])
    result = _invoke("bulk", "--elements", "Li,O", "--nelements", "2", "--max-per-element", "0", *SMALL,
                     "--store", str(path))
    assert result.exit_code == 2 and "--max-per-element must be a positive integer, got 0" in result.output
    assert not path.exists()  # nothing was opened


def test_a_wrong_model_fails_at_make_in_every_door_with_the_same_line(fh_settings, tmp_path):  # noqa: F811
    """An unknown model, another version or an empty name: the screen's one line at ``make()``, not at run time."""
    from fh_screen.jobs.bulk import BulkScreenMaker
    from fh_screen.jobs.prescreen import PrescreenMaker

    for model, message in [("nope", "no model named 'nope'"), ("paper@9", "model 'paper' is version 1, not '9'"),
                           ("", "empty model name")]:
        with pytest.raises(FhScreenError, match=message) as bulk:
            BulkScreenMaker(model=model).make(["Li-O"])
        with pytest.raises(FhScreenError) as prescreen:
            PrescreenMaker(model=model).make("Li-O")
        assert str(bulk.value) == str(prescreen.value) and "\n" not in str(bulk.value)
        listed = _invoke("bulk", "--elements", "Li,O", "--nelements", "2", "--model", model,
                         "--store", str(tmp_path / "sweep.sqlite"))
        assert listed.exit_code == 2 and listed.output.strip() == f"error: {bulk.value}", listed.output


def test_a_store_that_cannot_be_opened_is_named_without_a_resume_hint(fh_settings, tmp_path):  # noqa: F811
    folder = tmp_path / "folder.sqlite"
    folder.mkdir()
    text = tmp_path / "notes.sqlite"
    text.write_text("not a database\n" * 100)
    listed = tmp_path / "systems.txt"
    listed.write_text("Li-O\n")
    for where, message in ((folder, "is a folder, not an SQLite file"), (text, "file is not a database")):
        result = _invoke("bulk", "--systems-file", str(listed), *SMALL, "--store", str(where))
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert result.output.count("error:") == 1 and message in result.output and str(where.name) in result.output
        assert "rerun" not in result.output and "saved so far" not in result.output
        with pytest.raises(SweepStoreError) as info:
            run_sweep(["Li-O"], ScreenOptions(max_atoms=6), SweepOptions(model="paper", store_file=where))
        assert message in str(info.value) and "resume" not in str(info.value)
    assert text.read_text() == "not a database\n" * 100  # the file is left as it was


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--elements", "Li,,O", "malformed element list 'Li,,O': an empty item between commas"),
    ("--elements", "Li,O,", "malformed element list 'Li,O,': an empty item between commas"),
    ("--elements", "Li O", "malformed element list 'Li O': 'Li O' is not one item"),
    ("--elements", "Li;O", "malformed element list 'Li;O': 'Li;O' is not one item"),
    ("--nelements", "2-", "number of elements must be an integer or a range like 2-4, got '2-'"),
    ("--nelements", "2,,3", "malformed list of system sizes '2,,3': an empty item between commas"),
    ("--nelements", "2 3", "malformed list of system sizes '2 3': '2 3' is not one item"),
    ("--nelements", "3-2", "range of system sizes '3-2' runs backwards"),
])
def test_a_malformed_element_or_size_list_is_refused_in_one_line(fh_settings, tmp_path, option, value, message):  # noqa: F811
    args = {"--elements": "Li,Fe,O", "--nelements": "2", option: value}
    store = tmp_path / "never.sqlite"
    result = _invoke("bulk", "--elements", args["--elements"], "--nelements", args["--nelements"], *SMALL,
                     "--store", str(store))
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert result.output.count("error:") == 1 and message in result.output, result.output
    assert not store.exists()


def test_a_systems_file_with_a_byte_order_mark_reads_its_first_line(fh_settings, tmp_path):  # noqa: F811
    listed = tmp_path / "systems.txt"
    listed.write_bytes("Li-O\nFe-O  # a comment\n".encode("utf-8-sig"))  # as Windows editors save UTF-8
    assert read_systems_file(listed) == ["Li-O", "Fe-O"]


def test_a_store_whose_first_use_fill_was_stopped_says_so_and_bulk_completes_it(shipped_slice, tmp_path):
    """A fill killed mid-way left a reference collection and nothing else: `query` and `runs` said the
    store had no collection 'predictions'."""
    from fh_screen.store.backend import SQLiteStore
    from fh_screen.store.documents import utcnow

    stopped = tmp_path / "F.sqlite"
    reference = SQLiteStore(stopped, "reference", key="formula")
    with reference:  # what a killed first use leaves: some batches of the shipped table, no stamp, no other collection
        reference.update(bootstrap._docs(shipped_slice, list(range(len(shipped_slice) // 2)), utcnow()), key="formula")
    for args in (["query", "--top", "5"], ["runs"], ["query", "--formula", "Li2O"]):
        result = _invoke(*args, "--store", str(stopped))
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert result.output.count("error:") == 1 and "has no collection" not in result.output
        assert f"store file {stopped} was not completely made" in result.output, result.output
        assert f"`fh-screen bulk ... --store {stopped}`" in result.output
    listed = tmp_path / "systems.txt"
    listed.write_text("Li-O\n")
    result = _invoke("bulk", "--systems-file", str(listed), *SMALL, "--store", str(stopped))
    assert result.exit_code == 0, result.output
    with FhScreenStore.embedded(stopped) as store:
        assert store.n_reference() == len(shipped_slice)  # the fill completed
    result = _invoke("query", "--top", "5", "--store", str(stopped))
    assert result.exit_code == 0 and "Li-O" in result.output, result.output


def test_a_store_file_a_full_disk_kept_from_being_made_is_not_left_behind(fh_settings, tmp_path, monkeypatch):  # noqa: F811
    import sqlite3

    from fh_screen.store.backend import SQLiteStore

    original = SQLiteStore._setup

    def disk_full(self):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(SQLiteStore, "_setup", disk_full)
    listed = tmp_path / "systems.txt"
    listed.write_text("Li-O\n")
    new = tmp_path / "x.sqlite"
    result = _invoke("bulk", "--systems-file", str(listed), *SMALL, "--store", str(new))
    assert result.exit_code == 2 and "database or disk is full" in result.output, result.output
    assert not new.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["systems.txt"]
    # a file that was there is never removed, nor one that failed for another reason (another process may be making it)
    monkeypatch.setattr(SQLiteStore, "_setup", original)
    reference_store(tmp_path / "kept.sqlite", "Li-O")
    monkeypatch.setattr(SQLiteStore, "_setup", disk_full)
    assert _invoke("bulk", "--systems-file", str(listed), *SMALL, "--store", str(tmp_path / "kept.sqlite")).exit_code == 2
    assert (tmp_path / "kept.sqlite").stat().st_size > 0

    def locked(self):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(SQLiteStore, "_setup", locked)
    assert _invoke("bulk", "--systems-file", str(listed), *SMALL, "--store", str(new)).exit_code == 2
    assert new.exists() and new.stat().st_size == 0


@pytest.mark.parametrize("flag, value, message", [
    ("--max-candidates", "0", "--max-candidates must be a positive integer, got 0"),
    ("--dft-budget", "0", "--dft-budget must be a positive integer (calculations), got 0"),
    ("--select-p-min", "1.5", "--select-p-min must be a probability between 0 and 1, got 1.5"),
])
def test_bulk_and_screen_name_the_flag_of_a_refused_screen_option(fh_settings, tmp_path, flag, value, message):  # noqa: F811
    path = tmp_path / "sweep.sqlite"
    swept = _invoke("bulk", "--elements", "Li,O", "--nelements", "2", flag, value, "--model", "paper", "--store", str(path))
    screened = _invoke("screen", "Li-O", flag, value, "--model", "paper", "--no-store")
    assert swept.exit_code == screened.exit_code == 2
    assert swept.output.strip() == screened.output.strip() == f"error: {message}"
    assert not path.exists()  # refused before the store was made
