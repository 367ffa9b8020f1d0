"""σ calibration: the scale and coverage functions, MLP ensembles calibrated at training time and
afterwards (scripts/calibrate_sigma.py), and the shipped paper-ensemble's coverage on val."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fh_screen.models.calibration import TARGET_COVERAGE, calibrate_sigma_scale, interval_coverage
from fh_screen.chem.formula import fraction_matrix
from fh_screen.data import load_oqmd, split_frame
from fh_screen.models.checkpoint import load_checkpoint, save_checkpoint
from fh_screen.models.fit import TrainConfig
from fh_screen.models.predictor import Predictor, shipped_model_path
from fh_screen.models.train import TrainingRun, train_model, write_model_card

ROOT = Path(__file__).resolve().parents[1]
TINY = TrainConfig(epochs=3, batch_size=256, seed=0)


def _gaussian(n: int = 40000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    sigma = rng.uniform(0.01, 0.2, n)
    return rng.normal(0.0, sigma), sigma


def test_scale_is_one_for_errors_that_follow_their_sigma():
    errors, sigma = _gaussian()
    assert calibrate_sigma_scale(errors, sigma) == pytest.approx(1.0, abs=0.03)
    assert interval_coverage(errors, sigma) == pytest.approx(0.90, abs=0.006)


def test_doubling_sigma_halves_the_scale_and_the_scaled_interval_holds_the_target():
    errors, sigma = _gaussian(seed=1)
    scale = calibrate_sigma_scale(errors, sigma)
    assert calibrate_sigma_scale(errors, 2 * sigma) == pytest.approx(scale / 2, rel=1e-12)
    assert calibrate_sigma_scale(errors, 2 * sigma) == pytest.approx(0.5, abs=0.02)
    assert interval_coverage(errors, 2 * sigma * calibrate_sigma_scale(errors, 2 * sigma)) == pytest.approx(TARGET_COVERAGE, abs=1e-3)
    # Too narrow a σ (the raw spread of a small ensemble) gets a scale above 1.
    assert calibrate_sigma_scale(errors, sigma / 3) == pytest.approx(3.0, abs=0.1)


def test_coverage_counts_the_interval_edges_and_ignores_the_sign():
    assert interval_coverage([-1.645, 1.645, 2.0, 0.0], [1.0, 1.0, 1.0, 0.0]) == 0.75
    assert calibrate_sigma_scale([0.0, 0.0], [0.0, 0.0]) == 0.0  # zero σ and zero error: no division by zero
    assert np.isnan(interval_coverage([], []))


@pytest.fixture(scope="module")
def data_dir(oqmd_slice_csv, oqmd_dir, tmp_path_factory) -> Path:
    """train.csv = the 5,000-row real slice, val.csv = 3,000 real val rows."""
    directory = tmp_path_factory.mktemp("calibration-data")
    (directory / "train.csv").write_bytes(oqmd_slice_csv.read_bytes())
    pd.read_csv(oqmd_dir / "val.csv", keep_default_na=False, na_values=[""]).sample(n=3000, random_state=2).to_csv(directory / "val.csv", index=False)
    return directory


@pytest.fixture(scope="module")
def ensemble_run(data_dir):
    return train_model(data_dir / "train.csv", data_dir / "val.csv", preset="paper", config=TINY, n_members=2, name="tiny-ensemble")


def test_training_an_ensemble_calibrates_sigma_on_the_early_stopping_split(ensemble_run, data_dir):
    checkpoint, metrics = ensemble_run.checkpoint, ensemble_run.metrics
    scale = checkpoint.metadata["sigma_scale"]
    assert scale > 0 and metrics["sigma_scale"] == scale == checkpoint.sigma_scale
    assert metrics["early_stopping_coverage_1.645_sigma"] == pytest.approx(TARGET_COVERAGE, abs=0.01)
    assert 0 <= metrics["early_stopping_coverage_1.645_sigma_raw"] <= 1
    assert 0 < metrics["val_coverage_1.645_sigma"] <= 1
    # Independently: rebuild the split as train_model carves it and apply the stored scale.
    frame, _ = load_oqmd(data_dir / "train.csv")
    _, stop = split_frame(frame, (0.95, 0.05), seed=TINY.seed)
    assert len(stop) == metrics["early_stopping_split"]["n"]
    mean, sigma = Predictor(checkpoint).predict_matrix(fraction_matrix(stop["formula"].tolist()).matrix)
    assert interval_coverage(mean - stop["dhf_ev_per_atom"].to_numpy(), sigma) == pytest.approx(TARGET_COVERAGE, abs=0.01)


def test_card_says_how_sigma_is_made(ensemble_run, tmp_path):
    write_model_card(ensemble_run, tmp_path)
    readme = (tmp_path / "README.md").read_text()
    assert "## Uncertainty (σ)" in readme and f"multiplied by {ensemble_run.checkpoint.sigma_scale:.3f}" in readme
    assert "slightly optimistic" in readme and "coverage of ±1.645σ on val" in readme
    card = json.loads((tmp_path / "model_card.json").read_text())
    assert card["sigma_scale"] == ensemble_run.checkpoint.sigma_scale
    assert load_checkpoint(tmp_path / "model.pt").sigma_scale == ensemble_run.checkpoint.sigma_scale


def test_single_network_has_no_sigma_scale(data_dir):
    run = train_model(data_dir / "train.csv", preset="paper", config=TrainConfig(epochs=1, batch_size=512), max_train_rows=1000)
    assert "sigma_scale" not in run.checkpoint.metadata and "sigma_scale" not in run.metrics


def _script():
    spec = importlib.util.spec_from_file_location("calibrate_sigma", ROOT / "scripts" / "calibrate_sigma.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_recalibrates_an_uncalibrated_model_without_touching_its_weights(ensemble_run, data_dir, tmp_path):
    script = _script()
    old = copy.copy(ensemble_run.checkpoint)
    old.metadata = {k: v for k, v in old.metadata.items() if k != "sigma_scale"}  # as trained before σ was calibrated
    old.metadata["metrics"] = {k: v for k, v in old.metadata["metrics"].items() if "coverage" not in k and k != "sigma_scale"}
    write_model_card(TrainingRun(checkpoint=old, members=ensemble_run.members, metrics={}), tmp_path / "old")
    summary = script.recalibrate(str(tmp_path / "old" / "model.pt"), data_dir, tmp_path / "new", "test")
    new = load_checkpoint(tmp_path / "new" / "model.pt")
    assert new.sigma_scale == pytest.approx(ensemble_run.checkpoint.sigma_scale, rel=1e-6)
    assert summary["split_coverage_after"] == pytest.approx(TARGET_COVERAGE, abs=0.01)
    assert summary["val_coverage_after"] == pytest.approx(ensemble_run.metrics["val_coverage_1.645_sigma"], abs=1e-6)
    assert new.version == "2" and old.version == "1"
    assert script._tensor_identity(new) == script._tensor_identity(old)
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for a, b in zip(new.member_state_dicts, old.member_state_dicts) for k in a)
    card = json.loads((tmp_path / "new" / "model_card.json").read_text())
    assert card["recalibration"]["command"] == "test" and card["recalibration"]["previous_version"] == "1"
    assert card["identity_sha256"] == new.identity() and card["history"]
    assert "σ recalibrated after training" in (tmp_path / "new" / "README.md").read_text()
    # Run again: nothing changes, nothing is written.
    again = script.recalibrate(str(tmp_path / "new" / "model.pt"), data_dir, tmp_path / "third", "test")
    assert again["unchanged"] and not (tmp_path / "third").exists()


def test_script_refuses_another_split(ensemble_run, data_dir, tmp_path):
    script = _script()
    write_model_card(ensemble_run, tmp_path / "m")
    other = tmp_path / "other"
    other.mkdir()
    pd.read_csv(data_dir / "train.csv", keep_default_na=False, na_values=[""]).head(3000).to_csv(other / "train.csv", index=False)
    with pytest.raises(script.CalibrationError, match="split differs"):
        script.recalibrate(str(tmp_path / "m" / "model.pt"), other, tmp_path / "out", "test")
    single = copy.copy(ensemble_run.checkpoint)
    single.member_state_dicts = single.member_state_dicts[:1]
    save_checkpoint(single, tmp_path / "single" / "model.pt")
    (tmp_path / "single" / "model_card.json").write_text("{}")
    with pytest.raises(script.CalibrationError, match="not a fully connected ensemble"):
        script.recalibrate(str(tmp_path / "single" / "model.pt"), data_dir, tmp_path / "out", "test")


def test_shipped_paper_ensemble_sigma_covers_90_percent_of_val(oqmd_dir):
    checkpoint = load_checkpoint(shipped_model_path("paper-ensemble"))
    assert checkpoint.sigma_scale > 1 and checkpoint.version == "2"
    val, _ = load_oqmd(oqmd_dir / "val.csv", drop_outliers=False)
    y = val["dhf_ev_per_atom"].to_numpy()
    mean, sigma = Predictor(checkpoint).predict_matrix(fraction_matrix(val["formula"].tolist()).matrix)
    inside = np.abs(y) < 5
    assert 0.85 <= interval_coverage(mean[inside] - y[inside], sigma[inside]) <= 0.95


@pytest.mark.parametrize("name", ["paper", "wide"])
def test_single_network_models_are_left_alone(name):
    checkpoint = load_checkpoint(shipped_model_path(name))
    assert "sigma_scale" not in checkpoint.metadata and checkpoint.version == "1"
    assert Predictor(checkpoint).predict_formulas(["NaCl"]).dhf_std_ev_per_atom is None
