"""The models: composition (element counts) → ΔH_f and its spread σ.

Owns one :class:`~fh_screen.models.ensemble.Model` protocol (counts → mean ΔH_f and σ) with one
inference path per architecture behind it (:mod:`~fh_screen.models.ensemble`, using the stacked
fast paths :mod:`~fh_screen.models.stacked` and :mod:`~fh_screen.models.attention_inference`);
the architectures, each with its training recipe (:mod:`~fh_screen.models.mlp`,
:mod:`~fh_screen.models.attention`); the one training loop (:mod:`~fh_screen.models.fit`) and the
one orchestrator, carve → fit members → calibrate → card (:mod:`~fh_screen.models.train`); the
one checkpoint format (:mod:`~fh_screen.models.checkpoint`); the
:class:`~fh_screen.models.predictor.Predictor` and the registry of shipped models (weights and
cards in ``fh_screen/pretrained/<name>/``, or ``FH_SCREEN_MODEL_DIR``); σ calibration
(:mod:`~fh_screen.models.calibration`) and the one metrics function
(:mod:`~fh_screen.models.metrics`).

May import: :mod:`fh_screen.chem`, :mod:`fh_screen.data`, :mod:`fh_screen.io`,
:mod:`fh_screen.errors`, :mod:`fh_screen.settings`; never ``screening``, ``store``, ``study``,
``jobs``, ``cli`` or ``plotting``.
"""
