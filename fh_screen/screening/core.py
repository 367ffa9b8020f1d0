"""Screen a chemical system: enumerate candidates, predict ΔH_f, place them on the hull, rank.

One call does the product's main job::

    from fh_screen.screening.core import screen
    result = screen("Li-Fe-P-O", known=reference_frame)   # known: formula, dhf_ev_per_atom
    result.table.head()                                  # ranked pandas DataFrame
    result.records()                                     # JSON-ready dicts

Known compositions enter the hull at their DFT values only (a prediction never replaces one),
and every composition is placed against the hull of the **known** phases:
``e_above_hull_pred_ev_per_atom`` is the DFT ΔH_f minus that hull for a known composition (0 for
a known ground state) and the predicted ΔH_f minus that hull for a new one (negative: predicted
below the known hull). New candidates are ranked by ``p_stable``, the calibrated P(on or below the
known hull) of the shipped classifier (:mod:`fh_screen.screening.stability`, ``docs/claims.md``),
then by ``stability_score`` (:mod:`fh_screen.screening.probability`). ``selected`` marks the short
list (:func:`fh_screen.screening.selection.selection_mask`). Under the cascade (a slow model) the
fast prefilter predicts every row and the slow model the known ones, the prefilter's best and the
head of the P(stable) order with the short list. Without known entries (a fresh machine) the hull
is that of the elements.

The hull's cost is bounded in any dimension (:func:`fh_screen.chem.hull.hull_energies`: qhull per
subsystem of at most :data:`fh_screen.chem.hull.QHULL_MAX_ELEMENTS` elements, a linear programme per
larger candidate) and :func:`check_size` refuses, before any work, an enumeration above
``max_candidates`` or one needing more than :data:`MAX_HULL_PROGRAMMES` programmes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from fh_screen.chem.candidates import count_candidates, enumerate_counts, formulas_from_counts, parse_chemsys, reduce_counts
from fh_screen.chem.formula import ELEMENTS_ABSENT_FROM_OQMD, reduced_formula, whole_amounts
from fh_screen.chem.hull import QHULL_MAX_ELEMENTS, hull_energies, lower_hull_energies, probability_within
from fh_screen.chem.oxidation import charge_balanced
from fh_screen.run_ids import new_run_id
from fh_screen.screening.analogues import AnalogueIndex, analogue_counts, load_analogue_index
from fh_screen.screening.options import NO_STABILITY_MODEL, ScreenError, ScreenOptions
from fh_screen.screening.probability import log_prior, stability_score
from fh_screen.screening.result import ScreenResult
from fh_screen.screening.selection import selection_mask
from fh_screen.screening.stability import (
    STABILITY_HEAD_MODEL_PATH,
    StabilityModel,
    KnownSetFeatures,
    candidate_features,
    known_p_stable,
    known_set_features,
    load_stability_model,
    read_stability_model,
    smact_valid_mask,
)

if TYPE_CHECKING:
    from fh_screen.models.predictor import Predictor

logger = logging.getLogger(__name__)

__all__ = [
    "MAX_HULL_PROGRAMMES",
    "NO_KNOWN_COMPOUND",
    "candidates_by_size",
    "check_size",
    "hull_programmes",
    "known_counts",
    "screen",
    "stability_classifier",
    "table_order",
]


def _lowest_sources(known: pd.DataFrame) -> dict[tuple, str | None]:
    """The ``source`` of each known composition's lowest entry (the value it stands at), by
    :func:`_composition_key` (``Fe0.4O0.6`` is ``Fe2O3``, as :func:`known_counts` reads it).

    A composition computed by several sources (``oqmd`` and ``chgnet``) stands at its lowest
    value, as :func:`known_counts` keeps it; that entry's source is the one shown.
    """
    lowest: dict[tuple, tuple[float, str | None]] = {}
    values = pd.to_numeric(known["dhf_ev_per_atom"], errors="coerce")
    for formula, value, source in zip(known["formula"].astype(str), values, known["source"]):
        if not math.isfinite(value):
            continue
        key = _composition_key(formula)
        if key is None:
            continue
        if key not in lowest or value < lowest[key][0]:
            lowest[key] = (float(value), None if source is None or source != source else str(source))
    return {key: source for key, (_, source) in lowest.items()}


def mixed_sources_note(known: pd.DataFrame, anchor_source: str = "oqmd") -> str:
    """A line when the hull mixes methods: compositions whose ``anchor_source`` (OQMD) value is
    replaced by a lower one of another source (a CHGNet or user value), else ``""``.

    The hull takes each composition's lowest value; a value of another method below OQMD's moves
    the hull, and with it every OQMD phase measured against it. That is a choice (docs/store.md),
    so a screen says when it happened.
    """
    values = pd.to_numeric(known["dhf_ev_per_atom"], errors="coerce")
    anchor: dict[tuple, float] = {}
    other: dict[tuple, tuple[float, str]] = {}
    for formula, value, source in zip(known["formula"].astype(str), values, known["source"]):
        if not math.isfinite(value) or source is None or source != source:
            continue
        key = _composition_key(formula)
        if key is None:
            continue
        if str(source) == anchor_source:
            anchor[key] = min(float(value), anchor.get(key, math.inf))
        elif key not in other or value < other[key][0]:
            other[key] = (float(value), str(source))
    replaced = sorted((_key_formula(k), *other[k], anchor[k]) for k in anchor if k in other and other[k][0] < anchor[k])
    if not replaced:
        return ""
    shown = ", ".join(f"{f} {src} {v:.3f} < {anchor_source} {a:.3f}" for f, v, src, a in replaced[:3])
    more = f" and {len(replaced) - 3} more" if len(replaced) > 3 else ""
    return (f"methods mix on this hull: {len(replaced)} composition(s) stand at another source's value below "
            f"{anchor_source}'s ({shown}{more}); --sources {anchor_source} (sources='{anchor_source}') keeps "
            f"{anchor_source}'s alone")


def _key_formula(key: tuple[tuple[str, int], ...]) -> str:
    """The reduced formula of a :func:`_composition_key`."""
    return reduced_formula("".join(f"{element}{n}" for element, n in key))


def _composition_key(formula: str) -> tuple[tuple[str, int], ...] | None:
    """One key per composition, as :func:`known_counts` reads a formula (``Fe0.4O0.6``, ``Fe4O6`` and
    ``Fe2O3`` share one); None for a formula that cannot be read."""
    amounts = whole_amounts(formula)
    return None if amounts is None else tuple(sorted(amounts.items()))


def known_counts(known: pd.DataFrame | None, chemsys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Reduced count rows (over ``chemsys``) and lowest ΔH_f of the known compounds of the system.

    Rows with an element outside the system, a single element (elements are 0 by definition),
    a missing value or an unparsable formula are skipped. Returns ``(counts (m, k), dhf (m,))``
    with one row per composition.
    """
    k = len(chemsys)
    if known is None or len(known) == 0:
        return np.zeros((0, k), dtype=np.int64), np.zeros(0)
    missing = [c for c in ("formula", "dhf_ev_per_atom") if c not in known.columns]
    if missing:
        raise ScreenError(f"known entries need columns formula and dhf_ev_per_atom (missing {', '.join(missing)})")
    index = {s: j for j, s in enumerate(chemsys)}
    rows, values = [], []
    for formula, dhf in zip(known["formula"].astype(str), pd.to_numeric(known["dhf_ev_per_atom"], errors="coerce")):
        if not math.isfinite(dhf):
            continue
        amounts = whole_amounts(formula)
        if amounts is None or len(amounts) < 2 or any(s not in index for s in amounts):
            continue
        row = [0] * k
        for s, n in amounts.items():
            row[index[s]] = n
        rows.append(row)
        values.append(float(dhf))
    if not rows:
        return np.zeros((0, k), dtype=np.int64), np.zeros(0)
    counts = reduce_counts(np.array(rows, dtype=np.int64))
    values = np.array(values)
    unique, inverse = np.unique(counts, axis=0, return_inverse=True)
    lowest = np.full(len(unique), np.inf)
    np.minimum.at(lowest, inverse.reshape(-1), values)
    return unique, lowest


