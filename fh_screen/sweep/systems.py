"""Which chemical systems a sweep screens: every combination of an element list, or a file.

``systems_from_elements("Li,Fe,P,O", "2,3")`` gives the 6 binaries and 4 ternaries of the four
elements; :func:`read_systems_file` reads one system per line. Systems are written as the store
writes them (:func:`fh_screen.store.documents.chemsys_of`: symbols sorted, joined by ``-``), each
once, in a fixed order (by size, then by name), so the same input always gives the same sweep.
Bad input raises :class:`SweepInputError` (one line) before anything is screened.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path

from fh_screen.chem.candidates import MAX_SYSTEM_SIZE, ChemsysError, parse_chemsys
from fh_screen.chem.formula import ALL_ELEMENT_SYMBOLS, DEFAULT_ELEMENTS, ELEMENTS_ABSENT_FROM_OQMD
from fh_screen.errors import FhScreenError

__all__ = [
    "ALL_KEYWORD",
    "SweepInputError",
    "count_systems",
    "parse_elements",
    "parse_nelements",
    "read_systems_file",
    "systems_from_elements",
]

#: ``--elements all``: every element of the model's input slots that OQMD holds (86).
ALL_KEYWORD = "all"


class SweepInputError(FhScreenError):
    """An element list, a size list, a systems file or a sweep option that cannot be swept; one line."""


def _split(text: str | Sequence[str], what: str, example: str) -> list[str]:
    """The comma-separated items of ``text`` (or of each string of a list), stripped; an empty item
    (``Li,,O``, ``Li,O,``) or one holding a space or a semicolon (``Li O``) is refused in one line."""
    texts = [text] if isinstance(text, str) else [str(item) for item in text]
    if not any(part.strip() for t in texts for part in t.split(",")):
        return []  # nothing given: the caller's "empty list" line
    items = []
    for whole in texts:
        for part in whole.split(","):
            item = part.strip()
            if not item:
                raise SweepInputError(f"malformed {what} {whole!r}: an empty item between commas; "
                                      f"separate items by single commas, e.g. {example}")
            if any(c.isspace() or c == ";" for c in item):
                raise SweepInputError(f"malformed {what} {whole!r}: {item!r} is not one item; "
                                      f"separate items by commas, e.g. {example}")
            items.append(item)
    return items


def parse_elements(text: str | Sequence[str]) -> tuple[str, ...]:
    """Element symbols of ``"Li,Fe,P,O"`` (or a list), in the given order.

    ``"all"`` gives every element of the model's slots that OQMD holds. Raises
    :class:`SweepInputError` for an empty list, an unknown symbol (with a hint for ``fe``) or a
    repeated one (``Li,Li,O``, refused as ``Li-Li-O`` is everywhere else).
    """
    symbols = _split(text, "element list", "--elements Li,Fe,P,O")
    if not symbols:
        raise SweepInputError("empty element list: give symbols separated by commas, e.g. --elements Li,Fe,P,O")
    if [s.lower() for s in symbols] == [ALL_KEYWORD]:
        return tuple(e for e in DEFAULT_ELEMENTS if e not in ELEMENTS_ABSENT_FROM_OQMD)
    known, allowed = set(ALL_ELEMENT_SYMBOLS), set(DEFAULT_ELEMENTS)
    for symbol in symbols:
        if symbol not in known:
            hint = f" (did you mean {symbol.capitalize()}?)" if symbol.capitalize() in known else ""
            raise SweepInputError(f"unknown element {symbol!r} in the element list{hint}")
        if symbol not in allowed:
            raise SweepInputError(
                f"element {symbol!r} is outside the model's elements ({DEFAULT_ELEMENTS[0]}–{DEFAULT_ELEMENTS[-1]})")
    repeated = [s for i, s in enumerate(symbols) if s in symbols[:i]]
    if repeated:
        raise SweepInputError(f"duplicate element {repeated[0]!r} in the element list: name each element once")
    return tuple(symbols)


def parse_nelements(text: str | int | Sequence[int | str]) -> tuple[int, ...]:
    """System sizes of ``"2,3"`` (or ``"2-4"``, an int, a list), sorted, each from 2 to :data:`MAX_SYSTEM_SIZE`.

    A malformed list (``2,,3``, ``2-``, ``4-2``, ``2 3``) raises :class:`SweepInputError` in one line.
    """
    if isinstance(text, (int, float)) or not isinstance(text, (str, Sequence)):
        parts = [str(text)]
    else:
        parts = _split(text if isinstance(text, str) else [str(t) for t in text], "list of system sizes",
                       "--nelements 2,3 or 2-4")
    sizes: set[int] = set()
    for part in parts:
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if match is None:
            raise SweepInputError(f"number of elements must be an integer or a range like 2-4, got {part!r}")
        low, high = int(match[1]), int(match[2] or match[1])
        if high < low:
            raise SweepInputError(f"range of system sizes {part!r} runs backwards: write it as {high}-{low}")
        for n in range(low, high + 1):
            if not 2 <= n <= MAX_SYSTEM_SIZE:
                raise SweepInputError(f"number of elements must be between 2 and {MAX_SYSTEM_SIZE}, got {n}")
            sizes.add(n)
    if not sizes:
        raise SweepInputError("empty list of system sizes: give e.g. --nelements 2,3")
    return tuple(sorted(sizes))


def count_systems(n_elements: int, nelements: Sequence[int]) -> int:
    """How many systems ``n_elements`` elements give at the sizes ``nelements`` (without listing them)."""
    return sum(math.comb(n_elements, k) for k in nelements)


def systems_from_elements(
    elements: str | Sequence[str], nelements: str | int | Sequence[int] = (2, 3), *, limit: int = 5_000_000,
) -> list[str]:
    """Every system of ``nelements`` elements drawn from ``elements``: ``["Fe-Li", ..., "Fe-Li-O", ...]``.

    Raises :class:`SweepInputError` when the list gives no system (fewer elements than the
    smallest size) or more than ``limit`` systems.
    """
    symbols = parse_elements(elements)
    sizes = parse_nelements(nelements)
    total = count_systems(len(symbols), sizes)
    if total == 0:
        raise SweepInputError(f"{len(symbols)} element(s) give no system of {', '.join(map(str, sizes))} elements")
    if total > limit:
        raise SweepInputError(f"{len(symbols)} elements give {total:,} systems of {', '.join(map(str, sizes))} "
                              f"elements, above the limit of {limit:,}: split the sweep")
    ordered = sorted(symbols)
    return [chemsys for k in sizes for chemsys in sorted("-".join(c) for c in combinations(ordered, k))]


def read_systems_file(path: str | Path) -> list[str]:
    """Systems of a text file, one per line (``Li-Fe-O``: elements joined by ``-``, as ``fh-screen SYSTEM``).

    ``#`` starts a comment and blank lines are skipped. Each line is read by the one
    chemical-system parser (:func:`~fh_screen.chem.candidates.parse_chemsys`, so ``Li--O``,
    ``Li-O-``, ``Li,O`` or ``Li O`` are refused as everywhere else); the first bad line raises
    :class:`SweepInputError` naming the file and the line number. Repeats are dropped (first kept).
    """
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark (Windows editors) is no part of line 1
    except FileNotFoundError:
        raise SweepInputError(f"systems file not found: {path}") from None
    except IsADirectoryError:
        raise SweepInputError(f"systems file is a folder: {path}") from None
    except UnicodeDecodeError:
        raise SweepInputError(f"systems file is not text: {path}") from None
    except OSError as exc:
        raise SweepInputError(f"cannot read systems file {path}: {exc.strerror or exc}") from None
    systems: dict[str, None] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            system = parse_chemsys(line)
        except ChemsysError as exc:
            raise SweepInputError(f"{path} line {number}: {exc}") from None
        systems["-".join(system)] = None
    if not systems:
        raise SweepInputError(f"no system in {path}: write one per line, e.g. Li-Fe-O")
    return list(systems)
