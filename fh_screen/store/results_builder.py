"""Results come back: finished atomate2 calculations in a JobStore become reference entries.

:class:`ResultsBuilder` is a maggma Builder. Its source is a jobflow ``JobStore`` (or the store
of its job documents); it reads the outputs of finished force-field relaxations
(atomate2's ``ForceFieldTaskDocument``, e.g. CHGNet) and VASP calculations (atomate2/emmet
``TaskDoc``), and writes

* one :class:`ComputedResultDoc` per job output to the ``results`` store (key ``result_id``:
  source and job uuid/index), whatever became of it: ``successful`` with a formation enthalpy,
  or ``failed``, ``unconverged``, ``rejected`` (bad input, a non-finite energy, or a formation
  enthalpy outside :data:`fh_screen.data.OUTLIER_RANGE_EV_PER_ATOM`) or ``no_reference`` with
  the reason — never an energy that should not be used;
* one :class:`~fh_screen.store.documents.ReferenceEntryDoc` per (formula, source) to the
  ``reference`` store (upserted on ``["formula", "source"]``): the lowest formation enthalpy
  of the successful results of that composition and source, with provenance (job uuid, package
  version, functional) — a second result for the same composition is kept beside the first in
  ``results`` and the lower one is used, both traceable.

Formation enthalpies use elemental references computed with the same method, cached in the
``element_references`` store (key ``element|source``):

force fields (``chgnet``, ``mace``, ``m3gnet``, ...: :func:`force_field_source` of the task's ``forcefield_name``)
    :func:`force_field_element_references` relaxes a few simple structures of each element
    (bcc, fcc, hcp, diamond, a dimer in a box) once with a maker of the same force field and
    caches the lowest energy per atom (``bring_results_back`` also counts the JobStore's own relaxes
    of the element, :func:`lowest_force_field_elements`); one force field never uses another's
    references, nor one model another model's (:func:`force_field_model`).
``atomate2-vasp``
    the lowest VASP task of each pure element in the same JobStore, pinned in the cache the
    first time it is used (``refresh_vasp_references=True`` re-pins and rebuilds); every entry
    passes pymatgen's ``MaterialsProject2020Compatibility`` first, so GGA and GGA+U results
    mix on one energy scale (a result the scheme rejects is ``rejected``, with pymatgen's reason).
    A pure-element task that comes back lower than the pinned reference of its element is
    logged as a WARNING and kept in :attr:`ResultsBuilder.notes`; the pin stays until refreshed.

A composition whose element has no reference yet is ``no_reference`` and is built again by the next run.

Incremental like maggma's ``MapBuilder``: a job already in ``results`` (same result id) is
skipped unless it is ``no_reference`` (its reference may have arrived since).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from os import PathLike
from typing import TYPE_CHECKING, Any, Literal

from maggma.core import Builder, Store
from pydantic import BaseModel, Field

from fh_screen.data import OUTLIER_RANGE_EV_PER_ATOM
from fh_screen.errors import FhScreenError
from fh_screen.store.documents import ReferenceEntryDoc, chemsys_of, utcnow

if TYPE_CHECKING:
    from jobflow import Maker
    from pymatgen.core import Composition

logger = logging.getLogger(__name__)

__all__ = [
    "SOURCES",
    "ComputedResultDoc",
    "ElementReferenceDoc",
    "ResultError",
    "ResultsBuilder",
    "element_prototypes",
    "FORCE_FIELD_MODEL_METADATA_KEY",
    "FORMULA_METADATA_KEY",
    "force_field_element_references",
    "force_field_model",
    "ground_state_prototypes",
    "force_field_source",
    "lowest_force_field_elements",
    "parse_task",
]

#: Source label of each kind of task document (``force_field``: CHGNet's; see :func:`force_field_source`).
SOURCES = {"force_field": "chgnet", "vasp": "atomate2-vasp"}
#: Source labels of atomate2's force-field names (``MLFF.<name>``); others get a lower-case slug.
FORCE_FIELD_SOURCES = {"CHGNet": "chgnet", "MACE": "mace", "M3GNet": "m3gnet"}
#: States of a result; only ``successful`` carries a formation enthalpy.
ResultState = Literal["successful", "failed", "unconverged", "rejected", "no_reference"]
#: Job metadata key of the composition a relax / DFT job was asked for (set by the handoff):
#: a result whose final structure is another composition is rejected.
FORMULA_METADATA_KEY = "fh_screen_formula"
#: Job metadata key of the force-field model a relax job loads (:func:`force_field_model`, set by
#: the handoff): atomate2's task document records the package version only, and one package
#: ships several models whose energies are not on one scale.
FORCE_FIELD_MODEL_METADATA_KEY = "fh_screen_force_field_model"
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
    source: str = Field(description="'chgnet', 'mace', ... (force field) or 'atomate2-vasp'.")
    state: ResultState = Field(description="successful, failed, unconverged, rejected or no_reference.")
    message: str | None = Field(None, description="Why the result carries no formation enthalpy.")
    formula: str | None = Field(None, description="pymatgen reduced formula of the final structure.")
    chemsys: str | None = Field(None, description="Chemical system of the final structure.")
    structure: dict | None = Field(None, description="Final structure (pymatgen dict).")
    energy_ev: float | None = Field(None, description="Final total energy (eV), corrected for VASP.")
    energy_per_atom_ev: float | None = Field(None, description="Final energy per atom (eV/atom).")
    dhf_ev_per_atom: float | None = Field(None, description="Formation enthalpy against the element references.")
    element_references_ev_per_atom: dict[str, float] | None = Field(None, description="The references used.")
    element_reference_jobs: dict[str, str | None] | None = Field(None, description="Job uuid of each reference used.")
    functional: str | None = Field(None, description="Force field name or VASP run type (GGA, GGA+U, ...).")
    package_version: str | None = Field(None, description="Force-field or VASP version.")
    force_field_model: str | None = Field(
        None, description="The force-field model the job loaded (e.g. 'CHGNet 0.3.0'), when the job recorded it.")
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
    force_field_model: str | None = None
    job_uuid: str | None = None
    last_updated: datetime = Field(default_factory=utcnow)


def _reduced(composition: Composition) -> str:
    return composition.reduced_formula


def force_field_source(name: object) -> str:
    """The source label of a force field: ``MLFF.CHGNet`` -> ``chgnet``, ``MLFF.MACE`` -> ``mace``, else a slug."""
    text = str(getattr(name, "value", name) or "").removeprefix("MLFF.")
    if text in FORCE_FIELD_SOURCES:
        return FORCE_FIELD_SOURCES[text]
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "force-field"


def _is_force_field(source: str) -> bool:
    return source != SOURCES["vasp"]


def parse_task(job_doc: dict) -> dict | None:
    """The facts of a jobflow job document whose output is an atomate2 task document.

    Returns None for an output that is not a force-field or VASP task document (other jobs of
    the flow), else a dict with ``source`` (:func:`force_field_source` or ``atomate2-vasp``),
    ``job_uuid``, ``job_index``, ``job_name``, ``state``
    (``successful``/``failed``/``unconverged``/``rejected``), ``message``, ``composition``
    (pymatgen, or None), ``structure``, ``energy_ev``, ``functional``, ``package_version``,
    ``entry`` (VASP ComputedEntry dict) and ``expected_formula``.
    """
    from pymatgen.core import Structure

    output = job_doc.get("output")
    if not isinstance(output, dict):
        return None
    kind = _kind(output)
    if kind is None:
        return None
    facts: dict[str, Any] = {
        "source": _source(kind, output), "job_uuid": str(job_doc.get("uuid")), "job_index": int(job_doc.get("index", 1) or 1),
        "job_name": job_doc.get("name"), "state": "successful", "message": None, "composition": None,
        "structure": None, "energy_ev": None, "entry": None,
        "expected_formula": _text_or_none((job_doc.get("metadata") or {}).get(FORMULA_METADATA_KEY)),
        "force_field_model": None,
    }
    structure = output.get("structure") or (output.get("output") or {}).get("structure")
    if isinstance(structure, dict):
        try:
            parsed = Structure.from_dict(structure)
        except Exception as exc:  # noqa: BLE001 - a malformed structure is bad input, reported
            return {**facts, "state": "rejected", "message": f"unreadable structure ({type(exc).__name__})"}
        facts["structure"] = structure
        dummies = sorted({str(e) for e in parsed.composition.elements if not _is_element(e)})
        if dummies:  # a placeholder site (X0+) has no element reference, and no place on a hull
            return {**facts, "state": "rejected", "message": f"structure holds dummy species {', '.join(dummies)}"}
        facts["composition"] = parsed.composition.element_composition  # Fe2+ is Fe: references are per element
    inner = output.get("output") or {}
    facts["energy_ev"] = inner.get("energy")
    if kind == "force_field":
        facts["functional"] = output.get("forcefield_name") or output.get("ase_calculator_name")
        facts["package_version"] = output.get("forcefield_version")
        facts["force_field_model"] = (job_doc.get("metadata") or {}).get(FORCE_FIELD_MODEL_METADATA_KEY)
        # atomate2 marks an unconverged relax as failed: convergence is checked first
        unconverged = _unconverged(output, inner)
        if unconverged:
            return {**facts, "state": "unconverged", "message": unconverged}
    else:
        facts["functional"] = str(output.get("run_type")) if output.get("run_type") is not None else None
        facts["package_version"] = output.get("vasp_version")
        facts["entry"] = output.get("entry")
    if not _succeeded(output):
        return {**facts, "state": "failed", "message": f"task state {output.get('state')}"}
    if facts["composition"] is None:
        return {**facts, "state": "rejected", "message": "task document without a final structure"}
    if facts["energy_ev"] is None:
        return {**facts, "state": "rejected", "message": "task document without a final energy"}
    if not _finite(facts["energy_ev"]):
        return {**facts, "state": "rejected", "message": f"final energy {facts['energy_ev']!r} is not a finite number"}
    expected = facts["expected_formula"]
    if expected is not None:
        asked = _formula_or_none(expected)
        if asked is None:
            return {**facts, "state": "rejected",
                    "message": f"the job's metadata {FORMULA_METADATA_KEY} {expected!r} is not a formula"}
        if asked != _reduced(facts["composition"]):
            return {**facts, "state": "rejected",
                    "message": f"structure is {_reduced(facts['composition'])}, the job was asked for {expected}"}
    return facts


def _text_or_none(value: Any) -> str | None:
    """``value`` as text for a result document (a number in the metadata is kept, as text), None staying None."""
    return None if value is None else str(value)


def _is_element(species: Any) -> bool:
    """Whether a composition's key is a chemical element (an ``Element``, or a ``Species`` such as Fe2+), not a dummy."""
    from pymatgen.core import Element

    return isinstance(getattr(species, "element", species), Element)