def _row_keys(*arrays: np.ndarray) -> list[np.ndarray] | None:
    """One int64 per row of non-negative count arrays, ordered as the rows sort lexicographically.

    None when the counts are too large to pack into 62 bits (callers then compare whole rows).
    """
    width = max(arrays[0].shape[1], 1)
    base = int(max(int(np.max(a, initial=0)) for a in arrays)) + 1
    if width * np.log2(base) >= 62 or any(np.min(a, initial=0) < 0 for a in arrays):
        return None
    weights = base ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return [np.asarray(a, dtype=np.int64).reshape(-1, width) @ weights for a in arrays]


def _unique_rows(rows: np.ndarray) -> np.ndarray:
    """``np.unique(rows, axis=0)`` (sorted unique rows), through packed row keys when they fit."""
    keys = _row_keys(rows)
    if keys is None:
        return np.unique(rows, axis=0)
    _, first = np.unique(keys[0], return_index=True)
    return rows[first]


def _match(rows: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Index in ``table`` of each row of ``rows`` (-1 where absent); rows of both are unique."""
    if len(table) == 0 or len(rows) == 0:
        return np.full(len(rows), -1, dtype=np.int64)
    width = max(rows.shape[1], 1)
    rows = np.asarray(rows, dtype=np.int64).reshape(-1, width)
    table = np.asarray(table, dtype=np.int64).reshape(-1, width)
    keys = _row_keys(rows, table)
    if keys is None:
        both = np.concatenate([rows, table])
        _, inverse = np.unique(both, axis=0, return_inverse=True)
        keys = [inverse.reshape(-1)[: len(rows)], inverse.reshape(-1)[len(rows) :]]
    row_keys, table_keys = keys
    order = np.argsort(table_keys, kind="stable")
    position = np.clip(np.searchsorted(table_keys[order], row_keys), 0, len(table) - 1)
    found = table_keys[order][position] == row_keys
    return np.where(found, order[position], -1)


#: Most hull linear programmes a screen runs without ``force``: one per candidate with more than
#: :data:`fh_screen.chem.hull.QHULL_MAX_ELEMENTS` elements, each 10–15 ms on 2 shared cores
#: (``benchmarks/bench_hull.py``), so the programmes of any accepted screen take about a minute at most.
MAX_HULL_PROGRAMMES = 5_000
#: Seconds per hull linear programme used in the refusal message (measured, see above).
SECONDS_PER_HULL_PROGRAMME = 0.012


def candidates_by_size(k: int, max_atoms: int, max_per_element: int | None = None) -> list[int]:
    """Candidates of a ``k``-element system with exactly ``j`` elements present, for ``j = 0..k``.

    Inclusion–exclusion over :func:`count_candidates` (exact, no enumeration).
    """
    totals = [0, 1] + [count_candidates(i, max_atoms, max_per_element) + i for i in range(2, k + 1)]
    exact = [sum((-1) ** (j - i) * math.comb(j, i) * totals[i] for i in range(j + 1)) for j in range(k + 1)]
    exact[1] = 0
    return [math.comb(k, j) * exact[j] for j in range(k + 1)]


def hull_programmes(k: int, max_atoms: int, max_per_element: int | None = None) -> int:
    """Linear programmes :func:`fh_screen.chem.hull.hull_energies` runs for a full enumeration."""
    return sum(candidates_by_size(k, max_atoms, max_per_element)[QHULL_MAX_ELEMENTS + 1 :])


def _fits(k: int, max_atoms: int, options: ScreenOptions) -> bool:
    return (count_candidates(k, max_atoms, options.max_per_element) <= options.max_candidates
            and hull_programmes(k, max_atoms, options.max_per_element) <= MAX_HULL_PROGRAMMES)


def _suggest_max_atoms(k: int, options: ScreenOptions) -> int:
    best = 2
    for n in range(2, options.max_atoms + 1):
        if _fits(k, n, options):
            best = n
    return best


def _size_advice(max_atoms: int) -> str:
    """How to get past a size limit, named for the Python doors and the CLI alike."""
    return f"use max_atoms={max_atoms} (--max-atoms {max_atoms}) or force=True (--force)"


def check_size(system: Sequence[str], options: ScreenOptions = ScreenOptions()) -> int:
    """Number of candidates the enumeration will give (exact, without enumerating).

    Raises :class:`ScreenError` with a hint (a ``max_atoms`` that fits, or ``--force``) when it
    is above ``options.max_candidates``, or when the hull would need more than
    :data:`MAX_HULL_PROGRAMMES` linear programmes (candidates with more than
    :data:`fh_screen.chem.hull.QHULL_MAX_ELEMENTS` elements), and ``options.force`` is not set.
    Within both limits a screen's cost is bounded (see ``docs/evaluation.md``).
    """
    k = len(system)
    estimate = count_candidates(k, options.max_atoms, options.max_per_element)
    if options.force:
        return estimate
    name = "-".join(system)
    if estimate > options.max_candidates:
        suggestion = _suggest_max_atoms(k, options)
        raise ScreenError(
            f"{name} at max_atoms={options.max_atoms} gives {estimate:,} candidates, above the limit of "
            f"{options.max_candidates:,}: {_size_advice(suggestion)}"
        )
    programmes = hull_programmes(k, options.max_atoms, options.max_per_element)
    if programmes > MAX_HULL_PROGRAMMES:
        suggestion = _suggest_max_atoms(k, options)
        raise ScreenError(
            f"{name} at max_atoms={options.max_atoms} has {programmes:,} candidates with more than {QHULL_MAX_ELEMENTS} elements, "
            f"each a linear programme on the hull (about {programmes * SECONDS_PER_HULL_PROGRAMME / 60:.0f} min; the limit is "
            f"{MAX_HULL_PROGRAMMES:,}): {_size_advice(suggestion)}"
        )
    return estimate


def screen(
    chemsys: str | Sequence[str],
    *,
    predictor: Predictor | None = None,
    known: pd.DataFrame | None = None,
    options: ScreenOptions = ScreenOptions(),
    progress: Callable[[str], None] | None = None,
    analogues: AnalogueIndex | None = None,
) -> ScreenResult:
    """Rank every candidate composition of ``chemsys`` (and its subsystems) by predicted stability.

    ``known``: DataFrame with ``formula`` and ``dhf_ev_per_atom`` (OQMD entries of the system;
    other rows are ignored). ``progress`` is called with a short label before each stage.
    ``analogues``: the known compositions whose chemical analogues P(stable) counts (default:
    the shipped index of the OQMD training file, :mod:`fh_screen.screening.analogues`).
    Raises :class:`ChemsysError`/:class:`ScreenError` (one line) for bad input or an
    enumeration above ``options.max_candidates`` without ``options.force``.
    """
    # numpy's BLAS threads (OpenBLAS) busy-wait after each call and would take the cores that the
    # model's torch threads need next (a warm quaternary screen 1.4× faster: bench_screen_stages.py); the
    # screen's own matrix products are small, so they run on one thread
    with _blas_controller().limit(limits=1, user_api="blas"):
        return _screen(chemsys, predictor=predictor, known=known, options=options, progress=progress,
                       analogues=analogues)


@lru_cache(maxsize=1)
def _blas_controller():
    """threadpoolctl's view of the loaded BLAS libraries, made once (finding them costs ~2.5 ms a screen)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _screen(chemsys: str | Sequence[str], *, predictor: Predictor | None, known: pd.DataFrame | None,
            options: ScreenOptions, progress: Callable[[str], None] | None,
            analogues: AnalogueIndex | None = None) -> ScreenResult:
    """The body of :func:`screen`."""
    from fh_screen.models.predictor import Predictor

    step = progress or (lambda label: None)
    if not isinstance(options, ScreenOptions):
        raise ScreenError(f"options must be ScreenOptions (ScreenOptions.from_mapping for a dict), got {type(options).__name__}")
    options.validate()
    if predictor is None:
        predictor = Predictor.from_name(None)
    system = parse_chemsys(chemsys, predictor.elements)
    k = len(system)
    warnings = []
    unseen = sorted(set(system) & ELEMENTS_ABSENT_FROM_OQMD)
    if unseen:
        warnings.append(f"{', '.join(unseen)} never occur in the OQMD training data: predictions are extrapolations")

    estimate = check_size(system, options)

    step(f"enumerating {estimate:,} candidates")
    counts = enumerate_counts(k, options.max_atoms, options.max_per_element).astype(np.int64)
    if options.charge_neutral:
        counts = counts[charge_balanced(counts, system)]
    known_rows, known_dhf = known_counts(known, system)
    if not len(known_rows):
        warnings.append(_no_known_phases_note(system, known))
    if options.include_known and len(known_rows):
        counts = _unique_rows(np.concatenate([counts, known_rows]))
    elif len(known_rows):
        counts = counts[_match(counts, known_rows) < 0]
    known_index = _match(counts, known_rows)
    is_known = known_index >= 0
    balanced = charge_balanced(counts, system) if len(counts) else np.zeros(0, dtype=bool)

    cand_fractions = counts / counts.sum(axis=1, keepdims=True) if len(counts) else np.zeros((0, k))
    known_fractions = known_rows / known_rows.sum(axis=1, keepdims=True) if len(known_rows) else np.zeros((0, k))
    below = hull_energies(system, known_fractions, known_dhf, cand_fractions)
    prior = log_prior(counts, balanced, system)
    dhf_pred, std, refined, prefilter = _predict_stage(predictor, counts, system, is_known, below.energy_ev_per_atom,
                                                       prior, options, step)

    step("placing candidates against the hull of the known phases")
    known_value = np.where(is_known, known_dhf[np.maximum(known_index, 0)] if len(known_dhf) else np.nan, np.nan)
    index = analogues if analogues is not None else load_analogue_index()
    substitutions, patterns = analogue_counts(counts, system, index)
    smact = smact_valid_mask(counts, system)
    known_set = known_set_features(counts, known_rows)  # the same on every pass below
    classifier = stability_classifier(options)

    def place() -> _Placement:
        return _place(counts, system, is_known=is_known, known_value=known_value, dhf_pred=dhf_pred, std=std,
                      refined=refined, prior=prior, balanced=balanced, below_energy=below.energy_ev_per_atom,
                      cand_fractions=cand_fractions, known_rows=known_rows, known_fractions=known_fractions,
                      known_dhf=known_dhf, substitutions=substitutions, patterns=patterns, smact=smact,
                      known_set=known_set)

    def refine(rows: np.ndarray, why: str) -> None:
        step(f"predicting {len(rows):,} more ({why}) with {predictor.name}@{predictor.version}")
        second = predictor.predict_counts(counts[rows], system)
        dhf_pred[rows] = second.dhf_ev_per_atom
        if std is not None and second.dhf_std_ev_per_atom is not None:
            std[rows] = second.dhf_std_ev_per_atom
        refined[rows] = True

    step("P(stable) of every candidate")
    placed = place()
    # the cascade refined the prefilter's best by its score; P(stable) reads more than that score,
    # so the head of a P(stable) order gets the screen's model too. A fixed classifier picks that
    # head (the one the shipped classifier's examples were made with), so the rows refined here
    # are the rows refined when the classifier was fitted
    picker = (load_stability_model(STABILITY_HEAD_MODEL_PATH) or classifier) if prefilter is not None else None
    if picker is not None:
        picked = _score(picker, placed, is_known, options)
        for _ in range(MAX_HEAD_PASSES):
            head = _unrefined_head(picked, is_known, refined, options.refine_top)
            if not len(head):
                break
            refine(head, "the head of the P(stable) order")
            previous, placed = placed, place()
            picked = _score(picker, placed, is_known, options, previous=(previous, picked))
        scored = picked if picker is classifier else _score(classifier, placed, is_known, options)
        for _ in range(MAX_HEAD_PASSES if classifier is not None else 0):  # a short list never stands on the prefilter alone
            stray = np.flatnonzero(scored.selected & ~refined)
            if not len(stray):
                break
            refine(stray, "selected")
            previous, placed = placed, place()
            scored = _score(classifier, placed, is_known, options, previous=(previous, scored))
    else:
        scored = _score(classifier, placed, is_known, options)
    e_known, dhf_used, features = placed.e_known, placed.dhf_used, placed.features

    step("naming phases and decompositions")
    formulas = formulas_from_counts(counts, system)
    known_formulas = formulas_from_counts(known_rows, system)
    names = list(system) + known_formulas
    decompositions = below.formatted(names)

    table = pd.DataFrame(
        {
            "formula": formulas,
            "dhf_pred_ev_per_atom": dhf_pred,
            "e_above_hull_pred_ev_per_atom": e_known,
            "known_dhf_ev_per_atom": known_value,
            "decomposition": decompositions,
        }
    )
    if std is not None:
        table["dhf_std_ev_per_atom"] = std  # NaN: a row of a prefilter without σ (null in the exports)
        std = np.nan_to_num(std, nan=0.0)  # what P(stable) and the score were fitted with on those rows
    table["p_stable"] = scored.p_stable
    table["is_known"] = is_known
    table["dhf_ev_per_atom"] = dhf_used
    table["charge_balanced"] = balanced
    spread = None if std is None else np.where(is_known, 0.0, std)
    table["stability_score"] = stability_score(e_known, spread, prior)
    table["selected"] = scored.selected
    table["refined"] = refined
    hull_sources = None
    if known is not None and "source" in known.columns:  # entries from the store: which source each known value is
        lowest = _lowest_sources(known)
        table["known_source"] = [lowest.get(_composition_key(f)) if k else None for f, k in zip(formulas, is_known)]
        # what the hull stood on, whether or not the table keeps the known rows (--exclude-known)
        hull_sources = sorted({s for f in known_formulas if (s := lowest.get(_composition_key(f))) is not None})
        mixed = mixed_sources_note(known)
        if mixed:
            warnings.append(mixed)
    if hull_sources is None and not known_formulas:  # no known compound shaped the hull: it stood on no source
        hull_sources = []
    order = table_order(table)
    table = table.iloc[order]
    features = features[order]
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    table = table.reset_index(drop=True)

    n_known = len(known_rows)
    new_below = np.flatnonzero(~is_known & (e_known < 0))
    phase_diagram_inputs = (
        known_formulas + [formulas[i] for i in new_below],
        np.concatenate([known_dhf, dhf_pred[new_below]]).tolist(),
        ["known"] * n_known + ["predicted"] * len(new_below),
    )
    return ScreenResult(
        chemsys=system,
        table=table,
        phase_diagram_inputs=phase_diagram_inputs,
        n_candidates=len(counts),
        model_name=predictor.name,
        model_version=predictor.version,
        weights_sha256=predictor.weights_sha256,
        run_id=new_run_id(),
        n_known=n_known,
        warnings=warnings,
        prefilter=prefilter,
        features=features,
        stability_model=None if classifier is None else classifier.identity,
        stability_head_model=None if picker is None else picker.identity,
        hull_sources=hull_sources,
    )


