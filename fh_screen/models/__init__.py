"""The models: composition (element counts) → ΔH_f and its spread σ.

Owns the architectures (:mod:`~fh_screen.models.mlp`, :mod:`~fh_screen.models.attention`), their
stacked ensemble inference (:mod:`~fh_screen.models.stacked`,
:mod:`~fh_screen.models.attention_inference`), the one checkpoint format
(:mod:`~fh_screen.models.checkpoint`), the :class:`~fh_screen.models.predictor.Predictor` and the
registry of shipped models (their weights and cards live in ``fh_screen/pretrained/<name>/``), training loops
(:mod:`~fh_screen.models.fit`, :mod:`~fh_screen.models.fit_attention`), the training
orchestrators (:mod:`~fh_screen.models.training`, :mod:`~fh_screen.models.attention_training`)
and σ calibration (:mod:`~fh_screen.models.calibration`).

May import: :mod:`fh_screen.chem`, :mod:`fh_screen.data`, :mod:`fh_screen.io`,
:mod:`fh_screen.errors`, :mod:`fh_screen.settings`; never ``screening``, ``store``, ``study``,
``jobs``, ``cli`` or ``plotting``.
"""
