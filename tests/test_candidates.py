"""Enumeration of candidate compositions: parsing, counting, brute-force equality, formulas, charge."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from pymatgen.core import Composition, Element

from fh_screen.chem import candidates, oxidation
from fh_screen.errors import FhScreenError


def test_parse_chemsys_is_order_free_and_canonical():
    assert candidates.parse_chemsys("Li-Fe-P-O") == ("Fe", "Li", "O", "P")
    assert candidates.parse_chemsys("O-P-Fe-Li") == candidates.parse_chemsys(" Li-Fe-P-O ")
    assert candidates.parse_chemsys(["O", "Li"]) == ("Li", "O")


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("Li-Xx-O", "unknown element 'Xx'"),
        ("Li", "at least two elements"),
        ("Li-Li-O", "duplicate element 'Li'"),
        ("Li-Am-O", "outside the model's elements"),
        ("Li--O", "empty element"),
        ("Li-O-", "empty element"),
        ("Li,O", "unexpected ','"),
        ("Li O", "unexpected ' '"),
        ("Li2-O", "unexpected '2'"),
        ("", "empty chemical system"),
        ("li-o", "did you mean Li?"),
        ("-".join(["H", "Li", "Be", "B", "C", "N", "O", "F", "Na", "Mg", "Al"]), "at most 10"),
    ],
)
def test_parse_chemsys_rejects_bad_systems_with_one_line(text, fragment):
    with pytest.raises(candidates.ChemsysError) as info:
        candidates.parse_chemsys(text)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, FhScreenError)


def _brute_force(k: int, max_atoms: int, per: int) -> set[tuple[int, ...]]:
    out = set()
    for row in itertools.product(range(per + 1), repeat=k):
        if sum(row) > max_atoms or sum(1 for c in row if c) < 2:
            continue
        g = math.gcd(*row)
        out.add(tuple(c // g for c in row))
    return out


@pytest.mark.parametrize("k, max_atoms, per", [(2, 20, None), (3, 12, None), (3, 12, 4), (4, 9, None), (4, 10, 3), (5, 6, None)])
def test_enumeration_equals_brute_force_and_count(k, max_atoms, per):
    counts = candidates.enumerate_counts(k, max_atoms, per)
    rows = {tuple(r) for r in counts.tolist()}
    assert len(rows) == len(counts), "duplicates in the enumeration"
    assert rows == _brute_force(k, max_atoms, per if per is not None else max_atoms - 1)
    assert candidates.count_candidates(k, max_atoms, per) == len(counts)
    assert (np.gcd.reduce(counts, axis=1) == 1).all()
    assert (counts.sum(axis=1) <= max_atoms).all()


def test_count_is_exact_for_larger_systems_without_enumerating():
    assert candidates.count_candidates(5, 20) == len(candidates.enumerate_counts(5, 20))
    assert candidates.count_candidates(7, 20) > 800_000  # the reason for the --force limit


@pytest.mark.parametrize("bad", [0, 1, 201, 2.5, True])
def test_absurd_limits_are_refused(bad):
    with pytest.raises(candidates.ChemsysError):
        candidates.count_candidates(3, bad)
    with pytest.raises(candidates.ChemsysError):
        candidates.enumerate_counts(3, bad)


def test_bad_max_per_element_is_refused():
    with pytest.raises(candidates.ChemsysError, match="max_per_element"):
        candidates.enumerate_counts(3, 10, 0)


def test_formulas_equal_pymatgen_reduced_formula():
    chemsys = candidates.parse_chemsys("Li-Fe-P-O")
    counts = candidates.enumerate_counts(4, 20)
    ours = candidates.formulas_from_counts(counts, chemsys)
    theirs = [Composition(dict(zip(chemsys, row))).reduced_formula for row in counts.tolist()]
    assert ours == theirs
    assert "LiFePO4" in ours and "Li3Fe2(PO4)3" in ours and "Li2O2" in ours


def test_reduce_counts_divides_by_gcd():
    assert candidates.reduce_counts(np.array([[4, 6, 0], [2, 0, 0], [0, 0, 0]])).tolist() == [[2, 3, 0], [1, 0, 0], [0, 0, 0]]


def _neutral_by_brute_force(row, chemsys) -> bool:
    present = [(c, Element(s)) for c, s in zip(row, chemsys) if c]
    if all(e.is_metal for _, e in present):
        return True
    states = [e.common_oxidation_states or (0,) for _, e in present]
    return any(sum(c * q for (c, _), q in zip(present, choice)) == 0 for choice in itertools.product(*states))


def test_charge_neutral_mask_equals_per_row_reference():
    chemsys = candidates.parse_chemsys("Li-Fe-P-O")
    counts = candidates.enumerate_counts(4, 10)
    mask = oxidation.charge_neutral_mask(counts, chemsys)
    expected = [_neutral_by_brute_force(row, chemsys) for row in counts.tolist()]
    assert mask.tolist() == expected
    named = dict(zip(candidates.formulas_from_counts(counts, chemsys), mask))
    assert named["LiFePO4"] and named["Fe2O3"] and named["Li2O"] and named["FeO"]
    assert named["LiFe"]  # an alloy
    assert not named["Li2O2"]  # LiO: Li+ and O2- cannot balance one to one
    assert not named["Fe3O4"]  # mixed valence is not counted (documented)