#: The start of the note a screen without a known compound of its system gives.
NO_KNOWN_COMPOUND = "no known compound of "


def _no_known_phases_note(system: tuple[str, ...], known: pd.DataFrame | None) -> str:
    """One line: the screen has no known compound of ``system``, so its hull is the elements alone."""
    label = "-".join(system)
    if known is None:
        return (f"{NO_KNOWN_COMPOUND}{label} (known=None): the hull is the pure elements alone and every composition "
                f"counts as new; pass known=DataFrame(formula, dhf_ev_per_atom), or screen with fh_screen.screen, "
                f"which reads the known phases from the store")
    return (f"{NO_KNOWN_COMPOUND}{label} in the known phases given: the hull is the pure elements alone and every "
            f"composition counts as new")


def table_order(table: pd.DataFrame) -> np.ndarray:
    """Row order of a screen table: new candidates first, by ``p_stable`` (high first), then
    stability score (high first), energy above the known hull (low first) and formula; then the
    known compositions in the same order; NaNs last within each key.

    The same order as ``table.sort_values(["is_known", "p_stable", "stability_score",
    "e_above_hull_pred_ev_per_atom", "formula"], ascending=[True, False, False, True, True])``, by
    one ``np.lexsort`` (formulas compared as NumPy strings).
    """
    from numpy.dtypes import StringDType

    score = table["stability_score"].to_numpy(np.float64)
    e_hull = table["e_above_hull_pred_ev_per_atom"].to_numpy(np.float64)
    p = table["p_stable"].to_numpy(np.float64) if "p_stable" in table else np.full(len(table), np.nan)
    formulas = np.asarray(table["formula"].tolist(), dtype=StringDType())
    return np.lexsort((formulas, np.nan_to_num(e_hull, nan=np.inf), np.isnan(e_hull),
                       -np.nan_to_num(score, nan=-np.inf), np.isnan(score),
                       -np.nan_to_num(p, nan=-np.inf), np.isnan(p), table["is_known"].to_numpy(bool)))


