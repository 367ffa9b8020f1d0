"""Sources are explicit: reference entries of several sources side by side, chosen by query and screen."""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from fh_screen.cli import build_app
from fh_screen.store import FhScreenStore, QueryError, ReferenceEntryDoc, criteria_for
from fh_screen.store.query import parse_sources

runner = CliRunner()
#: Real OQMD values (train.csv) of Li-F, plus a made-up CHGNet value for LiF.
ENTRIES = [("LiF", -3.2101, "oqmd"), ("LiF", -3.40, "chgnet"), ("Li2F", -1.0, "chgnet")]


@pytest.fixture
def store_file(tmp_path, monkeypatch):
    monkeypatch.setenv("FH_SCREEN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FH_SCREEN_CONFIG_FILE", os.devnull)
    from fh_screen.settings import FhScreenSettings

    path = FhScreenSettings().store_path
    path.parent.mkdir(parents=True)
    with FhScreenStore.embedded(path) as store:
        store.reference.update([ReferenceEntryDoc.from_formula(f, v, source=s).model_dump() for f, v, s in ENTRIES],
                               key=["formula", "source"])
    return path


def test_criteria_and_parsing_of_sources():
    assert criteria_for(source="chgnet") == {"source": "chgnet"}
    # another spelling of an owned name reads as the owned one in a store that holds no entry under it
    assert criteria_for(source=" OQMD, chgnet,oqmd", sources_present=lambda: ["oqmd", "chgnet"]) == \
        {"source": {"$in": ["oqmd", "chgnet"]}}
    assert parse_sources(["oqmd", "atomate2-vasp,chgnet"]) == ["oqmd", "atomate2-vasp", "chgnet"]
    with pytest.raises(QueryError):
        parse_sources(" , ")


def test_store_keeps_one_entry_per_formula_and_source(store_file):
    with FhScreenStore.embedded(store_file, read_only=True) as store:
        everything = store.reference_frame(chemsys="Li-F")
        chgnet = store.reference_frame(chemsys="Li-F", source="chgnet")
        oqmd = store.reference_frame(chemsys="Li-F", source="oqmd")
    assert sorted(zip(everything["formula"], everything["source"])) == [("Li2F", "chgnet"), ("LiF", "chgnet"), ("LiF", "oqmd")]
    assert set(chgnet["source"]) == {"chgnet"} and len(chgnet) == 2
    assert oqmd["dhf_ev_per_atom"].tolist() == [-3.2101]


def test_cli_query_by_source(store_file, tmp_path):
    out = tmp_path / "q.json"
    result = runner.invoke(build_app(), ["query", "--chemsys", "Li-F", "--source", "chgnet", "--store", str(store_file),
                                         "--json", str(out)])
    assert result.exit_code == 0, result.output
    docs = json.loads(out.read_text())
    assert {(d["formula"], d["source"]) for d in docs} == {("LiF", "chgnet"), ("Li2F", "chgnet")}
    bad = runner.invoke(build_app(), ["query", "--chemsys", "Li-F", "--source", ",", "--store", str(store_file)])
    assert bad.exit_code == 2 and "source" in bad.output
    typo = runner.invoke(build_app(), ["query", "--chemsys", "Li-F", "--source", "chgent", "--store", str(store_file)])
    assert typo.exit_code == 0 and "no matching entries" in typo.output
    assert "source chgent: no reference entry in the store (it holds chgnet, oqmd)" in " ".join(typo.output.split())
    # the default view (DFT beside predictions) names each DFT value's source too
    both = runner.invoke(build_app(), ["query", "--formula", "LiF", "--store", str(store_file)])
    rows = [line for line in both.output.splitlines() if "│ LiF " in line]
    assert both.exit_code == 0 and "source" in both.output and len(rows) == 2
    assert {("oqmd" in r, "chgnet" in r) for r in rows} == {(True, False), (False, True)}
    none_here = runner.invoke(build_app(), ["query", "--chemsys", "Na-Cl", "--source", "chgnet", "--store", str(store_file)])
    assert none_here.exit_code == 0 and "no reference entry" not in none_here.output


