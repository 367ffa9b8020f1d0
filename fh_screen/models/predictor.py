"""Predictor: load a trained model once, predict ΔH_f (eV/atom) for many compositions in batches."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np

from fh_screen.chem.formula import ELEMENTS_ABSENT_FROM_OQMD, FormulaError, formula_list, fraction_matrix, fractions_from_counts
from fh_screen.models.checkpoint import Checkpoint, ModelError, load_checkpoint
from fh_screen.models.ensemble import Model, model_for

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MODEL", "Prediction", "Predictor", "available_models", "check_model_reference", "load_predictor",
    "model_dirs", "model_file", "predict",
    "shipped_model_path", "split_model_reference",
]

#: Name of the shipped model used when none is given: an ensemble of ten attention networks over
#: the elements present (six ``attention`` and four ``attention-large`` members, weighted by the
#: inverse variance of their own σ heads), trained on train.csv only, with a calibrated σ.
#: ``paper-ensemble`` (the seed study's network, five seeds) and ``paper`` are the fast presets.
DEFAULT_MODEL = "attention-ensemble"


def model_dirs() -> list[Path]:
    """Folders searched for a model by name, first match wins.

    The user's models first: ``FH_SCREEN_MODEL_DIR`` (or ``model_dir`` in ``~/.fh_screen.yaml``)
    when set, else ``<data_dir>/models`` (where ``fh-screen finetune`` writes by default), then the
    package's own ``fh_screen/pretrained/``.
    """
    from fh_screen.settings import FhScreenSettings

    settings = FhScreenSettings()
    users = settings.model_dir if settings.model_dir is not None else Path(settings.data_dir) / "models"
    shipped = Path(str(resources.files("fh_screen") / "pretrained"))
    return [Path(users).expanduser(), shipped]


def available_models() -> list[str]:
    """Names of the models found in :func:`model_dirs` (``<folder>/<name>/model.pt``)."""
    names: set[str] = set()
    for root in model_dirs():
        if root.is_dir():
            names |= {p.name for p in root.iterdir() if p.is_dir() and (p / "model.pt").is_file()}
    return sorted(names)


def split_model_reference(reference: str) -> tuple[str, str | None]:
    """``(name, version)`` of a model reference: ``name`` or ``name@version`` (the form exports and the store record)."""
    name, sep, version = str(reference).partition("@")
    if sep and (not name.strip() or not version.strip()):
        raise ModelError(f"bad model reference {reference!r}: give NAME or NAME@VERSION")
    return name.strip(), (version.strip() if sep else None)


def _check_version(name: str, version: str | None, found: str) -> None:
    if version is not None and str(found) != version:
        raise ModelError(f"model {name!r} is version {found}, not {version!r} (one version per name is kept: "
                         f"give {name!r} or {name}@{found})")


def shipped_model_path(name: str = DEFAULT_MODEL) -> Path:
    """Path of a model's checkpoint by name or ``name@version`` (:func:`model_dirs`).

    Raises :class:`ModelError` if there is no such model, or if its card names another version.
    """
    name, version = split_model_reference(name)
    for root in model_dirs():
        path = root / name / "model.pt"
        if path.is_file():
            card_version = _card_version(path.parent) if version is not None else None
            if card_version is not None:
                _check_version(name, version, card_version)
            return path
    raise ModelError(f"no model named {name!r} ({_models_found()})")


def _models_found() -> str:
    """``shipped: a, b; yours in DIR: c`` — the models :func:`model_dirs` holds, told apart (for messages)."""
    users, shipped = model_dirs()

    def names(root: Path) -> list[str]:
        return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "model.pt").is_file()) if root.is_dir() else []

    mine = [n for n in names(users) if n not in names(shipped)]
    return f"shipped: {', '.join(names(shipped)) or 'none'}" + (f"; yours in {users}: {', '.join(mine)}" if mine else "")


def _card_version(directory: Path) -> str | None:
    import json

    try:
        card = json.loads((directory / "model_card.json").read_text())
    except (OSError, ValueError):
        return None  # no card: the checkpoint's own version is checked when it loads
    version = card.get("version") if isinstance(card, dict) else None
    return None if version is None else str(version)


def model_file(path: str | Path) -> Path:
    """The checkpoint of ``path``: the file itself, or the ``model.pt`` of a model folder (as ``train``,
    ``finetune --output`` and the shipped models lay one out: ``<folder>/model.pt`` beside its card).

    Raises :class:`ModelError` (one line) for a folder without a ``model.pt``.
    """
    path = Path(path)
    if path.expanduser().is_dir():
        inside = path / "model.pt"
        if not inside.expanduser().is_file():
            raise ModelError(f"model folder {path} holds no model.pt: give a model file, or the folder train or "
                             f"finetune wrote")
        return inside
    return path


def check_model_reference(model: str | Path | None) -> None:
    """Check a model as every door names it, without loading it: None (the default), a shipped or
    user model's name or ``name@version``, or a checkpoint path.

    Raises the one-line :class:`ModelError` the loading would raise: not a string or path, an
    empty name, a checkpoint file that does not exist, an unknown name, another version.
    """
    if model is None:
        return
    if not isinstance(model, (str, Path)):
        raise ModelError(f"model must be a shipped model name or a checkpoint path, got {type(model).__name__}")
    if not str(model).strip():
        raise ModelError(f"empty model name: give a shipped model name ({', '.join(available_models()) or 'none'}) "
                         f"or a checkpoint path")
    candidate = model_path_of(model)
    if candidate is not None:
        candidate = model_file(candidate)
        if not candidate.expanduser().is_file():
            raise ModelError(f"model file not found: {candidate}")
        return
    shipped_model_path(str(model))


def model_path_of(model: str | Path) -> Path | None:
    """``model`` as a checkpoint path when it names one, else None (a model name, looked up by name).

    A path is a ``.pt`` file, anything with a folder separator or ``~``, a file, or a folder holding
    ``model.pt``; a bare name is a name even where a folder of that name stands in the working
    directory without a model in it (a folder ``paper`` hid the shipped ``paper``).
    """
    import os

    text = str(model)
    candidate = Path(text)
    if isinstance(model, Path) or candidate.suffix == ".pt" or os.sep in text or (os.altsep and os.altsep in text) \
            or text.startswith("~"):
        return candidate
    if candidate.is_file() or (candidate / "model.pt").is_file():
        return candidate
    return None


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
        #: The loaded networks behind the :class:`~fh_screen.models.ensemble.Model` protocol.
        self.model: Model = model_for(checkpoint, batch_size=batch_size, threads=threads)
        seen = set(checkpoint.elements_in_training) or (set(checkpoint.elements) - ELEMENTS_ABSENT_FROM_OQMD)
        self._unseen_columns = np.array([i for i, s in enumerate(checkpoint.elements) if s not in seen], dtype=int)
        self._identity = checkpoint.identity()
        self._companions: dict[str, Predictor] = {}

    @classmethod
    def from_file(cls, path: str | Path, **kwargs) -> Predictor:
        """Load a checkpoint file written by :func:`fh_screen.models.checkpoint.save_checkpoint`, or the
        ``model.pt`` of a model folder (:func:`model_file`)."""
        path = model_file(path)
        return cls(load_checkpoint(path), path=path, **kwargs)

    @classmethod
    def from_name(cls, name_or_path: str | Path | None = None, **kwargs) -> Predictor:
        """A shipped model by name or ``name@version`` (default :data:`DEFAULT_MODEL`), or a checkpoint path
        (a file, or a model folder holding ``model.pt``)."""
        if name_or_path is None:
            name_or_path = DEFAULT_MODEL
        if not str(name_or_path).strip():
            check_model_reference(name_or_path)  # an empty name: one line
        candidate = model_path_of(name_or_path)
        if candidate is not None:
            return cls.from_file(candidate, **kwargs)
        name, version = split_model_reference(str(name_or_path))
        predictor = cls.from_file(shipped_model_path(str(name_or_path)), **kwargs)
        _check_version(name, version, predictor.version)
        return predictor

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
    def is_slow(self) -> bool:
        """True for a model a screen runs only on the best candidates of a fast prefilter (attention: ~50× slower)."""
        return self.model.slow

    @property
    def has_uncertainty(self) -> bool:
        """True when σ is reported: an ensemble (member spread) or a model with a σ head."""
        return self.model.has_uncertainty

    def predict_matrix(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Mean and σ of ΔH_f in eV/atom for fraction rows (fast path; σ is None for one MLP).

        Rows with a single element are pure elements: ΔH_f is 0 by definition, with σ 0.
        """
        if matrix.shape[1] != len(self.elements):
            raise ModelError(f"feature matrix has {matrix.shape[1]} columns, the model expects {len(self.elements)}")
        return self.model.predict_matrix(matrix)

    def predict_matrix_reference(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The same as :meth:`predict_matrix` through each member's module one by one (reference)."""
        return self.model.predict_matrix_reference(matrix)

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
        mean, std = self.model.predict_columns(fractions, columns)
        unseen = np.isin(columns, self._unseen_columns)
        out_of_domain = (fractions[:, unseen] > 0).any(axis=1) if unseen.any() else np.zeros(len(fractions), dtype=bool)
        return Prediction(mean, std, out_of_domain, [None] * len(fractions))


@lru_cache(maxsize=8)
def _load_cached(name: str, path: str | None, mtime_ns: int | None) -> Predictor:
    return Predictor.from_name(path or name)


def load_predictor(name_or_path: str | Path | Predictor | None = None) -> Predictor:
    """A shipped model by name or a checkpoint path, loaded once per process and then reused (a
    :class:`Predictor` given is returned as it is).

    The cache is keyed by the name, or by the resolved path and its modification time (a
    checkpoint written again is loaded again). Keep your own :class:`Predictor` to control
    threads or batch size.
    """
    if isinstance(name_or_path, Predictor):  # a model the caller loaded
        return name_or_path
    if name_or_path is not None and not isinstance(name_or_path, (str, Path)):
        check_model_reference(name_or_path)  # the one-line refusal of what is no model
    name = str(name_or_path) if name_or_path is not None else DEFAULT_MODEL
    if not name.strip():
        check_model_reference(name)
    candidate = model_path_of(name)
    if candidate is not None:
        try:
            resolved = model_file(candidate).expanduser().resolve()
            return _load_cached(name, str(resolved), resolved.stat().st_mtime_ns)
        except OSError:
            return Predictor.from_name(candidate)  # raises the one-line ModelError
    return _load_cached(name, None, None)


def predict(formulas: Sequence[str] | str, model: str | Path | None = None) -> np.ndarray:
    """ΔH_f in eV/atom for each formula, with the shipped default model (or ``model``).

    The model is loaded on the first call and kept (:func:`load_predictor`), so later calls cost
    milliseconds. Raises :class:`~fh_screen.chem.formula.FormulaError` naming the first bad formula.
    """
    formulas = formula_list(formulas)
    result = load_predictor(model).predict_formulas(formulas)
    for error in result.errors:
        if error:
            raise FormulaError(error)
    for formula, flagged in zip(formulas, result.out_of_domain):
        if flagged:
            logger.warning("%s contains an element absent from the training data: prediction is out of domain", formula)
    return result.dhf_ev_per_atom
