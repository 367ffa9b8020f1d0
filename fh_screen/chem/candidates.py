"""Candidate compositions of a chemical system, as integer count arrays (vectorised).

A system such as ``Li-Fe-P-O`` is parsed by :func:`parse_chemsys` into a canonical tuple of
element symbols (alphabetical, pymatgen's ``chemsys`` order). :func:`enumerate_counts` returns
every reduced integer formula unit of the system **and of all its subsystems** (binaries,
ternaries, …) as one ``(n, k)`` int array whose column ``j`` counts ``chemsys[j]``: counts are
0..``max_per_element``, the total is at most ``max_atoms``, at least two elements are present and
the gcd of each row is 1, so every composition appears exactly once.

:func:`count_candidates` gives that number exactly *before* enumerating (a Möbius sum over the
gcd), so that a screen can refuse a huge enumeration with a hint. :func:`fh_screen.chem.oxidation.charge_neutral_mask`
is the optional charge-neutrality filter. :func:`formulas_from_counts` writes pymatgen's reduced
formula of each row without building a Composition per row.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from numpy.dtypes import StringDType

from fh_screen.chem.formula import ALL_ELEMENT_SYMBOLS, DEFAULT_ELEMENTS
from fh_screen.errors import FhScreenError

__all__ = [
    "ChemsysError",
    "DEFAULT_MAX_ATOMS",
    "MAX_ATOMS_LIMIT",
    "MAX_SYSTEM_SIZE",
    "count_candidates",
    "enumerate_counts",
    "formulas_from_counts",
    "parse_chemsys",
    "reduce_counts",
]

#: Default largest formula unit. 99.2 % of the 239,190 reduced formulas in the OQMD training set
#: have at most 20 atoms (counted on the shared train.csv); beyond that the count of
#: candidates grows as ``max_atoms ** (k-1)`` while few real compounds are gained.
DEFAULT_MAX_ATOMS = 20

#: An ``max_atoms`` above this is refused as absurd (formula units of a composition-only model).
MAX_ATOMS_LIMIT = 200

#: Most elements a system may have (an enumeration of more is never tractable nor useful).
MAX_SYSTEM_SIZE = 10

_SYMBOL = re.compile(r"^[A-Z][a-z]?$")


class ChemsysError(FhScreenError):
    """A chemical system that cannot be screened; the message is one line."""


def parse_chemsys(text: str | Sequence[str], elements: Sequence[str] = DEFAULT_ELEMENTS) -> tuple[str, ...]:
    """Canonical element tuple of a system such as ``Li-Fe-P-O`` (order-free, sorted).

    Also accepts a sequence of symbols. Raises :class:`ChemsysError` for an empty text, a
    separator other than single ``-``, an unknown symbol (``Xx``), an element outside
    ``elements`` (the model's input slots), a duplicate, fewer than two or more than
    :data:`MAX_SYSTEM_SIZE` elements.
    """
    if isinstance(text, str):
        raw = text.strip()
        if not raw:
            raise ChemsysError("empty chemical system: give elements joined by '-', e.g. Li-Fe-P-O")
        bad = re.search(r"[^A-Za-z-]", raw)
        if bad:
            raise ChemsysError(
                f"malformed chemical system {raw!r}: unexpected {bad.group()!r}; join elements with '-', e.g. Li-Fe-P-O"
            )
        symbols = raw.split("-")
        if any(not s for s in symbols):
            raise ChemsysError(f"malformed chemical system {raw!r}: empty element between '-' separators")
    elif isinstance(text, Sequence) and not isinstance(text, (bytes, bytearray)):
        symbols = [str(s).strip() for s in text]
        raw = "-".join(symbols)
    else:
        raise ChemsysError(f"a chemical system is a text such as 'Li-Fe-P-O' or a sequence of element symbols, "
                           f"got {type(text).__name__}")
    known = set(ALL_ELEMENT_SYMBOLS)
    allowed = set(elements)
    for symbol in symbols:
        if not _SYMBOL.match(symbol) or symbol not in known:
            hint = f" (did you mean {symbol.capitalize()}?)" if symbol.capitalize() in known else ""
            raise ChemsysError(f"unknown element {symbol!r} in chemical system {raw!r}{hint}")
        if symbol not in allowed:
            raise ChemsysError(
                f"element {symbol!r} in {raw!r} is outside the model's elements ({elements[0]}–{elements[-1]})"
            )
    duplicates = sorted({s for s in symbols if symbols.count(s) > 1})
    if duplicates:
        raise ChemsysError(f"duplicate element {duplicates[0]!r} in chemical system {raw!r}")
    if len(symbols) < 2:
        raise ChemsysError(f"a chemical system needs at least two elements, got {raw!r} (e.g. Li-O)")
    if len(symbols) > MAX_SYSTEM_SIZE:
        raise ChemsysError(f"{len(symbols)} elements in {raw!r}: at most {MAX_SYSTEM_SIZE} can be screened")
    return tuple(sorted(symbols))


def _check_limits(k: int, max_atoms: int, max_per_element: int | None) -> int:
    if isinstance(max_atoms, bool) or int(max_atoms) != max_atoms or not 2 <= max_atoms <= MAX_ATOMS_LIMIT:
        raise ChemsysError(f"max_atoms must be an integer from 2 to {MAX_ATOMS_LIMIT}, got {max_atoms!r}")
    if max_per_element is None:
        return int(max_atoms) - 1
    if isinstance(max_per_element, bool) or int(max_per_element) != max_per_element or max_per_element < 1:
        raise ChemsysError(f"max_per_element must be a positive integer, got {max_per_element!r}")
    return min(int(max_per_element), int(max_atoms) - 1)


def _grid_size(k: int, max_atoms: int, max_per_element: int) -> int:
    """Vectors in {0..max_per_element}^k with sum <= max_atoms (zero vector included)."""
    ways = [1] + [0] * max_atoms  # ways[s]: vectors so far with sum s
    for _ in range(k):
        nxt = [0] * (max_atoms + 1)
        for s, w in enumerate(ways):
            if w:
                for c in range(0, min(max_per_element, max_atoms - s) + 1):
                    nxt[s + c] += w
        ways = nxt
    return sum(ways)


@lru_cache(maxsize=512)
def _mobius(n: int) -> int:
    result, m, p = 1, n, 2
    while p * p <= m:
        if m % p == 0:
            m //= p
            if m % p == 0:
                return 0
            result = -result
        p += 1
    return -result if m > 1 else result


def count_candidates(k: int, max_atoms: int = DEFAULT_MAX_ATOMS, max_per_element: int | None = None) -> int:
    """Exact number of rows :func:`enumerate_counts` returns for a ``k``-element system.

    Counts nonzero vectors with gcd 1 by Möbius inversion over the common divisor, then removes
    the ``k`` pure elements. Cheap: no enumeration.
    """
    per = _check_limits(k, max_atoms, max_per_element)
    total = 0
    for d in range(1, max_atoms + 1):
        mu = _mobius(d)
        if mu:
            total += mu * (_grid_size(k, max_atoms // d, per // d) - 1)
    return total - k


def enumerate_counts(k: int, max_atoms: int = DEFAULT_MAX_ATOMS, max_per_element: int | None = None) -> np.ndarray:
    """All reduced count vectors of a ``k``-element system and its subsystems, shape ``(n, k)``.

    Rows have 0..``max_per_element`` (default ``max_atoms - 1``) atoms of each element, at most
    ``max_atoms`` in all, at least two elements and gcd 1. Built column by column with
    ``np.repeat`` (no Python loop over rows); ordered lexicographically.
    """
    per = _check_limits(k, max_atoms, max_per_element)
    dtype = np.int16 if max_atoms < 2**15 else np.int32
    counts = np.zeros((1, 0), dtype=dtype)
    sums = np.zeros(1, dtype=np.int64)
    for _ in range(k):
        room = np.minimum(per, max_atoms - sums)  # largest count allowed in this column
        reps = room + 1
        parent = np.repeat(np.arange(len(counts)), reps)
        starts = np.cumsum(reps) - reps
        column = np.arange(len(parent)) - np.repeat(starts, reps)
        counts = np.concatenate([counts[parent], column[:, None].astype(dtype)], axis=1)
        sums = sums[parent] + column
    keep = (np.count_nonzero(counts, axis=1) >= 2) & (np.gcd.reduce(counts, axis=1) == 1)
    return counts[keep]


def reduce_counts(counts: np.ndarray) -> np.ndarray:
    """Divide each row of a non-negative integer array by its gcd (rows of zeros stay zero)."""
    counts = np.asarray(counts, dtype=np.int64)
    divisor = np.gcd.reduce(counts, axis=1)
    divisor[divisor == 0] = 1
    return counts // divisor[:, None]


# --- charge neutrality -----------------------------------------------------------------------


# --- formulas ---------------------------------------------------------------------------------


@lru_cache(maxsize=128)
def _formula_plan(chemsys: tuple[str, ...]) -> tuple[tuple[int, ...], tuple[float, ...], dict[str, str]]:
    """Column order by (electronegativity, symbol), the electronegativities, special formulas."""
    from pymatgen.core import Composition, Element

    def key(j: int):
        x = Element(chemsys[j]).X
        return (math.inf if math.isnan(x) else x, chemsys[j])

    order = tuple(sorted(range(len(chemsys)), key=key))
    electronegativity = tuple(key(j)[0] for j in range(len(chemsys)))
    return order, electronegativity, dict(Composition.special_formulas)


def formulas_from_counts(counts: np.ndarray, chemsys: Sequence[str]) -> list[str]:
    """pymatgen's ``Composition.reduced_formula`` of each row of a count array.

    Follows pymatgen's rules (electronegativity order, a trailing polyanion such as ``(PO4)3``
    when the last two elements differ by less than 1.65 in X and share a factor, special
    formulas such as ``Li2O2``) without building a Composition per row; tested equal to it and
    to :func:`formula_from_count_row`, the row-by-row reference. Rows are grouped by the
    elements they contain and each group is spelled with NumPy string operations.
    """
    chemsys = tuple(chemsys)
    order, x, special = _formula_plan(chemsys)
    counts = np.asarray(counts, dtype=np.int64).reshape(-1, len(chemsys))[:, list(order)]
    if len(counts) == 0:
        return []
    symbols = [chemsys[j] for j in order]
    xs = [x[j] for j in order]
    factor = np.gcd.reduce(counts, axis=1)
    reduced = counts // np.maximum(factor, 1)[:, None]
    present = reduced > 0
    masks = present @ (1 << np.arange(len(symbols), dtype=np.int64))
    amounts = np.array([_amount(n) for n in range(int(reduced.max(initial=0)) + 1)], dtype=StringDType())
    numbers = np.array([str(n) for n in range(len(amounts))], dtype=StringDType())
    out = np.empty(len(counts), dtype=StringDType())

    def spelled(block: np.ndarray, columns: np.ndarray) -> np.ndarray:
        text = np.full(len(block), "", dtype=StringDType())
        for j, c in enumerate(columns):
            text = np.strings.add(np.strings.add(text, symbols[c]), amounts[block[:, j]])
        return text

    for mask in np.unique(masks):
        rows = np.flatnonzero(masks == mask)
        columns = np.flatnonzero(present[rows[0]])
        block = reduced[np.ix_(rows, columns)]
        poly = np.zeros(len(rows), dtype=bool)
        if len(columns) >= 3 and xs[columns[-1]] - xs[columns[-2]] < 1.65:
            poly = np.gcd(block[:, -2], block[:, -1]) != 1
        out[rows[~poly]] = spelled(block[~poly], columns)
        if poly.any():  # a trailing polyanion: (AxBy)n with n the common factor of the last two
            inner = block[poly]
            n = np.gcd(inner[:, -2], inner[:, -1])
            anion = spelled(inner[:, -2:] // n[:, None], columns[-2:])
            text = np.strings.add(np.strings.add(spelled(inner[:, :-2], columns[:-2]), "("), anion)
            out[rows[poly]] = np.strings.add(np.strings.add(text, ")"), numbers[n])
    return [special.get(formula, formula) for formula in out.tolist()]


def formula_from_count_row(row: Sequence[int], symbols: Sequence[str], electronegativities: Sequence[float]) -> str:
    """One reduced formula (before special names) from counts in electronegativity order."""
    present = [i for i, c in enumerate(row) if c]
    factor = math.gcd(*(row[i] for i in present))
    poly = ""
    if len(present) >= 3 and electronegativities[present[-1]] - electronegativities[present[-2]] < 1.65:
        a, b = row[present[-2]] // factor, row[present[-1]] // factor
        poly_factor = math.gcd(a, b)
        if poly_factor != 1:
            inner = f"{symbols[present[-2]]}{_amount(a // poly_factor)}{symbols[present[-1]]}{_amount(b // poly_factor)}"
            poly = f"({inner}){poly_factor}"
            present = present[:-2]
    return "".join(f"{symbols[i]}{_amount(row[i] // factor)}" for i in present) + poly


def _amount(n: int) -> str:
    return "" if n == 1 else str(n)
