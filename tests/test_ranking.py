"""The stability prior's vectorised lookup against a row-by-row reading of the shipped table."""

from __future__ import annotations

import numpy as np
import pytest

from fh_screen.chem.oxidation import charge_neutral_mask
from fh_screen.chem.candidates import enumerate_counts
from fh_screen.screening.probability import PATTERN_WEIGHT, PRIOR_PATH, _load_prior, log_prior, pattern_rows


def _reference_log_prior(counts: np.ndarray, neutral: np.ndarray, chemsys: tuple[str, ...]) -> np.ndarray:
    table, patterns = _load_prior(str(PRIOR_PATH), float(PATTERN_WEIGHT))
    out = []
    for row, balanced in zip(pattern_rows(counts, chemsys).tolist(), neutral.tolist()):
        present = tuple(c for c in row if c > 0)
        fallback = table[min(len(present), table.shape[0] - 1), min(sum(present), table.shape[1] - 1), int(balanced)]
        out.append(patterns.get(present + (int(balanced),), fallback))
    return np.array(out)


@pytest.mark.parametrize("chemsys, max_atoms", [
    (("Li", "O"), 20),
    (("Li", "Fe", "P", "O"), 12),
    (("Ba", "Ti", "O", "S", "N"), 8),
    (("Li", "Fe", "P", "O", "Mn", "Co", "Ni", "Mg", "Al"), 9),  # wider than a packed key: per-row path
])
def test_log_prior_equals_row_by_row_lookup(chemsys, max_atoms):
    counts = enumerate_counts(len(chemsys), max_atoms)
    counts = np.concatenate([counts, counts[:20] * 130])  # counts too large to pack fall back to the shape table
    neutral = charge_neutral_mask(counts, chemsys)
    values = log_prior(counts, neutral, chemsys)
    expected = _reference_log_prior(counts, neutral, chemsys)
    np.testing.assert_array_equal(values, expected)
    # the pattern table decides many rows (not only the shape table's fallback)
    table, _ = _load_prior(str(PRIOR_PATH), float(PATTERN_WEIGHT))
    n_el = np.minimum((counts > 0).sum(axis=1), table.shape[0] - 1)
    n_at = np.minimum(counts.sum(axis=1), table.shape[1] - 1)
    assert (values != table[n_el, n_at, neutral.astype(int)]).mean() > 0.05