def _formula_or_none(formula: Any) -> str | None:
    """The reduced formula of a formula text of real elements, else None (not a text, not a formula, a dummy)."""
    from pymatgen.core import Composition

    if not isinstance(formula, str) or not formula.strip():
        return None
    try:
        composition = Composition(formula)
    except Exception:  # noqa: BLE001 - pymatgen raises ValueError, KeyError, ... for what is not a formula
        return None
    if not composition or not all(_is_element(e) for e in composition.elements):
        return None
    return composition.reduced_formula


def _source(kind: str, output: dict) -> str:
    """The source label of a task document of ``kind``."""
    if kind == "vasp":
        return SOURCES["vasp"]
    return force_field_source(output.get("forcefield_name") or output.get("ase_calculator_name"))


def _unconverged(output: dict, inner: dict) -> str | None:
    """Why a force-field relax did not converge (None when it did).

    atomate2's ``is_force_converged`` decides when the document has it: a single point
    (``ForceFieldStaticMaker``, ``steps=1``) is converged though it used its one step. It tests
    the atomic forces only, so a cell relax (``relax_cell``/``relax_shape``) that stopped at its
    step limit without converging (``steps=1`` runs no optimizer at all) is still unconverged.
    Without the flag, the step limit alone decides.
    """
    inputs = output.get("input") or {}
    steps, n_steps = inputs.get("steps"), inner.get("n_steps")
    at_limit = bool(steps) and n_steps is not None and n_steps >= steps
    converged = output.get("is_force_converged")
    if converged is None:
        return f"relax stopped at its step limit ({steps})" if at_limit else None
    if not converged:
        return f"forces not converged after {n_steps} steps" if n_steps is not None else "forces not converged"
    if (inputs.get("relax_cell") or inputs.get("relax_shape")) and at_limit and (steps <= 1 or not _succeeded(output)):
        return f"relax stopped at its step limit ({steps}) before the cell converged"
    return None


