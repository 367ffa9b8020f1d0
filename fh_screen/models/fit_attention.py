"""Earlier home of the attention training loop; the names now live where they belong.

The loop is :func:`fh_screen.models.fit.fit` (one for every architecture); the attention
architecture's training settings and recipe are in :mod:`fh_screen.models.attention`. This module
only re-exports them, so ``from fh_screen.models.fit_attention import …`` keeps working.
"""

from __future__ import annotations

from fh_screen.models.attention import AttentionTrainConfig, predict_attention
from fh_screen.models.fit import (
    AttentionEpoch,
    TrainedAttention,
    add_config_arguments,
    config_from_args,
    train_attention_network,
)

__all__ = [
    "AttentionTrainConfig", "AttentionEpoch", "TrainedAttention", "add_config_arguments", "config_from_args",
    "predict_attention", "train_attention_network",
]
