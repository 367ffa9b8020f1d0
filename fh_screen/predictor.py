"""Predictor: load a trained model once, predict ΔH_f (eV/atom) for many compositions in batches."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np

from fh_screen.composition import (
    ELEMENTS_ABSENT_FROM_OQMD,
    FormulaError,
    fraction_matrix,
    fractions_from_counts,
)
from fh_screen.network.checkpoint import Checkpoint, ModelError, load_checkpoint
from fh_screen.network.stacked import StackedEnsemble

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_MODEL", "Prediction", "Predictor", "available_models", "predict", "shipped_model_path"]

#: Name of the shipped model used when none is given: five Table-1 networks (seeds 0-4) whose
#: mean is the prediction and whose spread is the uncertainty. ``paper`` is its first member alone.
DEFAULT_MODEL = "paper-ensemble"


def available_models() -> list[str]:
    """Names of the models shipped inside the package (``fh_screen/pretrained/<name>/model.pt``)."""
    root = resources.files("fh_screen") / "pretrained"
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "model.pt").is_file())


def shipped_model_path(name: str = DEFAULT_MODEL) -> Path:
    """Path of a shipped model's checkpoint; :class:`ModelError` if there is no such model."""
    path = Path(str(resources.files("fh_screen") / "pretrained" / name / "model.pt"))
    if not path.is_file():
        raise ModelError(f"no shipped model named {name!r} (available: {', '.join(available_models()) or 'none'})")
    return path


@dataclass(frozen=True)
class Prediction:
    """Predictions for a batch of inputs, row-aligned with them.

    ``dhf_ev_per_atom`` is NaN where ``errors`` holds a message; ``dhf_std_ev_per_atom`` is the
    ensemble spread (None for a single network); ``out_of_domain`` marks compositions with an
    element absent from the training data.
    """

    dhf_ev_per_atom: np.ndarray
    dhf_std_ev_per_atom: np.ndarray | None
    out_of_domain: np.ndarray
    errors: list[str | None]


