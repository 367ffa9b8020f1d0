"""An evaluation that mimics the screen: accuracy, hull classification, rediscovery, calibration.

``fh-screen evaluate --study stability --model NAME`` runs :func:`evaluate_model` on the shared
OQMD split and writes ``docs/evaluation/<model>.json`` and ``.png``:

a. **accuracy** on ``val.csv``: MAE on all rows and on abs(ΔH_f) < 5 eV/atom, p80 and p90 of the
   absolute error (abs(ΔH_f) < 5 rows).
b. **hull classification**: for each sampled val chemical system ``S`` (the element set of a val
   compound), the hull of the train entries of ``S`` and its subsystems at their DFT values plus
   the val compounds of ``S`` and its subsystems at their *predicted* values, against the same
   hull with true values. The val compounds whose element set is exactly ``S`` are classified
   (each val compound once): stable when E_hull <= 1 meV/atom. Precision, recall, F1.
c. **rediscovery**: in each sampled 2–4 element system (the element set of a val compound), the val
   compounds of the system and its subsystems that lie on the true hull (train + val at DFT
   values) and have at most 20 atoms per formula unit are the hidden stable compounds; :func:`fh_screen.screening.core.screen`
   runs with the train entries as the known phases and default options, and each hidden compound
   is ranked among the *unknown* candidates (val compounds stay unknown). recall@10, recall@50,
   recall@1 % of candidates, median rank percentile, and the random-order baseline, for the
   screen's own rule and for the alternative rules of :data:`RANKING_RULES`.
d. **calibration**: fraction of val errors within ±1.645σ (the 90 % interval of a normal) and a
   reliability curve (observed against nominal coverage).

Everything is seeded; ``systems``/``hull_systems`` bound the run time (a quick run on 50 systems
takes about a minute).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from fh_screen.chem.formula import DEFAULT_ELEMENTS
from fh_screen.chem.hull import STABLE_TOLERANCE_EV_PER_ATOM, e_above_hull
from fh_screen.data import OqmdSet, in_range, load_set, subsystem_rows
from fh_screen.io import save_figure
from fh_screen.models.metrics import error_metrics

if TYPE_CHECKING:
    from fh_screen.models.predictor import Predictor

logger = logging.getLogger(__name__)

__all__ = [
    "RANKING_RULES",
    "accuracy_metrics",
    "calibration_metrics",
    "classification_metrics",
    "evaluate_model",
    "hull_classification",
    "rank_of",
    "DrawnSystem",
    "drawn_systems",
    "rediscovery",
    "rediscovery_summary",
    "write_figure",
]

#: z of a two-sided 90 % normal interval.
Z90 = 1.6448536269514722
#: Largest formula unit of a compound that rediscovery hides (the screen's default enumeration).
REDISCOVERY_MAX_ATOMS = 20


# ---------------------------------------------------------------------------- (a) accuracy
def accuracy_metrics(true_ev_per_atom: np.ndarray, pred_ev_per_atom: np.ndarray) -> dict:
    """MAE on all rows and on abs(true) < 5 eV/atom; p80/p90 of the absolute error (abs < 5 rows).

    Both rows come from :func:`fh_screen.models.metrics.error_metrics`, under this report's key names.
    """
    true = np.asarray(true_ev_per_atom, dtype=np.float64)
    pred = np.asarray(pred_ev_per_atom, dtype=np.float64)
    inside = np.abs(true) < 5
    every, small = error_metrics(true, pred), error_metrics(true[inside], pred[inside])
    return {
        "n_rows": every["n"],
        "n_rows_abs_lt_5": small["n"],
        "mae_all_ev_per_atom": every["mae_ev_per_atom"],
        "mae_abs_lt_5_ev_per_atom": small["mae_ev_per_atom"],
        "p80_ae_ev_per_atom": small["p80_ae_ev_per_atom"],
        "p90_ae_ev_per_atom": small["p90_ae_ev_per_atom"],
    }


# ---------------------------------------------------------------------------- (b) hull classification
def classification_metrics(true_stable: np.ndarray, pred_stable: np.ndarray) -> dict:
    """Precision, recall and F1 of ``pred_stable`` against ``true_stable`` (boolean arrays)."""
    true_stable = np.asarray(true_stable, dtype=bool)
    pred_stable = np.asarray(pred_stable, dtype=bool)
    tp = int((true_stable & pred_stable).sum())
    fp = int((~true_stable & pred_stable).sum())
    fn = int((true_stable & ~pred_stable).sum())
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else float("nan")
    return {"n": int(len(true_stable)), "n_true_stable": int(true_stable.sum()), "n_pred_stable": int(pred_stable.sum()),
            "true_positives": tp, "precision": precision, "recall": recall, "f1": f1}


def hull_classification(train: OqmdSet, val: OqmdSet, val_pred_ev_per_atom: np.ndarray, *, n_systems: int = 5000,
                        seed: int = 0) -> dict:
    """Stable/unstable classification of val compounds on hulls with predicted vs true val values.

    ``n_systems`` val chemical systems (all when fewer) are drawn with ``seed``. Returns the
    metrics of :func:`classification_metrics` plus the numbers of systems and compounds.
    """
    train_ok = in_range(train.dhf_ev_per_atom)
    val_ok = in_range(val.dhf_ev_per_atom) & np.isfinite(val_pred_ev_per_atom)
    train_index = train.index()
    val_index = val.index()
    systems = sorted(s for s in val_index if len(s) >= 2)
    rng = np.random.default_rng(seed)
    if len(systems) > n_systems:
        systems = [systems[i] for i in np.sort(rng.choice(len(systems), n_systems, replace=False))]
    true_stable, pred_stable = [], []
    for system in systems:
        t_rows = subsystem_rows(train_index, system)
        t_rows = t_rows[train_ok[t_rows]]
        v_rows = subsystem_rows(val_index, system)
        v_rows = v_rows[val_ok[v_rows]]
        own = val_index[system]
        own = own[val_ok[own]]
        if len(own) == 0:
            continue
        points = np.concatenate([train.fractions[t_rows], val.fractions[v_rows]])
        e_true = e_above_hull(system, points, np.concatenate([train.dhf_ev_per_atom[t_rows], val.dhf_ev_per_atom[v_rows]]),
                               val.fractions[own], val.dhf_ev_per_atom[own])
        e_pred = e_above_hull(system, points, np.concatenate([train.dhf_ev_per_atom[t_rows], val_pred_ev_per_atom[v_rows]]),
                               val.fractions[own], val_pred_ev_per_atom[own])
        true_stable.append(e_true <= STABLE_TOLERANCE_EV_PER_ATOM)
        pred_stable.append(e_pred <= STABLE_TOLERANCE_EV_PER_ATOM)
    metrics = classification_metrics(np.concatenate(true_stable), np.concatenate(pred_stable))
    metrics["n_systems"] = len(systems)
    metrics["tolerance_ev_per_atom"] = STABLE_TOLERANCE_EV_PER_ATOM
    return metrics


# ---------------------------------------------------------------------------- (c) rediscovery
def _phi(x: np.ndarray) -> np.ndarray:
    from scipy.special import ndtr

    return ndtr(x)


def _rule_e_hull_all(ctx: dict) -> np.ndarray:
    return ctx["e_hull_all"]


def _rule_e_known(ctx: dict) -> np.ndarray:
    return ctx["e_known"]


def _rule_dhf(ctx: dict) -> np.ndarray:
    return ctx["dhf"]


def _rule_p_below(ctx: dict) -> np.ndarray | None:
    std = ctx["std"]
    return None if std is None else -_phi(-ctx["e_known"] / np.maximum(std, 1e-6))


def _rule_lcb(ctx: dict) -> np.ndarray | None:
    std = ctx["std"]
    return None if std is None else ctx["e_known"] - std


def _prior_rule(floor_ev_per_atom: float, use_std: bool = True, prior: str = "log_prior",
                weight: float = 1.0) -> Callable[[dict], np.ndarray]:
    def rule(ctx: dict) -> np.ndarray:
        from fh_screen.screening.probability import stability_score

        std = ctx["std"] if use_std else None
        return -stability_score(ctx["e_known"], std, weight * ctx[prior], floor_ev_per_atom)

    return rule


def _rule_prior_only(ctx: dict) -> np.ndarray:
    return -ctx["log_prior"]


def _rule_screen(ctx: dict) -> np.ndarray:
    return ctx["screen_rank"].astype(np.float64)


#: Ranking rules compared by rediscovery; each maps the unknown candidates to a score (lower is
#: better, ties broken by predicted ΔH_f). ``screen`` is the order of the screen's own table.
RANKING_RULES: dict[str, tuple[str, Callable[[dict], np.ndarray | None]]] = {
    "screen": ("the screen's own rank (default options)", _rule_screen),
    "e_hull_all": ("E_hull on the hull of known (DFT) + all predicted candidates", _rule_e_hull_all),
    "e_known": ("predicted ΔH_f minus the hull of the known phases (negative: below it)", _rule_e_known),
    "p_below": ("P(below the known hull) = Φ(-e_known/σ), descending", _rule_p_below),
    "lcb": ("e_known - σ (optimistic bound)", _rule_lcb),
    "dhf": ("predicted ΔH_f alone", _rule_dhf),
    "prior_only": ("the shape prior alone (elements, atoms, charge balance)", _rule_prior_only),
    "score_floor0.03": ("log Φ(-e_known/s) + log prior, s = sqrt(σ² + 0.03²)", _prior_rule(0.03)),
    "score_floor0.05": ("log Φ(-e_known/s) + log prior, s = sqrt(σ² + 0.05²)", _prior_rule(0.05)),
    "score_floor0.08": ("log Φ(-e_known/s) + log prior, s = sqrt(σ² + 0.08²)", _prior_rule(0.08)),
    "score_nostd0.06": ("log Φ(-e_known/0.06) + log prior (σ ignored)", _prior_rule(0.06, use_std=False)),
    "score_pw20": ("score_floor0.05 with pattern weight 20", _prior_rule(0.05, prior="log_prior_pw20")),
    "score_pw2000": ("score_floor0.05 with pattern weight 2000", _prior_rule(0.05, prior="log_prior_pw2000")),
    "score_prior0.5": ("log Φ(-e_known/s) + 0.5 log prior, s = sqrt(σ² + 0.05²)", _prior_rule(0.05, weight=0.5)),
    "score_prior0.75": ("log Φ(-e_known/s) + 0.75 log prior, s = sqrt(σ² + 0.05²)", _prior_rule(0.05, weight=0.75)),
    "score_prior1.5": ("log Φ(-e_known/s) + 1.5 log prior, s = sqrt(σ² + 0.05²)", _prior_rule(0.05, weight=1.5)),
    "score_shape_only": ("score_floor0.05 with the (elements, atoms, balance) prior only", _prior_rule(0.05, prior="log_prior_shape")),
}

#: Rules drawn in the figure (all rules are in the JSON).
FIGURE_RULES = ("screen", "prior_only", "dhf", "p_below", "e_known", "e_hull_all")

#: Filters a "best new candidates" selection could apply: kept when True.
SELECTION_FILTERS: dict[str, Callable[[dict], np.ndarray]] = {
    "dhf_pred<0": lambda c: c["dhf"] < 0,
    "e_known<=0.05": lambda c: c["e_known"] <= 0.05,
    "e_known<=0.1": lambda c: c["e_known"] <= 0.1,
    "e_known<=0.2": lambda c: c["e_known"] <= 0.2,
    "dhf_pred<0 & e_known<=0.1": lambda c: (c["dhf"] < 0) & (c["e_known"] <= 0.1),
    "dhf_pred<0 & e_known<=0.2": lambda c: (c["dhf"] < 0) & (c["e_known"] <= 0.2),
    "charge_balanced": lambda c: c["neutral"],
}


def rank_of(scores: np.ndarray, tie_break: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """1-based rank of rows ``targets`` when all rows are sorted by ``scores``, then ``tie_break``."""
    order = np.lexsort((tie_break, scores))
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(1, len(order) + 1)
    return position[targets]


@dataclass
class RediscoveryRecord:
    """One hidden stable compound: its system, the number of unknown candidates and its rank per rule."""

    chemsys: str
    formula: str
    n_unknown: int
    ranks: dict[str, int] = field(default_factory=dict)
    dhf_true_ev_per_atom: float = float("nan")
    dhf_pred_ev_per_atom: float = float("nan")
    e_known_pred_ev_per_atom: float = float("nan")
    charge_neutral: bool = True
    kept: dict[str, bool] = field(default_factory=dict)
    kept_fraction: dict[str, float] = field(default_factory=dict)
    own_system: bool = True


def _reduced_formula(formula: str) -> str:
    """fh-screen's one reducer (:func:`fh_screen.chem.formula.reduced_formula`: ``Fe0.4O0.6`` is ``Fe2O3``, as
    the screen's candidates are written)."""
    from fh_screen.chem.formula import reduced_formula

    return reduced_formula(formula)