def _succeeded(output: dict) -> bool:
    """Whether the task document's state is successful (no state: successful)."""
    return str(output.get("state") or "successful").lower() in ("successful", "taskstate.success", "success")


def _finite(value: Any) -> bool:
    """Whether ``value`` is a finite real number (True and the text "-10.3" are not energies)."""
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    return math.isfinite(float(value))


def _kind(output: dict) -> str | None:
    """'force_field', 'vasp' or None from a serialised task document."""
    name = str(output.get("@class", ""))
    if name == "ForceFieldTaskDocument" or "forcefield_name" in output:
        return "force_field"
    if name == "TaskDoc" or ("calcs_reversed" in output and "vasp_version" in output):
        return "vasp"
    return None


def element_prototypes(element: str, *, box_angstrom: float = 10.0) -> list:
    """Candidate ground states of ``element`` (pymatgen Structures) for a force-field reference.

    bcc, fcc and hcp near the element's metallic radius, diamond for the group-14-like covalent
    elements, the experimental ground-state type where a metal lattice cannot reach it
    (:func:`ground_state_prototypes`: black P, A7 As/Sb/Bi, trigonal Se/Te, graphite, solid
    Br2/I2), and a dimer in a ``box_angstrom`` cube for H, N, O, F and Cl.
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
    return structures + ground_state_prototypes(element)


#: Experimental ground-state structure types of covalent and molecular elements that no simple
#: metal lattice reaches: (space group number, lattice (a, b, c) in Å, Wyckoff site). The relax
#: finds the exact geometry. Measured with CHGNet (relax, fmax 0.05 eV/Å), energy per atom
#: against the lowest of bcc/fcc/hcp/diamond: solid Br2 -0.585 eV, solid I2 -0.425, S chains
#: -0.338, trigonal Te -0.288, A7 Sb -0.186, A7 As -0.162, black P -0.127, graphite -0.117,
#: Bi -0.085; trigonal Se equal (its hcp start relaxes into chains). A reference that high makes
#: every compound of the element too stable by its atomic fraction times that.
GROUND_STATE_TYPES: dict[str, tuple[int, tuple[float, float, float], tuple[float, float, float]]] = {
    "P": (64, (3.314, 10.48, 4.376), (0.0, 0.1017, 0.0806)),     # black phosphorus, A17 (Cmce)
    "As": (166, (3.76, 3.76, 10.55), (0.0, 0.0, 0.227)),        # A7 (R-3m, hexagonal axes)
    "Sb": (166, (4.31, 4.31, 11.27), (0.0, 0.0, 0.2336)),       # A7
    "Bi": (166, (4.546, 4.546, 11.86), (0.0, 0.0, 0.2339)),     # A7
    "Se": (152, (4.366, 4.366, 4.954), (0.2254, 0.0, 1 / 3)),   # trigonal helical chains, A8 (P3_121)
    "Te": (152, (4.457, 4.457, 5.929), (0.2636, 0.0, 1 / 3)),   # A8
    "S": (152, (3.8, 3.8, 4.3), (0.22, 0.0, 1 / 3)),            # helical chains (S8 rings: 128-atom cell)
    "C": (194, (2.464, 2.464, 6.711), (0.0, 0.0, 0.25)),        # graphite, A9 (P6_3/mmc; + (1/3, 2/3, 1/4))
    "Br": (64, (6.67, 4.48, 8.72), (0.0, 0.1015, 0.1211)),      # molecular crystal, A14 (Cmce)
    "I": (64, (7.18, 4.71, 9.81), (0.0, 0.1543, 0.1174)),       # A14
}


def ground_state_prototypes(element: str) -> list:
    """The experimental ground-state structure type of ``element`` (:data:`GROUND_STATE_TYPES`), if listed."""
    from pymatgen.core import Lattice, Structure

    if element not in GROUND_STATE_TYPES:
        return []
    number, (a, b, c), site = GROUND_STATE_TYPES[element]
    hexagonal = number in (152, 166, 194)
    lattice = Lattice.hexagonal(a, c) if hexagonal else Lattice.orthorhombic(a, b, c)
    sites = [list(site)] + ([[1 / 3, 2 / 3, 0.25]] if element == "C" else [])
    return [Structure.from_spacegroup(number, lattice, [element] * len(sites), sites)]


def force_field_element_references(elements: Iterable[str], maker: Maker, store: Store, *,
                                   source: str | None = None) -> dict[str, float]:
    """Energy per atom of each element with ``maker`` (an atomate2 force-field relax maker), cached in ``store``.

    ``source`` defaults to :func:`force_field_source` of the maker's ``force_field_name``; one
    given must agree with it. Elements already in ``store`` (key ``element|source``) are not
    computed again; the others relax every structure of :func:`element_prototypes` with
    ``maker.make`` (run locally, in memory) and keep the lowest energy per atom.
    """
    source = _maker_source(maker, source)
    wanted = sorted(set(elements))
    cached = {d["element"]: d["energy_per_atom_ev"] for d in store.query(
        {"reference_id": {"$in": [f"{e}|{source}" for e in wanted]}})}
    for element in wanted:
        if element in cached:
            continue
        best = _relax_element(element, maker, source)
        if best is None:
            raise ResultError(f"no {source} reference for {element}: every prototype relax failed "
                              f"(can the {source} model be loaded here?)")
        store.update([best.model_dump()], key="reference_id")
        cached[element] = best.energy_per_atom_ev
    return cached


def force_field_model(maker: Maker) -> str | None:
    """The force-field model ``maker`` loads, e.g. ``'CHGNet 0.3.0'`` (None when it cannot be told).

    atomate2 builds the calculator from ``maker.calculator_kwargs``: a model object there gives
    its ``version`` (a fine-tuned one without a version: ``'CHGNet (custom model)'``), a name or
    path is quoted as given, and with neither CHGNet loads ``CHGNet.load``'s default model.
    """
    name = getattr(maker, "force_field_name", None)
    if name is None:
        return None
    label = str(getattr(name, "value", name)).removeprefix("MLFF.")
    kwargs = getattr(maker, "calculator_kwargs", None) or {}
    for key in ("model", "model_name", "model_path", "path"):
        value = kwargs.get(key)
        if value is None:
            continue
        if isinstance(value, (str, PathLike)):
            return f"{label} {value}"
        version = getattr(value, "version", None)
        return f"{label} {version}" if version else f"{label} (custom model)"
    if label == "CHGNet":
        default = _chgnet_default_model()
        return f"CHGNet {default}" if default else None
    return None


def _chgnet_default_model() -> str | None:
    """The model name ``CHGNet.load()`` loads by default in the installed chgnet (None without chgnet)."""
    import inspect

    try:
        from chgnet.model import CHGNet
    except ImportError:
        return None
    default = inspect.signature(CHGNet.load).parameters.get("model_name")
    return None if default is None or default.default is inspect.Parameter.empty else str(default.default)


def lowest_force_field_elements(tasks: Iterable[dict], source: str, model: str | None = None) -> dict[str, ElementReferenceDoc]:
    """The lowest successful pure-element task of ``source`` per element among parsed ``tasks`` (:func:`parse_task`).

    A task that names another force-field model than ``model`` is left out (one that names none
    is used). These stand beside the relaxed prototypes when a force field's references are
    cached: the lower of the two is the reference.
    """
    found: dict[str, ElementReferenceDoc] = {}
    for facts in tasks:
        composition = facts.get("composition")
        if (facts["source"] != source or facts["state"] != "successful" or composition is None
                or len(composition.elements) != 1 or not _finite(facts.get("energy_ev"))):
            continue
        if model and facts.get("force_field_model") and facts["force_field_model"] != model:
            continue
        element = str(composition.elements[0])
        energy = float(facts["energy_ev"]) / composition.num_atoms
        if element not in found or energy < found[element].energy_per_atom_ev:
            found[element] = ElementReferenceDoc(
                reference_id=f"{element}|{source}", element=element, source=source, energy_per_atom_ev=energy,
                structure=facts.get("structure"), functional=facts.get("functional"),
                package_version=facts.get("package_version"),
                force_field_model=facts.get("force_field_model") or model, job_uuid=facts["job_uuid"])
    return found


def _maker_source(maker: Maker, source: str | None) -> str:
    """The source label of ``maker``'s force field, checked against ``source`` when given."""
    name = getattr(maker, "force_field_name", None)
    if name is None:
        if source is None:
            raise ResultError(f"cannot tell the force field of {type(maker).__name__}: pass source=")
        return source
    derived = force_field_source(name)
    if source is not None and source != derived:
        raise ResultError(f"the maker relaxes with {name}, not {source}: its references are {derived}")
    return derived


