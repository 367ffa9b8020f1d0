"""Chemical formulas to element-fraction vectors (the seed study's input representation).

One grammar (``docs/formula-grammar.md``), three implementations that give the same numbers:

* :func:`parse_amounts`: the grammar itself, a small pure-Python parser that either returns the
  element amounts or raises :class:`FormulaError` with a one-line reason;
* :func:`parse_formula` + :func:`fraction_vector`: the reference path. The formula must pass the
  grammar, then pymatgen's :class:`~pymatgen.core.Composition` reads it (adducts ``A·nB`` are
  handed to pymatgen as ``A(B)n``); tested against matminer's ``ElementFraction`` and against
  :func:`parse_amounts` on every OQMD formula and on generated formulas;
* :func:`fraction_matrix`: the fast path for batches. Plain formulas (``Li1Fe1P1O4``: element
  symbols and whole numbers only) are tokenised for the whole batch at once with numpy; every
  other string goes through :func:`parse_amounts`. :func:`fractions_from_counts` does the same
  for integer count arrays.

Limits (errors, never NaN): amounts are plain decimals, finite, positive, at most
:data:`MAX_AMOUNT` per element, and every element present is at least :data:`MIN_FRACTION` of
the atoms; formulas are at most :data:`MAX_FORMULA_LENGTH` characters.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import numpy as np

from fh_screen.errors import FhScreenError, one_line

__all__ = [
    "ADDUCT_SEPARATORS",
    "ALL_ELEMENT_SYMBOLS",
    "DEFAULT_ELEMENTS",
    "ELEMENTS_ABSENT_FROM_OQMD",
    "FeatureMatrix",
    "FormulaError",
    "MAX_AMOUNT",
    "MAX_FORMULA_LENGTH",
    "MIN_FRACTION",
    "SOLVENT_FORMULAS",
    "formula_list",
    "fraction_matrix",
    "fraction_vector",
    "fractions_from_counts",
    "parse_amounts",
    "parse_formula",
    "reduced_formula",
    "whole_amounts",
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

#: Longest formula accepted (characters, after trimming spaces).
MAX_FORMULA_LENGTH: int = 1000

#: Largest amount (atoms per formula unit) of any written number and of any element after
#: brackets and adduct multipliers are applied.
MAX_AMOUNT: float = 1e6

#: Smallest share of the atoms an element may have (finer is below float32 resolution of the
#: model input and would silently read as absent).
MIN_FRACTION: float = 1e-6

#: Characters that join the parts of an adduct or hydrate, ``CuSO4·5H2O``. ``.`` joins too, except
#: between two digits where it is a decimal point unless a solvent follows (see :func:`parse_amounts`).
ADDUCT_SEPARATORS: str = "·•∙⋅."

#: Molecules recognised after ``<digit>.<multiplier>`` as the adduct part of a hydrate
#: (``CuSO4.5H2O``); elsewhere ``<digit>.<digit>`` is a decimal point (``Li0.5CoO2``).
SOLVENT_FORMULAS: tuple[str, ...] = ("H2O", "NH3")

_BRACKETS = {"(": ")", "[": "]", "{": "}"}
_CLOSING = frozenset(_BRACKETS.values())
_ALLOWED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 ()[]{}" + ADDUCT_SEPARATORS)
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_SOLVENT_AFTER_DOT = re.compile(
    r"[0-9]+(?:\.[0-9]+)? *(?:" + "|".join(rf"{s}|\({s}\)" for s in SOLVENT_FORMULAS) + r") *(?=$|[)\]}" + ADDUCT_SEPARATORS + "])"
)
_MAX_FAST_DIGITS = 15  # whole numbers up to 15 digits are exact in float64 sums
_FAST_CHUNK = 1 << 19  # formulas tokenised together (bounds the temporary arrays to a few hundred MB)


class FormulaError(FhScreenError):
    """A formula that cannot be turned into a model input; the message is one line."""


def _element_range(elements: Sequence[str]) -> str:
    return f"{elements[0]}–{elements[-1]}" if elements else "none"


def _show(text: str) -> str:
    """The formula quoted for a one-line message (escaped, at most 60 characters)."""
    return repr(text if len(text) <= 60 else text[:57] + "...")


# ----------------------------------------------------------------------------------------------
# The grammar
# ----------------------------------------------------------------------------------------------


def _checked_text(formula) -> str:
    """The formula with spaces trimmed; FormulaError for non-strings, empty, long or bad characters."""
    if not isinstance(formula, str):
        got = "None" if formula is None else type(formula).__name__
        raise FormulaError(f"formula must be a string, got {got}")
    text = formula.strip(" ")
    if not text:
        raise FormulaError("empty formula")
    if len(text) > MAX_FORMULA_LENGTH:
        raise FormulaError(f"formula of {len(text):,} characters is longer than the {MAX_FORMULA_LENGTH:,} allowed")
    for position, char in enumerate(text):
        if char in _ALLOWED:
            continue
        if unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            raise FormulaError(f"control character U+{ord(char):04X} in formula {_show(text)}")
        if char in "+-" and text[position - 1 : position] == "e" and text[position - 2 : position - 1].isdigit():
            raise FormulaError(f"exponent in an amount in formula {_show(text)}: amounts are plain decimals")
        if char == "-" and text[position + 1 : position + 2].isdigit():
            raise FormulaError(f"negative amount in formula {_show(text)}")
        raise FormulaError(f"cannot parse formula {_show(text)}: unexpected character {char!r}")
    return text


def _split_adducts(text: str) -> list[tuple[str, str]]:
    """``[(multiplier, part), ...]`` of ``A·nB·mC``; the first multiplier is ``""``."""
    parts: list[tuple[str, str]] = []
    multiplier, start, i, n = "", 0, 0, len(text)
    while i < n:
        char = text[i]
        if char in ADDUCT_SEPARATORS and (char != "." or _is_adduct_dot(text, i)):
            parts.append((multiplier, text[start:i]))
            i += 1
            while i < n and text[i] == " ":
                i += 1
            match = _NUMBER.match(text, i)
            multiplier = match.group() if match else ""
            start = i = match.end() if match else i
            continue
        i += 1
    parts.append((multiplier, text[start:]))
    return parts


def _is_adduct_dot(text: str, i: int) -> bool:
    """Whether the ``.`` at ``text[i]`` joins adduct parts (True) or is a decimal point."""
    before = text[i - 1] if i else ""
    after = text[i + 1] if i + 1 < len(text) else ""
    if before.isdigit() and after.isdigit():
        return bool(_SOLVENT_AFTER_DOT.match(text, i + 1))
    if after.isdigit():
        raise FormulaError(
            f"ambiguous '.' in formula {_show(text)}: write decimal amounts with a leading digit (Fe0.5O) "
            "and adducts with '·' (CuSO4·5H2O)"
        )
    return True


def _read_amount(text: str, part: str, j: int, what: str) -> tuple[float, int]:
    """The amount written at ``part[j:]`` (1 if none) and the index after it."""
    k = j
    while k < len(part) and part[k] == " ":
        k += 1
    match = _NUMBER.match(part, k)
    if match is None:
        return 1.0, j
    return _checked_number(text, match.group(), what, part[match.end() : match.end() + 1]), match.end()


def _checked_number(text: str, digits: str, what: str, following: str = "") -> float:
    if following == "e":
        raise FormulaError(f"exponent in an amount of {what} in formula {_show(text)}: amounts are plain decimals")
    value = float(digits)
    if value == 0:
        raise FormulaError(f"zero amount of {what} in formula {_show(text)}")
    if not value <= MAX_AMOUNT:
        raise FormulaError(f"amount {digits[:12]}{'...' if len(digits) > 12 else ''} of {what} in formula "
                           f"{_show(text)} is above the {MAX_AMOUNT:,.0f} limit")
    return value


def _part_amounts(text: str, part: str) -> dict[str, float]:
    """Element amounts of one adduct part: symbols, numbers and nested brackets."""
    known = _symbol_set()
    stack: list[tuple[dict[str, float], str]] = [({}, "")]
    i, n = 0, len(part)
    while i < n:
        char = part[i]
        if char == " ":
            i += 1
        elif "A" <= char <= "Z":
            j = i + 1
            while j < n and "a" <= part[j] <= "z":
                j += 1
            symbol = part[i:j]
            if symbol not in known:
                raise FormulaError(f"unknown element symbol {symbol!r} in formula {_show(text)}")
            amount, i = _read_amount(text, part, j, symbol)
            amounts = stack[-1][0]
            amounts[symbol] = amounts.get(symbol, 0.0) + amount
        elif char in _BRACKETS:
            stack.append(({}, _BRACKETS[char]))
            i += 1
        elif char in _CLOSING:
            if len(stack) == 1 or stack[-1][1] != char:
                raise FormulaError(f"cannot parse formula {_show(text)}: unbalanced {char!r}")
            inner, _ = stack.pop()
            if not inner:
                raise FormulaError(f"cannot parse formula {_show(text)}: empty brackets")
            factor, i = _read_amount(text, part, i + 1, "a bracketed group")
            amounts = stack[-1][0]
            for symbol, amount in inner.items():
                amounts[symbol] = amounts.get(symbol, 0.0) + amount * factor
        elif char.isdigit():
            raise FormulaError(f"cannot parse formula {_show(text)}: a number must follow an element or a bracket")
        elif "a" <= char <= "z":
            raise FormulaError(
                f"cannot parse formula {_show(text)}: unexpected {char!r} (element symbols start with a capital letter)"
            )
        else:
            raise FormulaError(f"cannot parse formula {_show(text)}: unexpected {char!r}")
    if len(stack) > 1:
        raise FormulaError(f"cannot parse formula {_show(text)}: unclosed bracket")
    return stack[0][0]


def parse_amounts(formula: str, elements: Sequence[str] = ALL_ELEMENT_SYMBOLS) -> dict[str, float]:
    """Element amounts (atoms per formula unit) of ``formula`` under the documented grammar.

    ``CuSO4·5H2O`` and ``CuSO4.5H2O`` give ``{Cu: 1, S: 1, O: 9, H: 10}``; ``Li0.5CoO2`` keeps its
    decimal. Raises :class:`FormulaError` (one line) for a non-string, an empty or over-long
    formula, a control or unexpected character, an unknown symbol or one outside ``elements``,
    an amount that is zero, negative, written with an exponent or above :data:`MAX_AMOUNT`, an
    element below :data:`MIN_FRACTION` of the atoms, an ambiguous ``.`` or unbalanced brackets.
    """
    text = _checked_text(formula)
    total: dict[str, float] = {}
    for k, (multiplier, part) in enumerate(_split_adducts(text)):
        if not part.strip(" "):
            raise FormulaError(f"cannot parse formula {_show(text)}: empty part of an adduct")
        factor = _checked_number(text, multiplier, "an adduct part") if multiplier else 1.0
        for symbol, amount in _part_amounts(text, part).items():
            total[symbol] = total.get(symbol, 0.0) + amount * factor
    _validate_amounts(text, total, elements)
    return total


def _validate_amounts(text: str, amounts: dict[str, float], elements: Sequence[str]) -> None:
    """Raise FormulaError for unknown or out-of-set symbols and bad or out-of-bound amounts."""
    known = _symbol_set()
    allowed = _index_of(tuple(elements))
    for symbol, amount in amounts.items():
        if symbol not in known:
            raise FormulaError(f"unknown element symbol {symbol!r} in formula {_show(text)}")
        if symbol not in allowed:
            raise FormulaError(
                f"element {symbol!r} in formula {_show(text)} is outside the model's element set "
                f"({_element_range(elements)})"
            )
        if amount < 0:
            raise FormulaError(f"negative amount of {symbol} in formula {_show(text)}")
        if amount == 0:
            raise FormulaError(f"zero amount of {symbol} in formula {_show(text)}")
        if not amount <= MAX_AMOUNT:
            raise FormulaError(f"{symbol} amount {amount:g} in formula {_show(text)} is above the {MAX_AMOUNT:,.0f} limit")
    if not amounts:
        raise FormulaError(f"formula {_show(text)} has no atoms (zero total amount)")
    total = sum(amounts.values())
    for symbol, amount in amounts.items():
        if amount / total < MIN_FRACTION:
            raise FormulaError(
                f"{symbol} is {amount / total:.1e} of the atoms in formula {_show(text)}, "
                f"below the {MIN_FRACTION:g} resolution"
            )


@lru_cache(maxsize=1)
def _symbol_set() -> frozenset[str]:
    return frozenset(ALL_ELEMENT_SYMBOLS)


@lru_cache(maxsize=16)
def _index_of(elements: tuple[str, ...]) -> dict[str, int]:
    return {symbol: i for i, symbol in enumerate(elements)}


# ----------------------------------------------------------------------------------------------
# The pymatgen reference path
# ----------------------------------------------------------------------------------------------


def parse_formula(formula: str, elements: Sequence[str] = DEFAULT_ELEMENTS):
    """Check ``formula`` against the grammar, then read it with pymatgen (the reference path).

    Returns a :class:`pymatgen.core.Composition`; adducts ``A·nB`` are given to pymatgen as
    ``A(B)n``. Raises :class:`FormulaError` exactly where :func:`parse_amounts` does.
    """
    import warnings

    from pymatgen.core import Composition

    parse_amounts(formula, elements)
    text = _checked_text(formula)
    parts = _split_adducts(text)
    pymatgen_text = parts[0][1] + "".join(f"({part}){multiplier}" for multiplier, part in parts[1:])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Composition(pymatgen_text)
    except (ValueError, KeyError, OverflowError) as exc:  # pragma: no cover - the grammar rejects first
        message = one_line(str(exc).strip("'\"") or exc, first_line=True)
        raise FormulaError(f"cannot parse formula {_show(text)}: {message}") from None


def _amounts_of(composition) -> dict[str, float]:
    """Symbol -> amount of a Composition (dummy species keep their bare symbol, e.g. ``Xx``)."""
    amounts: dict[str, float] = {}
    for element, amount in composition.items():
        symbol = getattr(element, "symbol", str(element))
        amounts[symbol] = amounts.get(symbol, 0.0) + amount
    return amounts


def _amounts_fast(text: str) -> dict[str, float] | None:
    """Element amounts of a formula under the grammar (any element symbol); None if it is bad.

    Kept for callers that treat a bad formula as "skip"; new code should use :func:`parse_amounts`.
    """
    try:
        return parse_amounts(text, ALL_ELEMENT_SYMBOLS)
    except FormulaError:
        return None


def fraction_vector(composition, elements: Sequence[str] = DEFAULT_ELEMENTS) -> np.ndarray:
    """Element fractions of a pymatgen Composition, one slot per element in ``elements``."""
    index = _index_of(tuple(elements))
    vector = np.zeros(len(elements), dtype=np.float64)
    fractions = composition.fractional_composition
    for element, fraction in fractions.items():
        vector[index[str(element)]] += fraction
    return vector


def reduced_formula(formula: str) -> str:
    """pymatgen's reduced formula (``Fe2O3`` for ``Fe4O6``, ``H10CuS O9`` for ``CuSO4·5H2O``); fractional
    amounts are first read as the smallest whole numbers in their ratio (:func:`whole_amounts`), so
    ``Fe0.4O0.6`` is ``Fe2O3`` too (pymatgen keeps ``Fe0.4O0.6``): one key per composition."""
    composition = parse_formula(formula, ALL_ELEMENT_SYMBOLS)
    amounts = _amounts_of(composition)
    if all(float(a).is_integer() for a in amounts.values()):
        return composition.reduced_formula
    from pymatgen.core import Composition

    return Composition(_whole_ratio(amounts)).reduced_formula


def whole_amounts(formula: str) -> dict[str, int] | None:
    """A formula's element amounts as the smallest whole numbers in the same ratio (fractional amounts as
    ratios to the smallest one, read to 1/1000: ``Fe0.4O0.6`` is ``{Fe: 2, O: 3}``; no element is lost);
    None when it cannot be read or has no element."""
    amounts = _amounts_fast(formula.strip())
    if amounts is None:
        try:
            amounts = _amounts_of(parse_formula(formula))
        except FormulaError:
            return None
    return _whole_ratio(amounts) or None


def _whole_ratio(amounts: dict[str, float]) -> dict[str, int]:
    """The positive ``amounts`` as the smallest whole numbers in the same ratio: whole amounts exactly,
    fractional ones as ratios to the smallest amount read to 1/1000 (so no element is lost, however
    little of it there is: ``Li0.0001O`` is ``LiO10000``)."""
    positive = {s: a for s, a in amounts.items() if a > 0}
    if not positive:
        return {}
    if all(float(a).is_integer() for a in positive.values()):
        whole = {s: int(a) for s, a in positive.items()}
    else:
        smallest = min(positive.values())
        fractions = {s: max(Fraction(a / smallest).limit_denominator(1000), Fraction(1)) for s, a in positive.items()}
        scale = math.lcm(*(f.denominator for f in fractions.values()))
        whole = {s: int(f * scale) for s, f in fractions.items()}
    divisor = math.gcd(*whole.values())
    return {s: n // divisor for s, n in whole.items()}


# ----------------------------------------------------------------------------------------------
# The fast batch path
# ----------------------------------------------------------------------------------------------


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


@lru_cache(maxsize=16)
def _symbol_codes(elements: tuple[str, ...]) -> np.ndarray:
    """Column of each two-byte symbol code (``ord(A) * 256 + ord(b)``, ``b`` 0 if absent), -1 if none."""
    table = np.full(1 << 16, -1, dtype=np.int32)
    for column, symbol in enumerate(elements):
        if symbol.isascii() and 1 <= len(symbol) <= 2 and symbol[0].isupper() and symbol[1:].islower() | (len(symbol) == 1):
            table[ord(symbol[0]) * 256 + (ord(symbol[1]) if len(symbol) == 2 else 0)] = column
    return table


_POWERS_OF_TEN = 10.0 ** np.arange(_MAX_FAST_DIGITS + 1)


def _shift(mask: np.ndarray, by: int, fill: bool) -> np.ndarray:
    """``mask`` moved ``by`` places right (+1: the previous byte) or left (-1: the next byte)."""
    out = np.empty_like(mask)
    if by > 0:
        out[:by], out[by:] = fill, mask[:-by]
    else:
        out[by:], out[:by] = fill, mask[-by:]
    return out


def _fill_plain_rows(texts: list[str], elements: tuple[str, ...], matrix: np.ndarray) -> np.ndarray:
    """Fill the rows of ``matrix`` whose formula is plain; return the mask of rows filled.

    Plain: one or more ``[A-Z][a-z]?[0-9]*`` with every symbol in ``elements``, every number 1 to
    15 digits and not zero, no element twice, each element at least :data:`MIN_FRACTION` of the
    atoms. Whole batch at once: the strings are joined and classified byte by byte with numpy.
    The other rows are left zero for :func:`parse_amounts`.
    """
    n = len(texts)
    joined = "\n".join(texts)
    if joined.count("\n") != n - 1:  # a string holding a newline: let the grammar reject it
        joined = "\n".join("\x00" if "\n" in t else t for t in texts)
    b = np.frombuffer(joined.encode("utf-8", "surrogatepass"), dtype=np.uint8)
    if not len(b):
        return np.zeros(n, dtype=bool)
    newline = b == 10
    fid = np.cumsum(newline)  # formula of each byte
    upper = (b >= 65) & (b <= 90)
    lower = (b >= 97) & (b <= 122)
    digit = (b >= 48) & (b <= 57)
    starts = _shift(newline, 1, True)
    bad = ~(upper | lower | digit | newline)
    bad |= lower & ~_shift(upper, 1, False)  # lowercase only as the second letter of a symbol
    bad |= starts & ~upper & ~newline  # a formula starts with a capital
    ok = np.bincount(fid[bad], minlength=n) == 0
    ok &= np.bincount(fid, minlength=n) <= MAX_FORMULA_LENGTH + 1  # + the newline before it
    ok[fid[starts & newline] - 1] = False  # an empty formula (a newline where one starts)
    ok[-1] &= not newline[-1]

    symbol_at = np.flatnonzero(upper)
    code = b[symbol_at].astype(np.int32) << 8
    two = _shift(lower, -1, False)[symbol_at]
    code[two] += b[symbol_at[two] + 1]
    column = _symbol_codes(elements)[code]
    token_fid = fid[symbol_at]
    ok[token_fid[column < 0]] = False

    run_start = np.flatnonzero(digit & ~_shift(digit, 1, False))
    run_end = np.flatnonzero(digit & ~_shift(digit, -1, False))
    run_fid = fid[run_start]
    ok[run_fid[run_end - run_start >= _MAX_FAST_DIGITS]] = False
    digit_at = np.flatnonzero(digit)
    run_of_digit = np.repeat(np.arange(len(run_start)), run_end - run_start + 1)
    power = np.minimum(run_end[run_of_digit] - digit_at, _MAX_FAST_DIGITS)
    value = np.bincount(run_of_digit, weights=(b[digit_at] - 48) * _POWERS_OF_TEN[power], minlength=len(run_start))
    ok[run_fid[(value == 0) | (value > MAX_AMOUNT)]] = False

    amount = np.ones(len(symbol_at))
    good_run = ok[run_fid]
    token_of_byte = np.cumsum(upper) - 1
    amount[token_of_byte[run_start[good_run]]] = value[good_run]

    keep = ok[token_fid]
    rows, cols, amount = token_fid[keep], column[keep], amount[keep]
    key = np.sort(rows * 256 + cols, kind="stable")
    ok[key[1:][key[1:] == key[:-1]] >> 8] = False  # an element written twice: the grammar sums it
    total = np.bincount(rows, weights=amount, minlength=n)
    share = amount / total[rows]
    ok[rows[share < MIN_FRACTION]] = False
    keep = ok[rows]
    matrix[rows[keep], cols[keep]] = share[keep]
    return ok


def formula_list(formulas: Iterable[str] | str) -> list:
    """``formulas`` as a list: one string (or bytes) is one formula, not its characters; what is neither a
    string nor iterable raises :class:`FormulaError` in one line (not a bare ``TypeError``)."""
    if isinstance(formulas, (str, bytes)):
        return [formulas]
    try:
        return list(formulas)
    except TypeError:
        raise FormulaError(f"formulas must be a formula string or a sequence of them, got "
                           f"{type(formulas).__name__}") from None


def fraction_matrix(
    formulas: Iterable[str], elements: Sequence[str] = DEFAULT_ELEMENTS, dtype=np.float32
) -> FeatureMatrix:
    """Fraction vectors of many formulas at once (the fast path).

    Plain formulas are tokenised for the whole batch with numpy; everything else (brackets,
    decimals, spaces, adducts, and every bad formula) goes through :func:`parse_amounts`. Bad
    formulas do not raise: their row is zero and ``errors`` holds the one-line reason.
    """
    elements = tuple(elements)
    index = _index_of(elements)
    formulas = formula_list(formulas)
    matrix = np.zeros((len(formulas), len(elements)), dtype=dtype)
    errors: list[str | None] = [None] * len(formulas)
    plain = np.zeros(len(formulas), dtype=bool)
    for start in range(0, len(formulas), _FAST_CHUNK):
        stop = min(start + _FAST_CHUNK, len(formulas))
        chunk = formulas[start:stop]
        try:
            plain[start:stop] = _fill_plain_rows(chunk, elements, matrix[start:stop])
        except TypeError:  # a non-string in the batch: the grammar names its type
            chunk = [f if isinstance(f, str) else "\x00" for f in chunk]
            plain[start:stop] = _fill_plain_rows(chunk, elements, matrix[start:stop])
    for row in np.flatnonzero(~plain).tolist():
        try:
            amounts = parse_amounts(formulas[row], elements)
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
