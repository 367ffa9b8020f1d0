"""Network specs, training on a real OQMD slice, safe checkpoints and the Predictor."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from fh_screen.chem.formula import fraction_matrix
from fh_screen.data import load_oqmd_csv, split_frame
from fh_screen.models.checkpoint import ModelError, load_checkpoint, save_checkpoint
from fh_screen.models.mlp import PRESETS, ArchitectureError, build_network, format_architecture, parse_architecture
from fh_screen.models.fit import TrainConfig, train_network
from fh_screen.models.predictor import Predictor
from fh_screen.models.train import train_model, write_model_card


def test_paper_preset_is_table_1():
    spec = PRESETS["paper"]
    assert spec.widths == [128, 128, 64, 64, 32, 1]
    network = build_network(spec)
    linear = [m for m in network if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linear] == [128, 128, 64, 64, 32, 1]
    assert linear[0].in_features == 94
    # Dropout sits after the first (128x2) block when its rate is non-zero, as in Table 1.
    kinds = [type(m).__name__ for m in network]
    if spec.dropout > 0:
        assert kinds[4] == "Dropout"


@pytest.mark.parametrize("label", ["32x2+16x2+8x1+1x1", "256x2+128x2+64x2+32x1+1x1", "128 × 2 + 64 × 2 + 32 × 1 + 1 × 1"])
def test_architecture_labels_round_trip(label):
    widths = parse_architecture(label)
    assert parse_architecture(format_architecture(widths)) == widths


@pytest.mark.parametrize("label", ["", "128x2+64", "abc", "128x0+1"])
def test_bad_architecture_labels(label):
    with pytest.raises(ArchitectureError):
        parse_architecture(label)


@pytest.fixture(scope="module")
def small_run(oqmd_dir, tmp_path_factory):
    """A paper-preset model trained for a few epochs on 4,000 real rows, saved with its card."""
    run = train_model(oqmd_dir / "train.csv", oqmd_dir / "val.csv", preset="paper",
                      config=TrainConfig(epochs=6, batch_size=128, seed=0), n_members=2, max_train_rows=4000)
    directory = write_model_card(run, tmp_path_factory.mktemp("model"))
    return run, directory


def test_training_beats_the_mean_predictor_on_real_data(small_run):
    run, _ = small_run
    val = run.metrics["val_abs_dhf_lt_5"]
    # MAE of always predicting the training mean on the same rows is ~0.75 eV/atom here.
    assert val["n"] > 50000
    history = run.members[0].history
    assert history[-1].train_mae_ev_per_atom < history[0].train_mae_ev_per_atom
    assert val["mae_ev_per_atom"] < 0.6 * _mean_predictor_mae(run)


def _mean_predictor_mae(run) -> float:
    from fh_screen.data import load_oqmd_csv, shared_data_dir

    frame, _ = load_oqmd_csv(shared_data_dir() / "val.csv")
    return float(np.mean(np.abs(frame["dhf_ev_per_atom"] - run.checkpoint.target_mean_ev_per_atom)))


def test_save_load_gives_identical_predictions(small_run, tmp_path):
    run, directory = small_run
    formulas = ["LiFePO4", "Fe2O3", "NaCl", "Al2O3", "He2O"]
    before = Predictor(run.checkpoint).predict_formulas(formulas)
    loaded = Predictor.from_file(directory / "model.pt")
    after = loaded.predict_formulas(formulas)
    np.testing.assert_array_equal(before.dhf_ev_per_atom, after.dhf_ev_per_atom)
    np.testing.assert_array_equal(before.dhf_std_ev_per_atom, after.dhf_std_ev_per_atom)
    assert after.out_of_domain.tolist() == [False, False, False, False, True]
    assert loaded.has_uncertainty and loaded.weights_sha256
    checkpoint = load_checkpoint(directory / "model.pt")
    assert checkpoint.elements[0] == "H" and checkpoint.elements[-1] == "Pu"
    assert checkpoint.metadata["data"]["train_sha256"].startswith("0b69cfcb")
    assert (directory / "model_card.json").is_file() and "MAE" in (directory / "README.md").read_text()


def test_counts_path_equals_string_path(small_run):
    run, _ = small_run
    predictor = Predictor(run.checkpoint)
    counts = np.array([[1, 1, 1, 4], [2, 0, 0, 1], [0, 3, 0, 4]])
    by_counts = predictor.predict_counts(counts, ("Li", "Fe", "P", "O")).dhf_ev_per_atom
    by_strings = predictor.predict_formulas(["LiFePO4", "Li2O", "Fe3O4"]).dhf_ev_per_atom
    np.testing.assert_allclose(by_counts, by_strings, atol=1e-6)


def test_model_with_another_element_set_loads(tmp_path, oqmd_dir):
    frame, _ = load_oqmd_csv(oqmd_dir / "val.csv")
    elements = ("Li", "O", "Fe", "P")
    subset = frame[frame["formula"].map(lambda f: set(_symbols(f)) <= set(elements))]
    spec = PRESETS["fig2-32"].__class__(architecture="16x2+1x1", dropout=0.0, dropout_after=(), n_inputs=4)
    x = fraction_matrix(subset["formula"], elements).matrix
    fit, stop = split_frame(subset.assign(row=range(len(subset))), (0.8, 0.2), seed=0)
    trained = train_network(x[fit["row"]], fit["dhf_ev_per_atom"].to_numpy(), x[stop["row"]], stop["dhf_ev_per_atom"].to_numpy(),
                            spec, TrainConfig(epochs=2, batch_size=16))
    from fh_screen.models.checkpoint import Checkpoint

    path = save_checkpoint(Checkpoint("tiny", spec, list(elements), trained.target_mean_ev_per_atom,
                                      trained.target_std_ev_per_atom, [trained.state_dict]), tmp_path / "tiny.pt")
    predictor = Predictor.from_file(path)
    result = predictor.predict_formulas(["LiFePO4", "NaCl"])
    assert np.isfinite(result.dhf_ev_per_atom[0])
    assert "outside the model's element set (Li–P)" in result.errors[1]


def _symbols(formula: str) -> list[str]:
    from pymatgen.core import Composition

    return [e.symbol for e in Composition(formula).elements]


def test_unreadable_and_incompatible_model_files(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot read model file .*garbage.pt"):
        Predictor.from_file(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ModelError, match="incompatible model file .*not an fh-screen checkpoint"):
        Predictor.from_file(foreign)
    with pytest.raises(ModelError, match="model file not found"):
        Predictor.from_file(tmp_path / "missing.pt")
    with pytest.raises(ModelError, match="no model named 'nope'"):
        Predictor.from_name("nope")


def test_an_unknown_model_name_lists_shipped_and_user_models_apart(tmp_path, monkeypatch):
    """The message called a user's fine-tuned model shipped ("no shipped model named 'nope' (available: ...,
    paper-ft)"); it now names the shipped models and the user's, with their folder."""
    import shutil

    from fh_screen.models.predictor import shipped_model_path

    monkeypatch.setenv("FH_SCREEN_MODEL_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("FH_SCREEN_CONFIG_FILE", "/dev/null")
    (tmp_path / "models" / "my-ft").mkdir(parents=True)
    shutil.copy(shipped_model_path("paper"), tmp_path / "models" / "my-ft" / "model.pt")
    with pytest.raises(ModelError) as error:
        Predictor.from_name("nope")
    message = str(error.value)
    assert message.startswith("no model named 'nope' (shipped: attention-ensemble, paper,") and "my-ft" not in message.split(";")[0]
    assert message.endswith(f"; yours in {tmp_path / 'models'}: my-ft)")


def test_fast_stacked_path_equals_reference_members(small_run, oqmd_train_raw):
    run, _ = small_run
    predictor = Predictor(run.checkpoint)
    matrix = fraction_matrix(oqmd_train_raw["formula"].head(2000)).matrix
    fast_mean, fast_std = predictor.predict_matrix(matrix)
    ref_mean, ref_std = predictor.predict_matrix_reference(matrix)
    np.testing.assert_allclose(fast_mean, ref_mean, atol=1e-5)
    np.testing.assert_allclose(fast_std, ref_std, atol=1e-5)


def test_two_trainings_of_a_slice_have_the_same_identity(oqmd_slice_csv, tmp_path):
    """Reproducible models: the identity covers spec and tensors, never dates or file names."""
    config = TrainConfig(epochs=3, batch_size=256, seed=3)
    runs = [train_model(oqmd_slice_csv, preset="paper", config=config, max_train_rows=1500, name=f"run{i}") for i in range(2)]
    for i, run in enumerate(runs):
        run.checkpoint.metadata["created"] = f"2026-01-0{i + 1}T00:00:00+00:00"
        write_model_card(run, tmp_path / f"m{i}")
    first, second = (Predictor.from_file(tmp_path / f"m{i}" / "model.pt") for i in range(2))
    assert first.weights_sha256 == second.weights_sha256 == runs[0].checkpoint.identity()
    assert (tmp_path / "m0" / "model.pt").read_bytes() != (tmp_path / "m1" / "model.pt").read_bytes()  # files differ
    other = train_model(oqmd_slice_csv, preset="paper", config=TrainConfig(epochs=3, batch_size=256, seed=4), max_train_rows=1500)
    assert other.checkpoint.identity() != runs[0].checkpoint.identity()


def test_models_kept_outside_the_package_are_found_by_name(tmp_path, monkeypatch):
    """FH_SCREEN_MODEL_DIR: a model folder outside the package is listed, loaded by name, and wins over a shipped name."""
    import shutil

    from fh_screen.models.predictor import available_models, shipped_model_path

    shipped = shipped_model_path("paper")
    (tmp_path / "mine").mkdir()
    shutil.copy(shipped, tmp_path / "mine" / "model.pt")
    monkeypatch.setenv("FH_SCREEN_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("FH_SCREEN_MODEL_DIR", str(tmp_path))
    assert "mine" in available_models() and "attention-ensemble" in available_models()
    mine = Predictor.from_name("mine")
    assert mine.path == tmp_path / "mine" / "model.pt"
    assert mine.weights_sha256 == Predictor.from_file(shipped).weights_sha256
    (tmp_path / "paper").mkdir()
    shutil.copy(tmp_path / "mine" / "model.pt", tmp_path / "paper" / "model.pt")
    assert shipped_model_path("paper") == tmp_path / "paper" / "model.pt"
    monkeypatch.delenv("FH_SCREEN_MODEL_DIR")
    monkeypatch.setenv("FH_SCREEN_DATA_DIR", str(tmp_path / "data"))
    assert "mine" not in available_models() and shipped_model_path("paper") == shipped
    # without a model folder set, <data_dir>/models (where fh-screen finetune writes by default) is searched
    (tmp_path / "data" / "models").mkdir(parents=True)
    shutil.copytree(tmp_path / "mine", tmp_path / "data" / "models" / "mine-ft")
    assert Predictor.from_name("mine-ft").path == tmp_path / "data" / "models" / "mine-ft" / "model.pt"


def test_a_model_is_named_as_exports_name_it(tmp_path, monkeypatch):
    """``name@version`` (the ``model`` column of every export) loads that model, and only that version."""
    monkeypatch.setenv("FH_SCREEN_MODEL_DIR", str(tmp_path / "none"))
    plain = Predictor.from_name("paper")
    versioned = Predictor.from_name(f"paper@{plain.version}")
    assert (versioned.name, versioned.version, versioned.weights_sha256) == (plain.name, plain.version,
                                                                              plain.weights_sha256)
    with pytest.raises(ModelError, match=f"model 'paper' is version {plain.version}, not '99'"):
        Predictor.from_name("paper@99")
    with pytest.raises(ModelError, match="bad model reference '@1'"):
        Predictor.from_name("@1")
    with pytest.raises(ModelError, match="no model named 'nope'"):
        Predictor.from_name("nope@1")