_TOKEN = re.compile(r"([A-Z][a-z]?)(\d*)")


def _counts_of_formulas(formulas: Sequence[str], chemsys: Sequence[str]) -> np.ndarray:
    """Reduced integer counts of formulas as the screen writes them (``Li2O2`` is ``[1, 1]``, ``Zr(AlNi)2`` ``[2, 2, 1]``)."""
    from fh_screen.chem.candidates import reduce_counts

    index = {s: j for j, s in enumerate(chemsys)}
    counts = np.zeros((len(formulas), len(chemsys)), dtype=np.int64)
    for row, formula in enumerate(formulas):
        if "(" in formula:  # pymatgen groups polyanions: Zr(AlNi)2
            from pymatgen.core import Composition

            for symbol, amount in Composition(formula).get_el_amt_dict().items():
                counts[row, index[symbol]] = int(round(amount))
            continue
        for symbol, amount in _TOKEN.findall(formula):
            counts[row, index[symbol]] += int(amount) if amount else 1
    return reduce_counts(counts)


@dataclass(frozen=True)
class DrawnSystem:
    """One drawn system of a rediscovery-style study and its truth.

    ``known_rows`` are the known set's rows of the system and its subsystems (ΔH_f in range);
    ``hidden_rows`` the hidden set's; ``stable_rows`` those hidden rows (at most
    :data:`REDISCOVERY_MAX_ATOMS` atoms) on the true hull of known + hidden at DFT values.
    """

    system: tuple[int, ...]
    known_rows: np.ndarray
    hidden_rows: np.ndarray
    stable_rows: np.ndarray


