"""The exported ranked table (``fh-screen SYSTEM --json/--csv``): every column, plus the model of each row.

:func:`export_frame` is ``ScreenResult.table`` with every column it has (``docs/screening.md``
lists them with units) and one more, ``model``: the ``name@version`` that predicted the row's
ΔH_f and σ. Under the cascade (a slow model refines the best candidates of a fast prefilter) the
``refined`` rows carry the screen's model and the others the prefilter's, so two models never
sit in one column unmarked.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from fh_screen.screening import ScreenResult

__all__ = ["MODEL_COLUMN", "export_frame", "export_records"]

#: Name of the added column: ``name@version`` of the model that predicted the row.
MODEL_COLUMN = "model"


def export_frame(result: ScreenResult) -> pd.DataFrame:
    """Every column of ``result.table`` and :data:`MODEL_COLUMN`, in rank order.

    Parameters
    ----------
    result
        A screen (:class:`~fh_screen.screening.ScreenResult`).

    Returns
    -------
    pandas.DataFrame
        A copy; ``model`` is the screen's model on refined rows, the prefilter's on the others.
    """
    frame = result.table.copy()
    own = f"{result.model_name}@{result.model_version}"
    if result.prefilter and "refined" in frame.columns:
        frame[MODEL_COLUMN] = np.where(frame["refined"].to_numpy(bool), own, result.prefilter)
    else:
        frame[MODEL_COLUMN] = own
    return frame


def _plain(value):
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    return value


def export_records(result: ScreenResult) -> list[dict]:
    """:func:`export_frame` as JSON-ready dicts (NaN becomes None)."""
    return [{k: _plain(v) for k, v in row.items()} for row in export_frame(result).to_dict("records")]
