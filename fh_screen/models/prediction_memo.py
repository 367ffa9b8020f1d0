"""A predictor that remembers what it predicted, by composition, for sweeps over many systems.

A sweep over every ternary of a set of elements meets each binary subsystem in many systems (a
binary of 40 elements lies in 38 of their ternaries), and the slow model predicts the same binary
candidates again in each. :class:`MemoizedPredictor` wraps a :class:`~fh_screen.models.predictor.Predictor`,
answers ``predict_counts`` for compositions it has seen from memory and passes only the others
to the model. The composition is the key (reduced integer counts per element), so the same
compound met in Li-Fe-O and in Fe-Li-P gives one prediction. Everything else (name, version,
identity, the prefilter companion) is the wrapped predictor's.

A remembered value was computed in another batch; it equals a fresh one to float32 rounding of
the batch's arithmetic (~1e-7 eV/atom). The memory is the wrapper's own (no module state) and is
bounded: past ``max_entries`` the oldest half is forgotten.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fh_screen.chem.candidates import reduce_counts
from fh_screen.models.predictor import Prediction, Predictor

__all__ = ["MemoizedPredictor"]

Key = tuple[tuple[str, int], ...]


class MemoizedPredictor:
    """``predictor`` with a memory of its ``predict_counts`` answers, keyed by composition."""

    def __init__(self, predictor: Predictor, max_entries: int = 200_000) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, not {max_entries}")
        self.predictor = predictor
        self.max_entries = max_entries
        self._memory: dict[Key, tuple[float, float, bool]] = {}
        self.hits = 0
        self.misses = 0
        self._dtype: np.dtype | None = None  # the wrapped model's output dtype, once seen

    def __getattr__(self, name: str) -> Any:  # name, version, weights_sha256, companion, ...
        return getattr(self.predictor, name)

    @staticmethod
    def keys(counts: np.ndarray, system_elements: Sequence[str]) -> list[Key]:
        """The composition of each row: (element, reduced count) pairs, ordered by element symbol."""
        counts = np.asarray(counts, dtype=np.int64)
        if counts.size == 0:
            return [() for _ in range(len(counts))]
        reduced = reduce_counts(counts)
        order = np.argsort(np.asarray(system_elements))
        symbols = [system_elements[i] for i in order]
        reduced = reduced[:, order]
        return [tuple((s, int(c)) for s, c in zip(symbols, row) if c) for row in reduced.tolist()]

    def predict_counts(self, counts: np.ndarray, system_elements: Sequence[str]) -> Prediction:
        """The wrapped predictor's ``predict_counts``, from memory where the composition was seen."""
        counts = np.asarray(counts)
        keys = self.keys(counts, system_elements)
        n = len(keys)
        mean, std, outside = np.empty(n), np.full(n, np.nan), np.zeros(n, dtype=bool)
        missing = []
        for i, key in enumerate(keys):
            known = self._memory.get(key)
            if known is None:
                missing.append(i)
            else:
                mean[i], std[i], outside[i] = known
        self.hits += n - len(missing)
        self.misses += len(missing)
        if missing:
            fresh = self.predictor.predict_counts(counts[missing], system_elements)
            self._dtype = fresh.dhf_ev_per_atom.dtype
            mean[missing] = fresh.dhf_ev_per_atom
            if fresh.dhf_std_ev_per_atom is not None:
                std[missing] = fresh.dhf_std_ev_per_atom
            outside[missing] = fresh.out_of_domain
            self._remember([keys[i] for i in missing], mean[missing], std[missing], outside[missing])
        has_std = bool(self.predictor.has_uncertainty)
        dtype = self._dtype or np.float64
        return Prediction(mean.astype(dtype), std.astype(dtype) if has_std else None, outside, [None] * n)

    def _remember(self, keys: list[Key], mean: np.ndarray, std: np.ndarray, outside: np.ndarray) -> None:
        start = max(0, len(keys) - self.max_entries)  # a batch larger than the memory: keep its last rows
        overflow = len(self._memory) + len(keys) - start - self.max_entries
        if overflow > 0:  # forget the oldest (at least half; dicts keep insertion order)
            for old in list(self._memory)[: max(overflow, len(self._memory) // 2)]:
                del self._memory[old]
        for key, m, s, o in zip(keys[start:], mean[start:].tolist(), std[start:].tolist(), outside[start:].tolist()):
            self._memory[key] = (m, s, o)
