"""Chemical analogues: hashing, the substitution and group-pattern counts, the shipped index."""

from __future__ import annotations

import numpy as np
import pytest

from fh_screen.screening.analogues import (
    ANALOGUE_INDEX_PATH,
    AnalogueIndex,
    analogue_counts,
    element_group,
    load_analogue_index,
)

KNOWN = ["NaCl", "KCl", "NaBr", "K2O", "Li2O", "LiFePO4", "NaMnPO4", "CsI", "Na2O2", "LaNi5", "CeNi5"]


@pytest.fixture(scope="module")
def index() -> AnalogueIndex:
    return AnalogueIndex.from_formulas(KNOWN + ["Na2Cl2", "bad formula!"], source="test")


def _brute_force(formula_counts: dict[str, int], known: list[str]) -> tuple[int, int]:
    """Both counts by plain pymatgen compositions (the reference the hashed lookups must equal)."""
    from pymatgen.core import Composition

    reduced = {Composition(f).reduced_formula for f in known}
    candidate = Composition(formula_counts)
    substitutions = 0
    groups = {}
    for symbol in ("H", "Li", "Na", "K", "Rb", "Cs", "Be", "Mg", "Ca", "Sr", "Ba", "O", "S", "Se", "Te", "F", "Cl", "Br",
                   "I", "Fe", "Ru", "Os", "Mn", "Tc", "Re", "P", "As", "Sb", "Bi", "N", "La", "Ce", "Pr", "Ni", "Pd", "Pt"):
        groups.setdefault(element_group(symbol), []).append(symbol)
    for element, amount in formula_counts.items():
        for mate in groups[element_group(element)]:
            if mate == element or mate in formula_counts:
                continue
            swapped = dict(formula_counts)
            swapped[mate] = swapped.pop(element)
            substitutions += Composition(swapped).reduced_formula in reduced
    pattern = sorted((element_group(e), a) for e, a in candidate.get_el_amt_dict().items())
    patterns = 0
    for other in reduced:
        amounts = Composition(other).get_el_amt_dict()
        if sorted((element_group(e), int(a)) for e, a in amounts.items()) == pattern and other != candidate.reduced_formula:
            patterns += 1
    return substitutions, patterns


def test_groups_follow_the_periodic_table():
    assert element_group("Na") == element_group("Cs") == 1
    assert element_group("H") == 0  # hydrogen is not an alkali metal here
    assert element_group("O") == element_group("Te") == 16
    assert element_group("La") == element_group("Lu") == 19
    assert element_group("U") == 20


def test_index_counts_distinct_reduced_compositions(index):
    assert index.metadata["n_compositions"] == len(KNOWN)  # Na2Cl2 is NaCl; the bad formula is skipped
    assert index.metadata["source"] == "test"


@pytest.mark.parametrize("system, rows", [
    (("Na", "Cl"), [[1, 1], [1, 2], [2, 1], [1, 12]]),
    (("K", "Cl"), [[1, 1], [1, 2]]),
    (("Na", "O"), [[2, 1], [1, 1], [1, 2]]),
    (("Li", "Fe", "P", "O"), [[1, 1, 1, 4], [2, 1, 1, 4], [1, 2, 1, 4]]),
    (("Na", "K", "O"), [[2, 0, 1], [0, 2, 1], [1, 1, 1]]),
    (("Pr", "Ni"), [[1, 5], [1, 1]]),
])
def test_counts_equal_a_brute_force_over_compositions(index, system, rows):
    substitutions, patterns = analogue_counts(np.array(rows), system, index)
    for row, s, p in zip(rows, substitutions, patterns):
        formula = {e: a for e, a in zip(system, row) if a}
        assert (s, p) == _brute_force(formula, KNOWN), formula


def test_textbook_cases(index):
    substitutions, patterns = analogue_counts(np.array([[1, 1], [1, 2]]), ("Na", "Cl"), index)
    assert substitutions.tolist() == [2.0, 0.0]   # NaCl: KCl and NaBr; NaCl2: nothing
    assert patterns.tolist() == [3.0, 0.0]        # KCl, NaBr, CsI share NaCl's (1, 17) pattern
    # in Na-K-O, Na2O's K2O counts although K is in the system (the row lacks it)
    substitutions, _ = analogue_counts(np.array([[2, 0, 1]]), ("Na", "K", "O"), index)
    assert substitutions.tolist() == [2.0]        # K2O, Li2O


def test_save_load_round_trip(index, tmp_path):
    path = index.save(tmp_path / "index.npz")
    again = AnalogueIndex.load(path)
    np.testing.assert_array_equal(again.composition_hashes, index.composition_hashes)
    np.testing.assert_array_equal(again.pattern_counts, index.pattern_counts)
    assert again.metadata == index.metadata


@pytest.mark.skipif(not ANALOGUE_INDEX_PATH.exists(), reason="no shipped analogue index in this checkout")
def test_shipped_index_is_train_only(oqmd_dir):
    from fh_screen.data import file_sha256

    shipped = load_analogue_index()
    assert shipped.metadata["source"] == "train.csv"
    assert shipped.metadata["source_sha256"] == file_sha256(oqmd_dir / "train.csv")
    substitutions, _ = analogue_counts(np.array([[1, 1], [1, 12]]), ("Na", "Cl"), shipped)
    assert substitutions[0] >= 2 and substitutions[1] == 0