def drawn_systems(known: OqmdSet, hidden: OqmdSet, seed: int):
    """The systems of 2–4 elements of ``hidden`` compounds (≤ 20 atoms, ΔH_f in range), in seeded order, with their truth.

    The one draw behind :func:`rediscovery` and :func:`fh_screen.study.campaign.campaign_systems`:
    a lazy iterator of :class:`DrawnSystem`; the caller decides which count and when to stop.
    """
    known_ok = in_range(known.dhf_ev_per_atom)
    hidden_ok = in_range(hidden.dhf_ev_per_atom)
    known_index = known.index()
    hidden_index = hidden.index()
    eligible = sorted({hidden.systems[i] for i in np.flatnonzero(hidden_ok & (hidden.n_atoms <= REDISCOVERY_MAX_ATOMS))
                       if 2 <= len(hidden.systems[i]) <= 4})
    for position in np.random.default_rng(seed).permutation(len(eligible)):
        system = eligible[position]
        k_rows = subsystem_rows(known_index, system)
        k_rows = k_rows[known_ok[k_rows]]
        h_rows = subsystem_rows(hidden_index, system)
        h_rows = h_rows[hidden_ok[h_rows]]
        small = h_rows[hidden.n_atoms[h_rows] <= REDISCOVERY_MAX_ATOMS]
        points = np.concatenate([known.fractions[k_rows], hidden.fractions[h_rows]])
        energies = np.concatenate([known.dhf_ev_per_atom[k_rows], hidden.dhf_ev_per_atom[h_rows]])
        e_true = e_above_hull(system, points, energies, hidden.fractions[small], hidden.dhf_ev_per_atom[small])
        yield DrawnSystem(system, k_rows, h_rows, small[e_true <= STABLE_TOLERANCE_EV_PER_ATOM])


