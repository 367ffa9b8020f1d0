"""SQLiteStore against maggma's MemoryStore: random sequences of every Store method, equal answers.

Hypothesis drives ``update`` (on the store key and on two-field keys, as a jobflow JobStore does),
``remove_docs``, ``query`` (criteria, sort, skip, limit, properties), ``count``, ``distinct``,
``groupby``, ``last_updated`` and ``newer_in`` on both stores and asserts that every answer (or
the exception class raised) is the same.
"""

from __future__ import annotations

import tempfile
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from maggma.core import StoreError
from maggma.stores import MemoryStore

from fh_screen.store.backend import SQLiteStore

_BASE = datetime(2026, 1, 1)

# values kept to types MongoDB orders the same way as documented by SQLiteStore (null < numbers < strings)
values = st.one_of(st.none(), st.integers(-3, 3), st.sampled_from(["a", "b", "c"]), st.floats(-2, 2, allow_nan=False).map(lambda x: round(x, 2)))
dates = st.integers(0, 5).map(lambda d: _BASE + timedelta(days=d, milliseconds=d * 7))


@st.composite
def documents(draw):
    doc = {"k": draw(st.integers(0, 4)), "j": draw(st.integers(0, 2))}
    if draw(st.booleans()):
        doc["v"] = draw(values)
    if draw(st.booleans()):
        doc["w"] = draw(st.sampled_from(["x", "y"]))
    if draw(st.integers(0, 2)) > 0:  # mostly with a time stamp, sometimes without
        doc["last_updated"] = draw(dates)
    return doc


criteria = st.one_of(
    st.none(),
    st.none(),
    st.none(),
    st.builds(lambda v: {"k": v}, st.integers(0, 4)),
    st.builds(lambda v: {"j": {"$gte": v}}, st.integers(0, 2)),
    st.builds(lambda v: {"v": v}, values),
    st.builds(lambda v: {"v": {"$in": v}}, st.lists(values, max_size=3)),
    st.builds(lambda v: {"v": {"$exists": v}}, st.booleans()),
    st.builds(lambda a, b: {"k": {"$in": a}, "w": b}, st.lists(st.integers(0, 4), max_size=3), st.sampled_from(["x", "y"])),
    st.builds(lambda v: {"last_updated": {"$gt": v}}, dates),
)
sorts = st.one_of(st.none(), st.fixed_dictionaries({}, optional={"k": st.sampled_from([1, -1])}).flatmap(
    lambda d: st.just({**d, "j": 1}) | st.just({"v": -1, **d}) | st.just(d or None)))
property_lists = st.one_of(st.none(), st.lists(st.sampled_from(["k", "j", "v", "w", "last_updated"]), min_size=1, max_size=3, unique=True))

operations = st.one_of(
    st.tuples(st.just("update"), st.lists(documents(), min_size=1, max_size=5), st.sampled_from([None, ["k", "j"], ["j"]])),
    st.tuples(st.just("remove_docs"), criteria.filter(lambda c: c is not None)),
    st.tuples(st.just("query"), criteria, sorts, st.integers(0, 3), st.integers(0, 4), property_lists),
    st.tuples(st.just("count"), criteria),
    st.tuples(st.just("distinct"), st.sampled_from(["k", "k", "j", "v", "w", "last_updated"]), criteria),
    st.tuples(st.just("distinct"), st.just("k"), st.none()),
    st.tuples(st.just("groupby"), st.sampled_from([["k"], ["j"], ["k", "j"], ["w"]]), criteria,
              st.lists(st.sampled_from(["v", "w", "last_updated"]), min_size=1, max_size=2, unique=True)),
    st.tuples(st.just("last_updated")),
    st.tuples(st.just("last_updated")),
    st.tuples(st.just("newer_in"), st.booleans(), criteria),
)


def _plain(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "_id"}


def _distinct_key(value):
    return (value is not None, type(value).__name__, value)


