"""Checkpoints that load without unpickling code (``torch.load(weights_only=True)``).

A checkpoint is a dictionary of tensors and plain Python types: the network spec, the element
list (so models with other element sets still load), target normalisation, one state dict per
ensemble member, the training data hash and the metrics.
"""

from __future__ import annotations

from fh_screen.errors import FhScreenError

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fh_screen.network.mlp import NetworkSpec, build_network

__all__ = ["CHECKPOINT_FORMAT", "Checkpoint", "ModelError", "load_checkpoint", "save_checkpoint"]

CHECKPOINT_FORMAT = "fh-screen-checkpoint"
CHECKPOINT_VERSION = 1


class ModelError(FhScreenError):
    """A model file that is missing, unreadable or incompatible; one-line message."""


@dataclass
class Checkpoint:
    """Everything needed to rebuild and describe a trained model (or an ensemble of them)."""

    name: str
    spec: NetworkSpec
    elements: list[str]
    target_mean_ev_per_atom: float
    target_std_ev_per_atom: float
    member_state_dicts: list[dict]
    elements_in_training: list[str] = field(default_factory=list)
    version: str = "1"
    metadata: dict[str, Any] = field(default_factory=dict)

    def build_members(self) -> list:
        """The ensemble members as torch modules in eval mode (CPU)."""
        members = []
        for state in self.member_state_dicts:
            network = build_network(self.spec)
            network.load_state_dict(state)
            network.eval()
            members.append(network)
        return members


def save_checkpoint(checkpoint: Checkpoint, path: str | Path) -> Path:
    """Write ``checkpoint`` atomically (temporary file + rename) and return the path."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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
        "members": [{k: v.detach().cpu().clone() for k, v in s.items()} for s in checkpoint.member_state_dicts],
        "metadata": checkpoint.metadata,
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint with ``weights_only=True``; raise :class:`ModelError` if unusable."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file becomes one line naming it
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"cannot read model file {path}: not a PyTorch checkpoint ({first})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(f"incompatible model file {path}: not an fh-screen checkpoint")
    if payload.get("format_version") != CHECKPOINT_VERSION:
        raise ModelError(
            f"incompatible model file {path}: checkpoint format {payload.get('format_version')}, "
            f"this fh-screen reads {CHECKPOINT_VERSION}"
        )
    try:
        spec = NetworkSpec.from_dict(payload["spec"])
        elements = list(payload["elements"])
        if spec.n_inputs != len(elements):
            raise ModelError(f"incompatible model file {path}: {spec.n_inputs} inputs but {len(elements)} elements")
        checkpoint = Checkpoint(
            name=str(payload["name"]),
            version=str(payload["version"]),
            spec=spec,
            elements=elements,
            elements_in_training=list(payload.get("elements_in_training", [])),
            target_mean_ev_per_atom=float(payload["target_mean_ev_per_atom"]),
            target_std_ev_per_atom=float(payload["target_std_ev_per_atom"]),
            member_state_dicts=list(payload["members"]),
            metadata=dict(payload.get("metadata", {})),
        )
        checkpoint.build_members()  # fail here, not at first prediction, on mismatched weights
    except (KeyError, TypeError, RuntimeError) as exc:
        raise ModelError(f"incompatible model file {path}: {str(exc).splitlines()[0]}") from None
    return checkpoint
