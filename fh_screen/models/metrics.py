"""The one metrics function: errors of predicted ΔH_f against reference values (eV/atom).

Training (model cards), the seed study and the evaluation all report :func:`error_metrics`
(the evaluation's :func:`~fh_screen.study.evaluation.accuracy_metrics` is its two rows, all values
and abs(ΔH_f) < 5 eV/atom, under the evaluation's key names).
"""

from __future__ import annotations

import numpy as np

__all__ = ["error_metrics"]


def error_metrics(y_true_ev_per_atom: np.ndarray, y_pred_ev_per_atom: np.ndarray) -> dict[str, float]:
    """MAE, RMSE, median and 80th/90th percentile absolute errors (eV/atom), and R².

    R² is NaN when it is undefined: fewer than two samples, or targets without variance
    (fh-screen's JSON writer, :func:`fh_screen.io.json_text`, writes it as null).
    """
    y_true = np.asarray(y_true_ev_per_atom, dtype=float)
    errors = np.abs(np.asarray(y_pred_ev_per_atom, dtype=float) - y_true)
    residual = np.sum((y_true - np.asarray(y_pred_ev_per_atom, dtype=float)) ** 2)
    total = float(np.sum((y_true - y_true.mean()) ** 2)) if len(y_true) else 0.0
    return {
        "n": int(len(errors)),
        "mae_ev_per_atom": float(errors.mean()),
        "rmse_ev_per_atom": float(np.sqrt(np.mean(errors**2))),
        "median_ae_ev_per_atom": float(np.median(errors)),
        "p80_ae_ev_per_atom": float(np.percentile(errors, 80)),
        "p90_ae_ev_per_atom": float(np.percentile(errors, 90)),
        "r2": float(1 - residual / total) if len(y_true) >= 2 and total > 0 else float("nan"),
    }
