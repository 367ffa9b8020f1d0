"""Flows chaining prescreen → structures → DFT handoff, and the one-call prescreen insertion.

* :class:`PrescreenToDFTMaker` — ``PrescreenToDFTMaker().make("Li-Fe-P-O")``: the three makers
  in a row; the flow's output is the :class:`~fh_screen.jobs.schemas.HandoffDocument`.
* :func:`insert_prescreen` — put a prescreen ahead of a workflow maker you already have
  (``ElasticMaker()``, ``DoubleRelaxMaker()``, your own): it is called on each selected structure.
* :func:`read_output` — a job's output from a JobStore as the pydantic document it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from jobflow import Flow, Job, Maker

from fh_screen.errors import FhScreenError
from fh_screen.jobs.base import CheckedMaker
from fh_screen.jobs.handoff import HandoffMaker
from fh_screen.jobs.prescreen import PrescreenMaker
from fh_screen.jobs.structures import StructureMaker

__all__ = ["PrescreenToDFTMaker", "insert_prescreen", "read_output"]


@dataclass
class PrescreenToDFTMaker(CheckedMaker):
    """Prescreen a chemical system, make structures for the selection, hand them to DFT.

    Parameters
    ----------
    name
        Flow name.
    prescreen_maker, structure_maker, handoff_maker
        The three stages (defaults: :class:`PrescreenMaker`, :class:`StructureMaker`,
        :class:`HandoffMaker` with atomate2's VASP ``DoubleRelaxMaker`` and no pre-relax).
        Each job keeps its maker, so ``flow.update_maker_kwargs(..., class_filter=...)`` reaches
        every stage (nested makers such as the pre-relax maker included).
    """

    name: str = "fh-screen prescreen to DFT"
    prescreen_maker: PrescreenMaker = field(default_factory=PrescreenMaker)
    structure_maker: StructureMaker = field(default_factory=StructureMaker)
    handoff_maker: HandoffMaker = field(default_factory=HandoffMaker)

    def _check(self) -> None:
        """Each stage is its maker (a subclass too); one-line :class:`FhScreenError` otherwise."""
        if not isinstance(self.name, str):
            raise FhScreenError(f"PrescreenToDFTMaker.name must be a text, got {self.name!r}")
        for name, kind in (("prescreen_maker", PrescreenMaker), ("structure_maker", StructureMaker),
                           ("handoff_maker", HandoffMaker)):
            value = getattr(self, name)
            if not isinstance(value, kind):
                raise FhScreenError(f"PrescreenToDFTMaker.{name} must be a {kind.__name__}, got {type(value).__name__}")

    def make(self, chemsys: str | Sequence[str]) -> Flow:
        """Flow for ``chemsys``; its output is the handoff document (problems of every stage included).

        Bad stages (not their makers) are refused here, in one line, before any job is made.
        """
        self._check()
        prescreen = self.prescreen_maker.make(chemsys)
        structures = self.structure_maker.make(prescreen.output.selected_formulas, model=prescreen.output.model)
        handoff = self.handoff_maker.make(structures.output, problems=prescreen.output.problems)
        label = prescreen.function_args[0]
        name = f"{self.name} {label}" if isinstance(label, str) else self.name
        return Flow([prescreen, structures, handoff], output=handoff.output, name=name)


def insert_prescreen(
    maker: Maker,
    chemsys: str | Sequence[str],
    *,
    prescreen_maker: PrescreenMaker | None = None,
    structure_maker: StructureMaker | None = None,
    prerelax_maker: Maker | None = None,
    mode: Literal["addition", "detour", "replace"] = "addition",
) -> Flow:
    """Put a prescreen of ``chemsys`` ahead of ``maker``: it then runs on each selected candidate.

    ``maker`` is any Maker whose ``make(structure)`` builds the user's job or flow (atomate2's
    ``ElasticMaker``, ``DoubleRelaxMaker``, ...). A flow already built for one structure cannot
    be re-targeted reliably: pass the maker that built it.
    """
    if isinstance(maker, (Flow, Job)):
        raise FhScreenError(
            f"insert_prescreen takes the Maker that builds your workflow, not a built {type(maker).__name__} "
            f"({maker.name!r}): pass e.g. ElasticMaker() instead of ElasticMaker().make(structure)"
        )
    if not isinstance(maker, Maker) or not callable(getattr(maker, "make", None)):
        raise FhScreenError(f"insert_prescreen needs an atomate2/jobflow Maker, got {type(maker).__name__}")
    flow_maker = PrescreenToDFTMaker(
        name=f"fh-screen prescreen + {maker.name}",
        prescreen_maker=prescreen_maker or PrescreenMaker(),
        structure_maker=structure_maker or StructureMaker(),
        handoff_maker=HandoffMaker(dft_maker=maker, prerelax_maker=prerelax_maker, mode=mode),
    )
    return flow_maker.make(chemsys)


def read_output(store, uuid: str, which: str = "last", load: bool = True) -> Any:
    """A job's output from a JobStore, documents rebuilt as objects.

    ``store.get_output`` returns plain dicts; this returns the :class:`ScreenDoc` /
    :class:`HandoffDocument` / atomate2 task document itself. ``load=True`` brings back what the
    jobs routed to the ``data`` store (the ranked candidates, DFT outputs).
    """
    from monty.json import MontyDecoder

    output = store.get_output(uuid, which=which, load=load)
    if isinstance(output, (dict, list)):
        output = MontyDecoder().process_decoded(output)
    return output
