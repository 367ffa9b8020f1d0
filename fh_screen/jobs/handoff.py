"""Hand the selected structures to DFT: jobflow's dynamic ``Response`` adds the DFT flows at run time.

:class:`HandoffMaker` takes a :class:`~fh_screen.jobs.schemas.StructuresDocument` (usually the
output reference of :class:`~fh_screen.jobs.structures.StructureMaker`) and, when it runs:

1. optionally pre-relaxes every trial structure with a cheap force field (any atomate2
   force-field maker, e.g. ``ForceFieldRelaxMaker(force_field_name="CHGNet")``) — the handoff job
   is *replaced* (``Response(replace=...)``) by the relax jobs plus a chooser job that keeps the
   lowest-energy structure of each composition; a relax that fails is reported and skipped
   (the chooser runs with ``OnMissing.NONE``), the other compositions carry on;
2. builds one DFT flow per composition with ``dft_maker.make(structure)`` (default: atomate2's
   VASP ``DoubleRelaxMaker``; any maker whose ``make`` takes a structure works) and adds them to
   the running workflow as an ``addition`` (default), a ``detour`` (children of the handoff wait
   for DFT) or a ``replace`` (the handoff is replaced by the DFT flows and a last job that waits
   for them and fills each entry's ``dft_output``).

Every relax and DFT job records the composition it was asked for (job metadata
``fh_screen_formula``, :func:`expect_formula`): the results builder rejects a result whose final
structure is another composition.

The output is a :class:`~fh_screen.jobs.schemas.HandoffDocument` in every mode: the job's own, or
(when the handoff is replaced) the document of the replacing flow's last job, which jobflow's
``Response(replace=Flow(..., output=...))`` maps to the handoff's uuid (see :func:`_replacing_flow`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from jobflow import Flow, Job, JobConfig, Maker, OnMissing, Response

from fh_screen.errors import FhScreenError, one_line
from fh_screen.jobs.base import CheckedMaker, fh_screen_job
from fh_screen.jobs.schemas import HandoffDocument, HandoffEntry, Problem, StructureCandidate, StructuresDocument
from fh_screen.store.results_builder import FORCE_FIELD_MODEL_METADATA_KEY, FORMULA_METADATA_KEY, force_field_model

logger = logging.getLogger(__name__)

__all__ = [
    "HANDOFF_MODES",
    "FORMULA_METADATA_KEY",
    "HandoffMaker",
    "chgnet_prerelax_maker",
    "choose_lowest_energy",
    "collect_dft_outputs",
    "default_dft_maker",
    "expect_formula",
]

#: How the DFT flows join the running workflow (jobflow ``Response`` fields).
HANDOFF_MODES = ("addition", "detour", "replace")


def default_dft_maker() -> Maker:
    """atomate2's VASP double relaxation (``DoubleRelaxMaker``)."""
    from atomate2.vasp.flows.core import DoubleRelaxMaker

    return DoubleRelaxMaker()


def chgnet_prerelax_maker(steps: int = 500, fmax_ev_per_angstrom: float = 0.1, **kwargs) -> Maker:
    """atomate2's force-field relax with CHGNet (ships its weights, runs offline)."""
    from atomate2.forcefields.jobs import ForceFieldRelaxMaker

    relax_kwargs = dict(kwargs.pop("relax_kwargs", {}) or {})
    relax_kwargs.setdefault("fmax", fmax_ev_per_angstrom)
    return ForceFieldRelaxMaker(
        name="CHGNet pre-relax", force_field_name="CHGNet", steps=steps, relax_kwargs=relax_kwargs, **kwargs
    )


def expect_formula(made: Job | Flow, formula: str, maker: Maker | None = None) -> Job | Flow:
    """Record ``formula`` (reduced) as the composition every job of ``made`` is asked for.

    Sets ``job.metadata["fh_screen_formula"]`` on each job (of a flow too) and on the jobs they
    create when they run (jobflow's dynamic ``update_metadata``); jobflow stores a job's metadata
    with its output, where :class:`~fh_screen.store.results_builder.ResultsBuilder` reads it: it
    rejects a result whose final structure is another composition. With a force-field ``maker``,
    also the model it loads (``fh_screen_force_field_model``, :func:`force_field_model`), which
    atomate2's task document does not record: the builder never references one model's energies
    to another model's elements.
    """
    from pymatgen.core import Composition

    metadata = {FORMULA_METADATA_KEY: Composition(formula).reduced_formula}
    model = force_field_model(maker) if maker is not None else None
    if model:
        metadata[FORCE_FIELD_MODEL_METADATA_KEY] = model
    made.update_metadata(metadata)
    return made