#: Most passes that refine the head of the P(stable) order under the cascade, and then the short
#: list (each refines at least one row more; one or two suffice in practice).
MAX_HEAD_PASSES = 4


@dataclass(frozen=True)
class _Placement:
    """Every row against the known hull, and its P(stable) features, for one set of predictions."""

    e_known: np.ndarray
    dhf_used: np.ndarray
    dhf_pred: np.ndarray
    std0: np.ndarray | None
    features: np.ndarray


@dataclass(frozen=True)
class _Scores:
    """``p_stable`` and ``selected`` of every row by one classifier."""

    p_stable: np.ndarray
    selected: np.ndarray


def _place(counts: np.ndarray, system: tuple[str, ...], *, is_known: np.ndarray, known_value: np.ndarray,
           dhf_pred: np.ndarray, std: np.ndarray | None, refined: np.ndarray, prior: np.ndarray,
           balanced: np.ndarray, below_energy: np.ndarray, cand_fractions: np.ndarray, known_rows: np.ndarray,
           known_fractions: np.ndarray, known_dhf: np.ndarray, substitutions: np.ndarray, patterns: np.ndarray,
           smact: np.ndarray, known_set: KnownSetFeatures) -> _Placement:
    """Place every row against the known hull and compute its P(stable) features (copies of the inputs;
    ``known_set``: :func:`~fh_screen.screening.stability.known_set_features` of ``counts``, shared by the passes)."""
    # a known composition stands at its DFT value, a new one at its prediction
    dhf_used = np.where(is_known, known_value, dhf_pred)
    e_known = dhf_used - below_energy
    e_known[np.abs(e_known) < 1e-9] = 0.0
    std0 = None if std is None else np.nan_to_num(std, nan=0.0)  # what P(stable) was fitted with on prefilter rows
    features = candidate_features(
        counts, is_known=is_known, e_above_known_hull_ev_per_atom=e_known, dhf_pred_ev_per_atom=dhf_pred,
        dhf_std_ev_per_atom=std0, refined=refined, log_prior=prior, charge_balanced=balanced,
        smact_valid=smact, known_hull_ev_per_atom=below_energy,
        known_counts=known_rows,
        e_above_predicted_hull_ev_per_atom=_e_above_predicted_hull(system, cand_fractions, dhf_used, e_known, is_known,
                                                                   known_fractions, known_dhf),
        substitution_analogues=substitutions, pattern_analogues=patterns, known_set=known_set)
    return _Placement(e_known=e_known, dhf_used=dhf_used, dhf_pred=dhf_pred.copy(), std0=std0, features=features)


