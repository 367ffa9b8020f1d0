"""Earlier home of the fully connected training pipeline; it is now part of the one orchestrator.

Everything here is :mod:`fh_screen.models.train` (carve → fit members → calibrate → card, for
every architecture); this module only re-exports its names, so
``from fh_screen.models.training import …`` keeps working.
"""

from __future__ import annotations

from fh_screen.models.train import (
    TrainingRun,
    calibrate_on_early_stopping_split,
    train_model,
    val_metrics,
    write_attention_card,
    write_card_files,
    write_model_card,
)

__all__ = ["TrainingRun", "calibrate_on_early_stopping_split", "train_model", "val_metrics",
           "write_attention_card", "write_card_files", "write_model_card"]
