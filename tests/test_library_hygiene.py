"""The library leaves its host alone (logging, warnings filters, torch threads) and keeps loaded models."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
from store_fixtures import fresh_machine
from typer.testing import CliRunner

from fh_screen.screening import ScreenOptions


def test_predict_keeps_the_loaded_model():
    from fh_screen import predict
    from fh_screen.models.predictor import Predictor, load_predictor

    first = predict(["LiFePO4", "Fe2O3"], model="paper")
    assert load_predictor("paper") is load_predictor("paper")  # loaded once, then reused
    fresh = Predictor.from_name("paper").predict_formulas(["LiFePO4", "Fe2O3"]).dhf_ev_per_atom
    assert np.allclose(first, fresh)


def test_screen_predict_and_training_leave_logging_warnings_and_threads_alone(tmp_path, oqmd_train_raw):
    import torch

    from fh_screen import predict, screen
    from fh_screen.models.fit import TrainConfig
    from fh_screen.models.predictor import Predictor, load_predictor
    from fh_screen.store.bootstrap import packaged_reference_frame
    from fh_screen.models.train import train_model

    rows = tmp_path / "rows.csv"
    oqmd_train_raw.head(300).to_csv(rows, index=False)

    def calls():
        screen("Li-O", predictor=load_predictor("paper"), known=packaged_reference_frame("Li-O"),
               options=ScreenOptions(max_atoms=4))
        predict("Li2O", model="paper")
        Predictor.from_name("paper", threads=1).predict_formulas(["Li2O"])
        train_model(rows, preset="paper", config=TrainConfig(epochs=1, threads=1))

    calls()  # first: third-party modules (scipy, sympy, ...) add their own filters when imported
    torch.set_num_threads(2)
    root = logging.getLogger()
    before = (list(root.handlers), root.level, list(warnings.filters), torch.get_num_threads())
    calls()
    assert (list(root.handlers), root.level, list(warnings.filters), torch.get_num_threads()) == before


@pytest.fixture
def settings_env(tmp_path, monkeypatch) -> Path:
    return fresh_machine(tmp_path, monkeypatch, reference_data=False)


def test_re_predicting_with_another_model_replaces_sigma_and_p(settings_env, tmp_path):
    from fh_screen.cli import build_app

    out = tmp_path / "ranked.json"
    seen = {}
    for model in ("paper-ensemble", "paper"):
        result = CliRunner().invoke(build_app(), ["screen", "Li-O", "--max-atoms", "5", "--model", model, "--top", "0",
                                                  "--json", str(out)])
        assert result.exit_code == 0, result.output
        seen[model] = {r["formula"]: r for r in json.loads(out.read_text())}
    ensemble, single = seen["paper-ensemble"], seen["paper"]
    assert all(r["model"].startswith("paper-ensemble@") for r in ensemble.values())
    assert any(r["dhf_std_ev_per_atom"] for r in ensemble.values())
    # the single network has no σ: its export carries none of the ensemble's σ, and its own P(stable)
    assert all(r["model"].startswith("paper@") for r in single.values())
    assert all(r.get("dhf_std_ev_per_atom") is None for r in single.values())
    assert all(r["p_stable"] is not None for r in single.values())
    assert any(abs(single[f]["p_stable"] - ensemble[f]["p_stable"]) > 1e-9 for f in single)
    assert any(abs(single[f]["dhf_pred_ev_per_atom"] - ensemble[f]["dhf_pred_ev_per_atom"]) > 1e-6 for f in single)
