"""Screen a chemical system: enumerate candidates, predict ΔH_f, place them on the hull, rank.

One call does the product's main job::

    from fh_screen.screening import screen
    result = screen("Li-Fe-P-O", known=reference_frame)   # known: formula, dhf_ev_per_atom
    result.table.head()                                  # ranked pandas DataFrame
    result.records()                                     # JSON-ready dicts

The hull is built from the elements (0 eV/atom), the known DFT entries of the system and every
predicted candidate, so a candidate on it has ``e_above_hull_pred_ev_per_atom == 0`` and a
candidate above it decomposes into the listed phases. Without known entries (a fresh machine)
the hull comes from the elements and the predictions alone.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from fh_screen.composition import ELEMENTS_ABSENT_FROM_OQMD, FormulaError, _amounts_fast, _amounts_of, parse_formula
from fh_screen.candidates import (
    DEFAULT_MAX_ATOMS,
    charge_neutral_mask,
    count_candidates,
    enumerate_counts,
    formulas_from_counts,
    parse_chemsys,
    reduce_counts,
)
from fh_screen.errors import FhScreenError
from fh_screen.hull import build_hull, format_decomposition, probability_within, pymatgen_phase_diagram

if TYPE_CHECKING:
    from fh_screen.predictor import Predictor

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MAX_CANDIDATES",
    "RESULT_COLUMNS",
    "ScreenError",
    "ScreenOptions",
    "ScreenResult",
    "check_size",
    "known_counts",
    "plot_screen",
    "screen",
]

#: Largest enumeration a screen runs without ``force``: a senary system at the default 20
#: atoms (221,155 candidates) still fits, a septenary one (~865,000) needs ``--force`` or a
#: smaller ``max_atoms``. Enumeration + prediction + hull of 250k candidates take seconds.
DEFAULT_MAX_CANDIDATES = 250_000

#: The ranked table's core columns (``--json``/``--csv`` write exactly these).
RESULT_COLUMNS = [
    "rank",
    "formula",
    "dhf_pred_ev_per_atom",
    "e_above_hull_pred_ev_per_atom",
    "known_dhf_ev_per_atom",
    "decomposition",
]


class ScreenError(FhScreenError):
    """A screen that cannot run as asked (limits, options); the message is one line."""


@dataclass(frozen=True)
class ScreenOptions:
    """What to enumerate and how to judge stability.

    ``max_atoms``: largest formula unit (default 20, see :data:`fh_screen.candidates.DEFAULT_MAX_ATOMS`);
    ``max_per_element``: most atoms of one element (default ``max_atoms - 1``);
    ``charge_neutral``: keep only enumerated compositions that can be charge balanced
    (known compositions are always kept); ``include_known``: list known compositions too
    (they always shape the hull); ``max_candidates``: refuse larger enumerations unless
    ``force``; ``e_hull_tolerance_ev_per_atom``: the window for ``p_stable`` (0.05 eV/atom:
    about the model's error on held-out OQMD and a common metastability window for synthesis).
    """

    max_atoms: int = DEFAULT_MAX_ATOMS
    max_per_element: int | None = None
    charge_neutral: bool = False
    include_known: bool = True
    max_candidates: int = DEFAULT_MAX_CANDIDATES
    force: bool = False
    e_hull_tolerance_ev_per_atom: float = 0.05

    def validate(self) -> None:
        """Raise :class:`ScreenError` for absurd limits."""
        if isinstance(self.max_candidates, bool) or int(self.max_candidates) != self.max_candidates or self.max_candidates < 1:
            raise ScreenError(f"max_candidates must be a positive integer, got {self.max_candidates!r}")
        tol = self.e_hull_tolerance_ev_per_atom
        if not isinstance(tol, (int, float)) or not math.isfinite(tol) or not 0 <= tol <= 1:
            raise ScreenError(f"e_hull_tolerance_ev_per_atom must be between 0 and 1 eV/atom, got {tol!r}")


@dataclass
class ScreenResult:
    """A ranked screen of one system (see :data:`RESULT_COLUMNS`) and the hull behind it."""

    chemsys: tuple[str, ...]
    table: pd.DataFrame
    phase_diagram_inputs: tuple = field(repr=False)
    n_candidates: int
    model_name: str
    model_version: str
    weights_sha256: str
    run_id: str
    n_known: int = 0
    warnings: list[str] = field(default_factory=list)

    @cached_property
    def phase_diagram(self):
        """pymatgen ``PhaseDiagram`` of the elements, the known phases and the predicted stable ones.

        Built on first access (importing pymatgen's phase-diagram module costs about a second,
        which a screen that only prints a table does not pay).
        """
        return pymatgen_phase_diagram(self.chemsys, *self.phase_diagram_inputs)

    def records(self) -> list[dict]:
        """The ranked table as JSON-ready dicts (NaN becomes None, numpy scalars plain Python)."""
        out = []
        for row in self.table.to_dict("records"):
            out.append({key: _plain(value) for key, value in row.items()})
        return out


def _plain(value):
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    return value


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
        amounts = _amounts_fast(formula.strip())
        if amounts is None:
            try:
                amounts = _amounts_of(parse_formula(formula))
            except FormulaError:
                continue
        amounts = {s: a for s, a in amounts.items() if a > 0}
        if len(amounts) < 2 or any(s not in index for s in amounts):
            continue
        fractions = {s: Fraction(a).limit_denominator(1000) for s, a in amounts.items()}
        scale = math.lcm(*(f.denominator for f in fractions.values()))
        row = [0] * k
        for s, f in fractions.items():
            row[index[s]] = int(f * scale)
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


def _match(rows: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Index in ``table`` of each row of ``rows`` (-1 where absent); rows of both are unique."""
    if len(table) == 0 or len(rows) == 0:
        return np.full(len(rows), -1, dtype=np.int64)
    width = max(rows.shape[1], 1)
    both = np.concatenate([np.asarray(rows, dtype=np.int64), np.asarray(table, dtype=np.int64)]).reshape(-1, width)
    _, inverse = np.unique(both, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    slot = np.full(inverse.max() + 1, -1, dtype=np.int64)
    slot[inverse[len(rows) :]] = np.arange(len(table))
    return slot[inverse[: len(rows)]]


def _suggest_max_atoms(k: int, options: ScreenOptions) -> int:
    best = 2
    for n in range(2, options.max_atoms + 1):
        if count_candidates(k, n, options.max_per_element) <= options.max_candidates:
            best = n
    return best


def check_size(system: Sequence[str], options: ScreenOptions = ScreenOptions()) -> int:
    """Number of candidates the enumeration will give (exact, without enumerating).

    Raises :class:`ScreenError` with a hint (a ``max_atoms`` that fits, or ``--force``) when it
    is above ``options.max_candidates`` and ``options.force`` is not set.
    """
    k = len(system)
    estimate = count_candidates(k, options.max_atoms, options.max_per_element)
    if estimate > options.max_candidates and not options.force:
        suggestion = _suggest_max_atoms(k, options)
        raise ScreenError(
            f"{'-'.join(system)} at max_atoms={options.max_atoms} gives {estimate:,} candidates, above the limit of "
            f"{options.max_candidates:,}: use --max-atoms {suggestion} or --force"
        )
    return estimate


def screen(
    chemsys: str | Sequence[str],
    *,
    predictor: Predictor | None = None,
    known: pd.DataFrame | None = None,
    options: ScreenOptions = ScreenOptions(),
    progress: Callable[[str], None] | None = None,
) -> ScreenResult:
    """Rank every candidate composition of ``chemsys`` (and its subsystems) by predicted stability.

    ``known``: DataFrame with ``formula`` and ``dhf_ev_per_atom`` (OQMD entries of the system;
    other rows are ignored). ``progress`` is called with a short label before each stage.
    Raises :class:`ChemsysError`/:class:`ScreenError` (one line) for bad input or an
    enumeration above ``options.max_candidates`` without ``options.force``.
    """
    from fh_screen.predictor import Predictor

    step = progress or (lambda label: None)
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
        counts = counts[charge_neutral_mask(counts, system)]
    known_rows, known_dhf = known_counts(known, system)
    if options.include_known and len(known_rows):
        counts = np.unique(np.concatenate([counts, known_rows]), axis=0)
    elif len(known_rows):
        counts = counts[_match(counts, known_rows) < 0]
    known_index = _match(counts, known_rows)
    is_known = known_index >= 0

    step(f"predicting {len(counts):,} candidates with {predictor.name}@{predictor.version}")
    prediction = predictor.predict_counts(counts, system) if len(counts) else None
    dhf_pred = prediction.dhf_ev_per_atom.astype(np.float64) if prediction else np.zeros(0)
    std = None
    if prediction is not None and prediction.dhf_std_ev_per_atom is not None:
        std = prediction.dhf_std_ev_per_atom.astype(np.float64)

    step("building the convex hull")
    cand_fractions = counts / counts.sum(axis=1, keepdims=True) if len(counts) else np.zeros((0, k))
    known_fractions = known_rows / known_rows.sum(axis=1, keepdims=True) if len(known_rows) else np.zeros((0, k))
    hull = build_hull(system, np.concatenate([known_fractions, cand_fractions]), np.concatenate([known_dhf, dhf_pred]))
    e_hull, facet = hull.e_above_hull(cand_fractions, dhf_pred)

    step("naming phases and decompositions")
    formulas = formulas_from_counts(counts, system)
    known_formulas = formulas_from_counts(known_rows, system)
    names = list(system) + known_formulas + formulas
    decompositions = [format_decomposition(parts, names) for parts in hull.decomposition(cand_fractions, facet)]

    known_value = np.where(is_known, known_dhf[np.maximum(known_index, 0)] if len(known_dhf) else np.nan, np.nan)
    table = pd.DataFrame(
        {
            "formula": formulas,
            "dhf_pred_ev_per_atom": dhf_pred,
            "e_above_hull_pred_ev_per_atom": e_hull,
            "known_dhf_ev_per_atom": known_value,
            "decomposition": decompositions,
        }
    )
    if std is not None:
        table["dhf_std_ev_per_atom"] = std
        table["p_stable"] = probability_within(e_hull, std, options.e_hull_tolerance_ev_per_atom)
    table["is_known"] = is_known
    table = table.sort_values(["e_above_hull_pred_ev_per_atom", "dhf_pred_ev_per_atom", "formula"], kind="mergesort")
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    table = table.reset_index(drop=True)

    n_known = len(known_rows)
    stable_candidates = [i - k - n_known for i in hull.vertices if i >= k + n_known]
    phase_diagram_inputs = (
        known_formulas + [formulas[i] for i in stable_candidates],
        np.concatenate([known_dhf, dhf_pred[stable_candidates]]).tolist(),
        ["known"] * n_known + ["predicted"] * len(stable_candidates),
    )
    return ScreenResult(
        chemsys=system,
        table=table,
        phase_diagram_inputs=phase_diagram_inputs,
        n_candidates=len(counts),
        model_name=predictor.name,
        model_version=predictor.version,
        weights_sha256=predictor.weights_sha256,
        run_id=str(uuid.uuid4()),
        n_known=n_known,
        warnings=warnings,
    )


def plot_screen(result: ScreenResult, path, *, top: int = 10, show_unstable_ev_per_atom: float = 0.2):
    """Draw the screen's phase diagram to ``path`` with pymatgen's ``PDPlotter`` (matplotlib).

    Ternary and quaternary systems only. The known phases and the ``top`` ranked new candidates
    (highlighted) are drawn as pymatgen draws a phase diagram. Returns ``path``.
    """
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from pymatgen.analysis.phase_diagram import PDEntry, PDPlotter, PhaseDiagram
    from pymatgen.core import Composition

    if len(result.chemsys) not in (3, 4):
        raise ScreenError(f"phase diagrams are drawn for ternary and quaternary systems, not {'-'.join(result.chemsys)}")
    # Known phases plus only the ``top`` ranked new candidates: a quaternary hull with every
    # predicted phase on it would list hundreds of labels.
    base = result.phase_diagram
    known = [e for e in base.all_entries if e.attribute != "predicted"]
    marked = []
    for row in result.table.head(max(top, 0)).itertuples(index=False):
        if not row.is_known:
            composition = Composition(row.formula)
            marked.append(PDEntry(composition, row.dhf_pred_ev_per_atom * composition.num_atoms, name=row.formula, attribute="predicted"))
    phase_diagram = PhaseDiagram(known + marked, elements=base.elements)
    threshold = max([show_unstable_ev_per_atom] + [phase_diagram.get_e_above_hull(e) + 1e-6 for e in marked])
    plotter = PDPlotter(phase_diagram, show_unstable=threshold, backend="matplotlib")
    ax = plotter.get_plot(label_unstable=False, highlight_entries=marked)
    figure = ax.get_figure()
    if len(result.chemsys) == 4:
        figure.set_size_inches(12, 10)
    figure.suptitle(f"{'-'.join(result.chemsys)}: known (OQMD) and predicted phases; predicted ones highlighted")
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    figure.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(figure)
    tmp.replace(path)
    return path
