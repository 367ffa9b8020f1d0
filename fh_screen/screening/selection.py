"""The one selection rule: which rows of a screen are worth a DFT calculation.

:func:`selection_mask` marks a screen table's ``selected`` column (:func:`fh_screen.screening.core.screen`);
:func:`short_list` picks from those the rows handed on to structures and DFT
(:meth:`fh_screen.store.documents.ScreenDoc.select`, the jobs). No other module decides either.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from fh_screen.screening.options import ScreenOptions

__all__ = ["selection_mask", "short_list"]


def selection_mask(table: pd.DataFrame, options: ScreenOptions = ScreenOptions()) -> np.ndarray:
    """The short list worth a DFT calculation: ``selected`` of the table.

    With ``options.dft_budget = N``: the ``N`` new candidates of highest ``p_stable`` (the most
    expected discoveries for ``N`` calculations). Otherwise: every new candidate with
    ``p_stable >= options.select_p_min``. Either way only new compositions with predicted
    ΔH_f < 0 and E_hull <= ``options.select_e_hull_max_ev_per_atom`` qualify. ``table`` needs
    ``is_known``, ``p_stable``, ``dhf_pred_ev_per_atom`` and ``e_above_hull_pred_ev_per_atom``.
    """
    p = np.nan_to_num(table["p_stable"].to_numpy(np.float64), nan=0.0)
    eligible = (
        ~table["is_known"].to_numpy(bool)
        & (table["dhf_pred_ev_per_atom"].to_numpy() < 0)
        & (table["e_above_hull_pred_ev_per_atom"].to_numpy() <= options.select_e_hull_max_ev_per_atom)
    )
    if options.dft_budget is None:
        return eligible & (p >= options.select_p_min)
    chosen = np.zeros(len(table), dtype=bool)
    candidates = np.flatnonzero(eligible)
    best = candidates[np.argsort(-p[candidates], kind="stable")[: options.dft_budget]]
    chosen[best] = True
    return chosen


def short_list(
    ranks: Sequence[int],
    is_known: Sequence[bool],
    selected: Sequence[bool],
    n_elements: Sequence[int],
    e_above_hull_ev_per_atom: Sequence[float | None],
    *,
    top_n: int | None = 5,
    e_hull_max_ev_per_atom: float | None = None,
    select_known: bool = False,
) -> list[int]:
    """Positions of the rows to hand on (to structures and DFT), best rank first.

    The screen's best new candidates (``selected``: the rule of :func:`selection_mask`, so never
    a predicted ΔH_f >= 0), plus known compositions when ``select_known``; of at least two
    elements, with energy above the hull ≤ ``e_hull_max_ev_per_atom`` (when given), the best
    ``top_n`` (when given). :meth:`fh_screen.store.documents.ScreenDoc.select` applies it.
    """
    chosen: list[int] = []
    for i in sorted(range(len(ranks)), key=lambda i: ranks[i]):
        if top_n is not None and len(chosen) >= top_n:
            break
        if (is_known[i] and not select_known) or n_elements[i] < 2:
            continue
        if not is_known[i] and not selected[i]:
            continue
        e_hull = e_above_hull_ev_per_atom[i]
        if e_hull_max_ev_per_atom is not None and (e_hull is None or e_hull > e_hull_max_ev_per_atom):
            continue
        chosen.append(i)
    return chosen
