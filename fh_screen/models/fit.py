"""Training loop: RMSprop on mean absolute error, mini-batches, LR schedule, early stopping."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from fh_screen.errors import TrainingError
from fh_screen.models.mlp import NetworkSpec, build_network
from fh_screen.models.torch_threads import restores_torch_threads

logger = logging.getLogger(__name__)

__all__ = ["EpochRecord", "TrainConfig", "TrainedNetwork", "train_network"]


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser and schedule settings (defaults are those of the shipped model).

    ``schedule`` is ``plateau`` (halve the LR when validation MAE stalls) or ``cosine`` (anneal
    to ``min_learning_rate`` over ``epochs``); early stopping applies to both.
    """

    epochs: int = 400
    batch_size: int = 512
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    lr_factor: float = 0.5
    lr_patience: int = 8
    min_learning_rate: float = 1e-5
    early_stopping_patience: int = 30
    schedule: str = "plateau"
    seed: int = 0
    threads: int = 1
    max_minutes: float | None = None

    def as_dict(self) -> dict:
        """Plain-type dictionary for model cards."""
        return asdict(self)


@dataclass
class EpochRecord:
    """Losses after one epoch (MAE in eV/atom)."""

    epoch: int
    train_mae_ev_per_atom: float
    val_mae_ev_per_atom: float
    learning_rate: float
    seconds: float


@dataclass
class TrainedNetwork:
    """The best state (lowest validation MAE) and the history that led to it."""

    spec: NetworkSpec
    state_dict: dict
    target_mean_ev_per_atom: float
    target_std_ev_per_atom: float
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    best_val_mae_ev_per_atom: float = math.inf
    stopped_reason: str = ""


def _batched_predict(network, x, batch_size: int = 8192):
    import torch

    with torch.no_grad():
        return torch.cat([network(x[i:i + batch_size]).squeeze(-1) for i in range(0, len(x), batch_size)])


@restores_torch_threads
def train_network(
    x_train: np.ndarray,
    y_train_ev_per_atom: np.ndarray,
    x_val: np.ndarray,
    y_val_ev_per_atom: np.ndarray,
    spec: NetworkSpec,
    config: TrainConfig = TrainConfig(),
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> TrainedNetwork:
    """Train ``spec`` on fraction matrices; early-stop on validation MAE.

    Targets are standardised with the training mean/std; the L1 loss on standardised targets is
    the MAE up to the constant std. ``on_epoch`` is called after every epoch (progress bars).
    """
    import torch

    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)

    mean = float(np.mean(y_train_ev_per_atom))
    std = float(np.std(y_train_ev_per_atom)) or 1.0
    xt = torch.as_tensor(np.asarray(x_train, dtype=np.float32))
    yt = torch.as_tensor(((np.asarray(y_train_ev_per_atom) - mean) / std).astype(np.float32))
    xv = torch.as_tensor(np.asarray(x_val, dtype=np.float32))
    yv = torch.as_tensor(np.asarray(y_val_ev_per_atom, dtype=np.float32))

    network = build_network(spec)
    optimiser = torch.optim.RMSprop(network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    if config.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=config.epochs, eta_min=config.min_learning_rate)
    elif config.schedule == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimiser, factor=config.lr_factor, patience=config.lr_patience, min_lr=config.min_learning_rate
        )
    else:
        raise TrainingError(f"unknown LR schedule {config.schedule!r} (plateau or cosine)")
    loss_fn = torch.nn.L1Loss()
    result = TrainedNetwork(spec=spec, state_dict={}, target_mean_ev_per_atom=mean, target_std_ev_per_atom=std)
    started = time.perf_counter()
    epochs_since_best = 0
    for epoch in range(1, config.epochs + 1):
        tick = time.perf_counter()
        network.train()
        order = torch.as_tensor(rng.permutation(len(xt)))
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            batch = order[start:start + config.batch_size]
            optimiser.zero_grad(set_to_none=True)
            loss = loss_fn(network(xt[batch]).squeeze(-1), yt[batch])
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(batch)
        network.eval()
        val_pred = _batched_predict(network, xv) * std + mean
        val_mae = float((val_pred - yv).abs().mean())
        scheduler.step(val_mae) if config.schedule == "plateau" else scheduler.step()
        record = EpochRecord(
            epoch=epoch,
            train_mae_ev_per_atom=total / len(xt) * std,
            val_mae_ev_per_atom=val_mae,
            learning_rate=optimiser.param_groups[0]["lr"],
            seconds=time.perf_counter() - tick,
        )
        result.history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        if val_mae < result.best_val_mae_ev_per_atom:
            result.best_val_mae_ev_per_atom = val_mae
            result.best_epoch = epoch
            result.state_dict = {k: v.detach().clone() for k, v in network.state_dict().items()}
            epochs_since_best = 0
        else:
            epochs_since_best += 1
        if epochs_since_best >= config.early_stopping_patience:
            result.stopped_reason = f"no validation improvement for {epochs_since_best} epochs"
            break
        if config.max_minutes is not None and time.perf_counter() - started > 60 * config.max_minutes:
            result.stopped_reason = f"time limit of {config.max_minutes} min"
            break
    else:
        result.stopped_reason = f"reached {config.epochs} epochs"
    logger.info("best val MAE %.4f eV/atom at epoch %d (%s)", result.best_val_mae_ev_per_atom, result.best_epoch, result.stopped_reason)
    return result
