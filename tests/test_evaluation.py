"""The stability evaluation's metrics on hand-made systems whose answers follow from their construction."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.stats import norm

from fh_screen.chem.candidates import count_candidates, parse_chemsys
from fh_screen.study.evaluation import Z90, RediscoveryRecord, accuracy_metrics, calibration_metrics, classification_metrics, hull_classification, rank_of, rediscovery, rediscovery_summary
from fh_screen.data import make_set


class StubPredictor:
    """Predicts ``values[formula]`` for listed reduced formulas and ``default`` for the rest (σ 0.01)."""

    name, version, weights_sha256 = "stub", "1", "0" * 64

    def __init__(self, values: dict[str, float], default: float = 0.5):
        from fh_screen.chem.formula import DEFAULT_ELEMENTS

        self.values, self.default, self.elements = values, default, tuple(DEFAULT_ELEMENTS)

    def predict_counts(self, counts, system_elements):
        from fh_screen.chem.candidates import formulas_from_counts

        formulas = formulas_from_counts(np.asarray(counts), system_elements)
        mean = np.array([self.values.get(f, self.default) for f in formulas], dtype=np.float32)
        return SimpleNamespace(dhf_ev_per_atom=mean, dhf_std_ev_per_atom=np.full(len(mean), 0.01, dtype=np.float32))


# Li-O by hand: Li2O (x_O = 1/3, -2.0) and LiO2 (x_O = 2/3, -1.0) are known. The hull under Li2O2
# (x_O = 1/2) is their midpoint, -1.5; under Li3O (x_O = 1/4) it is 3/4 of Li2O, -1.5.
TRAIN = make_set(["Li2O", "LiO2"], [-2.0, -1.0])
VAL = make_set(["Li2O2", "Li3O"], [-1.8, -0.5])  # Li2O2 below the hull (stable), Li3O above it


def test_classification_metrics_count_by_hand():
    true = np.array([1, 1, 1, 0, 0, 0, 0], bool)
    pred = np.array([1, 1, 0, 1, 0, 0, 0], bool)
    m = classification_metrics(true, pred)
    assert (m["true_positives"], m["n_true_stable"], m["n_pred_stable"]) == (2, 3, 3)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3) and m["f1"] == pytest.approx(2 / 3)
    assert math.isnan(classification_metrics(np.zeros(3, bool), np.zeros(3, bool))["precision"])


def test_hull_classification_of_a_binary_with_known_hull():
    perfect = hull_classification(TRAIN, VAL, VAL.dhf_ev_per_atom.copy())
    assert (perfect["n"], perfect["n_true_stable"], perfect["true_positives"]) == (2, 1, 1)
    assert perfect["precision"] == perfect["recall"] == perfect["f1"] == 1.0
    # swapped: Li2O2 predicted above its hull (-1.2 > -1.5), Li3O below its hull (-1.6 < -1.5)
    swapped = hull_classification(TRAIN, VAL, np.array([-1.2, -1.6]))
    assert swapped["n_pred_stable"] == 1 and swapped["true_positives"] == 0
    assert swapped["precision"] == 0.0 and swapped["recall"] == 0.0
    # a prediction just inside the 1 meV/atom tolerance counts as stable
    edge = hull_classification(TRAIN, VAL, np.array([-1.5 + 0.0009, -0.5]))
    assert edge["true_positives"] == 1 and edge["n_pred_stable"] == 1


def test_accuracy_metrics_by_construction():
    true = np.array([-1.0, -2.0, 0.5, -8.0, 6.0])
    pred = true + np.array([0.1, -0.2, 0.3, 1.0, -2.0])
    m = accuracy_metrics(true, pred)
    assert m["mae_all_ev_per_atom"] == pytest.approx(np.mean([0.1, 0.2, 0.3, 1.0, 2.0]))
    assert m["mae_abs_lt_5_ev_per_atom"] == pytest.approx(0.2)  # -8 and 6 are outside abs < 5
    assert m["p90_ae_ev_per_atom"] == pytest.approx(np.percentile([0.1, 0.2, 0.3], 90))


def test_calibration_of_normal_errors_with_true_sigma():
    rng = np.random.default_rng(0)
    std = rng.uniform(0.02, 0.2, 20_000)
    true = rng.uniform(-3, 0, len(std))
    pred = true + rng.normal(0, std)
    m = calibration_metrics(true, pred, std)
    assert m["coverage_90"] == pytest.approx(0.90, abs=0.01)
    observed = np.array(m["reliability"]["observed"])
    assert observed == pytest.approx(m["reliability"]["nominal"], abs=0.015)
    halved = calibration_metrics(true, pred, std / 2)
    assert halved["coverage_90"] == pytest.approx(2 * norm.cdf(Z90 / 2) - 1, abs=0.01)
    assert calibration_metrics(true, pred, None)["coverage_90"] is None


def test_rank_of_breaks_ties_by_the_second_key():
    scores = np.array([0.0, 0.0, -1.0, 2.0])
    tie = np.array([5.0, 1.0, 0.0, 0.0])
    assert rank_of(scores, tie, np.arange(4)).tolist() == [3, 2, 1, 4]


def test_rediscovery_ranks_the_hidden_stable_compound_first_when_only_it_is_predicted_stable():
    predictor = StubPredictor({"Li2O2": -3.0, "Li2O": -2.0, "LiO2": -1.0})
    records = rediscovery(TRAIN, VAL, predictor, n_systems=5)
    assert [(r.chemsys, r.formula) for r in records] == [("Li-O", "Li2O2")]
    record = records[0]
    assert record.ranks["screen"] == 1 and record.ranks["e_known"] == 1
    assert record.n_unknown == count_candidates(2) - 2  # the Li-O enumeration less the two known phases
    summary = rediscovery_summary(records)
    assert summary["rules"]["screen"]["recall_at_10"] == 1.0
    assert summary["rules"]["screen"]["median_rank_pct"] == pytest.approx(100 / record.n_unknown)
    assert summary["random"]["recall_at_10"] == pytest.approx(10 / record.n_unknown)
    # predicted far above everything: the worst rank of every rule that reads the prediction
    worst = rediscovery(TRAIN, VAL, StubPredictor({"Li2O2": 2.0}, default=-0.1), n_systems=5)[0]
    assert worst.ranks["e_known"] == worst.ranks["dhf"] == worst.n_unknown


def test_summary_of_random_baseline_and_recall_by_hand():
    records = [RediscoveryRecord("A-B", f"X{i}", 100, {"r": rank}) for i, rank in enumerate([1, 10, 11, 50, 100])]
    summary = rediscovery_summary(records)
    rule = summary["rules"]["r"]
    assert rule["recall_at_10"] == pytest.approx(2 / 5) and rule["recall_at_50"] == pytest.approx(4 / 5)
    assert rule["recall_at_1pct"] == pytest.approx(1 / 5) and rule["median_rank_pct"] == pytest.approx(11.0)
    assert summary["random"] == pytest.approx({"recall_at_10": 0.1, "recall_at_50": 0.5, "recall_at_1pct": 0.01,
                                               "median_rank_pct": 50.5})


def test_parse_chemsys_of_the_hand_made_system():
    assert parse_chemsys("O-Li") == ("Li", "O")
