"""The same answers and the same one-line errors from MongoDB as from the embedded store, at every door.

MongoDB is mongomock patched in for pymongo (as tests/test_store_backends.py), so maggma's MongoStore code
runs; the server's failures that mongomock cannot produce by itself (a user without write rights, a server
gone mid-command) are raised from its collection methods, where pymongo raises them.
"""

from __future__ import annotations

import json
import time

import pytest
from typer.testing import CliRunner

from fh_screen.cli import build_app
from store_fixtures import fresh_machine

runner = CliRunner()
PASSWORD = "s3cret"


@pytest.fixture
def mongo_server(monkeypatch):
    """An in-memory MongoDB at localhost:27017 (mongomock's close empties the whole server: only the client closes)."""
    import mongomock_ng
    from mongomock_ng.mongo_client import MongoClient

    monkeypatch.setattr(MongoClient, "close", lambda self: None)
    with mongomock_ng.patch(servers=(("localhost", 27017),)):
        yield


@pytest.fixture(params=["embedded", "mongodb"])
def backend(request, tmp_path, monkeypatch):
    """The configured store of a fresh machine (no first-use fill) on each backend; MongoDB with a password."""
    fresh_machine(tmp_path, monkeypatch, reference_data=False)
    if request.param == "mongodb":
        request.getfixturevalue("mongo_server")
        monkeypatch.setenv("FH_SCREEN_MONGO_URI", f"mongodb://me:{PASSWORD}@localhost:27017/?authSource=admin")
        monkeypatch.setenv("FH_SCREEN_MONGO_DATABASE", f"fh_doors_{time.time_ns()}")
    return request.param


@pytest.fixture
def lio_entries(tmp_path, oqmd_train_raw):
    """Real OQMD rows: every Li-O entry of train.csv and 200 others."""
    import pandas as pd

    raw = oqmd_train_raw
    lio = raw[raw["formula"].isin(["Li2O", "Li2O2", "LiO2", "LiO3"])]
    path = tmp_path / "slice.csv"
    pd.concat([lio, raw.sample(n=200, random_state=5)]).to_csv(path, index=False)
    return path


def _one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, (KeyError, TypeError)), result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error")]
    assert len(lines) == 1, result.output
    return lines[0]


def test_no_door_shows_the_password_and_every_label_names_the_collection(backend, lio_entries):
    """``results`` on an unused MongoDB printed the URI with its password; ingest named the server alone."""
    from fh_screen.jobs.finetune import store_entries
    from fh_screen.store import FhScreenStore

    empty = runner.invoke(build_app(), ["results"])
    assert empty.exit_code == 0 and PASSWORD not in empty.output, empty.output
    assert "nothing has come back" in empty.output
    ingested = runner.invoke(build_app(), ["ingest", str(lio_entries), "--source", "mine"])
    assert ingested.exit_code == 0 and PASSWORD not in ingested.output, ingested.output
    with FhScreenStore.from_settings() as store:
        names = [store.reference.name, store.predictions.name, store.screens.name, store.reference_name, store.name]
        database = getattr(store.reference, "database", None)
    assert not any(PASSWORD in name for name in names)
    assert names[0] in ingested.output  # "<where the reference collection is> holds N reference entries"
    if backend == "mongodb":
        assert names[:3] == [f"mongodb://localhost:27017/{database}/{c}" for c in ("reference", "predictions", "screens")]
    # finetune reading entries from the store: no chgnet entry yet, one line naming where it looked
    with pytest.raises(Exception, match="no reference entries of source 'chgnet'") as raised:
        store_entries("chgnet")
    assert PASSWORD not in str(raised.value) and names[0] in str(raised.value)
    refused = runner.invoke(build_app(), ["finetune", "--source", "chgnet", "--output", "unused-model"])
    assert PASSWORD not in _one_error_line(refused)


def test_a_password_with_an_unescaped_at_sign_is_masked_whole():
    from fh_screen.store.mongo import mask_uri, mongo_label
    from fh_screen.settings import FhScreenSettings

    assert mask_uri("mongodb://me:p@ss@db.example:27017/fh") == "mongodb://me:***@db.example:27017/fh"
    assert mask_uri("mongodb://me:a/b@db.example:27017") == "mongodb://me:***@db.example:27017"
    assert mask_uri("mongodb://db.example/fh?appName=a@b") == "mongodb://db.example/fh?appName=a@b"
    assert mask_uri("mongodb://x509user@db.example") == "mongodb://x509user@db.example"
    settings = FhScreenSettings(mongo_uri="mongodb://me:p@ss@db.example:27017/fh")
    assert mongo_label(settings) == "MongoDB db.example:27017/fh_screen"