def test_screen_sources_choose_the_hull(store_file, tmp_path):
    tables = {}
    for sources in ("oqmd", "oqmd,chgnet"):
        out = tmp_path / f"{sources}.json"
        result = runner.invoke(build_app(), ["screen", "Li-F", "--sources", sources, "--model", "paper-ensemble", "--max-atoms", "6",
                                             "--no-store", "--json", str(out)])
        assert result.exit_code == 0, result.output
        payload = json.loads(out.read_text())
        rows = payload["candidates"] if isinstance(payload, dict) else payload
        tables[sources] = {row["formula"]: row for row in rows}
    assert tables["oqmd"]["LiF"]["known_dhf_ev_per_atom"] == pytest.approx(-3.2101)
    assert tables["oqmd,chgnet"]["LiF"]["known_dhf_ev_per_atom"] == pytest.approx(-3.40)  # the lowest counts
    assert tables["oqmd"]["Li2F"]["known_dhf_ev_per_atom"] is None
    assert tables["oqmd,chgnet"]["Li2F"]["known_dhf_ev_per_atom"] == pytest.approx(-1.0)
    # a computed candidate shows as known with its source: the source of the value it stands at
    assert tables["oqmd"]["LiF"]["known_source"] == "oqmd" and tables["oqmd"]["Li2F"]["known_source"] is None
    assert tables["oqmd,chgnet"]["LiF"]["known_source"] == "chgnet" and tables["oqmd,chgnet"]["Li2F"]["known_source"] == "chgnet"


def test_screen_table_shows_the_source_of_a_computed_phase(store_file):
    result = runner.invoke(build_app(), ["screen", "Li-F", "--model", "paper-ensemble", "--max-atoms", "6", "--no-store"])
    assert result.exit_code == 0, result.output
    lif = next(line for line in result.output.splitlines() if "│ LiF " in line)
    assert "(chgnet)" in lif and "on hull (chgnet)" in lif


def test_a_source_the_store_lacks_is_named_in_one_line_and_the_screen_goes_on(store_file):
    typo = runner.invoke(build_app(), ["screen", "Li-F", "--sources", "oqmd,chgent", "--model", "paper-ensemble",
                                       "--max-atoms", "6", "--no-store"])
    assert typo.exit_code == 0, typo.output
    notes = [line for line in typo.output.splitlines() if "chgent" in line]
    assert len(notes) == 1 and "it holds chgnet, oqmd" in notes[0]
    # chgnet is in the store: no note, even for a system where nothing of it is computed yet
    other = runner.invoke(build_app(), ["screen", "Na-Cl", "--sources", "oqmd,chgnet", "--model", "paper-ensemble",
                                        "--max-atoms", "4", "--no-store"])
    assert other.exit_code == 0, other.output
    assert "no reference entry" not in other.output  # chgnet is in the store
    # but the hull has no compound of the chosen sources here: one note says so (the job refuses, as it does
    # without reference entries: no silent degradation)
    assert "no reference compound of source oqmd, chgnet in Cl-Na" in " ".join(other.output.split())


