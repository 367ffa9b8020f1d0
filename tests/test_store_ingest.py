"""Ingest of a real OQMD slice, queries against brute-force pandas, settings, kill-safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest
from maggma.stores import MemoryStore
from store_fixtures import isolated_settings, train_slice_csv  # noqa: F401 - fixtures

from fh_screen.data import load_oqmd_csv
from fh_screen.settings import FhScreenSettings, SettingsError
from fh_screen.store import FhScreenStore, SQLiteStore, StoreFileError, subsystems
from fh_screen.store.ingest import ingest_file, ingest_path


@pytest.fixture
def ingested(tmp_path, train_slice_csv):  # noqa: F811
    store = FhScreenStore.embedded(tmp_path / "store.sqlite").connect()
    report = ingest_file(store.reference, train_slice_csv, batch_size=500)
    yield store, report
    store.close()


def test_ingest_real_slice_and_idempotent(ingested, train_slice_csv):  # noqa: F811
    store, report = ingested
    tidy, cleaning = load_oqmd_csv(train_slice_csv)
    assert report.inserted == len(tidy) == store.n_reference()
    assert report.n_rejected == cleaning.n_raw - cleaning.n_kept
    again = ingest_file(store.reference, train_slice_csv)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, len(tidy))
    assert "inserted 0, updated 0, unchanged" in again.summary()
    stored = {d["formula"]: d["dhf_ev_per_atom"] for d in store.reference.query(properties=["formula", "dhf_ev_per_atom"])}
    assert stored == dict(zip(tidy["formula"], tidy["dhf_ev_per_atom"]))


def test_newer_value_replaces_and_is_reported(ingested, train_slice_csv, tmp_path):  # noqa: F811
    store, _ = ingested
    raw = pd.read_csv(train_slice_csv, keep_default_na=False)
    changed = raw.head(3).copy()
    changed["target"] = changed["target"] - 0.25
    path = tmp_path / "newer.csv"
    changed.to_csv(path, index=False)
    report = ingest_file(store.reference, path, source_version="1.7")
    assert (report.inserted, report.updated, report.unchanged) == (0, 3, 0)
    formula, old, new = report.updated_examples[0]
    assert new == pytest.approx(old - 0.25)
    doc = store.reference.query_one({"formula": formula})
    assert doc["dhf_ev_per_atom"] == pytest.approx(new) and doc["source_version"] == "1.7"
    assert store.n_reference() == report.n_rows + store.n_reference() - 3  # nothing added


def test_rejections_are_counted_with_reasons(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("formula,target\nFe2O3,-1.7\nFe4O6,-1.5\nFe2(O,0.1\nNaCl,\nLiH,40.0\n")
    with FhScreenStore.embedded(tmp_path / "s.sqlite") as store:
        report = ingest_file(store.reference, path)
        assert report.inserted == 1 and store.reference.query_one({"formula": "Fe2O3"})["dhf_ev_per_atom"] == -1.7
        assert report.rejected["bad formulas"] == 1 and report.rejected["missing values"] == 1
        assert report.rejected["higher-energy duplicates"] == 1 and report.n_rejected == 4
        kept = ingest_file(store.reference, path, keep_outliers=True)
        assert kept.inserted == 1 and store.reference.query_one({"formula": "LiH"})["passed_outlier_filter"] is False
        assert "LiH" not in set(store.reference_frame(chemsys="Li-H")["formula"])
        assert "LiH" in set(store.reference_frame(chemsys="Li-H", include_outliers=True)["formula"])


def _brute_force_subset(tidy: pd.DataFrame, system: set[str]) -> set[str]:
    from pymatgen.core import Composition

    return {f for f in tidy["formula"] if {el.symbol for el in Composition(f).elements} <= system}


@pytest.mark.parametrize("chemsys", ["O-Fe-Li", "Li-Fe-P-O", "Se-Cu", "Te-Ta-Zr", "Nd-Cd-Rh-O-Fe"])
def test_chemsys_query_is_subset_semantics(ingested, train_slice_csv, chemsys):  # noqa: F811
    store, _ = ingested
    tidy, _ = load_oqmd_csv(train_slice_csv)
    system = set(chemsys.replace(" ", "-").split("-"))
    frame = store.reference_frame(chemsys=chemsys)
    assert set(frame["formula"]) == _brute_force_subset(tidy, system)
    assert list(frame.columns[:5]) == ["formula", "dhf_ev_per_atom", "elements", "chemsys", "nelements"]
    for row in frame.itertuples():
        assert row.chemsys == "-".join(row.elements) and row.nelements == len(row.elements)


def test_elements_and_chemsys_agree_with_pymatgen(ingested):
    from pymatgen.core import Composition

    store, _ = ingested
    for doc in store.reference.query(limit=300):
        composition = Composition(doc["formula"])
        assert doc["chemsys"] == composition.chemical_system
        assert doc["elements"] == sorted(el.symbol for el in composition.elements)
        assert doc["formula"] == composition.reduced_formula


def test_other_filters_against_pandas(ingested, train_slice_csv):  # noqa: F811
    store, _ = ingested
    tidy, _ = load_oqmd_csv(train_slice_csv)
    frame = store.reference_frame(nelements=2, min_dhf_ev_per_atom=-1.0, max_dhf_ev_per_atom=0.0)
    n_el = tidy["formula"].map(lambda f: len(set(__import__("re").findall(r"[A-Z][a-z]?", f))))
    expected = tidy[(n_el == 2) & tidy["dhf_ev_per_atom"].between(-1.0, 0.0)]
    assert set(frame["formula"]) == set(expected["formula"]) and len(frame) > 0
    some = tidy["formula"].iloc[7]
    assert store.reference_frame(formula=some)["formula"].tolist() == [some]
    assert store.reference_frame(chemsys="He-Ne").empty
    assert list(store.reference_frame(chemsys="He-Ne").columns[:5]) == ["formula", "dhf_ev_per_atom", "elements", "chemsys", "nelements"]


@pytest.mark.parametrize("option, value", [("--min-dhf", "nan"), ("--max-dhf", "nan"), ("--max-dhf", "inf"),
                                           ("--min-dhf", "-inf")])
def test_a_non_finite_dhf_bound_is_refused_in_one_line(ingested, option, value):
    """NaN or an infinite ΔH_f bound used to return nothing (or everything) silently; the CLI and the API refuse it."""
    from typer.testing import CliRunner

    from fh_screen.cli import build_app
    from fh_screen.store.query import QueryError

    store, _ = ingested
    db = store.reference.path
    assert len(store.reference_frame(nelements=2, min_dhf_ev_per_atom=-1.0)) > 0
    keyword = "min_dhf_ev_per_atom" if option == "--min-dhf" else "max_dhf_ev_per_atom"
    with pytest.raises(QueryError, match=f"{option}.* must be a finite number"):
        store.reference_frame(**{keyword: float(value)})
    with pytest.raises(QueryError, match="must be a finite number"):
        store.predictions_frame(**{keyword: float(value)})
    result = CliRunner().invoke(build_app(), ["query", option, value, "--store", str(db)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert f"({option}) must be a finite number of eV/atom, got {value}" in result.output, result.output


def test_subsystems():
    assert subsystems("O-Li") == ["Li", "O", "Li-O"]
    assert len(subsystems(["Li", "Fe", "P", "O"])) == 15


def test_save_predictions_side_by_side_any_maggma_store(train_slice_csv):  # noqa: F811
    from fh_screen.models.predictor import Predictor

    predictor = Predictor.from_name(None, threads=1)
    from fh_screen.store.ingest import ingest_frame

    store = FhScreenStore(MemoryStore("ref", key="formula"), MemoryStore("pred", key="prediction_id")).connect()
    ingest_frame(store.reference, load_oqmd_csv(train_slice_csv)[0].head(100))
    formulas = ["ZrTa2Te", "Li4Fe4P4O16", "LiFeO2"]
    result = predictor.predict_formulas(formulas)
    frame = pd.DataFrame({"formula": formulas, "dhf_pred_ev_per_atom": result.dhf_ev_per_atom,
                          "e_above_hull_pred_ev_per_atom": [0.0, 0.1, float("nan")]})
    assert store.save_predictions(frame, predictor) == 3
    docs = {d["formula"]: d for d in store.prediction_docs()}
    assert set(docs) == {"ZrTa2Te", "LiFePO4", "LiFeO2"}
    assert docs["LiFePO4"]["model_weights_sha256"] == predictor.weights_sha256
    # (formula, model) -> ΔH_f, σ only: a screen's energies above the hull and run ids are not kept here
    assert not {"e_above_hull_pred_ev_per_atom", "run_id"} & set(docs["LiFeO2"])
    store.save_predictions(frame, predictor)
    assert store.n_predictions() == 3
    both = store.compare_frame(formula=["ZrTa2Te", "LiFePO4"])
    row = both.set_index("formula").loc["ZrTa2Te"]
    assert row["dhf_error_ev_per_atom"] == pytest.approx(row["dhf_pred_ev_per_atom"] - row["dhf_ev_per_atom"])
    assert pd.isna(both.set_index("formula").loc["LiFePO4", "dhf_ev_per_atom"])


def test_a_model_filter_naming_no_model_is_refused_but_a_stored_one_is_kept(tmp_path, train_slice_csv,  # noqa: F811
                                                                            isolated_settings):  # noqa: F811
    """``query --model`` (and the store's model filters) refuse, in one line, a name that is neither a shipped or
    user model nor stored; a model no longer shipped (a fine-tuned one, renamed here) whose predictions are stored is kept."""
    from dataclasses import replace

    from typer.testing import CliRunner

    from fh_screen.cli import build_app
    from fh_screen.models.checkpoint import ModelError
    from fh_screen.models.predictor import Predictor

    db = tmp_path / "s.sqlite"
    paper = Predictor.from_name("paper", threads=1)
    gone = Predictor(replace(paper.checkpoint, name="my-finetuned", version="3"), threads=1)  # no longer on disk
    with FhScreenStore.embedded(db) as store:
        ingest_file(store.reference, train_slice_csv, batch_size=500)
        formulas = store.reference_frame(nelements=2, limit=20)["formula"].tolist()
        assert len(formulas) == 20
        for predictor in (paper, gone):
            values = predictor.predict_formulas(formulas).dhf_ev_per_atom
            store.save_predictions(pd.DataFrame({"formula": formulas, "dhf_pred_ev_per_atom": values}), predictor)
    app, runner = build_app(), CliRunner()
    for args in (["--kind", "predicted"], ["--kind", "both"], ["--top", "3"]):
        result = runner.invoke(app, ["query", "--model", "nosuch", "--store", str(db), *args])
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1 and "no model named 'nosuch'" in result.output, result.output
    for model, rows in (("my-finetuned", 20), ("my-finetuned@3", 20), ("paper", 20), ("paper@1", 20),
                        ("my-finetuned@2", 0)):  # another version of a known name: none, as before
        result = runner.invoke(app, ["query", "--model", model, "--kind", "predicted", "--store", str(db), "--json", "-"])
        assert result.exit_code == 0 and len(json.loads(result.output)) == rows, (model, result.output)
    result = runner.invoke(app, ["query", "--model", "nosuch@3", "--store", str(db)])
    assert result.exit_code == 2 and "no model named 'nosuch'" in result.output, result.output
    with FhScreenStore.embedded(db, read_only=True) as store:
        with pytest.raises(ModelError, match="no model named 'nosuch'"):
            store.predictions_frame(model_name="nosuch")
        with pytest.raises(ModelError, match="no model named 'nosuch'"):
            store.top_candidates(model="nosuch")


def test_the_store_docs_python_block_runs_and_save_predictions_returns_a_count(isolated_settings):  # noqa: F811
    """docs/store.md showed ``run_id = store.save_predictions(...)``; the call returns how many predictions it wrote."""
    from pathlib import Path

    from fh_screen.models.predictor import Predictor

    text = (Path(__file__).resolve().parents[1] / "docs" / "store.md").read_text()
    block = text.split("\n## Python\n", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    predictor = Predictor.from_name("paper", threads=1)
    formulas = ["Li2O", "LiFeO2", "Fe2O3"]
    frame = pd.DataFrame({"formula": formulas, "dhf_pred_ev_per_atom": predictor.predict_formulas(formulas).dhf_ev_per_atom})
    namespace = {"frame": frame, "predictor": predictor}
    exec(compile(block, "docs/store.md", "exec"), namespace)  # noqa: S102 - the documented example, on a fresh store
    (line,) = [line for line in block.splitlines() if "store.save_predictions(" in line]
    target = line.split("=", 1)[0].strip()
    assert namespace[target] == len(frame) and "run_id" not in target, line


def test_settings_file_env_and_from_settings(tmp_path, monkeypatch, isolated_settings):  # noqa: F811
    settings = FhScreenSettings()
    assert settings.data_dir == isolated_settings and settings.mongo_uri is None
    config = tmp_path / "fh.yaml"
    config.write_text(f"data_dir: {tmp_path / 'from_yaml'}\nstore_file: mine.sqlite\n")
    monkeypatch.setenv("FH_SCREEN_CONFIG_FILE", str(config))
    monkeypatch.delenv("FH_SCREEN_DATA_DIR")
    settings = FhScreenSettings()
    assert settings.store_path == tmp_path / "from_yaml" / "mine.sqlite"
    monkeypatch.setenv("FH_SCREEN_DATA_DIR", str(tmp_path / "from_env"))
    assert FhScreenSettings().store_path == tmp_path / "from_env" / "mine.sqlite"
    with FhScreenStore.from_settings() as store:
        assert isinstance(store.reference, SQLiteStore) and store.n_reference() == 0
    assert (tmp_path / "from_env" / "mine.sqlite").is_file()
    config.write_text("data_dir: [unclosed\n")
    with pytest.raises(SettingsError, match=str(config)):
        FhScreenSettings()


def test_a_settings_typo_or_a_missing_settings_file_is_one_line_not_ignored(tmp_path, monkeypatch, isolated_settings):  # noqa: F811
    """`mongo_ur:` / `data_dri:` in the settings file, or FH_SCREEN_CONFIG_FILE naming a file that is not there,
    used to be ignored: the local store was used (exit 0), not the MongoDB or folder the user meant."""
    from typer.testing import CliRunner

    from fh_screen.cli import build_app

    monkeypatch.setenv("FH_SCREEN_REFERENCE_DATA", "false")
    runner = CliRunner()
    for text, key, closest in (("mongo_ur: mongodb://127.0.0.1:1\n", "mongo_ur", "mongo_uri"),
                               (f"data_dri: {tmp_path / 'mine'}\n", "data_dri", "data_dir"),
                               ("store_file: a.sqlite\nReference_Data: false\n", "Reference_Data", "reference_data")):
        config = tmp_path / "fh.yaml"
        config.write_text(text)
        monkeypatch.setenv("FH_SCREEN_CONFIG_FILE", str(config))
        with pytest.raises(SettingsError, match=f"settings file {config}: unknown setting '{key}' "
                                                f"\\(did you mean '{closest}'\\?\\)"):
            FhScreenSettings()
        result = runner.invoke(build_app(), ["query", "--chemsys", "Li-O"])
        assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
        assert f"unknown setting '{key}'" in result.output and "Traceback" not in result.output
    missing = tmp_path / "nofile.yaml"
    monkeypatch.setenv("FH_SCREEN_CONFIG_FILE", str(missing))
    with pytest.raises(SettingsError, match=f"settings file {missing} does not exist"):
        FhScreenSettings()
    result = runner.invoke(build_app(), ["runs"])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "does not exist" in result.output
    assert not isolated_settings.exists()  # no store was made anywhere
    # /dev/null names no file; other environment variables (FH_SCREEN_ or not) are left alone
    monkeypatch.setenv("FH_SCREEN_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("FH_SCREEN_FUZZ_SCALE", "2")
    assert FhScreenSettings().data_dir == isolated_settings
    config.write_text(f"data_dir: {tmp_path / 'from_yaml'}\n")
    monkeypatch.setenv("FH_SCREEN_CONFIG_FILE", str(config))
    assert FhScreenSettings().data_dir == isolated_settings  # the environment wins over the file, as before
    monkeypatch.delenv("FH_SCREEN_DATA_DIR")
    assert FhScreenSettings().data_dir == tmp_path / "from_yaml"


def test_mongo_uri_selects_mongostore(tmp_path, monkeypatch, isolated_settings):  # noqa: F811
    import mongomock_ng
    from maggma.stores import MongoStore

    monkeypatch.setenv("FH_SCREEN_MONGO_URI", "mongodb://localhost:27017")
    monkeypatch.setenv("FH_SCREEN_REFERENCE_DATA", "false")
    with mongomock_ng.patch(servers=(("localhost", 27017),)):
        store = FhScreenStore.from_settings()
    assert isinstance(store.reference, MongoStore) and store.reference.collection_name == "reference"
    assert store.predictions.key == "prediction_id" and store.screens.key == "run_id"


def test_user_values_sit_beside_the_shipped_ones_and_are_removed_by_source(tmp_path):
    from typer.testing import CliRunner

    from fh_screen.cli import build_app
    from fh_screen.service import known_phases

    path = tmp_path / "mine.csv"
    path.write_text("formula,target\nLi2O,-2.5\nLi2O2,-1.0\n")
    db = tmp_path / "s.sqlite"
    with FhScreenStore.embedded(db) as store:
        store.reference.update([{"formula": "Li2O", "elements": ["Li", "O"], "chemsys": "Li-O", "nelements": 2,
                                 "dhf_ev_per_atom": -2.07, "source": "oqmd", "passed_outlier_filter": True}],
                               key=["formula", "source"])
    app = build_app()
    result = CliRunner().invoke(app, ["ingest", str(path), "--store", str(db), "--source", "my-dft"])
    assert result.exit_code == 0, result.output
    with FhScreenStore.embedded(db) as store:
        rows = store.reference_frame(formula="Li2O")
        assert sorted(zip(rows["source"], rows["dhf_ev_per_atom"])) == [("my-dft", -2.5), ("oqmd", -2.07)]
        phases = known_phases(("Li", "O"), store=FhScreenStore.embedded(db))
    from fh_screen.screening import known_counts

    _, lowest = known_counts(phases.frame, ("Li", "O"))
    assert -2.5 in lowest.tolist() and -2.07 not in lowest.tolist()  # the hull uses the lowest value
    result = CliRunner().invoke(app, ["ingest", "--remove-source", "my-dft", "--store", str(db)])
    assert result.exit_code == 0 and "removed 2" in result.output, result.output
    with FhScreenStore.embedded(db) as store:
        rows = store.reference_frame(formula="Li2O")
        assert list(rows["source"]) == ["oqmd"] and list(rows["dhf_ev_per_atom"]) == [-2.07]  # the shipped value is back
    result = CliRunner().invoke(app, ["ingest", str(path), "--store", str(db), "--source", "bad name!"])
    assert result.exit_code == 2 and "source name" in result.output


def test_a_fractional_formula_is_stored_and_found_as_the_composition_it_stands_for(tmp_path):
    """``Fe0.4O0.6`` is Fe2O3: ingest keys it so (pymatgen's reduced formula keeps the fractions), the
    formula query for Fe2O3 finds it, and it stands beside, not under, another source's Fe2O3."""
    from typer.testing import CliRunner

    from fh_screen.chem.formula import reduced_formula, whole_amounts
    from fh_screen.cli import build_app

    assert reduced_formula("Fe0.4O0.6") == reduced_formula("Fe4O6") == "Fe2O3"
    assert reduced_formula("Li0.5Fe0.5O") == "LiFeO2" and whole_amounts("Fe0.3333O0.6667") == {"Fe": 1, "O": 2}
    # no element is lost however little of it there is (amounts are read as ratios to the smallest one)
    assert reduced_formula("Li0.0001O") == "LiO10000" and reduced_formula("Fe0.0001O0.0001") == "FeO"
    assert whole_amounts("Li1001O1002") == {"Li": 1001, "O": 1002}  # whole amounts stay exact
    path = tmp_path / "mine.csv"
    path.write_text("formula,dhf_ev_per_atom\nFe0.4O0.6,-1.9\nLi0.5Fe0.5O,-1.6\n")
    db = tmp_path / "s.sqlite"
    app = build_app()
    result = CliRunner().invoke(app, ["ingest", str(path), "--store", str(db), "--source", "my-dft"])
    assert result.exit_code == 0 and "inserted 2" in result.output, result.output
    # the summary names the reference collection and counts its entries in words that agree
    assert f"sqlite://{db}/reference holds 2 reference entries" in " ".join(result.output.split()), result.output
    result = CliRunner().invoke(app, ["query", "-f", "Fe2O3", "--store", str(db), "--source", "my-dft", "--json", "-"])
    assert result.exit_code == 0, result.output
    assert "Fe2O3" in result.output and "-1.9" in result.output, result.output
    with FhScreenStore.embedded(db) as store:
        assert sorted(store.reference_frame()["formula"]) == ["Fe2O3", "LiFeO2"]
        assert list(store.reference_frame(formula="Fe0.4O0.6")["dhf_ev_per_atom"]) == [-1.9]


def _mongo_available() -> str | None:
    import shutil

    if not shutil.which("mongod"):
        return "no MongoDB server: `mongod` is not installed and none can be installed on this machine"
    return None


@pytest.mark.skipif(_mongo_available() is not None, reason=str(_mongo_available()))
def test_mongostore_round_trip(tmp_path, train_slice_csv):  # noqa: F811  # pragma: no cover - needs a server
    from maggma.stores import MongoStore

    port = 27123
    server = subprocess.Popen(["mongod", "--dbpath", str(tmp_path), "--port", str(port)], stdout=subprocess.DEVNULL)
    try:
        time.sleep(3)
        uri = f"mongodb://localhost:{port}"
        store = FhScreenStore(MongoStore.from_uri(uri, "ref", database="t", key="formula"),
                              MongoStore.from_uri(uri, "pred", database="t", key="prediction_id")).connect()
        report = ingest_file(store.reference, train_slice_csv)
        assert store.n_reference() == report.inserted
        assert len(store.reference_frame(chemsys="Ta-Te-Zr")) >= 1
    finally:
        server.terminate()


KILLED_INGEST = textwrap.dedent(
    """
    import sys, time
    from fh_screen.store import FhScreenStore
    from fh_screen.store.ingest import ingest_file
    def slow(done, total):
        print(done, flush=True)
        time.sleep(0.2)
    with FhScreenStore.embedded(sys.argv[1]) as store:
        ingest_file(store.reference, sys.argv[2], batch_size=100, progress=slow)
    """
)


def test_killed_ingest_leaves_readable_store_and_rerun_completes(tmp_path, train_slice_csv):  # noqa: F811
    path = tmp_path / "killed.sqlite"
    script = tmp_path / "ingest.py"
    script.write_text(KILLED_INGEST)
    process = subprocess.Popen([sys.executable, str(script), str(path), str(train_slice_csv)], stdout=subprocess.PIPE, text=True)
    for _ in range(5):  # wait until five batches are committed, then kill without warning
        assert process.stdout.readline().strip()
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    process.stdout.close()
    tidy, _ = load_oqmd_csv(train_slice_csv)
    with FhScreenStore.embedded(path) as store:
        partial = store.n_reference()
        assert 500 <= partial < len(tidy) and partial % 100 == 0  # whole batches only
        assert store.reference.check() == "ok"
        report = ingest_file(store.reference, train_slice_csv)
        assert report.unchanged == partial and report.inserted == len(tidy) - partial
        assert store.n_reference() == len(tidy)


def test_corrupt_store_file_error_names_file(tmp_path):
    path = tmp_path / "store.sqlite"
    path.write_bytes(b"\x00garbage" * 1000)
    with pytest.raises(StoreFileError, match=str(path)):
        FhScreenStore.embedded(path).connect()


def test_ingest_folder_and_missing_path(tmp_path, train_slice_csv):  # noqa: F811
    folder = tmp_path / "data"
    folder.mkdir()
    pd.read_csv(train_slice_csv).head(50).to_csv(folder / "a.csv", index=False)
    pd.read_csv(train_slice_csv).iloc[50:80].to_csv(folder / "b.csv", index=False)
    (folder / "notes.md").write_text("ignored")
    with FhScreenStore.embedded(tmp_path / "s.sqlite") as store:
        report = ingest_path(store.reference, folder)
        assert report.inserted == 80 and len(report.files) == 2
        from fh_screen.data import DataError

        with pytest.raises(DataError, match="not found"):
            ingest_path(store.reference, tmp_path / "nope.csv")


def test_bad_values_are_rejected_rows_with_counts(tmp_path, train_slice_csv):  # noqa: F811
    rows = pd.read_csv(train_slice_csv, keep_default_na=False, na_values=[""]).head(50).astype({"target": object})
    rows.loc[0, "target"], rows.loc[1, "target"], rows.loc[2, "target"], rows.loc[3, "target"] = "NaN", "inf", "abc", "1e400"
    rows.loc[4, "formula"] = "Fe1e400O"
    rows.loc[5, "formula"] = rows.loc[5, "formula"] + "\x00Xx"
    path = tmp_path / "bad_values.csv"
    rows.to_csv(path, index=False)
    with FhScreenStore.embedded(tmp_path / "s.sqlite") as store:
        report = ingest_file(store.reference, path)
        assert report.rejected["non-numeric or infinite values"] == 4 and report.rejected["bad formulas"] == 2
        assert report.inserted + report.n_rejected == len(rows)
        stored = store.reference_frame()
        assert np.isfinite(stored["dhf_ev_per_atom"]).all() and not stored["formula"].str.contains("\x00").any()


def test_hydrate_is_stored_under_its_full_composition(tmp_path):
    from pymatgen.core import Composition

    path = tmp_path / "hydrate.csv"
    path.write_text("formula,target\nCuSO4.5H2O,-1.2\n")
    with FhScreenStore.embedded(tmp_path / "s.sqlite") as store:
        ingest_file(store.reference, path)
        (doc,) = list(store.reference.query({}))
        assert doc["formula"] == Composition("CuSO4(H2O)5").reduced_formula


@pytest.mark.parametrize(
    ("files", "fragment"),
    [
        ({"a.csv": "formula,target\nFe0O,2\n"}, "no usable rows"),
        ({"a.csv": "formula,target\nFeO,-1.5\nXx2O,1\n"}, "unknown element symbol 'Xx'"),
        ({"a.csv": "formula,target\nFeO,-1.5\nFe,0.3\n"}, "pure element Fe has ΔH_f 0.3 eV/atom"),
        ({"a.csv": "a,b\n1,2\n"}, "unrecognised format"),
        ({"a.csv": "formula,target\nFeO,-1.5\n", "b.csv": "x\n"}, "unrecognised format"),
        ({"a.json": "{not json"}, "not valid JSON"),
        ({"a.csv": "formula,dhf_ev_per_atom\nNaCl,-2100\nFe2O3,-1710\n"},
         "its 2 usable row(s) are all outliers outside (-20, 5) eV/atom (e.g. NaCl -2100; Fe2O3 -1710); ΔH_f must be "
         "in eV/atom"),
        ({"a.csv": "formula,target\nFeO,-1.5\n", "b.csv": "formula,target\nNaCl,-2100\n"}, "nothing ingested from"),
    ],
)
def test_refused_input_never_creates_or_touches_a_store(tmp_path, files, fragment):
    from typer.testing import CliRunner

    from fh_screen.cli import build_app

    folder = tmp_path / "in"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    store = tmp_path / "store.sqlite"
    target = folder if len(files) > 1 else folder / next(iter(files))
    result = CliRunner().invoke(build_app(), ["ingest", str(target), "--store", str(store)])
    assert result.exit_code == 2 and fragment in result.output and "Traceback" not in result.output
    assert not store.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_a_file_whose_every_row_is_an_outlier_is_refused_in_every_door(tmp_path):
    """A file in meV/atom (NaCl,-2100) used to exit 0 with "inserted 0 ... rejected 1 (outliers)": nothing was
    ingested and nothing said why; the API and the CLI now refuse it in one line naming the units, and
    --keep-outliers (keep_outliers=True) still stores such rows, flagged."""
    from typer.testing import CliRunner

    from fh_screen.cli import build_app
    from fh_screen.data import DataError

    path = tmp_path / "mev.csv"
    path.write_text("formula,dhf_ev_per_atom\nNaCl,-2100\n")
    store_file = tmp_path / "s.sqlite"
    result = CliRunner().invoke(build_app(), ["ingest", str(path), "--source", "mine", "--store", str(store_file)])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert f"error: nothing ingested from {path}" in result.output and "meV/atom" in result.output
    assert not store_file.exists()
    with FhScreenStore.embedded(store_file) as store:
        for call in (lambda: ingest_file(store.reference, path), lambda: ingest_path(store.reference, tmp_path)):
            with pytest.raises(DataError, match="usable row\\(s\\) are all outliers"):
                call()
        assert store.n_reference() == 0
        kept = ingest_path(store.reference, path, keep_outliers=True)
        assert kept.inserted == 1 and store.reference.query_one({"formula": "NaCl"})["passed_outlier_filter"] is False
    flagged = CliRunner().invoke(build_app(), ["ingest", str(path), "--source", "mine2", "--keep-outliers",
                                               "--store", str(store_file)])
    assert flagged.exit_code == 0 and "inserted 1" in flagged.output, flagged.output


def test_an_interrupted_ingest_says_how_far_it_got_in_one_line_and_a_rerun_completes(tmp_path, train_slice_csv,  # noqa: F811
                                                                                      monkeypatch):
    """Ctrl-C used to end ``fh-screen ingest`` with exit code 130 and nothing said, part of the source stored."""
    from typer.testing import CliRunner

    import fh_screen.store.ingest as ingest_module
    from fh_screen.cli import build_app

    folder = tmp_path / "data"
    folder.mkdir()
    rows = pd.read_csv(train_slice_csv)
    rows.head(50).to_csv(folder / "a.csv", index=False)
    rows.iloc[50:350].to_csv(folder / "b.csv", index=False)
    store_path = tmp_path / "s.sqlite"
    original = ingest_module.ingest_file

    def interrupted_after_two_batches_of_b(store, path, **kwargs):
        def progress(done, total):
            kwargs["progress"](done, total)
            if path.name == "b.csv" and done == 200:
                raise KeyboardInterrupt

        return original(store, path, **{**kwargs, "batch_size": 100, "progress": progress})

    monkeypatch.setattr(ingest_module, "ingest_file", interrupted_after_two_batches_of_b)
    args = ["ingest", str(folder), "--source", "my-tr", "--store", str(store_path)]
    result = CliRunner().invoke(build_app(), args)
    assert result.exit_code == 130, result.output
    assert result.output.strip().splitlines()[-1] == ("interrupted after 250 entries of source my-tr; "
                                                      "rerun the same command to complete it")
    with FhScreenStore.embedded(store_path) as store:
        assert store.n_reference() == 250
    monkeypatch.setattr(ingest_module, "ingest_file", original)
    result = CliRunner().invoke(build_app(), args)
    assert result.exit_code == 0 and "inserted 100, updated 0, unchanged 250" in result.output, result.output
    with FhScreenStore.embedded(store_path) as store:
        assert store.n_reference() == 350 and set(store.reference.distinct("source")) == {"my-tr"}
