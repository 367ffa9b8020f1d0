"""The OQMD reference table shipped with the package and the first-use fill of the embedded store."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from fh_screen.store import FhScreenStore
from fh_screen.store import bootstrap
from fh_screen.store.bootstrap import (
    TABLE_FILE,
    ensure_reference_data,
    load_reference_table,
    packaged_reference_frame,
    reference_metadata,
)
from fh_screen.store.documents import elements_of


def test_shipped_table_is_compact_attributed_and_matches_its_metadata():
    folder = bootstrap._data_file(TABLE_FILE).parent
    table_bytes = (folder / TABLE_FILE).read_bytes()
    metadata = reference_metadata()
    assert len(table_bytes) < 6e6
    assert hashlib.sha256(table_bytes).hexdigest() == metadata["table_sha256"]
    assert {s["file"] for s in metadata["sources"]} == {"train.csv", "val.csv"}
    assert all(len(s["sha256"]) == 64 for s in metadata["sources"])
    attribution = (folder / "ATTRIBUTION.md").read_text()
    assert "CC-BY 4.0" in attribution or "Attribution 4.0" in attribution
    table = load_reference_table()
    assert len(table) == metadata["n_compositions"] and table["formula"].is_unique
    assert table["dhf_ev_per_atom"].between(-20, 5, inclusive="neither").all()
    assert "NaN" in set(table["formula"])  # sodium nitride stays a formula


def test_table_is_the_lowest_value_per_composition_of_the_cleaned_files(oqmd_dir):
    from fh_screen.data import load_oqmd

    table = load_reference_table().set_index("formula")["dhf_ev_per_atom"]
    frame, _ = load_oqmd(oqmd_dir / "val.csv")  # train.csv is the same code path, 5x larger
    assert (table.loc[frame["formula"]].to_numpy() <= frame["dhf_ev_per_atom"].to_numpy() + 1e-9).all()
    metadata = reference_metadata()
    from fh_screen.data import file_sha256

    assert {s["file"]: s["sha256"] for s in metadata["sources"]} == {
        n: file_sha256(oqmd_dir / n) for n in ("train.csv", "val.csv")
    }


def _li_fe_p_o_rows() -> dict[str, float]:
    """Every composition of the shipped table made only of Li, Fe, P and O (two or more elements), read directly."""
    table = load_reference_table()
    return {f: v for f, v in zip(table["formula"], table["dhf_ev_per_atom"])
            if 2 <= len(elements_of(f)) and set(elements_of(f)) <= {"Li", "Fe", "P", "O"}}


def test_packaged_frame_holds_every_known_phase_of_li_fe_p_o_and_nothing_else():
    frame = packaged_reference_frame("Li-Fe-P-O")
    expected = _li_fe_p_o_rows()
    assert len(expected) > 50  # the quaternary's binaries, ternaries and itself
    assert dict(zip(frame["formula"], frame["dhf_ev_per_atom"])) == pytest.approx(expected)
    assert {"LiFePO4", "Fe2O3", "Li2O", "FePO4"} <= set(frame["formula"])
    assert all(set(e) <= {"Li", "Fe", "P", "O"} for e in frame["elements"])
    assert list(frame["elements"].iloc[:3]) == [list(elements_of(f)) for f in frame["formula"].iloc[:3]]


@pytest.fixture()
def fresh_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("FH_SCREEN_DATA_DIR", str(tmp_path / "home" / ".fh_screen"))
    monkeypatch.setenv("FH_SCREEN_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("FH_SCREEN_REFERENCE_DATA", "true")
    monkeypatch.delenv("FH_SCREEN_MONGO_URI", raising=False)
    return tmp_path / "home" / ".fh_screen" / "fh_screen.sqlite"


def test_first_use_fills_once_with_one_line_then_never_again(fresh_settings, capfd):
    with FhScreenStore.from_settings() as store:
        assert store.n_reference() == reference_metadata()["n_compositions"]
        frame = store.reference_frame(chemsys="Li-Fe-P-O")
    assert dict(zip(frame["formula"], frame["dhf_ev_per_atom"])) == pytest.approx(_li_fe_p_o_rows())
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if "reference entries" in line]
    assert len(lines) == 1 and "290,363" in lines[0] and "once" in lines[0]
    with FhScreenStore.from_settings(read_only=True) as store:
        assert store.n_reference(chemsys="Fe-O") > 5
    assert "reference entries" not in capfd.readouterr().err


def test_a_new_table_updates_its_own_entries_and_keeps_ingested_ones(fresh_settings, monkeypatch):
    import pandas as pd

    from fh_screen.store.ingest import ingest_frame

    full = bootstrap._cached_table()
    small = full[full["chemsys"].isin(["Fe-O", "Fe-Li-O-P", "Li-O"])].reset_index(drop=True)
    monkeypatch.setattr(bootstrap, "_cached_table", lambda: small)
    assert ensure_reference_data(fresh_settings).action == "filled"
    with FhScreenStore.embedded(fresh_settings) as store:
        ingest_frame(store.reference, pd.DataFrame({"formula": ["LiFePO4"], "dhf_ev_per_atom": [-9.0]}),
                     source_file="newer.csv")
    newer = small.copy()
    newer.loc[newer["formula"] == "Fe2O3", "dhf_ev_per_atom"] = -1.5
    newer.loc[newer["formula"] == "LiFePO4", "dhf_ev_per_atom"] = -1.0
    monkeypatch.setattr(bootstrap, "_cached_table", lambda: newer)
    monkeypatch.setattr(bootstrap, "reference_metadata", lambda: {"table_sha256": "newer", "n_compositions": len(newer)})
    result = ensure_reference_data(fresh_settings)
    assert result.action == "updated" and result.n_written == 2  # the shipped Fe2O3 and LiFePO4
    with FhScreenStore.embedded(fresh_settings) as store:
        frame = store.reference_frame(formula=["Fe2O3", "LiFePO4"])
    values = {(f, s): v for f, s, v in zip(frame["formula"], frame["source"], frame["dhf_ev_per_atom"])}
    # the ingested value (source user) sits beside the shipped one and is never touched
    assert values == {("Fe2O3", "oqmd"): -1.5, ("LiFePO4", "oqmd"): -1.0, ("LiFePO4", "user"): -9.0}
    assert ensure_reference_data(fresh_settings).action == "current"


def test_switched_off_or_mongodb_leaves_the_store_alone(fresh_settings, monkeypatch):
    from fh_screen.settings import FhScreenSettings

    monkeypatch.setenv("FH_SCREEN_REFERENCE_DATA", "false")
    assert bootstrap.bootstrap_from_settings(FhScreenSettings()) is None
    assert not fresh_settings.exists()
    monkeypatch.setenv("FH_SCREEN_REFERENCE_DATA", "true")
    monkeypatch.setenv("FH_SCREEN_MONGO_URI", "mongodb://localhost:27017")
    assert bootstrap.bootstrap_from_settings(FhScreenSettings()) is None


def test_metadata_is_json_with_the_build_command():
    text = bootstrap._data_file("oqmd_reference.json").read_text()
    assert json.loads(text)["command"].startswith("python scripts/build_reference_table.py")


def test_query_lists_dft_entries_before_predictions_of_new_compositions(fresh_settings, monkeypatch, tmp_path):
    import pandas as pd
    from typer.testing import CliRunner

    from fh_screen.cli import build_app
    from fh_screen.models.predictor import Predictor

    full = bootstrap._cached_table()
    small = full[full["chemsys"].isin(["Fe-O", "Li-O", "Fe-Li", "Fe-Li-O"])].reset_index(drop=True)
    monkeypatch.setattr(bootstrap, "_cached_table", lambda: small)
    predictor = Predictor.from_name("paper", threads=1)
    new = ["Li9Fe2O11", "LiFe9O2", "Li3Fe7O12", "AcLi"]  # sorted before the known ones by chemsys/formula
    with FhScreenStore.from_settings() as store:
        frame = pd.DataFrame({"formula": new, "dhf_pred_ev_per_atom": predictor.predict_formulas(new).dhf_ev_per_atom})
        store.save_predictions(frame, predictor)
    out = tmp_path / "q.csv"
    result = CliRunner().invoke(build_app(), ["query", "--chemsys", "Li-Fe-O", "--csv", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    known = table["dhf_ev_per_atom"].notna().to_numpy()
    assert known[: len(small)].all() and not known[len(small):].any()
    assert set(table["formula"][~known]) == {"Li9Fe2O11", "LiFe9O2", "Li3Fe7O12"}


def test_a_screen_on_the_shipped_table_says_what_known_leaves_out(fresh_settings):
    """The shipped table is OQMD's train and val splits: Li3PO4 (in OQMD's held-back 15 %) is new here, and the
    CLI says under the screen that a new candidate may be known elsewhere."""
    from typer.testing import CliRunner

    from fh_screen.cli import build_app
    from fh_screen.cli.screen import SHIPPED_OQMD_CAVEAT

    result = CliRunner().invoke(build_app(), ["screen", "Li-P-O", "--max-atoms", "8", "--model", "paper", "--no-store",
                                              "--json", "-"])
    assert result.exit_code == 0, result.output
    rows = {r["formula"]: r for r in json.loads(result.stdout[result.stdout.index("["):result.stdout.rindex("]") + 1])}
    assert rows["Li3PO4"]["is_known"] is False and rows["Li4P2O7"]["known_source"] == "oqmd"
    table = CliRunner().invoke(build_app(), ["screen", "Li-P-O", "--max-atoms", "8", "--model", "paper", "--no-store"],
                               env={"COLUMNS": "300"})
    assert " ".join(SHIPPED_OQMD_CAVEAT.split()) in " ".join(table.output.split())
    # an export of a screen on the shipped table carries OQMD's attribution in its provenance
    exported = fresh_settings.parent.parent.parent / "li-p-o.csv"
    written = CliRunner().invoke(build_app(), ["screen", "Li-P-O", "--max-atoms", "8", "--model", "paper", "--no-store",
                                               "--csv", str(exported)])
    assert written.exit_code == 0, written.output
    provenance = json.loads(exported.with_name("li-p-o.csv.provenance.json").read_text())
    assert provenance["known_sources"] == ["oqmd"] and provenance["attribution"]["licence"].startswith("CC-BY 4.0")
