"""Trial structures: decorated AFLOW prototypes ranked by substitution probability, pyxtal fallback."""

from __future__ import annotations

import pytest
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Composition

from fh_screen.jobs.structures import (
    deduplicate,
    make_structures,
    prototype_structures,
    random_structures,
    structures_for_composition,
)

pytest.importorskip("pyxtal")


def test_rock_salt_is_the_best_prototype_for_nacl():
    made = prototype_structures("NaCl", max_sites=8, limit=3)
    assert made[0].prototype == "AB_cF8_225_a_b"  # halite decorated with its own species
    assert made[0].prototype_name and "Rock Salt" in made[0].prototype_name
    probabilities = [m.substitution_probability for m in made]
    assert probabilities == sorted(probabilities, reverse=True)
    for m in made:
        assert m.structure.composition.reduced_formula == "NaCl"
        assert m.n_sites == len(m.structure) <= 8
    # distinct structures only
    matcher = StructureMatcher()
    assert not any(matcher.fit(a.structure, b.structure) for i, a in enumerate(made) for b in made[i + 1 :])


def test_prototype_volume_is_rescaled_to_the_new_species():
    lif = prototype_structures("LiF", max_sites=8, limit=1)[0]
    nacl = [p for p in prototype_structures("NaCl", max_sites=8) if p.prototype == lif.prototype][0]
    # Li and F are smaller atoms than Na and Cl: the same prototype gets a smaller cell per atom
    assert lif.structure.volume / len(lif.structure) < nacl.structure.volume / len(nacl.structure)


def test_random_fallback_when_no_prototype_fits():
    assert prototype_structures("LiFePO4", max_sites=28) == []
    made = structures_for_composition("LiFePO4", n_structures=2, max_sites=14, seed=3)
    assert 1 <= len(made) <= 2
    for m in made:
        assert m.source == "random"
        assert m.structure.composition.reduced_formula == "LiFePO4"
        assert len(m.structure) <= 14
        assert m.structure.get_space_group_info(symprec=0.1)[1] >= 1
    again = random_structures("LiFePO4", 1, max_sites=14, seed=3)
    assert again[0].structure == made[0].structure  # the seed makes it reproducible


def test_deduplicate_drops_a_supercell_of_an_earlier_structure():
    first = prototype_structures("NaCl", max_sites=8, limit=1)[0]
    copy = first.model_copy(deep=True)
    copy.structure.make_supercell([2, 1, 1])
    kept = deduplicate([first, copy])
    assert kept == [first]


def test_bad_and_impossible_compositions_are_reported_and_others_proceed():
    doc = make_structures(["Xx2O", "Li2FeO3", "NaCl"], n_structures=1, max_sites=4, use_random=True)
    assert [s.formula for s in doc.structures] == ["NaCl"]
    by_formula = {p.formula: p.message for p in doc.problems}
    assert set(by_formula) == {"Xx2O", "Li2FeO3"}
    assert "4 sites" in by_formula["Li2FeO3"]
    assert all("\n" not in m for m in by_formula.values())
    assert Composition(doc.for_formula("NaCl")[0].structure.composition.reduced_formula) == Composition("NaCl")