def _maker_label(maker: Any) -> str | None:
    if maker is None:
        return None
    force_field = getattr(maker, "force_field_name", None)
    label = type(maker).__name__
    if not force_field:
        return label
    text = str(getattr(force_field, "value", force_field))
    return f"{label}({text.removeprefix('MLFF.')})"


def _as_structures(doc: StructuresDocument | dict | Sequence) -> StructuresDocument:
    if isinstance(doc, StructuresDocument):
        return doc
    if isinstance(doc, dict):
        return StructuresDocument.model_validate({k: v for k, v in doc.items() if not k.startswith("@")})
    return StructuresDocument(structures=[s if isinstance(s, StructureCandidate) else _from_structure(s) for s in doc])


def _from_structure(structure) -> StructureCandidate:
    """A bare pymatgen Structure as a handoff candidate."""
    return StructureCandidate(
        formula=structure.composition.reduced_formula, structure=structure, source="given", n_sites=len(structure)
    )


def _as_problems(problems: Sequence | None) -> list[Problem]:
    out = []
    for p in problems or []:
        if isinstance(p, Problem):
            out.append(p)
        elif isinstance(p, dict):
            out.append(Problem.model_validate({k: v for k, v in p.items() if not k.startswith("@")}))
    return out


def _job_uuids(flow_or_job: Flow | Job) -> list[str]:
    if isinstance(flow_or_job, Job):
        return [flow_or_job.uuid]
    return list(flow_or_job.all_uuids)


def _dft_response(doc: HandoffDocument, dft_maker: Maker | None, mode: str, name: str) -> Response:
    """Response adding one DFT flow per entry of ``doc`` (or just the document when no maker)."""
    if dft_maker is None or not doc.entries:
        return Response(output=doc)
    flows = []
    for entry in doc.entries:
        try:
            made = dft_maker.make(entry.structure)
        except Exception as exc:  # noqa: BLE001 - a maker that refuses one structure must not stop the rest
            doc.problems.append(Problem(stage="handoff", formula=entry.formula, message=one_line(exc, with_type=True)))
            continue
        made.name = f"{made.name} {entry.formula}"
        expect_formula(made, entry.formula, dft_maker)
        entry.dft_job_uuids = _job_uuids(made)
        entry.dft_flow_name = made.name
        flows.append(made)
    doc.entries = [e for e in doc.entries if e.dft_job_uuids]
    if not flows:
        return Response(output=doc)
    if mode == "replace":
        collect = collect_dft_outputs(doc, [f.output for f in flows])
        collect.name = f"{name} collect"
        collect.config = JobConfig(on_missing_references=OnMissing.NONE)
        return Response(output=doc, replace=_replacing_flow([*flows, collect], name))
    dft = Flow(flows, name=name)
    return Response(output=doc, **{mode: dft})


@fh_screen_job(output_schema=HandoffDocument)
def collect_dft_outputs(doc: HandoffDocument | dict, outputs: list[Any]) -> HandoffDocument:
    """The handoff document once the DFT flows ran (``replace`` mode): each entry's ``dft_output``.

    Runs with ``OnMissing.NONE``: a DFT flow that failed leaves ``dft_output`` None and a problem.
    """
    doc = doc if isinstance(doc, HandoffDocument) else HandoffDocument.model_validate(
        {k: v for k, v in dict(doc).items() if not k.startswith("@")})
    doc = doc.model_copy(deep=True)
    for entry, output in zip(doc.entries, outputs):
        if output is None:
            doc.problems.append(Problem(stage="handoff", formula=entry.formula, message="the DFT flow did not finish"))
        entry.dft_output = output
    return doc


def _replacing_flow(jobs: list[Job], name: str) -> Flow:
    """The flow that replaces the running handoff job; its output (the last job's document) becomes the handoff's.

    jobflow maps the flow's output to the running job's uuid (``Response(replace=...)``: its
    ``store_inputs`` job stores a reference to the last job's output). jobflow 0.4 gives that
    job the running job's output schema and then validates the unresolved reference against it
    (materialsproject/jobflow#842), so the running job, whose own output is this reference, drops
    its schema here; the document is validated by the last job (``HandoffDocument`` schema).
    """
    from jobflow import CURRENT_JOB

    if CURRENT_JOB.job is not None:
        CURRENT_JOB.job.output_schema = None
    return Flow(jobs, output=jobs[-1].output, name=name)