def test_the_api_and_the_maker_count_the_same_sources_as_the_cli(store_file):
    """screen(..., sources=) and PrescreenMaker(sources=) choose the hull's sources as --sources does."""
    from fh_screen import screen
    from fh_screen.jobs import PrescreenError, PrescreenMaker
    from fh_screen.models.predictor import load_predictor
    from fh_screen.screening import ScreenOptions

    predictor = load_predictor("paper-ensemble")
    options = {"max_atoms": 6, "charge_neutral": False}
    api, jobs = {}, {}
    for sources in ("oqmd", "oqmd,chgnet", ["oqmd", "chgent"]):
        key = sources if isinstance(sources, str) else ",".join(sources)
        result = screen("Li-F", predictor=predictor, options=ScreenOptions(**options), sources=sources,
                        store=FhScreenStore.embedded(store_file, read_only=True))
        known = result.table.set_index("formula")["known_dhf_ev_per_atom"].dropna()
        api[key] = (known.to_dict(), result.warnings)
        maker = PrescreenMaker(model="paper-ensemble", sources=sources, save_screen=False, screen_options=options,
                               reference_store=FhScreenStore.embedded(store_file, read_only=True).reference)
        doc = maker.prescreen("Li-F")
        assert doc.sources == sorted(name.strip() for name in key.split(","))
        jobs[key] = ({c.formula: c.known_dhf_ev_per_atom for c in doc.candidates if c.known_dhf_ev_per_atom is not None},
                     [p.message for p in doc.problems])
    assert api["oqmd"][0]["LiF"] == pytest.approx(-3.2101) and api["oqmd,chgnet"][0]["LiF"] == pytest.approx(-3.40)
    assert api["oqmd,chgnet"][0]["Li2F"] == pytest.approx(-1.0) and "Li2F" not in api["oqmd"][0]
    for key in api:  # the same hull through both doors, and the same note for a source the store lacks
        assert jobs[key][0] == pytest.approx(api[key][0])
    assert [w for w in api["oqmd,chgent"][1] if "chgent" in w] == [w for w in jobs["oqmd,chgent"][1] if "chgent" in w]
    assert any("source chgent: no reference entry" in w for w in api["oqmd,chgent"][1])
    assert api["oqmd,chgent"][0] == api["oqmd"][0]
    # a bad sources field fails at make, in one line
    for bad in (" , ", 3):
        with pytest.raises(PrescreenError, match="source"):
            PrescreenMaker(sources=bad, save_screen=False).make("Li-F")
    # a source with nothing in the system: the job says so rather than screening against nothing
    with pytest.raises(PrescreenError, match="no reference entries of source chgent for "):
        PrescreenMaker(model="paper-ensemble", sources="chgent", save_screen=False, screen_options=options,
                       reference_store=FhScreenStore.embedded(store_file, read_only=True).reference).prescreen("Li-F")


def test_a_saved_screen_records_which_sources_counted(store_file):
    """The screens document says which sources shaped its hull, and `fh-screen query --run` shows it."""
    run_ids = {}
    for args in (["--sources", "chgnet,OQMD"], []):
        result = runner.invoke(build_app(), ["screen", "Li-F", *args, "--model", "paper-ensemble", "--max-atoms", "4"])
        assert result.exit_code == 0, result.output
        run_ids[bool(args)] = result.output.split("saved run ")[1].split()[0]
    with FhScreenStore.embedded(store_file, read_only=True) as store:
        assert store.get_screen(run_ids[True]).sources == ["chgnet", "oqmd"]
        assert store.get_screen(run_ids[False]).sources is None
    shown = runner.invoke(build_app(), ["query", "--run", run_ids[True]])
    assert shown.exit_code == 0 and "sources: chgnet, oqmd" in " ".join(shown.output.split())


def test_the_api_checks_and_applies_sources_when_the_caller_gives_the_known_phases():
    """screen(known=..., sources=...): a bad value fails as in every other door; a `source` column is honoured."""
    import pandas as pd

    from fh_screen import screen
    from fh_screen.models.predictor import load_predictor
    from fh_screen.screening import ScreenOptions

    predictor = load_predictor("paper")
    options = ScreenOptions(max_atoms=6)
    known = pd.DataFrame({"formula": ["LiF", "LiF", "Li2F"], "dhf_ev_per_atom": [v for _, v, _ in ENTRIES],
                          "source": [s for _, _, s in ENTRIES]})
    for bad in (1, "", ",", {"oqmd"}, ["oqmd", 3]):
        with pytest.raises(QueryError, match="source"):
            screen("Li-F", predictor=predictor, known=known, options=options, sources=bad)
    oqmd = screen("Li-F", predictor=predictor, known=known, options=options, sources="OQMD").table.set_index("formula")
    assert oqmd.loc["LiF", "known_dhf_ev_per_atom"] == pytest.approx(-3.2101) and not oqmd.loc["Li2F", "is_known"]
    untagged = screen("Li-F", predictor=predictor, known=known.drop(columns="source"), options=options, sources="oqmd")
    assert untagged.table.set_index("formula").loc["Li2F", "is_known"]  # every row counts, and the note says so
    assert any("have no 'source' column" in w for w in untagged.warnings)


