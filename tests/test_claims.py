"""The claims study: rediscovery-style examples labelled on real OQMD data, and the figures a
screen's claims are judged by (``fh_screen.study.claims``)."""

from __future__ import annotations

import numpy as np
import pytest

from fh_screen.chem.formula import DEFAULT_ELEMENTS
from fh_screen.data import load_set
from fh_screen.models.predictor import load_predictor
from fh_screen.screening.stability import FEATURE_NAMES, load_stability_model
from fh_screen.study.claims import claims_metrics, protocol_examples, reliability_ok
from fh_screen.study.evaluation import drawn_systems


@pytest.fixture(scope="module")
def examples(oqmd_dir):
    train = load_set(oqmd_dir / "train.csv")
    val = load_set(oqmd_dir / "val.csv")
    return train, val, protocol_examples(train, val, load_predictor("paper"), n_systems=4, seed=0)


def test_examples_label_the_hidden_stable_compounds_of_the_drawn_systems(examples):
    train, val, ex = examples
    assert len(ex.systems) == 4 and ex.features.shape == (len(ex.label), len(FEATURE_NAMES))
    assert len(ex.formulas) == len(ex.label) == len(ex.system) == len(ex.rank)
    # systems in the one seeded draw's order (skipping those without a hidden compound of their own)
    order = []
    for drawn in drawn_systems(train, val, 0):
        if any(val.systems[i] == drawn.system for i in drawn.stable_rows):
            order.append("-".join(DEFAULT_ELEMENTS[j] for j in drawn.system))
        if len(order) == 4:
            break
    assert ex.systems == order
    for index, _ in enumerate(ex.systems):
        rows = ex.system == index
        # every real label is a hidden compound; the own-system ones are real, counted once
        assert int(ex.label[rows].sum()) == ex.n_real[index] >= ex.n_real_own[index]
        assert ex.n_real_own[index] + ex.n_hidden_own_missed[index] >= 1
        assert list(ex.rank[rows]) == list(range(1, int(rows.sum()) + 1))
    known = set(train.formulas)
    assert not any(f in known for f in np.asarray(ex.formulas)[ex.label])  # real ones are new, not train's


def test_claims_metrics_of_the_shipped_probabilities_and_of_a_useless_one(examples):
    _, _, ex = examples
    p = load_stability_model().p_stable(ex.features)
    good = claims_metrics(ex, p)
    assert good["n_systems"] == 4 and good["n_real"] == int(ex.n_real.sum()) > 0
    assert good["sum_p_over_real"] == pytest.approx(p.sum() / good["n_real"])
    assert sum(b["n"] for b in good["reliability"]) == len(p)
    # a constant probability ranks nothing: top-1 by the energy tie-break only, and its sum is off
    flat = claims_metrics(ex, np.full(len(p), 0.5))
    assert flat["sum_p_over_real"] > 10 * good["sum_p_over_real"]
    assert not reliability_ok(flat, min_count=1)
    budget = claims_metrics(ex, p, dft_budget=2)
    assert budget["selected"] <= 2 * 4
