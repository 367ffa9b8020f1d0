"""Every door on both backends: the embedded store and MongoDB (mongomock patched in for pymongo).

``mongomock_ng.patch`` replaces pymongo's client, so ``FhScreenStore.from_settings()`` with
``FH_SCREEN_MONGO_URI`` runs the very code a real server gets (maggma's MongoStore, bulk writes,
indexes, the first-use fill). mongomock writes ~1,000 documents/s, so on MongoDB the first-use
fill is exercised with a slice of the shipped table (every Li-Fe-P-O entry and 500 others); the
embedded store is filled with the whole table.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fh_screen.screening import ScreenOptions
from fh_screen.store import bootstrap
from store_fixtures import fresh_machine

runner = CliRunner()


@pytest.fixture
def settings_env(tmp_path, monkeypatch) -> Path:
    """A fresh machine: empty HOME and data dir, no config file, the first-use fill on."""
    return fresh_machine(tmp_path, monkeypatch, reference_data=True)


def _table_slice():
    import pandas as pd

    full = bootstrap.load_reference_table()
    system = set(bootstrap.packaged_reference_frame("Li-Fe-P-O")["formula"])
    rest = full[~full["formula"].isin(system)].sample(n=500, random_state=0)
    return pd.concat([full[full["formula"].isin(system)], rest]).reset_index(drop=True)


@pytest.fixture
def mongo_server(monkeypatch):
    """An in-memory MongoDB at localhost:27017 for every pymongo client made while it lives.

    mongomock's ``MongoClient.close`` empties the whole mock server; a real server keeps its data
    when one client closes (maggma's stores close theirs after each use), so close only the client.
    """
    import mongomock_ng
    from mongomock_ng.mongo_client import MongoClient

    monkeypatch.setattr(MongoClient, "close", lambda self: None)
    with mongomock_ng.patch(servers=(("localhost", 27017),)):
        yield "mongodb://localhost:27017"


@pytest.fixture(params=["embedded", "mongodb"])
def backend(request, settings_env, monkeypatch):
    """The configured store on each backend; yields its name."""
    if request.param == "mongodb":
        request.getfixturevalue("mongo_server")
    if request.param == "embedded":
        yield "embedded"
        return
    table = _table_slice()
    monkeypatch.setattr(bootstrap, "_cached_table", lambda: table)
    monkeypatch.setattr(bootstrap, "_BATCH", 150)  # several bulk writes, each followed by progress
    monkeypatch.setenv("FH_SCREEN_MONGO_URI", "mongodb://localhost:27017")
    monkeypatch.setenv("FH_SCREEN_MONGO_DATABASE", f"fh_test_{time.time_ns()}")
    yield "mongodb"


def _n_known_in_cli_output(output: str) -> int:
    return int(output.split(" known phases in the hull")[0].split(";")[-1].strip().replace(",", ""))


def test_python_screen_cli_and_job_rank_against_the_same_known_phases(backend):
    """screen("Li-Fe-P-O") on a fresh machine: the store's known phases, as the CLI and the job."""
    from jobflow import run_locally

    from fh_screen import screen
    from fh_screen.cli import build_app
    from fh_screen.jobs import PrescreenMaker
    from fh_screen.models.predictor import load_predictor
    from fh_screen.store import FhScreenStore
    from jobs_fixtures import memory_job_store

    options = ScreenOptions(max_atoms=8)
    result = screen("Li-Fe-P-O", predictor=load_predictor("paper"), options=options)
    assert result.n_known >= 70
    li2o = result.table.set_index("formula").loc["Li2O"]
    assert li2o["is_known"] and li2o["e_above_hull_pred_ev_per_atom"] == 0  # on the DFT hull, not -1.97

    cli = runner.invoke(build_app(), ["screen", "Li-Fe-P-O", "--max-atoms", "8", "--model", "paper", "--top", "0"])
    assert cli.exit_code == 0, cli.output
    assert _n_known_in_cli_output(cli.output) == result.n_known

    job = PrescreenMaker(model="paper", screen_options={"max_atoms": 8}, top_n=3).make("Li-Fe-P-O")
    run_locally(job, store=memory_job_store(), log=False, ensure_success=True)
    with FhScreenStore.from_settings() as store:
        docs = {row["origin"]: store.get_screen(row["run_id"]) for row in store.screen_summaries(chemsys="Li-Fe-P-O")}
        n_predictions = store.n_predictions()
        indexed = store.reference.ensure_index("chemsys")
    assert set(docs) == {"cli", "job"}  # both saved to the screens collection of this backend
    assert docs["cli"].n_reference == docs["job"].n_reference == result.n_known
    assert n_predictions == result.n_candidates  # one (formula, model) row each, written by both doors
    assert indexed


def test_store_methods_on_both_backends(backend, oqmd_train_raw, tmp_path, monkeypatch):
    """Ingest, reference and prediction queries, screens: the same answers on both backends."""
    if backend == "embedded":  # the whole table is filled in the test above; a slice is enough here
        table = _table_slice()
        monkeypatch.setattr(bootstrap, "_cached_table", lambda: table)
    small_csv = tmp_path / "slice.csv"
    oqmd_train_raw.sample(n=300, random_state=2).to_csv(small_csv, index=False)
    from fh_screen.models.predictor import load_predictor
    from fh_screen.service import run_screen
    from fh_screen.store import FhScreenStore, ScreenDoc
    from fh_screen.store.ingest import ingest_file

    with FhScreenStore.from_settings() as store:
        n_shipped = store.n_reference()
        report = ingest_file(store.reference, small_csv, source="user")
        assert store.n_reference() == n_shipped + report.inserted  # beside the shipped entries, none replaced
        frame = store.reference_frame(chemsys="Li-Fe-P-O")
        assert set(frame["source"]) >= {"oqmd"} and frame["dhf_ev_per_atom"].notna().all()
    result, phases, saved = run_screen("Li-O", load_predictor("paper"), options=ScreenOptions(max_atoms=4), save=True)
    assert saved is not None and phases.n_compounds >= 2
    with FhScreenStore.from_settings() as store:
        doc = store.get_screen(saved.run_id)
        assert isinstance(doc, ScreenDoc) and doc.chemsys == "Li-O" and doc.n_candidates == result.n_candidates
        stored = store.predictions_frame(chemsys="Li-O")
        assert set(stored["model_name"]) == {"paper"} and len(stored) == saved.n_predictions
        # a model as exports name it (name@version) filters screens and predictions; another version matches none
        version = doc.model_version
        assert [r["run_id"] for r in store.screen_summaries(model_name=f"paper@{version}")] == [saved.run_id]
        assert store.screen_summaries(model_name="paper@not-a-version") == []
        assert len(store.predictions_frame(chemsys="Li-O", model_name=f"paper@{version}")) == saved.n_predictions
        assert store.predictions_frame(chemsys="Li-O", model_name="paper@not-a-version").empty
    from fh_screen.service import known_phases

    # a source no entry of the store has (a typo) is named in one line; one merely absent from the system is not
    misspelt = known_phases(("Li", "O"), sources="oqmd,usr")
    assert misspelt.note.startswith("source usr: no reference entry in the store (it holds oqmd, user)")
    assert known_phases(("Li", "O"), sources="oqmd,user").note == ""
    assert len(misspelt.frame) == len(known_phases(("Li", "O"), sources="oqmd").frame)
    with FhScreenStore.from_settings() as store:
        removed = store.remove_source("user")
        assert removed == report.inserted and store.n_reference() == n_shipped


def test_mongo_first_use_fill_is_bulk_with_progress_and_indexes(settings_env, mongo_server, monkeypatch, caplog):
    import logging

    from fh_screen.store import FhScreenStore

    table = _table_slice()
    monkeypatch.setattr(bootstrap, "_cached_table", lambda: table)
    monkeypatch.setattr(bootstrap, "_BATCH", 150)
    monkeypatch.setenv("FH_SCREEN_MONGO_URI", "mongodb://localhost:27017")
    calls = []
    real = bootstrap.fill_reference

    def spy(*args, **kwargs):
        outer = kwargs.get("progress")
        kwargs["progress"] = lambda done, total: (calls.append((done, total)), outer and outer(done, total))
        return real(*args, **kwargs)

    monkeypatch.setattr(bootstrap, "fill_reference", spy)
    with caplog.at_level(logging.INFO):
        store = FhScreenStore.from_settings()
    assert calls[-1] == (len(table), len(table)) and len(calls) == -(-len(table) // 150)
    with store:
        assert store.n_reference() == len(table)
        indexes = store.reference._collection.index_information()
        assert {"formula_1", "chemsys_1", "elements_1"} <= set(indexes)
        assert "run_id_1" in store.screens._collection.index_information()
    calls.clear()
    FhScreenStore.from_settings()  # second use: the stamp matches, nothing written
    assert calls == []


def test_unreachable_mongodb_is_one_line_naming_the_host_within_seconds(settings_env, monkeypatch):
    from fh_screen.cli import build_app

    monkeypatch.setenv("FH_SCREEN_MONGO_URI", "mongodb://me:s3cret@127.0.0.1:9/fh")
    monkeypatch.setenv("FH_SCREEN_MONGO_TIMEOUT_S", "1")
    started = time.perf_counter()
    result = runner.invoke(build_app(), ["screen", "Li-O", "--max-atoms", "4", "--model", "paper"])
    seconds = time.perf_counter() - started
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "127.0.0.1:9" in errors[0] and "***" in errors[0]
    assert "s3cret" not in result.output and "Traceback" not in result.output and "loading the model" not in result.output
    assert seconds < 10


@pytest.mark.parametrize("command", [["runs"], ["results"], ["results", "--json", "-"], ["query", "--chemsys", "Li-O"],
                                     ["query", "--run", "20260101-abc"]])
def test_every_reading_command_says_an_unreachable_mongodb_in_one_line(settings_env, monkeypatch, command):
    """``results`` raised pymongo's traceback (81 lines) where the other commands say one line."""
    from fh_screen.cli import build_app

    monkeypatch.setenv("FH_SCREEN_MONGO_URI", "mongodb://me:s3cret@127.0.0.1:9/fh")
    monkeypatch.setenv("FH_SCREEN_MONGO_TIMEOUT_S", "0.5")
    result = runner.invoke(build_app(), command)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: cannot reach MongoDB at 127.0.0.1:9") and len(result.output.splitlines()) == 1
    assert "s3cret" not in result.output


def test_an_unreachable_server_leaves_no_open_client(settings_env, monkeypatch):
    import gc
    import warnings

    from fh_screen.settings import FhScreenSettings
    from fh_screen.store.mongo import MongoUnreachableError, check_reachable, mongo_collection

    monkeypatch.setenv("FH_SCREEN_MONGO_URI", "mongodb://127.0.0.1:9/fh")
    monkeypatch.setenv("FH_SCREEN_MONGO_TIMEOUT_S", "0.5")
    settings = FhScreenSettings()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store = mongo_collection(settings, "reference", "formula")
        with pytest.raises(MongoUnreachableError, match="127.0.0.1:9"):
            check_reachable(store, settings.mongo_uri)
        del store
        gc.collect()
    assert not [w for w in caught if "Unclosed MongoClient" in str(w.message)]


def test_mask_uri():
    from fh_screen.store.mongo import mask_uri

    assert mask_uri("mongodb://me:pw@h:1/db?x=1") == "mongodb://me:***@h:1/db?x=1"
    assert mask_uri("mongodb+srv://me:p%40w@cluster.example/db") == "mongodb+srv://me:***@cluster.example/db"
    assert mask_uri("mongodb://h:27017") == "mongodb://h:27017"


def test_exports_name_the_model_of_each_row(tmp_path):
    from fh_screen.exports import export_frame, export_records
    from fh_screen.models.predictor import load_predictor
    from fh_screen.screening import screen as rank

    result = rank("Li-O", predictor=load_predictor("paper"), options=ScreenOptions(max_atoms=6))
    frame = export_frame(result)
    assert list(frame.columns) == [*result.table.columns, "model"]
    assert set(frame["model"]) == {f"paper@{result.model_version}"}
    assert json.loads(json.dumps(export_records(result)))[0]["model"].startswith("paper@")
