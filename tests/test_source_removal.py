"""Removing a source whose entries were stored under a mixed-case name before names were read in lower case.

``ingest --source OQMD`` used to store its values under ``OQMD`` beside the shipped ``oqmd`` table (the
owned-name check compared case-sensitively), and ``MyLab`` under ``MyLab``. Since every door reads a name in
lower case, ``--remove-source OQMD`` became ``oqmd`` and was refused as the shipped table, so those entries could
never be taken out. Now another spelling of an owned name removes the entries stored under such a spelling, never
the owned ones; ``oqmd`` itself is refused as before. On both backends: an SQLite store file on disk, and
MongoDB (mongomock patched in for pymongo).
"""

from __future__ import annotations

import json
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
    assert removed.exit_code == 0 and "removed 1 reference entry of source 'mylab'" in removed.output
    assert "note:" not in removed.output
    # a misspelt name removes nothing and says which sources the store holds
    typo = runner.invoke(build_app(), ["ingest", "--remove-source", "chgent", *legacy_store])
    assert typo.exit_code == 0 and "removed 0 reference entries of source 'chgent'" in typo.output, typo.output
    assert "source chgent: no reference entry in the store (it holds ChgNet, chgnet, oqmd)" in " ".join(typo.output.split())
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


def _query(source: str, store_args: list[str], tmp_path) -> set[tuple[str, str]]:
    """(formula, source) of the Li-F reference entries ``query --source SOURCE`` selects; no note may be printed."""
    out = tmp_path / f"{source}.json"
    result = runner.invoke(build_app(), ["query", "--chemsys", "Li-F", "--source", source, *store_args,
                                         "--json", str(out)])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert "no reference entry" not in result.output, result.output
    return {(d["formula"], d["source"]) for d in json.loads(out.read_text())}


def test_a_legacy_spelling_selects_what_it_removes_in_every_door(legacy_store, tmp_path):
    """``--sources OQMD`` (and ``query --source OQMD``, ``screen(sources=)``, ``PrescreenMaker(sources=)``) select the
    entries stored under a spelling of an owned name other than its own, exactly those ``--remove-source OQMD``
    removes; the owned name selects its own; any other name selects every spelling of it, as removal does."""
    from fh_screen import screen
    from fh_screen.jobs import PrescreenMaker
    from fh_screen.models.predictor import load_predictor
    from fh_screen.screening import ScreenOptions

    assert _query("OQMD", legacy_store, tmp_path) == {("LiF", "OQMD"), ("Li2F", "Oqmd")}
    assert _query("oqmd", legacy_store, tmp_path) == {("LiF", "oqmd"), ("Li2F", "oqmd")}
    assert _query("ChgNet", legacy_store, tmp_path) == {("Li2F", "ChgNet")}
    assert _query("mylab", legacy_store, tmp_path) == _query("MyLab", legacy_store, tmp_path) == {("LiF", "MyLab")}
    screened = tmp_path / "screen.json"
    result = runner.invoke(build_app(), ["screen", "Li-F", "--sources", "OQMD", "--model", "paper-ensemble",
                                         "--max-atoms", "6", "--no-store", *legacy_store, "--json", str(screened)])
    assert result.exit_code == 0 and "no reference entry" not in result.output, result.output
    rows = {row["formula"]: row for row in json.loads(screened.read_text())}
    assert (rows["LiF"]["known_dhf_ev_per_atom"], rows["LiF"]["known_source"]) == (-3.5, "OQMD")
    assert (rows["Li2F"]["known_dhf_ev_per_atom"], rows["Li2F"]["known_source"]) == (-1.1, "Oqmd")
    predictor = load_predictor("paper-ensemble")
    options = {"max_atoms": 6, "charge_neutral": False}
    api = screen("Li-F", predictor=predictor, options=ScreenOptions(**options), sources="OQMD",
                 store=FhScreenStore.from_settings(read_only=True))
    known = api.table.dropna(subset=["known_dhf_ev_per_atom"]).set_index("formula")
    assert known["known_source"].to_dict() == {"LiF": "OQMD", "Li2F": "Oqmd"} and not api.warnings
    maker = PrescreenMaker(model="paper-ensemble", sources="OQMD", save_screen=False, screen_options=options,
                           reference_store=FhScreenStore.from_settings(read_only=True).reference)
    doc = maker.prescreen("Li-F")
    assert {c.formula: c.known_source for c in doc.candidates if c.known_source} == {"LiF": "OQMD", "Li2F": "Oqmd"}
    # once those entries are removed, OQMD reads as oqmd again (as --remove-source OQMD then refuses it as oqmd)
    assert runner.invoke(build_app(), ["ingest", "--remove-source", "OQMD", *legacy_store]).exit_code == 0
    assert _query("OQMD", legacy_store, tmp_path) == {("LiF", "oqmd"), ("Li2F", "oqmd")}


