"""The exported ranked table (``fh-screen SYSTEM --json/--csv``): every column, plus the model of each row.

:func:`export_frame` is ``ScreenResult.table`` with every column it has (``docs/screening.md``
lists them with units) and one more, ``model``: the ``name@version`` that predicted the row's
ΔH_f and σ. Under the cascade (a slow model refines the best candidates of a fast prefilter) the
``refined`` rows carry the screen's model and the others the prefilter's, so two models never
sit in one column unmarked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from fh_screen.screening import ScreenResult

__all__ = ["EXPORT_COLUMN_ORDER", "MODEL_COLUMN", "export_frame", "export_records", "stored_screen_frame"]

#: Name of the added column: ``name@version`` of the model that predicted the row.
MODEL_COLUMN = "model"

#: The columns of a screen's export in their order (``docs/screening.md``, "Exported columns").
EXPORT_COLUMN_ORDER = [
    "rank", "formula", "dhf_pred_ev_per_atom", "e_above_hull_pred_ev_per_atom", "known_dhf_ev_per_atom",
    "decomposition", "dhf_std_ev_per_atom", "p_stable", "is_known", "dhf_ev_per_atom", "charge_balanced",
    "stability_score", "selected", "refined", "known_source", MODEL_COLUMN,
]


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
    frame[MODEL_COLUMN] = result.row_models()
    return frame


def export_records(result: ScreenResult) -> list[dict]:
    """:func:`export_frame` as JSON-ready dicts (NaN becomes None): ``result.records()``."""
    return result.records()


def stored_screen_frame(doc: Any) -> pd.DataFrame:
    """A stored screen's candidates (a ``ScreenDoc`` of :mod:`fh_screen.store`) with the columns, in
    the order, of the screen's own export.

    The columns of :func:`export_frame` of a screen come first in its order (``rank`` …
    ``refined``, ``known_source``, ``model``), any other stored field after them. A document
    written before candidates kept their ``model`` gets the screen's model on refined rows and
    none on the others (their prefilter was not recorded).
    """
    import pandas as pd

    frame = pd.DataFrame([c.model_dump() for c in doc.candidates])
    if frame.empty:
        return frame
    if MODEL_COLUMN not in frame.columns:
        refined = frame["refined"].astype(bool) if "refined" in frame.columns else True
        frame[MODEL_COLUMN] = np.where(refined, doc.model, None)
    first = [c for c in EXPORT_COLUMN_ORDER if c in frame.columns]
    return frame[first + [c for c in frame.columns if c not in first]]
