"""The attention architecture: training on a real OQMD slice, resume, identity, σ, save/load, paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fh_screen.models.train import AttentionData, calibrate_sigma_scale, parse_recipe, prepare_attention_data, run_attention_training
from fh_screen.chem.formula import DEFAULT_ELEMENTS, fraction_matrix
from fh_screen.models.attention import AttentionSpec, set_tensors
from fh_screen.models.mlp import NetworkSpec
from fh_screen.models.checkpoint import ModelError, load_checkpoint, save_checkpoint
from fh_screen.models.attention import AttentionTrainConfig
from fh_screen.models.fit import train_attention_network
from fh_screen.models.predictor import Predictor

TINY = AttentionTrainConfig(epochs=2, batch_size=128, learning_rate=2e-3)


@pytest.fixture(scope="module")
def slice_data(oqmd_slice_csv, tmp_path_factory) -> AttentionData:
    data = prepare_attention_data(oqmd_slice_csv, max_rows=900, seed=0)
    path = tmp_path_factory.mktemp("attention") / "carve.npz"
    data.save(path)
    return AttentionData.load(path)


@pytest.fixture(scope="module")
def trained(oqmd_slice_csv, slice_data, tmp_path_factory):
    output = tmp_path_factory.mktemp("run")
    slice_data.save(output / "train_carve.npz")
    checkpoint = run_attention_training(oqmd_slice_csv, output, recipe="attention-small*2", config=TINY,
                                        max_rows=900, name="tiny")
    return checkpoint, output


def test_set_tensors_put_present_elements_first_in_atomic_order():
    matrix = fraction_matrix(["Li1Fe1P1O4", "Fe2O3", "O"], DEFAULT_ELEMENTS).matrix
    indices, fractions = set_tensors(matrix)
    assert indices.shape == (3, 4)
    symbols = [[DEFAULT_ELEMENTS[i - 1] for i in row if i] for row in indices]
    assert symbols == [["Li", "O", "P", "Fe"], ["O", "Fe"], ["O"]]
    np.testing.assert_allclose(fractions.sum(axis=1), 1.0, rtol=1e-6)
    assert (fractions[indices == 0] == 0).all()


def test_carve_is_seeded_and_a_stale_cache_is_refused(slice_data, oqmd_slice_csv, tmp_path):
    again = prepare_attention_data(oqmd_slice_csv, max_rows=900, seed=0)
    np.testing.assert_array_equal(again.holdout_y_ev_per_atom, slice_data.holdout_y_ev_per_atom)
    assert slice_data.provenance["train_file"] == oqmd_slice_csv.name
    assert len(slice_data.holdout_y_ev_per_atom) == 45 and len(slice_data.fit_y_ev_per_atom) == 855
    slice_data.save(tmp_path / "train_carve.npz")
    with pytest.raises(ValueError, match="other data"):
        run_attention_training(oqmd_slice_csv, tmp_path, recipe="attention-small", config=TINY, max_rows=800)


def test_trained_model_saves_loads_and_predicts_with_sigma(trained, tmp_path):
    checkpoint, output = trained
    loaded = load_checkpoint(output / "model.pt")
    assert isinstance(loaded.spec, AttentionSpec) and len(loaded.member_state_dicts) == 2
    assert loaded.identity() == checkpoint.identity()
    predictor = Predictor.from_file(output / "model.pt")
    assert predictor.has_uncertainty and predictor.weights_sha256 == checkpoint.identity()
    result = predictor.predict_formulas(["LiFePO4", "Fe2O3", "NaCl", "O2", "Fe", "Xx2O"])
    mean, sigma = result.dhf_ev_per_atom, result.dhf_std_ev_per_atom
    assert np.isfinite(mean[:5]).all() and (sigma[:3] > 0).all()
    assert mean[3] == 0.0 and mean[4] == 0.0 and sigma[3] == 0.0  # pure elements: 0 by definition
    assert np.isnan(mean[5]) and result.errors[5]
    assert 0 < checkpoint.sigma_scale < 100


def test_fast_paths_equal_the_reference_path(trained):
    checkpoint, _ = trained
    predictor = Predictor(checkpoint)
    formulas = ["Li1Fe1P1O4", "Fe2O3", "Li3P1O4", "Fe1P1", "Li2O1", "O2"]
    matrix = fraction_matrix(formulas, DEFAULT_ELEMENTS).matrix
    fast, fast_sigma = predictor.predict_matrix(matrix)
    reference, reference_sigma = predictor.predict_matrix_reference(matrix)
    np.testing.assert_allclose(fast, reference, atol=1e-5)
    np.testing.assert_allclose(fast_sigma, reference_sigma, rtol=1e-4)
    counts = np.array([[1, 1, 1, 4], [0, 2, 0, 3], [3, 0, 1, 4], [0, 1, 1, 0], [2, 0, 0, 1], [0, 0, 0, 2]])
    by_counts = predictor.predict_counts(counts, ["Li", "Fe", "P", "O"]).dhf_ev_per_atom
    np.testing.assert_allclose(by_counts, reference, atol=1e-5)


def test_resumed_training_equals_an_uninterrupted_run(slice_data, tmp_path):
    spec = parse_recipe("attention-small")[0].spec
    args = (slice_data.fit_indices, slice_data.fit_fractions, slice_data.fit_y_ev_per_atom,
            slice_data.holdout_indices, slice_data.holdout_fractions, slice_data.holdout_y_ev_per_atom, spec, TINY)
    straight = train_attention_network(*args, state_path=tmp_path / "a.pt")
    paused = train_attention_network(*args, state_path=tmp_path / "b.pt", stop_after_epochs=1)
    assert "paused" in paused.stopped_reason and len(paused.history) == 1
    resumed = train_attention_network(*args, state_path=tmp_path / "b.pt")
    assert [r.epoch for r in resumed.history] == [1, 2]
    for key, value in straight.state_dict.items():
        assert torch.equal(value, resumed.state_dict[key]), key
    again = train_attention_network(*args)  # same seed, no state file: the same weights
    assert all(torch.equal(v, again.state_dict[k]) for k, v in straight.state_dict.items())


def test_state_of_another_run_is_refused(slice_data, tmp_path):
    spec = parse_recipe("attention-small")[0].spec
    args = (slice_data.fit_indices, slice_data.fit_fractions, slice_data.fit_y_ev_per_atom,
            slice_data.holdout_indices, slice_data.holdout_fractions, slice_data.holdout_y_ev_per_atom, spec)
    train_attention_network(*args, TINY, state_path=tmp_path / "s.pt", stop_after_epochs=1)
    with pytest.raises(ValueError, match="another run"):
        train_attention_network(*args, AttentionTrainConfig(epochs=3, batch_size=128), state_path=tmp_path / "s.pt")


def test_sigma_scale_calibrates_a_known_distribution():
    rng = np.random.default_rng(0)
    sigma = rng.uniform(0.01, 0.1, 20000)
    errors = rng.normal(0, 2 * sigma)  # true σ twice the stated one
    scale = calibrate_sigma_scale(errors, sigma)
    assert scale == pytest.approx(2.0, rel=0.05)
    assert np.mean(np.abs(errors) <= 1.645 * scale * sigma) == pytest.approx(0.90, abs=0.005)


def test_recipes_are_validated():
    members = parse_recipe("attention*2+attention-large")
    assert [m.label for m in members] == ["attention-0", "attention-1", "attention-large-0"]
    with pytest.raises(ValueError, match="unknown attention preset"):
        parse_recipe("transformer*2")
    with pytest.raises(ValueError, match="malformed"):
        parse_recipe("attention*x")
    with pytest.raises(ValueError, match="malformed"):
        parse_recipe("attention*2@")
    with pytest.raises(ValueError, match="twice"):
        parse_recipe("attention*2+attention*1")


def test_a_recipe_sets_each_member_s_seed_and_schedule():
    members = parse_recipe("attention*2+attention-large*2@30")
    configs = [m.config(AttentionTrainConfig(epochs=60, seed=5)) for m in members]
    assert [(m.label, c.seed, c.epochs) for m, c in zip(members, configs)] == [
        ("attention-0", 5, 60), ("attention-1", 6, 60), ("attention-large-0", 5, 30), ("attention-large-1", 6, 30)]


def test_inverse_variance_weighting_mixes_members_by_their_own_scales(trained):
    """Two members at 1.0 and 2.0 eV/atom with Laplace scales 0.1 and 0.2: weights 0.8 / 0.2."""
    checkpoint = load_checkpoint(trained[1] / "model.pt")
    checkpoint.target_mean_ev_per_atom, checkpoint.target_std_ev_per_atom = 0.0, 1.0
    checkpoint.metadata["sigma_scale"] = 1.0
    means = np.array([[1.0], [2.0]])
    log_scales = np.log(np.array([[0.1], [0.2]]))
    checkpoint.metadata["member_weighting"] = "inverse_variance"
    mean, sigma = Predictor(checkpoint).model.combine(means, log_scales)
    assert mean[0] == pytest.approx(1.2)
    assert sigma[0] ** 2 == pytest.approx(0.8 * (2 * 0.01 + 0.2**2) + 0.2 * (2 * 0.04 + 0.8**2))
    weighted_identity = checkpoint.identity()
    checkpoint.metadata["member_weighting"] = "mean"  # what a checkpoint without the key does
    mean, sigma = Predictor(checkpoint).model.combine(means, log_scales)
    assert mean[0] == pytest.approx(1.5)
    assert sigma[0] ** 2 == pytest.approx(0.5 * (0.02 + 0.08) + 0.25)
    assert checkpoint.identity() != weighted_identity  # the rule is part of what the model is


def test_shipped_default_mixes_two_widths_by_inverse_variance():
    default = Predictor.from_name()
    assert default.checkpoint.metadata["member_weighting"] == "inverse_variance"
    specs = [default.checkpoint.spec_of(i).d_model for i in range(len(default.checkpoint.member_state_dicts))]
    assert specs.count(128) == 6 and specs.count(256) == 4


def test_shipped_default_is_the_attention_ensemble_and_old_checkpoints_load():
    default = Predictor.from_name()
    assert default.is_slow and default.has_uncertainty
    card = default.checkpoint.metadata
    assert card["data"]["train_file"] == "train.csv" and "val" not in card["data"]["train_file"]
    assert isinstance(load_checkpoint(Predictor.from_name("paper").path).spec, NetworkSpec)  # format 1 still reads


def test_a_checkpoint_with_mismatched_member_weights_is_incompatible(trained, tmp_path):
    checkpoint, _ = trained
    broken = load_checkpoint(trained[1] / "model.pt")
    broken.member_state_dicts[1] = {k: v for k, v in broken.member_state_dicts[1].items() if "head" not in k}
    path = save_checkpoint(broken, tmp_path / "broken.pt")
    with pytest.raises(ModelError, match="incompatible model file"):
        load_checkpoint(path)


def test_cli_trains_an_attention_recipe_and_resumes_it(oqmd_slice_csv, tmp_path):
    from typer.testing import CliRunner

    from fh_screen.cli import build_app

    app, runner = build_app(), CliRunner()
    args = ["train", str(oqmd_slice_csv), "--output", str(tmp_path), "--recipe", "attention-small", "--epochs", "1", "--max-rows", "500"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "attention-small-0 epoch 1/1" in first.output and (tmp_path / "model.pt").is_file()
    trained_model = load_checkpoint(tmp_path / "model.pt")
    identity = trained_model.identity()
    # a user's attention model has its own version (date + weights hash), never the shipped ensemble's "3"
    import json
    import re

    from fh_screen.models.train import MODEL_VERSION

    assert trained_model.version != MODEL_VERSION and re.fullmatch(r"\d{8}-" + identity[:8], trained_model.version)
    card = json.loads((tmp_path / "model_card.json").read_text())
    assert card["version"] == trained_model.version and f"v{trained_model.version}" in (tmp_path / "README.md").read_text()
    assert f"@{trained_model.version}" in first.output
    again = runner.invoke(app, args)  # finished members are not trained again; the same model results
    assert again.exit_code == 0 and "epoch 1/1" not in again.output
    assert load_checkpoint(tmp_path / "model.pt").identity() == identity
    bad = runner.invoke(app, ["train", str(oqmd_slice_csv), "--output", str(tmp_path / "x"), "--recipe", "mlp*2"])
    assert bad.exit_code == 2 and "unknown attention preset" in bad.output