@fh_screen_job(output_schema=HandoffDocument)
def choose_lowest_energy(
    trials: list[dict],
    energies_ev: list[float | None],
    relaxed: list[Any],
    dft_maker: Maker | None = None,
    mode: str = "addition",
    prerelax_label: str | None = None,
    problems: list | None = None,
    name: str = "DFT",
    model: str | None = None,
) -> Response:
    """Keep the lowest force-field energy per atom of each composition, then hand off to DFT.

    ``energies_ev``/``relaxed`` are the relax outputs, None where a relax failed (this job runs
    with ``OnMissing.NONE``); failures are listed in ``problems``.
    """
    doc = HandoffDocument(mode=mode, dft_maker=_maker_label(dft_maker), prerelax_maker=prerelax_label,
                          problems=_as_problems(problems), model=model)
    best: dict[str, HandoffEntry] = {}
    tried: dict[str, int] = {}
    for trial, energy, structure in zip(trials, energies_ev, relaxed):
        formula = trial["formula"]
        tried[formula] = tried.get(formula, 0) + 1
        if energy is None or structure is None or not math.isfinite(float(energy)):
            doc.problems.append(Problem(
                stage="prerelax", formula=formula,
                message=f"pre-relax of trial structure {trial['index']} ({trial['source']}) failed; it was skipped",
            ))
            continue
        if isinstance(structure, dict):
            from pymatgen.core import Structure

            structure = Structure.from_dict(structure)
        per_atom = float(energy) / len(structure)
        if formula not in best or per_atom < best[formula].energy_ev_per_atom:
            best[formula] = HandoffEntry(
                formula=formula, structure=structure, source=trial["source"], prototype=trial.get("prototype"),
                prerelaxed=True, energy_ev_per_atom=per_atom,
            )
    for formula in tried:
        if formula in best:
            best[formula].n_trials = tried[formula]
        else:
            doc.problems.append(Problem(stage="prerelax", formula=formula,
                                        message="every pre-relax failed; not handed to DFT"))
    doc.entries = [best[f] for f in tried if f in best]
    return _dft_response(doc, dft_maker, mode, name)


