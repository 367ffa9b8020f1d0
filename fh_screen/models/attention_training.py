"""Earlier home of the attention training pipeline; it is now part of the one orchestrator.

Everything here is :mod:`fh_screen.models.train` (carve → fit members → calibrate → card, for
every architecture); this module only re-exports its names, so
``from fh_screen.models.attention_training import …`` keeps working.
"""

from __future__ import annotations

from fh_screen.models.calibration import TARGET_COVERAGE
from fh_screen.models.train import (
    DEFAULT_RECIPE,
    MODEL_VERSION,
    AttentionData,
    EnsembleMember,
    assemble_attention_model,
    calibrate_sigma_scale,
    parse_recipe,
    prepare_attention_data,
    run_attention_training,
    train_attention_members,
)

__all__ = [
    "DEFAULT_RECIPE", "MODEL_VERSION", "TARGET_COVERAGE", "AttentionData", "EnsembleMember", "assemble_attention_model",
    "calibrate_sigma_scale", "parse_recipe", "prepare_attention_data", "run_attention_training",
    "train_attention_members",
]
