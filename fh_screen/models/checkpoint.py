"""Checkpoints that load without unpickling code (``torch.load(weights_only=True)``).

A checkpoint is a dictionary of tensors and plain Python types: the network spec, the element
list (so models with other element sets still load), target normalisation, one state dict per
ensemble member, the training data hash and the metrics.
"""

from __future__ import annotations

from fh_screen.errors import FhScreenError, one_line
from fh_screen.io import atomic_write

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fh_screen.models.attention import AttentionSpec
from fh_screen.models.mlp import NetworkSpec
from fh_screen.models.weight_storage import FLOAT32, INT16_PER_COLUMN, WeightStorage, compact_state, expand_state

__all__ = ["CHECKPOINT_FORMAT", "Checkpoint", "ModelError", "dated_version", "load_checkpoint", "save_checkpoint", "spec_from_dict"]

CHECKPOINT_FORMAT = "fh-screen-checkpoint"
#: Version 2 adds the attention architecture (``spec["kind"] == "attention"``); version 3 adds
#: ``weights_storage`` (int16 matrices with per-column scales, :mod:`fh_screen.models.weight_storage`).
#: Version 1 and 2 files still load.
CHECKPOINT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)


def spec_from_dict(data: dict) -> NetworkSpec | AttentionSpec:
    """The spec of a checkpoint: an attention spec when ``kind`` says so, else a fully connected one."""
    if data.get("kind") == "attention":
        return AttentionSpec.from_dict(data)
    return NetworkSpec.from_dict(data)


class ModelError(FhScreenError):
    """A model file that is missing, unreadable or incompatible; one-line message."""


@dataclass
class Checkpoint:
    """Everything needed to rebuild and describe a trained model (or an ensemble of them)."""

    name: str
    spec: NetworkSpec | AttentionSpec
    elements: list[str]
    target_mean_ev_per_atom: float
    target_std_ev_per_atom: float
    member_state_dicts: list[dict]
    elements_in_training: list[str] = field(default_factory=list)
    version: str = "1"
    metadata: dict[str, Any] = field(default_factory=dict)
    #: One spec per member when the ensemble mixes attention architectures (else ``spec`` for all).
    member_specs: list[AttentionSpec] | None = None
    #: How the file it was read from stored the weights (informational; they are float32 in memory).
    stored_as: str = FLOAT32

    def spec_of(self, member: int) -> NetworkSpec | AttentionSpec:
        """The architecture of ensemble member ``member``."""
        return self.member_specs[member] if self.member_specs else self.spec

    @property
    def sigma_scale(self) -> float:
        """Calibration factor applied to the raw σ (fitted on a carve of the training data)."""
        return float(self.metadata.get("sigma_scale", 1.0))

    def build_members(self) -> list:
        """The ensemble members as torch modules in eval mode (CPU); each spec builds its own."""
        return [self.spec_of(number).build_trained(state) for number, state in enumerate(self.member_state_dicts)]

    def identity(self) -> str:
        """sha256 over the spec, elements, normalisation, σ scale, member weighting and every tensor (no timestamps).

        Two bit-identical trainings get the same identity, whatever their dates or file names.
        """
        import hashlib
        import json

        digest = hashlib.sha256()
        header = {
            "spec": self.spec.as_dict(),
            "elements": list(self.elements),
            "mean": float(self.target_mean_ev_per_atom),
            "std": float(self.target_std_ev_per_atom),
            "sigma_scale": self.sigma_scale,
        }
        if self.member_specs:
            header["member_specs"] = [m.as_dict() for m in self.member_specs]
        if self.metadata.get("member_weighting", "mean") != "mean":  # it changes the predictions
            header["member_weighting"] = self.metadata["member_weighting"]
        digest.update(json.dumps(header, sort_keys=True).encode())
        for state in self.member_state_dicts:
            for key in sorted(state):
                tensor = state[key].detach().cpu().contiguous()
                digest.update(key.encode())
                digest.update(str(tuple(tensor.shape)).encode())
                digest.update(tensor.numpy().tobytes())
        return digest.hexdigest()


