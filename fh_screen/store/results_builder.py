"""Results come back: finished atomate2 calculations in a JobStore become reference entries.

:class:`ResultsBuilder` is a maggma Builder. Its source is a jobflow ``JobStore`` (or the store
of its job documents); it reads the outputs of finished force-field relaxations
(atomate2's ``ForceFieldTaskDocument``, e.g. CHGNet) and VASP calculations (atomate2/emmet
``TaskDoc``), and writes

* one :class:`ComputedResultDoc` per job output to the ``results`` store (key ``result_id``:
  source and job uuid/index), whatever became of it: ``successful`` with a formation enthalpy,
  or ``failed``, ``unconverged``, ``rejected`` (bad input) or ``no_reference`` with the reason
  — never an energy that should not be used;
* one :class:`~fh_screen.store.documents.ReferenceEntryDoc` per (formula, source) to the
  ``reference`` store (upserted on ``["formula", "source"]``): the lowest formation enthalpy
  of the successful results of that composition and source, with provenance (job uuid, package
  version, functional) — a second result for the same composition is kept beside the first in
  ``results`` and the lower one is used, both traceable.

Formation enthalpies use elemental references computed with the same method:

``chgnet`` (any force field)
    :func:`force_field_element_references` relaxes a few simple structures of each element
    (bcc, fcc, hcp, diamond, a dimer in a box) with the same maker once and caches the lowest
    energy per atom in the ``element_references`` store (key ``element|source``).
``atomate2-vasp``
    the VASP tasks of pure elements in the same JobStore are the references; every entry
    passes pymatgen's ``MaterialsProject2020Compatibility`` first, so GGA and GGA+U results
    mix on one energy scale (a result the scheme rejects is ``rejected``). A composition
    whose element has no reference yet is ``no_reference`` and is built again by the next run.

Incremental like maggma's ``MapBuilder``: a job already in ``results`` (same result id) is
skipped unless it is ``no_reference`` (its reference may have arrived since).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Literal

from maggma.core import Builder, Store
from pydantic import BaseModel, Field

from fh_screen.errors import FhScreenError
from fh_screen.store.documents import ReferenceEntryDoc, chemsys_of, utcnow

logger = logging.getLogger(__name__)

__all__ = [
    "SOURCES",
    "ComputedResultDoc",
    "ElementReferenceDoc",
    "ResultError",
    "ResultsBuilder",
    "element_prototypes",
    "force_field_element_references",
    "parse_task",
]

#: Source label of each kind of task document.
SOURCES = {"force_field": "chgnet", "vasp": "atomate2-vasp"}
#: States of a result; only ``successful`` carries a formation enthalpy.
ResultState = Literal["successful", "failed", "unconverged", "rejected", "no_reference"]
#: Elements whose reference is a dimer in a box (gases at standard conditions).
DIMER_ELEMENTS = frozenset({"H", "N", "O", "F", "Cl"})


class ResultError(FhScreenError):
    """A task document that cannot become a reference entry (one line naming what is wrong)."""


class ComputedResultDoc(BaseModel):
    """One finished calculation brought back from a JobStore, with what became of it."""

    result_id: str = Field(description="'<source>|<job uuid>|<job index>': the store key.")
    job_uuid: str = Field(description="uuid of the jobflow job that produced the task document.")
    job_index: int = Field(1, description="index of the job (jobflow replaces keep the uuid).")
    job_name: str | None = Field(None, description="name of the job.")
    source: str = Field(description="'chgnet' (force field) or 'atomate2-vasp'.")
    state: ResultState = Field(description="successful, failed, unconverged, rejected or no_reference.")
    message: str | None = Field(None, description="Why the result carries no formation enthalpy.")
    formula: str | None = Field(None, description="pymatgen reduced formula of the final structure.")
    chemsys: str | None = Field(None, description="Chemical system of the final structure.")
    structure: dict | None = Field(None, description="Final structure (pymatgen dict).")
    energy_ev: float | None = Field(None, description="Final total energy (eV), corrected for VASP.")
    energy_per_atom_ev: float | None = Field(None, description="Final energy per atom (eV/atom).")
    dhf_ev_per_atom: float | None = Field(None, description="Formation enthalpy against the element references.")
    element_references_ev_per_atom: dict[str, float] | None = Field(None, description="The references used.")
    functional: str | None = Field(None, description="Force field name or VASP run type (GGA, GGA+U, ...).")
    package_version: str | None = Field(None, description="Force-field or VASP version.")
    expected_formula: str | None = Field(None, description="The composition the job was asked for, when recorded.")
    last_updated: datetime = Field(default_factory=utcnow)


class ElementReferenceDoc(BaseModel):
    """The energy per atom of one element's ground state by one method (cached)."""

    reference_id: str = Field(description="'<element>|<source>': the store key.")
    element: str
    source: str
    energy_per_atom_ev: float
    structure: dict | None = None
    functional: str | None = None
    package_version: str | None = None
    job_uuid: str | None = None
    last_updated: datetime = Field(default_factory=utcnow)


