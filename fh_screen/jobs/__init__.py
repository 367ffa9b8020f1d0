"""jobflow jobs and makers: prescreen a chemical system, build trial structures, hand the best to DFT.

Layout::

    base.py        fh_screen_job: the one decorator of every maker's make (output schema, data routing, named checks)
    schemas.py     output documents (ScreenDoc alias PrescreenDocument, StructuresDocument, HandoffDocument)
    prescreen.py   PrescreenMaker: screen() on the system, select, save to the store's `screens`
    structures.py  StructureMaker: AFLOW prototypes ranked by substitution probability, pyxtal fallback
    handoff.py     HandoffMaker: optional force-field pre-relax, then atomate2 DFT via Response
    results.py     ResultsBackMaker: finished force-field / VASP results back into the store
    flows.py       PrescreenToDFTMaker, insert_prescreen, read_output
    bulk.py        BulkScreenMaker: a sweep of many systems in disjoint batches, one job each
    jobstore.py    local_job_store, job_store_spec / jobflow_yaml (JOB_STORE in ~/.jobflow.yaml)
    submit.py      run_flow(flow, "local" | "fireworks" | "jobflow-remote")

Quick start (``docs/jobs.md``)::

    from jobflow import run_locally
    from fh_screen.jobs import PrescreenToDFTMaker
    flow = PrescreenToDFTMaker().make("Li-Fe-P-O")
    run_locally(flow)            # JOB_STORE from ~/.jobflow.yaml

Every Maker's screen options are :class:`~fh_screen.screening.options.ScreenOptions` (the CLI's
model); every output document records ``fh_screen_version`` and the model's ``name@version``.

Below ``cli``: may import :mod:`fh_screen.service`, :mod:`fh_screen.store`,
:mod:`fh_screen.screening`, :mod:`fh_screen.models`, :mod:`fh_screen.chem`, :mod:`fh_screen.data`,
:mod:`fh_screen.settings`, :mod:`fh_screen.errors` and :mod:`fh_screen.version`; nothing in
fh-screen imports ``jobs`` except ``cli`` and the workflows.
"""

from __future__ import annotations

from fh_screen.jobs.base import DATA_KEYS, fh_screen_job
from fh_screen.jobs.bulk import BulkBatchDocument, BulkBatchMaker, BulkScreenMaker
from fh_screen.jobs.flows import PrescreenToDFTMaker, insert_prescreen, read_output
from fh_screen.jobs.handoff import HandoffMaker, chgnet_prerelax_maker, default_dft_maker
from fh_screen.jobs.jobstore import job_store, job_store_spec, jobflow_yaml, local_job_store
from fh_screen.jobs.prescreen import (
    PRESCREEN_SCREEN_DEFAULTS,
    PrescreenError,
    PrescreenMaker,
    screen_options_from,
    select_candidates,
)
from fh_screen.jobs.schemas import (
    Candidate,
    HandoffDocument,
    HandoffEntry,
    PrescreenDocument,
    Problem,
    ScreenDoc,
    StructureCandidate,
    StructuresDocument,
)
from fh_screen.jobs.structures import StructureMaker, make_structures, structures_for_composition

__all__ = [
    "DATA_KEYS",
    "BulkBatchDocument",
    "BulkBatchMaker",
    "BulkScreenMaker",
    "PRESCREEN_SCREEN_DEFAULTS",
    "Candidate",
    "HandoffDocument",
    "HandoffEntry",
    "HandoffMaker",
    "PrescreenDocument",
    "PrescreenError",
    "PrescreenMaker",
    "PrescreenToDFTMaker",
    "Problem",
    "ScreenDoc",
    "StructureCandidate",
    "StructureMaker",
    "StructuresDocument",
    "chgnet_prerelax_maker",
    "default_dft_maker",
    "fh_screen_job",
    "insert_prescreen",
    "job_store",
    "job_store_spec",
    "jobflow_yaml",
    "local_job_store",
    "make_structures",
    "read_output",
    "screen_options_from",
    "select_candidates",
    "structures_for_composition",
]
