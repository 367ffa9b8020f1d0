"""Chemical formulas to element-fraction vectors (the seed study's input representation).

Two paths give the same numbers:

* the reference path, :func:`parse_formula` + :func:`fraction_vector`, goes through pymatgen's
  :class:`~pymatgen.core.Composition` and is tested against matminer's ``ElementFraction``;
* the fast path, :func:`fraction_matrix` (strings) and :func:`fractions_from_counts`
  (integer count arrays), builds whole matrices with no per-row pymatgen objects.
"""

from __future__ import annotations

from fh_screen.errors import FhScreenError

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = [
    "ALL_ELEMENT_SYMBOLS",
    "DEFAULT_ELEMENTS",
    "ELEMENTS_ABSENT_FROM_OQMD",
    "FeatureMatrix",
    "FormulaError",
    "fraction_matrix",
    "fraction_vector",
    "fractions_from_counts",
    "parse_formula",
    "reduced_formula",
]

# Symbols Z = 1..118 in order (pymatgen's periodic table, written out so that importing this
# module stays cheap).
ALL_ELEMENT_SYMBOLS: tuple[str, ...] = (
    "H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se "
    "Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb "
    "Dy Ho Er Tm Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu Am Cm "
    "Bk Cf Es Fm Md No Lr Rf Db Sg Bh Hs Mt Ds Rg Cn Nh Fl Mc Lv Ts Og"
).split()

#: The seed study's input slots: hydrogen to plutonium, ordered by atomic number.
DEFAULT_ELEMENTS: tuple[str, ...] = ALL_ELEMENT_SYMBOLS[:94]

#: Elements that have an input slot but never occur in the OQMD training data: predictions for
#: compositions containing them are extrapolations and are flagged as out of domain.
ELEMENTS_ABSENT_FROM_OQMD: frozenset[str] = frozenset({"He", "Ne", "Ar", "Po", "At", "Rn", "Fr", "Ra"})

_SIMPLE_FORMULA = re.compile(r"^(?:[A-Z][a-z]?(?:\d+(?:\.\d*)?|\.\d+)?)+$")
_TOKEN = re.compile(r"([A-Z][a-z]?)(\d+(?:\.\d*)?|\.\d+)?")


class FormulaError(FhScreenError):
    """A formula that cannot be turned into a model input; the message is one line."""


def _element_range(elements: Sequence[str]) -> str:
    return f"{elements[0]}–{elements[-1]}" if elements else "none"


def parse_formula(formula: str, elements: Sequence[str] = DEFAULT_ELEMENTS):
    """Parse ``formula`` with pymatgen and validate it against the model's element set.

    Returns a :class:`pymatgen.core.Composition`. Raises :class:`FormulaError` with a one-line
    message for an empty formula, an unknown symbol, an element outside ``elements``, a negative
    amount or a zero total amount.
    """
    from pymatgen.core import Composition

    text = str(formula).strip() if formula is not None else ""
    if not text:
        raise FormulaError("empty formula")
    try:
        composition = Composition(text)
    except (ValueError, KeyError) as exc:
        message = str(exc).strip("'\"")
        if "negative" in message.lower():
            raise FormulaError(f"negative amount in formula {text!r}") from None
        raise FormulaError(f"cannot parse formula {text!r}: {message}") from None
    _validate_amounts(text, _amounts_of(composition), elements)
    return composition


def _amounts_of(composition) -> dict[str, float]:
    """Symbol -> amount of a Composition (dummy species keep their bare symbol, e.g. ``Xx``)."""
    amounts: dict[str, float] = {}
    for element, amount in composition.items():
        symbol = getattr(element, "symbol", str(element))
        amounts[symbol] = amounts.get(symbol, 0.0) + amount
    return amounts


def _validate_amounts(text: str, amounts: dict[str, float], elements: Sequence[str]) -> None:
    """Raise FormulaError for unknown or out-of-set symbols and bad amounts."""
    known = _symbol_set()
    allowed = _index_of(tuple(elements))
    for symbol, amount in amounts.items():
        if symbol not in known:
            raise FormulaError(f"unknown element symbol {symbol!r} in formula {text!r}")
        if symbol not in allowed:
            raise FormulaError(
                f"element {symbol!r} in formula {text!r} is outside the model's element set "
                f"({_element_range(elements)})"
            )
        if amount < 0:
            raise FormulaError(f"negative amount of {symbol} in formula {text!r}")
    if not amounts or sum(amounts.values()) <= 0:
        raise FormulaError(f"formula {text!r} has no atoms (zero total amount)")


@lru_cache(maxsize=1)
def _symbol_set() -> frozenset[str]:
    return frozenset(ALL_ELEMENT_SYMBOLS)