def _relax_element(element: str, maker: Maker, source: str) -> ElementReferenceDoc | None:
    """The lowest-energy relaxed prototype of ``element`` (None when every relax failed)."""
    from jobflow import run_locally
    from jobflow.core.store import JobStore
    from maggma.stores import MemoryStore

    best: ElementReferenceDoc | None = None
    model = force_field_model(maker)
    for structure in element_prototypes(element):
        job = maker.make(structure)
        job_store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
        responses = run_locally(job, store=job_store, log=False, ensure_success=False)
        response = responses.get(job.uuid, {})
        output = next(iter(response.values())).output if response else None
        if output is None or not _finite(getattr(output.output, "energy", None)):
            logger.warning("reference relax of %s (%d atoms) with %s failed", element, len(structure), source)
            continue
        energy = float(output.output.energy) / len(output.structure)
        if best is None or energy < best.energy_per_atom_ev:
            best = ElementReferenceDoc(
                reference_id=f"{element}|{source}", element=element, source=source, energy_per_atom_ev=energy,
                structure=output.structure.as_dict(), functional=getattr(output, "forcefield_name", None),
                package_version=getattr(output, "forcefield_version", None), force_field_model=model,
                job_uuid=job.uuid)
    return best


class ResultsBuilder(Builder):
    """Bring finished atomate2 calculations back as reference entries (incremental)."""

    def __init__(self, jobs: Store, results: Store, reference: Store, element_references: Store,
                 query: dict | None = None, refresh_vasp_references: bool = False, rebuild_source: str | None = None,
                 **kwargs: Any) -> None:
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
            references (fill it with :func:`force_field_element_references`) and the pinned VASP ones.
        query
            Extra criteria on the job documents.
        refresh_vasp_references
            Re-pin every VASP element reference from the lowest pure-element task now in the
            store and rebuild every VASP result against them (default: keep the pinned ones).
        rebuild_source
            Rebuild every result of this source (its element references were just relaxed again:
            ``bring_results_back(refresh_force_field_references=True)``).
        """
        self.jobs = jobs
        self.results = results
        self.reference = reference
        self.element_references = element_references
        self.query = query or {}
        self.refresh_vasp_references = refresh_vasp_references
        self.rebuild_source = rebuild_source
        self.kwargs = kwargs
        #: One line per pure-element VASP task that came back lower than its pinned reference (also logged).
        self.notes: list[str] = []
        super().__init__(sources=[jobs], targets=[results, reference, element_references], **kwargs)

    # --------------------------------------------------------------------------- maggma steps
    def get_items(self) -> Iterator[dict]:
        """Job documents not built yet (or waiting for an element reference), and the references to use."""
        pending = self._pending()
        self.total = len(pending)
        self.logger.info("%d new job outputs to bring back", len(pending))
        if not pending:
            return
        facts = [f for _, f in pending]
        references = {s: self._cached_references(s) for s in {f["source"] for f in facts} if _is_force_field(s)}
        references[SOURCES["vasp"]], pins = self._vasp_references(facts)
        yield {"tasks": pending, "references": references, "pins": pins}

    def process_item(self, item: dict) -> dict[str, list[dict]]:
        """The :class:`ComputedResultDoc` dicts of the tasks, and the VASP element references to pin."""
        docs = [_result_doc(result_id, facts, item["references"].get(facts["source"], {})).model_dump()
                for result_id, facts in item["tasks"]]
        return {"results": docs, "element_references": item.get("pins", [])}

    def update_targets(self, items: list[dict[str, list[dict]]]) -> None:
        """Pin the new element references, upsert the results, then the reference entry of each (formula, source)."""
        pins = [d for item in items for d in item["element_references"]]
        if pins:
            self.element_references.update(pins, key="reference_id")
        docs = [d for item in items for d in item["results"]]
        if not docs:
            return
        # pure elements are the references themselves, not reference entries
        touched = {(d["formula"], d["source"]) for d in docs if d["formula"] and "-" in (d["chemsys"] or "")}
        # the entries first, from the stored results and these, then the results: a write that fails between
        # the two (a full disk, a MongoDB user without rights on one collection, a server gone) leaves results
        # not yet stored, which the next run builds again; results stored first were never built again, and
        # their entries never made
        for formula, source in sorted(touched):
            self._update_reference(formula, source, docs)
        self.results.update(docs, key="result_id")
        self._note_lower_element_results(docs)

    # --------------------------------------------------------------------------- helpers
    def _tasks(self) -> Iterator[dict]:
        """The parsed task documents of the job store (other outputs left out)."""
        for doc in self.jobs.query({"output": {"$ne": None}, **self.query},
                                   properties=["uuid", "index", "name", "output", "metadata"]):
            facts = parse_task(doc)
            if facts is not None:
                yield facts

    def _pending(self) -> list[tuple[str, dict]]:
        """(result id, facts) of the tasks to build: new, ``no_reference``, or VASP ones being refreshed."""
        done = {d["result_id"]: d["state"] for d in self.results.query({}, properties=["result_id", "state"])}
        pending = []
        seen = set()
        for facts in self._tasks():
            result_id = f"{facts['source']}|{facts['job_uuid']}|{facts['job_index']}"
            seen.add(result_id)
            rebuild = ((self.refresh_vasp_references and facts["source"] == SOURCES["vasp"])
                       or (self.rebuild_source is not None and facts["source"] == self.rebuild_source))
            if done.get(result_id) in (None, "no_reference") or rebuild:
                pending.append((result_id, facts))
        if self.rebuild_source is not None and _is_force_field(self.rebuild_source):
            # a result whose job is not in this JobStore is rebuilt from its own document (its energy and structure)
            for doc in self.results.query({"source": self.rebuild_source, "energy_ev": {"$ne": None}}):
                if doc["result_id"] not in seen and doc.get("structure"):
                    pending.append((doc["result_id"], _facts_of_result(doc)))
        return pending

    def _cached_references(self, source: str) -> dict[str, dict]:
        return {d["element"]: {"energy_per_atom_ev": d["energy_per_atom_ev"], "job_uuid": d.get("job_uuid"),
                               "force_field_model": d.get("force_field_model")}
                for d in self.element_references.query({"source": source})}

    def _vasp_references(self, facts: Sequence[dict]) -> tuple[dict[str, dict], list[dict]]:
        """The pinned VASP element references, and the reference docs to pin for elements used the first time."""
        source = SOURCES["vasp"]
        pinned = self._cached_references(source)
        needed = {str(e) for f in facts if f["source"] == source and f["state"] == "successful"
                  for e in f["composition"].elements}
        if not self.refresh_vasp_references:
            needed -= set(pinned)
        if not needed:
            return pinned, []
        candidates = _vasp_element_references([f for f in self._tasks() if f["source"] == source])
        new = {e: candidates[e] for e in sorted(needed) if e in candidates}
        for element, ref in new.items():
            self.logger.info("pinning the %s reference of %s: job %s, %.4f eV/atom",
                             source, element, ref["job_uuid"], ref["energy_per_atom_ev"])
        pins = [ElementReferenceDoc(reference_id=f"{e}|{source}", element=e, source=source, **ref).model_dump()
                for e, ref in new.items()]
        return {**pinned, **{e: {k: ref[k] for k in ("energy_per_atom_ev", "job_uuid")} for e, ref in new.items()}}, pins

    def _note_lower_element_results(self, docs: Sequence[dict]) -> None:
        """Warn (and note) each successful pure-element result lower than the reference of its element.

        VASP: the pinned reference (``refresh_vasp_references=True`` re-pins). A force field: the
        cached relax of :func:`element_prototypes` (a structure they do not reach came back lower).
        Results keep the reference they were built with, so they stay comparable.
        """
        vasp = SOURCES["vasp"]
        for doc in docs:
            element, source = doc.get("chemsys") or "", doc["source"]
            if doc["state"] != "successful" or not element or "-" in element:
                continue
            pinned = (doc.get("element_references_ev_per_atom") or {}).get(element)
            pinned_job = (doc.get("element_reference_jobs") or {}).get(element)
            energy = doc.get("energy_per_atom_ev")
            if pinned is None or energy is None or pinned_job == doc["job_uuid"] or energy >= pinned - 1e-9:
                continue
            if source == vasp:
                note = (f"{element} ({source}): job {doc['job_uuid']} at {energy:.4f} eV/atom is lower than the pinned "
                        f"reference, job {pinned_job} at {pinned:.4f} eV/atom; results keep the pinned one so they "
                        f"stay comparable: rebuild with refresh_vasp_references=True to re-pin")
            else:
                note = (f"{element} ({source}): job {doc['job_uuid']} at {energy:.4f} eV/atom is lower than the cached "
                        f"reference ({pinned:.4f} eV/atom, the best prototype relaxed); results keep the cached one so "
                        f"they stay comparable: a structure the prototypes miss may be the element's ground state "
                        f"(refresh_force_field_references=True takes the lower one)")
            self.logger.warning(note)
            self.notes.append(note)

    def _update_reference(self, formula: str, source: str, new: Sequence[dict] = ()) -> None:
        """The reference entry of (formula, source) from its stored successful results and ``new`` ones (not yet
        stored; they replace stored ones of the same result id)."""
        new = [d for d in new if d["formula"] == formula and d["source"] == source]
        ids = {d["result_id"] for d in new}
        rows = [d for d in self.results.query({"formula": formula, "source": source, "state": "successful"})
                if d["result_id"] not in ids] + [d for d in new if d["state"] == "successful"]
        if not rows:
            self._drop_stale_reference(formula, source, {d.get("job_uuid") for d in new})
            return
        rows.sort(key=lambda d: (d["dhf_ev_per_atom"], d["result_id"]))
        best = rows[0]
        if len(rows) > 1:
            self.logger.warning(
                "%s has %d %s results (%s): all kept in results, the lowest (%.4f eV/atom, job %s) used",
                formula, len(rows), source, ", ".join(r["job_uuid"] for r in rows), best["dhf_ev_per_atom"], best["job_uuid"])
        doc = ReferenceEntryDoc.from_formula(
            formula, best["dhf_ev_per_atom"], source=source, source_id=best["job_uuid"],
            source_version=best.get("package_version"), functional=best.get("functional"),
            result_id=best["result_id"],
        ).model_dump()
        self.reference.update([doc], key=["formula", "source"])

    def _drop_stale_reference(self, formula: str, source: str, new_jobs: set = frozenset()) -> None:
        """Remove the entry this builder made of (formula, source) once none of its results is successful
        (``new_jobs``: the jobs of its results not stored yet)."""
        ours = set(self.results.distinct("job_uuid", {"formula": formula, "source": source})) | set(new_jobs)
        entries = list(self.reference.query({"formula": formula, "source": source}))
        if any(d.get("source_id") in ours for d in entries):
            self.reference.remove_docs({"formula": formula, "source": source})
            self.logger.warning("%s (%s): no successful result left, its reference entry removed", formula, source)


def _facts_of_result(doc: dict) -> dict:
    """The facts (:func:`parse_task`) of a stored force-field result with an energy, to build it again
    against new element references when its job is no longer in the JobStore at hand."""
    from pymatgen.core import Structure

    structure = doc["structure"]
    return {
        "source": doc["source"], "job_uuid": doc.get("job_uuid"), "job_index": int(doc.get("job_index") or 1),
        "job_name": doc.get("job_name"), "state": "successful", "message": None,
        "composition": Structure.from_dict(structure).composition.element_composition, "structure": structure,
        "energy_ev": doc["energy_ev"], "entry": None, "expected_formula": doc.get("expected_formula"),
        "force_field_model": doc.get("force_field_model"), "functional": doc.get("functional"),
        "package_version": doc.get("package_version"),
    }


def _vasp_element_references(tasks: Sequence[dict]) -> dict[str, dict]:
    """Lowest corrected energy per atom of each element among the successful VASP tasks of pure elements, with provenance."""
    references: dict[str, dict] = {}
    for facts in tasks:
        if facts["source"] != SOURCES["vasp"] or facts["state"] != "successful":
            continue
        if facts["composition"] is None or len(facts["composition"].elements) != 1:
            continue
        corrected, _ = _vasp_corrected_energy(facts)
        if corrected is None or not math.isfinite(corrected):
            continue
        element = str(facts["composition"].elements[0])
        per_atom = corrected / facts["composition"].num_atoms
        if element not in references or per_atom < references[element]["energy_per_atom_ev"]:
            references[element] = {"energy_per_atom_ev": per_atom, "job_uuid": facts["job_uuid"],
                                   "structure": facts["structure"], "functional": facts.get("functional"),
                                   "package_version": facts.get("package_version")}
    return references


def _vasp_corrected_energy(facts: dict) -> tuple[float | None, str | None]:
    """Total energy after ``MaterialsProject2020Compatibility``, or None and why there is none (one line)."""
    from pymatgen.entries.compatibility import CompatibilityError, MaterialsProject2020Compatibility
    from pymatgen.entries.computed_entries import ComputedEntry

    entry_dict = facts.get("entry")
    if not isinstance(entry_dict, dict):
        return None, "task document without a ComputedEntry (entry)"
    try:
        entry = ComputedEntry.from_dict(entry_dict)
    except Exception as exc:  # noqa: BLE001 - a malformed entry is bad input, reported
        return None, f"unreadable ComputedEntry ({type(exc).__name__})"
    mismatch = _entry_structure_mismatch(entry.composition, facts["composition"])
    if mismatch:
        return None, mismatch
    scheme = MaterialsProject2020Compatibility(check_potcar=False)
    try:
        processed = scheme.process_entries([entry], verbose=False, clean=True, on_error="raise")
    except CompatibilityError as exc:
        return None, f"MaterialsProject2020Compatibility rejects it: {_compatibility_reason(exc)}"
    if not processed:
        return None, "MaterialsProject2020Compatibility rejects it (conflicting energy adjustments)"
    return float(processed[0].energy), None


def _entry_structure_mismatch(entry: Composition, structure: Composition) -> str | None:
    """Why a VASP task's entry (its energy) and its structure (the atoms it is divided by) disagree, or None."""
    entry = entry.element_composition
    if entry.reduced_formula != structure.reduced_formula:
        return (f"the task's entry is {entry.formula.replace(' ', '')} ({entry.reduced_formula}), "
                f"its structure {structure.reduced_formula}")
    if abs(entry.num_atoms - structure.num_atoms) > 1e-6:
        return (f"the task's entry is for {entry.num_atoms:g} atoms ({entry.formula.replace(' ', '')}), "
                f"its structure has {structure.num_atoms:g}")
    return None