def test_removing_a_source_from_a_store_that_is_not_there_makes_no_store(tmp_path, monkeypatch):
    """``ingest --remove-source NAME`` on a path (or a configured store) that holds no store is one line, as
    ``query`` and ``predict-store`` say, and leaves no file behind (nor fills one with the shipped table)."""
    from fh_screen.settings import FhScreenSettings

    fresh_machine(tmp_path, monkeypatch, reference_data=True)
    missing = tmp_path / "new.db"
    for name in ("my-dft", "MyLab"):
        result = runner.invoke(build_app(), ["ingest", "--remove-source", name, "--store", str(missing)])
        assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
        assert f"no store at {missing}" in result.output and "Traceback" not in result.output
        assert not missing.exists()
    configured = runner.invoke(build_app(), ["ingest", "--remove-source", "my-dft"])
    assert configured.exit_code == 2 and configured.output.count("\n") == 1, configured.output
    store_path = FhScreenSettings().store_path
    assert f"no store at {store_path}" in configured.output and not store_path.exists()


def test_removing_a_source_from_an_empty_file_or_an_unused_mongodb_writes_nothing(tmp_path, monkeypatch):
    """An empty file is no store (``query`` finds no collection in it) and a configured MongoDB database that was
    never used holds none: ``ingest --remove-source`` refuses both in one line and writes nothing, neither the
    shipped table nor empty collections (it filled an unused MongoDB with the whole table, and made an empty file
    a store)."""
    import mongomock_ng
    from mongomock_ng.mongo_client import MongoClient

    fresh_machine(tmp_path, monkeypatch, reference_data=True)
    empty = tmp_path / "empty.db"
    empty.touch()
    result = runner.invoke(build_app(), ["ingest", "--remove-source", "my-dft", "--store", str(empty)])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and f"no store at {empty}" in result.output
    assert empty.stat().st_size == 0

    monkeypatch.setattr(MongoClient, "close", lambda self: None)  # mongomock's close empties the whole server
    database = f"fh_unused_{time.time_ns()}"
    monkeypatch.setenv("FH_SCREEN_MONGO_URI", "mongodb://localhost:27017")
    monkeypatch.setenv("FH_SCREEN_MONGO_DATABASE", database)
    with mongomock_ng.patch(servers=(("localhost", 27017),)):
        result = runner.invoke(build_app(), ["ingest", "--remove-source", "my-dft"])
        assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
        assert f"no store at MongoDB localhost:27017/{database}" in result.output and "Traceback" not in result.output
        assert MongoClient("mongodb://localhost:27017")[database].list_collection_names() == []


def test_the_known_phases_given_to_screen_are_selected_by_the_store_s_rule(legacy_store):
    """screen(known=<a table read from the store>, sources=...) gives the hull the store door gives for every
    spelling (it read the names in any case, so `oqmd` also took the legacy OQMD rows)."""
    from fh_screen import screen
    from fh_screen.models.predictor import load_predictor
    from fh_screen.screening import ScreenOptions

    predictor, options = load_predictor("paper"), ScreenOptions(max_atoms=4)
    with FhScreenStore.from_settings(read_only=True) as store:
        frame = store.reference_frame(chemsys="Li-F")
    for sources in ("oqmd", "OQMD", "mylab", "chgnet", "oqmd,MyLab"):
        from_store = screen("Li-F", predictor=predictor, options=options, sources=sources, save=False)
        given = screen("Li-F", predictor=predictor, options=options, sources=sources, known=frame, save=False)
        columns = ["formula", "known_dhf_ev_per_atom", "known_source"]
        assert from_store.table.reindex(columns=columns).equals(given.table.reindex(columns=columns)), sources
    oqmd = screen("Li-F", predictor=predictor, options=options, sources="oqmd", known=frame, save=False).table.set_index("formula")
    assert oqmd.loc["LiF", "known_dhf_ev_per_atom"] == pytest.approx(-3.2101) and oqmd.loc["LiF", "known_source"] == "oqmd"
