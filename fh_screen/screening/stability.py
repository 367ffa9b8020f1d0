"""P(stable): the calibrated probability that a candidate is a new stable compound.

``p_stable`` of a new composition is the probability that DFT of the OQMD kind, in the
composition's best structure, puts it on or below the hull of the known phases. It is not read
off the regression's σ (a composition model interpolates smoothly between the compounds that
exist and never sees that most stoichiometries between two of them form nothing, so its σ misses
that error by orders of magnitude); it is *learned*: a gradient-boosted classifier over
per-candidate features that the screen already has (:data:`FEATURE_NAMES`), fitted on
rediscovery-style examples built from ``train.csv`` alone, where the hidden compounds are the
seeded 5 % carve of train that the shipped models never trained on
(``python scripts/build_stability_model.py``; ``docs/claims.md`` has the protocol and the
figures on val).

The fitted trees ship as JSON (``reference_data/stability_model.json``) and are evaluated here
with numpy alone (no scikit-learn at run time), tested equal to scikit-learn's own
``predict_proba`` on the fitting side.

Summed over a system's new candidates, ``p_stable`` is the expected number of new stable
compounds there. A known composition has ``p_stable`` 1 when its DFT value is on the hull of the
known phases and 0 otherwise.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from itertools import product
from pathlib import Path

import numpy as np

__all__ = [
    "FEATURE_NAMES",
    "KnownSetFeatures",
    "STABILITY_HEAD_MODEL_PATH",
    "STABILITY_MODEL_PATH",
    "StabilityModel",
    "TreeEnsemble",
    "candidate_features",
    "known_set_features",
    "load_stability_model",
    "read_stability_model",
    "smact_valid_mask",
]

#: The classifier shipped with the package (fitted on train.csv only).
STABILITY_MODEL_PATH = Path(__file__).parents[1] / "reference_data" / "stability_model.json"

#: The classifier that picks which rows of a cascade screen the screen's own model refines beyond
#: the prefilter's best (the head of its P(stable) order; :func:`fh_screen.screening.core.screen`).
#: It stays fixed while the shipped classifier is refitted: the shipped classifier's examples were
#: screened with this very head, so the rows refined when it scores are the rows refined when it
#: was fitted (a classifier that picked its own head would read its own liking, ``refined`` and σ,
#: as evidence). ``stability@2``, the classifier shipped before the head was refined.
STABILITY_HEAD_MODEL_PATH = Path(__file__).parents[1] / "reference_data" / "stability_head.json"

#: Per-candidate features, in the column order of :func:`candidate_features`.
FEATURE_NAMES: tuple[str, ...] = (
    "e_above_known_hull_ev_per_atom",   # predicted ΔH_f minus the hull of the known phases
    "dhf_pred_ev_per_atom",              # predicted ΔH_f
    "dhf_std_ev_per_atom",               # the model's σ (0 where the single prefilter network predicted)
    "refined",                           # 1 where the default model predicted the row (cascade)
    "log_prior",                         # log rate of stable compounds of this stoichiometry shape
    "charge_balanced",                   # common oxidation states balance (pymatgen)
    "smact_valid",                       # SMACT charge neutrality + Pauling electronegativity test
    "n_elements",
    "n_atoms",                           # atoms per reduced formula unit
    "max_count",                         # largest coefficient of the reduced formula
    "gap_to_best_in_set_ev_per_atom",    # e_above_known_hull minus the best new one of the same element set
    "rank_in_set",                       # 1-based rank of e_above_known_hull among new rows of the same element set
    "n_known_in_set",                    # known compounds made of exactly this element set
    "n_known_in_subsystems",             # known compounds made of a subset of this element set
    "nearest_known_distance",            # L1 distance (atom fractions) to the nearest known compound of the set's subsystems
    "known_hull_ev_per_atom",            # the known hull's ΔH_f at this composition (depth of the competition)
    "e_above_predicted_hull_ev_per_atom",  # above the hull of the known phases + every new one predicted below them
    "substitution_analogues",            # known compositions one same-group substitution away (screening.analogues)
    "log_pattern_analogues",             # log(1 + known compositions with the same group pattern)
)


# ---------------------------------------------------------------------------- SMACT test
@lru_cache(maxsize=128)
def _smact_element(symbol: str) -> tuple[tuple[int, ...], float | None]:
    """SMACT's ICSD-24 oxidation states and Pauling electronegativity of ``symbol`` (read once)."""
    import smact

    element = smact.Element(symbol)
    return tuple(element.oxidation_states_icsd24 or ()), element.pauling_eneg