def save_checkpoint(checkpoint: Checkpoint, path: str | Path, weights_storage: WeightStorage = FLOAT32) -> Path:
    """Write ``checkpoint`` atomically (temporary file + rename) and return the path.

    ``weights_storage="int16-per-column"`` stores the weight matrices as int16 with per-column
    scales (half the bytes; see :mod:`fh_screen.models.weight_storage`); the default keeps float32.
    """
    import torch

    if weights_storage not in (FLOAT32, INT16_PER_COLUMN):
        raise ModelError(f"unknown weights storage {weights_storage!r}: use {FLOAT32} or {INT16_PER_COLUMN}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    members = [{k: v.detach().cpu().clone() for k, v in s.items()} for s in checkpoint.member_state_dicts]
    scales = None
    if weights_storage == INT16_PER_COLUMN:
        members, scales = map(list, zip(*(compact_state(state) for state in members)))
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "name": checkpoint.name,
        "version": checkpoint.version,
        "spec": checkpoint.spec.as_dict(),
        "elements": list(checkpoint.elements),
        "elements_in_training": list(checkpoint.elements_in_training),
        "target_mean_ev_per_atom": float(checkpoint.target_mean_ev_per_atom),
        "target_std_ev_per_atom": float(checkpoint.target_std_ev_per_atom),
        "weights_storage": weights_storage,
        "members": members,
        "member_scales": scales,
        "member_specs": [m.as_dict() for m in checkpoint.member_specs] if checkpoint.member_specs else None,
        "metadata": checkpoint.metadata,
    }
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint with ``weights_only=True``; raise :class:`ModelError` if unusable."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's hints must not reach the user (they advise unsafe loading)
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file becomes one line naming it
        text = str(exc).strip()
        if "weights only" in text.lower() or "weights_only" in text:
            reason = "it holds Python objects, which fh-screen never unpickles"
        else:
            reason = one_line(exc, first_line=True)
        raise ModelError(f"cannot read model file {path}: not an fh-screen checkpoint ({reason})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(f"incompatible model file {path}: not an fh-screen checkpoint")
    if payload.get("format_version") not in READABLE_VERSIONS:
        raise ModelError(
            f"incompatible model file {path}: checkpoint format {payload.get('format_version')}, "
            f"this fh-screen reads {', '.join(map(str, READABLE_VERSIONS))}"
        )
    try:
        spec = spec_from_dict(payload["spec"])
        elements = list(payload["elements"])
        n_inputs = spec.n_element_slots
        if n_inputs != len(elements):
            raise ModelError(f"incompatible model file {path}: {n_inputs} inputs but {len(elements)} elements")
        checkpoint = Checkpoint(
            name=str(payload["name"]),
            version=str(payload["version"]),
            spec=spec,
            elements=elements,
            elements_in_training=list(payload.get("elements_in_training", [])),
            target_mean_ev_per_atom=float(payload["target_mean_ev_per_atom"]),
            target_std_ev_per_atom=float(payload["target_std_ev_per_atom"]),
            member_state_dicts=_member_states(payload),
            stored_as=str(payload.get("weights_storage", FLOAT32)),
            member_specs=[spec_from_dict(m) for m in payload["member_specs"]] if payload.get("member_specs") else None,
            metadata=dict(payload.get("metadata", {})),
        )
        checkpoint.build_members()  # fail here, not at first prediction, on mismatched weights
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ModelError(f"incompatible model file {path}: {one_line(exc, first_line=True)}") from None
    return checkpoint


def _member_states(payload: dict) -> list[dict]:
    """The members' float32 state dicts, expanded from whatever storage the file used."""
    storage = payload.get("weights_storage", FLOAT32)
    if storage == INT16_PER_COLUMN:
        return [expand_state(state, scales) for state, scales in zip(payload["members"], payload["member_scales"], strict=True)]
    if storage != FLOAT32:
        raise ValueError(f"unknown weights storage {storage!r}")
    # float16 tensors (an older experiment) run as float32 too
    return [{k: (v.float() if v.is_floating_point() else v) for k, v in state.items()} for state in payload["members"]]


def dated_version(checkpoint: Checkpoint) -> str:
    """Version of a model trained or fine-tuned by a user: UTC date and the first 8 hex digits of its identity.

    Shipped models have small integer versions; a user's model never takes one of them, so its
    stored predictions never mix with a shipped model's.
    """
    from datetime import datetime, timezone

    return f"{datetime.now(timezone.utc):%Y%m%d}-{checkpoint.identity()[:8]}"
