"""The ``Model`` protocol and one inference path per architecture behind it.

A loaded model turns composition rows into the mean ΔH_f and its σ (eV/atom). Each architecture
supplies one class that does so, fast (members stacked) and by reference (each member's module
one by one): :class:`MlpEnsemble` (fully connected networks on fraction vectors) and
:class:`AttentionEnsemble` (attention over the elements present, a Laplace σ head per member).
:func:`model_for` picks the class by the checkpoint's spec type; nothing else asks which
architecture a model has.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from fh_screen.models.torch_threads import torch_threads
from fh_screen.models.attention import AttentionSpec
from fh_screen.models.attention_inference import StackedAttentionEnsemble
from fh_screen.models.checkpoint import Checkpoint
from fh_screen.models.mlp import NetworkSpec
from fh_screen.models.stacked import StackedEnsemble

__all__ = ["AttentionEnsemble", "MlpEnsemble", "Model", "model_for"]


@runtime_checkable
class Model(Protocol):
    """What a loaded model does: composition rows → mean ΔH_f and σ (eV/atom; σ None without one)."""

    #: True for a model a screen should not run on every candidate (a fast prefilter ranks first).
    slow: bool
    #: True when σ is reported (an ensemble's spread or a σ head).
    has_uncertainty: bool

    def predict_matrix(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Fraction rows over the model's elements (fast path); pure elements give 0 with σ 0."""

    def predict_matrix_reference(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The same through each member's module one by one (the reference of the fast path)."""

    def predict_columns(self, fractions: np.ndarray, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Fraction rows over ``columns`` of the model's elements (the screen's count path)."""


def _pure_elements_zero(lengths: np.ndarray, mean: np.ndarray, std: np.ndarray | None):
    single = np.asarray(lengths) == 1
    if single.any():
        mean = np.where(single, 0.0, mean)
        if std is not None:
            std = np.where(single, 0.0, std)
    return mean, std


class MlpEnsemble:
    """Fully connected networks on fraction vectors; σ is the members' spread (None for one network)."""

    slow = False

    def __init__(self, checkpoint: Checkpoint, members: list, batch_size: int = 16384, threads: int | None = None):
        self.checkpoint = checkpoint
        self.members = members
        self.batch_size = batch_size
        self.threads = threads
        self.stacked = StackedEnsemble(members)

    @property
    def has_uncertainty(self) -> bool:
        """True for an ensemble of two or more networks."""
        return len(self.members) > 1

    def summarise(self, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Mean and σ (eV/atom) of the members' standardised outputs ``(n_members, n_rows)``."""
        outputs = outputs * self.checkpoint.target_std_ev_per_atom + self.checkpoint.target_mean_ev_per_atom
        mean = outputs.mean(axis=0)
        std = outputs.std(axis=0, ddof=1) * self.checkpoint.sigma_scale if len(outputs) > 1 else None
        return mean, std

    def predict_columns(self, fractions: np.ndarray, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Only the listed input columns are read (a screen of Li-Fe-P-O touches 4 of 94)."""
        with torch_threads(self.threads):  # the host's torch threads are restored afterwards
            mean, std = self.summarise(self.stacked.predict(fractions, columns, self.batch_size))
        return _pure_elements_zero((np.asarray(fractions) > 0).sum(axis=1), mean, std)

    def predict_matrix(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        columns = np.flatnonzero(np.any(matrix != 0, axis=0))
        return self.predict_columns(matrix[:, columns], columns)

    def predict_matrix_reference(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        import torch

        x = torch.as_tensor(np.ascontiguousarray(matrix, dtype=np.float32))
        with torch.inference_mode():
            outputs = np.stack([network(x).squeeze(-1).numpy() for network in self.members])
        mean, std = self.summarise(outputs)
        return _pure_elements_zero((np.asarray(matrix) > 0).sum(axis=1), mean, std)


class AttentionEnsemble:
    """Attention networks over the elements present, each with a Laplace σ head; members run stacked."""

    slow = True
    has_uncertainty = True

    def __init__(self, checkpoint: Checkpoint, members: list, batch_size: int = 16384, threads: int | None = None):
        self.checkpoint = checkpoint
        self.members = members
        self.threads = threads
        specs = [checkpoint.spec_of(number) for number in range(len(members))]
        self.stacked = StackedAttentionEnsemble(members, specs)

    def combine(self, means: np.ndarray, log_scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ensemble mean and σ (eV/atom) from the members' means and Laplace log-scales.

        The members are mixed with weights ``w`` (equal, or with ``member_weighting ==
        "inverse_variance"`` in the checkpoint's metadata, ∝ 1/b² of each member's own Laplace
        scale b for that input, so a member unsure of a composition counts less). σ² is the
        mixture's variance, ``Σ w (2b² + (m - mean)²)``, times ``sigma_scale``².
        """
        scale = self.checkpoint.target_std_ev_per_atom
        member_means = means.astype(np.float64) * scale + self.checkpoint.target_mean_ev_per_atom
        log_b = log_scales.astype(np.float64)
        if self.checkpoint.metadata.get("member_weighting", "mean") == "inverse_variance":
            weights = np.exp(-2.0 * (log_b - log_b.min(axis=0)))  # 1/b², scaled to avoid overflow
            weights /= weights.sum(axis=0)
        else:
            weights = np.full_like(log_b, 1.0 / len(log_b))
        mean = (weights * member_means).sum(axis=0)
        aleatoric = 2.0 * (np.exp(log_b) * scale) ** 2  # Laplace variance 2b²
        variance = (weights * (aleatoric + (member_means - mean) ** 2)).sum(axis=0)
        return mean, np.sqrt(variance) * self.checkpoint.sigma_scale

    def predict_sets(self, indices: np.ndarray, fractions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and calibrated σ (eV/atom) for set tensors.

        ``indices`` are 1-based element columns (0 = padding) and ``fractions`` the amounts. The
        members run stacked (:class:`~fh_screen.models.attention_inference.StackedAttentionEnsemble`),
        rows grouped by their number of elements; :meth:`predict_matrix_reference` runs the same
        modules one by one.
        """
        with torch_threads(self.threads):  # the host's torch threads are restored afterwards
            means, log_scales = self.stacked.predict(indices, fractions)
        mean, std = self.combine(means, log_scales)
        return _pure_elements_zero((np.asarray(fractions) > 0).sum(axis=1), mean, std)

    def predict_columns(self, fractions: np.ndarray, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        present = fractions > 0
        order = np.argsort(~present, axis=1, kind="stable")
        compact = np.take_along_axis(fractions, order, axis=1).astype(np.float32)
        indices = np.where(compact > 0, np.asarray(columns)[order] + 1, 0).astype(np.int64)
        return self.predict_sets(indices, compact)

    def predict_matrix(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from fh_screen.models.attention import set_tensors

        return self.predict_sets(*set_tensors(matrix))

    def predict_matrix_reference(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        from fh_screen.models.attention import set_tensors

        indices, fractions = (torch.as_tensor(a) for a in set_tensors(matrix))
        with torch.inference_mode():
            outputs = [network(indices, fractions) for network in self.members]
        means = np.stack([m.float().numpy() for m, _ in outputs])
        logs = np.stack([b.float().numpy() for _, b in outputs])
        mean, std = self.combine(means, logs)
        return _pure_elements_zero((np.asarray(matrix) > 0).sum(axis=1), mean, std)


#: The inference class of each architecture, by the type of its spec.
ARCHITECTURES: dict[type, type] = {NetworkSpec: MlpEnsemble, AttentionSpec: AttentionEnsemble}


def model_for(checkpoint: Checkpoint, batch_size: int = 16384, threads: int | None = None) -> Model:
    """The :class:`Model` of ``checkpoint``: its members built once, behind their architecture's class."""
    return ARCHITECTURES[type(checkpoint.spec)](checkpoint, checkpoint.build_members(), batch_size=batch_size, threads=threads)
