"""What the screen claims, measured: rediscovery examples, P(stable) fitting data and claim metrics.

A *protocol* hides compounds from the known phases and screens their systems:

* the **fitting protocol** (train.csv alone): the hidden compounds are the seeded 5 % carve of
  train that the shipped models never trained on (:func:`carve_split`), the known phases are
  the rest of train;
* the **evaluation protocol**: val.csv hidden, train.csv known (the rediscovery protocol of
  ``fh-screen evaluate --study stability``).

In each sampled system (2–4 elements, holding a hidden compound of its own elements on the true
hull), the real :func:`fh_screen.screening.screen` runs with the known phases of the system;
every *new* candidate becomes one example: its features (:data:`fh_screen.screening.stability.FEATURE_NAMES`)
and its label, *real* when it is a hidden compound on the true hull (known + hidden at DFT
values) of the system or of a subsystem. Unlabelled compositions count as not stable.

:func:`claims_metrics` turns examples and probabilities into the figures the screen's claims
are judged by (calibration in the large, reliability, the short list, top-1 precision,
recall@10, median rank); :func:`ionic_binaries` runs the chemist's sanity set.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from fh_screen.chem.formula import DEFAULT_ELEMENTS
from fh_screen.io import atomic_write
from fh_screen.data import OqmdSet, make_set
from fh_screen.data import in_range as _in_range
from fh_screen.screening.analogues import AnalogueIndex
from fh_screen.study.evaluation import _reduced_formula, drawn_systems

if TYPE_CHECKING:
    from fh_screen.models.predictor import Predictor
    from fh_screen.screening import ScreenOptions

logger = logging.getLogger(__name__)

__all__ = [
    "IONIC_BINARIES",
    "RELIABILITY_BINS",
    "ClaimsExamples",
    "carve_split",
    "claims_metrics",
    "ionic_binaries",
    "protocol_examples",
]

#: Bins of p for the reliability table (lower edges inclusive; the last includes 1).
RELIABILITY_BINS = (0.0, 0.01, 0.1, 0.3, 0.5, 1.0)

#: The chemist's sanity set: simple ionic binaries whose stable compounds are textbook
#: (alkali halides, alkaline-earth oxides and fluorides, and a few more); a screen should claim
#: almost nothing new in them, and nothing that cannot balance charge.
IONIC_BINARIES = (
    "Na-Cl", "K-Br", "Rb-Cl", "Li-F", "Cs-I", "Na-F", "K-Cl", "Li-Cl",
    "Ca-O", "Ba-O", "Mg-O", "Sr-O", "Ca-F", "Mg-F", "Ba-Cl", "Zn-O",
)


def carve_split(train_path: str | Path, fraction: float = 0.05, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(fit, carve) of the training file exactly as the shipped models carved it.

    The cleaning of :func:`fh_screen.data.load_oqmd` and the seeded split of
    :func:`fh_screen.data.split_frame` with the shipped models' ``(0.95, 0.05)`` and seed 0: the
    carve is the set the default ensemble and the ``paper`` prefilter never fitted.
    """
    from fh_screen.data import load_oqmd, split_frame

    frame, _ = load_oqmd(train_path)
    fit, carve = split_frame(frame, (1 - fraction, fraction), seed=seed)
    return fit, carve


