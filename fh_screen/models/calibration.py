"""Calibration of an ensemble's σ: one factor so that ±1.645σ holds the target share of errors.

The factor is fitted on rows carved from the training file (never ``val.csv``), stored as
``checkpoint.metadata["sigma_scale"]`` and applied by :class:`fh_screen.models.predictor.Predictor`.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["TARGET_COVERAGE", "Z_90", "calibrate_sigma_scale", "interval_coverage"]

#: Coverage the σ scale is calibrated to: the fraction of held-out errors inside ±1.645σ.
TARGET_COVERAGE = 0.90

#: Half-width of the stated interval in units of σ (a two-sided 90 % normal interval).
Z_90 = 1.645


def calibrate_sigma_scale(errors_ev_per_atom: ArrayLike, sigma_ev_per_atom: ArrayLike, coverage: float = TARGET_COVERAGE) -> float:
    """The factor ``s`` for which a fraction ``coverage`` of ``|error| <= 1.645·s·σ``.

    Parameters
    ----------
    errors_ev_per_atom
        Prediction minus truth on the calibration rows (eV/atom); the sign is ignored.
    sigma_ev_per_atom
        The model's raw (unscaled) σ on the same rows (eV/atom); values below 1e-9 are raised
        to 1e-9 so that a zero σ does not divide by zero.
    coverage
        Target fraction of errors inside the scaled ±1.645σ interval.

    Returns
    -------
    float
        The ``coverage`` quantile of ``|error| / (1.645 σ)``: on the calibration rows the
        stated interval then holds exactly ``coverage`` of the errors (up to ties).
    """
    errors = np.abs(np.asarray(errors_ev_per_atom, dtype=np.float64))
    sigma = np.maximum(np.asarray(sigma_ev_per_atom, dtype=np.float64), 1e-9)
    return float(np.quantile(errors / (Z_90 * sigma), coverage))


def interval_coverage(errors_ev_per_atom: ArrayLike, sigma_ev_per_atom: ArrayLike) -> float:
    """Fraction of rows whose error lies within ±1.645σ.

    Parameters
    ----------
    errors_ev_per_atom
        Prediction minus truth (eV/atom); the sign is ignored.
    sigma_ev_per_atom
        σ for the same rows (eV/atom), already scaled if the model scales it.

    Returns
    -------
    float
        The share of rows with ``|error| <= 1.645 σ`` (NaN for no rows).
    """
    errors = np.abs(np.asarray(errors_ev_per_atom, dtype=np.float64))
    sigma = np.asarray(sigma_ev_per_atom, dtype=np.float64)
    if errors.size == 0:
        return float("nan")
    return float(np.mean(errors <= Z_90 * sigma))