@lru_cache(maxsize=16)
def _index_of(elements: tuple[str, ...]) -> dict[str, int]:
    return {symbol: i for i, symbol in enumerate(elements)}


def fraction_vector(composition, elements: Sequence[str] = DEFAULT_ELEMENTS) -> np.ndarray:
    """Element fractions of a pymatgen Composition, one slot per element in ``elements``."""
    index = _index_of(tuple(elements))
    vector = np.zeros(len(elements), dtype=np.float64)
    fractions = composition.fractional_composition
    for element, fraction in fractions.items():
        vector[index[str(element)]] += fraction
    return vector


def reduced_formula(formula: str) -> str:
    """pymatgen's reduced formula (``Fe2O3`` for ``Fe4O6``)."""
    return parse_formula(formula, ALL_ELEMENT_SYMBOLS).reduced_formula


@dataclass(frozen=True)
class FeatureMatrix:
    """Fraction vectors of many formulas, with a per-row error message for the bad ones.

    ``matrix`` has shape ``(n_formulas, n_elements)``; rows whose ``errors`` entry is not None are
    all zero and must not be predicted.
    """

    matrix: np.ndarray
    errors: list[str | None]
    elements: tuple[str, ...]

    @property
    def valid(self) -> np.ndarray:
        """Boolean mask of the rows that parsed."""
        return np.array([e is None for e in self.errors], dtype=bool)


def _amounts_fast(text: str) -> dict[str, float] | None:
    """Element amounts of a plain formula (``Li1Fe1P1O4``, ``Fe2O3``); None if not plain."""
    if not _SIMPLE_FORMULA.match(text):
        return None
    amounts: dict[str, float] = {}
    for symbol, number in _TOKEN.findall(text):
        amounts[symbol] = amounts.get(symbol, 0.0) + (float(number) if number else 1.0)
    return amounts


def fraction_matrix(
    formulas: Iterable[str], elements: Sequence[str] = DEFAULT_ELEMENTS, dtype=np.float32
) -> FeatureMatrix:
    """Fraction vectors of many formulas at once (the fast path).

    Plain formulas (element symbols and numbers) are tokenised with a regular expression; anything
    else (parentheses, spaces, hydrates) falls back to :func:`parse_formula`. Bad formulas do not
    raise: their row is zero and ``errors`` holds the one-line reason.
    """
    elements = tuple(elements)
    index = _index_of(elements)
    formulas = list(formulas)
    matrix = np.zeros((len(formulas), len(elements)), dtype=dtype)
    errors: list[str | None] = [None] * len(formulas)
    for row, formula in enumerate(formulas):
        text = formula.strip() if isinstance(formula, str) else ""
        try:
            amounts = _amounts_fast(text)
            if amounts is None:
                composition = parse_formula(text, elements)
                amounts = _amounts_of(composition)
            else:
                _validate_amounts(text, amounts, elements)
        except FormulaError as exc:
            errors[row] = str(exc)
            continue
        total = sum(amounts.values())
        for symbol, amount in amounts.items():
            matrix[row, index[symbol]] = amount / total
    return FeatureMatrix(matrix=matrix, errors=errors, elements=elements)


def fractions_from_counts(counts: np.ndarray, dtype=np.float32) -> np.ndarray:
    """Normalise rows of an integer (or float) count array to fractions, vectorised.

    ``counts`` has shape ``(n, k)``; every row must have a positive total.
    """
    counts = np.asarray(counts)
    totals = counts.sum(axis=1, keepdims=True)
    if np.any(totals <= 0):
        raise FormulaError("count array has a row with no atoms")
    return (counts / totals).astype(dtype, copy=False)


def scatter_counts(
    counts: np.ndarray, system_elements: Sequence[str], elements: Sequence[str] = DEFAULT_ELEMENTS,
    dtype=np.float32,
) -> np.ndarray:
    """Fraction vectors over ``elements`` from counts over a system's elements (vectorised).

    ``counts[:, j]`` is the number of atoms of ``system_elements[j]``.
    """
    index = _index_of(tuple(elements))
    missing = [s for s in system_elements if s not in index]
    if missing:
        raise FormulaError(
            f"element {missing[0]!r} is outside the model's element set ({_element_range(elements)})"
        )
    matrix = np.zeros((len(counts), len(elements)), dtype=dtype)
    matrix[:, [index[s] for s in system_elements]] = fractions_from_counts(counts, dtype)
    return matrix


def out_of_domain_mask(matrix: np.ndarray, elements: Sequence[str]) -> np.ndarray:
    """True for rows containing an element never seen in OQMD training data."""
    columns = [i for i, s in enumerate(elements) if s in ELEMENTS_ABSENT_FROM_OQMD]
    if not columns:
        return np.zeros(len(matrix), dtype=bool)
    return (matrix[:, columns] > 0).any(axis=1)