def rediscovery(train: OqmdSet, val: OqmdSet, predictor: Predictor, *, n_systems: int = 400, seed: int = 0,
                options=None, progress: Callable[[int, int], None] | None = None) -> list[RediscoveryRecord]:
    """Hide the stable val compounds of ``n_systems`` sampled 2–4 element systems and rank them.

    Systems are drawn (seeded) among the element sets of val compounds with 2–4 elements and at
    most 20 atoms per formula unit; a drawn system counts when at least one val compound of it or
    of its subsystems (at most 20 atoms) is on the true hull (train + val at DFT values, E_hull <= 1 meV/atom). The real
    :func:`fh_screen.screening.core.screen` runs with the train entries of the system as ``known``.
    """
    from fh_screen.chem.oxidation import charge_neutral_mask
    from fh_screen.chem.hull import build_hull
    from fh_screen.screening.probability import log_prior
    from fh_screen.screening import ScreenOptions, known_counts, screen

    options = options or ScreenOptions()
    records: list[RediscoveryRecord] = []
    n_done = 0
    for drawn in drawn_systems(train, val, seed):
        if n_done >= n_systems:
            break
        system, t_rows, hidden = drawn.system, drawn.known_rows, drawn.stable_rows
        own_system = np.array([val.systems[i] == system for i in hidden], dtype=bool)
        if not own_system.any():  # the system counts when a compound of its own elements is hidden
            continue
        chemsys = tuple(DEFAULT_ELEMENTS[j] for j in system)
        known = pd.DataFrame({"formula": [train.formulas[i] for i in t_rows], "dhf_ev_per_atom": train.dhf_ev_per_atom[t_rows]})
        result = screen(chemsys, predictor=predictor, known=known, options=options)
        table = result.table
        unknown = ~table["is_known"].to_numpy(bool)
        sub = table[unknown].reset_index(drop=True)
        n_unknown = len(sub)
        counts = _counts_of_formulas(sub["formula"].tolist(), result.chemsys)
        fractions = counts / counts.sum(axis=1, keepdims=True)
        dhf = sub["dhf_pred_ev_per_atom"].to_numpy(np.float64)
        # the earlier rule: the hull of the known phases (DFT) and every unknown candidate (predicted)
        k_counts, k_dhf = known_counts(known, result.chemsys)
        k_fractions = k_counts / k_counts.sum(axis=1, keepdims=True) if len(k_counts) else np.zeros((0, len(chemsys)))
        hull_all = build_hull(result.chemsys, np.concatenate([k_fractions, fractions]), np.concatenate([k_dhf, dhf]))
        e_all, _ = hull_all.e_above_hull(fractions, dhf)
        ctx = {
            "e_known": sub["e_above_hull_pred_ev_per_atom"].to_numpy(np.float64),
            "e_hull_all": e_all,
            "dhf": dhf,
            "std": (np.nan_to_num(sub["dhf_std_ev_per_atom"].to_numpy(np.float64))  # a prefilter row without σ: 0
                    if "dhf_std_ev_per_atom" in sub else None),
            "screen_rank": sub["rank"].to_numpy(),
            "n_atoms": counts.sum(axis=1),
        }
        neutral = charge_neutral_mask(counts, result.chemsys)
        ctx["neutral"] = neutral
        ctx["log_prior"] = log_prior(counts, neutral, result.chemsys)
        ctx["log_prior_pw20"] = log_prior(counts, neutral, result.chemsys, pattern_weight=20.0)
        ctx["log_prior_pw2000"] = log_prior(counts, neutral, result.chemsys, pattern_weight=2000.0)
        ctx["log_prior_shape"] = log_prior(counts, neutral, result.chemsys, pattern_weight=1e12)
        kept = {name: np.asarray(f(ctx), dtype=bool) for name, f in SELECTION_FILTERS.items()}
        scores = {name: rule(ctx) for name, (_, rule) in RANKING_RULES.items()}
        scores = {name: s for name, s in scores.items() if s is not None}
        position_of = {f: i for i, f in enumerate(sub["formula"])}
        for row, is_own in zip(hidden, own_system):
            formula = _reduced_formula(val.formulas[row])
            target = position_of.get(formula)
            if target is None:  # beyond max_per_element or a charge filter: never listed
                ranks = {name: n_unknown + 1 for name in list(scores) + ["e_known_charge_neutral"]}
                ranks.update({f"screen | {name}": n_unknown + 1 for name in kept})
                record = RediscoveryRecord("-".join(result.chemsys), formula, n_unknown, ranks,
                                           float(val.dhf_ev_per_atom[row]), own_system=bool(is_own))
                records.append(record)
                continue
            tie = ctx["e_known"]
            ranks = {name: int(rank_of(s, tie, np.array([target]))[0]) for name, s in scores.items()}
            # the screen's order within a "best new candidates" selection (a hidden compound left out is a miss)
            for name, keep_mask in kept.items():
                keep = np.flatnonzero(keep_mask)
                if keep_mask[target]:
                    local = int(np.searchsorted(keep, target))
                    ranks[f"screen | {name}"] = int(rank_of(scores["screen"][keep], tie[keep], np.array([local]))[0])
                else:
                    ranks[f"screen | {name}"] = n_unknown + 1
            # the charge-neutral screen: only balanced candidates are listed
            if neutral[target]:
                keep = np.flatnonzero(neutral)
                local = int(np.searchsorted(keep, target))
                ranks["e_known_charge_neutral"] = int(rank_of(ctx["e_known"][keep], tie[keep], np.array([local]))[0])
            else:
                ranks["e_known_charge_neutral"] = n_unknown + 1
            records.append(RediscoveryRecord("-".join(result.chemsys), formula, n_unknown, ranks,
                                             float(val.dhf_ev_per_atom[row]), float(dhf[target]),
                                             float(ctx["e_known"][target]), bool(neutral[target]),
                                             {name: bool(k[target]) for name, k in kept.items()},
                                             {name: float(k.mean()) for name, k in kept.items()}, bool(is_own)))
        n_done += 1
        if progress is not None:
            progress(n_done, n_systems)
    return records


