"""Pydantic output documents of the fh-screen jobflow jobs (emmet style: they land in the JobStore).

* :class:`PrescreenDocument` — one screened chemical system: the ranked candidates (``candidates``),
  the selection handed on (``selected``), model identity and run id.
* :class:`StructuresDocument` — trial crystal structures for the selected compositions.
* :class:`HandoffDocument` — which structure of each composition went to DFT (and why others did not).

Every stage records what went wrong in ``problems`` instead of raising, so one bad composition or
structure never stops the rest of a flow.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, Field
from pymatgen.core import Structure

__all__ = [
    "Candidate",
    "HandoffDocument",
    "HandoffEntry",
    "PrescreenDocument",
    "Problem",
    "StructureCandidate",
    "StructuresDocument",
]


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Problem(BaseModel):
    """Something that failed for one item of a stage; the flow carries on with the others."""

    stage: str = Field(description="prescreen, structures, prerelax or handoff")
    formula: str | None = Field(None, description="composition concerned (None: the whole stage)")
    message: str = Field(description="one-line reason")


class Candidate(BaseModel):
    """One ranked composition of a screened chemical system (a row of ``ScreenResult.table``)."""

    rank: int = Field(description="1 = most stable by predicted energy above the hull")
    formula: str = Field(description="reduced formula")
    dhf_pred_ev_per_atom: float | None = Field(None, description="predicted formation enthalpy")
    e_above_hull_pred_ev_per_atom: float | None = Field(
        None, description="energy above the hull of known phases + predicted candidates"
    )
    dhf_std_ev_per_atom: float | None = Field(None, description="ensemble spread (None for one network)")
    p_stable: float | None = Field(None, description="probability of lying on the hull (ensembles only)")
    known_dhf_ev_per_atom: float | None = Field(None, description="reference value when the phase is known")
    is_known: bool = Field(False, description="the composition is in the reference data")
    decomposition: str | None = Field(None, description="predicted decomposition products")

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Candidate:
        """Build from one ``ScreenResult.records()`` row, NaN → None, unknown columns dropped."""
        clean = {}
        for key in cls.model_fields:
            if key not in record:
                continue
            value = record[key]
            if isinstance(value, float) and value != value:  # NaN
                value = None
            elif hasattr(value, "item"):  # numpy scalar
                value = value.item()
            if key == "decomposition" and value is not None and not isinstance(value, str):
                value = str(value)
            clean[key] = value
        return cls(**clean)


class PrescreenDocument(BaseModel):
    """Output of the prescreen job: a chemical system ranked by the composition-only model."""

    chemsys: str = Field(description="screened system(s), e.g. 'Li-Fe-O' (several joined with ',')")
    run_id: str = Field(description="id of the screening run (ScreenResult.run_id)")
    model_name: str = Field(description="model used for the predictions")
    model_version: str = Field(description="model version")
    weights_sha256: str = Field("", description="sha256 of the model weights file")
    options: dict[str, Any] = Field(default_factory=dict, description="ScreenOptions used")
    selection: dict[str, Any] = Field(default_factory=dict, description="top_n / e_hull_max_ev_per_atom / include_known")
    n_candidates: int = Field(0, description="number of candidate compositions screened")
    candidates: list[Candidate] = Field(default_factory=list, description="ranked candidates (best first)")
    selected: list[Candidate] = Field(default_factory=list, description="candidates handed to the next stage")
    selected_formulas: list[str] = Field(default_factory=list, description="formulas of `selected`, in rank order")
    problems: list[Problem] = Field(default_factory=list, description="what went wrong (empty when all is well)")
    created_at: datetime = Field(default_factory=_now)


class StructureCandidate(BaseModel):
    """One trial crystal structure for a composition."""

    formula: str = Field(description="reduced formula of the composition")
    structure: Structure = Field(description="trial structure (unrelaxed)")
    source: str = Field(description="'prototype' (decorated AFLOW prototype) or 'random' (pyxtal)")
    prototype: str | None = Field(None, description="AFLOW label of the decorated prototype")
    prototype_name: str | None = Field(None, description="mineral / Strukturbericht name of the prototype")
    space_group: int | None = Field(None, description="space group number of the trial structure")
    substitution_probability: float | None = Field(
        None, description="pymatgen substitution probability of the species mapping (prototypes only)"
    )
    n_sites: int = Field(description="sites in the cell")


class StructuresDocument(BaseModel):
    """Trial structures of the selected compositions, best guess of each composition first."""

    formulas: list[str] = Field(default_factory=list, description="compositions asked for")
    structures: list[StructureCandidate] = Field(default_factory=list)
    problems: list[Problem] = Field(default_factory=list)
    created_at: datetime = Field(default_factory=_now)

    def for_formula(self, formula: str) -> list[StructureCandidate]:
        """The structures made for one composition, in rank order."""
        return [s for s in self.structures if s.formula == formula]


class HandoffEntry(BaseModel):
    """The structure of one composition sent to DFT."""

    formula: str
    structure: Structure = Field(description="structure handed to DFT (pre-relaxed when a pre-relax ran)")
    source: str = Field(description="origin of the trial structure (prototype / random)")
    prototype: str | None = None
    prerelaxed: bool = Field(False, description="a force-field relax ran before the handoff")
    energy_ev_per_atom: float | None = Field(None, description="force-field energy of the chosen structure")
    n_trials: int = Field(1, description="trial structures compared for this composition")
    dft_job_uuids: list[str] = Field(default_factory=list, description="uuids of the DFT jobs added for it")
    dft_flow_name: str | None = None


class HandoffDocument(BaseModel):
    """Output of the handoff job: one entry per composition sent to DFT, plus what failed."""

    mode: str = Field(description="how DFT was added: addition, detour or replace")
    dft_maker: str | None = Field(None, description="class name of the DFT maker (None: no DFT added)")
    prerelax_maker: str | None = Field(None, description="force field used for the pre-relax (None: none)")
    entries: list[HandoffEntry] = Field(default_factory=list)
    problems: list[Problem] = Field(default_factory=list)
    created_at: datetime = Field(default_factory=_now)

    @property
    def formulas(self) -> list[str]:
        """Compositions handed to DFT."""
        return [e.formula for e in self.entries]
