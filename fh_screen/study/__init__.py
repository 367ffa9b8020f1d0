"""Studies of the models and the screen, and the builders of shipped artefacts.

Owns :mod:`~fh_screen.study.evaluation` (accuracy, hull classification, rediscovery and its one
draw of systems, calibration), :mod:`~fh_screen.study.claims` (the P(stable) claims study),
:mod:`~fh_screen.study.campaign` (the simulated discovery campaign),
:mod:`~fh_screen.study.seed_study` (the ElemNet seed study: cross-validation, data size,
architecture, overfitting) and :mod:`~fh_screen.study.prior` (the builder of the shipped
stability prior).

May import the core (:mod:`fh_screen.store`, :mod:`fh_screen.screening`, :mod:`fh_screen.models`,
:mod:`fh_screen.chem`, :mod:`fh_screen.data`, :mod:`fh_screen.io`, :mod:`fh_screen.errors`); the
core never imports the study. Only ``cli`` and scripts import it.
"""
