"""Pydantic output documents of the fh-screen jobflow jobs (emmet style: they land in the JobStore).

* :class:`~fh_screen.store.documents.ScreenDoc` (alias :data:`PrescreenDocument`) — one screened
  chemical system: the ranked candidates, the selection handed on, model identity and run id. The
  prescreen job returns it *and* writes it to the store's ``screens`` collection: one document.
* :class:`StructuresDocument` — trial crystal structures for the selected compositions.
* :class:`HandoffDocument` — which structure of each composition went to DFT (and why others did
  not); the handoff's output in every mode.

Every document records the fh-screen version that made it (``fh_screen_version``) and the model
whose screen it follows, as ``name@version`` (``model``; None where the input was given by hand).

Every stage records what went wrong for one item in ``problems`` instead of raising, so one bad
composition or structure never stops the rest of a flow; a stage that cannot run at all (no
reference data, bad options) fails with one line.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, Field
from pymatgen.core import Structure

from fh_screen.store.documents import Candidate, Problem, ScreenDoc
from fh_screen.version import __version__

__all__ = [
    "Candidate",
    "HandoffDocument",
    "HandoffEntry",
    "PrescreenDocument",
    "Problem",
    "ScreenDoc",
    "StructureCandidate",
    "StructuresDocument",
]

#: The prescreen job's output *is* the ``screens`` collection's document.
PrescreenDocument = ScreenDoc


def _now() -> datetime:
    return datetime.now(timezone.utc)


class StructureCandidate(BaseModel):
    """One trial crystal structure for a composition."""

    formula: str = Field(description="reduced formula of the composition")
    structure: Structure = Field(description="trial structure (unrelaxed)")
    source: str = Field(description="'prototype' (decorated AFLOW prototype), 'random' (pyxtal) or 'given'")
    prototype: str | None = Field(None, description="AFLOW label of the decorated prototype")
    prototype_name: str | None = Field(None, description="mineral / Strukturbericht name of the prototype")
    space_group: int | None = Field(None, description="space group number of the trial structure")
    substitution_probability: float | None = Field(
        None, description="pymatgen substitution probability of the species mapping (prototypes only)"
    )
    n_sites: int = Field(description="sites in the cell")


class StructuresDocument(BaseModel):
    """Trial structures of the selected compositions, best guess of each composition first."""

    fh_screen_version: str = Field(__version__, description="fh-screen version that made the document")
    model: str | None = Field(None, description="name@version of the model whose selection these are (None: formulas given)")

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
    source: str = Field(description="origin of the trial structure (prototype / random / given)")
    prototype: str | None = None
    prerelaxed: bool = Field(False, description="a force-field relax ran before the handoff")
    energy_ev_per_atom: float | None = Field(None, description="force-field energy of the chosen structure")
    n_trials: int = Field(1, description="trial structures compared for this composition")
    dft_job_uuids: list[str] = Field(default_factory=list, description="uuids of the DFT jobs added for it")
    dft_flow_name: str | None = None
    dft_output: Any = Field(
        None, description="output of the DFT flow (mode 'replace' only, once it ran; kept in the data store)"
    )


class HandoffDocument(BaseModel):
    """Output of the handoff, the same shape in every mode: one entry per composition sent to DFT."""

    fh_screen_version: str = Field(__version__, description="fh-screen version that made the document")
    model: str | None = Field(None, description="name@version of the model whose selection this is (None: structures given)")

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
