"""The stacked attention path against the modules it was built from, on real OQMD compositions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fh_screen.chem.formula import DEFAULT_ELEMENTS, fraction_matrix
from fh_screen.models.attention import set_tensors
from fh_screen.models.attention_inference import StackedAttentionEnsemble
from fh_screen.models.predictor import Predictor


@pytest.fixture(scope="module")
def default_predictor() -> Predictor:
    return Predictor.from_name("attention-ensemble")


@pytest.fixture(scope="module")
def slice_sets(oqmd_train_raw):
    """600 OQMD train formulas, 1 to 5 elements mixed in file order (so lengths interleave)."""
    formulas = oqmd_train_raw["formula"].iloc[:600].tolist() + ["O", "Fe2O3", "Li1Fe1P1O4"]
    return set_tensors(fraction_matrix(formulas, DEFAULT_ELEMENTS).matrix)


def module_outputs(predictor: Predictor, indices: np.ndarray, fractions: np.ndarray):
    """Each member's (mean, log-scale) through its own torch module, padded rows masked."""
    with torch.inference_mode():
        outputs = [network(torch.as_tensor(indices), torch.as_tensor(fractions)) for network in predictor.model.members]
    return np.stack([m.numpy() for m, _ in outputs]), np.stack([b.numpy() for _, b in outputs])


def test_stacked_members_equal_their_modules_for_both_widths(default_predictor, slice_sets):
    indices, fractions = slice_sets
    lengths = (fractions > 0).sum(axis=1)
    assert set(lengths) >= {1, 2, 3, 4, 5}  # every group the stacked path forms is exercised
    ref_mean, ref_log = module_outputs(default_predictor, indices, fractions)
    fast_mean, fast_log = default_predictor.model.stacked.predict(indices, fractions)
    assert fast_mean.shape == (10, len(indices))
    np.testing.assert_allclose(fast_mean, ref_mean, atol=2e-5)
    np.testing.assert_allclose(fast_log, ref_log, atol=2e-5)


def test_chunking_and_row_order_do_not_change_predictions(default_predictor, slice_sets):
    indices, fractions = slice_sets
    whole = default_predictor.model.stacked.predict(indices, fractions)
    chunked = default_predictor.model.stacked.predict(indices, fractions, chunk_rows=7)
    np.testing.assert_allclose(chunked[0], whole[0], atol=1e-6)
    reverse = np.arange(len(indices))[::-1]
    reversed_mean, _ = default_predictor.model.stacked.predict(indices[reverse], fractions[reverse])
    np.testing.assert_allclose(reversed_mean[:, reverse], whole[0], atol=1e-6)


def test_default_predictions_in_ev_per_atom_match_the_reference_path(default_predictor, oqmd_train_raw):
    rows = oqmd_train_raw.iloc[:400]
    matrix = fraction_matrix(rows["formula"].tolist(), DEFAULT_ELEMENTS).matrix
    fast, fast_sigma = default_predictor.predict_matrix(matrix)
    reference, reference_sigma = default_predictor.predict_matrix_reference(matrix)
    np.testing.assert_allclose(fast, reference, atol=1e-5)
    np.testing.assert_allclose(fast_sigma, reference_sigma, rtol=1e-4)
    # and the model is the trained one, not any function: close to DFT on its own training rows
    assert np.median(np.abs(fast - rows["target"].to_numpy())) < 0.05


def test_layer_norm_affine_is_folded_exactly(default_predictor):
    """A member whose LayerNorms carry non-trivial scale and shift still matches after folding."""
    network = default_predictor.model.members[0]
    spec = default_predictor.checkpoint.spec_of(0)
    assert not torch.allclose(network.blocks[0].norm1.weight, torch.ones_like(network.blocks[0].norm1.weight))
    stacked = StackedAttentionEnsemble([network], [spec])
    indices, fractions = set_tensors(fraction_matrix(["Li2O1", "Fe1P1O4", "Li1Fe1P1O4"], DEFAULT_ELEMENTS).matrix)
    with torch.inference_mode():
        mean, log_scale = network(torch.as_tensor(indices), torch.as_tensor(fractions))
    fast_mean, fast_log = stacked.predict(indices, fractions)
    np.testing.assert_allclose(fast_mean[0], mean.numpy(), atol=1e-5)
    np.testing.assert_allclose(fast_log[0], log_scale.numpy(), atol=1e-5)
