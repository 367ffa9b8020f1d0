"""Attention over the elements present (CrabNet/Roost style) with a mean and a σ head.

A composition is a set of (element, fraction) pairs. Each element starts from a fixed
mat2vec-style vector (matminer's ``MatscholarElementData``, 200-d) projected to ``d_model`` plus a
learned per-element correction; its fraction enters through a smooth encoding (sines of the
fraction and of its logarithm) added to that vector. A few pre-norm transformer layers let every
element see the others; a fraction-weighted mean of the element states feeds a small MLP that
returns the ΔH_f mean and a log-scale (σ) of a Laplace distribution, both in standardised units.

The element table is a buffer of the module, so a checkpoint is self-contained: loading needs
neither matminer nor the internet.

:class:`AttentionRecipe` is how this architecture trains in the one loop of
:mod:`fh_screen.models.fit`: AdamW, warm-up + cosine, L1 + Laplace NLL, an exponential moving
average of the weights (the evaluated and saved ones), resumable from a state file.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from fh_screen.errors import TrainingError

__all__ = [
    "AttentionRecipe",
    "AttentionSpec",
    "AttentionTrainConfig",
    "ATTENTION_PRESETS",
    "predict_attention",
    "build_attention_network",
    "element_table",
    "set_tensors",
]


@dataclass(frozen=True)
class AttentionSpec:
    """Hyper-parameters of :class:`ElementAttentionNet` (``kind`` tells checkpoints apart)."""

    #: width of every element token
    d_model: int = 128
    #: pre-norm transformer blocks
    n_layers: int = 3
    #: attention heads per block (``d_model`` must divide by it)
    n_heads: int = 4
    #: hidden width of each block's feed-forward layer
    d_ff: int = 256
    #: hidden width of the readout MLP (its second layer has half of it)
    d_head_hidden: int = 256
    #: element slots, H onwards by atomic number (94: H–Pu)
    n_elements: int = 94
    #: fixed element vectors: ``mat2vec`` (matminer MatscholarElementData) or ``none``
    element_features: str = "mat2vec"
    #: sine/cosine frequencies of the fraction encoding
    n_frequencies: int = 16
    #: tells attention checkpoints from fully connected ones
    kind: str = "attention"
    #: dropout on each block's residual branches while training (inference never drops)
    dropout: float = 0.0

    def as_dict(self) -> dict:
        """Plain-type dictionary for checkpoints and model cards.

        ``dropout`` is left out at 0, so specs written before it existed keep their identity.
        """
        data = asdict(self)
        if not data["dropout"]:
            del data["dropout"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> AttentionSpec:
        """Inverse of :meth:`as_dict` (unknown keys are an error)."""
        casts = {"int": int, "str": str, "float": float}
        types = {f.name: casts[str(f.type)] for f in fields(cls)}
        unknown = set(data) - set(types)
        if unknown:
            raise TypeError(f"unknown attention spec keys: {', '.join(sorted(unknown))}")
        return cls(**{k: types[k](v) for k, v in data.items()})

    @property
    def n_element_slots(self) -> int:
        """Element columns the network reads (its element table, padding aside)."""
        return self.n_elements

    def build_trained(self, state: dict):
        """The module of this spec holding a trained ``state`` dict (element table included), in eval mode."""
        network = build_attention_network(self, np.zeros(tuple(state["element_vectors"].shape), dtype=np.float32))
        network.load_state_dict(state)
        return network.eval()

    @property
    def label(self) -> str:
        """Short human label, e.g. ``attention d128 L3 h4 ff256``."""
        label = f"attention d{self.d_model} L{self.n_layers} h{self.n_heads} ff{self.d_ff}"
        return f"{label} dropout {self.dropout:g}" if self.dropout else label


#: Named attention architectures. ``attention`` is the shipped default's member.
ATTENTION_PRESETS: dict[str, AttentionSpec] = {
    "attention": AttentionSpec(),
    "attention-small": AttentionSpec(d_model=64, n_layers=2, n_heads=4, d_ff=128, d_head_hidden=128),
    "attention-large": AttentionSpec(d_model=256, n_layers=3, n_heads=8, d_ff=512, d_head_hidden=512),
    "attention-dropout": AttentionSpec(dropout=0.1),
    "attention-large-dropout": AttentionSpec(d_model=256, n_layers=3, n_heads=8, d_ff=512, d_head_hidden=512, dropout=0.1),
}


def element_table(elements: tuple[str, ...] | list[str], source: str = "mat2vec") -> np.ndarray:
    """Fixed element vectors, one row per element (row 0 is padding), standardised per column.

    ``source`` is ``mat2vec`` (matminer ``MatscholarElementData``, 200-d) or ``none`` (a zero
    column: the learned embedding alone).
    """
    if source == "none":
        return np.zeros((len(elements) + 1, 1), dtype=np.float32)
    if source != "mat2vec":
        raise TrainingError(f"unknown element features {source!r} (mat2vec or none)")
    from matminer.utils.data import MatscholarElementData

    source_data = MatscholarElementData()
    names = list(source_data.prop_names)
    table = source_data.all_element_data
    rows = np.array([[table[s][n] for n in names] if s in table else np.zeros(len(names)) for s in elements], dtype=np.float64)
    rows = (rows - rows.mean(axis=0)) / (rows.std(axis=0) + 1e-8)
    return np.vstack([np.zeros((1, rows.shape[1])), rows]).astype(np.float32)


def build_attention_network(spec: AttentionSpec, table: np.ndarray | None = None):
    """The torch module for ``spec``; ``table`` overrides the element vectors (tests, loading)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class FractionEncoding(nn.Module):
        """Sines/cosines of the fraction and of log10(fraction), then a linear map."""

        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("frequencies", torch.pi * 2.0 ** torch.arange(spec.n_frequencies // 2, dtype=torch.float32) / 2, persistent=False)
            self.linear = nn.Linear(2 * spec.n_frequencies + 2, spec.d_model)

        def forward(self, fractions):
            with torch.autocast(fractions.device.type, enabled=False):  # sines of large angles need fp32
                return self._encode(fractions.float())

        def _encode(self, fractions):
            f = fractions.unsqueeze(-1)
            logf = torch.log10(fractions.clamp_min(1e-6)).unsqueeze(-1) / 6.0 + 1.0
            angles = torch.cat([f * self.frequencies, logf * self.frequencies], dim=-1)
            return self.linear(torch.cat([angles.sin(), angles.cos(), f, logf], dim=-1))

    class Block(nn.Module):
        """Pre-norm self-attention + feed-forward block with a key-padding mask."""

        def __init__(self) -> None:
            super().__init__()
            self.norm1 = nn.LayerNorm(spec.d_model)
            self.qkv = nn.Linear(spec.d_model, 3 * spec.d_model)
            self.out = nn.Linear(spec.d_model, spec.d_model)
            self.norm2 = nn.LayerNorm(spec.d_model)
            self.ff1 = nn.Linear(spec.d_model, spec.d_ff)
            self.ff2 = nn.Linear(spec.d_ff, spec.d_model)
            self.drop = nn.Dropout(spec.dropout)

        def forward(self, x, attn_mask):
            n, length, d = x.shape
            q, k, v = self.qkv(self.norm1(x)).view(n, length, 3, spec.n_heads, d // spec.n_heads).permute(2, 0, 3, 1, 4)
            attended = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
            x = x + self.drop(self.out(attended.transpose(1, 2).reshape(n, length, d)))
            return x + self.drop(self.ff2(F.gelu(self.ff1(self.norm2(x)))))

    class ElementAttentionNet(nn.Module):
        """(element indices, fractions) → (mean, log-scale) in standardised target units."""

        def __init__(self, element_vectors: np.ndarray) -> None:
            super().__init__()
            self.register_buffer("element_vectors", torch.as_tensor(element_vectors, dtype=torch.float32))
            self.project = nn.Linear(self.element_vectors.shape[1], spec.d_model)
            self.embedding = nn.Embedding(spec.n_elements + 1, spec.d_model, padding_idx=0)
            nn.init.normal_(self.embedding.weight, std=0.02)
            with torch.no_grad():
                self.embedding.weight[0].zero_()
            self.fraction = FractionEncoding()
            self.blocks = nn.ModuleList(Block() for _ in range(spec.n_layers))
            self.norm = nn.LayerNorm(spec.d_model)
            self.head = nn.Sequential(
                nn.Linear(spec.d_model, spec.d_head_hidden), nn.GELU(),
                nn.Linear(spec.d_head_hidden, spec.d_head_hidden // 2), nn.GELU(),
                nn.Linear(spec.d_head_hidden // 2, 2),
            )

        def forward(self, indices, fractions):
            """``indices`` (n, L) int64 (0 = padding), ``fractions`` (n, L) summing to 1 per row."""
            present = fractions > 0
            x = self.project(self.element_vectors[indices]) + self.embedding(indices) + self.fraction(fractions)
            # additive mask: padded keys get -inf; a row attends at least to its own present elements
            attn_mask = torch.zeros(present.shape, dtype=x.dtype, device=x.device).masked_fill(~present, float("-inf"))
            attn_mask = attn_mask[:, None, None, :]
            for block in self.blocks:
                x = block(x, attn_mask)
            weights = (fractions * present).unsqueeze(-1)
            pooled = (self.norm(x) * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1e-12)
            out = self.head(pooled)
            return out[:, 0], out[:, 1]

    if table is None:
        from fh_screen.chem.formula import DEFAULT_ELEMENTS

        table = element_table(DEFAULT_ELEMENTS[: spec.n_elements], spec.element_features)
    return ElementAttentionNet(table)


def set_tensors(matrix: np.ndarray, max_length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fraction matrix ``(n, n_elements)`` → ``(indices, fractions)`` of the non-zero columns.

    Indices are 1-based column numbers (0 is padding), ordered by column (atomic number); the
    length is the largest number of elements in any row (or ``max_length``).
    """
    matrix = np.asarray(matrix, dtype=np.float32)
    present = matrix > 0
    length = max(1, int(present.sum(axis=1).max(initial=0))) if max_length is None else max_length
    order = np.argsort(~present, axis=1, kind="stable")[:, :length]
    fractions = np.take_along_axis(matrix, order, axis=1)
    indices = np.where(fractions > 0, order + 1, 0).astype(np.int64)
    return indices, np.where(fractions > 0, fractions, 0).astype(np.float32)


def laplace_nll(y, mean, log_scale):
    """Negative log-likelihood of a Laplace distribution (up to a constant), per row."""
    import torch

    return (y - mean).abs() * torch.exp(-log_scale) + log_scale


def gaussian_sigma_from_laplace(log_scale_std_units, target_std_ev_per_atom: float):
    """σ (eV/atom) of a Laplace with log-scale ``b``: sqrt(2)·b, in target units."""
    return math.sqrt(2.0) * np.exp(log_scale_std_units) * target_std_ev_per_atom


@dataclass(frozen=True)
class AttentionTrainConfig:
    """Optimiser, schedule and run settings of the attention networks (defaults are the shipped model's).

    Each field's ``metadata["help"]`` documents it; :func:`fh_screen.models.fit.add_config_arguments`
    turns the same text into the training scripts' ``--help``.
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

    def __post_init__(self) -> None:
        """Refuse, in one :class:`TrainingError` line, a count below 1, a learning rate that is not a finite
        number above 0, or a negative seed (members add their number to it)."""
        from fh_screen.errors import check_count, check_positive

        for name in ("epochs", "batch_size", "threads"):
            check_count(getattr(self, name), name, TrainingError)
        check_count(self.seed, "seed", TrainingError, minimum=0)
        check_positive(self.learning_rate, "learning_rate", TrainingError)

    def as_dict(self) -> dict:
        """Plain-type dictionary for model cards."""
        return asdict(self)

    def identity(self) -> dict:
        """The settings that change the result (device and threads do not, up to rounding)."""
        data = self.as_dict()
        data.pop("threads")
        data.pop("device")
        return data


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


class AttentionRecipe:
    """How an attention network trains in :func:`fh_screen.models.fit.fit`.

    The mean is trained on plain L1 (the MAE up to the target std); the σ head learns a Laplace
    log-scale from the detached residual, so uncertainty never trades against accuracy. AdamW
    (no decay on biases, norms and embeddings), a per-step linear warm-up then cosine, gradient
    clipping; the evaluated and kept weights are an exponential moving average of the trained
    ones, after the last epoch. Each epoch's batch order depends only on seed and epoch, so a
    run resumed from its state file equals an uninterrupted one.
    """

    keep = "last"
    resumable = True
    patience = None
    max_minutes = None

    def __init__(self, spec: AttentionSpec, config: AttentionTrainConfig = AttentionTrainConfig(), element_vectors: np.ndarray | None = None):
        self.spec = spec
        self.config = config
        self.device = config.device
        self.grad_clip = config.grad_clip
        self.element_vectors = element_vectors

    def start(self, data, mean: float, std: float, device) -> None:
        """Build the network (the loop has seeded torch), its EMA copy, AdamW and the tensors."""
        import torch

        config = self.config
        indices, fractions = data.inputs
        self.mean, self.std, self.torch_device = mean, std, device
        self.indices = torch.as_tensor(np.asarray(indices, dtype=np.int64), device=device)
        self.fractions = torch.as_tensor(np.asarray(fractions, dtype=np.float32), device=device)
        self.y = torch.as_tensor(((np.asarray(data.y_ev_per_atom) - mean) / std).astype(np.float32), device=device)
        self.lengths = (np.asarray(fractions) > 0).sum(axis=1)
        self.holdout_inputs, self.holdout_y = data.holdout_inputs, data.holdout_y_ev_per_atom
        self.network = build_attention_network(self.spec, self.element_vectors).to(device)
        self.evaluated = ema = copy.deepcopy(self.network)
        for parameter in ema.parameters():
            parameter.requires_grad_(False)
        decay, no_decay = [], []
        for name, parameter in self.network.named_parameters():
            (no_decay if parameter.ndim < 2 or "embedding" in name else decay).append(parameter)
        self.optimiser = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=config.learning_rate,
        )
        self.steps_per_epoch = len(_batches(self.lengths, config.batch_size, np.random.default_rng(0)))
        self.total_steps = self.steps_per_epoch * config.epochs
        self._ema_parameters, self._train_parameters = list(ema.parameters()), list(self.network.parameters())

    def batches(self, epoch: int) -> list[np.ndarray]:
        """This epoch's batches, rows of similar length together, from a generator of (seed, epoch)."""
        return _batches(self.lengths, self.config.batch_size, np.random.default_rng([self.config.seed, epoch]))

    def learning_rate(self, step: int) -> float:
        """Linear warm-up, then cosine down to ``final_lr_fraction`` of the peak."""
        return _learning_rate(self.config, step, self.total_steps)

    def loss(self, batch):
        """(L1 + weighted Laplace NLL of the batch, its summed absolute error on the device)."""
        import torch

        width = int(self.lengths[batch].max())
        rows = torch.as_tensor(batch, device=self.torch_device)
        target = self.y[rows]
        predicted, log_scale = self.network(self.indices[rows, :width], self.fractions[rows, :width])
        l1 = (predicted - target).abs()
        loss = l1.mean() + self.config.nll_weight * laplace_nll(target, predicted.detach(), log_scale).mean()
        return loss, l1.detach().sum()

    def after_step(self, step: int) -> None:
        """Move the EMA weights towards the trained ones (a short warm-up of the decay)."""
        import torch

        with torch.no_grad():
            warm = min(self.config.ema_decay, (1 + step) / (10 + step))
            torch._foreach_lerp_(self._ema_parameters, self._train_parameters, 1 - warm)

    def holdout_mae(self) -> float:
        """MAE (eV/atom) of the EMA weights on the holdout rows."""
        held_mean, _ = predict_attention(self.evaluated, *self.holdout_inputs, device=str(self.torch_device))
        return float(np.mean(np.abs(held_mean * self.std + self.mean - self.holdout_y)))

    def after_epoch(self, holdout_mae: float) -> None:
        """Nothing: the LR moves per step."""

    def identity(self) -> dict:
        """What a state file must match to be resumed: the spec and the result-changing settings."""
        return {"spec": self.spec.as_dict(), "config": self.config.identity()}

    def extra_state(self) -> dict:
        """The EMA weights, saved beside the loop's state."""
        return {"ema": self.evaluated.state_dict()}

    def load_extra_state(self, state: dict) -> None:
        """Inverse of :meth:`extra_state`."""
        self.evaluated.load_state_dict(state["ema"])