def rediscovery_summary(records: Sequence[RediscoveryRecord], *, own_system_only: bool = True) -> dict:
    """recall@10, @50, @1 % of candidates and median rank percentile per rule, plus random order.

    With ``own_system_only`` (the headline figure) only the compounds made of all the screened
    system's elements count; otherwise the hidden compounds of its subsystems count too.
    """
    if own_system_only:
        records = [r for r in records if r.own_system]
    if not records:
        return {"n_systems": 0, "n_hidden": 0, "rules": {}}
    n = np.array([r.n_unknown for r in records], dtype=np.float64)
    found = [r for r in records if r.kept]
    top1pct = np.maximum(1, np.ceil(0.01 * n))
    rules = {}
    for name in records[0].ranks:
        ranks = np.array([r.ranks.get(name, np.nan) for r in records], dtype=np.float64)
        rules[name] = {
            "recall_at_10": float(np.mean(ranks <= 10)),
            "recall_at_50": float(np.mean(ranks <= 50)),
            "recall_at_1pct": float(np.mean(ranks <= top1pct)),
            "median_rank_pct": float(np.median(100 * ranks / n)),
            "median_rank": float(np.median(ranks)),
        }
    random = {
        "recall_at_10": float(np.mean(np.minimum(10, n) / n)),
        "recall_at_50": float(np.mean(np.minimum(50, n) / n)),
        "recall_at_1pct": float(np.mean(top1pct / n)),
        "median_rank_pct": float(np.median(100 * (n + 1) / 2 / n)),
    }
    return {
        "n_systems": len({r.chemsys for r in records}),
        "n_hidden": len(records),
        "median_unknown_candidates": float(np.median(n)),
        "fraction_charge_neutral": float(np.mean([r.charge_neutral for r in records])),
        "fraction_dhf_pred_negative": float(np.mean([r.dhf_pred_ev_per_atom < 0 for r in records])),
        "rules": rules,
        "random": random,
        "selection_filters": {
            name: {"hidden_stable_kept": float(np.mean([r.kept[name] for r in found])),
                   "candidates_kept_mean_fraction": float(np.mean([r.kept_fraction[name] for r in found]))}
            for name in (found[0].kept if found else {})
        },
    }


