"""Rows of a cascade screen that only the fast prefilter predicted: no σ, and marked in the CLI."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fh_screen.cli import build_app
from fh_screen.data import shared_data_dir
from fh_screen.models.predictor import Predictor
from fh_screen.screening import ScreenOptions, screen


@pytest.fixture(scope="module")
def li_fe_o_known() -> pd.DataFrame:
    path = shared_data_dir() / "train.csv"
    if not path.is_file():
        pytest.skip(f"OQMD training data not found at {path} (set FH_SCREEN_OQMD_DIR)")
    frame = pd.read_csv(path).rename(columns={"target": "dhf_ev_per_atom"})
    elements = {"Li", "Fe", "O"}
    keep = [set(_symbols(f)) <= elements for f in frame["formula"]]
    return frame[keep][["formula", "dhf_ev_per_atom"]]


def _symbols(formula: str) -> list[str]:
    import re

    return re.findall(r"[A-Z][a-z]?", formula)


def test_a_row_only_the_prefilter_predicted_has_no_sigma_and_the_same_p_stable(li_fe_o_known):
    """σ is null (not 0) where the one-network prefilter predicted; P(stable) is what the cascade was fitted on."""
    model = Predictor.from_name("attention-ensemble")
    result = screen("Li-Fe-O", predictor=model, known=li_fe_o_known, options=ScreenOptions(max_atoms=10, refine_top=50))
    table = result.table
    refined = table["refined"].to_numpy(bool)
    std = table["dhf_std_ev_per_atom"].to_numpy(float)
    assert (~refined).sum() > 50 and np.isnan(std[~refined]).all() and (std[refined] > 0).all()
    assert table["p_stable"].notna().all() and table["stability_score"].notna().all()
    from fh_screen.exports import export_records

    exported = {r["formula"]: r for r in export_records(result)}
    row = table[~table["refined"]].iloc[0]
    assert exported[row["formula"]]["dhf_std_ev_per_atom"] is None
    assert exported[row["formula"]]["model"] == result.prefilter


def test_the_cli_marks_prefilter_rows_and_the_selected_rows_are_refined(monkeypatch, tmp_path):
    monkeypatch.setenv("FH_SCREEN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FH_SCREEN_CONFIG_FILE", os.devnull)
    result = CliRunner().invoke(build_app(), ["screen", "Li-Fe-O", "--max-atoms", "10", "--refine-top", "20",
                                              "--no-store", "--top", "80", "--select-p-min", "0.05",
                                              "--json", str(tmp_path / "s.json")])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "s.json").read_text())
    marked = [line for line in result.output.splitlines() if " * │" in line]
    unrefined_shown = [r for r in rows[:80] if not r["refined"]]
    assert len(marked) == len(unrefined_shown) > 0
    # the head of the P(stable) order and every selected row carry the screen's own model
    new = [r for r in rows if not r["is_known"]]
    assert all(r["refined"] for r in new[:20]) and all(r["refined"] for r in rows if r["selected"])
    assert sum(r["selected"] for r in rows) > 0
    flat = " ".join(result.output.split())
    assert "Rows marked * keep paper@" in flat and "selected)" not in flat


def test_the_short_list_and_the_p_stable_head_never_stand_on_the_prefilter_alone(li_fe_o_known):
    """Under the cascade, the ``refine_top`` new rows of highest P(stable) and every selected row are
    predicted by the screen's own model, with the values a screen of the model on every row gives them."""
    model = Predictor.from_name("attention-ensemble")
    options = ScreenOptions(max_atoms=10, refine_top=20, select_p_min=0.05)
    steps: list[str] = []
    result = screen("Li-Fe-O", predictor=model, known=li_fe_o_known, options=options, progress=steps.append)
    table = result.table
    new = table[~table["is_known"]]
    assert new["refined"].head(20).all() and table.loc[table["selected"], "refined"].all()
    assert table["selected"].sum() >= 2 and (~new["refined"]).sum() > 100
    assert any("(the head of the P(stable) order)" in label for label in steps)  # the prefilter's best was not the head
    # after the passes (which score again only the rows whose features changed) every new row's
    # P(stable) is the classifier's on its final features
    from fh_screen.screening.stability import load_stability_model

    rows = ~table["is_known"].to_numpy(bool)
    np.testing.assert_allclose(table["p_stable"].to_numpy()[rows], load_stability_model().p_stable(result.features[rows]),
                               rtol=1e-12, atol=0)
    # the features that depend on the known phases alone, computed once for every pass, are each row's own
    from fh_screen.chem.formula import whole_amounts
    from fh_screen.screening import known_counts
    from fh_screen.screening.stability import FEATURE_NAMES, known_set_features

    system = result.chemsys
    counts = np.array([[whole_amounts(f).get(s, 0) for s in system] for f in table["formula"]])
    fresh = known_set_features(counts, known_counts(li_fe_o_known, system)[0])
    for name in ("n_known_in_set", "n_known_in_subsystems", "nearest_known_distance"):
        np.testing.assert_array_equal(result.features[:, FEATURE_NAMES.index(name)], getattr(fresh, name), err_msg=name)
    full = screen("Li-Fe-O", predictor=model, known=li_fe_o_known,
                  options=ScreenOptions(max_atoms=10, refine_top=None, select_p_min=0.05)).table
    both = new.head(20).merge(full, on="formula", suffixes=("", "_full"))
    assert len(both) == 20
    np.testing.assert_allclose(both["dhf_pred_ev_per_atom"], both["dhf_pred_ev_per_atom_full"], atol=1e-6)
    np.testing.assert_allclose(both["dhf_std_ev_per_atom"], both["dhf_std_ev_per_atom_full"], atol=1e-6)