def _reduced(composition) -> str:
    return composition.reduced_formula


def parse_task(job_doc: dict) -> dict | None:
    """The facts of a jobflow job document whose output is an atomate2 task document.

    Returns None for an output that is not a force-field or VASP task document (other jobs of
    the flow), else a dict with ``source``, ``job_uuid``, ``job_index``, ``job_name``,
    ``state`` (``successful``/``failed``/``unconverged``/``rejected``), ``message``,
    ``composition`` (pymatgen, or None), ``structure``, ``energy_ev``, ``functional``,
    ``package_version``, ``entry`` (VASP ComputedEntry dict) and ``expected_formula``.
    """
    from pymatgen.core import Structure

    output = job_doc.get("output")
    if not isinstance(output, dict):
        return None
    kind = _kind(output)
    if kind is None:
        return None
    facts: dict[str, Any] = {
        "source": SOURCES[kind], "job_uuid": str(job_doc.get("uuid")), "job_index": int(job_doc.get("index", 1) or 1),
        "job_name": job_doc.get("name"), "state": "successful", "message": None, "composition": None,
        "structure": None, "energy_ev": None, "entry": None,
        "expected_formula": (job_doc.get("metadata") or {}).get("fh_screen_formula"),
    }
    structure = output.get("structure") or (output.get("output") or {}).get("structure")
    if isinstance(structure, dict):
        try:
            parsed = Structure.from_dict(structure)
            facts["structure"] = structure
            facts["composition"] = parsed.composition
        except Exception as exc:  # noqa: BLE001 - a malformed structure is bad input, reported
            return {**facts, "state": "rejected", "message": f"unreadable structure ({type(exc).__name__})"}
    inner = output.get("output") or {}
    if kind == "force_field":
        facts["functional"] = output.get("forcefield_name") or output.get("ase_calculator_name")
        facts["package_version"] = output.get("forcefield_version")
        facts["energy_ev"] = inner.get("energy")
        if str(output.get("state") or "successful").lower() not in ("successful", "taskstate.success", "success"):
            return {**facts, "state": "failed", "message": f"task state {output.get('state')}"}
        if output.get("is_force_converged") is False:
            return {**facts, "state": "unconverged", "message": "forces not converged"}
        steps, n_steps = (output.get("input") or {}).get("steps"), inner.get("n_steps")
        if steps and n_steps is not None and n_steps >= steps:
            return {**facts, "state": "unconverged", "message": f"relax stopped at its step limit ({steps})"}
    else:
        facts["functional"] = str(output.get("run_type")) if output.get("run_type") is not None else None
        facts["package_version"] = output.get("vasp_version")
        facts["energy_ev"] = inner.get("energy")
        facts["entry"] = output.get("entry")
        state = str(output.get("state") or "successful").lower()
        if state not in ("successful", "success"):
            return {**facts, "state": "failed", "message": f"task state {output.get('state')}"}
    if facts["composition"] is None:
        return {**facts, "state": "rejected", "message": "task document without a final structure"}
    if facts["energy_ev"] is None:
        return {**facts, "state": "rejected", "message": "task document without a final energy"}
    expected = facts["expected_formula"]
    if expected:
        from pymatgen.core import Composition

        if Composition(expected).reduced_formula != _reduced(facts["composition"]):
            return {**facts, "state": "rejected",
                    "message": f"structure is {_reduced(facts['composition'])}, the job was asked for {expected}"}
    return facts


