"""The campaign loop's cross-system recalibration, on real screen tables of an OQMD slice."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fh_screen.study.campaign_learning import (
    FEATURE_NAMES,
    NO_ENERGY,
    SUCCESS,
    Recalibration,
    anion_columns,
    candidate_features,
    element_set_keys,
    load_prior,
    set_outcome_counts,
)

KNOWN_ELEMENTS = ("Li", "Fe", "O", "P")


@pytest.fixture(scope="module")
def ranking(oqmd_dir):
    """The new candidates of a real Li-Fe-P-O screen (train entries known), as the campaign ranks them."""
    from fh_screen.models.predictor import Predictor
    from fh_screen.screening import screen
    from fh_screen.study.campaign import _Ranking

    train = pd.read_csv(oqmd_dir / "train.csv", keep_default_na=False, na_values=[""])
    pattern = "(" + "|".join(KNOWN_ELEMENTS) + r"|[0-9.])+"
    known = train[train["formula"].astype(str).str.fullmatch(pattern)].rename(columns={"target": "dhf_ev_per_atom"})
    table = screen("Li-Fe-P-O", predictor=Predictor.from_name("paper-ensemble"), known=known).table
    return _Ranking(table, ("Li", "Fe", "P", "O"), "p_stable", {})


def test_element_set_keys_name_the_elements_present():
    keys = element_set_keys(np.array([[1, 2, 0], [3, 1, 0], [0, 1, 1], [1, 1, 1]]))
    assert keys[0] == keys[1] != keys[2] != keys[3]
    assert len(set(keys.tolist())) == 3


def test_set_outcomes_count_only_the_same_element_set(ranking):
    binary = int(np.flatnonzero((ranking.counts > 0).sum(axis=1) == 2)[0])
    key = ranking.set_keys[binary]
    counts = set_outcome_counts(ranking.set_keys, np.array([key, key]), np.array([SUCCESS, NO_ENERGY]))
    same = ranking.set_keys == key
    assert np.all(counts[same] == [1, 0, 1]) and np.all(counts[~same] == 0)
    assert 1 < same.sum() < len(same)


def test_features_describe_each_candidate(ranking):
    features = candidate_features(ranking.counts, ranking.charge_balanced, ranking.log_odds,
                                  np.zeros((len(ranking.formulas), 3)), anion_columns(ranking.chemsys))
    assert features.shape == (len(ranking.formulas), len(FEATURE_NAMES))
    n_elements = (ranking.counts > 0).sum(axis=1)
    indicator = {name: features[:, j] for j, name in enumerate(FEATURE_NAMES)}
    assert np.array_equal(indicator["elements_4_of_4"] == 1, n_elements == 4)
    assert np.array_equal(indicator["elements_2_of_4"] == 1, n_elements == 2)
    assert indicator["elements_2_of_2"].sum() == 0  # a quaternary system has no binary system's indicator
    atoms = ranking.counts.sum(axis=1)
    assert np.allclose(indicator["log_atoms_per_formula_unit"], np.log(atoms) - 1.5)
    assert set(np.unique(indicator["charge_balanced"])) <= {-0.5, 0.5}


def test_a_candidate_without_the_systems_anions_is_flagged(ranking):
    anions = anion_columns(ranking.chemsys)
    assert anions.tolist() == [False, False, False, True]  # Li-Fe-P-O: oxygen is the anion
    features = candidate_features(ranking.counts, ranking.charge_balanced, ranking.log_odds,
                                  np.zeros((len(ranking.formulas), 3)), anions)
    drops = features[:, FEATURE_NAMES.index("drops_anions_of_4")]
    without_oxygen = ranking.counts[:, 3] == 0
    assert np.array_equal(drops == 1, without_oxygen) and 0 < without_oxygen.sum() < len(without_oxygen)
    assert np.all(features[:, FEATURE_NAMES.index("drops_anions_of_3")] == 0)  # a quaternary system
    # the same candidates in a system without anions (every element a metal): nothing is flagged
    metals = candidate_features(ranking.counts, ranking.charge_balanced, ranking.log_odds,
                                np.zeros((len(ranking.formulas), 3)), np.zeros(4, dtype=bool))
    assert np.all(metals[:, FEATURE_NAMES.index("drops_anions_of_4")] == 0)
    with pytest.raises(ValueError, match="3 anion flags for a system of 4 elements"):
        candidate_features(ranking.counts, ranking.charge_balanced, ranking.log_odds,
                           np.zeros((len(ranking.formulas), 3)), anions[:3])


def test_fit_learns_a_miscalibration_and_stays_near_zero_without_one(ranking):
    features = candidate_features(ranking.counts, ranking.charge_balanced, ranking.log_odds,
                                  np.zeros((len(ranking.formulas), 3)), anion_columns(ranking.chemsys))
    rng = np.random.default_rng(0)
    offset = np.full(len(ranking.formulas), -1.0)
    binary = (ranking.counts > 0).sum(axis=1) == 2
    # calibrated labels: P(success) = sigmoid(offset); then binaries three times as likely to succeed in odds
    calibrated = rng.random(len(offset)) < 1 / (1 + np.exp(-offset))
    skewed = rng.random(len(offset)) < 1 / (1 + np.exp(-(offset + np.log(3.0) * binary)))
    flat = Recalibration.fit(features, offset, calibrated, l2=2.0)
    learned = Recalibration.fit(features, offset, skewed, l2=2.0)
    j = FEATURE_NAMES.index("elements_2_of_4")
    assert abs(flat.weights[j]) < 0.3
    assert learned.weights[j] > 0.6
    shift = learned.correction(features)
    assert shift[binary].mean() > shift[~binary].mean() + 0.5
    # a stronger penalty keeps the weights closer to the screen
    assert np.abs(Recalibration.fit(features, offset, skewed, l2=1e4).weights).max() < 0.1
    assert set(learned.as_dict()) == set(FEATURE_NAMES)


def test_no_examples_no_correction(ranking):
    none = Recalibration.fit(np.zeros((0, len(FEATURE_NAMES))), np.zeros(0), np.zeros(0, bool), l2=2.0)
    assert np.array_equal(none.weights, Recalibration.none().weights)
    assert np.all(none.correction(np.ones((3, len(FEATURE_NAMES)))) == 0)


def test_a_prior_is_where_the_fit_starts_and_what_it_is_shrunk_toward(ranking):
    features = candidate_features(ranking.counts, ranking.charge_balanced, ranking.log_odds,
                                  np.zeros((len(ranking.formulas), 3)), anion_columns(ranking.chemsys))
    offset = np.full(len(ranking.formulas), -1.0)
    binary = (ranking.counts > 0).sum(axis=1) == 2
    labels = np.random.default_rng(1).random(len(offset)) < 1 / (1 + np.exp(-(offset + np.log(3.0) * binary)))
    prior = Recalibration(np.linspace(-1.0, 1.0, len(FEATURE_NAMES)))
    # no calculation yet: the prior itself
    empty = Recalibration.fit(np.zeros((0, len(FEATURE_NAMES))), np.zeros(0), np.zeros(0, bool), l2=2.0, prior=prior)
    assert np.array_equal(empty.weights, prior.weights)
    # a strong penalty holds the prior's weights, not zero's
    assert np.allclose(Recalibration.fit(features, offset, labels, l2=1e7, prior=prior).weights, prior.weights, atol=0.01)
    # with the same data, the weights move away from the prior toward what the data say
    free = Recalibration.fit(features, offset, labels, l2=1e-3)
    pulled = Recalibration.fit(features, offset, labels, l2=2.0, prior=prior)
    assert 0 < np.linalg.norm(pulled.weights - free.weights) < np.linalg.norm(prior.weights - free.weights)
    assert not np.allclose(pulled.weights, Recalibration.fit(features, offset, labels, l2=2.0).weights, atol=0.01)


def test_a_prior_round_trips_through_its_file_and_a_bad_one_is_refused_in_one_line(tmp_path):
    import json

    weights = Recalibration(np.arange(len(FEATURE_NAMES), dtype=float) / 10).as_dict()
    path = tmp_path / "prior.json"
    path.write_text(json.dumps({"weights": weights}))
    assert load_prior(path).as_dict() == weights
    # a campaign report carries the weights its loop learned to the next campaign
    (tmp_path / "report.json").write_text(json.dumps({"loop_discoveries": 3.0, "recalibration": weights}))
    assert load_prior(tmp_path / "report.json").as_dict() == weights
    with pytest.raises(ValueError, match="no recalibration prior at"):
        load_prior(tmp_path / "absent.json")
    (tmp_path / "broken.json").write_text("{weights")
    with pytest.raises(ValueError, match="is not JSON"):
        load_prior(tmp_path / "broken.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="has no 'weights' \\(or campaign 'recalibration'\\) mapping"):
        load_prior(tmp_path / "list.json")
    short = {k: v for k, v in weights.items() if k != "log_odds"} | {"mystery": 1.0}
    (tmp_path / "short.json").write_text(json.dumps({"weights": short}))
    with pytest.raises(ValueError, match=r"missing \['log_odds'\], unknown \['mystery'\]") as error:
        load_prior(tmp_path / "short.json")
    assert "\n" not in str(error.value)
