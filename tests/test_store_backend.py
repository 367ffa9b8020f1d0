"""SQLiteStore against maggma's own expectations: MemoryStore (mongomock) as the reference."""

from __future__ import annotations

import math
import random
import sqlite3
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone

import pytest
from maggma.stores import MemoryStore

from fh_screen.store.backend import SQLiteStore, StoreFileError


def _docs(n: int = 300) -> list[dict]:
    """Documents mixing the types MongoDB semantics treat differently."""
    rng = random.Random(7)
    base = datetime(2024, 1, 1)
    symbols = ["Li", "Fe", "O", "P", "Mn"]
    docs = []
    for i in range(n):
        doc = {
            "task_id": f"t{i:04d}",
            "n": i % 7,
            "x": round(rng.uniform(-3, 3), 3),
            "tag": rng.choice(["a", "b", "c"]),
            "elements": sorted(rng.sample(symbols, rng.randint(1, 3))),
            "last_updated": base + timedelta(hours=i),
            "sub": {"k": i % 3, "name": f"s{i % 5}"},
            "flag": i % 2 == 0,
        }
        if i % 11 == 0:
            doc["n"] = [i % 7, 9]  # arrays match element-wise
        if i % 13 == 0:
            doc["tag"] = None
        if i % 17 == 0:
            del doc["x"]
        if i % 19 == 0:
            doc["n"] = str(i % 7)  # a string where numbers are usual
        if i % 23 == 0:
            doc["flag"] = 1  # an integer, not a boolean
        docs.append(doc)
    return docs


QUERIES = [
    {},
    {"n": 3},
    {"n": 9},
    {"n": "3"},
    {"n": {"$in": [1, 2, "5"]}},
    {"n": {"$gt": 2, "$lte": 5}},
    {"n": {"$gte": 9}},
    {"x": {"$lt": 0}},
    {"x": {"$exists": False}},
    {"tag": None},
    {"tag": "a", "n": {"$ne": 1}},
    {"tag": {"$in": ["b", "c"]}, "x": {"$gte": -1.5}},
    {"elements": "Fe"},
    {"elements": {"$all": ["Fe", "O"]}},
    {"elements": {"$size": 1}},
    {"sub.k": 2},
    {"sub": {"k": 1, "name": "s1"}},
    {"flag": True},
    {"flag": 1},
    {"$or": [{"n": 1}, {"tag": "c"}]},
    {"$and": [{"n": {"$in": [1, 2, 3]}}, {"x": {"$gt": 0}}]},
    {"task_id": "t0042"},
    {"task_id": {"$in": ["t0001", "t0002", "missing"]}},
    {"task_id": {"$gte": "t0290"}},
    {"last_updated": {"$gt": datetime(2024, 1, 10)}},
    {"last_updated": {"$lte": datetime(2024, 1, 2, 5)}},
    {"tag": {"$regex": "^[ab]$"}},
]


def _make_twins(tmp_path):
    sqlite_store = SQLiteStore(tmp_path / "s.sqlite", "docs", key="task_id")
    memory = MemoryStore("docs", key="task_id")
    docs = _docs()
    for store in (sqlite_store, memory):
        store.connect()
        store.update([dict(d) for d in docs])
    for field in ("n", "x", "tag", "elements", "flag"):
        sqlite_store.ensure_index(field)
    return sqlite_store, memory


@pytest.fixture(scope="module")
def twin_stores(tmp_path_factory):
    """The same documents in a SQLiteStore (on disk) and a MemoryStore (read-only tests)."""
    sqlite_store, memory = _make_twins(tmp_path_factory.mktemp("twins"))
    yield sqlite_store, memory
    sqlite_store.close()


@pytest.mark.parametrize("criteria", QUERIES, ids=[str(q) for q in QUERIES])
def test_query_matches_mongomock(twin_stores, criteria):
    sqlite_store, memory = twin_stores
    expected = sorted(d["task_id"] for d in memory.query(criteria))
    got = sorted(d["task_id"] for d in sqlite_store.query(criteria))
    assert got == expected
    assert sqlite_store.count(criteria) == len(expected)


def test_documents_round_trip(twin_stores):
    sqlite_store, memory = twin_stores
    for doc in memory.query({"task_id": {"$in": ["t0000", "t0011", "t0019", "t0023"]}}):
        doc.pop("_id")
        assert sqlite_store.query_one({"task_id": doc["task_id"]}) == doc


