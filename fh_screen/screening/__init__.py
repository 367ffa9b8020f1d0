"""Screen a chemical system: enumerate, predict, place on the hull of the known phases, rank, select.

Owns the pure screen and nothing that saves: :mod:`~fh_screen.screening.options` (what to
enumerate, limits), :mod:`~fh_screen.screening.probability` (the stability prior and the ranking
score), :mod:`~fh_screen.screening.stability` (P(stable): per-candidate features and the
learned classifier), :mod:`~fh_screen.screening.selection` (the one rule for ``selected``),
:mod:`~fh_screen.screening.core` (:func:`screen` itself) and :mod:`~fh_screen.screening.result`
(:class:`ScreenResult` and its columns)::

    from fh_screen.screening import screen, ScreenOptions
    result = screen("Li-Fe-P-O", known=reference_frame)   # known: formula, dhf_ev_per_atom

May import: :mod:`fh_screen.models`, :mod:`fh_screen.chem`, :mod:`fh_screen.data`,
:mod:`fh_screen.errors`, :mod:`fh_screen.run_ids`, :mod:`fh_screen.defaults` (the shared
defaults, re-exported); never ``store``, ``study``, ``jobs``, ``cli``
or ``plotting`` (figures of a result: :func:`fh_screen.plotting.plot_screen`).
"""

from fh_screen.chem.oxidation import charge_balanced
from fh_screen.screening.core import (
    MAX_HULL_PROGRAMMES,
    candidates_by_size,
    check_size,
    hull_programmes,
    known_counts,
    screen,
    table_order,
)
from fh_screen.screening.options import DEFAULT_MAX_CANDIDATES, DEFAULT_SELECT_P_MIN, ScreenError, ScreenOptions
from fh_screen.screening.result import RESULT_COLUMNS, ScreenResult
from fh_screen.screening.selection import selection_mask

__all__ = [
    "DEFAULT_MAX_CANDIDATES",
    "DEFAULT_SELECT_P_MIN",
    "MAX_HULL_PROGRAMMES",
    "RESULT_COLUMNS",
    "ScreenError",
    "ScreenOptions",
    "ScreenResult",
    "candidates_by_size",
    "charge_balanced",
    "check_size",
    "hull_programmes",
    "known_counts",
    "screen",
    "selection_mask",
    "table_order",
]
