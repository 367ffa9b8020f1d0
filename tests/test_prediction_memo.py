"""MemoizedPredictor: a sweep's memory of slow-model predictions, keyed by composition."""

from __future__ import annotations

import numpy as np
import pytest

from fh_screen.chem.candidates import enumerate_counts
from fh_screen.models.prediction_memo import MemoizedPredictor
from fh_screen.models.predictor import load_predictor


@pytest.fixture(scope="module")
def attention():
    return load_predictor("attention-ensemble")


def test_keys_are_compositions_whatever_the_element_order_or_multiple():
    first = MemoizedPredictor.keys(np.array([[2, 1], [4, 2], [1, 0]]), ("Li", "O"))
    second = MemoizedPredictor.keys(np.array([[1, 2], [0, 3]]), ("O", "Li"))
    assert first[0] == first[1] == second[0] == (("Li", 2), ("O", 1))
    assert first[2] == (("Li", 1),) and second[1] == (("Li", 1),)


def test_remembered_predictions_equal_fresh_ones_across_systems(attention):
    memo = MemoizedPredictor(attention)
    counts = enumerate_counts(3, max_atoms=6)
    first = memo.predict_counts(counts, ("Li", "Fe", "O"))
    assert memo.hits == 0 and memo.misses == len(counts)
    # Fe-Li-P meets the Li-Fe binary and the elements again, in another element order
    remembered = memo.predict_counts(counts, ("Fe", "Li", "P"))
    fresh = attention.predict_counts(counts, ("Fe", "Li", "P"))
    assert memo.hits == int((counts[:, 2] == 0).sum()) > 0  # the rows without P were met in Li-Fe-O
    np.testing.assert_allclose(remembered.dhf_ev_per_atom, fresh.dhf_ev_per_atom, atol=1e-6)
    np.testing.assert_allclose(remembered.dhf_std_ev_per_atom, fresh.dhf_std_ev_per_atom, atol=1e-6)
    assert remembered.dhf_ev_per_atom.dtype == fresh.dhf_ev_per_atom.dtype
    np.testing.assert_array_equal(remembered.out_of_domain, fresh.out_of_domain)
    assert np.isfinite(first.dhf_ev_per_atom).all()
    # everything else is the wrapped model's
    assert (memo.name, memo.version, memo.weights_sha256, memo.is_slow) == (
        attention.name, attention.version, attention.weights_sha256, True)


def test_memory_is_bounded_and_a_model_without_sigma_keeps_none():
    paper = load_predictor("paper")
    memo = MemoizedPredictor(paper, max_entries=10)
    counts = enumerate_counts(2, max_atoms=8)
    out = memo.predict_counts(counts, ("Na", "Cl"))
    assert out.dhf_std_ev_per_atom is None and out.dhf_ev_per_atom.dtype == np.float32
    assert len(memo._memory) <= 10
    again = memo.predict_counts(counts, ("Na", "Cl"))
    np.testing.assert_allclose(again.dhf_ev_per_atom, paper.predict_counts(counts, ("Na", "Cl")).dhf_ev_per_atom, atol=1e-6)
    with pytest.raises(ValueError, match="max_entries"):
        MemoizedPredictor(paper, max_entries=0)