@lru_cache(maxsize=4096)
def _smact_combinations(symbols: tuple[str, ...]) -> np.ndarray | None:
    """Oxidation-state combinations of ``symbols`` that pass SMACT's Pauling test (rows), or None.

    None when every element is a metal (SMACT counts alloys as valid); an empty array when an
    element has no ICSD-24 oxidation state.
    """
    import smact
    from smact.screening import pauling_test

    if all(s in smact.metals for s in symbols):
        return None
    properties = [_smact_element(s) for s in symbols]
    states = [list(states) for states, _ in properties]
    if any(not s for s in states):
        return np.zeros((0, len(symbols)), dtype=np.int64)
    electronegativities = [eneg for _, eneg in properties]
    kept = []
    for combination in product(*states):
        try:
            ok = pauling_test(combination, electronegativities)
        except TypeError:  # an element without a Pauling electronegativity: SMACT lets it pass
            ok = True
        if ok:
            kept.append(combination)
    return np.array(kept, dtype=np.int64).reshape(-1, len(symbols))


def smact_valid_mask(counts: np.ndarray, system: Sequence[str]) -> np.ndarray:
    """SMACT validity of each count row over ``system`` (charge neutral with ICSD-24 oxidation
    states that pass the Pauling electronegativity test; all-metal rows are valid).

    The same answer as ``smact.screening.smact_validity(formula, oxidation_states_set="icsd24")``
    row by row, vectorised per element set (tested against it).
    """
    counts = np.asarray(counts, dtype=np.int64)
    system = tuple(system)
    out = np.zeros(len(counts), dtype=bool)
    if len(counts) == 0:
        return out
    present = counts > 0
    masks = present @ (1 << np.arange(len(system), dtype=np.int64))
    for mask in np.unique(masks):
        rows = np.flatnonzero(masks == mask)
        columns = [j for j in range(len(system)) if (int(mask) >> j) & 1]
        if len(columns) < 2:
            out[rows] = True
            continue
        combinations = _smact_combinations(tuple(system[j] for j in columns))
        if combinations is None:
            out[rows] = True
            continue
        if len(combinations) == 0:
            continue
        # small integers: float64 products are exact, and BLAS makes them ~20× faster than int64's;
        # rows in chunks, so that rows × combinations stays ~32 MB (a senary set has ~3,000 combinations)
        charges = combinations.T.astype(np.float64)
        chunk = max(1, 4_000_000 // len(combinations))
        for start in range(0, len(rows), chunk):
            part = rows[start:start + chunk]
            out[part] = (counts[np.ix_(part, columns)].astype(np.float64) @ charges == 0).any(axis=1)
    return out


# ---------------------------------------------------------------------------- features
def _element_set_keys(counts: np.ndarray) -> np.ndarray:
    return (np.asarray(counts) > 0) @ (1 << np.arange(np.asarray(counts).shape[1], dtype=np.int64))


@dataclass(frozen=True)
class KnownSetFeatures:
    """The features of each row that depend on its counts and the known compounds alone (one
    value per row; the same on every pass of a screen, whatever the predictions)."""

    n_known_in_set: np.ndarray  # known compounds made of exactly the row's element set
    n_known_in_subsystems: np.ndarray  # known compounds made of a subset of it
    nearest_known_distance: np.ndarray  # L1 distance in atom fractions to the nearest of those (2 if none)


def known_set_features(counts: np.ndarray, known_counts: np.ndarray) -> KnownSetFeatures:
    """:class:`KnownSetFeatures` of the reduced count rows ``counts`` (``(n, k)``) against the known
    compounds' rows ``known_counts`` (``(m, k)``), element set by element set."""
    counts = np.asarray(counts, dtype=np.int64)
    n, k = counts.shape if counts.ndim == 2 else (0, 0)
    known_counts = np.asarray(known_counts, dtype=np.int64).reshape(-1, k)
    known_keys = _element_set_keys(known_counts) if len(known_counts) else np.zeros(0, dtype=np.int64)
    n_in_set = np.zeros(n)
    n_in_sub = np.zeros(n)
    nearest = np.full(n, 2.0)
    if len(known_counts) and n:
        unique_keys, inverse = np.unique(_element_set_keys(counts), return_inverse=True)
        known_fractions = known_counts / known_counts.sum(axis=1, keepdims=True)
        fractions = counts / counts.sum(axis=1, keepdims=True)
        for i, key in enumerate(unique_keys.tolist()):
            rows = np.flatnonzero(inverse.reshape(-1) == i)
            inside = (known_keys & ~key) == 0
            n_in_set[rows] = float((known_keys == key).sum())
            n_in_sub[rows] = float(inside.sum())
            if inside.any():
                near = known_fractions[inside]
                chunk = max(1, 4_000_000 // (len(near) * k))  # rows × known × elements stays ~32 MB
                for start in range(0, len(rows), chunk):
                    part = rows[start:start + chunk]
                    nearest[part] = np.abs(fractions[part, None, :] - near[None, :, :]).sum(axis=2).min(axis=1)
    return KnownSetFeatures(n_known_in_set=n_in_set, n_known_in_subsystems=n_in_sub, nearest_known_distance=nearest)


def candidate_features(
    counts: np.ndarray,
    *,
    is_known: np.ndarray,
    e_above_known_hull_ev_per_atom: np.ndarray,
    dhf_pred_ev_per_atom: np.ndarray,
    dhf_std_ev_per_atom: np.ndarray | None,
    refined: np.ndarray,
    log_prior: np.ndarray,
    charge_balanced: np.ndarray,
    smact_valid: np.ndarray,
    known_hull_ev_per_atom: np.ndarray,
    known_counts: np.ndarray,
    e_above_predicted_hull_ev_per_atom: np.ndarray,
    substitution_analogues: np.ndarray,
    pattern_analogues: np.ndarray,
    known_set: KnownSetFeatures | None = None,
) -> np.ndarray:
    """The ``(n, len(FEATURE_NAMES))`` feature matrix of a screen's rows (float64).

    ``counts``: reduced count rows over the system; ``known_counts``: the known compounds' rows;
    the analogue counts come from :func:`fh_screen.screening.analogues.analogue_counts`.
    Set features (gap and rank within the element set) are taken over the *new* rows only.
    ``known_set``: :func:`known_set_features` of ``counts`` and ``known_counts``, when the caller
    has it already (a screen's passes share it); computed here otherwise.
    """
    counts = np.asarray(counts, dtype=np.int64)
    n, k = counts.shape if counts.ndim == 2 else (0, 0)
    is_known = np.asarray(is_known, dtype=bool)
    e = np.asarray(e_above_known_hull_ev_per_atom, dtype=np.float64)
    std = np.zeros(n) if dhf_std_ev_per_atom is None else np.nan_to_num(np.asarray(dhf_std_ev_per_atom, dtype=np.float64))
    keys = _element_set_keys(counts) if n else np.zeros(0, dtype=np.int64)
    gap = np.zeros(n)
    rank = np.ones(n)
    new = np.flatnonzero(~is_known)
    if len(new):
        e_new = np.nan_to_num(e[new], nan=np.inf)
        order = np.lexsort((e_new, keys[new]))
        sorted_keys = keys[new][order]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        group = np.cumsum(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]) - 1
        best = e_new[order][starts][group]
        position = np.arange(len(order)) - starts[group] + 1
        gap[new[order]] = e_new[order] - best
        rank[new[order]] = position
    if known_set is None:
        known_set = known_set_features(counts, known_counts)
    elif len(known_set.nearest_known_distance) != n:
        raise ValueError(f"known_set has {len(known_set.nearest_known_distance)} rows for {n} count rows")
    present = counts > 0
    return np.column_stack([
        e,
        np.asarray(dhf_pred_ev_per_atom, dtype=np.float64),
        std,
        np.asarray(refined, dtype=np.float64),
        np.asarray(log_prior, dtype=np.float64),
        np.asarray(charge_balanced, dtype=np.float64),
        np.asarray(smact_valid, dtype=np.float64),
        present.sum(axis=1).astype(np.float64),
        counts.sum(axis=1).astype(np.float64),
        counts.max(axis=1, initial=0).astype(np.float64),
        gap,
        rank,
        known_set.n_known_in_set,
        known_set.n_known_in_subsystems,
        known_set.nearest_known_distance,
        np.asarray(known_hull_ev_per_atom, dtype=np.float64),
        np.asarray(e_above_predicted_hull_ev_per_atom, dtype=np.float64),
        np.asarray(substitution_analogues, dtype=np.float64),
        np.log1p(np.asarray(pattern_analogues, dtype=np.float64)),
    ]) if n else np.zeros((0, len(FEATURE_NAMES)))


# ---------------------------------------------------------------------------- the classifier
@dataclass(frozen=True)
class TreeEnsemble:
    """Gradient-boosted regression trees in flat arrays, evaluated with numpy.

    Node ``i`` of tree ``t`` (``offsets[t] + i`` in the flat arrays) is a leaf when
    ``is_leaf``; otherwise rows with ``x[feature] <= threshold`` go ``left`` (NaN goes where
    ``missing_left`` says) and the others ``right``; children are indices within the tree.
    The raw score is ``baseline + Σ_t value(leaf_t)`` (log-odds for a classifier), found by
    per-feature leaf masks (:class:`_LeafMasks`, about 6× faster than walking the nodes on the
    shipped classifiers) with the walk as the reference and the fallback.
    """

    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    missing_left: np.ndarray
    is_leaf: np.ndarray
    value: np.ndarray
    offsets: np.ndarray
    baseline: float
    max_depth: int

    #: Rows evaluated at once (every tree of a chunk is scored together: memory ∝ rows × trees).
    #: Small, so that a chunk's (row, tree) arrays stay in the CPU's cache: faster than 20,000 rows
    #: at a time, with the same scores bit for bit (``BENCHMARKS.md``, the screen stages); the leaf
    #: masks are about as fast from 500 to 2,000 rows.
    CHUNK_ROWS = 500

    def raw_score(self, x: np.ndarray) -> np.ndarray:
        """``baseline + Σ leaf values`` for each row of ``x`` (``(n, n_features)``).

        By the trees' leaf masks (:class:`_LeafMasks`) when every tree has at most 64 leaves, else
        by :meth:`walk_raw_score`; the two give the same scores bit for bit.
        """
        masks = self._leaf_masks
        if masks is None:
            return self.walk_raw_score(x)
        x = np.asarray(x, dtype=np.float64)
        return self._chunked(x, masks.raw_score)

    def walk_raw_score(self, x: np.ndarray) -> np.ndarray:
        """:meth:`raw_score` by walking every (row, tree) pair from its root to its leaf (the
        reference path, and the one for trees of more than 64 leaves)."""
        return self._chunked(np.asarray(x, dtype=np.float64), self._raw_score)

    def _chunked(self, x: np.ndarray, score) -> np.ndarray:
        """``score`` of ``x`` :attr:`CHUNK_ROWS` rows at a time."""
        if len(x) > self.CHUNK_ROWS:
            return np.concatenate([score(x[i:i + self.CHUNK_ROWS]) for i in range(0, len(x), self.CHUNK_ROWS)])
        return score(x)

    @cached_property
    def _leaf_masks(self) -> _LeafMasks | None:
        """The trees as per-feature leaf-mask tables (built once per ensemble), or None when a tree
        has more than 64 leaves or a threshold is NaN."""
        return _LeafMasks.build(self)

    @cached_property
    def _walk(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Flat tables for the walk: feature, threshold and global children, a leaf pointing at itself.

        A leaf reads feature 0 against +inf and goes "left" to itself, so every row can take the
        same number of steps without asking which nodes are leaves.
        """
        index = np.arange(len(self.feature))
        tree_start = np.repeat(self.offsets, np.diff(np.append(self.offsets, len(self.feature))))
        feature = np.where(self.is_leaf, 0, self.feature)
        threshold = np.where(self.is_leaf, np.inf, self.threshold)
        left = np.where(self.is_leaf, index, self.left + tree_start)
        right = np.where(self.is_leaf, index, self.right + tree_start)
        return feature, threshold, left, right

    def _raw_score(self, x: np.ndarray) -> np.ndarray:
        n = len(x)
        total = np.full(n, self.baseline)
        if n == 0 or len(self.offsets) == 0:
            return total
        feature, threshold, left, right = self._walk
        flat = np.ascontiguousarray(x).ravel()
        n_trees = len(self.offsets)
        # every (row, tree) pair at once, row-major: its node (flat index); only the pairs not yet at
        # a leaf take the next step (most trees end well before the deepest leaf)
        node = np.tile(self.offsets, n)
        active = np.flatnonzero(~self.is_leaf[node])
        current = node[active]
        row_start = (active // n_trees) * x.shape[1]
        has_nan = bool(np.isnan(flat).any())
        while len(active):
            value = flat[row_start + feature[current]]
            go_left = value <= threshold[current]
            if has_nan:
                go_left = np.where(np.isnan(value), self.missing_left[current], go_left)
            current = np.where(go_left, left[current], right[current])
            node[active] = current
            going = ~self.is_leaf[current]
            active, current, row_start = active[going], current[going], row_start[going]
        return total + self.value[node].reshape(n, n_trees).sum(axis=1)

    def to_json(self) -> dict:
        """JSON-ready dict (lists), read back by :meth:`from_json`."""
        return {
            "feature": self.feature.tolist(), "threshold": self.threshold.tolist(), "left": self.left.tolist(),
            "right": self.right.tolist(), "missing_left": self.missing_left.astype(int).tolist(),
            "is_leaf": self.is_leaf.astype(int).tolist(), "value": self.value.tolist(), "offsets": self.offsets.tolist(),
            "baseline": self.baseline, "max_depth": self.max_depth,
        }

    @classmethod
    def from_json(cls, data: dict) -> TreeEnsemble:
        """The ensemble written by :meth:`to_json`."""
        return cls(
            feature=np.asarray(data["feature"], dtype=np.int64), threshold=np.asarray(data["threshold"], dtype=np.float64),
            left=np.asarray(data["left"], dtype=np.int64), right=np.asarray(data["right"], dtype=np.int64),
            missing_left=np.asarray(data["missing_left"], dtype=bool), is_leaf=np.asarray(data["is_leaf"], dtype=bool),
            value=np.asarray(data["value"], dtype=np.float64), offsets=np.asarray(data["offsets"], dtype=np.int64),
            baseline=float(data["baseline"]), max_depth=int(data["max_depth"]),
        )

    @classmethod
    def from_sklearn(cls, model) -> TreeEnsemble:
        """Flatten a fitted binary ``HistGradientBoostingClassifier`` (no categorical features)."""
        features, thresholds, lefts, rights, missing, leaves, values, offsets = [], [], [], [], [], [], [], []
        depth = 0
        start = 0
        for (predictor,) in model._predictors:
            nodes = predictor.nodes
            offsets.append(start)
            features.append(nodes["feature_idx"].astype(np.int64))
            thresholds.append(nodes["num_threshold"].astype(np.float64))
            lefts.append(nodes["left"].astype(np.int64))
            rights.append(nodes["right"].astype(np.int64))
            missing.append(nodes["missing_go_to_left"].astype(bool))
            leaves.append(nodes["is_leaf"].astype(bool))
            values.append(nodes["value"].astype(np.float64))
            depth = max(depth, int(nodes["depth"].max()))
            start += len(nodes)
        baseline = float(np.ravel(model._baseline_prediction)[0])
        return cls(np.concatenate(features), np.concatenate(thresholds), np.concatenate(lefts), np.concatenate(rights),
                   np.concatenate(missing), np.concatenate(leaves), np.concatenate(values),
                   np.asarray(offsets, dtype=np.int64), baseline, depth)


#: Unsigned mask types by the most leaves they hold (a tree of more leaves is walked node by node).
_MASK_TYPES = ((8, np.uint8), (16, np.uint16), (32, np.uint32), (64, np.uint64))


@dataclass(frozen=True)
class _LeafMasks:
    """A :class:`TreeEnsemble` as leaf bitmasks, scored with a few whole-array numpy steps per feature.

    QuickScorer's idea (Lucchese et al., SIGIR 2015): number the leaves of each tree left to right;
    a node whose test a row fails (``x > threshold``: the row goes right) rules out the leaves of
    its left subtree, and the row's leaf is the lowest-numbered leaf that no failed test rules
    out. The nodes testing one feature, sorted by threshold, fail for a row exactly up to the
    first threshold ≥ its value, so the per-tree AND of their masks is one row of a table
    (``np.searchsorted``); a NaN reads the table's last row (the nodes that send it right). Same
    leaves as the walk, so the same scores bit for bit.
    """

    features: tuple[int, ...]
    thresholds: tuple[np.ndarray, ...]  # sorted thresholds of the nodes testing each feature
    tables: tuple[np.ndarray, ...]  # (len(thresholds) + 2, n_trees) masks: first j nodes failed; last: NaN
    values: np.ndarray  # (n_trees, max_leaves) leaf values, left to right (0 beyond a tree's leaves)
    lowest_bit: np.ndarray | None  # index of the lowest set bit of every mask value (8- and 16-bit masks)
    baseline: float

    @classmethod
    def build(cls, trees: TreeEnsemble) -> _LeafMasks | None:
        """The tables of ``trees``; None when it has no tree, a NaN threshold or a tree of more than 64 leaves."""
        n_nodes, n_trees = len(trees.feature), len(trees.offsets)
        if n_trees == 0 or np.isnan(trees.threshold[~trees.is_leaf]).any():
            return None
        n_leaves = np.add.reduceat(trees.is_leaf.astype(np.int64), trees.offsets)
        most = int(n_leaves.max())
        fits = [(bits, dtype) for bits, dtype in _MASK_TYPES if most <= bits]
        if not fits:
            return None
        bits, dtype = fits[0]
        values = np.zeros((n_trees, most))
        left_leaves = np.zeros(n_nodes, dtype=object)  # Python ints: the leaves below each node's left child
        for t, start in enumerate(trees.offsets.tolist()):
            order = _leaves_in_order(trees, start, left_leaves)
            values[t, :len(order)] = trees.value[order]
        everything = (1 << most) - 1
        tree_of = np.repeat(np.arange(n_trees), np.diff(np.append(trees.offsets, n_nodes)))
        internal = np.flatnonzero(~trees.is_leaf)
        features, thresholds, tables = [], [], []
        for f in np.unique(trees.feature[internal]).tolist():
            nodes = internal[trees.feature[internal] == f]
            nodes = nodes[np.argsort(trees.threshold[nodes], kind="stable")]
            current = [everything] * n_trees
            table = np.empty((len(nodes) + 2, n_trees), dtype=dtype)
            table[0] = current
            for j, node in enumerate(nodes.tolist()):
                current[tree_of[node]] &= everything & ~left_leaves[node]
                table[j + 1] = current
            nan_right = [everything] * n_trees
            for node in nodes[~trees.missing_left[nodes]].tolist():
                nan_right[tree_of[node]] &= everything & ~left_leaves[node]
            table[-1] = nan_right
            features.append(int(f))
            thresholds.append(trees.threshold[nodes].copy())
            tables.append(table)
        lowest_bit = None
        if bits <= 16:
            masks = np.arange(1, 1 << bits)
            lowest_bit = np.zeros(1 << bits, dtype=np.intp)
            lowest_bit[1:] = np.frexp((masks & -masks).astype(np.float64))[1] - 1
        return cls(tuple(features), tuple(thresholds), tuple(tables), values, lowest_bit, trees.baseline)

    def raw_score(self, x: np.ndarray) -> np.ndarray:
        """``baseline + Σ leaf values`` of each row of ``x`` (``(n, n_features)`` float64)."""
        n_trees, most = self.values.shape
        mask = None
        for f, thresholds, table in zip(self.features, self.thresholds, self.tables):
            value = x[:, f]
            at = np.searchsorted(thresholds, value, side="left")  # the nodes with threshold < value fail
            nan = np.isnan(value)
            if nan.any():
                at[nan] = len(table) - 1
            if mask is None:
                mask = table[at]
            else:
                mask &= table[at]
        if mask is None:  # no tree tests anything: every row ends at each tree's only leaf
            mask = np.ones((len(x), n_trees), dtype=np.uint8)
        if self.lowest_bit is not None:
            leaf = self.lowest_bit[mask]
        else:
            lowest = mask & (~mask + mask.dtype.type(1))  # the lowest set bit alone, a power of 2
            leaf = np.frexp(lowest.astype(np.float64))[1] - 1
        return self.baseline + self.values.ravel()[leaf + np.arange(n_trees) * most].sum(axis=1)


def _leaves_in_order(trees: TreeEnsemble, start: int, left_leaves: np.ndarray) -> list[int]:
    """Global indices of the leaves of the tree at ``start``, left to right; fills ``left_leaves``
    (bit ``i``: leaf ``i`` of the tree) of its internal nodes."""
    order: list[int] = []

    def visit(node: int) -> int:
        if trees.is_leaf[node]:
            order.append(node)
            return 1 << (len(order) - 1)
        below_left = visit(start + int(trees.left[node]))
        left_leaves[node] = below_left
        return below_left | visit(start + int(trees.right[node]))

    visit(start)
    return order


@dataclass(frozen=True)
class StabilityModel:
    """Features → ``p_stable``: a tree ensemble's log-odds plus a fixed log-odds shift.

    ``log_odds_shift`` moves the fitted probabilities from the fitting protocol's share of
    labelled hidden compounds to the one the probability is stated for (``docs/claims.md``).
    """

    trees: TreeEnsemble
    feature_names: tuple[str, ...]
    log_odds_shift: float = 0.0
    metadata: dict = field(default_factory=dict)

    def p_stable(self, features: np.ndarray) -> np.ndarray:
        """Probability of each feature row (``(n, len(feature_names))``)."""
        from scipy.special import expit

        return expit(self.trees.raw_score(features) + self.log_odds_shift)

    @property
    def identity(self) -> str:
        """``name@version`` of the classifier (its card's)."""
        return f"{self.metadata.get('name', 'stability')}@{self.metadata.get('version', 0)}"

    def to_json(self) -> dict:
        """JSON-ready dict (the shipped file's format)."""
        return {"feature_names": list(self.feature_names), "log_odds_shift": self.log_odds_shift,
                "metadata": self.metadata, "trees": self.trees.to_json()}

    @classmethod
    def from_json(cls, data: dict) -> StabilityModel:
        """The model written by :meth:`to_json`."""
        names = tuple(data["feature_names"])
        if names != FEATURE_NAMES:
            raise ValueError(f"stability model features {names} do not match this version's {FEATURE_NAMES}")
        return cls(TreeEnsemble.from_json(data["trees"]), names, float(data.get("log_odds_shift", 0.0)),
                   dict(data.get("metadata", {})))


@lru_cache(maxsize=4)
def load_stability_model(path: str | Path = STABILITY_MODEL_PATH) -> StabilityModel | None:
    """The classifier at ``path`` (the shipped one by default); None when the file is absent.

    A screen given a path reads it with :func:`read_stability_model`, which refuses a missing or bad file.
    """
    path = Path(path)
    if not path.exists():
        return None
    return StabilityModel.from_json(json.loads(path.read_text()))


def read_stability_model(path: str | Path) -> StabilityModel:
    """The classifier at ``path``; a missing, unreadable or malformed file raises ``ValueError`` with one
    line naming the file and what is wrong (:class:`~fh_screen.screening.options.ScreenError` at the doors)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"no P(stable) classifier at {path}: "
                         f"{'it is a folder' if path.is_dir() else 'no such file'} (give a classifier JSON file, "
                         f"as scripts/build_stability_model.py writes)")
    try:
        model = load_stability_model(path)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        what = f"missing field {exc}" if isinstance(exc, KeyError) else " ".join(str(exc).split())[:200]
        raise ValueError(f"not a P(stable) classifier file: {path} ({what})") from None
    if model is None:  # pragma: no cover - removed between the two checks
        raise ValueError(f"no P(stable) classifier at {path}")
    return model


def known_p_stable(e_above_known_hull_ev_per_atom: np.ndarray, tolerance_ev_per_atom: float = 1e-3) -> np.ndarray:
    """``p_stable`` of known compositions: 1 on the known hull (within 1 meV/atom), else 0."""
    e = np.asarray(e_above_known_hull_ev_per_atom, dtype=np.float64)
    return (np.nan_to_num(e, nan=math.inf) <= tolerance_ev_per_atom).astype(np.float64)