def _score(classifier: StabilityModel | None, placed: _Placement, is_known: np.ndarray, options: ScreenOptions,
           previous: tuple[_Placement, _Scores] | None = None) -> _Scores:
    """``p_stable`` and ``selected`` of every row of ``placed`` by ``classifier``.

    With the ``previous`` placement and scores of the same screen by the same classifier, only
    the rows whose features changed are scored again (the same numbers, a fraction of the work).
    """
    if previous is not None and classifier is not None:
        before, scores = previous
        p = known_p_stable(placed.e_known)
        same = ((placed.features == before.features) | (np.isnan(placed.features) & np.isnan(before.features))).all(axis=1)
        new = ~np.asarray(is_known, dtype=bool)
        p[new & same] = scores.p_stable[new & same]
        rescore = new & ~same
        if rescore.any():
            p[rescore] = classifier.p_stable(placed.features[rescore])
    else:
        p = _p_stable(classifier, placed.features, is_known, placed.e_known, placed.std0, options)
    frame = pd.DataFrame({"is_known": is_known, "p_stable": p, "dhf_pred_ev_per_atom": placed.dhf_pred,
                          "e_above_hull_pred_ev_per_atom": placed.e_known})
    return _Scores(p_stable=p, selected=selection_mask(frame, options))


def _unrefined_head(scores: _Scores, is_known: np.ndarray, refined: np.ndarray, size: int) -> np.ndarray:
    """Rows of the P(stable) head (the ``size`` new rows of highest ``p_stable``, and the short
    list) that the screen's own model has not predicted yet."""
    new = np.flatnonzero(~is_known)
    p = np.nan_to_num(scores.p_stable[new], nan=0.0)
    head = np.zeros(len(is_known), dtype=bool)
    head[new[np.argsort(-p, kind="stable")[:size]]] = True
    head |= scores.selected
    return np.flatnonzero(head & ~refined)


