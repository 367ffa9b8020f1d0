"""Provenance beside the exports of stored screens and sweeps: ``fh-screen query --top --csv/--json`` (rows across
many stored screens) and ``fh-screen bulk --json`` (the sweep's summary) used to write none, while a screen's
``--json/--csv`` and ``query --run ID --csv`` did. Real data: the shipped models and OQMD reference entries in an
SQLite store on disk (one small system, --max-atoms 6)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from jobs_fixtures import fh_settings, reference_store  # noqa: F401 - fixtures
from typer.testing import CliRunner

from fh_screen.exports import OQMD_ATTRIBUTION, top_candidates_provenance
from fh_screen.store import FhScreenStore
from fh_screen.store.query import TOP_COLUMNS
from fh_screen.version import __version__

SWEEP = ["bulk", "--elements", "Li,Fe,O", "--nelements", "2", "--max-atoms", "6"]


@pytest.fixture
def store_file(tmp_path, fh_settings) -> Path:  # noqa: F811 - the fixture above
    """An embedded store file whose reference collection holds the real OQMD entries of Li-Fe-O (source oqmd)."""
    path = tmp_path / "sweep.sqlite"
    reference_store(path, "Li-Fe-O")
    return path


def _invoke(*args: str):
    from fh_screen.cli import build_app

    return CliRunner().invoke(build_app(), list(args))


def test_a_sweep_summary_and_the_best_candidates_over_stored_screens_carry_their_provenance(store_file, tmp_path):
    summary = tmp_path / "summary.json"
    result = _invoke(*SWEEP, "--sources", "oqmd", "--store", str(store_file), "--json", str(summary))
    assert result.exit_code == 0, result.output
    assert "its provenance beside it" in result.output
    report = json.loads(summary.read_text())  # the summary itself is as it was: the counts, no provenance keys
    assert set(report) == {"model", "systems_total", "systems_done", "systems_skipped", "systems_failed", "candidates",
                           "likely", "seconds", "processes", "failures", "stopped", "notes", "no_reference"}
    with FhScreenStore.embedded(store_file, read_only=True) as store:
        docs = list(store.screens.query(properties=["run_id", "model", "weights_sha256", "origin"]))
    assert len(docs) == 3 and {d["origin"] for d in docs} == {"bulk"}
    sweep = json.loads((tmp_path / "summary.json.provenance.json").read_text())
    assert sweep["fh_screen_version"] == __version__ and sweep["model"] == report["model"] == docs[0]["model"]
    assert sweep["model_weights_sha256"] == docs[0]["weights_sha256"] and len(sweep["model_weights_sha256"]) == 64
    assert sweep["options"]["max_atoms"] == 6 and sweep["sweep"]["keep_top"] == 100
    assert sweep["sweep"]["save_predictions"] is True and sweep["store"] == str(store_file)
    assert sweep["origin"] == "bulk" and sweep["sources"] == sweep["known_sources"] == ["oqmd"]
    assert sweep["attribution"] == OQMD_ATTRIBUTION and "docs/bulk.md" in sweep["columns"]
    # every source of the store counted: the sources the hulls stood on are named, the shipped table among them
    again = tmp_path / "again.json"
    result = _invoke(*SWEEP, "--store", str(store_file), "--json", str(again))
    assert result.exit_code == 0, result.output
    every = json.loads((tmp_path / "again.json.provenance.json").read_text())
    assert every["sources"] is None and every["known_sources"] == ["oqmd"] and every["attribution"] == OQMD_ATTRIBUTION
    result = _invoke(*SWEEP, "--store", str(store_file), "--json", "-")  # stdout: nothing beside it
    assert result.exit_code == 0 and not Path("-.provenance.json").exists()

    # query --top: the rows stay the rows; the provenance names the filters, the runs and models they come from
    printed = _invoke("query", "--top", "8", "--min-p", "0", "--store", str(store_file), "--json", "-")
    assert printed.exit_code == 0, printed.output
    rows = json.loads(printed.stdout)
    csv_path, json_path = tmp_path / "top.csv", tmp_path / "top.json"
    result = _invoke("query", "--top", "8", "--min-p", "0", "--store", str(store_file), "--csv", str(csv_path),
                     "--json", str(json_path))
    assert result.exit_code == 0 and "its provenance beside it" in result.output, result.output
    assert json.loads(json_path.read_text()) == rows
    pd.testing.assert_frame_equal(pd.read_csv(csv_path), pd.read_csv(__import__("io").StringIO(
        pd.DataFrame(rows, columns=TOP_COLUMNS).to_csv(index=False))))
    first, second = (json.loads(Path(f"{path}.provenance.json").read_text()) for path in (csv_path, json_path))
    assert first == second
    assert first["filters"] == {"top": 8, "min_p": 0.0, "chemsys": None, "model": None}
    assert first["fh_screen_version"] == __version__ and first["n_rows"] == len(rows) == 8
    assert first["run_ids"] == sorted({r["run_id"] for r in rows})
    assert first["models"] == sorted({r["model"] for r in rows})
    assert first["dhf_models"] == sorted({r["dhf_model"] for r in rows})
    with FhScreenStore.embedded(store_file, read_only=True) as store:
        stored = {d["run_id"]: d for d in store.screens.query(properties=["run_id", "model", "weights_sha256",
                                                                          "fh_screen_version"])}
    assert first["model_weights_sha256"] == {m: sorted({stored[r]["weights_sha256"] for r in first["run_ids"]
                                                        if stored[r]["model"] == m}) for m in first["models"]}
    assert first["screens_fh_screen_versions"] == sorted({stored[r]["fh_screen_version"] for r in first["run_ids"]})
    assert first["known_sources"] == ["oqmd"] and first["attribution"] == OQMD_ATTRIBUTION
    assert "docs/bulk.md" in first["columns"]
    result = _invoke("query", "--top", "3", "--store", str(store_file), "--csv", "-")
    assert result.exit_code == 0 and not Path("-.provenance.json").exists()


def test_top_candidates_provenance_owes_oqmd_only_when_the_shipped_table_is_a_source():
    rows = [{"run_id": "r1", "model": "paper@1", "dhf_model": "paper@1"},
            {"run_id": "r2", "model": "attention-ensemble@2", "dhf_model": "paper@1"}]
    screens = [{"run_id": "r1", "model_name": "paper", "model_version": "1", "weights_sha256": "a" * 64,
                "fh_screen_version": "0.1", "sources": ["my-dft"], "candidates": [{"known_source": "my-dft"}]},
               {"run_id": "r2", "model_name": "attention-ensemble", "model_version": "2", "weights_sha256": "b" * 64,
                "fh_screen_version": "0.2", "sources": None, "candidates": [{"known_source": None}, {}]},
               {"run_id": "r3", "model_name": "paper", "model_version": "1", "weights_sha256": "c" * 64,
                "sources": ["oqmd"], "candidates": []}]  # no row comes from r3: it is not named
    provenance = top_candidates_provenance(rows, {"top": 2}, screens)
    assert provenance["run_ids"] == ["r1", "r2"] and provenance["known_sources"] == ["my-dft"]
    assert provenance["model_weights_sha256"] == {"attention-ensemble@2": ["b" * 64], "paper@1": ["a" * 64]}
    assert provenance["dhf_models"] == ["paper@1"] and provenance["screens_fh_screen_versions"] == ["0.1", "0.2"]
    assert "attribution" not in provenance
    screens[1]["candidates"].append({"known_source": "oqmd"})
    assert top_candidates_provenance(rows, {"top": 2}, screens)["attribution"] == OQMD_ATTRIBUTION
    empty = top_candidates_provenance([], {"top": 0}, [])
    assert empty["run_ids"] == [] and empty["n_rows"] == 0 and "attribution" not in empty


def test_a_screen_s_provenance_names_the_head_classifier_of_the_cascade(fh_settings, tmp_path, monkeypatch):  # noqa: F811
    """Under the cascade a fixed head classifier picks the rows the screen's model refines (besides the P(stable)
    classifier, ``stability_model``): the provenance names it (``stability_head_model``), null without a cascade,
    and the Python API's ScreenResult carries the same identity."""
    from fh_screen import screen
    from fh_screen.screening import ScreenOptions
    from fh_screen.screening.stability import STABILITY_HEAD_MODEL_PATH, load_stability_model

    monkeypatch.setenv("FH_SCREEN_REFERENCE_DATA", "true")  # the shipped table, read directly: no store is made
    head = load_stability_model(STABILITY_HEAD_MODEL_PATH).identity
    provenance = {}
    for model in ("attention-ensemble", "paper-ensemble"):
        out = tmp_path / f"{model}.csv"
        result = _invoke("screen", "Li-O", "--model", model, "--max-atoms", "6", "--refine-top", "5", "--no-store",
                         "--csv", str(out))
        assert result.exit_code == 0, result.output
        provenance[model] = json.loads(Path(f"{out}.provenance.json").read_text())
    cascade, single = provenance["attention-ensemble"], provenance["paper-ensemble"]
    assert cascade["prefilter"] is not None and cascade["stability_head_model"] == head
    assert cascade["stability_model"] is not None and single["prefilter"] is None
    assert "stability_head_model" in single and single["stability_head_model"] is None
    api = screen("Li-O", "attention-ensemble", options=ScreenOptions(max_atoms=6, refine_top=5))
    assert api.stability_head_model == head and api.stability_model == cascade["stability_model"]


