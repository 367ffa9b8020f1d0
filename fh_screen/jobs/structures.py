"""Compositions → trial crystal structures.

For each composition, in this order of preference:

1. **AFLOW prototypes** shipped with pymatgen (``pymatgen.analysis.prototypes``): every prototype whose
   anonymous reduced formula matches is decorated with each species mapping that respects the
   stoichiometry; mappings are ranked by pymatgen's data-mined substitution probability
   (Hautier et al. 2011, ``SubstitutionProbability.cond_prob``) between the oxidation states guessed
   for the target and for the prototype, and the cell is rescaled with pymatgen's reference-lattice
   volume predictor (atomic radii).
2. **Random symmetric structures** (pyxtal) fill up to ``n_structures`` when prototypes do not suffice
   (the usual case for ternaries and beyond: the shipped library holds 288 mostly binary prototypes).

Duplicates are removed with :class:`~pymatgen.analysis.structure_matcher.StructureMatcher`.
Failures are returned as :class:`~fh_screen.jobs.schemas.Problem` rows, never raised.
"""

from __future__ import annotations

import gzip
import importlib.util
import itertools
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from pymatgen.core import Composition, Species, Structure

from fh_screen.errors import FhScreenError, one_line
from fh_screen.jobs.base import CheckedMaker, fh_screen_job
from fh_screen.jobs.schemas import Problem, StructureCandidate, StructuresDocument

logger = logging.getLogger(__name__)

__all__ = [
    "StructureMaker",
    "deduplicate",
    "make_structures",
    "prototype_structures",
    "random_structures",
    "structures_for_composition",
]

#: Space groups tried first for random structures (common for inorganic solids), then any.
_COMMON_SPACE_GROUPS = (225, 221, 166, 194, 62, 14, 15, 12, 139, 129, 123, 164, 187, 191, 2, 1)