def stability_classifier(options: ScreenOptions) -> StabilityModel | None:
    """The P(stable) classifier of a screen's options: the shipped one, the file ``options.stability_model``
    names (a bad one is a one-line :class:`ScreenError`), or None for ``"none"`` (the σ-only fallback)."""
    if options.stability_model == NO_STABILITY_MODEL:
        return None
    if options.stability_model:
        try:
            return read_stability_model(options.stability_model)
        except ValueError as exc:  # the file changed since the options were made
            raise ScreenError(f"stability_model: {exc}") from None
    return load_stability_model()


def _p_stable(model: StabilityModel | None, features: np.ndarray, is_known: np.ndarray, e_known: np.ndarray,
              std: np.ndarray | None, options: ScreenOptions) -> np.ndarray:
    """``p_stable`` of every row: the shipped classifier for new rows (:mod:`fh_screen.screening.stability`),
    1/0 for known rows on/above the known hull.

    Without a classifier file (only while one is being built) new rows fall back to the σ-only
    ``P(E_hull < tolerance)``, NaN for a single network.
    """
    p = known_p_stable(e_known)
    new = ~np.asarray(is_known, dtype=bool)
    if model is not None:
        p[new] = model.p_stable(features[new])
    elif std is not None:
        p[new] = probability_within(e_known[new], std[new], options.e_hull_tolerance_ev_per_atom)
    else:
        p[new] = np.nan
    return p