class Predictor:
    """A loaded model: element list, normalisation and one or more networks (an ensemble)."""

    def __init__(self, checkpoint: Checkpoint, path: Path | None = None, batch_size: int = 16384, threads: int | None = None):
        self.checkpoint = checkpoint
        self.path = path
        self.batch_size = batch_size
        self.threads = threads
        self._members = checkpoint.build_members()
        self._stacked = StackedEnsemble(self._members)
        seen = set(checkpoint.elements_in_training) or (set(checkpoint.elements) - ELEMENTS_ABSENT_FROM_OQMD)
        self._unseen_columns = np.array([i for i, s in enumerate(checkpoint.elements) if s not in seen], dtype=int)
        self._weights_sha256 = hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else ""

    @classmethod
    def from_file(cls, path: str | Path, **kwargs) -> Predictor:
        """Load a checkpoint file written by :func:`fh_screen.network.checkpoint.save_checkpoint`."""
        path = Path(path)
        return cls(load_checkpoint(path), path=path, **kwargs)

    @classmethod
    def from_name(cls, name_or_path: str | Path | None = None, **kwargs) -> Predictor:
        """A shipped model by name (default :data:`DEFAULT_MODEL`) or a checkpoint path."""
        if name_or_path is None:
            name_or_path = DEFAULT_MODEL
        candidate = Path(name_or_path)
        if candidate.suffix == ".pt" or candidate.exists():
            return cls.from_file(candidate, **kwargs)
        return cls.from_file(shipped_model_path(str(name_or_path)), **kwargs)

    @property
    def elements(self) -> tuple[str, ...]:
        """The model's input slots, ordered by atomic number."""
        return tuple(self.checkpoint.elements)

    @property
    def name(self) -> str:
        """Model name as written in its checkpoint."""
        return self.checkpoint.name

    @property
    def version(self) -> str:
        """Model version as written in its checkpoint."""
        return self.checkpoint.version

    @property
    def weights_sha256(self) -> str:
        """sha256 of the checkpoint file (empty when built in memory)."""
        return self._weights_sha256

    @property
    def has_uncertainty(self) -> bool:
        """True for an ensemble, whose member spread is reported as a standard deviation."""
        return len(self._members) > 1

    def predict_matrix(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Mean (and std across ensemble members) ΔH_f in eV/atom for fraction rows (fast path)."""
        if matrix.shape[1] != len(self.elements):
            raise ModelError(f"feature matrix has {matrix.shape[1]} columns, the model expects {len(self.elements)}")
        columns = np.flatnonzero(np.any(matrix != 0, axis=0))
        return self._predict_columns(matrix[:, columns], columns)

    def predict_matrix_reference(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The same as :meth:`predict_matrix` through each member's ``nn.Sequential`` (reference)."""
        import torch

        x = torch.as_tensor(np.ascontiguousarray(matrix, dtype=np.float32))
        with torch.inference_mode():
            outputs = np.stack([network(x).squeeze(-1).numpy() for network in self._members])
        return self._summarise(outputs)

    def _predict_columns(self, x_columns: np.ndarray, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        return self._summarise(self._stacked.predict(x_columns, columns, self.batch_size))

    def _summarise(self, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        outputs = outputs * self.checkpoint.target_std_ev_per_atom + self.checkpoint.target_mean_ev_per_atom
        mean = outputs.mean(axis=0)
        std = outputs.std(axis=0, ddof=1) if len(outputs) > 1 else None
        return mean, std

    def out_of_domain(self, matrix: np.ndarray) -> np.ndarray:
        """True for rows containing an element the model never saw in training."""
        if not len(self._unseen_columns):
            return np.zeros(len(matrix), dtype=bool)
        return (matrix[:, self._unseen_columns] > 0).any(axis=1)

    def predict_formulas(self, formulas: Sequence[str]) -> Prediction:
        """Predict many formula strings; bad ones get NaN and an error message, not an exception."""
        features = fraction_matrix(formulas, self.elements)
        mean, std = self.predict_matrix(features.matrix)
        invalid = ~features.valid
        mean[invalid] = np.nan
        if std is not None:
            std[invalid] = np.nan
        return Prediction(mean, std, self.out_of_domain(features.matrix), features.errors)

    def predict_counts(self, counts: np.ndarray, system_elements: Sequence[str]) -> Prediction:
        """Predict integer count arrays over ``system_elements`` (the vectorised screen path).

        The first layer reads only the system's columns, so no 94-wide matrix is built.
        """
        index = {symbol: i for i, symbol in enumerate(self.elements)}
        outside = [s for s in system_elements if s not in index]
        if outside:
            raise FormulaError(f"element {outside[0]!r} is outside the model's element set ({self.elements[0]}–{self.elements[-1]})")
        columns = np.array([index[s] for s in system_elements], dtype=np.int64)
        fractions = fractions_from_counts(counts)
        mean, std = self._predict_columns(fractions, columns)
        unseen = np.isin(columns, self._unseen_columns)
        out_of_domain = (fractions[:, unseen] > 0).any(axis=1) if unseen.any() else np.zeros(len(fractions), dtype=bool)
        return Prediction(mean, std, out_of_domain, [None] * len(fractions))


def predict(formulas: Sequence[str] | str, model: str | Path | None = None) -> np.ndarray:
    """ΔH_f in eV/atom for each formula, with the shipped default model (or ``model``).

    Raises :class:`~fh_screen.composition.FormulaError` naming the first bad formula.
    """
    if isinstance(formulas, str):
        formulas = [formulas]
    result = Predictor.from_name(model).predict_formulas(list(formulas))
    for error in result.errors:
        if error:
            raise FormulaError(error)
    for formula, flagged in zip(formulas, result.out_of_domain):
        if flagged:
            logger.warning("%s contains an element absent from the training data: prediction is out of domain", formula)
    return result.dhf_ev_per_atom
