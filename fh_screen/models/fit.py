"""The one training loop: every architecture trains through :func:`fit`.

An architecture differs in its module, not in the loop: it hands :func:`fit` a *recipe*
(:class:`Recipe`; :class:`~fh_screen.models.mlp.MlpRecipe`,
:class:`~fh_screen.models.attention.AttentionRecipe`) that builds its network and optimiser and
says how a batch is drawn and scored, how the learning rate moves and which weights are
evaluated and kept. The loop owns what every architecture shares: threads and seeding, target
standardisation, epochs and steps, gradient steps (with an optional clip), the per-epoch MAE on
the held-out carve, the history, keeping the best or the last weights, early stopping, a
wall-clock limit, a resumable state file and the progress callback.

:func:`train_network` and :func:`train_attention_network` are the loop with each shipped
architecture's recipe.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from fh_screen.errors import TrainingError
from fh_screen.io import atomic_write
from fh_screen.models.attention import AttentionRecipe, AttentionSpec, AttentionTrainConfig, predict_attention
from fh_screen.models.mlp import MlpRecipe, NetworkSpec, TrainConfig
from fh_screen.models.torch_threads import restores_torch_threads

logger = logging.getLogger(__name__)

__all__ = [
    "AttentionEpoch", "AttentionTrainConfig", "EpochRecord", "FitData", "Recipe", "TrainConfig", "TrainedAttention",
    "TrainedNetwork", "add_config_arguments", "config_from_args", "fit", "predict_attention", "train_attention_network",
    "train_network",
]


@dataclass
class FitData:
    """Row-aligned training inputs and targets, and the held-out carve that scores every epoch.

    ``inputs`` are what the architecture reads: ``(fraction_matrix,)`` for the fully connected
    networks, ``(indices, fractions)`` set tensors for attention.
    """

    inputs: tuple[np.ndarray, ...]
    y_ev_per_atom: np.ndarray
    holdout_inputs: tuple[np.ndarray, ...]
    holdout_y_ev_per_atom: np.ndarray


@dataclass
class EpochRecord:
    """Losses after one epoch (MAE in eV/atom; ``val`` is the held-out carve of the training file)."""

    epoch: int
    train_mae_ev_per_atom: float
    val_mae_ev_per_atom: float
    learning_rate: float
    seconds: float

    @property
    def holdout_mae_ev_per_atom(self) -> float:
        """The same as :attr:`val_mae_ev_per_atom` (the attention pipeline's name for the carve)."""
        return self.val_mae_ev_per_atom

    @classmethod
    def from_dict(cls, data: dict) -> EpochRecord:
        """Inverse of ``asdict``; reads state files that named the MAE ``holdout_mae_ev_per_atom``."""
        data = dict(data)
        if "holdout_mae_ev_per_atom" in data:
            data["val_mae_ev_per_atom"] = data.pop("holdout_mae_ev_per_atom")
        return cls(**data)


@dataclass
class TrainedNetwork:
    """The kept weights (the best epoch's or the last's, as the recipe says) and the history."""

    spec: NetworkSpec | AttentionSpec
    state_dict: dict
    target_mean_ev_per_atom: float
    target_std_ev_per_atom: float
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    best_val_mae_ev_per_atom: float = math.inf
    stopped_reason: str = ""


#: Earlier names of the attention loop's record and result: the same classes.
AttentionEpoch = EpochRecord
TrainedAttention = TrainedNetwork


class Recipe(Protocol):
    """What an architecture supplies to :func:`fit`.

    Attributes: ``spec`` and ``config`` (with ``epochs``, ``seed``, ``threads``); ``device``;
    ``keep`` (``"best"``: the weights of the lowest held-out MAE, or ``"last"``); ``patience``
    (epochs without improvement before stopping, or None); ``max_minutes`` (or None);
    ``grad_clip`` (0: none); ``resumable``; and, after :meth:`start`, ``network`` (trained),
    ``evaluated`` (scored and kept: the network or its EMA), ``optimiser`` and ``steps_per_epoch``.
    A ``resumable`` recipe also has ``identity()`` (what a state file must match),
    ``extra_state()`` and ``load_extra_state(state)`` (e.g. its EMA weights).
    """

    spec: Any
    config: Any
    device: str
    keep: str
    patience: int | None
    max_minutes: float | None
    grad_clip: float
    resumable: bool

    def start(self, data: FitData, mean: float, std: float, device) -> None:
        """Build network, optimiser and tensors (torch is already seeded); targets standardised by mean/std."""

    def batches(self, epoch: int) -> list:
        """The row batches of ``epoch`` (1-based), in training order."""

    def learning_rate(self, step: int) -> float | None:
        """The LR for global step ``step`` (0-based), or None where the recipe moves it per epoch."""

    def loss(self, batch) -> tuple[Any, Any]:
        """(loss tensor to minimise, the batch's summed absolute error in standardised units)."""

    def after_step(self, step: int) -> None:
        """After each optimiser step (e.g. an EMA update)."""

    def holdout_mae(self) -> float:
        """MAE (eV/atom) of ``evaluated`` on the held-out rows."""

    def after_epoch(self, holdout_mae: float) -> None:
        """After each epoch's evaluation (e.g. a plateau schedule)."""


def _clone(state: dict) -> dict:
    return {k: v.detach().cpu().clone() for k, v in state.items()}


@restores_torch_threads
def fit(
    recipe: Recipe,
    data: FitData,
    *,
    state_path: str | Path | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    stop_after_epochs: int | None = None,
) -> TrainedNetwork:
    """Train one network of ``recipe`` on ``data``; score every epoch on the held-out carve.

    Targets are standardised with the training mean and std. With ``state_path`` (recipes that
    are ``resumable``) the whole training state is written atomically after every epoch and a
    later call with the same arguments resumes from it; ``stop_after_epochs`` ends this call
    early, the state file staying resumable. ``on_epoch`` is called after every epoch.
    """
    import torch

    config = recipe.config
    torch.set_num_threads(config.threads)
    device = torch.device(recipe.device)
    y = np.asarray(data.y_ev_per_atom)
    mean = float(np.mean(y))
    std = float(np.std(y)) or 1.0
    torch.manual_seed(config.seed)
    recipe.start(data, mean, std, device)
    network, optimiser = recipe.network, recipe.optimiser
    result = TrainedNetwork(spec=recipe.spec, state_dict={}, target_mean_ev_per_atom=mean, target_std_ev_per_atom=std)

    start_epoch = 1
    state_path = Path(state_path) if state_path else None
    if state_path is not None and not recipe.resumable:
        raise TrainingError(f"{type(recipe).__name__} trainings cannot resume: train without a state file")
    if state_path is not None and state_path.is_file():
        state = torch.load(state_path, map_location=device, weights_only=True)
        if any(state.get(k) != v for k, v in recipe.identity().items()) or state.get("n_rows") != len(y):
            raise TrainingError(f"training state {state_path} belongs to another run (spec, settings or data differ)")
        recipe.load_extra_state(state)
        result.history = [EpochRecord.from_dict(record) for record in state["history"]]
        start_epoch = int(state["epoch"]) + 1
        if start_epoch <= config.epochs:  # a finished member keeps only its kept weights and history
            network.load_state_dict(state["network"])
            optimiser.load_state_dict(state["optimiser"])
        logger.info("resuming %s at epoch %d", state_path, start_epoch)

    started = time.perf_counter()
    epochs_since_best = 0
    epochs_run = 0
    for epoch in range(start_epoch, config.epochs + 1):
        if stop_after_epochs is not None and epochs_run >= stop_after_epochs:
            result.stopped_reason = f"paused after {epochs_run} epochs (resumable)"
            break
        tick = time.perf_counter()
        network.train()
        total, count = 0.0, 0
        for number, batch in enumerate(recipe.batches(epoch)):
            step = (epoch - 1) * recipe.steps_per_epoch + number
            learning_rate = recipe.learning_rate(step)
            if learning_rate is not None:
                for group in optimiser.param_groups:
                    group["lr"] = learning_rate
            loss, absolute_error = recipe.loss(batch)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            if recipe.grad_clip:
                torch.nn.utils.clip_grad_norm_(network.parameters(), recipe.grad_clip)
            optimiser.step()
            recipe.after_step(step)
            total = total + absolute_error  # a tensor stays on the device: no sync per step
            count += len(batch)
        recipe.evaluated.eval()
        holdout_mae = recipe.holdout_mae()
        recipe.after_epoch(holdout_mae)
        record = EpochRecord(epoch, float(total) / max(count, 1) * std, holdout_mae, optimiser.param_groups[0]["lr"],
                             time.perf_counter() - tick)
        result.history.append(record)
        epochs_run += 1
        if on_epoch is not None:
            on_epoch(record)
        logger.debug("epoch %d: train %.4f held-out %.4f eV/atom (%.1f s)", epoch, record.train_mae_ev_per_atom, holdout_mae, record.seconds)
        if holdout_mae < result.best_val_mae_ev_per_atom:
            result.best_val_mae_ev_per_atom = holdout_mae
            result.best_epoch = epoch
            epochs_since_best = 0
            if recipe.keep == "best":
                result.state_dict = _clone(recipe.evaluated.state_dict())
        else:
            epochs_since_best += 1
        if state_path is not None:
            payload = {**recipe.identity(), "n_rows": len(y), "epoch": epoch, "network": network.state_dict(),
                       **recipe.extra_state(), "optimiser": optimiser.state_dict(), "history": [asdict(r) for r in result.history]}
            atomic_write(state_path, lambda tmp: torch.save(payload, tmp))
        if recipe.patience is not None and epochs_since_best >= recipe.patience:
            result.stopped_reason = f"no validation improvement for {epochs_since_best} epochs"
            break
        if recipe.max_minutes is not None and time.perf_counter() - started > 60 * recipe.max_minutes:
            result.stopped_reason = f"time limit of {recipe.max_minutes} min"
            break
    else:
        result.stopped_reason = f"reached {config.epochs} epochs"
    if recipe.keep == "last":
        result.state_dict = _clone(recipe.evaluated.state_dict())
    logger.info("best held-out MAE %.4f eV/atom at epoch %d (%s)", result.best_val_mae_ev_per_atom, result.best_epoch, result.stopped_reason)
    return result


def train_network(
    x_train: np.ndarray,
    y_train_ev_per_atom: np.ndarray,
    x_val: np.ndarray,
    y_val_ev_per_atom: np.ndarray,
    spec: NetworkSpec,
    config: TrainConfig = TrainConfig(),
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> TrainedNetwork:
    """:func:`fit` of a fully connected ``spec`` on fraction matrices; early-stops on the ``x_val`` MAE."""
    return fit(MlpRecipe(spec, config), FitData((x_train,), y_train_ev_per_atom, (x_val,), y_val_ev_per_atom), on_epoch=on_epoch)


def train_attention_network(
    indices: np.ndarray,
    fractions: np.ndarray,
    y_ev_per_atom: np.ndarray,
    holdout_indices: np.ndarray,
    holdout_fractions: np.ndarray,
    holdout_y_ev_per_atom: np.ndarray,
    spec: AttentionSpec,
    config: AttentionTrainConfig = AttentionTrainConfig(),
    *,
    element_vectors: np.ndarray | None = None,
    state_path: str | Path | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    stop_after_epochs: int | None = None,
) -> TrainedNetwork:
    """:func:`fit` of one attention network on set tensors for ``config.epochs`` epochs (resuming from ``state_path``)."""
    data = FitData((indices, fractions), y_ev_per_atom, (holdout_indices, holdout_fractions), holdout_y_ev_per_atom)
    return fit(AttentionRecipe(spec, config, element_vectors), data, state_path=state_path, on_epoch=on_epoch,
               stop_after_epochs=stop_after_epochs)


def add_config_arguments(parser: argparse.ArgumentParser, config_class: type, names: Sequence[str]) -> None:
    """Add a ``--flag-name`` option per named field of a settings dataclass.

    Each option takes the field's default, the default's type (``int``, ``float`` or ``str``) and
    the field's ``metadata["help"]``; read the values back with :func:`config_from_args`.

    Parameters
    ----------
    parser
        The parser to extend.
    config_class
        A dataclass whose named fields have plain defaults, e.g. :class:`AttentionTrainConfig`.
    names
        The fields to expose, in ``--help`` order (``batch_size`` becomes ``--batch-size``).
    """
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    for name in names:
        default = fields[name].default
        if type(default) not in (int, float, str):
            raise TypeError(f"{config_class.__name__}.{name}: no command-line type for a {type(default).__name__} default")
        parser.add_argument(
            "--" + name.replace("_", "-"), type=type(default), default=default,
            help=fields[name].metadata.get("help", "") + " (default: %(default)s)",
        )


def config_from_args(args: argparse.Namespace, config_class: type, names: Sequence[str], **overrides):
    """The ``config_class`` instance of the options :func:`add_config_arguments` added, plus ``overrides``.

    Parameters
    ----------
    args
        Parsed arguments.
    config_class
        The dataclass the options came from.
    names
        The fields given to :func:`add_config_arguments`.
    **overrides
        Further fields, e.g. ones the caller parses itself.
    """
    return config_class(**{name: getattr(args, name) for name in names}, **overrides)