def test_a_sweep_credits_oqmd_only_when_its_hulls_stood_on_the_shipped_table(store_file, tmp_path):
    """Without --sources every source of the store counts; the sweep's provenance names the sources its hulls stood
    on (as a screen's does) and owes OQMD's attribution only when the shipped table is one of them: a store of the
    user's own entries (reference data off) owes none."""
    from fh_screen.store import ReferenceEntryDoc
    from fh_screen.store.bootstrap import packaged_reference_frame

    own = tmp_path / "own.sqlite"
    frame = packaged_reference_frame("Li-Fe-O")  # real values, as the user's own calculations
    with FhScreenStore.embedded(own) as store:
        store.reference.update([ReferenceEntryDoc.from_formula(f, v, source="my-dft").model_dump()
                                for f, v in zip(frame["formula"], frame["dhf_ev_per_atom"])], key=["formula", "source"])
    provenance = {}
    for name, path in (("own", own), ("oqmd", store_file)):
        summary = tmp_path / f"{name}.json"
        result = _invoke(*SWEEP, "--store", str(path), "--json", str(summary))
        assert result.exit_code == 0, result.output
        assert json.loads(summary.read_text())["systems_done"] == 3
        provenance[name] = json.loads((tmp_path / f"{name}.json.provenance.json").read_text())
    assert provenance["own"]["known_sources"] == ["my-dft"] and "attribution" not in provenance["own"]
    assert provenance["oqmd"]["known_sources"] == ["oqmd"] and provenance["oqmd"]["attribution"] == OQMD_ATTRIBUTION
    assert provenance["own"]["sources"] is None and provenance["oqmd"]["sources"] is None  # none were asked for


