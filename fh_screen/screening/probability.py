"""The screen's ranking rule: how likely a new composition is to be a stable compound.

A candidate is scored by ``log P(below the known hull) + log prior``:

* ``P(below the known hull) = Φ(-e / s)``: ``e`` is the predicted ΔH_f minus the hull of the
  known (DFT) phases at the candidate's composition (negative: predicted below the known hull),
  ``s = sqrt(σ² + σ_floor²)`` with σ the model's spread (0 for a single network) and
  ``σ_floor`` (:data:`SIGMA_FLOOR_EV_PER_ATOM`) the error a spread does not see;
* ``prior``: how often a composition of that shape is a stable compound, learned from the OQMD
  training file alone (:func:`fh_screen.study.prior.build_prior`): the number of compounds on their system's hull
  with ``j`` elements, ``n`` atoms per formula unit and charge balance (yes/no), divided by the
  number of enumerated candidates of that shape in the same systems. Real stable compounds have
  small formula units and balanced charges far more often than the enumeration does, and the
  prior says by how much.

``docs/ranking-experiments.md`` holds the rediscovery measurements this rule was chosen by.
The prior ships as ``fh_screen/reference_data/stability_prior.json``; rebuild it with
``python -m fh_screen.study.prior ../shared/data/oqmd/train.csv`` (:mod:`fh_screen.study.prior`).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from fh_screen.defaults import DEFAULT_PREFILTER_MODEL, DEFAULT_REFINE_TOP

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_PREFILTER_MODEL",
    "DEFAULT_REFINE_TOP",
    "PRIOR_PATH",
    "SIGMA_FLOOR_EV_PER_ATOM",
    "log_prior",
    "stability_score",
]

#: Error of a prediction that the ensemble spread does not cover (eV/atom).
SIGMA_FLOOR_EV_PER_ATOM = 0.05
#: The shipped prior (built from the OQMD training file only).
PRIOR_PATH = Path(__file__).parents[1] / "reference_data" / "stability_prior.json"
#: Pseudo-candidates that shrink a stoichiometry pattern's rate towards its shape's rate.
PATTERN_WEIGHT = 200.0


@lru_cache(maxsize=256)
def _electronegativity_order(chemsys: tuple[str, ...]) -> np.ndarray:
    """Column order of ``chemsys`` by Pauling electronegativity, then atomic number (cations first)."""
    from pymatgen.core import Element

    def key(symbol: str):
        x = Element(symbol).X
        return (x if np.isfinite(x) else 0.0, Element(symbol).Z)

    return np.array(sorted(range(len(chemsys)), key=lambda j: key(chemsys[j])), dtype=np.int64)




def pattern_rows(counts: np.ndarray, chemsys: Sequence[str]) -> np.ndarray:
    """Each row's counts in electronegativity order (``Li2O`` → ``[2, 1]``, ``LiO2`` → ``[1, 2]``).

    Zeros stay in place; callers drop them from the key.
    """
    return np.asarray(counts, dtype=np.int64)[:, _electronegativity_order(tuple(chemsys))]


@lru_cache(maxsize=8)
def _load_prior(path: str, pattern_weight: float) -> tuple[np.ndarray, dict[tuple[int, ...], float]]:
    """(shape table (elements, atoms, neutral), {sorted counts + (neutral,): log rate})."""
    data = json.loads(Path(path).read_text())
    table = np.asarray(data["log_prior"], dtype=np.float64)
    patterns = {}
    for key, (n_stable, n_candidates) in data["patterns"].items():
        counts_text, neutral = key.split("|")
        counts = tuple(int(c) for c in counts_text.split(","))
        base = math.exp(table[min(len(counts), table.shape[0] - 1), min(sum(counts), table.shape[1] - 1), int(neutral)])
        rate = (n_stable + pattern_weight * base) / (n_candidates + pattern_weight)
        patterns[counts + (int(neutral),)] = math.log(rate)
    return table, patterns


def log_prior(counts: np.ndarray, neutral: np.ndarray, chemsys: Sequence[str], path: str | Path = PRIOR_PATH,
              pattern_weight: float = PATTERN_WEIGHT) -> np.ndarray:
    """Natural log of the prior of each count row (``(n, k)`` ints over ``chemsys``) given its charge balance.

    A row's stoichiometry pattern (its non-zero counts in electronegativity order, e.g. ``1,1,3``
    for LiFeO3's ``ABX3``) and charge balance look up the pattern table, shrunk towards the
    (elements, atoms, balance) table with ``pattern_weight`` pseudo-candidates; unseen patterns
    use that table.
    """
    table, patterns = _load_prior(str(path), float(pattern_weight))
    counts = np.asarray(counts, dtype=np.int64)
    neutral = np.asarray(neutral, dtype=np.int64)
    n_elements = np.minimum((counts > 0).sum(axis=1), table.shape[0] - 1)
    n_atoms = np.minimum(counts.sum(axis=1), table.shape[1] - 1)
    out = table[n_elements, n_atoms, neutral]
    if len(counts) == 0:
        return out
    ordered = pattern_rows(counts, chemsys)
    width = ordered.shape[1]
    if width > _PACKED_WIDTH:  # too many elements to pack a key: one lookup per row
        return _pattern_lookup_by_row(ordered, neutral, out, patterns)
    pattern_keys, pattern_values = _packed_patterns(str(path), float(pattern_weight))
    # the non-zero counts moved to the front keep their order: the pattern, zero-padded
    compact = np.take_along_axis(ordered, np.argsort(ordered == 0, axis=1, kind="stable"), axis=1)
    compact = np.pad(compact, ((0, 0), (0, _PACKED_WIDTH - width)))
    packable = (compact < 2**_PATTERN_BITS).all(axis=1)
    keys = _pack(np.where(packable[:, None], compact, 0), neutral)
    position = np.clip(np.searchsorted(pattern_keys, keys), 0, max(len(pattern_keys) - 1, 0))
    hit = packable & (pattern_keys[position] == keys) if len(pattern_keys) else np.zeros(len(keys), dtype=bool)
    return np.where(hit, pattern_values[position] if len(pattern_values) else 0.0, out)


def _pattern_lookup_by_row(ordered: np.ndarray, neutral: np.ndarray, fallback: np.ndarray,
                           patterns: dict[tuple[int, ...], float]) -> np.ndarray:
    """The pattern table read one row at a time (wide systems; the reference of the packed lookup)."""
    out = np.array(fallback, dtype=np.float64, copy=True)
    for i, row in enumerate(np.asarray(ordered).tolist()):
        value = patterns.get(tuple(c for c in row if c > 0) + (int(neutral[i]),))
        if value is not None:
            out[i] = value
    return out


#: Bits per count in a packed pattern key (counts up to 127; larger ones fall back to the shape table).
_PATTERN_BITS = 7
#: Counts per packed key: 8 x 7 bits + the charge-balance bit fit an int64.
_PACKED_WIDTH = 8


def _pack(compact: np.ndarray, neutral: np.ndarray) -> np.ndarray:
    """One int64 per (zero-padded pattern, charge balance) row."""
    weights = (1 << (_PATTERN_BITS * np.arange(compact.shape[1] - 1, -1, -1, dtype=np.int64))) << 1
    return compact.astype(np.int64) @ weights + np.asarray(neutral, dtype=np.int64)


@lru_cache(maxsize=8)
def _packed_patterns(path: str, pattern_weight: float) -> tuple[np.ndarray, np.ndarray]:
    """The pattern table as sorted packed keys and their log rates."""
    width = _PACKED_WIDTH
    _, patterns = _load_prior(path, pattern_weight)
    rows = [(key[:-1], key[-1], value) for key, value in patterns.items()
            if len(key) - 1 <= width and max(key[:-1]) < 2**_PATTERN_BITS]
    compact = np.zeros((len(rows), width), dtype=np.int64)
    for i, (counts, _, _) in enumerate(rows):
        compact[i, : len(counts)] = counts
    keys = _pack(compact, np.array([n for _, n, _ in rows], dtype=np.int64))
    values = np.array([v for _, _, v in rows], dtype=np.float64)
    order = np.argsort(keys, kind="stable")
    return keys[order], values[order]


def stability_score(e_above_known_hull_ev_per_atom: np.ndarray, std_ev_per_atom: np.ndarray | None,
                    log_prior_values: np.ndarray, sigma_floor_ev_per_atom: float = SIGMA_FLOOR_EV_PER_ATOM) -> np.ndarray:
    """``log Φ(-e/s) + log prior`` (higher is better), ``s = sqrt(σ² + σ_floor²)``."""
    from scipy.special import log_ndtr

    e = np.asarray(e_above_known_hull_ev_per_atom, dtype=np.float64)
    std = np.zeros_like(e) if std_ev_per_atom is None else np.nan_to_num(np.asarray(std_ev_per_atom, dtype=np.float64))
    scale = np.sqrt(std**2 + sigma_floor_ev_per_atom**2)
    return log_ndtr(-e / scale) + np.asarray(log_prior_values, dtype=np.float64)

