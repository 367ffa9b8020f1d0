"""Oxidation states and charge balance of integer count rows (vectorised).

:func:`charge_neutral_mask` tests every row of a count array against the combinations of
pymatgen's common oxidation states of the system's elements (SMACT's ``neutral_ratios``
convention); :func:`charge_balanced` bounds its cost for any system by grouping rows by the
elements they hold.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["MAX_STATE_COMBINATIONS", "MAX_SUBSYSTEM_STATE_COMBINATIONS", "charge_balanced", "charge_neutral_mask"]


@lru_cache(maxsize=128)
def _oxidation_table(chemsys: tuple[str, ...]) -> tuple[tuple[int, ...], ...]:
    """pymatgen's common oxidation states of each element of the system."""
    from pymatgen.core import Element

    return tuple(tuple(Element(s).common_oxidation_states) for s in chemsys)


@lru_cache(maxsize=128)
def _is_metal(chemsys: tuple[str, ...]) -> tuple[bool, ...]:
    from pymatgen.core import Element

    return tuple(bool(Element(s).is_metal) for s in chemsys)


def charge_neutral_mask(counts: np.ndarray, chemsys: Sequence[str], *, allow_alloys: bool = True) -> np.ndarray:
    """True for rows that can be charge balanced, vectorised over rows.

    Each element present takes **one** of pymatgen's ``common_oxidation_states`` (all its atoms
    the same state, SMACT's ``neutral_ratios`` convention), and the row is neutral if some
    choice of states gives a total charge of zero. Rows made only of metals are kept as alloys
    when ``allow_alloys`` (SMACT's ``include_alloys`` default). Mixed valence (Fe3O4 as
    Fe2+/Fe3+) is not counted. The combinations of states are enumerated once per system (a
    few hundred at most) and every row is tested with one matrix product.
    """
    chemsys = tuple(chemsys)
    counts = np.asarray(counts, dtype=np.int64)
    table = _oxidation_table(chemsys)
    # An element without common states can only be neutral as 0 (e.g. noble gases).
    options = [states if states else (0,) for states in table]
    combos = np.array(np.meshgrid(*options, indexing="ij"), dtype=np.int64).reshape(len(chemsys), -1)
    neutral = np.zeros(len(counts), dtype=bool)
    for start in range(0, combos.shape[1], 256):
        block = combos[:, start : start + 256]
        neutral |= ((counts @ block) == 0).any(axis=1)
    if allow_alloys:
        metals = np.array(_is_metal(chemsys), dtype=bool)
        only_metals = ~((counts > 0) & ~metals).any(axis=1)
        neutral |= only_metals
    return neutral


#: Most oxidation-state combinations :func:`charge_balanced` tests in one product; a system with more
#: (e.g. ten halogens, chalcogens and pnictogens: 518,400) is split by the elements each row holds.
MAX_STATE_COMBINATIONS = 4096


#: A subsystem with more combinations than this is not tested (its rows count as balanced).
MAX_SUBSYSTEM_STATE_COMBINATIONS = 65_536


def charge_balanced(counts: np.ndarray, system: Sequence[str]) -> np.ndarray:
    """:func:`fh_screen.chem.oxidation.charge_neutral_mask` with bounded cost for any system.

    Rows are grouped by the elements they contain when the whole system has more than
    :data:`MAX_STATE_COMBINATIONS` combinations of common oxidation states; a group above
    :data:`MAX_SUBSYSTEM_STATE_COMBINATIONS` is reported balanced (not tested) with a log line.
    """
    from fh_screen.chem.oxidation import _oxidation_table

    system = tuple(system)
    counts = np.asarray(counts, dtype=np.int64)
    sizes = [max(1, len(states)) for states in _oxidation_table(system)]
    if math.prod(sizes) <= MAX_STATE_COMBINATIONS or len(counts) == 0:
        return charge_neutral_mask(counts, system)
    weights = 1 << np.arange(len(system), dtype=np.int64)
    masks = (counts > 0) @ weights
    out = np.ones(len(counts), dtype=bool)
    for mask in np.unique(masks):
        rows = np.flatnonzero(masks == mask)
        columns = [j for j in range(len(system)) if (int(mask) >> j) & 1]
        if math.prod(sizes[j] for j in columns) > MAX_SUBSYSTEM_STATE_COMBINATIONS:
            logger.info("charge balance of %s not tested (too many oxidation-state combinations)", "-".join(system[j] for j in columns))
            continue
        out[rows] = charge_neutral_mask(counts[np.ix_(rows, columns)], tuple(system[j] for j in columns))
    return out
