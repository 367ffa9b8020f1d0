"""jobflow jobs and makers: prescreen a chemical system, build trial structures, hand the best to DFT.

Layout (one job per module)::

    schemas.py     pydantic output documents (PrescreenDocument, StructuresDocument, HandoffDocument)
    prescreen.py   PrescreenMaker + small reusable jobs (enumerate / predict / rank / select)
    structures.py  StructureMaker: AFLOW prototypes ranked by substitution probability, pyxtal fallback
    handoff.py     HandoffMaker: optional force-field pre-relax, then atomate2 DFT via Response
    flows.py       PrescreenToDFTMaker, insert_prescreen, local_job_store

Quick start::

    from jobflow import run_locally
    from fh_screen.jobs import PrescreenToDFTMaker, local_job_store
    flow = PrescreenToDFTMaker().make("Li-Fe-P-O")
"""

from __future__ import annotations

from fh_screen.jobs.flows import PrescreenToDFTMaker, TemplateMaker, insert_prescreen, local_job_store, read_output
from fh_screen.jobs.handoff import HandoffMaker, chgnet_prerelax_maker, default_dft_maker
from fh_screen.jobs.prescreen import PrescreenMaker, select_candidates
from fh_screen.jobs.schemas import (
    Candidate,
    HandoffDocument,
    HandoffEntry,
    PrescreenDocument,
    Problem,
    StructureCandidate,
    StructuresDocument,
)
from fh_screen.jobs.structures import StructureMaker, make_structures, structures_for_composition

__all__ = [
    "Candidate",
    "HandoffDocument",
    "HandoffEntry",
    "HandoffMaker",
    "PrescreenDocument",
    "PrescreenMaker",
    "PrescreenToDFTMaker",
    "Problem",
    "StructureCandidate",
    "StructureMaker",
    "StructuresDocument",
    "TemplateMaker",
    "chgnet_prerelax_maker",
    "default_dft_maker",
    "insert_prescreen",
    "local_job_store",
    "make_structures",
    "read_output",
    "select_candidates",
    "structures_for_composition",
]
