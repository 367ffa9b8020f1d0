"""The one selection rule: which rows of a screen table are the short list (``selected``).

The screen (:func:`fh_screen.screening.core.screen`) and the stored screen document
(:meth:`fh_screen.store.documents.ScreenDoc.select`) both apply :func:`selection_mask`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fh_screen.screening.options import ScreenOptions

__all__ = ["selection_mask"]


def selection_mask(table: pd.DataFrame, options: ScreenOptions = ScreenOptions()) -> np.ndarray:
    """The "best new candidates": new compositions with ΔH_f < 0 not far above the known hull.

    ``table`` needs ``is_known``, ``dhf_pred_ev_per_atom`` and ``e_above_hull_pred_ev_per_atom``;
    the window is ``options.select_e_hull_max_ev_per_atom``.
    """
    return (
        ~table["is_known"].to_numpy(bool)
        & (table["dhf_pred_ev_per_atom"].to_numpy() < 0)
        & (table["e_above_hull_pred_ev_per_atom"].to_numpy() <= options.select_e_hull_max_ev_per_atom)
    )