@dataclass
class HandoffMaker(CheckedMaker):
    """Maker of the DFT handoff for a :class:`StructuresDocument` (see the module docstring).

    Parameters
    ----------
    name
        Job name.
    dft_maker
        Maker whose ``make(structure)`` returns the DFT job/flow (default atomate2
        ``DoubleRelaxMaker``); None stops after the (pre-relax and) choice.
    prerelax_maker
        Force-field maker run on every trial structure first (e.g. :func:`chgnet_prerelax_maker`);
        None hands the best-ranked trial structure of each composition to DFT directly.
    structures_per_formula
        Trial structures per composition compared by the pre-relax.
    mode
        ``addition`` (default), ``detour`` or ``replace``: how the DFT flows join the workflow.
    """

    name: str = "fh-screen DFT handoff"
    dft_maker: Maker | None = field(default_factory=default_dft_maker)
    prerelax_maker: Maker | None = None
    structures_per_formula: int = 3
    mode: Literal["addition", "detour", "replace"] = "addition"

    def __post_init__(self):
        self._check()

    def _check(self) -> None:
        """Validate the fields; one-line :class:`FhScreenError` (also when a powerup updates them)."""
        if not isinstance(self.name, str):
            raise FhScreenError(f"HandoffMaker.name must be a text, got {self.name!r}")
        if self.mode not in HANDOFF_MODES:
            raise FhScreenError(f"handoff mode must be one of {', '.join(HANDOFF_MODES)}, got {self.mode!r}")
        spf = self.structures_per_formula
        if isinstance(spf, bool) or not isinstance(spf, int) or spf < 1:
            raise FhScreenError(f"structures_per_formula must be a positive integer, got {spf!r}")
        for name in ("dft_maker", "prerelax_maker"):
            value = getattr(self, name)
            if value is not None and not callable(getattr(value, "make", None)):
                raise FhScreenError(f"{name} must be a Maker (or None), got {type(value).__name__}")

    def check_make(self, structures, problems=None):
        """The checks :meth:`make` runs when the job is made (fields set after construction too).

        ``structures``: a :class:`StructuresDocument` (or its dict), a list of pymatgen
        ``Structure`` / :class:`StructureCandidate`, or another job's output reference (e.g.
        ``structure_job.output``); anything else is refused in one line.
        """
        from jobflow import OutputReference
        from pymatgen.core import Structure

        self._check()
        if isinstance(structures, dict):
            try:
                _as_structures(structures)
            except Exception as exc:  # noqa: BLE001 - pydantic's report, in one line
                raise FhScreenError(f"HandoffMaker.make: not a StructuresDocument: {one_line(exc)}") from None
        elif isinstance(structures, (list, tuple)):
            for item in structures:
                if not isinstance(item, (Structure, StructureCandidate, OutputReference)):
                    raise FhScreenError(f"HandoffMaker.make takes structures (pymatgen Structure or StructureCandidate), "
                                        f"got {type(item).__name__} {item!r:.60}")
        elif not isinstance(structures, (StructuresDocument, OutputReference)):
            raise FhScreenError(f"HandoffMaker.make takes a StructuresDocument, a list of structures or an output "
                                f"reference (e.g. structure_job.output), got {type(structures).__name__}")
        if problems is not None and not isinstance(problems, (list, tuple, OutputReference)):
            raise FhScreenError(f"HandoffMaker.make: problems must be a list of problems or an output reference, "
                                f"got {type(problems).__name__}")
        return self, (structures,), {"problems": problems}

    @fh_screen_job(output_schema=HandoffDocument, check=check_make)
    def make(self, structures: StructuresDocument | dict | Sequence, problems: list | None = None) -> Response:
        """Job handing ``structures`` to DFT; ``problems`` from earlier stages are carried into its output.

        The output is a :class:`HandoffDocument` in every mode; with a pre-relax (or in
        ``replace`` mode) the job is replaced and jobflow stores the document of the replacing
        flow under this job's uuid: ``read_output(store, handoff.uuid)`` returns it.
        """
        doc_in = _as_structures(structures)
        carried = _as_problems(problems) + list(doc_in.problems)
        groups: dict[str, list[StructureCandidate]] = {}
        for candidate in doc_in.structures:
            group = groups.setdefault(candidate.formula, [])
            if len(group) < self.structures_per_formula:
                group.append(candidate)
        if not groups:
            carried.append(Problem(stage="handoff", message="no structure to hand off"))
            return Response(output=HandoffDocument(mode=self.mode, dft_maker=_maker_label(self.dft_maker), model=doc_in.model,
                                                   prerelax_maker=_maker_label(self.prerelax_maker), problems=carried))
        if self.prerelax_maker is None:
            doc = HandoffDocument(
                mode=self.mode, dft_maker=_maker_label(self.dft_maker), problems=carried, model=doc_in.model,
                entries=[HandoffEntry(formula=f, structure=c[0].structure, source=c[0].source,
                                      prototype=c[0].prototype, n_trials=len(c)) for f, c in groups.items()],
            )
            return _dft_response(doc, self.dft_maker, self.mode, f"{self.name} DFT")
        relax_jobs, trials = [], []
        for formula, candidates in groups.items():
            for i, candidate in enumerate(candidates):
                relax = self.prerelax_maker.make(candidate.structure)
                relax.name = f"{relax.name} {formula} #{i + 1}"
                expect_formula(relax, formula, self.prerelax_maker)
                relax_jobs.append(relax)
                trials.append({"formula": formula, "index": i + 1, "source": candidate.source,
                               "prototype": candidate.prototype})
        chooser = choose_lowest_energy(
            trials,
            [r.output.output.energy for r in relax_jobs],
            [r.output.structure for r in relax_jobs],
            dft_maker=self.dft_maker,
            mode=self.mode,
            prerelax_label=_maker_label(self.prerelax_maker),
            problems=carried,
            name=f"{self.name} DFT",
            model=doc_in.model,
        )
        chooser.name = f"{self.name} choose lowest energy"
        chooser.config = JobConfig(on_missing_references=OnMissing.NONE)
        return Response(replace=_replacing_flow([*relax_jobs, chooser], f"{self.name} pre-relax"))
