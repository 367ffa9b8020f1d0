"""Predictor: load a trained model once, predict ΔH_f (eV/atom) for many compositions in batches."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np

from fh_screen.chem.formula import ELEMENTS_ABSENT_FROM_OQMD, FormulaError, fraction_matrix, fractions_from_counts
from fh_screen.models.attention_inference import StackedAttentionEnsemble
from fh_screen.models.checkpoint import Checkpoint, ModelError, load_checkpoint
from fh_screen.models.stacked import StackedEnsemble
from fh_screen.models.torch_threads import torch_threads

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MODEL", "Prediction", "Predictor", "available_models", "load_predictor", "predict", "shipped_model_path",
]

#: Name of the shipped model used when none is given: an ensemble of ten attention networks over
#: the elements present (six ``attention`` and four ``attention-large`` members, weighted by the
#: inverse variance of their own σ heads), trained on train.csv only, with a calibrated σ.
#: ``paper-ensemble`` (the seed study's network, five seeds) and ``paper`` are the fast presets.
DEFAULT_MODEL = "attention-ensemble"


def available_models() -> list[str]:
    """Names of the models shipped inside the package (``fh_screen/models/pretrained/<name>/model.pt``)."""
    root = resources.files("fh_screen.models") / "pretrained"
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "model.pt").is_file())


def shipped_model_path(name: str = DEFAULT_MODEL) -> Path:
    """Path of a shipped model's checkpoint; :class:`ModelError` if there is no such model."""
    path = Path(str(resources.files("fh_screen.models") / "pretrained" / name / "model.pt"))
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
        if checkpoint.is_attention:
            specs = [checkpoint.spec_of(number) for number in range(len(self._members))]
            self._stacked = StackedAttentionEnsemble(self._members, specs)
        else:
            self._stacked = StackedEnsemble(self._members)
        seen = set(checkpoint.elements_in_training) or (set(checkpoint.elements) - ELEMENTS_ABSENT_FROM_OQMD)
        self._unseen_columns = np.array([i for i, s in enumerate(checkpoint.elements) if s not in seen], dtype=int)
        self._identity = checkpoint.identity()
        self._companions: dict[str, Predictor] = {}

    @classmethod
    def from_file(cls, path: str | Path, **kwargs) -> Predictor:
        """Load a checkpoint file written by :func:`fh_screen.models.checkpoint.save_checkpoint`."""
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

    def companion(self, name_or_path: str | Path) -> Predictor:
        """Another model (e.g. a screen's prefilter), loaded once per predictor and then reused."""
        key = str(name_or_path)
        if key not in self._companions:
            self._companions[key] = Predictor.from_name(name_or_path, threads=self.threads)
        return self._companions[key]

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
        """The model identity: sha256 over spec and tensors (see :meth:`Checkpoint.identity`).

        It does not depend on the file's timestamps or name, so the store recognises a model
        trained again bit for bit.
        """
        return self._identity

    @property
    def is_attention(self) -> bool:
        """True for the attention architecture: accurate, but ~50× slower than a fully connected one."""
        return self.checkpoint.is_attention

    @property
    def has_uncertainty(self) -> bool:
        """True when σ is reported: an ensemble (member spread) or a model with a σ head."""
        return len(self._members) > 1 or self.checkpoint.is_attention

    def predict_matrix(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Mean and σ of ΔH_f in eV/atom for fraction rows (fast path; σ is None for one MLP).

        Rows with a single element are pure elements: ΔH_f is 0 by definition, with σ 0.
        """
        if matrix.shape[1] != len(self.elements):
            raise ModelError(f"feature matrix has {matrix.shape[1]} columns, the model expects {len(self.elements)}")
        if self.checkpoint.is_attention:
            from fh_screen.models.attention import set_tensors

            return self.predict_sets(*set_tensors(matrix))
        columns = np.flatnonzero(np.any(matrix != 0, axis=0))
        mean, std = self._predict_columns(matrix[:, columns], columns)
        return self._pure_elements_zero((matrix > 0).sum(axis=1), mean, std)

    def predict_matrix_reference(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The same as :meth:`predict_matrix` through each member's module one by one (reference)."""
        import torch

        if self.checkpoint.is_attention:
            from fh_screen.models.attention import set_tensors

            indices, fractions = (torch.as_tensor(a) for a in set_tensors(matrix))
            with torch.inference_mode():
                outputs = [network(indices, fractions) for network in self._members]
            means = np.stack([m.float().numpy() for m, _ in outputs])
            logs = np.stack([b.float().numpy() for _, b in outputs])
            mean, std = self._combine_attention(means, logs)
        else:
            x = torch.as_tensor(np.ascontiguousarray(matrix, dtype=np.float32))
            with torch.inference_mode():
                outputs = np.stack([network(x).squeeze(-1).numpy() for network in self._members])
            mean, std = self._summarise(outputs)
        return self._pure_elements_zero((np.asarray(matrix) > 0).sum(axis=1), mean, std)

    def predict_sets(self, indices: np.ndarray, fractions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and calibrated σ (eV/atom) of an attention model for set tensors.

        ``indices`` are 1-based element columns (0 = padding) and ``fractions`` the amounts. The
        members run stacked (:class:`~fh_screen.models.attention_inference.StackedAttentionEnsemble`),
        rows grouped by their number of elements; :meth:`predict_matrix_reference` runs the same
        modules one by one.
        """
        with torch_threads(self.threads):  # the host's torch threads are restored afterwards
            means, log_scales = self._stacked.predict(indices, fractions)
        mean, std = self._combine_attention(means, log_scales)
        return self._pure_elements_zero((np.asarray(fractions) > 0).sum(axis=1), mean, std)

    def _combine_attention(self, means: np.ndarray, log_scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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

    @staticmethod
    def _pure_elements_zero(lengths: np.ndarray, mean: np.ndarray, std: np.ndarray | None):
        single = np.asarray(lengths) == 1
        if single.any():
            mean = np.where(single, 0.0, mean)
            if std is not None:
                std = np.where(single, 0.0, std)
        return mean, std

    def _predict_columns(self, x_columns: np.ndarray, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        with torch_threads(self.threads):
            return self._summarise(self._stacked.predict(x_columns, columns, self.batch_size))

    def _summarise(self, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        outputs = outputs * self.checkpoint.target_std_ev_per_atom + self.checkpoint.target_mean_ev_per_atom
        mean = outputs.mean(axis=0)
        std = outputs.std(axis=0, ddof=1) * self.checkpoint.sigma_scale if len(outputs) > 1 else None
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
        if self.checkpoint.is_attention:
            present = fractions > 0
            order = np.argsort(~present, axis=1, kind="stable")
            compact = np.take_along_axis(fractions, order, axis=1).astype(np.float32)
            indices = np.where(compact > 0, columns[order] + 1, 0).astype(np.int64)
            mean, std = self.predict_sets(indices, compact)
        else:
            mean, std = self._predict_columns(fractions, columns)
            mean, std = self._pure_elements_zero((fractions > 0).sum(axis=1), mean, std)
        unseen = np.isin(columns, self._unseen_columns)
        out_of_domain = (fractions[:, unseen] > 0).any(axis=1) if unseen.any() else np.zeros(len(fractions), dtype=bool)
        return Prediction(mean, std, out_of_domain, [None] * len(fractions))


@lru_cache(maxsize=8)
def _load_cached(name: str, path: str | None, mtime_ns: int | None) -> Predictor:
    return Predictor.from_name(path or name)


def load_predictor(name_or_path: str | Path | None = None) -> Predictor:
    """A shipped model by name or a checkpoint path, loaded once per process and then reused.

    The cache is keyed by the name, or by the resolved path and its modification time (a
    checkpoint written again is loaded again). Keep your own :class:`Predictor` to control
    threads or batch size.
    """
    name = str(name_or_path) if name_or_path is not None else DEFAULT_MODEL
    candidate = Path(name)
    if candidate.suffix == ".pt" or candidate.exists():
        try:
            resolved = candidate.expanduser().resolve()
            return _load_cached(name, str(resolved), resolved.stat().st_mtime_ns)
        except OSError:
            return Predictor.from_name(candidate)  # raises the one-line ModelError
    return _load_cached(name, None, None)


def predict(formulas: Sequence[str] | str, model: str | Path | None = None) -> np.ndarray:
    """ΔH_f in eV/atom for each formula, with the shipped default model (or ``model``).

    The model is loaded on the first call and kept (:func:`load_predictor`), so later calls cost
    milliseconds. Raises :class:`~fh_screen.chem.formula.FormulaError` naming the first bad formula.
    """
    if isinstance(formulas, str):
        formulas = [formulas]
    result = load_predictor(model).predict_formulas(list(formulas))
    for error in result.errors:
        if error:
            raise FormulaError(error)
    for formula, flagged in zip(formulas, result.out_of_domain):
        if flagged:
            logger.warning("%s contains an element absent from the training data: prediction is out of domain", formula)
    return result.dhf_ev_per_atom