def _compatibility_reason(exc: Exception) -> str:
    """pymatgen's reason for a rejection in one short line (the entry dict it appends left out)."""
    text = " ".join(str(exc).split()).split(" for {", 1)[0]
    text = re.sub(r"^Entry \S+ has ", "", text).removesuffix(" Discarding.").rstrip(".")
    return (text[:197] + "...") if len(text) > 200 else (text or type(exc).__name__)


def _result_doc(result_id: str, facts: dict, references: dict[str, dict]) -> ComputedResultDoc:
    """The result document of one parsed task: a formation enthalpy or the reason there is none."""
    composition = facts["composition"]
    common = dict(
        result_id=result_id, job_uuid=facts["job_uuid"], job_index=facts["job_index"], job_name=facts["job_name"],
        source=facts["source"], structure=facts["structure"], functional=facts.get("functional"),
        package_version=facts.get("package_version"), expected_formula=facts.get("expected_formula"),
        force_field_model=facts.get("force_field_model"),
        formula=_reduced(composition) if composition is not None else None,
        chemsys=chemsys_of(sorted(str(e) for e in composition.elements)) if composition is not None else None,
    )
    if facts["state"] != "successful":
        return ComputedResultDoc(**common, state=facts["state"], message=facts["message"])
    energy, problem = _final_energy(facts)
    if problem:
        return ComputedResultDoc(**common, state="rejected", message=problem)
    n_atoms = composition.num_atoms
    energies = dict(energy_ev=energy, energy_per_atom_ev=energy / n_atoms)
    elements = sorted(str(e) for e in composition.elements)
    missing = [e for e in elements if e not in references]
    if missing:
        return ComputedResultDoc(**common, state="no_reference", **energies,
                                 message=_missing_message(facts, missing))
    mismatch = _model_mismatch(facts, references, elements)
    if mismatch:
        return ComputedResultDoc(**common, state="no_reference", **energies, message=mismatch)
    mu = {e: float(references[e]["energy_per_atom_ev"]) for e in elements}
    dhf = (energy - sum(composition[e] * mu[e] for e in elements)) / n_atoms
    problem = _implausible(dhf)
    if problem:
        return ComputedResultDoc(**common, state="rejected", **energies, message=problem)
    return ComputedResultDoc(**common, state="successful", **energies, dhf_ev_per_atom=float(dhf),
                             element_references_ev_per_atom=mu,
                             element_reference_jobs={e: references[e].get("job_uuid") for e in elements})