def _e_above_predicted_hull(system: tuple[str, ...], fractions: np.ndarray, dhf_used: np.ndarray, e_known: np.ndarray,
                            is_known: np.ndarray, known_fractions: np.ndarray, known_dhf: np.ndarray) -> np.ndarray:
    """Energy of each row above the hull of the known phases and of every new candidate predicted
    below them (0 on that hull): the competition among the predictions themselves.

    Only rows below the known hull can be vertices of that hull, so it is one small qhull per
    subsystem (:func:`fh_screen.hull.hull_energies`).
    """
    below = np.flatnonzero(~is_known & (e_known < 0))
    if len(fractions) == 0:
        return np.zeros(0)
    points = np.concatenate([known_fractions, fractions[below]])
    energies = np.concatenate([known_dhf, dhf_used[below]])
    e = dhf_used - lower_hull_energies(system, points, energies, fractions)
    e[np.abs(e) < 1e-9] = 0.0
    return e


def _predict_stage(predictor: Predictor, counts: np.ndarray, system: tuple[str, ...], is_known: np.ndarray,
                   hull_ev_per_atom: np.ndarray, prior: np.ndarray, options: ScreenOptions, step) -> tuple:
    """ΔH_f and σ of every candidate, which rows the screen's model predicted, and the prefilter used.

    A fast model (a fully connected network) predicts everything. A slow one (attention) predicts
    every known composition and the ``options.refine_top`` new candidates that the fast
    ``options.prefilter_model`` ranks best by the screen's own score; the others keep the
    prefilter's values, and σ is NaN where the prefilter has none (one network).
    """
    from fh_screen.models.predictor import Predictor

    n = len(counts)
    refined = np.ones(n, dtype=bool)
    if n == 0:
        return np.zeros(0), None, refined, None
    n_new = int((~is_known).sum())
    slow = bool(getattr(predictor, "is_slow", False))  # any object with predict_counts serves
    cascade = (options.refine_top is not None and slow and n_new > options.refine_top
               and options.prefilter_model != predictor.name)
    if not cascade:
        step(f"predicting {n:,} candidates with {predictor.name}@{predictor.version}")
        prediction = predictor.predict_counts(counts, system)
        std = None if prediction.dhf_std_ev_per_atom is None else prediction.dhf_std_ev_per_atom.astype(np.float64)
        return prediction.dhf_ev_per_atom.astype(np.float64), std, refined, None
    companion = getattr(predictor, "companion", None)  # a Predictor keeps its prefilter loaded
    fast = companion(options.prefilter_model) if companion else Predictor.from_name(options.prefilter_model)
    step(f"ranking {n:,} candidates with {fast.name}@{fast.version}")
    first = fast.predict_counts(counts, system)
    dhf = first.dhf_ev_per_atom.astype(np.float64)
    # a prefilter of one network has no σ: NaN (no estimate), not 0 (certain); its score reads it as 0
    std = np.full(n, np.nan) if first.dhf_std_ev_per_atom is None else first.dhf_std_ev_per_atom.astype(np.float64)
    score = np.where(is_known, np.inf, stability_score(dhf - hull_ev_per_atom, np.nan_to_num(std), prior))
    order = np.argsort(-score, kind="stable")
    refined = np.zeros(n, dtype=bool)
    refined[order[: int(is_known.sum()) + options.refine_top]] = True
    step(f"predicting the best {int(refined.sum()):,} with {predictor.name}@{predictor.version}")
    second = predictor.predict_counts(counts[refined], system)
    dhf[refined] = second.dhf_ev_per_atom
    if second.dhf_std_ev_per_atom is not None:
        std[refined] = second.dhf_std_ev_per_atom
    return dhf, std, refined, f"{fast.name}@{fast.version}"


