"""How a checkpoint stores its tensors on disk: float32, or 16-bit integers with one scale per column.

``int16-per-column`` keeps every weight matrix as ``round(w / s)`` in int16, where ``s`` is the
largest absolute weight of the matrix's input column (its *column*: one input feature) divided by
32,767, and stores ``s`` beside it as float32. Vectors (biases, norms) stay float32. The stored
matrices take half the bytes of float32; the rounding error of a weight is at most ``s / 2``, an
absolute error the same for every weight that meets one input feature, which is what a layer's
output is sensitive to. On the shipped attention ensemble it moves predictions over all of
``val.csv`` by at most 0.2 meV/atom, where float16 (the same size, an error relative to each
weight) moves them by up to 4.6 meV/atom (``scripts/compact_weights.py``,
``docs/evaluation/weights_storage.json``).

Loading expands the integers back to float32; the model then runs exactly as a float32 model with
those values, so a model's identity is the sha256 of the expanded tensors.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["FLOAT32", "INT16_PER_COLUMN", "WeightStorage", "compact_state", "expand_state"]

FLOAT32 = "float32"
INT16_PER_COLUMN = "int16-per-column"
WeightStorage = Literal["float32", "int16-per-column"]

_INT16_TOP = 32767


def compact_state(state: dict) -> tuple[dict, dict]:
    """``state`` with every floating matrix as int16 and the per-column float32 scales that expand it.

    Returns ``(stored, scales)``: ``stored`` has the same keys as ``state`` (matrices as int16,
    everything else as given); ``scales`` maps each compacted key to a ``(1, n_columns)`` tensor.
    """
    import torch

    stored, scales = {}, {}
    for key, tensor in state.items():
        tensor = tensor.detach().cpu()
        if tensor.is_floating_point() and tensor.ndim == 2:
            values = tensor.float()
            scale = (values.abs().amax(dim=0, keepdim=True) / _INT16_TOP).clamp_min(torch.finfo(torch.float32).tiny)
            stored[key] = torch.round(values / scale).clamp(-_INT16_TOP, _INT16_TOP).to(torch.int16)
            scales[key] = scale
        else:
            stored[key] = tensor.clone()
    return stored, scales


def expand_state(stored: dict, scales: dict) -> dict:
    """The float32 state dict that :func:`compact_state` stored (floating tensors as float32)."""
    expanded = {}
    for key, tensor in stored.items():
        if key in scales:
            expanded[key] = tensor.float() * scales[key].float()
        elif tensor.is_floating_point():
            expanded[key] = tensor.float()
        else:
            expanded[key] = tensor
    return expanded