def _final_energy(facts: dict) -> tuple[float | None, str | None]:
    """The total energy to use (MP2020-corrected for VASP), or why there is none."""
    energy = float(facts["energy_ev"])
    if facts["source"] == SOURCES["vasp"]:
        corrected, problem = _vasp_corrected_energy(facts)
        if corrected is None:
            return None, problem
        energy = corrected
    if not math.isfinite(energy):
        return None, f"final energy {energy!r} is not a finite number"
    return energy, None


def _missing_message(facts: dict, missing: Sequence[str]) -> str:
    """One line: which element references of the task's source are missing."""
    source, elements = facts["source"], ", ".join(missing)
    if not _is_force_field(source):
        return f"no {source} reference for {elements} yet"
    return (f"no {source} reference for {elements} yet: cache them with force_field_element_references "
            f"and a {facts.get('functional') or source} maker (another force field's are never used)")


def _model_mismatch(facts: dict, references: dict[str, dict], elements: Sequence[str]) -> str | None:
    """Why a force-field result cannot use these references: they were relaxed with another model.

    Only where both the result and the reference name their model (:func:`force_field_model`);
    one source holds one model's energies, since two models' total energies are not on one scale.
    """
    model = facts.get("force_field_model")
    if not model or not _is_force_field(facts["source"]):
        return None
    others = {e: references[e].get("force_field_model") for e in elements}
    others = {e: m for e, m in others.items() if m and m != model}
    if not others:
        return None
    cached = ", ".join(sorted(set(others.values())))
    return (f"computed with {model}, but the cached {facts['source']} references of {', '.join(sorted(others))} "
            f"are {cached}: relax them again with a maker of {model} "
            f"(bring_results_back(..., refresh_force_field_references=True))")


def _implausible(dhf: float) -> str | None:
    """Why a formation enthalpy cannot be used: not finite, or outside ingest's outlier window."""
    low, high = OUTLIER_RANGE_EV_PER_ATOM
    if math.isfinite(dhf) and low < dhf < high:
        return None
    return f"formation enthalpy {dhf:.3f} eV/atom outside the plausible window ({low:g}, {high:g}) eV/atom"
