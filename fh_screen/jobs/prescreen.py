"""Prescreen jobs: a chemical system in, ranked candidates (a :class:`PrescreenDocument`) out.

Thin jobflow wrappers over the core (:func:`fh_screen.screening.screen`, :mod:`fh_screen.candidates`,
:class:`fh_screen.predictor.Predictor`, :mod:`fh_screen.hull`):

* :class:`PrescreenMaker` — one job: screen the system and select the candidates to hand on;
* :func:`enumerate_job`, :func:`predict_job`, :func:`rank_job`, :func:`select_job` — the same
  steps as separate small jobs, for users who want to swap one (e.g. their own predictor) or
  re-select an existing screen with another cut-off without re-running it.

Selection (:func:`select_candidates`): unknown compositions (unless ``include_known``) of at least
two elements, with predicted energy above the hull ≤ ``e_hull_max_ev_per_atom`` (when given),
best ``top_n`` by rank (when given).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from jobflow import Maker, job

from fh_screen.errors import FhScreenError
from fh_screen.jobs.schemas import Candidate, PrescreenDocument, Problem

logger = logging.getLogger(__name__)

__all__ = [
    "PrescreenMaker",
    "enumerate_job",
    "load_reference",
    "predict_job",
    "prescreen_job",
    "rank_job",
    "run_prescreen",
    "select_candidates",
    "select_job",
]


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _as_document(doc: PrescreenDocument | dict) -> PrescreenDocument:
    return doc if isinstance(doc, PrescreenDocument) else PrescreenDocument.model_validate(
        {k: v for k, v in dict(doc).items() if not k.startswith("@")}
    )


def select_candidates(
    doc: PrescreenDocument | dict,
    top_n: int | None = 5,
    e_hull_max_ev_per_atom: float | None = None,
    include_known: bool = False,
) -> PrescreenDocument:
    """A copy of ``doc`` whose ``selected`` holds the candidates to hand on (rank order).

    An empty selection is reported in ``problems``, not raised.
    """
    doc = _as_document(doc).model_copy(deep=True)
    if top_n is not None and top_n < 0:
        raise FhScreenError(f"top_n must be 0 or more, got {top_n}")
    chosen = []
    for candidate in sorted(doc.candidates, key=lambda c: c.rank):
        if candidate.is_known and not include_known:
            continue
        if _n_elements(candidate.formula) < 2:
            continue
        e_hull = candidate.e_above_hull_pred_ev_per_atom
        if e_hull_max_ev_per_atom is not None and (e_hull is None or e_hull > e_hull_max_ev_per_atom):
            continue
        chosen.append(candidate)
        if top_n is not None and len(chosen) >= top_n:
            break
    doc.selected = chosen
    doc.selected_formulas = [c.formula for c in chosen]
    doc.selection = {"top_n": top_n, "e_hull_max_ev_per_atom": e_hull_max_ev_per_atom, "include_known": include_known}
    doc.problems = [p for p in doc.problems if p.message != _NOTHING_SELECTED]
    if not chosen:
        doc.problems.append(Problem(stage="prescreen", message=_NOTHING_SELECTED))
    return doc


_NOTHING_SELECTED = "no candidate passed the selection (top_n / e_hull_max / include_known)"


def _n_elements(formula: str) -> int:
    from pymatgen.core import Composition

    try:
        return len(Composition(formula).elements)
    except Exception:  # noqa: BLE001
        return 0


def load_reference(chemsys: str | Sequence[str], reference: str | None):
    """Known entries for the screen: ``"store"`` (fh-screen's reference store), a data file, or None.

    Returns ``(DataFrame | None, problem message | None)``; a missing store is a note, not an error.
    """
    if reference is None:
        return None, None
    if reference == "store":
        try:
            from fh_screen.store import FhScreenStore

            label = chemsys if isinstance(chemsys, str) else "-".join(chemsys)
            with FhScreenStore.from_settings(read_only=True) as store:
                frame = store.reference_frame(chemsys=label)
        except Exception as exc:  # noqa: BLE001 - no store is not fatal: hull from predictions only
            return None, f"no reference entries used: {_one_line(exc)}"
        if frame is None or len(frame) == 0:
            return None, "no reference entries used: the reference store has none for this system"
        return frame, None
    from fh_screen.data import load_oqmd

    frame = load_oqmd(reference)
    frame = frame[0] if isinstance(frame, tuple) else frame
    return frame, None


def run_prescreen(
    chemsys: str | Sequence[str],
    *,
    model: str | None = None,
    screen_options: dict[str, Any] | None = None,
    reference: str | None = "store",
    top_n: int | None = 5,
    e_hull_max_ev_per_atom: float | None = None,
    include_known: bool = False,
    keep_top: int | None = 500,
) -> PrescreenDocument:
    """Screen ``chemsys`` and select the candidates to hand on (the body of :func:`prescreen_job`).

    Screening errors (limits, bad options) are reported in ``problems`` with no candidates.
    ``keep_top`` caps how many ranked candidates the document stores (None: all).
    """
    from fh_screen.predictor import Predictor
    from fh_screen.screening import ScreenOptions, screen

    label = chemsys if isinstance(chemsys, str) else "-".join(chemsys)
    options = dict(screen_options or {})
    problems: list[Problem] = []
    try:
        predictor = Predictor.from_name(model)
        known, note = load_reference(chemsys, reference)
        if note:
            problems.append(Problem(stage="prescreen", message=note))
        result = screen(chemsys, predictor=predictor, known=known, options=ScreenOptions(**options))
    except (FhScreenError, TypeError) as exc:
        problems.append(Problem(stage="prescreen", message=_one_line(exc)))
        doc = PrescreenDocument(chemsys=label, run_id="", model_name=str(model or ""), model_version="",
                                options=options, problems=problems)
        return select_candidates(doc, top_n, e_hull_max_ev_per_atom, include_known)
    records = result.records()
    if keep_top is not None:
        records = records[:keep_top]
    problems.extend(Problem(stage="prescreen", message=w) for w in result.warnings)
    doc = PrescreenDocument(
        chemsys="-".join(result.chemsys),
        run_id=result.run_id,
        model_name=result.model_name,
        model_version=result.model_version,
        weights_sha256=result.weights_sha256,
        options=options,
        n_candidates=result.n_candidates,
        candidates=[Candidate.from_record(r) for r in records],
        problems=problems,
    )
    return select_candidates(doc, top_n, e_hull_max_ev_per_atom, include_known)


@job(output_schema=PrescreenDocument)
def prescreen_job(chemsys: str | Sequence[str], **kwargs) -> PrescreenDocument:
    """Job form of :func:`run_prescreen`."""
    return run_prescreen(chemsys, **kwargs)


@job(output_schema=PrescreenDocument)
def select_job(doc: PrescreenDocument | dict, top_n: int | None = 5, e_hull_max_ev_per_atom: float | None = None,
               include_known: bool = False) -> PrescreenDocument:
    """Re-select an existing prescreen (another top N / E_hull cut-off) without re-screening."""
    return select_candidates(doc, top_n, e_hull_max_ev_per_atom, include_known)


@job
def enumerate_job(chemsys: str | Sequence[str], max_atoms: int = 20, max_per_element: int | None = None,
                  charge_neutral: bool = False) -> dict:
    """Candidate formulas of ``chemsys`` and its subsystems: ``{"chemsys": [...], "formulas": [...]}``."""
    from fh_screen.candidates import charge_neutral_mask, enumerate_counts, formulas_from_counts, parse_chemsys

    system = parse_chemsys(chemsys)
    counts = enumerate_counts(len(system), max_atoms, max_per_element)
    if charge_neutral:
        counts = counts[charge_neutral_mask(counts, system)]
    return {"chemsys": list(system), "formulas": formulas_from_counts(counts, system)}


@job
def predict_job(formulas: Sequence[str], model: str | None = None) -> dict:
    """Predicted ΔH_f of each formula: ``{"formula", "dhf_pred_ev_per_atom", ...}`` columns plus model identity."""
    from fh_screen.predictor import Predictor

    predictor = Predictor.from_name(model)
    formulas = list(formulas)
    prediction = predictor.predict_formulas(formulas)
    std = prediction.dhf_std_ev_per_atom
    return {
        "formula": formulas,
        "dhf_pred_ev_per_atom": [None if v != v else float(v) for v in prediction.dhf_ev_per_atom],
        "dhf_std_ev_per_atom": None if std is None else [None if v != v else float(v) for v in std],
        "errors": list(prediction.errors),
        "model_name": predictor.name,
        "model_version": predictor.version,
        "weights_sha256": predictor.weights_sha256,
    }


@job(output_schema=PrescreenDocument)
def rank_job(predictions: dict, chemsys: str | Sequence[str], top_n: int | None = 5,
             e_hull_max_ev_per_atom: float | None = None) -> PrescreenDocument:
    """Rank predicted formulas by energy above the hull of the elements and the predictions.

    Uses :func:`fh_screen.hull.build_hull` (the screen's hull); formulas that failed prediction are
    reported in ``problems``.
    """
    import uuid

    import numpy as np
    from pymatgen.core import Composition

    from fh_screen.candidates import parse_chemsys
    from fh_screen.hull import build_hull, format_decomposition

    system = parse_chemsys(chemsys)
    problems, formulas, energies, rows = [], [], [], []
    for formula, value, error in zip(predictions["formula"], predictions["dhf_pred_ev_per_atom"], predictions["errors"]):
        if value is None:
            problems.append(Problem(stage="prescreen", formula=formula, message=error or "no prediction"))
            continue
        amounts = Composition(formula).fractional_composition
        rows.append([amounts[el] for el in system])
        formulas.append(Composition(formula).reduced_formula)
        energies.append(float(value))
    fractions = np.array(rows, dtype=float).reshape(-1, len(system))
    energies_arr = np.array(energies, dtype=float)
    hull = build_hull(system, fractions, energies_arr)
    e_hull, facet = hull.e_above_hull(fractions, energies_arr)
    names = list(system) + formulas
    decompositions = [format_decomposition(p, names) for p in hull.decomposition(fractions, facet)]
    order = sorted(range(len(formulas)), key=lambda i: (e_hull[i], energies[i], formulas[i]))
    candidates = [
        Candidate(rank=r + 1, formula=formulas[i], dhf_pred_ev_per_atom=energies[i],
                  e_above_hull_pred_ev_per_atom=float(e_hull[i]), decomposition=decompositions[i])
        for r, i in enumerate(order)
    ]
    doc = PrescreenDocument(
        chemsys="-".join(system), run_id=str(uuid.uuid4()), model_name=predictions.get("model_name", ""),
        model_version=predictions.get("model_version", ""), weights_sha256=predictions.get("weights_sha256", ""),
        n_candidates=len(candidates), candidates=candidates, problems=problems,
    )
    return select_candidates(doc, top_n, e_hull_max_ev_per_atom)


@dataclass
class PrescreenMaker(Maker):
    """Maker of the prescreen job: a chemical system in, a :class:`PrescreenDocument` out.

    Parameters
    ----------
    name
        Job name.
    model
        Shipped model name or checkpoint path (None: the default model).
    screen_options
        Keyword arguments of :class:`fh_screen.screening.ScreenOptions` (max_atoms, charge_neutral, ...).
    reference
        Known entries shaping the hull: ``"store"`` (the fh-screen reference store, skipped with a
        note when absent), a path to an OQMD-style data file, or None.
    top_n, e_hull_max_ev_per_atom, include_known
        Selection of the candidates handed on (see :func:`select_candidates`).
    keep_top
        How many ranked candidates the output document keeps (None: all).
    """

    name: str = "fh-screen prescreen"
    model: str | None = None
    screen_options: dict = field(default_factory=lambda: {"max_atoms": 12, "charge_neutral": True})
    reference: str | None = "store"
    top_n: int | None = 5
    e_hull_max_ev_per_atom: float | None = None
    include_known: bool = False
    keep_top: int | None = 500

    def make(self, chemsys: str | Sequence[str]):
        """Prescreen job for ``chemsys`` (e.g. ``"Li-Fe-P-O"``); a malformed system raises here, one line."""
        from fh_screen.candidates import parse_chemsys

        if isinstance(chemsys, str) or (isinstance(chemsys, Sequence) and all(isinstance(e, str) for e in chemsys)):
            chemsys = "-".join(parse_chemsys(chemsys))
        made = prescreen_job(
            chemsys,
            model=self.model,
            screen_options=dict(self.screen_options),
            reference=self.reference,
            top_n=self.top_n,
            e_hull_max_ev_per_atom=self.e_hull_max_ev_per_atom,
            include_known=self.include_known,
            keep_top=self.keep_top,
        )
        made.name = f"{self.name} {chemsys}" if isinstance(chemsys, str) else self.name
        return made
