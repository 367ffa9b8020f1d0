"""Composition parsing and the fast fraction path, checked against pymatgen and matminer."""

from __future__ import annotations

import re

import numpy as np
import pytest
from pymatgen.core import Composition

from fh_screen.chem.formula import ALL_ELEMENT_SYMBOLS, DEFAULT_ELEMENTS, FormulaError, fraction_matrix, fraction_vector, fractions_from_counts, parse_amounts, parse_formula, scatter_counts


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
        ("Fe0O0", "zero amount of Fe"),
        ("Fe0O", "zero amount of Fe"),
        ("Fe-0O", "negative amount"),
        ("Fe-1O2", "negative amount"),
        ("li2o", "cannot parse formula"),
        ("Fe1e400", "exponent"),
        ("Fe1e400O", "exponent"),
        ("Fe1e-400O", "exponent"),
        ("Fe" + "9" * 400 + "O", "above the 1,000,000 limit"),
        ("(Fe999999O)999", "above the 1,000,000 limit"),
        ("Fe0.0000001O", "below the 1e-06 resolution"),
        ("Fe2O3\x00Xx", "control character U+0000"),
        ("Fe2O3\r", "control character U+000D"),
        ("Fe\u200bO", "control character U+200B"),
        ("Fe.5O", "ambiguous '.'"),
        ("Fe2O3·", "empty part"),
        ("(Fe2O3", "unclosed bracket"),
        ("Fe2O3)", "unbalanced"),
        ("Fe2(O]3", "unbalanced"),
        ("()2", "empty brackets"),
        ("2Fe", "a number must follow"),
        ("Fe" * 600, "longer than the 1,000 allowed"),
        ("".join(f"{s}{'0' * 13}1" for s in DEFAULT_ELEMENTS[:70]), "longer than the 1,000 allowed"),
        ("D2O", "unknown element symbol 'D'"),
    ],
)
def test_bad_formulas_give_one_line_errors_on_both_paths(formula, fragment):
    with pytest.raises(FormulaError, match=re.escape(fragment)) as excinfo:
        parse_formula(formula)
    assert "\n" not in str(excinfo.value)
    batch = fraction_matrix([formula, "LiFePO4"])
    assert fragment in batch.errors[0]
    assert batch.errors[1] is None
    assert not batch.matrix[0].any()


@pytest.mark.parametrize("value", [b"Fe2O3", ["Fe2O3"], 123, 1.5, None, float("nan")])
def test_non_strings_are_named_by_type(value):
    expected = "None" if value is None else type(value).__name__
    with pytest.raises(FormulaError, match=f"must be a string, got {expected}"):
        parse_amounts(value)
    batch = fraction_matrix([value, "Fe2O3"])
    assert f"got {expected}" in batch.errors[0] and batch.errors[1] is None


@pytest.mark.parametrize("formula", ["CuSO4·5H2O", "CuSO4.5H2O", "CuSO4 · 5 H2O", "CuSO4•5H2O", "CuSO4.5(H2O)"])
def test_hydrates_are_read_as_adducts_on_every_path(formula):
    expected = dict(Composition("CuSO4(H2O)5"))
    assert parse_formula(formula) == Composition(expected)
    amounts = parse_amounts(formula)
    assert amounts == {str(k): v for k, v in expected.items()}
    fast = fraction_matrix([formula], dtype=np.float64)
    assert fast.errors == [None]
    np.testing.assert_allclose(fast.matrix[0], fraction_vector(Composition("CuSO4(H2O)5")), atol=1e-15)


@pytest.mark.parametrize(
    ("formula", "same_as"),
    [("Li0.5CoO2", "Li0.5CoO2"), ("Li1.2Mn0.8O2", "Li1.2Mn0.8O2"), ("CaSO4·0.5H2O", "CaSO4(H2O)0.5"),
     ("MgSO4.H2O", "MgSO4H2O"), ("Fe2O3.5", "Fe2O3.5"), ("[Co(NH3)6]Cl3", "Co(NH3)6Cl3"), ("Fe 2 O3", "Fe2O3")],
)
def test_decimal_points_and_adduct_dots_are_told_apart(formula, same_as):
    assert parse_amounts(formula) == {str(k): v for k, v in Composition(same_as).items()}


def _oqmd_formulas(oqmd_dir) -> list[str]:
    import pandas as pd

    frames = [pd.read_csv(oqmd_dir / name, keep_default_na=False, na_values=[""]) for name in ("train.csv", "val.csv")]
    return pd.concat(frames)["formula"].tolist()


@pytest.mark.slow
def test_grammar_fast_path_and_pymatgen_agree_on_every_oqmd_formula(oqmd_dir):
    formulas = _oqmd_formulas(oqmd_dir)
    fast = fraction_matrix(formulas, ALL_ELEMENT_SYMBOLS, dtype=np.float64)
    assert all(e is None for e in fast.errors)
    column = {s: i for i, s in enumerate(ALL_ELEMENT_SYMBOLS)}
    expected = np.zeros_like(fast.matrix)
    for row, formula in enumerate(formulas):
        reference = {str(k): v for k, v in Composition(formula).items()}
        assert parse_amounts(formula) == reference, formula
        total = sum(reference.values())
        for symbol, amount in reference.items():
            expected[row, column[symbol]] = amount / total
    np.testing.assert_array_equal(fast.matrix, expected)


def test_fast_path_meets_its_speed_floor(oqmd_dir):
    """Coarse floor only (shared CI machines): the benchmark measures the real figure."""
    formulas = _oqmd_formulas(oqmd_dir)[:100_000]
    best = min(_timed(fraction_matrix, formulas) for _ in range(3))
    assert len(formulas) / best > 100_000, f"{len(formulas) / best:,.0f} formulas/s"


def _timed(function, *args) -> float:
    import time

    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


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


def test_chunked_fast_path_equals_one_batch(oqmd_train_raw, monkeypatch):
    import fh_screen.chem.formula as composition

    formulas = oqmd_train_raw["formula"].head(200).tolist() + ["Fe0O", "", b"x", "CuSO4.5H2O", "FeOFe", " Fe2O3"] * 3
    whole = fraction_matrix(formulas, dtype=np.float64)
    monkeypatch.setattr(composition, "_FAST_CHUNK", 7)
    chunked = fraction_matrix(formulas, dtype=np.float64)
    np.testing.assert_array_equal(whole.matrix, chunked.matrix)
    assert whole.errors == chunked.errors


def test_a_single_string_is_one_formula_not_its_characters():
    features = fraction_matrix("Fe2O3")
    assert features.matrix.shape == (1, len(DEFAULT_ELEMENTS)) and features.errors == [None]
