"""Chemical analogues of a candidate among the known compounds.

A chemist's first question about a new composition is "does an analogue exist?": Na2FeO4 is
more credible if K2FeO4 is known, LiCoPO4 if LiFePO4 and LiMnPO4 are. Two counts answer it, both
over a fixed table of known compositions (:class:`AnalogueIndex`):

* **substitution analogues**: known compositions made from the candidate by replacing one of its
  elements with another of the same periodic-table group (same amounts; lanthanides form one
  group, actinides another, hydrogen its own);
* **group-pattern analogues**: known compositions whose elements fall into the same groups with
  the same amounts (the candidate's "prototype" in group terms; LiFePO4 shares NaMnPO4's).

Compositions are hashed (64-bit, order-free sums of per-(element, amount) hashes), so both
counts are vectorised lookups in sorted arrays: a quaternary screen's ten thousand candidates take
milliseconds. The shipped index (``reference_data/analogue_index.npz``) is built from the OQMD
training file alone (``python -m fh_screen.study.analogue_table``); the claims study builds its
own from each protocol's known phases, so a hidden compound never counts as its own analogue.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from fh_screen.errors import FhScreenError

__all__ = [
    "ANALOGUE_INDEX_PATH",
    "AnalogueIndex",
    "analogue_counts",
    "element_group",
    "load_analogue_index",
]

#: The index shipped with the package (OQMD training compositions only).
ANALOGUE_INDEX_PATH = Path(__file__).parents[1] / "reference_data" / "analogue_index.npz"

_AMOUNT_BITS = 20          # amounts below 2**20 hash without collision of inputs
_GROUP_DOMAIN = 1 << 40    # keeps group-pattern hashes apart from composition hashes
_LANTHANIDES = range(57, 72)
_ACTINIDES = range(89, 104)


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a well-spread 64-bit hash of each unsigned 64-bit input."""
    z = np.asarray(x, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@lru_cache(maxsize=256)
def atomic_number(symbol: str) -> int:
    """Atomic number of an element symbol."""
    from pymatgen.core.periodic_table import Element

    return int(Element(symbol).Z)


@lru_cache(maxsize=256)
def element_group(symbol: str) -> int:
    """Analogue group of an element: its periodic-table group (1–18), 0 for hydrogen, 19 for the
    lanthanides (La–Lu), 20 for the actinides (Ac–Lr)."""
    from pymatgen.core.periodic_table import Element

    z = atomic_number(symbol)
    if z == 1:
        return 0
    if z in _LANTHANIDES:
        return 19
    if z in _ACTINIDES:
        return 20
    return int(Element(symbol).group)


def _composition_hash(z: np.ndarray, amounts: np.ndarray) -> np.ndarray:
    """Order-free hash of (atomic number, amount) pairs; zero amounts contribute nothing.

    ``z``: ``(k,)`` atomic numbers of the columns; ``amounts``: ``(n, k)`` integers.
    """
    amounts = np.asarray(amounts, dtype=np.uint64)
    terms = _mix((np.asarray(z, dtype=np.uint64)[None, :] << np.uint64(_AMOUNT_BITS)) + amounts)
    terms = np.where(amounts > 0, terms, np.uint64(0))
    return terms.sum(axis=1, dtype=np.uint64)


def _group_hash(groups: np.ndarray, amounts: np.ndarray) -> np.ndarray:
    """Order-free hash of (group, amount) pairs (a different domain from :func:`_composition_hash`)."""
    amounts = np.asarray(amounts, dtype=np.uint64)
    codes = np.uint64(_GROUP_DOMAIN) + (np.asarray(groups, dtype=np.uint64)[None, :] << np.uint64(_AMOUNT_BITS)) + amounts
    terms = np.where(amounts > 0, _mix(codes), np.uint64(0))
    return terms.sum(axis=1, dtype=np.uint64)


def _hashes_of(amounts: Iterable[dict[str, int]]) -> tuple[np.ndarray, np.ndarray]:
    """(composition hashes, group-pattern hashes) of reduced integer compositions."""
    compositions, groups = [], []
    for composition in amounts:
        symbols = list(composition)
        z = np.array([atomic_number(s) for s in symbols], dtype=np.uint64)
        g = np.array([element_group(s) for s in symbols], dtype=np.uint64)
        row = np.array([[composition[s] for s in symbols]], dtype=np.int64)
        compositions.append(_composition_hash(z, row)[0])
        groups.append(_group_hash(g, row)[0])
    return np.asarray(compositions, dtype=np.uint64), np.asarray(groups, dtype=np.uint64)


def _reduced_integer_amounts(formula: str) -> dict[str, int] | None:
    """Reduced integer amounts of a formula, or None when it is unreadable or not integral."""
    from math import gcd

    from fh_screen.chem.formula import _amounts_fast

    amounts = _amounts_fast(formula)
    if not amounts:
        return None
    values = {}
    for symbol, amount in amounts.items():
        if amount <= 0:
            continue
        rounded = round(amount)
        if abs(amount - rounded) > 1e-6:
            return None
        values[symbol] = int(rounded)
    if not values:
        return None
    divisor = 0
    for value in values.values():
        divisor = gcd(divisor, value)
    return {s: v // divisor for s, v in values.items()}


@dataclass(frozen=True)
class AnalogueIndex:
    """The known compositions, hashed: sorted composition hashes and group-pattern hash counts."""

    composition_hashes: np.ndarray   # sorted, unique (uint64)
    pattern_hashes: np.ndarray       # sorted, unique (uint64)
    pattern_counts: np.ndarray       # known compositions per pattern (int64)
    metadata: dict

    @classmethod
    def from_formulas(cls, formulas: Iterable[str], **metadata) -> AnalogueIndex:
        """Index of the distinct reduced compositions among ``formulas`` (unreadable ones skipped)."""
        distinct = {}
        for formula in formulas:
            amounts = _reduced_integer_amounts(str(formula))
            if amounts is not None:
                distinct[tuple(sorted(amounts.items()))] = amounts
        compositions, patterns = _hashes_of(distinct.values())
        pattern_hashes, pattern_counts = np.unique(patterns, return_counts=True)
        return cls(np.unique(compositions), pattern_hashes, pattern_counts.astype(np.int64),
                   {**metadata, "n_compositions": len(distinct)})

    def save(self, path: str | Path) -> Path:
        """Write a compressed ``.npz`` (metadata as JSON text)."""
        import json

        path = Path(path)
        np.savez_compressed(path, composition_hashes=self.composition_hashes, pattern_hashes=self.pattern_hashes,
                            pattern_counts=self.pattern_counts, metadata=np.asarray(json.dumps(self.metadata)))
        return path

    @classmethod
    def load(cls, path: str | Path) -> AnalogueIndex:
        """Read a file written by :meth:`save`."""
        import json

        with np.load(Path(path), allow_pickle=False) as data:
            return cls(data["composition_hashes"].astype(np.uint64), data["pattern_hashes"].astype(np.uint64),
                       data["pattern_counts"].astype(np.int64), json.loads(str(data["metadata"])))

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        """Whether each composition hash is a known composition."""
        return _member(self.composition_hashes, hashes)

    def pattern_count(self, hashes: np.ndarray) -> np.ndarray:
        """Known compositions sharing each group-pattern hash."""
        position = np.searchsorted(self.pattern_hashes, hashes)
        position = np.minimum(position, max(len(self.pattern_hashes) - 1, 0))
        if len(self.pattern_hashes) == 0:
            return np.zeros(len(hashes), dtype=np.int64)
        hit = self.pattern_hashes[position] == hashes
        return np.where(hit, self.pattern_counts[position], 0)


def _member(sorted_hashes: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    if len(sorted_hashes) == 0:
        return np.zeros(len(hashes), dtype=bool)
    # sorted queries walk the index in order (3× faster than random probes of its 240k hashes)
    order = np.argsort(hashes, kind="stable")
    queries = hashes[order]
    position = np.minimum(np.searchsorted(sorted_hashes, queries), len(sorted_hashes) - 1)
    found = np.empty(len(hashes), dtype=bool)
    found[order] = sorted_hashes[position] == queries
    return found


@lru_cache(maxsize=1)
def _mates() -> dict[int, tuple[str, ...]]:
    """Element symbols of each analogue group, over the elements a composition model knows."""
    from fh_screen.chem.formula import DEFAULT_ELEMENTS

    groups: dict[int, list[str]] = {}
    for symbol in DEFAULT_ELEMENTS:
        groups.setdefault(element_group(symbol), []).append(symbol)
    return {g: tuple(symbols) for g, symbols in groups.items()}


def analogue_counts(counts: np.ndarray, system: Sequence[str], index: AnalogueIndex) -> tuple[np.ndarray, np.ndarray]:
    """(substitution analogues, group-pattern analogues) of each reduced count row over ``system``.

    A substitution replaces one element of the row by another element of its group that the row
    does not hold (an element of the system the row lacks counts too: Na2O's K2O in Na-K-O); the
    candidate itself never counts (it is not a substitution of itself).
    """
    counts = np.asarray(counts, dtype=np.int64)
    n = len(counts)
    if n == 0:
        return np.zeros(0), np.zeros(0)
    system = tuple(system)
    z = np.array([atomic_number(s) for s in system], dtype=np.uint64)
    groups = np.array([element_group(s) for s in system], dtype=np.uint64)
    own_hash = _composition_hash(z, counts)
    patterns = index.pattern_count(_group_hash(groups, counts)).astype(np.float64)
    patterns -= index.contains(own_hash)  # a known composition is not its own analogue
    column = {s: j for j, s in enumerate(system)}
    amounts = counts.astype(np.uint64)
    # every substitution of every row, looked up in one pass over the index
    queries, rows = [], []
    for j, symbol in enumerate(system):
        has = np.flatnonzero(counts[:, j] > 0)
        if not len(has):
            continue
        own_term = _mix((np.uint64(z[j]) << np.uint64(_AMOUNT_BITS)) + amounts[has, j])
        base = own_hash[has] - own_term
        for mate in _mates().get(int(groups[j]), ()):
            if mate == symbol:
                continue
            keep = has if mate not in column else has[counts[has, column[mate]] == 0]
            if not len(keep):
                continue
            kept_base = base if mate not in column else base[counts[has, column[mate]] == 0]
            mate_term = _mix((np.uint64(atomic_number(mate)) << np.uint64(_AMOUNT_BITS)) + amounts[keep, j])
            queries.append(kept_base + mate_term)
            rows.append(keep)
    if queries:
        found = index.contains(np.concatenate(queries))
        substitutions = np.bincount(np.concatenate(rows)[found], minlength=n).astype(np.float64)
    else:
        substitutions = np.zeros(n)
    return substitutions, np.maximum(patterns, 0.0)


@lru_cache(maxsize=4)
def load_analogue_index(path: str | Path = ANALOGUE_INDEX_PATH) -> AnalogueIndex:
    """The index at ``path`` (the shipped one by default).

    Raises :class:`~fh_screen.errors.FhScreenError` when the file is absent: P(stable) without
    its analogue features would be quietly wrong, so a broken install must say so.
    """
    path = Path(path)
    if not path.is_file():
        hint = " (the installed package is incomplete: reinstall fh-screen)" if path == ANALOGUE_INDEX_PATH else ""
        raise FhScreenError(f"analogue index {path} is missing{hint}")
    return AnalogueIndex.load(path)