def test_projection_sort_skip_limit(twin_stores):
    sqlite_store, memory = twin_stores
    kwargs = {"criteria": {"x": {"$gt": 0}}, "sort": {"x": -1}, "skip": 3, "limit": 5}
    expected = [d["task_id"] for d in memory.query(**kwargs)]
    got = list(sqlite_store.query(properties=["task_id", "x", "sub.k"], **kwargs))
    assert [d["task_id"] for d in got] == expected
    assert all(set(d) == {"task_id", "x", "sub"} and set(d["sub"]) == {"k"} for d in got)
    excluded = sqlite_store.query_one({"task_id": "t0001"}, properties={"sub": 0, "elements": 0})
    assert "sub" not in excluded and "elements" not in excluded and excluded["tag"] is not None
    assert [d["task_id"] for d in sqlite_store.query(sort={"last_updated": -1}, limit=2)] == ["t0299", "t0298"]


@pytest.mark.parametrize("properties", [
    ["task_id", "sub.k"], ["items.a"], ["items.a", "items.b.c"], {"items.a": 0}, {"items": 0},
    ["missing", "items.missing"],
])
def test_projection_matches_mongomock_on_nested_documents_and_arrays(tmp_path, properties):
    docs = [
        {"task_id": "a", "sub": {"k": 1, "name": "x"}, "items": [{"a": 1, "b": {"c": 2, "d": 3}}, {"b": 4}]},
        {"task_id": "b", "sub": 7, "items": {"a": 1, "z": 2}},
        {"task_id": "c", "items": []},
    ]
    sqlite_store = SQLiteStore(tmp_path / "p.sqlite", "docs", key="task_id")
    memory = MemoryStore("p", key="task_id")
    for store in (sqlite_store, memory):
        store.connect()
        store.update([dict(d) for d in docs])
    expected = [{k: v for k, v in d.items() if k != "_id"} for d in memory.query(properties=properties, sort={"task_id": 1})]
    assert list(sqlite_store.query(properties=properties, sort={"task_id": 1})) == expected


def test_excluding_a_dotted_field_keeps_values_that_are_not_documents(tmp_path):
    # As MongoDB does (mongomock drops them): excluding sub.name leaves a scalar sub alone.
    store = SQLiteStore(tmp_path / "p.sqlite", "docs", key="task_id")
    store.connect()
    store.update([{"task_id": "b", "sub": 7, "items": [{"b": {"c": 1, "d": 2}}, {"b": 4}]}])
    assert store.query_one(properties={"sub.name": 0, "items.b.c": 0}) == {
        "task_id": "b", "sub": 7, "items": [{"b": {"d": 2}}, {"b": 4}],
    }


def test_distinct_groupby_last_updated(twin_stores):
    sqlite_store, memory = twin_stores
    assert sorted(sqlite_store.distinct("elements")) == sorted(memory.distinct("elements"))
    assert sorted(sqlite_store.distinct("tag", {"n": 3}), key=str) == sorted(memory.distinct("tag", {"n": 3}), key=str)
    assert sorted(sqlite_store.distinct("task_id")) == sorted(memory.distinct("task_id"))
    groups = {key["sub"]["k"]: len(docs) for key, docs in sqlite_store.groupby("sub.k", properties=["task_id"])}
    expected = {key["sub"]["k"]: len(docs) for key, docs in memory.groupby("sub.k", properties=["task_id"])}
    assert groups == expected and sum(groups.values()) == 300
    # MemoryStore cannot sort None against strings; this store groups them anyway
    assert {k["tag"] for k, _ in sqlite_store.groupby("tag")} == {None, "a", "b", "c"}
    assert sqlite_store.last_updated == memory.last_updated == datetime(2024, 1, 1) + timedelta(hours=299)


def test_update_upserts_and_remove(tmp_path):
    sqlite_store, _ = _make_twins(tmp_path)
    n = sqlite_store.count()
    sqlite_store.update([{"task_id": "t0001", "n": 100}, {"task_id": "new", "n": 101}, {"task_id": "new", "n": 102}])
    assert sqlite_store.count() == n + 1
    assert sqlite_store.query_one({"task_id": "t0001"}) == {"task_id": "t0001", "n": 100}
    assert sqlite_store.query_one({"task_id": "new"})["n"] == 102  # later duplicate wins, as bulk ReplaceOne
    sqlite_store.remove_docs({"n": {"$gte": 100}})
    assert sqlite_store.count() == n - 1
    assert sqlite_store.count({"task_id": {"$in": ["t0001", "new"]}}) == 0


def test_update_on_other_keys_keeps_several_docs_per_store_key(tmp_path):
    """jobflow's JobStore upserts on ["uuid", "index"] in a store keyed on "uuid"."""
    with SQLiteStore(tmp_path / "jobs.sqlite", "jobs", key="uuid") as store:
        store.update([{"uuid": "a", "index": 1, "v": 1}, {"uuid": "a", "index": 2, "v": 2}], key=["uuid", "index"])
        store.update({"uuid": "a", "index": 2, "v": 3}, key=["uuid", "index"])
        docs = list(store.query({"uuid": "a"}, sort={"index": 1}))
        assert [(d["index"], d["v"]) for d in docs] == [(1, 1), (2, 3)]