def _kind(output: dict) -> str | None:
    """'force_field', 'vasp' or None from a serialised task document."""
    name = str(output.get("@class", ""))
    if name == "ForceFieldTaskDocument" or "forcefield_name" in output:
        return "force_field"
    if name == "TaskDoc" or ("calcs_reversed" in output and "vasp_version" in output):
        return "vasp"
    return None


def element_prototypes(element: str, *, box_angstrom: float = 10.0) -> list:
    """Simple candidate ground states of ``element`` (pymatgen Structures) for a force-field reference.

    bcc, fcc and hcp near the element's metallic radius, plus diamond for the group-14-like
    covalent elements and a dimer in a ``box_angstrom`` cube for H, N, O, F and Cl.
    """
    from pymatgen.core import Element, Lattice, Structure

    if element in DIMER_ELEMENTS:
        bond = {"H": 0.74, "N": 1.10, "O": 1.21, "F": 1.42, "Cl": 1.99}[element]
        lattice = Lattice.cubic(box_angstrom)
        return [Structure(lattice, [element, element], [[0, 0, 0], [bond, 0, 0]], coords_are_cartesian=True)]
    radius = float(Element(element).atomic_radius or 1.5)
    a_fcc = 2 * 2**0.5 * radius
    a_bcc = 4 * radius / 3**0.5
    structures = [
        Structure(Lattice.cubic(a_bcc), [element] * 2, [[0, 0, 0], [0.5, 0.5, 0.5]]),
        Structure(Lattice.cubic(a_fcc), [element] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]),
        Structure(Lattice.hexagonal(2 * radius, 2 * radius * 1.633), [element] * 2,
                  [[1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]]),
    ]
    if element in ("C", "Si", "Ge", "Sn", "B", "P", "S", "Se", "As"):
        a_diamond = 8 * radius / 3**0.5
        structures.append(Structure.from_spacegroup("Fd-3m", Lattice.cubic(a_diamond), [element], [[0, 0, 0]]))
    return structures


def force_field_element_references(elements: Iterable[str], maker, store: Store, *, source: str = "chgnet") -> dict[str, float]:
    """Energy per atom of each element with ``maker`` (an atomate2 force-field relax maker), cached in ``store``.

    Elements already in ``store`` (key ``element|source``) are not computed again; the others
    relax every structure of :func:`element_prototypes` with ``maker.make`` (run locally, in
    memory) and keep the lowest energy per atom.
    """
    from jobflow import run_locally
    from jobflow.core.store import JobStore
    from maggma.stores import MemoryStore

    wanted = sorted(set(elements))
    cached = {d["element"]: d["energy_per_atom_ev"] for d in store.query(
        {"reference_id": {"$in": [f"{e}|{source}" for e in wanted]}})}
    for element in wanted:
        if element in cached:
            continue
        best: ElementReferenceDoc | None = None
        for structure in element_prototypes(element):
            job = maker.make(structure)
            job_store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
            responses = run_locally(job, store=job_store, log=False, ensure_success=False)
            response = responses.get(job.uuid, {})
            output = next(iter(response.values())).output if response else None
            if output is None or getattr(output.output, "energy", None) is None:
                logger.warning("reference relax of %s (%d atoms) with %s failed", element, len(structure), source)
                continue
            energy = float(output.output.energy) / len(output.structure)
            if best is None or energy < best.energy_per_atom_ev:
                best = ElementReferenceDoc(
                    reference_id=f"{element}|{source}", element=element, source=source, energy_per_atom_ev=energy,
                    structure=output.structure.as_dict(), functional=getattr(output, "forcefield_name", None),
                    package_version=getattr(output, "forcefield_version", None), job_uuid=job.uuid)
        if best is None:
            raise ResultError(f"no {source} reference for {element}: every prototype relax failed")
        store.update([best.model_dump()], key="reference_id")
        cached[element] = best.energy_per_atom_ev
    return cached


