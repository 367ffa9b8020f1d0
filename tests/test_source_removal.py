"""Removing a source whose entries were stored under a mixed-case name before names were read in lower case.

``ingest --source OQMD`` used to store its values under ``OQMD`` beside the shipped ``oqmd`` table (the
owned-name check compared case-sensitively), and ``MyLab`` under ``MyLab``. Since every door reads a name in
lower case, ``--remove-source OQMD`` became ``oqmd`` and was refused as the shipped table, so those entries could
never be taken out. Now another spelling of an owned name removes the entries stored under such a spelling, never
the owned ones; ``oqmd`` itself is refused as before. On both backends: an SQLite store file on disk, and
MongoDB (mongomock patched in for pymongo).
"""

from __future__ import annotations

import time

import pytest
from typer.testing import CliRunner

from fh_screen.cli import build_app
from fh_screen.store import FhScreenStore, ReferenceEntryDoc, SourceOwnedError
from store_fixtures import fresh_machine

runner = CliRunner()
#: Real OQMD values of Li-F under the shipped name, and values stored under legacy mixed-case names.
ENTRIES = [("LiF", -3.2101, "oqmd"), ("Li2F", -1.0, "oqmd"), ("LiF", -3.5, "OQMD"), ("Li2F", -1.1, "Oqmd"),
           ("LiF", -3.6, "MyLab"), ("LiF", -3.4, "chgnet"), ("Li2F", -1.2, "ChgNet")]


@pytest.fixture(params=["embedded", "mongodb"])
def legacy_store(request, tmp_path, monkeypatch):
    """The configured store (an SQLite file on disk, or MongoDB) holding ENTRIES written directly, as an old
    fh-screen wrote them; yields the CLI's store arguments."""
    fresh_machine(tmp_path, monkeypatch, reference_data=False)
    args: list[str] = []
    if request.param == "mongodb":
        import mongomock_ng
        from mongomock_ng.mongo_client import MongoClient

        monkeypatch.setattr(MongoClient, "close", lambda self: None)  # mongomock's close empties the whole server
        patch = mongomock_ng.patch(servers=(("localhost", 27017),))
        patch.start()
        request.addfinalizer(patch.stop)
        monkeypatch.setenv("FH_SCREEN_MONGO_URI", "mongodb://localhost:27017")
        monkeypatch.setenv("FH_SCREEN_MONGO_DATABASE", f"fh_test_{time.time_ns()}")
    with FhScreenStore.from_settings() as store:
        docs = []
        for formula, value, source in ENTRIES:
            doc = ReferenceEntryDoc.from_formula(formula, value, source="oqmd").model_dump()
            docs.append({**doc, "source": source})  # the stored value as written before names were normalised
        store.reference.update(docs, key=["formula", "source"])
        if request.param == "embedded":
            args = ["--store", str(store.reference.path)]
    yield args


def _sources() -> dict[str, int]:
    with FhScreenStore.from_settings(read_only=True) as store:
        found = [d["source"] for d in store.reference.query(properties=["source"])]
    return {s: found.count(s) for s in sorted(set(found))}


def test_a_legacy_mixed_case_source_is_removed_by_name_and_the_owned_ones_are_not(legacy_store):
    assert _sources() == {"ChgNet": 1, "MyLab": 1, "OQMD": 1, "Oqmd": 1, "chgnet": 1, "oqmd": 2}
    # the shipped name itself is refused in one line, as ever, and nothing changes
    refused = runner.invoke(build_app(), ["ingest", "--remove-source", "oqmd", *legacy_store])
    assert refused.exit_code == 2 and refused.output.count("\n") == 1, refused.output
    assert "is not removed by hand" in refused.output and "Traceback" not in refused.output
    assert _sources()["oqmd"] == 2
    # another spelling: every entry stored under a spelling of it (case-insensitively), never the shipped ones
    removed = runner.invoke(build_app(), ["ingest", "--remove-source", "OQMD", *legacy_store])
    assert removed.exit_code == 0 and removed.output.count("\n") == 1, removed.output
    assert "removed 2 reference entries of source 'OQMD'" in removed.output
    assert _sources() == {"ChgNet": 1, "MyLab": 1, "chgnet": 1, "oqmd": 2}
    # once they are gone, that spelling is the shipped table again: refused in one line
    again = runner.invoke(build_app(), ["ingest", "--remove-source", "OQMD", *legacy_store])
    assert again.exit_code == 2 and again.output.count("\n") == 1 and "is not removed by hand" in again.output
    removed = runner.invoke(build_app(), ["ingest", "--remove-source", "MyLab", *legacy_store])
    assert removed.exit_code == 0 and "removed 1 reference entries of source 'mylab'" in removed.output
    # the Python API: the same rule for a source of results brought back (chgnet)
    with FhScreenStore.from_settings() as store:
        with pytest.raises(SourceOwnedError, match="are not removed by hand"):
            store.remove_source("chgnet")
        assert store.remove_source(" ChgNet ") == 1
        with pytest.raises(SourceOwnedError, match="are not removed by hand"):
            store.remove_source("CHGNET")
    assert _sources() == {"chgnet": 1, "oqmd": 2}


def test_a_legacy_spelling_of_an_owned_source_makes_no_store(tmp_path, monkeypatch):
    fresh_machine(tmp_path, monkeypatch, reference_data=True)
    missing = tmp_path / "none.db"
    result = runner.invoke(build_app(), ["ingest", "--remove-source", "OQMD", "--store", str(missing)])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output  # no store holds a legacy entry
    assert not missing.exists()  # nothing made (nor filled with the shipped table) to find that out