# ---------------------------------------------------------------------------- (d) calibration
def calibration_metrics(true_ev_per_atom: np.ndarray, pred_ev_per_atom: np.ndarray, std_ev_per_atom: np.ndarray | None) -> dict:
    """Coverage of ±1.645σ and the reliability curve (abs(true) < 5 rows); empty without σ."""
    if std_ev_per_atom is None:
        return {"coverage_90": None, "note": "single network: no σ"}
    from scipy.special import ndtri

    true = np.asarray(true_ev_per_atom, dtype=np.float64)
    inside = np.abs(true) < 5
    error = np.abs(np.asarray(pred_ev_per_atom, dtype=np.float64) - true)[inside]
    std = np.asarray(std_ev_per_atom, dtype=np.float64)[inside]
    nominal = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99])
    observed = [float(np.mean(error <= ndtri((1 + p) / 2) * std)) for p in nominal]
    return {
        "coverage_90": float(np.mean(error <= Z90 * std)),
        "median_std_ev_per_atom": float(np.median(std)),
        "reliability": {"nominal": nominal.tolist(), "observed": observed},
    }


# ---------------------------------------------------------------------------- driver
def evaluate_model(predictor: Predictor, train_path: str | Path, val_path: str | Path, *, n_systems: int = 400,
                   hull_systems: int = 5000, seed: int = 0, progress: Callable[[str], None] | None = None,
                   options=None) -> tuple[dict, list]:
    """Run (a)–(d) for ``predictor``; returns the JSON-ready payload and the rediscovery records.

    ``options`` are the :class:`~fh_screen.screening.options.ScreenOptions` of the rediscovery screens
    (default: the screen's defaults). A ``seed`` outside 0 .. 2**32 - 1 raises a one-line
    :class:`~fh_screen.errors.FhScreenError` before any file is read.
    """
    from fh_screen.errors import check_seed

    check_seed(seed)
    step = progress or (lambda label: None)
    started = time.perf_counter()
    step("reading the OQMD split")
    train = load_set(train_path)
    val = load_set(val_path)
    step(f"predicting {len(val):,} val compounds")
    prediction = predictor.predict_formulas(val.formulas)
    pred = prediction.dhf_ev_per_atom.astype(np.float64)
    std = None if prediction.dhf_std_ev_per_atom is None else prediction.dhf_std_ev_per_atom.astype(np.float64)
    timings = {}
    accuracy = accuracy_metrics(val.dhf_ev_per_atom, pred)
    calibration = calibration_metrics(val.dhf_ev_per_atom, pred, std)
    t = time.perf_counter()
    step(f"hull classification on up to {hull_systems:,} val systems")
    classification = hull_classification(train, val, pred, n_systems=hull_systems, seed=seed)
    timings["hull_classification_s"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    step(f"rediscovery on {n_systems} systems")
    records = rediscovery(train, val, predictor, n_systems=n_systems, seed=seed, options=options,
                          progress=lambda i, n: step(f"rediscovery: {i}/{n} systems") if i % 25 == 0 else None)
    timings["rediscovery_s"] = round(time.perf_counter() - t, 1)
    summary = rediscovery_summary(records)
    summary["with_subsystem_compounds"] = {key: value for key, value in rediscovery_summary(records, own_system_only=False).items()
                                           if key not in ("selection_filters",)}
    summary["rule_descriptions"] = {name: text for name, (text, _) in RANKING_RULES.items()}
    summary["rule_descriptions"]["e_known_charge_neutral"] = "e_known among charge-balanced candidates only"
    payload = {
        "model": predictor.name,
        "model_version": predictor.version,
        "weights_sha256": predictor.weights_sha256,
        "seed": seed,
        "accuracy": accuracy,
        "hull_classification": classification,
        "rediscovery": summary,
        "calibration": calibration,
        "seconds": round(time.perf_counter() - started, 1),
        "timings": timings,
    }
    payload["_val_errors"] = (val.dhf_ev_per_atom, pred, std)
    return payload, records


def write_figure(payload: dict, records: Sequence[RediscoveryRecord], path: str | Path) -> Path:
    """Three panels: parity (val), reliability of σ, rediscovery rank percentiles per rule."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    true, pred, std = payload["_val_errors"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    inside = np.abs(true) < 5
    axes[0].hexbin(true[inside], pred[inside], gridsize=80, bins="log", cmap="viridis")
    axes[0].plot([-5, 3], [-5, 3], "r-", lw=0.8)
    acc = payload["accuracy"]
    axes[0].set(xlabel="ΔH_f DFT (eV/atom)", ylabel="ΔH_f predicted (eV/atom)",
                title=f"val: MAE {acc['mae_abs_lt_5_ev_per_atom']:.4f}, p90 {acc['p90_ae_ev_per_atom']:.3f} eV/atom")
    calibration = payload["calibration"]
    if calibration.get("reliability"):
        rel = calibration["reliability"]
        axes[1].plot(rel["nominal"], rel["observed"], "o-", label=f"model (90 %: {calibration['coverage_90']:.2f})")
        axes[1].plot([0, 1], [0, 1], "k--", lw=0.8, label="ideal")
        axes[1].legend()
    else:
        axes[1].text(0.5, 0.5, "single network: no σ", ha="center", va="center")
    axes[1].set(xlabel="nominal coverage of ±zσ", ylabel="observed fraction of val errors", title="reliability of σ")
    own = [r for r in records if r.own_system]
    n = np.array([r.n_unknown for r in own], dtype=float)
    for name in FIGURE_RULES:
        if own and name in own[0].ranks:
            ranks = np.array([r.ranks[name] for r in own], dtype=float)
            pct = np.sort(100 * ranks / n)
            axes[2].plot(pct, np.arange(1, len(pct) + 1) / len(pct), label=f"{name} (median {np.median(pct):.1f} %)")
    pct = np.logspace(-2, 2, 200)
    axes[2].plot(pct, pct / 100, "k--", lw=0.8, label="random order")
    axes[2].set(xscale="log", xlim=(0.05, 100), ylim=(0, 1), xlabel="rank percentile among unknown candidates (%)",
                ylabel="fraction of hidden stable compounds (own system)", title="rediscovery (cumulative)")
    axes[2].legend(fontsize=8, loc="upper left")
    fig.suptitle(f"model {payload['model']}@{payload['model_version']}: evaluation that mimics the screen")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        save_figure(fig, path, dpi=100)
    finally:
        plt.close(fig)
    return path