def _apply(store, other, operation):
    """The answer of ``store`` to one operation (``other``: a second store of the same kind for newer_in)."""
    name, *args = operation
    try:
        if name == "update":
            docs, key = args
            store.update([dict(d) for d in docs], key=key)
            return None
        if name == "remove_docs":
            store.remove_docs(args[0])
            return None
        if name == "query":
            criteria_, sort, skip, limit, properties = args
            docs = [_plain(d) for d in store.query(criteria=criteria_, sort=sort, skip=skip, limit=limit, properties=properties)]
            if not sort:  # MongoDB promises no order without a sort
                docs = sorted(docs, key=repr)
            return docs
        if name == "count":
            return store.count(args[0])
        if name == "distinct":
            return sorted(store.distinct(args[0], criteria=args[1]), key=_distinct_key)
        if name == "groupby":
            keys, criteria_, properties = args
            groups = [(key, sorted((_plain(d) for d in docs), key=repr))
                      for key, docs in store.groupby(keys, criteria=criteria_, properties=properties)]
            return sorted(groups, key=repr)
        if name == "last_updated":
            return store.last_updated
        if name == "newer_in":
            exhaustive, criteria_ = args
            return sorted(other.newer_in(store, criteria=criteria_, exhaustive=exhaustive), key=repr)
    except (StoreError, KeyError, TypeError) as exc:
        return ("raised", type(exc).__name__)
    raise AssertionError(name)


_OTHER_DOCS = [{"k": i, "j": 0, "last_updated": _BASE + timedelta(days=i, hours=12)} for i in range(4)]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operations, min_size=1, max_size=14))
def test_sqlite_store_answers_every_store_method_as_memory_store(sequence):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "store.sqlite"
        ours, ours_other = SQLiteStore(path, "docs", key="k"), SQLiteStore(path, "other", key="k")
        theirs, theirs_other = MemoryStore("docs", key="k"), MemoryStore("other", key="k")
        for store in (ours, ours_other, theirs, theirs_other):
            store.connect()
        ours_other.update([dict(d) for d in _OTHER_DOCS])
        theirs_other.update([dict(d) for d in _OTHER_DOCS])
        try:
            for step, operation in enumerate(sequence):
                expected = _apply(theirs, theirs_other, operation)
                got = _apply(ours, ours_other, operation)
                assert got == expected, f"step {step}: {operation}"
        finally:
            ours.close()
            ours_other.close()


@pytest.mark.parametrize("key", [["uuid", "index"], ["index", "uuid"]])
def test_distinct_on_the_store_key_has_no_duplicates_after_multi_field_updates(tmp_path, key):
    """What a jobflow JobStore does: several documents per uuid (one per index)."""
    docs = [{"uuid": "a", "index": 1}, {"uuid": "a", "index": 2}, {"uuid": "b", "index": 1}]
    ours, theirs = SQLiteStore(tmp_path / "s.sqlite", "jobs", key="uuid"), MemoryStore("jobs", key="uuid")
    for store in (ours, theirs):
        store.connect()
        store.update([dict(d) for d in docs], key=key)
    assert ours.distinct("uuid") == ["a", "b"] and sorted(theirs.distinct("uuid")) == ["a", "b"]
    assert ours.count() == theirs.count() == 3


def test_last_updated_over_a_document_without_the_field_raises_store_error_like_maggma(tmp_path):
    ours, theirs = SQLiteStore(tmp_path / "s.sqlite", "c", key="task_id"), MemoryStore("c", key="task_id")
    for store in (ours, theirs):
        store.connect()
        assert store.last_updated == datetime.min
        store.update([{"task_id": 1, "a": 1}])
        with pytest.raises(StoreError, match="last_updated"):
            store.last_updated  # noqa: B018
        store.update([{"task_id": 1, "a": 1, "last_updated": _BASE}])
        assert store.last_updated == _BASE