def test_json_dash_prints_the_data_on_stdout_and_nothing_else_in_every_command(store_file, tmp_path):
    """`--json -` is stdout for query, runs, query --run, query --top and the screen; status lines go to stderr."""
    screened = runner.invoke(build_app(), ["screen", "Li-F", "--model", "paper", "--max-atoms", "4", "--json", "-",
                                           "--csv", str(tmp_path / "s.csv")])
    assert screened.exit_code == 0, screened.output
    rows = json.loads(screened.stdout)
    assert {r["formula"] for r in rows} >= {"LiF", "Li2F"} and not (tmp_path / "-").exists()
    assert "saved run" in screened.stderr and "wrote CSV" in screened.stderr
    run_id = screened.stderr.split("saved run ")[1].split()[0]
    for args, check in ((["query", "--chemsys", "Li-F", "--kind", "reference"], lambda d: len(d) == 3),
                        (["runs"], lambda d: d[0]["run_id"] == run_id),
                        (["query", "--run", run_id], lambda d: d["run_id"] == run_id),
                        (["query", "--top", "3"], lambda d: len(d) == 3)):
        result = runner.invoke(build_app(), [*args, "--store", str(store_file), "--json", "-"])
        assert result.exit_code == 0 and check(json.loads(result.stdout)), (args, result.output)
        assert not (tmp_path / "-").exists() and not __import__("pathlib").Path("-").exists()


def test_a_source_of_results_brought_back_is_neither_ingested_into_nor_removed_by_hand(store_file, tmp_path):
    """Ingested values under `chgnet` used to replace the builder's entries (and be replaced back, silently), and
    `--remove-source chgnet` left results that no rerun restored: both are refused in one line, nothing changes."""
    from fh_screen.data import DataError
    from fh_screen.store import SourceOwnedError
    from fh_screen.store.documents import RESULT_SOURCES
    from fh_screen.store.ingest import ingest_file
    from fh_screen.store.results_builder import FORCE_FIELD_SOURCES, SOURCES

    assert RESULT_SOURCES == {*SOURCES.values(), *FORCE_FIELD_SOURCES.values()}  # the builder's labels, all of them
    mine = tmp_path / "mine.csv"
    mine.write_text("formula,target\nLiF,-3.9\nLi2F,-1.5\n")
    with FhScreenStore.embedded(store_file, read_only=True) as store:
        before = sorted(map(str, store.reference_docs()))
    for source in sorted(RESULT_SOURCES):
        result = runner.invoke(build_app(), ["ingest", str(mine), "--source", source])
        assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
        assert f"source {source!r} holds the results brought back from atomate2" in result.output
        assert f"'my-{source}'" in result.output
        removed = runner.invoke(build_app(), ["ingest", "--remove-source", source])
        assert removed.exit_code == 2 and "are not removed by hand" in removed.output and removed.output.count("\n") == 1
        fresh = runner.invoke(build_app(), ["ingest", "--remove-source", source, "--store", str(tmp_path / "new.db")])
        assert fresh.exit_code == 2 and not (tmp_path / "new.db").exists()  # refused before a store is made
    with FhScreenStore.embedded(store_file) as store:
        with pytest.raises(DataError, match="holds the results brought back"):
            ingest_file(store.reference, mine, source="chgnet")
        with pytest.raises(SourceOwnedError, match="leave it out of a screen with --sources"):
            store.remove_source("chgnet")
        assert sorted(map(str, store.reference_docs())) == before  # nothing changed
        assert ingest_file(store.reference, mine, source="my-chgnet").inserted == 2  # another name is fine
        assert store.remove_source("my-chgnet") == 2