def test_a_uri_pymongo_cannot_read_is_one_line(tmp_path, monkeypatch):
    fresh_machine(tmp_path, monkeypatch, reference_data=False)
    monkeypatch.setenv("FH_SCREEN_MONGO_URI", f"mongodb://me:{PASSWORD}@localhost:port/fh")
    for command in (["runs"], ["results"], ["query", "--chemsys", "Li-O"]):
        line = _one_error_line(runner.invoke(build_app(), command))
        assert line.startswith("error: cannot reach MongoDB at localhost:port") and PASSWORD not in line


def _deny_writes(monkeypatch):
    """Every write of the mock server fails as a user with read rights only sees it fail."""
    from mongomock_ng.collection import Collection
    from pymongo.errors import OperationFailure

    def denied(self, *args, **kwargs):
        raise OperationFailure(f"not authorized on {self.database.name} to execute command {{ update: {self.name!r} }}",
                               code=13)

    for method in ("bulk_write", "delete_many", "insert_one", "insert_many", "replace_one", "update_one", "update_many"):
        monkeypatch.setattr(Collection, method, denied)


@pytest.mark.parametrize("command", [["ingest", "SLICE", "--source", "mine2"], ["ingest", "--remove-source", "mine"],
                                     ["screen", "Li-O", "--max-atoms", "4", "--model", "paper", "--top", "1"],
                                     ["predict-store", "--model", "paper"],
                                     ["bulk", "-e", "Li,O,F", "-n", "2", "--max-atoms", "3", "--model", "paper"]])
def test_a_user_without_write_rights_gets_one_line_and_nothing_is_written(tmp_path, monkeypatch, mongo_server,
                                                                         lio_entries, command):
    """pymongo's OperationFailure went through every writing command as a traceback (exit 1)."""
    from fh_screen.store import FhScreenStore

    fresh_machine(tmp_path, monkeypatch, reference_data=False)
    monkeypatch.setenv("FH_SCREEN_MONGO_URI", f"mongodb://me:{PASSWORD}@localhost:27017")
    monkeypatch.setenv("FH_SCREEN_MONGO_DATABASE", f"fh_ro_{time.time_ns()}")
    assert runner.invoke(build_app(), ["ingest", str(lio_entries), "--source", "mine"]).exit_code == 0

    def counts() -> tuple[int, int, int]:
        with FhScreenStore.from_settings(read_only=True) as store:
            return store.reference.count(), store.predictions.count(), store.screens.count()

    before = counts()
    _deny_writes(monkeypatch)
    result = runner.invoke(build_app(), [str(lio_entries) if part == "SLICE" else part for part in command])
    line = _one_error_line(result)  # bulk: each system it could not save is reported, then one error line
    assert "not authorized" in line and PASSWORD not in result.output, result.output
    assert "mongodb://localhost:27017/" in line
    assert counts() == before


@pytest.mark.parametrize("command", [["query", "--chemsys", "Li-O"], ["runs"], ["query", "--top", "3"],
                                     ["screen", "Li-O", "--max-atoms", "4", "--model", "paper"]])
def test_a_server_gone_mid_command_is_one_line(tmp_path, monkeypatch, mongo_server, lio_entries, command):
    from mongomock_ng.collection import Collection
    from pymongo.errors import AutoReconnect

    fresh_machine(tmp_path, monkeypatch, reference_data=False)
    monkeypatch.setenv("FH_SCREEN_MONGO_URI", "mongodb://localhost:27017")
    monkeypatch.setenv("FH_SCREEN_MONGO_DATABASE", f"fh_gone_{time.time_ns()}")
    assert runner.invoke(build_app(), ["ingest", str(lio_entries), "--source", "mine"]).exit_code == 0
    assert runner.invoke(build_app(), ["screen", "Li-O", "--max-atoms", "4", "--model", "paper"]).exit_code == 0

    def gone(self, *args, **kwargs):
        raise AutoReconnect("localhost:27017: connection closed")

    monkeypatch.setattr(Collection, "find", gone)
    line = _one_error_line(runner.invoke(build_app(), command))
    assert "connection closed" in line and "mongodb://localhost:27017/" in line


