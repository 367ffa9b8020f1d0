"""Training loop of the attention network: AdamW, warm-up + cosine, L1 + Laplace NLL, EMA, resume.

The mean is trained on plain L1 (the MAE up to the target std); the σ head learns a Laplace
log-scale from the detached residual, so uncertainty never trades against accuracy. The
evaluated and saved weights are an exponential moving average of the trained ones. After every
epoch the whole training state (weights, EMA, optimiser, schedule position, history) is written
atomically to ``state_path``; calling again with the same arguments resumes from it and gives
the same result as an uninterrupted run (each epoch's batch order depends only on seed and epoch).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from fh_screen.errors import TrainingError
from fh_screen.models.attention import AttentionSpec, build_attention_network, laplace_nll
from fh_screen.io import atomic_write
from fh_screen.models.torch_threads import restores_torch_threads

logger = logging.getLogger(__name__)

__all__ = [
    "AttentionTrainConfig", "AttentionEpoch", "TrainedAttention", "add_config_arguments", "config_from_args",
    "train_attention_network",
]


@dataclass(frozen=True)
class AttentionTrainConfig:
    """Optimiser, schedule and run settings (defaults are the shipped model's).

    Each field's ``metadata["help"]`` documents it; :func:`add_config_arguments` turns the same
    text into the training scripts' ``--help``.
    """

    epochs: int = field(default=60, metadata={
        "help": "passes over the fit rows; training always runs all of them (no wall-clock or early stop)"})
    batch_size: int = field(default=512, metadata={"help": "rows per step, grouped by number of elements"})
    learning_rate: float = field(default=1.5e-3, metadata={
        "help": "peak AdamW learning rate, reached after the warm-up"})
    weight_decay: float = field(default=1e-4, metadata={
        "help": "AdamW weight decay of the weight matrices (not biases, norms or embeddings)"})
    warmup_fraction: float = field(default=0.05, metadata={
        "help": "fraction of all steps spent warming the learning rate up linearly"})
    final_lr_fraction: float = field(default=0.01, metadata={
        "help": "the cosine schedule ends at this fraction of the learning rate"})
    ema_decay: float = field(default=0.999, metadata={
        "help": "decay of the exponential moving average of the weights (the saved model)"})
    nll_weight: float = field(default=0.1, metadata={
        "help": "weight of the sigma head's Laplace NLL beside the L1 loss of the mean"})
    grad_clip: float = field(default=1.0, metadata={"help": "gradient-norm clip (0: none)"})
    seed: int = field(default=0, metadata={
        "help": "seed of initialisation and batch order (a member adds its number)"})
    threads: int = field(default=1, metadata={"help": "torch CPU threads"})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda"})

    def as_dict(self) -> dict:
        """Plain-type dictionary for model cards."""
        return asdict(self)

    def identity(self) -> dict:
        """The settings that change the result (device and threads do not, up to rounding)."""
        data = self.as_dict()
        data.pop("threads")
        data.pop("device")
        return data


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


@dataclass
class AttentionEpoch:
    """Losses after one epoch (MAE in eV/atom; ``holdout`` is the carve from train)."""

    epoch: int
    train_mae_ev_per_atom: float
    holdout_mae_ev_per_atom: float
    learning_rate: float
    seconds: float


@dataclass
class TrainedAttention:
    """The EMA weights after the last epoch and the history that led to them."""

    spec: AttentionSpec
    state_dict: dict
    target_mean_ev_per_atom: float
    target_std_ev_per_atom: float
    history: list[AttentionEpoch] = field(default_factory=list)
    stopped_reason: str = ""


def _learning_rate(config: AttentionTrainConfig, step: int, total_steps: int) -> float:
    warmup = max(1, int(config.warmup_fraction * total_steps))
    if step < warmup:
        return config.learning_rate * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    floor = config.final_lr_fraction
    return config.learning_rate * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def _batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled batches whose rows have similar numbers of elements (less padding)."""
    order = rng.permutation(len(lengths))
    chunk = batch_size * 64
    batches: list[np.ndarray] = []
    for start in range(0, len(order), chunk):
        block = order[start:start + chunk]
        block = block[np.argsort(lengths[block], kind="stable")]
        batches += [block[i:i + batch_size] for i in range(0, len(block), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def predict_attention(network, indices: np.ndarray, fractions: np.ndarray, batch_size: int = 8192, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """(mean, log-scale) in standardised units for set tensors, batched, no gradients."""
    import torch

    lengths = (fractions > 0).sum(axis=1)
    means = np.empty(len(indices), dtype=np.float32)
    logs = np.empty(len(indices), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(indices), batch_size):
            stop = start + batch_size
            width = max(1, int(lengths[start:stop].max(initial=1)))
            idx = torch.as_tensor(indices[start:stop, :width], device=device)
            frac = torch.as_tensor(fractions[start:stop, :width], device=device)
            mean, log_scale = network(idx, frac)
            means[start:stop] = mean.float().cpu().numpy()
            logs[start:stop] = log_scale.float().cpu().numpy()
    return means, logs


def _atomic_torch_save(payload: dict, path: Path) -> None:
    import torch

    atomic_write(path, lambda tmp: torch.save(payload, tmp))


@restores_torch_threads
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
    on_epoch: Callable[[AttentionEpoch], None] | None = None,
    stop_after_epochs: int | None = None,
) -> TrainedAttention:
    """Train one attention network for ``config.epochs`` epochs (resuming from ``state_path``).

    ``stop_after_epochs`` ends this call early (the state file stays resumable): used by tests
    of resuming and by callers that train in slices.
    """
    import torch

    torch.set_num_threads(config.threads)
    device = torch.device(config.device)
    mean = float(np.mean(y_ev_per_atom))
    std = float(np.std(y_ev_per_atom)) or 1.0
    idx_all = torch.as_tensor(np.asarray(indices, dtype=np.int64), device=device)
    frac_all = torch.as_tensor(np.asarray(fractions, dtype=np.float32), device=device)
    y_all = torch.as_tensor(((np.asarray(y_ev_per_atom) - mean) / std).astype(np.float32), device=device)
    lengths = (np.asarray(fractions) > 0).sum(axis=1)

    torch.manual_seed(config.seed)
    network = build_attention_network(spec, element_vectors).to(device)
    ema = copy.deepcopy(network)
    for parameter in ema.parameters():
        parameter.requires_grad_(False)
    decay, no_decay = [], []
    for name, parameter in network.named_parameters():
        (no_decay if parameter.ndim < 2 or "embedding" in name else decay).append(parameter)
    optimiser = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.learning_rate,
    )
    steps_per_epoch = len(_batches(lengths, config.batch_size, np.random.default_rng(0)))
    total_steps = steps_per_epoch * config.epochs
    result = TrainedAttention(spec=spec, state_dict={}, target_mean_ev_per_atom=mean, target_std_ev_per_atom=std)
    start_epoch = 1
    state_path = Path(state_path) if state_path else None
    if state_path is not None and state_path.is_file():
        state = torch.load(state_path, map_location=device, weights_only=True)
        if state.get("spec") != spec.as_dict() or state.get("config") != config.identity() or state.get("n_rows") != len(y_all):
            raise TrainingError(f"training state {state_path} belongs to another run (spec, settings or data differ)")
        ema.load_state_dict(state["ema"])
        result.history = [AttentionEpoch(**record) for record in state["history"]]
        start_epoch = int(state["epoch"]) + 1
        if start_epoch <= config.epochs:  # a finished member keeps only its EMA weights and history
            network.load_state_dict(state["network"])
            optimiser.load_state_dict(state["optimiser"])
        logger.info("resuming %s at epoch %d", state_path, start_epoch)

    ema_decay = config.ema_decay
    ema_parameters, train_parameters = list(ema.parameters()), list(network.parameters())
    epochs_run = 0
    for epoch in range(start_epoch, config.epochs + 1):
        if stop_after_epochs is not None and epochs_run >= stop_after_epochs:
            result.stopped_reason = f"paused after {epochs_run} epochs (resumable)"
            break
        tick = time.perf_counter()
        network.train()
        rng = np.random.default_rng([config.seed, epoch])
        total, count = torch.zeros((), device=device), 0  # summed on the device: no sync per step
        for number, batch in enumerate(_batches(lengths, config.batch_size, rng)):
            step = (epoch - 1) * steps_per_epoch + number
            for group in optimiser.param_groups:
                group["lr"] = _learning_rate(config, step, total_steps)
            width = int(lengths[batch].max())
            rows = torch.as_tensor(batch, device=device)
            target = y_all[rows]
            predicted, log_scale = network(idx_all[rows, :width], frac_all[rows, :width])
            l1 = (predicted - target).abs()
            loss = l1.mean() + config.nll_weight * laplace_nll(target, predicted.detach(), log_scale).mean()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(network.parameters(), config.grad_clip)
            optimiser.step()
            with torch.no_grad():
                warm = min(ema_decay, (1 + step) / (10 + step))
                torch._foreach_lerp_(ema_parameters, train_parameters, 1 - warm)
            total += l1.detach().sum()
            count += len(batch)
        ema.eval()
        held_mean, _ = predict_attention(ema, holdout_indices, holdout_fractions, device=str(device))
        holdout_mae = float(np.mean(np.abs(held_mean * std + mean - holdout_y_ev_per_atom)))
        record = AttentionEpoch(epoch, float(total) / max(count, 1) * std, holdout_mae, optimiser.param_groups[0]["lr"], time.perf_counter() - tick)
        result.history.append(record)
        epochs_run += 1
        if on_epoch is not None:
            on_epoch(record)
        logger.info("epoch %d: train %.4f holdout %.4f eV/atom (%.1f s)", epoch, record.train_mae_ev_per_atom, holdout_mae, record.seconds)
        if state_path is not None:
            _atomic_torch_save({
                "spec": spec.as_dict(), "config": config.identity(), "n_rows": len(y_all), "epoch": epoch,
                "network": network.state_dict(), "ema": ema.state_dict(), "optimiser": optimiser.state_dict(),
                "history": [asdict(r) for r in result.history],
            }, state_path)
    else:
        result.stopped_reason = f"reached {config.epochs} epochs"
    result.state_dict = {k: v.detach().cpu().clone() for k, v in ema.state_dict().items()}
    return result