def test_the_shipped_oqmd_source_is_neither_ingested_into_nor_removed_by_hand(store_file, tmp_path):
    """`ingest FILE --source oqmd` used to replace the shipped LiF value (updated LiF: -3.2101 → -3.5) and
    `--remove-source oqmd` took every shipped entry out without a word: both are refused in one line, in the
    CLI and the Python API, and the store is left as it was."""
    from fh_screen.data import DataError
    from fh_screen.store import SourceOwnedError
    from fh_screen.store.ingest import ingest_file, ingest_frame

    mine = tmp_path / "mine.csv"
    mine.write_text("formula,target\nLiF,-3.5\n")
    with FhScreenStore.embedded(store_file, read_only=True) as store:
        before = sorted(map(str, store.reference_docs()))
    ingested = runner.invoke(build_app(), ["ingest", str(mine), "--source", "oqmd", "--store", str(store_file)])
    assert ingested.exit_code == 2 and ingested.output.count("\n") == 1, ingested.output
    assert "source 'oqmd' holds the OQMD reference table shipped with fh-screen" in ingested.output
    assert "'my-oqmd'" in ingested.output
    removed = runner.invoke(build_app(), ["ingest", "--remove-source", "oqmd", "--store", str(store_file)])
    assert removed.exit_code == 2 and removed.output.count("\n") == 1, removed.output
    assert "is not removed by hand" in removed.output and "--sources" in removed.output
    with FhScreenStore.embedded(store_file) as store:
        with pytest.raises(DataError, match="shipped with fh-screen"):
            ingest_file(store.reference, mine, source="oqmd")
        with pytest.raises(DataError, match="shipped with fh-screen"):
            ingest_frame(store.reference, __import__("pandas").DataFrame({"formula": ["LiF"], "dhf_ev_per_atom": [-3.5]}),
                         source="oqmd")
        with pytest.raises(SourceOwnedError, match="not removed by hand"):
            store.remove_source("oqmd")
        assert sorted(map(str, store.reference_docs())) == before  # nothing changed: LiF oqmd is still -3.2101
        assert store.reference_frame(formula="LiF", source="oqmd")["dhf_ev_per_atom"].tolist() == [-3.2101]
        assert ingest_file(store.reference, mine, source="my-oqmd").inserted == 1  # another name is fine
        assert store.remove_source("my-oqmd") == 1


