"""The screen's default numbers that every door shares (CLI options, ``ScreenOptions``, Makers).

A leaf module: it imports nothing, so the command line can show them in its help without
loading pandas, torch or pymatgen. :mod:`fh_screen.screening` re-exports each under its
old name (``fh_screen.screening.options.DEFAULT_SELECT_P_MIN``, ...).
"""

from __future__ import annotations

__all__ = ["DEFAULT_PREFILTER_MODEL", "DEFAULT_REFINE_TOP", "DEFAULT_SELECT_P_MIN"]

#: ``selected`` (without a DFT budget): new candidates with at least this ``p_stable``; the short
#: list a chemist would sign (chosen on val by ``fh-screen evaluate --study claims``, docs/claims.md).
DEFAULT_SELECT_P_MIN = 0.3

#: New candidates the default (attention) model predicts after the fast prefilter has ranked all
#: of them by its score; P(stable), fitted on this cascade, may still rank a row only the prefilter
#: predicted above them (``refined`` False, σ null).
#: The rediscovery test (``docs/evaluation.md``) measured 50, 100, 200, 300, 500, 1,000 and every
#: candidate: the cascade rows agree within their noise on two seeds' samples of systems (and are
#: no worse than the ensemble on every candidate), while a warm quaternary screen spends about
#: 0.1 s in the default model instead of ~4.5 s.
DEFAULT_REFINE_TOP = 100

#: The fast model that ranks every candidate before a slow model refines the best of them. The
#: single ``paper`` network (about 1.3 million candidates/s) finds the hidden stable compounds as
#: well as ``paper-ensemble`` (8× slower) does: recall@10 0.340 vs 0.324 (``docs/evaluation.md``).
DEFAULT_PREFILTER_MODEL = "paper"
