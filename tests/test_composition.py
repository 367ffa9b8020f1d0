"""Composition parsing and the fast fraction path, checked against pymatgen and matminer."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Composition

from fh_screen.composition import (
    DEFAULT_ELEMENTS,
    FormulaError,
    fraction_matrix,
    fraction_vector,
    fractions_from_counts,
    parse_formula,
    scatter_counts,
)


def test_default_elements_are_h_to_pu_by_atomic_number():
    from pymatgen.core import Element

    assert len(DEFAULT_ELEMENTS) == 94
    assert [Element(s).Z for s in DEFAULT_ELEMENTS] == list(range(1, 95))


def test_fast_path_equals_matminer_element_fraction_on_real_oqmd(oqmd_train_raw):
    from matminer.featurizers.composition import ElementFraction

    formulas = oqmd_train_raw["formula"].sample(n=3000, random_state=0).tolist()
    featurizer = ElementFraction()
    labels = featurizer.feature_labels()
    reference = np.array([featurizer.featurize(Composition(f)) for f in formulas])
    columns = [labels.index(s) for s in DEFAULT_ELEMENTS]
    assert np.allclose(reference[:, [i for i in range(len(labels)) if i not in columns]], 0)
    fast = fraction_matrix(formulas, DEFAULT_ELEMENTS, dtype=np.float64)
    assert all(e is None for e in fast.errors)
    np.testing.assert_allclose(fast.matrix, reference[:, columns], rtol=0, atol=1e-12)


def test_fast_path_equals_reference_path_for_unusual_formulas():
    formulas = ["(Li2O)3", "Li0.5FeO2", "FeOFe", "LiFe PO4", "NaN", "Fe2O3"]
    fast = fraction_matrix(formulas, dtype=np.float64)
    for row, formula in enumerate(formulas):
        np.testing.assert_allclose(fast.matrix[row], fraction_vector(parse_formula(formula)), atol=1e-12)


def test_nan_formula_is_sodium_nitride_not_missing():
    vector = fraction_vector(parse_formula("NaN"))
    assert vector[DEFAULT_ELEMENTS.index("Na")] == pytest.approx(0.5)
    assert vector[DEFAULT_ELEMENTS.index("N")] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("formula", "fragment"),
    [
        ("Xx2O", "unknown element symbol 'Xx'"),
        ("Og2O", "element 'Og'"),
        ("", "empty formula"),
        ("Fe0O0", "no atoms"),
        ("Fe-1O2", "negative amount"),
        ("li2o", "cannot parse formula"),
    ],
)
def test_bad_formulas_give_one_line_errors_on_both_paths(formula, fragment):
    with pytest.raises(FormulaError, match=fragment) as excinfo:
        parse_formula(formula)
    assert "\n" not in str(excinfo.value)
    batch = fraction_matrix([formula, "LiFePO4"])
    assert fragment in batch.errors[0]
    assert batch.errors[1] is None
    assert not batch.matrix[0].any()


def test_out_of_set_error_names_the_model_range():
    with pytest.raises(FormulaError, match="H–Pu"):
        parse_formula("Am2O3")


def test_counts_scatter_into_model_slots():
    counts = np.array([[1, 1, 1, 4], [2, 0, 0, 3]])
    matrix = scatter_counts(counts, ("Li", "Fe", "P", "O"))
    expected = fraction_matrix(["LiFePO4", "Li2O3"]).matrix
    np.testing.assert_allclose(matrix, expected, atol=1e-7)
    with pytest.raises(FormulaError):
        fractions_from_counts(np.array([[0, 0]]))
    with pytest.raises(FormulaError, match="Og"):
        scatter_counts(counts[:, :2], ("Li", "Og"))