def test_the_python_api_raises_the_one_line_store_error_too(tmp_path, monkeypatch, mongo_server):
    """The API door: a failed MongoDB write is an FhScreenError naming the collection, as StoreFileError is."""
    import pandas as pd

    from fh_screen.errors import FhScreenError
    from fh_screen.models.predictor import load_predictor
    from fh_screen.store import FhScreenStore

    fresh_machine(tmp_path, monkeypatch, reference_data=False)
    monkeypatch.setenv("FH_SCREEN_MONGO_URI", "mongodb://localhost:27017")
    monkeypatch.setenv("FH_SCREEN_MONGO_DATABASE", f"fh_api_{time.time_ns()}")
    _deny_writes(monkeypatch)
    with FhScreenStore.from_settings() as store:
        with pytest.raises(FhScreenError, match=r"^cannot write to mongodb://localhost:27017/fh_api_\d+/predictions: "
                                                r"not authorized"):
            store.save_predictions(pd.DataFrame({"formula": ["Li2O"], "dhf_pred_ev_per_atom": [-2.0]}),
                                   load_predictor("paper"))


def test_reading_screens_of_an_unused_mongodb_writes_nothing(tmp_path, monkeypatch, mongo_server):
    """``runs`` and ``query --run`` filled an unused MongoDB database with the shipped table (290,363 entries)
    where the embedded store makes no file; and ``query --run`` said so in other words."""
    from mongomock_ng.mongo_client import MongoClient

    from fh_screen.store import bootstrap

    fresh_machine(tmp_path, monkeypatch, reference_data=True)
    table = bootstrap.load_reference_table().head(300)
    monkeypatch.setattr(bootstrap, "_cached_table", lambda: table)
    database = f"fh_unused_{time.time_ns()}"
    monkeypatch.setenv("FH_SCREEN_MONGO_URI", "mongodb://localhost:27017")
    monkeypatch.setenv("FH_SCREEN_MONGO_DATABASE", database)
    listed = runner.invoke(build_app(), ["runs"])
    assert listed.exit_code == 0 and "no saved screens yet" in listed.output, listed.output
    line = _one_error_line(runner.invoke(build_app(), ["query", "--run", "20260101T000000000-abcdef12"]))
    assert "no screen has been saved" in line
    assert MongoClient("mongodb://localhost:27017")[database].list_collection_names() == []


def test_runs_and_query_json_are_the_same_documents_in_the_same_field_order(backend):
    """The embedded store returned a projection's fields in the projection's order, MongoDB in the document's."""
    from fh_screen.store import FhScreenStore, ScreenDoc

    saved = runner.invoke(build_app(), ["screen", "Li-O", "--max-atoms", "4", "--model", "paper", "--top", "1"])
    assert saved.exit_code == 0, saved.output
    listed = runner.invoke(build_app(), ["runs", "--json", "-"])
    rows = json.loads(listed.stdout)
    assert list(rows[0]) == [f for f in ScreenDoc.model_fields if f in rows[0]]  # the document's own order
    assert list(rows[0])[:2] == ["run_id", "chemsys"] and len(rows[0]) == 10
    with FhScreenStore.from_settings(read_only=True) as store:
        doc = store.predictions.query_one(properties=["last_updated", "formula", "dhf_pred_ev_per_atom"])
    assert [k for k in doc if k != "_id"] == ["formula", "dhf_pred_ev_per_atom", "last_updated"]


def test_query_rows_of_one_composition_come_in_the_same_order_whatever_order_the_store_holds_them(backend, tmp_path):
    """Two sources of Li2O and two models' predictions: the table and --json are sorted by source and model,
    not by the order the store returns them in (insertion order here, an index's order on a MongoDB server)."""
    from fh_screen.store import FhScreenStore, ReferenceEntryDoc

    with FhScreenStore.from_settings() as store:  # written in reverse order of source, and of model
        store.reference.update([ReferenceEntryDoc.from_formula("Li2O", value, source=source).model_dump()
                                for source, value in (("zz-lab", -1.95), ("aa-lab", -2.0))], key=["formula", "source"])
        for name in ("zz-model", "aa-model"):
            store.predictions.update([{"prediction_id": f"Li2O|{name}", "formula": "Li2O", "elements": ["Li", "O"],
                                       "chemsys": "Li-O", "nelements": 2, "dhf_pred_ev_per_atom": -1.9,
                                       "model_name": name, "model_version": "1"}], key="prediction_id")
    listed = runner.invoke(build_app(), ["query", "--formula", "Li2O", "--json", "-"])
    assert listed.exit_code == 0, listed.output
    rows = [(r["source"], r["model_name"]) for r in json.loads(listed.stdout)]
    assert rows == [("aa-lab", "aa-model"), ("aa-lab", "zz-model"), ("zz-lab", "aa-model"), ("zz-lab", "zz-model")]