def test_a_rerun_that_skips_every_system_credits_the_sources_of_the_stored_screens(store_file, tmp_path):
    """A rerun that finds every system stored screens none, yet its summary covers them: the provenance names the
    sources their stored hulls stood on (and owes OQMD). ``--sources OQMD`` reads as ``oqmd`` in a store that holds
    no entry under that spelling, and the provenance records it as the store read it."""
    first, rerun = tmp_path / "first.json", tmp_path / "rerun.json"
    for summary in (first, rerun):
        result = _invoke(*SWEEP, "--sources", "OQMD", "--store", str(store_file), "--json", str(summary))
        assert result.exit_code == 0, result.output
    assert json.loads(first.read_text())["systems_done"] == 3
    assert json.loads(rerun.read_text())["systems_skipped"] == 3 and json.loads(rerun.read_text())["systems_done"] == 0
    for summary in (first, rerun):
        provenance = json.loads(Path(f"{summary}.provenance.json").read_text())
        assert provenance["sources"] == provenance["known_sources"] == ["oqmd"], summary.name
        assert provenance["attribution"] == OQMD_ATTRIBUTION


def test_a_stored_screen_made_before_hull_sources_were_recorded_is_credited_by_its_known_rows(store_file, tmp_path):
    """A document without ``hull_sources`` (made before 2026-12-07) is read by its known rows' sources."""
    from fh_screen.models.predictor import load_predictor
    from fh_screen.screening import ScreenOptions
    from fh_screen.sweep import stored_screens

    result = _invoke(*SWEEP, "--store", str(store_file), "--json", str(tmp_path / "s.json"))
    assert result.exit_code == 0, result.output
    options = ScreenOptions(max_atoms=6)
    predictor = load_predictor(None)
    recorded = stored_screens(FhScreenStore.embedded(store_file), predictor, options)
    assert recorded == {s: frozenset({"oqmd"}) for s in ("Fe-O", "Fe-Li", "Li-O")}
    with FhScreenStore.embedded(store_file) as store:
        older = [{k: v for k, v in doc.items() if k != "hull_sources"} for doc in store.screens.query()]
        store.screens.update(older, key="run_id")
        assert all("hull_sources" not in doc for doc in store.screens.query(properties=["run_id", "hull_sources"]))
    assert stored_screens(FhScreenStore.embedded(store_file), predictor, options) == recorded


