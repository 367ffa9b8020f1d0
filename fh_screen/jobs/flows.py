"""Flows chaining prescreen → structures → DFT handoff, and the one-call prescreen insertion.

* :class:`PrescreenToDFTMaker` — ``PrescreenToDFTMaker().make("Li-Fe-P-O")``: the three makers
  in a row; the flow's output is the :class:`~fh_screen.jobs.schemas.HandoffDocument`.
* :func:`insert_prescreen` — put a prescreen ahead of what the user already has: an atomate2
  maker (``ElasticMaker()``, ``DoubleRelaxMaker()``, ...) or an already built flow/job, which is
  then used as a template (:class:`TemplateMaker`): at run time it is copied with fresh uuids and
  its input structure replaced by each selected candidate.
* :func:`local_job_store` — a jobflow ``JobStore`` on fh-screen's embedded SQLite store, with the
  ``data`` store atomate2 force-field jobs need.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobflow import Flow, Job, Maker

from fh_screen.errors import FhScreenError
from fh_screen.jobs.handoff import HandoffMaker
from fh_screen.jobs.prescreen import PrescreenMaker
from fh_screen.jobs.structures import StructureMaker

__all__ = ["PrescreenToDFTMaker", "TemplateMaker", "insert_prescreen", "local_job_store", "read_output"]


@dataclass
class PrescreenToDFTMaker(Maker):
    """Prescreen a chemical system, make structures for the selection, hand them to DFT.

    Parameters
    ----------
    name
        Flow name.
    prescreen_maker, structure_maker, handoff_maker
        The three stages (defaults: :class:`PrescreenMaker`, :class:`StructureMaker`,
        :class:`HandoffMaker` with atomate2's VASP ``DoubleRelaxMaker`` and no pre-relax).
    """

    name: str = "fh-screen prescreen to DFT"
    prescreen_maker: PrescreenMaker = field(default_factory=PrescreenMaker)
    structure_maker: StructureMaker = field(default_factory=StructureMaker)
    handoff_maker: HandoffMaker = field(default_factory=HandoffMaker)

    def make(self, chemsys: str | Sequence[str]) -> Flow:
        """Flow for ``chemsys``; its output is the handoff document (problems of every stage included)."""
        prescreen = self.prescreen_maker.make(chemsys)
        structures = self.structure_maker.make(prescreen.output.selected_formulas)
        handoff = self.handoff_maker.make(structures.output, problems=prescreen.output.problems)
        label = prescreen.function_args[0] if isinstance(prescreen.function_args[0], str) else str(chemsys)
        return Flow([prescreen, structures, handoff], output=handoff.output, name=f"{self.name} {label}")


def _walk_structures(obj: Any, found: list[dict]) -> None:
    if isinstance(obj, dict):
        if obj.get("@class") == "Structure" and obj.get("@module", "").startswith("pymatgen"):
            if obj not in found:
                found.append(obj)
            return
        for value in obj.values():
            _walk_structures(value, found)
    elif isinstance(obj, list):
        for value in obj:
            _walk_structures(value, found)


def _replace_structure(obj: Any, old: dict, new: dict) -> Any:
    if isinstance(obj, dict):
        if obj == old:
            return new
        return {k: _replace_structure(v, old, new) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_replace_structure(v, old, new) for v in obj]
    return obj


@dataclass
class TemplateMaker(Maker):
    """A built flow or job reused as a template: ``make(structure)`` returns a fresh copy for it.

    The template's input structure (the one structure found among the arguments of its jobs) is
    replaced by the given one, and every uuid is renewed so that copies can coexist in a workflow.
    """

    name: str = "template"
    template: dict = field(default_factory=dict)

    @classmethod
    def from_flow(cls, flow: Flow | Job) -> TemplateMaker:
        """Template of ``flow``; one-line error unless exactly one input structure is found."""
        from monty.json import jsanitize

        serialized = jsanitize(flow.as_dict(), strict=True, enum_values=True)
        found: list[dict] = []
        for job in flow.iterflow() if isinstance(flow, Flow) else [(flow, [])]:
            _walk_structures(jsanitize(job[0].function_args, strict=True), found)
            _walk_structures(jsanitize(job[0].function_kwargs, strict=True), found)
        if len(found) != 1:
            raise FhScreenError(
                f"a flow used as a prescreen template needs exactly one input structure among its jobs' "
                f"arguments, {flow.name!r} has {len(found)}"
            )
        return cls(name=flow.name, template={"flow": serialized, "structure": found[0]})

    def make(self, structure) -> Flow | Job:
        """A copy of the template running on ``structure`` (fresh uuids)."""
        from jobflow.utils import suuid
        from monty.json import MontyDecoder

        text = json.dumps(self.template["flow"])
        old_uuids: set[str] = set()
        _collect_uuids(self.template["flow"], old_uuids)
        for old in old_uuids:
            text = text.replace(old, suuid())
        data = _replace_structure(json.loads(text), self.template["structure"], structure.as_dict())
        return MontyDecoder().process_decoded(data)


def _collect_uuids(obj: Any, out: set[str]) -> None:
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key in ("uuid", "hosts") and isinstance(value, str):
                out.add(value)
            elif key == "hosts" and isinstance(value, list):
                out.update(v for v in value if isinstance(v, str))
            else:
                _collect_uuids(value, out)
    elif isinstance(obj, list):
        for value in obj:
            _collect_uuids(value, out)


def insert_prescreen(
    target: Maker | Flow | Job,
    chemsys: str | Sequence[str],
    *,
    prescreen_maker: PrescreenMaker | None = None,
    structure_maker: StructureMaker | None = None,
    prerelax_maker: Maker | None = None,
    mode: str = "addition",
) -> Flow:
    """Put a prescreen of ``chemsys`` ahead of ``target``: it then runs on each selected candidate.

    ``target`` is a maker whose ``make(structure)`` builds the user's job/flow, or a job/flow already
    built for some structure (used as a template, see :class:`TemplateMaker`).
    """
    if isinstance(target, (Flow, Job)):
        dft_maker: Maker = TemplateMaker.from_flow(target)
    elif isinstance(target, Maker) and callable(getattr(target, "make", None)):
        dft_maker = target
    else:
        raise FhScreenError(f"insert_prescreen needs an atomate2/jobflow Maker, Flow or Job, got {type(target).__name__}")
    maker = PrescreenToDFTMaker(
        name=f"fh-screen prescreen + {getattr(target, 'name', type(target).__name__)}",
        prescreen_maker=prescreen_maker or PrescreenMaker(),
        structure_maker=structure_maker or StructureMaker(),
        handoff_maker=HandoffMaker(dft_maker=dft_maker, prerelax_maker=prerelax_maker, mode=mode),
    )
    return maker.make(chemsys)


def local_job_store(path: str | Path | None = None):
    """jobflow ``JobStore`` on an embedded SQLite file (default ``<data_dir>/jobflow.sqlite``).

    Collections ``jobs`` (job outputs) and ``data`` (large force-field objects, the additional
    store atomate2 needs) live in the same file; no server is needed.
    """
    from jobflow import JobStore

    from fh_screen.store.backend import SQLiteStore

    if path is None:
        from fh_screen.settings import FhScreenSettings

        path = Path(FhScreenSettings().data_dir).expanduser() / "jobflow.sqlite"
    docs = SQLiteStore(path, collection_name="jobs", key="uuid")
    data = SQLiteStore(path, collection_name="data", key="blob_uuid")
    return JobStore(docs, additional_stores={"data": data})


def read_output(store, uuid: str, which: str = "last", load: bool = False) -> Any:
    """A job's output from a JobStore, references resolved and documents rebuilt as objects.

    ``store.get_output`` returns plain dicts for direct outputs; this returns the
    :class:`PrescreenDocument` / :class:`HandoffDocument` / atomate2 task document itself.
    """
    from monty.json import MontyDecoder

    output = store.get_output(uuid, which=which, load=load)
    if isinstance(output, (dict, list)):
        output = MontyDecoder().process_decoded(output)
    return output