def test_a_source_name_is_read_one_way_in_every_door(store_file, tmp_path):
    """`ingest --source My-DFT` used to store `My-DFT` beside the rest while `query --source`, `--sources` and
    `sources=` read `my-dft`, so the ingested values could never be chosen: every door now reads a name stripped
    and lower case, and refuses an empty name or characters outside the safe set in one line."""
    from fh_screen import screen
    from fh_screen.screening import ScreenOptions
    from fh_screen.store.ingest import ingest_file

    mine = tmp_path / "mine.csv"
    mine.write_text("formula,target\nLiF,-3.6\nLi2F,-1.2\n")
    ingested = runner.invoke(build_app(), ["ingest", str(mine), "--source", " My-DFT ", "--store", str(store_file)])
    assert ingested.exit_code == 0 and "inserted 2" in ingested.output, ingested.output
    with FhScreenStore.embedded(store_file, read_only=True) as store:
        assert sorted(store.reference.distinct("source")) == ["chgnet", "my-dft", "oqmd"]
    again = runner.invoke(build_app(), ["ingest", str(mine), "--source", "MY-DFT", "--store", str(store_file)])
    assert "inserted 0, updated 0, unchanged 2" in again.output, again.output  # the same source, not a new one
    query = runner.invoke(build_app(), ["query", "--chemsys", "Li-F", "--source", "My-Dft", "--store", str(store_file),
                                        "--json", "-"])
    assert query.exit_code == 0 and {d["source"] for d in json.loads(query.stdout)} == {"my-dft"}, query.output
    cli = runner.invoke(build_app(), ["screen", "Li-F", "--sources", "MY-DFT", "--model", "paper", "--max-atoms", "4",
                                      "--no-store", "--json", "-"])
    assert cli.exit_code == 0, cli.output
    rows = {r["formula"]: r for r in json.loads(cli.stdout)}
    assert rows["LiF"]["known_source"] == "my-dft" and rows["LiF"]["known_dhf_ev_per_atom"] == pytest.approx(-3.6)
    api = screen("Li-F", predictor="paper", options=ScreenOptions(max_atoms=4), sources="My-DFT").table
    assert api.set_index("formula").loc["LiF", "known_source"] == "my-dft"
    with FhScreenStore.embedded(store_file) as store:
        assert ingest_file(store.reference, mine, source="My-Dft").unchanged == 2
        # an entry written before names were normalised goes with the name it normalises to
        store.reference.update([ReferenceEntryDoc.from_formula("LiF", -3.7, source="My-DFT").model_dump()],
                               key=["formula", "source"])
        assert store.remove_source("MY-DFT") == 3
        assert sorted(store.reference.distinct("source")) == ["chgnet", "oqmd"]
        before = sorted(map(str, store.reference_docs()))
    for bad in ("", "  ", "my dft", "dft/1", "-dft", "énergie", "x" * 65):
        for args in (["ingest", str(mine), "--source", bad], ["ingest", "--remove-source", bad],
                     ["query", "--chemsys", "Li-F", "--source", bad],
                     ["screen", "Li-F", "--sources", bad, "--model", "paper", "--max-atoms", "4", "--no-store"]):
            result = runner.invoke(build_app(), [*args, "--store", str(store_file)])
            assert result.exit_code == 2 and result.output.count("\n") == 1, (args, result.output)
            assert "source" in result.output and "Traceback" not in result.output, (args, result.output)
        if bad.strip():
            with FhScreenStore.embedded(store_file) as store:
                for call in (lambda: ingest_file(store.reference, mine, source=bad), lambda: store.remove_source(bad),
                             lambda: criteria_for(source=bad)):
                    with pytest.raises(QueryError, match="source name must be 1-64 letters"):
                        call()
    with FhScreenStore.embedded(store_file, read_only=True) as store:
        assert sorted(map(str, store.reference_docs())) == before  # nothing written by a refused name


def test_source_and_sources_are_one_flag_in_every_command_that_filters_by_source(store_file):
    """`fh-screen Li-F --source chgnet` and `query --sources chgnet` used to be "No such option"."""
    for command in (["query", "--chemsys", "Li-F", "--json", "-"], ["screen", "Li-F", "--model", "paper", "--no-store",
                                                                      "--max-atoms", "4", "--csv", "-"]):
        outputs = []
        for flag in ("--source", "--sources"):
            result = runner.invoke(build_app(), [*command, flag, "chgnet"])
            assert result.exit_code == 0, result.output
            outputs.append(result.stdout)
        assert outputs[0] == outputs[1] and "chgnet" in outputs[0]


def test_a_hull_where_another_method_replaces_an_oqmd_value_says_so_in_every_door(store_file):
    """LiF: the made-up CHGNet -3.40 stands below OQMD's -3.2101, so the hull mixes methods; a note names it."""
    from fh_screen import screen
    from fh_screen.screening import ScreenOptions

    expected = ("methods mix on this hull: 1 composition(s) stand at another source's value below oqmd's "
                "(LiF chgnet -3.400 < oqmd -3.210)")
    cli = runner.invoke(build_app(), ["screen", "Li-F", "--model", "paper", "--max-atoms", "4", "--no-store"])
    assert cli.exit_code == 0 and f"note: {expected}" in cli.output, cli.output
    api = screen("Li-F", predictor="paper", options=ScreenOptions(max_atoms=4))
    assert any(w.startswith(expected) for w in api.warnings)
    for sources in ("oqmd", "chgnet"):  # one method alone: nothing mixes
        alone = screen("Li-F", predictor="paper", options=ScreenOptions(max_atoms=4), sources=sources)
        assert not any("methods mix" in w for w in alone.warnings)