def test_a_screen_without_its_known_rows_still_credits_the_sources_its_hull_stood_on(store_file, tmp_path):
    """--exclude-known leaves the known compositions out of the table, not out of the hull: the provenance still
    names the sources the hull stood on and owes OQMD's attribution (it named none and owed nothing), beside the
    screen's own file and beside the files of the stored screen (``query --run``, ``query --top``)."""
    provenance = {}
    for flag in ("--exclude-known", None):
        out = tmp_path / f"{flag or 'all'}.json"
        args = ["screen", "Li-Fe-O", "--max-atoms", "6", "--store", str(store_file), "--json", str(out)]
        result = _invoke(*args, *([flag] if flag else []))
        assert result.exit_code == 0, result.output
        rows = json.loads(out.read_text())
        assert any(r["is_known"] for r in rows) is (flag is None)
        provenance[flag] = json.loads(Path(f"{out}.provenance.json").read_text())
        if flag:  # the store holds this screen alone: its rows are every row --top can show
            stored, top = tmp_path / "stored.csv", tmp_path / "top.csv"
            run_id = provenance[flag]["run_id"]
            assert _invoke("query", "--run", run_id, "--store", str(store_file), "--csv", str(stored)).exit_code == 0
            assert _invoke("query", "--top", "3", "--min-p", "0", "--chemsys", "Li-Fe-O", "--store", str(store_file),
                           "--csv", str(top)).exit_code == 0
    assert provenance["--exclude-known"]["known_sources"] == provenance[None]["known_sources"] == ["oqmd"]
    assert provenance["--exclude-known"]["attribution"] == provenance[None]["attribution"] == OQMD_ATTRIBUTION
    for path in (stored, top):
        beside = json.loads(Path(f"{path}.provenance.json").read_text())
        assert beside["known_sources"] == ["oqmd"] and beside["attribution"] == OQMD_ATTRIBUTION, path


def test_entries_with_fractional_formulas_are_credited_to_their_source():
    """``Fe0.4O0.6`` stands on the hull as Fe2O3 (the known phases are read to whole numbers): its row and the
    hull's sources name its source (they named none, as the formula was looked up as written)."""
    from fh_screen import screen
    from fh_screen.models.predictor import load_predictor
    from fh_screen.screening import ScreenOptions

    known = pd.DataFrame({"formula": ["Fe0.4O0.6", "Fe0.5O0.5", "Fe2O3"], "dhf_ev_per_atom": [-1.7, -1.5, -1.6],
                          "source": ["frac", "frac", "oqmd"]})
    result = screen("Fe-O", predictor=load_predictor("paper"), known=known, options=ScreenOptions(max_atoms=6), save=False)
    rows = result.table.set_index("formula")
    assert rows.loc["Fe2O3", "known_dhf_ev_per_atom"] == pytest.approx(-1.7) and rows.loc["Fe2O3", "known_source"] == "frac"
    assert rows.loc["FeO", "known_source"] == "frac" and result.known_sources() == ["frac"]
    assert any("Fe2O3 frac -1.700 < oqmd -1.600" in w for w in result.warnings)  # the methods-mix note names it