class ResultsBuilder(Builder):
    """Bring finished atomate2 calculations back as reference entries (incremental)."""

    def __init__(self, jobs: Store, results: Store, reference: Store, element_references: Store,
                 query: dict | None = None, **kwargs):
        """Describe the build.

        Parameters
        ----------
        jobs
            The jobflow ``JobStore`` (or its docs store) holding the finished jobs.
        results
            Store of :class:`ComputedResultDoc` (key ``result_id``).
        reference
            fh-screen's reference store; entries are upserted on ``["formula", "source"]``.
        element_references
            Store of :class:`ElementReferenceDoc` (key ``reference_id``): the force-field
            references (fill it with :func:`force_field_element_references`).
        query
            Extra criteria on the job documents.
        """
        self.jobs = jobs
        self.results = results
        self.reference = reference
        self.element_references = element_references
        self.query = query or {}
        self.kwargs = kwargs
        super().__init__(sources=[jobs], targets=[results, reference, element_references], **kwargs)

    # --------------------------------------------------------------------------- maggma steps
    def get_items(self):
        """Job documents not built yet (or waiting for an element reference), and the references."""
        done = {d["result_id"]: d["state"] for d in self.results.query({}, properties=["result_id", "state"])}
        criteria = {"output": {"$ne": None}, **self.query}
        pending = []
        for doc in self.jobs.query(criteria, properties=["uuid", "index", "name", "output", "metadata"]):
            facts = parse_task(doc)
            if facts is None:
                continue
            result_id = f"{facts['source']}|{facts['job_uuid']}|{facts['job_index']}"
            if done.get(result_id) not in (None, "no_reference"):
                continue
            pending.append((result_id, facts))
        self.total = len(pending)
        self.logger.info("%d new job outputs to bring back", len(pending))
        if not pending:
            return
        references = {"chgnet": self._cached_references("chgnet"),
                      "atomate2-vasp": _vasp_element_references([f for _, f in pending] + self._vasp_reference_tasks())}
        yield {"tasks": pending, "references": references}

    def process_item(self, item: dict) -> list[dict]:
        """One :class:`ComputedResultDoc` dict per task."""
        docs = []
        for result_id, facts in item["tasks"]:
            docs.append(_result_doc(result_id, facts, item["references"].get(facts["source"], {})).model_dump())
        return docs

    def update_targets(self, items: list[list[dict]]) -> None:
        """Upsert the results, then the reference entry of each (formula, source) they touch."""
        docs = [d for batch in items for d in batch]
        if not docs:
            return
        self.results.update(docs, key="result_id")
        # pure elements are the references themselves, not reference entries
        touched = {(d["formula"], d["source"]) for d in docs if d["state"] == "successful" and "-" in (d["chemsys"] or "")}
        for formula, source in sorted(touched):
            self._update_reference(formula, source)

    # --------------------------------------------------------------------------- helpers
    def _cached_references(self, source: str) -> dict[str, dict]:
        return {d["element"]: {"energy_per_atom_ev": d["energy_per_atom_ev"], "job_uuid": d.get("job_uuid")}
                for d in self.element_references.query({"source": source})}

    def _vasp_reference_tasks(self) -> list[dict]:
        """Every VASP task of the job store (references may sit among jobs built earlier)."""
        facts = []
        for doc in self.jobs.query({"output": {"$ne": None}, **self.query},
                                   properties=["uuid", "index", "name", "output", "metadata"]):
            parsed = parse_task(doc)
            if parsed is not None and parsed["source"] == SOURCES["vasp"]:
                facts.append(parsed)
        return facts

    def _update_reference(self, formula: str, source: str) -> None:
        rows = list(self.results.query({"formula": formula, "source": source, "state": "successful"}))
        if not rows:
            return
        rows.sort(key=lambda d: (d["dhf_ev_per_atom"], d["result_id"]))
        best = rows[0]
        if len(rows) > 1:
            self.logger.warning(
                "%s has %d %s results (%s): all kept in results, the lowest (%.4f eV/atom, job %s) used",
                formula, len(rows), source, ", ".join(r["job_uuid"] for r in rows), best["dhf_ev_per_atom"], best["job_uuid"])
        doc = ReferenceEntryDoc.from_formula(
            formula, best["dhf_ev_per_atom"], source=source, source_id=best["job_uuid"],
            source_version=best.get("package_version"), source_file=best.get("functional"),
        ).model_dump()
        self.reference.update([doc], key=["formula", "source"])


