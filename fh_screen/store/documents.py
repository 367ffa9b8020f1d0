"""Store documents (emmet style): units in field names, one pydantic model per collection.

Three collections, one persistence model:

* ``reference`` — :class:`ReferenceEntryDoc`: one DFT (OQMD) entry per reduced formula;
* ``predictions`` — :class:`PredictionDoc`: (formula, model identity) → predicted ΔH_f and σ,
  nothing screen-specific, so a later screen never changes an earlier one's numbers;
* ``screens`` — :class:`ScreenDoc`: one document per run id (system, options, model identity,
  ranked candidates, selection). It is the very document the prescreen job returns, and the
  CLI writes the same one.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fh_screen.run_ids import new_run_id  # noqa: F401 - part of this module's API
from fh_screen.version import __version__

__all__ = [
    "DEFAULT_KEEP_TOP",
    "RESULT_SOURCES",
    "Candidate",
    "PredictionDoc",
    "Problem",
    "ReferenceEntryDoc",
    "RUN_ID_PATTERN",
    "ScreenDoc",
    "chemsys_of",
    "elements_of",
    "new_run_id",
    "prediction_id",
    "subsystems",
    "utcnow",
]


#: Sources whose reference entries are made from the results brought back from atomate2 (the
#: results builder's labels, :data:`fh_screen.store.results_builder.SOURCES` and
#: ``FORCE_FIELD_SOURCES``): each entry is the lowest successful result of its composition, so
#: these sources are neither ingested into nor removed by hand (that would lose or mix results).
RESULT_SOURCES = frozenset({"atomate2-vasp", "chgnet", "mace", "m3gnet"})

_SYMBOL = re.compile(r"[A-Z][a-z]?")

#: How many ranked candidates a screens document keeps by default (CLI and jobs alike): enough
#: for any hand-off, small enough for MongoDB's 16 MB document limit on a senary screen.
DEFAULT_KEEP_TOP = 1000

#: The one run-id format: UTC time stamp to the millisecond (sortable) and 8 hex digits.
RUN_ID_PATTERN = re.compile(r"\d{8}T\d{9}-[0-9a-f]{8}")


def utcnow() -> datetime:
    """Now, as a naive UTC datetime to the millisecond: what MongoDB keeps and hands back, so a
    document reads the same (and sorts the same) from the embedded store and from MongoDB."""
    moment = datetime.now(timezone.utc).replace(tzinfo=None)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


@lru_cache(maxsize=1 << 18)
def elements_of(formula: str) -> tuple[str, ...]:
    """Sorted element symbols of a pymatgen reduced formula (``LiFePO4`` → Fe, Li, O, P).

    A regular expression on the symbols, tested against pymatgen's ``Composition.elements``.
    """
    return tuple(sorted(set(_SYMBOL.findall(formula))))


def chemsys_of(elements) -> str:
    """Chemical system as pymatgen writes it: symbols sorted alphabetically, joined by ``-``."""
    return "-".join(sorted(elements))


def subsystems(chemsys: str | list[str] | tuple[str, ...]) -> list[str]:
    """Every non-empty sub-system of a chemical system (``Li-O`` → ``Li``, ``O``, ``Li-O``).

    The system is read by fh-screen's one chemical-system parser
    (:func:`fh_screen.chem.candidates.parse_chemsys`, any element symbol allowed), so the store and
    the screen accept and refuse the same texts; bad input raises a one-line ``ChemsysError``.
    """
    from itertools import combinations

    from fh_screen.chem.candidates import parse_chemsys
    from fh_screen.chem.formula import ALL_ELEMENT_SYMBOLS

    unique = parse_chemsys(chemsys, ALL_ELEMENT_SYMBOLS)
    return ["-".join(c) for n in range(1, len(unique) + 1) for c in combinations(unique, n)]


def prediction_id(formula: str, model_name: str, model_version: str, weights_sha256: str) -> str:
    """Store key of a prediction: one per formula and model (name, version, weights)."""
    return f"{formula}|{model_name}@{model_version}|{(weights_sha256 or 'unhashed')[:16]}"


class ReferenceEntryDoc(BaseModel):
    """One OQMD composition: the lowest DFT formation enthalpy of its reduced formula."""

    formula: str = Field(description="pymatgen reduced formula, the store key.")
    elements: list[str] = Field(description="Element symbols, sorted alphabetically.")
    chemsys: str = Field(description="Chemical system, e.g. Fe-Li-O-P (sorted, as pymatgen writes it).")
    nelements: int = Field(description="Number of elements.")
    dhf_ev_per_atom: float = Field(description="DFT formation enthalpy in eV/atom.")
    source: str = Field("oqmd", description="Database the value comes from.")
    source_id: str | None = Field(None, description="Entry id in the source database, when known.")
    source_version: str | None = Field(None, description="Source database version, when known.")
    source_file: str | None = Field(None, description="Name of the file the entry was ingested from.")
    functional: str | None = Field(None, description="Method of a computed entry: force field (MLFF.CHGNet) or VASP "
                                                     "run type (GGA, GGA+U); None for database entries.")
    result_id: str | None = Field(None, description="The `results` document it stands for (a computed entry: "
                                                    "structure, energy, element references), when brought back.")
    passed_outlier_filter: bool = Field(True, description="False for values outside (-20, 5) eV/atom.")
    last_updated: datetime = Field(default_factory=utcnow, description="When this entry was written (UTC).")

    @classmethod
    def from_formula(cls, formula: str, dhf_ev_per_atom: float, **kwargs) -> ReferenceEntryDoc:
        """Build from a reduced formula, filling elements, chemsys and nelements."""
        elements = elements_of(formula)
        return cls(
            formula=formula,
            elements=list(elements),
            chemsys=chemsys_of(elements),
            nelements=len(elements),
            dhf_ev_per_atom=float(dhf_ev_per_atom),
            **kwargs,
        )


class PredictionDoc(BaseModel):
    """A formation enthalpy predicted by an fh-screen model for one composition.

    Keyed by (formula, model identity) only: a screen's energies above the hull and run ids live
    in the ``screens`` collection (:class:`ScreenDoc`), so saving one screen never rewrites another.
    """

    prediction_id: str = Field(description="Store key: formula | model name@version | weights hash prefix.")
    formula: str = Field(description="pymatgen reduced formula.")
    elements: list[str] = Field(description="Element symbols, sorted alphabetically.")
    chemsys: str = Field(description="Chemical system, e.g. Fe-Li-O-P.")
    nelements: int = Field(description="Number of elements.")
    dhf_pred_ev_per_atom: float = Field(description="Predicted formation enthalpy in eV/atom.")
    dhf_std_ev_per_atom: float | None = Field(None, description="Ensemble spread in eV/atom (ensembles only).")
    out_of_domain: bool = Field(False, description="True when an element never occurs in the training data.")
    model_name: str = Field(description="Name of the model that made the prediction.")
    model_version: str = Field(description="Version of that model.")
    model_weights_sha256: str = Field(description="sha256 of the model's checkpoint file.")
    last_updated: datetime = Field(default_factory=utcnow, description="When the prediction was made (UTC).")


# -- screens -----------------------------------------------------------------------------------


class Problem(BaseModel):
    """Something that failed for one item of a stage; the flow carries on with the others."""

    stage: str = Field(description="screen, prescreen, structures, prerelax or handoff")
    formula: str | None = Field(None, description="composition concerned (None: the whole stage)")
    message: str = Field(description="one-line reason")


class Candidate(BaseModel):
    """One ranked composition of a screened chemical system (a row of ``ScreenResult.table``).

    The typed fields are the screen's core columns; any further column the screen adds is kept
    as an extra field (JSON-ready), so the document follows the screen without a schema change.
    """

    model_config = ConfigDict(extra="allow")

    rank: int = Field(description="1 = the new candidate of highest P(stable); known compositions follow the new ones")
    formula: str = Field(description="reduced formula")
    dhf_pred_ev_per_atom: float | None = Field(None, description="predicted formation enthalpy")
    e_above_hull_pred_ev_per_atom: float | None = Field(None, description="energy above the hull of the known (DFT) phases; negative: predicted below it")
    dhf_std_ev_per_atom: float | None = Field(None, description="ensemble spread (None for one network)")
    p_stable: float | None = Field(None, description="calibrated probability that DFT puts the composition on or below the hull "
                                                     "of the known phases (new rows; known rows: 1 on that hull, 0 above it); "
                                                     "summed over new rows: the expected number of new stable compounds")
    known_dhf_ev_per_atom: float | None = Field(None, description="reference value when the phase is known")
    is_known: bool = Field(False, description="the composition is in the reference data")
    decomposition: str | None = Field(None, description="predicted decomposition products")
    selected: bool = Field(False, description="on the screen's short list for DFT: a new candidate with P(stable) >= "
                                              "ScreenOptions.select_p_min, or among the dft_budget best "
                                              "(fh_screen.screening.selection_mask)")
    refined: bool = Field(True, description="predicted by the screen's model itself (False: by the fast prefilter only)")

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Candidate:
        """Build from one ``ScreenResult.records()`` row (NaN → None, numpy scalars → Python)."""
        return cls(**{str(key): _plain(value) for key, value in record.items()})


def _plain(value: Any) -> Any:
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


_NOTHING_SELECTED = "no candidate passed the selection (top_n / e_hull_max_ev_per_atom / select_known)"


class ScreenDoc(BaseModel):
    """One screen of a chemical system: the ``screens`` collection's document, keyed by ``run_id``.

    The prescreen job returns exactly this document (and writes it to ``screens``); the CLI
    writes the same for every ``fh-screen SYSTEM`` run unless ``--no-store``.
    """

    run_id: str = Field(default_factory=new_run_id, description="unique run id (store key), see new_run_id")
    chemsys: str = Field(description="screened system, elements sorted, e.g. 'Fe-Li-O'")
    origin: str = Field("python", description="who ran the screen: cli, job or python")
    model_name: str = Field(description="model used for the predictions")
    model_version: str = Field(description="model version")
    model: str = Field("", description="the model as name@version (filled from model_name and model_version)")
    fh_screen_version: str = Field(__version__, description="fh-screen version that made the document")
    weights_sha256: str = Field("", description="sha256 of the model weights file")
    options: dict[str, Any] = Field(default_factory=dict, description="ScreenOptions used (every field)")
    reference: str | None = Field(None, description="where the known phases came from (None: none used)")
    sources: list[str] | None = Field(None, description="reference sources that counted for the hull, e.g. "
                                                         "['chgnet', 'oqmd'], sorted (None: every source the store held)")
    hull_sources: list[str] | None = Field(
        None, description="sources of the known values the hull stood on (each known composition's lowest "
                          "entry's), sorted, whether or not the candidates kept hold the known rows (None: not "
                          "recorded, documents made before 2026-12-07)")
    prefilter: str | None = Field(None, description="the cascade's fast model as name@version (None: no cascade, "
                                                     "or not recorded: documents made before 2026-12-07)")
    stability_model: str | None = Field(None, description="the P(stable) classifier as name@version (None: none, "
                                                           "or not recorded: documents made before 2026-12-07)")
    stability_head_model: str | None = Field(
        None, description="the classifier that picked the P(stable) head the model refined under the cascade "
                          "(None: no cascade, or not recorded: documents made before 2026-12-07)")
    n_reference: int = Field(0, description="known phases of the system that shaped the hull")
    n_candidates: int = Field(0, description="number of candidate compositions screened")
    keep_top: int | None = Field(DEFAULT_KEEP_TOP, description="best candidates kept in this document (None: all); "
                                                          "the short list and the known compositions are kept beyond them")
    candidates: list[Candidate] = Field(default_factory=list, description="ranked candidates (best first)")
    selection: dict[str, Any] = Field(default_factory=dict, description="top_n / e_hull_max_ev_per_atom / select_known")
    selected: list[Candidate] = Field(default_factory=list, description="candidates handed to the next stage")
    selected_formulas: list[str] = Field(
        default_factory=list,
        description="formulas of the short list in rank order: the screen's `selected` rows, or a job's `selected`")
    problems: list[Problem] = Field(default_factory=list, description="what went wrong or needs a note")
    created_at: datetime = Field(default_factory=utcnow,
                                 description="when the screen ran (UTC, to the millisecond as MongoDB keeps it)")

    @model_validator(mode="after")
    def _model_label(self) -> ScreenDoc:
        if not self.model:
            self.model = f"{self.model_name}@{self.model_version}"
        return self

    @classmethod
    def from_result(
        cls,
        result,
        options,
        *,
        origin: str = "python",
        keep_top: int | None = DEFAULT_KEEP_TOP,
        reference: str | None = None,
        sources: Sequence[str] | None = None,
    ) -> ScreenDoc:
        """The document of a :class:`~fh_screen.screening.result.ScreenResult` screened with ``options``.

        The run id is the result's own when it already has the one run-id format, else a new one.
        ``sources``: the parsed source names the hull was restricted to (None: all).
        """
        import dataclasses

        import numpy as np

        # only the rows kept are converted: the best keep_top, and beyond them every row a selection can
        # hand on (the short list, the known compositions), so that what select() hands on never depends on keep_top
        table = result.table
        handed_on = np.zeros(len(table), dtype=bool)
        for column in ("selected", "is_known"):
            if column in table.columns:
                handed_on |= table[column].to_numpy(dtype=bool)
        records = result.records(limit=keep_top, also=handed_on if keep_top is not None else None)
        run_id = result.run_id if RUN_ID_PATTERN.fullmatch(str(result.run_id)) else new_run_id()
        opts = dataclasses.asdict(options) if dataclasses.is_dataclass(options) else dict(options or {})
        return cls(
            run_id=run_id,
            chemsys="-".join(result.chemsys),
            origin=origin,
            model_name=result.model_name,
            model_version=result.model_version,
            weights_sha256=result.weights_sha256,
            options=opts,
            reference=reference,
            sources=None if sources is None else sorted(str(name) for name in sources),
            hull_sources=result.known_sources() if getattr(result, "hull_sources", None) is not None else None,
            prefilter=getattr(result, "prefilter", None),
            stability_model=getattr(result, "stability_model", None),
            stability_head_model=getattr(result, "stability_head_model", None),
            n_reference=int(getattr(result, "n_known", 0)),
            n_candidates=int(result.n_candidates),
            keep_top=keep_top,
            candidates=[Candidate.from_record(r) for r in records],
            # the screen's own short list (the table's `selected` column); a job's select() replaces it
            selected_formulas=[str(f) for f in result.table["formula"][result.table["selected"].to_numpy(bool)]]
            if "selected" in result.table.columns else [],
            problems=[Problem(stage="screen", message=w) for w in getattr(result, "warnings", [])],
        )

    def select(
        self, top_n: int | None = 5, e_hull_max_ev_per_atom: float | None = None, select_known: bool = False
    ) -> ScreenDoc:
        """A copy whose ``selected`` holds the candidates to hand on, in rank order.

        The rows chosen by :func:`fh_screen.screening.selection.short_list` (the screen's
        ``selected`` new candidates, plus known compositions when ``select_known``; of at least two
        elements, with energy above the hull ≤ ``e_hull_max_ev_per_atom`` (when given), best
        ``top_n`` (when given)). An empty selection is reported in ``problems``, not raised.
        """
        from fh_screen.errors import FhScreenError
        from fh_screen.screening.selection import short_list

        if top_n is not None and top_n < 0:
            raise FhScreenError(f"top_n must be 0 or more, got {top_n}")
        doc = self.model_copy(deep=True)
        rows = doc.candidates
        chosen = [rows[i] for i in short_list(
            [c.rank for c in rows], [c.is_known for c in rows], [c.selected for c in rows],
            [len(elements_of(c.formula)) for c in rows], [c.e_above_hull_pred_ev_per_atom for c in rows],
            top_n=top_n, e_hull_max_ev_per_atom=e_hull_max_ev_per_atom, select_known=select_known,
        )]
        doc.selected = chosen
        doc.selected_formulas = [c.formula for c in chosen]
        doc.selection = {"top_n": top_n, "e_hull_max_ev_per_atom": e_hull_max_ev_per_atom, "select_known": select_known}
        doc.problems = [p for p in doc.problems if p.message != _NOTHING_SELECTED]
        if not chosen:
            doc.problems.append(Problem(stage="prescreen", message=_NOTHING_SELECTED))
        return doc

    def summary(self) -> dict[str, Any]:
        """The listing row of ``fh-screen runs``: everything but the candidate lists."""
        return {
            "run_id": self.run_id,
            "created_at": self.created_at,
            "chemsys": self.chemsys,
            "origin": self.origin,
            "model": f"{self.model_name}@{self.model_version}",
            "n_candidates": self.n_candidates,
            "n_reference": self.n_reference,
            "top": [c.formula for c in self.candidates[:3]],
            "selected_formulas": self.selected_formulas,
        }