def test_a_query_of_reference_entries_exported_carries_oqmd_s_credit_only_for_its_rows(store_file, tmp_path):
    """``query --kind reference --csv/--json`` exports raw OQMD values (CC-BY 4.0): the provenance beside the files
    names the filters, the sources of the rows and OQMD's attribution; rows of the user's own source owe none."""
    from fh_screen.store import ReferenceEntryDoc

    FhScreenStore.embedded(store_file).connect().close()  # every collection, as fh-screen makes a store
    csv_path, json_path = tmp_path / "ref.csv", tmp_path / "ref.json"
    result = _invoke("query", "-c", "Li-O", "--kind", "reference", "--store", str(store_file), "--csv", str(csv_path),
                     "--json", str(json_path))
    assert result.exit_code == 0 and result.output.count("its provenance beside it") == 2, result.output
    rows = pd.read_csv(csv_path)
    for path in (csv_path, json_path):
        provenance = json.loads(Path(f"{path}.provenance.json").read_text())
        assert provenance["kind"] == "reference" and provenance["filters"] == {"chemsys": "Li-O"}
        assert provenance["n_rows"] == len(rows) > 0 and provenance["known_sources"] == ["oqmd"] == sorted(set(rows["source"]))
        assert provenance["attribution"] == OQMD_ATTRIBUTION and provenance["fh_screen_version"] == __version__
    with FhScreenStore.embedded(store_file) as store:
        store.reference.update([ReferenceEntryDoc.from_formula("Li2O2", -1.1, source="my-dft").model_dump()],
                               key=["formula", "source"])
    mine = tmp_path / "mine.csv"
    result = _invoke("query", "-c", "Li-O", "--source", "my-dft", "--store", str(store_file), "--csv", str(mine))
    assert result.exit_code == 0, result.output
    provenance = json.loads(Path(f"{mine}.provenance.json").read_text())
    assert provenance["known_sources"] == ["my-dft"] and "attribution" not in provenance
    assert provenance["filters"] == {"chemsys": "Li-O", "source": "my-dft"}


def test_a_query_of_predictions_names_each_row_s_model_as_every_export_does(store_file, tmp_path):
    """``query --kind predicted/both --csv/--json`` rows carry ``model`` (name@version) beside ``model_name`` and
    ``model_version``, as the screen's exports and ``query --top`` name it; the provenance lists those models."""
    result = _invoke(*SWEEP, "--store", str(store_file))
    assert result.exit_code == 0, result.output
    for kind in ("predicted", "both"):
        csv_path, json_path = tmp_path / f"{kind}.csv", tmp_path / f"{kind}.json"
        result = _invoke("query", "-c", "Li-O", "--kind", kind, "--store", str(store_file), "--csv", str(csv_path),
                         "--json", str(json_path))
        assert result.exit_code == 0, result.output
        rows = pd.read_csv(csv_path, dtype={"model_version": str})
        docs = json.loads(json_path.read_text())
        predicted = rows["model_name"].notna()
        assert predicted.any() and [d.get("model") for d in docs] == rows["model"].where(rows["model"].notna(), None).tolist()
        assert (rows.loc[predicted, "model"] == rows.loc[predicted, "model_name"] + "@" + rows.loc[predicted, "model_version"]).all()
        assert list(rows.columns).index("model") == list(rows.columns).index("model_version") + 1
        provenance = json.loads(Path(f"{csv_path}.provenance.json").read_text())
        assert provenance["models"] == sorted(set(rows.loc[predicted, "model"]))


def test_a_hull_of_no_known_compound_credits_no_source_however_it_is_read_back(fh_settings, tmp_path):  # noqa: F811
    """A store holding nothing of the system: the hull stood on no source. The stored screen, the bulk rerun that skips
    it and ``query --run`` say so too; they used to fall back to the sources asked for (``OQMD``) and credit OQMD."""
    store = tmp_path / "empty.sqlite"
    FhScreenStore.embedded(store).connect().close()
    sweep = ["bulk", "--elements", "Li,O", "--nelements", "2", "--model", "paper", "--max-atoms", "6",
             "--sources", "OQMD", "--store", str(store)]
    for name in ("first", "rerun"):
        result = _invoke(*sweep, "--json", str(tmp_path / f"{name}.json"))
        assert result.exit_code == 0, result.output
        provenance = json.loads((tmp_path / f"{name}.json.provenance.json").read_text())
        assert provenance["known_sources"] == [] and "attribution" not in provenance, name
    assert json.loads((tmp_path / "rerun.json").read_text())["systems_skipped"] == 1
    with FhScreenStore.embedded(store, read_only=True) as opened:
        (doc,) = list(opened.screens.query(properties=["run_id", "hull_sources", "sources"]))
    assert doc["hull_sources"] == [] and doc["sources"] == ["oqmd"]
    result = _invoke("query", "--run", doc["run_id"], "--store", str(store), "--json", str(tmp_path / "run.json"))
    assert result.exit_code == 0, result.output
    provenance = json.loads((tmp_path / "run.json.provenance.json").read_text())
    assert provenance["known_sources"] == [] and "attribution" not in provenance
