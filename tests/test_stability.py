"""P(stable): SMACT test, per-candidate features, the exported trees and the shipped classifier."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fh_screen.chem.candidates import enumerate_counts, formulas_from_counts
from fh_screen.screening.stability import (
    FEATURE_NAMES,
    STABILITY_MODEL_PATH,
    StabilityModel,
    TreeEnsemble,
    candidate_features,
    load_stability_model,
    smact_valid_mask,
)


@pytest.mark.parametrize("system", [("Na", "Cl"), ("Ca", "O"), ("Li", "Fe", "O"), ("Fe", "Ni"), ("Ba", "Ti", "S")])
def test_smact_mask_equals_smact_validity(system):
    from smact.screening import smact_validity

    counts = enumerate_counts(len(system), 10).astype(np.int64)
    formulas = formulas_from_counts(counts, system)
    expected = np.array([smact_validity(f, oxidation_states_set="icsd24") for f in formulas])
    np.testing.assert_array_equal(smact_valid_mask(counts, system), expected)


def test_smact_mask_textbook_cases():
    counts = np.array([[1, 1], [1, 2], [5, 6], [1, 12]])
    np.testing.assert_array_equal(smact_valid_mask(counts, ("Na", "Cl")), [True, False, False, False])


@pytest.fixture(scope="module")
def lifeo_screen(oqmd_train_raw):
    from fh_screen.models.predictor import Predictor
    from fh_screen.screening import ScreenOptions, screen

    known = oqmd_train_raw.rename(columns={"target": "dhf_ev_per_atom"})
    known = known[known["formula"].str.fullmatch(r"(Li|Fe|O|\d)+")]
    return screen("Li-Fe-O", predictor=Predictor.from_name("paper"), known=known, options=ScreenOptions(max_atoms=10))


def test_features_follow_the_table(lifeo_screen):
    result = lifeo_screen
    table = result.table
    x = pd.DataFrame(result.features, columns=FEATURE_NAMES)
    assert len(x) == len(table)
    np.testing.assert_allclose(x["e_above_known_hull_ev_per_atom"], table["e_above_hull_pred_ev_per_atom"])
    np.testing.assert_allclose(x["dhf_pred_ev_per_atom"], table["dhf_pred_ev_per_atom"])
    new = ~table["is_known"].to_numpy(bool)
    # gap and rank within each element set of the new rows, recomputed with pandas
    frame = table[new].copy()
    frame["set"] = [frozenset(s for s in ("Li", "Fe", "O") if s in f) for f in frame["formula"]]
    best = frame.groupby("set")["e_above_hull_pred_ev_per_atom"].transform("min")
    np.testing.assert_allclose(x["gap_to_best_in_set_ev_per_atom"][new], frame["e_above_hull_pred_ev_per_atom"] - best, atol=1e-12)
    assert (x["rank_in_set"][new][np.isclose(x["gap_to_best_in_set_ev_per_atom"][new], 0)] == 1).all()
    n_sets = frame["set"].nunique()
    assert int((x["rank_in_set"][new] == 1).sum()) == n_sets
    # the known compounds of Li-Fe-O itself, as counted by the features
    ternary = x["n_elements"].to_numpy() == 3
    n_known_ternary = int((table["is_known"] & (x["n_elements"] == 3)).sum())
    assert (x["n_known_in_set"][ternary] == n_known_ternary).all()


def test_features_with_known_set_given_equal_those_computed_inside():
    from fh_screen.screening.stability import known_set_features

    rng = np.random.default_rng(3)
    counts = enumerate_counts(3, 10).astype(np.int64)
    n = len(counts)
    known = counts[rng.choice(n, 12, replace=False)]
    e = rng.normal(size=n)

    def features(**extra):
        return candidate_features(
            counts, is_known=rng.random(n) < 0.1, e_above_known_hull_ev_per_atom=e, dhf_pred_ev_per_atom=e,
            dhf_std_ev_per_atom=None, refined=np.zeros(n), log_prior=np.zeros(n), charge_balanced=np.zeros(n),
            smact_valid=np.zeros(n), known_hull_ev_per_atom=np.zeros(n), known_counts=known,
            e_above_predicted_hull_ev_per_atom=e, substitution_analogues=np.zeros(n), pattern_analogues=np.zeros(n), **extra)

    state = rng.bit_generator.state
    inside = features()
    rng.bit_generator.state = state
    given = features(known_set=known_set_features(counts, known))
    np.testing.assert_array_equal(given, inside)
    columns = [FEATURE_NAMES.index(c) for c in ("n_known_in_set", "n_known_in_subsystems", "nearest_known_distance")]
    assert (inside[:, columns[2]] < 2).any() and (inside[:, columns[1]] > 0).any()
    rng.bit_generator.state = state
    stale = features(known_set=known_set_features(counts, known[:3]))  # what a cache of other known phases would give
    assert not np.array_equal(stale[:, columns], inside[:, columns])
    with pytest.raises(ValueError, match="rows"):
        features(known_set=known_set_features(counts[:5], known))


def _fitted_trees(features: np.ndarray, seed: int = 0):
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(seed)
    label = (features[:, 0] + 0.05 * rng.standard_normal(len(features)) < -0.02)
    model = HistGradientBoostingClassifier(max_iter=40, max_leaf_nodes=15, random_state=seed)
    model.fit(features, label)
    return model


def test_exported_trees_equal_scikit_learn(lifeo_screen):
    x = lifeo_screen.features.copy()
    model = _fitted_trees(x)
    trees = TreeEnsemble.from_sklearn(model)
    x_nan = x.copy()
    x_nan[::7, 0] = np.nan  # missing values follow scikit-learn's learned direction
    for data in (x, x_nan):
        ours = 1 / (1 + np.exp(-trees.raw_score(data)))
        np.testing.assert_allclose(ours, model.predict_proba(data)[:, 1], atol=1e-12)
    back = TreeEnsemble.from_json(json.loads(json.dumps(trees.to_json())))
    np.testing.assert_array_equal(back.raw_score(x), trees.raw_score(x))


@pytest.mark.parametrize(("leaves", "dtype"), [(6, np.uint8), (15, np.uint16), (30, np.uint32), (60, np.uint64), (90, None)])
def test_leaf_masks_give_the_walk_scores_bit_for_bit(lifeo_screen, leaves, dtype):
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(leaves)
    x = np.tile(lifeo_screen.features, (4, 1)) + 1e-3 * rng.standard_normal((4 * len(lifeo_screen.features), len(FEATURE_NAMES)))
    x[rng.random(x.shape) < 0.05] = np.nan  # learned NaN directions both ways
    label = rng.random(len(x)) < 1 / (1 + np.exp(-10 * np.nan_to_num(x[:, 0])))
    model = HistGradientBoostingClassifier(max_iter=15, max_leaf_nodes=leaves, min_samples_leaf=1, random_state=0).fit(x, label)
    trees = TreeEnsemble.from_sklearn(model)
    most = int(np.add.reduceat(trees.is_leaf.astype(int), trees.offsets).max())
    masks = trees._leaf_masks
    if dtype is None:
        assert most > 64 and masks is None  # such trees are walked
    else:
        assert most > {np.uint8: 0, np.uint16: 8, np.uint32: 16, np.uint64: 32}[dtype]
        assert masks.tables[0].dtype == dtype
    internal = ~trees.is_leaf
    edges = np.repeat(x[:1], internal.sum(), axis=0)
    edges[np.arange(internal.sum()), trees.feature[internal]] = trees.threshold[internal]  # on a threshold: left
    edges[::3, 1], edges[1::3, 2] = np.inf, -np.inf
    for data in (x, edges, x[:0], x[:1]):
        np.testing.assert_array_equal(trees.raw_score(data), trees.walk_raw_score(data))
    np.testing.assert_allclose(1 / (1 + np.exp(-trees.raw_score(x))), model.predict_proba(x)[:, 1], atol=1e-12)


@pytest.mark.skipif(not STABILITY_MODEL_PATH.exists(), reason="no shipped stability model in this checkout")
def test_shipped_classifiers_leaf_masks_equal_the_walk(lifeo_screen):
    from fh_screen.screening.stability import STABILITY_HEAD_MODEL_PATH

    x = lifeo_screen.features.copy()
    x_nan = x.copy()
    x_nan[::5, FEATURE_NAMES.index("dhf_std_ev_per_atom")] = np.nan
    for path in (STABILITY_MODEL_PATH, STABILITY_HEAD_MODEL_PATH):
        trees = load_stability_model(path).trees
        assert trees._leaf_masks is not None
        for data in (x, x_nan):
            np.testing.assert_array_equal(trees.raw_score(data), trees.walk_raw_score(data))


def test_stability_model_json_round_trip_and_shift(lifeo_screen, tmp_path):
    x = lifeo_screen.features
    trees = TreeEnsemble.from_sklearn(_fitted_trees(x))
    model = StabilityModel(trees, FEATURE_NAMES, log_odds_shift=-1.0, metadata={"name": "stability", "version": 9})
    path = tmp_path / "model.json"
    path.write_text(json.dumps(model.to_json()))
    loaded = load_stability_model(str(path))
    assert loaded.identity == "stability@9"
    p = loaded.p_stable(x)
    unshifted = 1 / (1 + np.exp(-trees.raw_score(x)))
    # a log-odds shift of -1 divides the odds by e
    np.testing.assert_allclose(p / (1 - p), unshifted / (1 - unshifted) / np.e, rtol=1e-9)
    wrong = model.to_json() | {"feature_names": list(FEATURE_NAMES[:-1])}
    path.write_text(json.dumps(wrong))
    with pytest.raises(ValueError, match="do not match"):
        load_stability_model.__wrapped__(str(path))


@pytest.mark.skipif(not STABILITY_MODEL_PATH.exists(), reason="no shipped stability model in this checkout")
def test_shipped_classifier_in_a_screen(oqmd_train_raw):
    from fh_screen.models.predictor import Predictor
    from fh_screen.screening import ScreenOptions, screen

    from fh_screen.store.bootstrap import packaged_reference_frame

    known = packaged_reference_frame("Na-Cl")  # what a chemist's first screen ranks against
    result = screen("Na-Cl", predictor=Predictor.from_name(None), known=known)
    table = result.table
    new = ~table["is_known"].to_numpy(bool)
    p = table["p_stable"].to_numpy(float)
    assert np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()
    assert result.stability_model == load_stability_model().identity
    # known rows: 1 on the known hull, 0 above it
    on_hull = table["e_above_hull_pred_ev_per_atom"].to_numpy(float) <= 1e-3
    np.testing.assert_array_equal(p[~new], on_hull[~new].astype(float))
    # new rows come first, by p_stable
    assert new[: int(new.sum())].all()
    assert (np.diff(p[new]) <= 1e-12).all()
    assert result.expected_new_stable == pytest.approx(p[new].sum())
    # a textbook ionic binary: nothing that cannot balance charge is claimed
    x = pd.DataFrame(result.features, columns=FEATURE_NAMES)
    assert not ((p >= 0.5) & new & (x["smact_valid"].to_numpy() < 0.5)).any()
    # the budget picks exactly the N best new rows
    budget = screen("Na-Cl", predictor=Predictor.from_name(None), known=known, options=ScreenOptions(dft_budget=3))
    chosen = budget.table[budget.table["selected"]]
    assert len(chosen) <= 3
    eligible = budget.table[~budget.table["is_known"] & (budget.table["dhf_pred_ev_per_atom"] < 0)
                            & (budget.table["e_above_hull_pred_ev_per_atom"] <= 0.2)]
    assert list(chosen["formula"]) == list(eligible["formula"][:3])