@dataclass
class ClaimsExamples:
    """One row per new candidate of every screened system of a protocol."""

    features: np.ndarray            # (n, n_features) float32
    label: np.ndarray               # real: a hidden compound on the true hull
    system: np.ndarray              # index into ``systems``
    own: np.ndarray                 # the candidate holds every element of the screened system
    rank: np.ndarray                # 1-based rank among the system's new candidates, in the screen's order
    formulas: list[str]
    systems: list[str]
    n_real: np.ndarray              # per system: real compounds (subsystems included) the screen enumerates
    n_real_own: np.ndarray          # per system: real compounds made of all its elements
    n_hidden_own_missed: np.ndarray  # per system: own-system hidden stable compounds the enumeration never lists
    meta: dict = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        """Write a compressed ``.npz``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, features=self.features, label=self.label, system=self.system, own=self.own,
                            rank=self.rank, formulas=np.asarray(self.formulas), systems=np.asarray(self.systems),
                            n_real=self.n_real, n_real_own=self.n_real_own, n_hidden_own_missed=self.n_hidden_own_missed)
        return path

    @classmethod
    def load(cls, path: str | Path) -> ClaimsExamples:
        """Read a file written by :meth:`save`."""
        data = np.load(path, allow_pickle=False)
        return cls(data["features"], data["label"], data["system"], data["own"], data["rank"],
                   data["formulas"].tolist(), data["systems"].tolist(), data["n_real"], data["n_real_own"],
                   data["n_hidden_own_missed"])

    @classmethod
    def concatenate(cls, parts: Sequence[ClaimsExamples]) -> ClaimsExamples:
        """One set of examples from several (system indices renumbered)."""
        offsets = np.cumsum([0] + [len(p.systems) for p in parts[:-1]])
        return cls(
            np.concatenate([p.features for p in parts]), np.concatenate([p.label for p in parts]),
            np.concatenate([p.system + o for p, o in zip(parts, offsets)]), np.concatenate([p.own for p in parts]),
            np.concatenate([p.rank for p in parts]), [f for p in parts for f in p.formulas],
            [s for p in parts for s in p.systems], np.concatenate([p.n_real for p in parts]),
            np.concatenate([p.n_real_own for p in parts]), np.concatenate([p.n_hidden_own_missed for p in parts]))


def _frame_set(frame: pd.DataFrame) -> OqmdSet:
    return make_set(frame["formula"].astype(str).tolist(), frame["dhf_ev_per_atom"].to_numpy(np.float64))


def protocol_examples(
    known: OqmdSet,
    hidden: OqmdSet,
    predictor: Predictor,
    *,
    n_systems: int,
    seed: int = 0,
    options: ScreenOptions | None = None,
    skip: int = 0,
    progress: Callable[[int, int], None] | None = None,
    analogues: AnalogueIndex | None = None,
) -> ClaimsExamples:
    """Screen ``n_systems`` systems that hold a hidden stable compound and label their new candidates.

    Systems come in the seeded order of :func:`fh_screen.study.evaluation.drawn_systems` (``skip`` passes over the first
    ones, so that runs can be split); a system counts when a hidden compound made of all its
    elements lies on the true hull (the rule of :func:`fh_screen.study.evaluation.rediscovery`).
    ``analogues``: the index of chemical analogues the screens count (default: built from the
    known phases, so that a hidden compound never counts as an analogue of anything).
    """
    from fh_screen.screening import ScreenOptions, screen

    options = options or ScreenOptions()
    known_ok = _in_range(known.dhf_ev_per_atom)
    if analogues is None:
        analogues = AnalogueIndex.from_formulas([known.formulas[i] for i in np.flatnonzero(known_ok)],
                                                source="the protocol's known phases")
    features, labels, systems_of, own_flags, ranks, formulas = [], [], [], [], [], []
    systems, n_real, n_real_own, missed = [], [], [], []
    seen = 0
    for drawn in drawn_systems(known, hidden, seed):
        if len(systems) >= n_systems:
            break
        system, k_rows, real_rows = drawn.system, drawn.known_rows, drawn.stable_rows
        own_real = [i for i in real_rows if hidden.systems[i] == system]
        if not own_real:
            continue
        seen += 1
        if seen <= skip:
            continue
        chemsys = tuple(DEFAULT_ELEMENTS[j] for j in system)
        known_frame = pd.DataFrame({"formula": [known.formulas[i] for i in k_rows],
                                    "dhf_ev_per_atom": known.dhf_ev_per_atom[k_rows]})
        result = screen(chemsys, predictor=predictor, known=known_frame, options=options, analogues=analogues)
        table = result.table
        new = ~table["is_known"].to_numpy(bool)
        new_formulas = table["formula"][new].tolist()
        real = {_reduced_formula(hidden.formulas[i]) for i in real_rows}
        real_own = {_reduced_formula(hidden.formulas[i]) for i in own_real}
        label = np.array([f in real for f in new_formulas], dtype=bool)
        element_count = (result.features[new][:, 7]).astype(int)
        index = len(systems)
        systems.append("-".join(chemsys))
        features.append(result.features[new].astype(np.float32))
        labels.append(label)
        systems_of.append(np.full(int(new.sum()), index, dtype=np.int32))
        own_flags.append(element_count == len(system))
        ranks.append(np.arange(1, int(new.sum()) + 1, dtype=np.int32))
        formulas.extend(new_formulas)
        listed = set(new_formulas)
        n_real.append(len(real & listed))
        n_real_own.append(len(real_own & listed))
        missed.append(len(real_own - listed))
        if progress is not None:
            progress(len(systems), n_systems)
    empty = np.zeros(0)
    return ClaimsExamples(
        np.concatenate(features) if features else np.zeros((0, 0), np.float32),
        np.concatenate(labels) if labels else empty.astype(bool),
        np.concatenate(systems_of) if systems_of else empty.astype(np.int32),
        np.concatenate(own_flags) if own_flags else empty.astype(bool),
        np.concatenate(ranks) if ranks else empty.astype(np.int32),
        formulas, systems, np.asarray(n_real, dtype=np.int64), np.asarray(n_real_own, dtype=np.int64),
        np.asarray(missed, dtype=np.int64), {"n_systems": len(systems), "seed": seed, "skip": skip},
    )


def _ranks_by_p(p: np.ndarray, tie: np.ndarray, system: np.ndarray) -> np.ndarray:
    """1-based rank of each row within its system when ordered by p (high first), then ``tie`` (low first)."""
    order = np.lexsort((tie, -p, system))
    sorted_system = system[order]
    starts = np.flatnonzero(np.r_[True, sorted_system[1:] != sorted_system[:-1]])
    group = np.cumsum(np.r_[True, sorted_system[1:] != sorted_system[:-1]]) - 1
    rank = np.empty(len(p), dtype=np.int64)
    rank[order] = np.arange(len(order)) - starts[group] + 1
    return rank


def claims_metrics(examples: ClaimsExamples, p: np.ndarray, *, select_p_min: float = 0.3,
                   dft_budget: int | None = None) -> dict:
    """The figures a screen's claims are judged by, for probabilities ``p`` of ``examples``' rows.

    Ranks are re-made from ``p`` (ties by the energy above the known hull); ``selected`` is the
    screen's rule (``p >= select_p_min``, or the ``dft_budget`` best per system; only new rows
    predicted below 0 eV/atom and within 0.2 eV/atom of the known hull qualify, as in
    :func:`fh_screen.screening.selection_mask`).
    """
    p = np.asarray(p, dtype=np.float64)
    x = examples.features
    label = examples.label
    system = examples.system.astype(np.int64)
    n_systems = len(examples.systems)
    real = int(examples.n_real.sum())
    e_known = x[:, 0].astype(np.float64)
    rank = _ranks_by_p(p, e_known, system)
    eligible = (x[:, 1] < 0) & (e_known <= 0.2)
    if dft_budget is None:
        selected = eligible & (p >= select_p_min)
    else:
        q = np.where(eligible, p, -1.0)
        selected = eligible & (_ranks_by_p(q, e_known, system) <= dft_budget)
    n_candidates = np.bincount(system, minlength=n_systems)
    bins = []
    edges = RELIABILITY_BINS
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (p >= low) & ((p < high) if high < 1 else (p <= high))
        n = int(inside.sum())
        bins.append({"p_low": low, "p_high": high, "n": n, "mean_p": float(p[inside].mean()) if n else None,
                     "observed": float(label[inside].mean()) if n else None, "n_real": int(label[inside].sum())})
    top1 = np.zeros(n_systems, dtype=bool)
    first = rank == 1
    top1[system[first]] = label[first]
    own_real = label & examples.own
    own_rank = rank[own_real]
    own_system = system[own_real]
    pct = 100 * own_rank / n_candidates[own_system]
    n_own_total = int(examples.n_real_own.sum() + examples.n_hidden_own_missed.sum())
    found_at_10 = int((own_rank <= 10).sum())
    # hidden own-system compounds the enumeration never lists count as missed (rank beyond the end)
    pct_all = np.concatenate([pct, np.full(int(examples.n_hidden_own_missed.sum()), 100.0)])
    below = e_known < 0
    return {
        "n_systems": n_systems,
        "n_candidates": int(len(p)),
        "n_real": real,
        "n_real_listed_rows": int(label.sum()),
        "predicted_below_known_hull_per_real": float(below.sum() / real) if real else None,
        "sum_p_over_real": float(p.sum() / real) if real else None,
        "selected": int(selected.sum()),
        "selected_per_real": float(selected.sum() / real) if real else None,
        "selected_real_share": float(label[selected].mean()) if selected.any() else None,
        "selected_per_system_median": float(np.median(np.bincount(system[selected], minlength=n_systems))),
        "real_with_p_ge_0.3_share": float((p[label] >= 0.3).mean()) if label.any() else None,
        "top1_precision": float(top1.mean()) if n_systems else None,
        "recall_at_10": float(found_at_10 / n_own_total) if n_own_total else None,
        "median_rank_pct": float(np.median(pct_all)) if len(pct_all) else None,
        "reliability": bins,
        "select_p_min": select_p_min,
        "dft_budget": dft_budget,
    }


def reliability_ok(metrics: dict, min_count: int = 30) -> bool:
    """Every bin of p >= 0.01 with at least ``min_count`` rows observes within a factor 2 of its mean p."""
    for row in metrics["reliability"]:
        if row["p_low"] < 0.01 or row["n"] < min_count:
            continue
        if row["observed"] is None or not (row["mean_p"] / 2 <= row["observed"] <= 2 * row["mean_p"]):
            return False
    return True


def ionic_binaries(predictor: Predictor, known: pd.DataFrame | Callable[[str], pd.DataFrame],
                   systems: Sequence[str] = IONIC_BINARIES, options: ScreenOptions | None = None) -> dict:
    """Screen the sanity set against ``known`` (a frame, or a function of the system giving one)
    and count the claims: new candidates with p >= 0.5, and how many of those have no SMACT-valid
    (charge-balanced) assignment."""
    from fh_screen.screening import ScreenOptions, screen
    from fh_screen.screening.stability import FEATURE_NAMES

    options = options or ScreenOptions()
    smact_column = FEATURE_NAMES.index("smact_valid")
    rows = []
    for chemsys in systems:
        frame = known(chemsys) if callable(known) else known
        result = screen(chemsys, predictor=predictor, known=frame, options=options)
        table = result.table
        new = ~table["is_known"].to_numpy(bool)
        p = table["p_stable"].to_numpy(np.float64)
        claimed = new & (p >= 0.5)
        unbalanced = claimed & (result.features[:, smact_column] < 0.5)
        top = table[new].head(3)
        rows.append({"system": chemsys, "n_new": int(new.sum()), "claimed_p_ge_0.5": int(claimed.sum()),
                     "claimed_not_charge_balanced": int(unbalanced.sum()),
                     "expected_new_stable": float(np.nansum(p[new])),
                     "top3": [f"{f} ({q:.2f})" for f, q in zip(top["formula"], top["p_stable"])],
                     "claimed": table["formula"][claimed].tolist()})
    return {"systems": rows, "claimed_p_ge_0.5": sum(r["claimed_p_ge_0.5"] for r in rows),
            "claimed_not_charge_balanced": sum(r["claimed_not_charge_balanced"] for r in rows)}


def evaluate_claims(predictor: Predictor, train_path: str | Path, val_path: str | Path, *, n_systems: int = 300,
                    seed: int = 0, options: ScreenOptions | None = None,
                    progress: Callable[[str], None] | None = None) -> tuple[dict, ClaimsExamples]:
    """The claims study on val: val hidden, train known; the screen's own ``p_stable`` judged.

    Returns the JSON-ready payload (:func:`claims_metrics` of the screen's probabilities, the
    sanity set against the train entries and against the packaged reference) and the examples.
    """
    import time

    from fh_screen.errors import check_seed
    from fh_screen.data import load_oqmd
    from fh_screen.screening import ScreenOptions

    check_seed(seed)  # 0 .. 2**32 - 1, in one line before any file is read
    options = options or ScreenOptions()
    step = progress or (lambda label: None)
    started = time.perf_counter()
    step("reading the OQMD split")
    train, _ = load_oqmd(train_path)
    val, _ = load_oqmd(val_path)
    step(f"screening {n_systems} systems with val hidden")
    examples = protocol_examples(_frame_set(train), _frame_set(val), predictor, n_systems=n_systems, seed=seed,
                                 options=options,
                                 progress=lambda i, n: step(f"claims: {i}/{n} systems") if i % 25 == 0 else None)
    from fh_screen.screening.core import stability_classifier
    from fh_screen.screening.stability import FEATURE_NAMES

    model = stability_classifier(options)
    p = model.p_stable(examples.features) if model is not None else np.full(len(examples.label), np.nan)
    metrics = claims_metrics(examples, p, select_p_min=options.select_p_min, dft_budget=options.dft_budget)
    metrics["reliability_within_factor_2"] = reliability_ok(metrics)
    step("the sanity set of ionic binaries")
    sanity_train = ionic_binaries(predictor, train.rename(columns={"target": "dhf_ev_per_atom"}), options=options)
    sanity_packaged = None
    try:
        from fh_screen.store.bootstrap import packaged_reference_frame

        sanity_packaged = ionic_binaries(predictor, packaged_reference_frame, options=options)
    except Exception as exc:  # the packaged table is optional for the study
        logger.info("packaged reference not used for the sanity set: %s", exc)
    payload = {
        "study": "claims: what the screen says about its candidates (val hidden, train known)",
        "model": f"{predictor.name}@{predictor.version}",
        "stability_model": None if model is None else model.identity,
        "features": list(FEATURE_NAMES),
        "seed": seed,
        "metrics": metrics,
        "ionic_binaries_train_known": sanity_train,
        "ionic_binaries_packaged_reference": sanity_packaged,
        "seconds": round(time.perf_counter() - started, 1),
    }
    return payload, examples


def write_claims_figure(payload: dict, path: str | Path) -> Path:
    """Reliability diagram: observed frequency of real stable compounds against mean p, per bin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = [b for b in payload["metrics"]["reliability"] if b["n"]]
    mean_p = np.array([b["mean_p"] for b in bins])
    observed = np.array([b["observed"] for b in bins])
    counts = np.array([b["n"] for b in bins])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    ax = axes[0]
    lo = max(1e-4, float(min(mean_p.min(), observed[observed > 0].min() if (observed > 0).any() else 1e-3)) / 2)
    grid = np.logspace(np.log10(lo), 0, 50)
    ax.fill_between(grid, grid / 2, np.minimum(2 * grid, 1), color="0.9", label="within a factor 2")
    ax.plot(grid, grid, "k--", lw=0.8, label="ideal")
    ax.plot(mean_p, np.maximum(observed, lo), "o-", label="screen")
    for x, y, n in zip(mean_p, observed, counts):
        ax.annotate(f"{n:,}", (x, max(y, lo)), textcoords="offset points", xytext=(4, -10), fontsize=8)
    ax.set(xscale="log", yscale="log", xlabel="mean P(stable) in the bin", ylabel="observed share of real stable compounds",
           title="reliability (val hidden, train known)")
    ax.legend(fontsize=8, loc="upper left")
    m = payload["metrics"]
    labels = ["Σp / real", "selected / real", "real share of selected", "top-1 precision", "recall@10"]
    values = [m["sum_p_over_real"], m["selected_per_real"], m["selected_real_share"], m["top1_precision"], m["recall_at_10"]]
    axes[1].barh(labels, [v or 0 for v in values], color="tab:blue")
    for i, v in enumerate(values):
        axes[1].text((v or 0) + 0.02, i, f"{(v or 0):.2f}", va="center", fontsize=9)
    axes[1].set(title=f"claims over {m['n_systems']} systems ({m['n_real']} real stable compounds)", xlim=(0, max(3.2, max(v or 0 for v in values) * 1.2)))
    fig.suptitle(f"{payload['model']} + {payload['stability_model']}")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100), keep_suffix=True)
    plt.close(fig)
    return path