def _prototype_library_path() -> Path:
    """pymatgen's shipped ``aflow_prototypes.json.gz``, located without importing the package
    (its import deserialises every entry as a StructureNL, parsing bibtex: ~5 s)."""
    spec = importlib.util.find_spec("pymatgen.analysis.prototypes")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("pymatgen.analysis.prototypes is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "aflow_prototypes.json.gz"


@lru_cache(maxsize=1)
def _prototype_library() -> tuple[tuple[Structure, dict, str], ...]:
    """(structure, tags, anonymized reduced formula) for every shipped AFLOW prototype."""
    with gzip.open(_prototype_library_path(), "rt", encoding="utf-8") as handle:
        entries = json.load(handle)
    rows = []
    for entry in entries:
        structure = Structure.from_dict(entry["snl"])
        rows.append((structure, dict(entry.get("tags", {})), structure.composition.reduced_composition.anonymized_formula))
    return tuple(rows)


@lru_cache(maxsize=1)
def _substitution_probability():
    from pymatgen.analysis.structure_prediction.substitution_probability import SubstitutionProbability

    return SubstitutionProbability()


def _oxidation_guess(composition: Composition) -> dict[str, float]:
    """Most likely oxidation state of each element (empty when none balances the charge)."""
    return dict(_oxidation_guess_cached(composition.reduced_formula))


@lru_cache(maxsize=4096)
def _oxidation_guess_cached(reduced_formula: str) -> tuple[tuple[str, float], ...]:
    try:
        guesses = Composition(reduced_formula).oxi_state_guesses(max_sites=-20)
    except Exception:  # noqa: BLE001 - pymatgen raises several types for exotic compositions
        return ()
    return tuple(guesses[0].items()) if guesses else ()


def _species(element: str, oxidation: dict[str, float]) -> Species:
    state = oxidation.get(element, 0)
    return Species(element, int(round(state)) if float(state).is_integer() else state)


def _mapping_score(mapping: dict[str, str], target: Composition, prototype: Composition) -> float:
    """Substitution probability of putting each target element on a prototype element's sites.

    Product over prototype elements of pymatgen's conditional substitution probability between the
    guessed oxidation states. Species absent from pymatgen's table (metals in intermetallics,
    elements) fall back to the table's never-seen weight scaled by atomic-radius similarity
    (identical elements score as a perfect match).
    """
    table = _substitution_probability()
    target_ox = _oxidation_guess(target)
    proto_ox = _oxidation_guess(prototype)
    score = 1.0
    for proto_el, target_el in mapping.items():
        s_new = _species(target_el, target_ox)
        s_old = _species(proto_el, proto_ox)
        px = table.get_px(s_old)
        if px > 0 and s_new in table.species:
            score *= math.exp(table.get_lambda(s_new, s_old)) / px
        else:
            score *= math.exp(table.alpha) * _radius_similarity(target_el, proto_el)
    return score


def _radius_similarity(a: str, b: str) -> float:
    from pymatgen.core import Element

    if a == b:
        return 1.0
    ra, rb = Element(a).atomic_radius, Element(b).atomic_radius
    if ra is None or rb is None:
        return 0.01
    return math.exp(-5.0 * abs(float(ra) - float(rb)) / (0.5 * (float(ra) + float(rb))))


def _element_mappings(target: Composition, prototype: Composition) -> list[dict[str, str]]:
    """All prototype-element → target-element maps that reproduce the target's reduced formula."""
    t_amounts = target.reduced_composition.get_el_amt_dict()
    p_amounts = prototype.reduced_composition.get_el_amt_dict()
    if sorted(t_amounts.values()) != sorted(p_amounts.values()):
        return []
    p_elements = list(p_amounts)
    mappings = []
    for perm in itertools.permutations(t_amounts):
        if all(math.isclose(p_amounts[p], t_amounts[t]) for p, t in zip(p_elements, perm)):
            mappings.append(dict(zip(p_elements, perm)))
    return mappings


def prototype_structures(formula: str, max_sites: int = 24, limit: int | None = None) -> list[StructureCandidate]:
    """Decorated AFLOW prototypes for ``formula``, best substitution probability first.

    With ``limit``, stops after that many structures that are distinct (StructureMatcher).
    """
    from pymatgen.analysis.structure_prediction.volume_predictor import RLSVolumePredictor

    target = Composition(formula)
    anonymous = target.reduced_composition.anonymized_formula
    scored = []
    for structure, tags, proto_anonymous in _prototype_library():
        if proto_anonymous != anonymous or len(structure) > max_sites:
            continue
        for mapping in _element_mappings(target, structure.composition):
            scored.append((_mapping_score(mapping, target, structure.composition), tags, structure, mapping))
    scored.sort(key=lambda row: (-row[0], len(row[2])))
    volume_predictor = RLSVolumePredictor(check_isostructural=False, radii_type="atomic", use_bv=False)
    out: list[StructureCandidate] = []
    for score, tags, structure, mapping in scored:
        decorated = structure.copy()
        decorated.replace_species(dict(mapping))
        try:
            decorated = volume_predictor.get_predicted_structure(decorated, structure)
        except Exception as exc:  # noqa: BLE001 - keep the prototype cell when rescaling fails
            logger.debug("volume prediction failed for %s on %s: %s", formula, tags.get("aflow"), exc)
        name = tags.get("mineral") or tags.get("strukturbericht") or None
        candidate = StructureCandidate(
            formula=target.reduced_formula,
            structure=decorated,
            source="prototype",
            prototype=tags.get("aflow"),
            prototype_name=str(name) if name and str(name) != "None" else None,
            space_group=_space_group_number(tags.get("aflow")),
            substitution_probability=float(score),
            n_sites=len(decorated),
        )
        if not _plausible(decorated):
            continue
        if limit is not None:
            if _is_duplicate(candidate, out):
                continue
            out.append(candidate)
            if len(out) >= limit:
                break
        else:
            out.append(candidate)
    return out


def _plausible(structure: Structure, min_packing: float = 0.1, max_packing: float = 1.5) -> bool:
    """False for cells far from a dense solid (molecular prototypes rescaled onto metals, etc.).

    Packing fraction = sum of atomic-radius sphere volumes / cell volume.
    """
    spheres = 0.0
    for site in structure:
        radius = site.specie.atomic_radius
        if radius is None:
            return True
        spheres += 4.0 / 3.0 * math.pi * float(radius) ** 3
    packing = spheres / structure.volume
    return min_packing <= packing <= max_packing


def _space_group_number(aflow_label: str | None) -> int | None:
    """Space group number encoded in an AFLOW label (``AB_cF8_225_a_b`` → 225)."""
    try:
        return int(str(aflow_label).split("_")[2])
    except (IndexError, ValueError):
        return None


def _is_duplicate(candidate: StructureCandidate, kept: Sequence[StructureCandidate]) -> bool:
    matcher = _matcher()
    return any(k.formula == candidate.formula and matcher.fit(k.structure, candidate.structure) for k in kept)


@lru_cache(maxsize=1)
def _matcher():
    from pymatgen.analysis.structure_matcher import StructureMatcher

    return StructureMatcher()


def random_structures(
    formula: str, n: int, max_sites: int = 24, seed: int = 0, max_attempts: int = 40
) -> list[StructureCandidate]:
    """Up to ``n`` random symmetric crystals for ``formula`` from pyxtal (deterministic for a seed)."""
    from pyxtal import pyxtal
    from pyxtal.symmetry import Group

    target = Composition(formula).reduced_composition
    elements = [el.symbol for el in target.elements]
    base = [int(target[el]) for el in elements]
    total = sum(base)
    multiples = [z for z in (1, 2, 3, 4, 6, 8) if z * total <= max_sites]
    if not multiples:
        return []
    rng = np.random.default_rng(seed)
    groups = list(_COMMON_SPACE_GROUPS) + [g for g in range(230, 0, -1) if g not in _COMMON_SPACE_GROUPS]
    out: list[StructureCandidate] = []
    attempts = 0
    for sg in groups:
        if len(out) >= n or attempts >= max_attempts:
            break
        group = Group(sg)
        for z in multiples:
            counts = [c * z for c in base]
            if not group.check_compatible(counts)[0]:
                continue
            attempts += 1
            crystal = pyxtal()
            try:
                crystal.from_random(3, sg, elements, counts, random_state=int(rng.integers(2**31)))
            except Exception as exc:  # noqa: BLE001 - pyxtal raises many types when it cannot place atoms
                logger.debug("pyxtal failed for %s in group %d: %s", formula, sg, exc)
                continue
            if not crystal.valid:
                continue
            structure = crystal.to_pymatgen()
            out.append(
                StructureCandidate(
                    formula=target.reduced_formula,
                    structure=structure,
                    source="random",
                    space_group=sg,
                    n_sites=len(structure),
                )
            )
            break
    return out


def deduplicate(candidates: Sequence[StructureCandidate]) -> list[StructureCandidate]:
    """Drop structures that StructureMatcher finds equivalent to an earlier (better ranked) one."""
    kept: list[StructureCandidate] = []
    for candidate in candidates:
        if not _is_duplicate(candidate, kept):
            kept.append(candidate)
    return kept


def structures_for_composition(
    formula: str, n_structures: int = 3, max_sites: int = 24, use_prototypes: bool = True,
    use_random: bool = True, seed: int = 0,
) -> list[StructureCandidate]:
    """Up to ``n_structures`` distinct trial structures: prototypes first, random crystals to fill up."""
    found: list[StructureCandidate] = []
    if use_prototypes:
        found = prototype_structures(formula, max_sites=max_sites, limit=n_structures)
    if use_random and len(found) < n_structures:
        extra = random_structures(formula, n_structures - len(found) + 1, max_sites=max_sites, seed=seed)
        found = deduplicate(found + extra)[:n_structures]
    return found


def make_structures(
    formulas: Sequence[str], n_structures: int = 3, max_sites: int = 24, use_prototypes: bool = True,
    use_random: bool = True, seed: int = 0, model: str | None = None,
) -> StructuresDocument:
    """Trial structures for every formula; a formula that yields none is reported, not raised.

    ``model`` (``name@version``) is the model whose selection the formulas are; the document records it.
    """
    from fh_screen.chem.formula import reduced_formula

    doc = StructuresDocument(formulas=[str(f) for f in formulas], model=model)
    for formula in doc.formulas:
        try:
            reduced = reduced_formula(formula)
            made = structures_for_composition(
                reduced, n_structures=n_structures, max_sites=max_sites, use_prototypes=use_prototypes,
                use_random=use_random, seed=seed,
            )
        except Exception as exc:  # noqa: BLE001 - one bad formula must not stop the others
            doc.problems.append(Problem(stage="structures", formula=formula, message=one_line(exc, with_type=True)))
            continue
        if not made:
            doc.problems.append(
                Problem(
                    stage="structures",
                    formula=formula,
                    message=f"no prototype or random structure with at most {max_sites} sites could be made",
                )
            )
        doc.structures.extend(made)
    return doc



@dataclass
class StructureMaker(CheckedMaker):
    """Maker of trial structures for selected compositions (prototype decoration + pyxtal fallback).

    Parameters
    ----------
    name
        Job name.
    n_structures
        Distinct structures kept per composition.
    max_sites
        Largest cell made (keeps the force-field pre-relax and DFT cheap).
    use_prototypes, use_random
        Turn either source off (True or False; anything else is refused).
    seed
        Seed of the random structures (the same seed gives the same structures).
    """

    name: str = "candidate structures"
    n_structures: int = 3
    max_sites: int = 24
    use_prototypes: bool = True
    use_random: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        self._check()

    def _check(self) -> None:
        """Validate the fields; one-line :class:`FhScreenError` (also when a powerup updates them)."""
        if not isinstance(self.name, str):
            raise FhScreenError(f"StructureMaker.name must be a text, got {self.name!r}")
        for name in ("use_prototypes", "use_random"):
            if not isinstance(getattr(self, name), bool):
                raise FhScreenError(f"StructureMaker.{name} must be True or False, got {getattr(self, name)!r}")
        for name in ("n_structures", "max_sites"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise FhScreenError(f"StructureMaker.{name} must be a positive integer, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise FhScreenError(f"StructureMaker.seed must be an integer, got {self.seed!r}")

    def check_make(self, formulas, model=None):
        """The checks :meth:`make` runs when the job is made (fields set after construction too).

        ``formulas``: a formula, a list of formulas (texts or pymatgen ``Composition``, which
        become their reduced formula) or another job's output reference; anything else is
        refused in one line. One formula becomes a list.
        """
        from jobflow import OutputReference

        self._check()
        if isinstance(formulas, (str, Composition)):
            formulas = [formulas]
        if not isinstance(formulas, OutputReference):
            if not isinstance(formulas, (list, tuple)):
                raise FhScreenError(f"StructureMaker.make takes a list of formulas (or an output reference such as "
                                    f"prescreen.output.selected_formulas), got {type(formulas).__name__}")
            given = formulas
            formulas = []
            for formula in given:
                if isinstance(formula, Composition):
                    formula = formula.reduced_formula
                elif not isinstance(formula, (str, OutputReference)):
                    raise FhScreenError(f"StructureMaker.make: a formula is a text such as 'LiFePO4', "
                                        f"got {type(formula).__name__} {formula!r}")
                formulas.append(formula)
        if model is not None and not isinstance(model, (str, OutputReference)):
            raise FhScreenError(f"StructureMaker.make: model must be a model's name@version or None, got {model!r}")
        return self, (formulas,), {"model": model}

    @fh_screen_job(output_schema=StructuresDocument, check=check_make)
    def make(self, formulas: Sequence[str], model: str | None = None) -> StructuresDocument:
        """Job making structures for ``formulas`` (a list or a reference such as ``prescreen.output.selected_formulas``).

        ``model``: the ``name@version`` of the model that selected them (e.g. ``prescreen.output.model``).
        """
        return make_structures(
            list(formulas or []),
            model=model,
            n_structures=self.n_structures,
            max_sites=self.max_sites,
            use_prototypes=self.use_prototypes,
            use_random=self.use_random,
            seed=self.seed,
        )