def test_values_mongodb_would_store(tmp_path):
    import numpy as np

    aware = datetime(2024, 5, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    with SQLiteStore(tmp_path / "v.sqlite", "v") as store:
        store.update({"task_id": 1, "nan": math.nan, "inf": [math.inf], "np": np.float32(1.5), "arr": np.arange(3), "t": aware})
        doc = store.query_one({"task_id": 1})
        assert math.isnan(doc["nan"]) and doc["inf"] == [math.inf]
        assert doc["np"] == 1.5 and doc["arr"] == [0, 1, 2]
        assert doc["t"] == datetime(2024, 5, 1, 10)  # naive UTC, as MongoDB hands it back
        assert store.count({"task_id": 1.0}) == 1


def test_persists_across_connections_and_pickles(tmp_path):
    import pickle

    store = SQLiteStore(tmp_path / "p.sqlite", "docs", key="k", last_updated_field="lu")
    with store:
        store.update([{"k": i} for i in range(10)])
    clone = pickle.loads(pickle.dumps(store))
    assert clone == store and clone.key == "k" and clone.last_updated_field == "lu"
    with clone:
        assert clone.count() == 10
    with pytest.raises(StoreFileError, match="keyed on 'k'"):
        SQLiteStore(tmp_path / "p.sqlite", "docs", key="other").connect()


def test_corrupt_or_missing_file_gives_one_line_error_naming_it(tmp_path):
    bad = tmp_path / "corrupt.sqlite"
    bad.write_bytes(b"this is not an SQLite file" * 200)
    with pytest.raises(StoreFileError) as info:
        SQLiteStore(bad, "docs").connect()
    message = str(info.value)
    assert str(bad) in message and "\n" not in message
    with pytest.raises(StoreFileError, match="does not exist"):
        SQLiteStore(tmp_path / "absent.sqlite", "docs", read_only=True).connect()
    with pytest.raises(StoreFileError, match="is a folder"):
        SQLiteStore(tmp_path, "docs").connect()


def test_damaged_pages_are_reported_not_hidden(tmp_path):
    path = tmp_path / "damaged.sqlite"
    with SQLiteStore(path, "docs") as store:
        store.update([{"task_id": i, "payload": "x" * 500} for i in range(2000)])
        store._collection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    for offset in range(8192, len(data), 4096):  # scribble over every page after the first two
        data[offset:offset + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    store = SQLiteStore(path, "docs")
    with pytest.raises(StoreFileError, match=str(path)):
        store.connect()
        list(store.query())
        store.check()


WRITER = textwrap.dedent(
    """
    import sys
    from fh_screen.store.backend import SQLiteStore
    path, prefix, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with SQLiteStore(path, "docs", key="task_id", busy_timeout_s=60) as store:
        for start in range(0, n, 10):
            store.update([{"task_id": f"{prefix}{i}", "writer": prefix} for i in range(start, start + 10)])
            store.update([{"task_id": "shared", "writer": prefix, "i": start}])
    """
)


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    path = tmp_path / "shared.sqlite"
    with SQLiteStore(path, "docs", key="task_id"):
        pass  # create the file first, so both writers open an existing database
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    writers = [subprocess.Popen([sys.executable, str(script), str(path), p, "400"]) for p in ("a", "b")]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    with SQLiteStore(path, "docs", key="task_id") as store:
        assert store.count() == 801
        for prefix in ("a", "b"):
            assert store.count({"writer": prefix, "task_id": {"$ne": "shared"}}) == 400
        assert store.check() == "ok"


def test_sqlite_error_does_not_escape_as_raw_exception(tmp_path):
    store = SQLiteStore(tmp_path / "x.sqlite", "docs")
    with store:
        store.update({"task_id": 1})
        with pytest.raises(StoreFileError):
            store._run(lambda: store._collection.execute("SELECT * FROM no_such_table"))
    assert issubclass(StoreFileError, ValueError) and not issubclass(StoreFileError, sqlite3.Error)


def test_a_store_used_before_it_is_connected_says_so_in_one_plain_line(tmp_path):
    """maggma's own StoreError reads ``(StoreError(...), 'Must connect ...')``; ours names the store and the fix,
    and is still a maggma StoreError for code that catches those."""
    from maggma.core import StoreError

    from fh_screen.store import FhScreenStore

    store = FhScreenStore.embedded(tmp_path / "s.sqlite")
    with pytest.raises(StoreError) as info:
        store.reference_frame(chemsys="Li-O")
    text = str(info.value)
    assert text.startswith(f"store sqlite://{tmp_path / 's.sqlite'}/reference is not connected")
    assert "with store:" in text and "StoreError(" not in text and "\n" not in text
    with store:
        assert store.reference_frame(chemsys="Li-O").empty