def _vasp_element_references(tasks: Sequence[dict]) -> dict[str, dict]:
    """Lowest corrected energy per atom of each element among the successful VASP tasks of pure elements."""
    references: dict[str, dict] = {}
    for facts in tasks:
        if facts["source"] != SOURCES["vasp"] or facts["state"] != "successful":
            continue
        if facts["composition"] is None or len(facts["composition"].elements) != 1:
            continue
        corrected = _vasp_corrected_energy(facts)
        if corrected is None:
            continue
        element = str(facts["composition"].elements[0])
        per_atom = corrected / facts["composition"].num_atoms
        if element not in references or per_atom < references[element]["energy_per_atom_ev"]:
            references[element] = {"energy_per_atom_ev": per_atom, "job_uuid": facts["job_uuid"]}
    return references


def _vasp_corrected_energy(facts: dict) -> float | None:
    """Total energy after ``MaterialsProject2020Compatibility`` (None when the scheme rejects the entry)."""
    from pymatgen.entries.compatibility import MaterialsProject2020Compatibility
    from pymatgen.entries.computed_entries import ComputedEntry

    entry_dict = facts.get("entry")
    if not isinstance(entry_dict, dict):
        return None
    entry = ComputedEntry.from_dict(entry_dict)
    processed = MaterialsProject2020Compatibility(check_potcar=False).process_entries([entry], verbose=False, clean=True)
    return float(processed[0].energy) if processed else None


def _result_doc(result_id: str, facts: dict, references: dict[str, dict]) -> ComputedResultDoc:
    """The result document of one parsed task: a formation enthalpy or the reason there is none."""
    composition = facts["composition"]
    common = dict(
        result_id=result_id, job_uuid=facts["job_uuid"], job_index=facts["job_index"], job_name=facts["job_name"],
        source=facts["source"], structure=facts["structure"], functional=facts.get("functional"),
        package_version=facts.get("package_version"), expected_formula=facts.get("expected_formula"),
        formula=_reduced(composition) if composition is not None else None,
        chemsys=chemsys_of(sorted(str(e) for e in composition.elements)) if composition is not None else None,
    )
    if facts["state"] != "successful":
        return ComputedResultDoc(**common, state=facts["state"], message=facts["message"])
    energy = float(facts["energy_ev"])
    if facts["source"] == SOURCES["vasp"]:
        corrected = _vasp_corrected_energy(facts)
        if corrected is None:
            return ComputedResultDoc(**common, state="rejected", energy_ev=energy,
                                     message="no entry, or MaterialsProject2020Compatibility rejects it (mixed functionals?)")
        energy = corrected
    n_atoms = composition.num_atoms
    elements = sorted(str(e) for e in composition.elements)
    missing = [e for e in elements if e not in references]
    if missing:
        return ComputedResultDoc(**common, state="no_reference", energy_ev=energy, energy_per_atom_ev=energy / n_atoms,
                                 message=f"no {facts['source']} reference for {', '.join(missing)} yet")
    mu = {e: float(references[e]["energy_per_atom_ev"]) for e in elements}
    dhf = (energy - sum(composition[e] * mu[e] for e in elements)) / n_atoms
    return ComputedResultDoc(**common, state="successful", energy_ev=energy, energy_per_atom_ev=energy / n_atoms,
                             dhf_ev_per_atom=float(dhf), element_references_ev_per_atom=mu)
