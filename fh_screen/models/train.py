"""One orchestrator: from a training file to a saved, documented model, for every architecture.

Every model is made by the same steps, each written once here:

1. **carve** (:func:`carve_training_file`): load and clean the training file, optionally sample
   ``max_rows``, carve a seeded held-out share (``val.csv`` is never touched);
2. **fit members**: one network per member through the one loop,
   :func:`fh_screen.models.fit.fit`, with the member's architecture recipe and seed;
3. **checkpoint**: the members, the element list and one target normalisation;
4. **calibrate σ** (:func:`calibrate_sigma`) on the carve, so that ±1.645σ holds
   :data:`~fh_screen.models.calibration.TARGET_COVERAGE` of its errors;
5. **validate** (:func:`val_metrics`) on ``val.csv`` when given;
6. **card**: ``model.pt``, ``model_card.json`` and ``README.md``.

Two entry points configure these steps: :func:`train_model` (fully connected ensembles, trained
in memory: ``fh-screen train``, ``scripts/train_shipped_models.py``) and
:func:`run_attention_training` (attention recipes, each member resumable from its state file and
trainable in its own process: ``fh-screen train --recipe``, ``scripts/train_default_model.py``).
The shipped model's card records the exact command.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from fh_screen.chem.formula import DEFAULT_ELEMENTS, fraction_matrix
from fh_screen.data import OUTLIER_RANGE_EV_PER_ATOM, CleaningReport, check_trainable, file_sha256, load_oqmd, split_frame
from fh_screen.errors import TrainingError
from fh_screen.io import atomic_write, atomic_write_text, write_json
from fh_screen.models.attention import ATTENTION_PRESETS, AttentionRecipe, AttentionSpec, AttentionTrainConfig, set_tensors
from fh_screen.models.calibration import TARGET_COVERAGE, calibrate_sigma_scale, interval_coverage
from fh_screen.models.checkpoint import Checkpoint, save_checkpoint
from fh_screen.models.fit import EpochRecord, FitData, TrainedNetwork, fit
from fh_screen.models.metrics import error_metrics
from fh_screen.models.mlp import PRESETS, MlpRecipe, NetworkSpec, TrainConfig

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_RECIPE", "MODEL_VERSION", "AttentionData", "Carve", "EnsembleMember", "TrainingRun", "assemble_attention_model",
    "calibrate_on_early_stopping_split", "calibrate_sigma", "calibrate_sigma_scale", "carve_training_file",
    "check_model_folder", "parse_recipe",
    "prepare_attention_data", "run_attention_training", "train_attention_members", "train_model", "val_metrics",
    "write_attention_card", "write_card_files", "write_model_card",
]


def check_model_folder(directory: str | Path) -> Path:
    """``directory`` if a model folder can be written there (a folder, or one that can be made), checked
    before any training; else :class:`TrainingError` in one line (a training that ended on an
    unusable folder would be lost)."""
    directory = Path(directory).expanduser()
    if directory.exists() and not directory.is_dir():
        raise TrainingError(f"model folder {directory} is a file, not a folder")
    existing = next(p for p in (directory, *directory.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise TrainingError(f"model folder {directory} cannot be made: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise TrainingError(f"model folder {directory} cannot be written: {existing} is not writable")
    foreign = _files_a_training_did_not_write(directory) if directory.is_dir() else []
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise TrainingError(f"model folder {directory} holds files a training did not write ({shown}): "
                            "they would be overwritten or mixed with the model; give a new or empty folder")
    return directory


#: What a training writes in its model folder; a folder holding these alone is an earlier (or an
#: interrupted, resumable) training's and may be trained into again.
TRAINING_OUTPUTS = frozenset({"model.pt", "model_card.json", "README.md", "state", "train_carve.npz"})


def _files_a_training_did_not_write(directory: Path) -> list[str]:
    """The names in ``directory`` that no training writes there (sorted): a user's own files. A
    ``README.md`` counts as the user's unless the folder holds the model card it describes;
    hidden temporary files of an interrupted atomic write do not count."""
    names = sorted(p.name for p in directory.iterdir() if not (p.name.startswith(".") and ".tmp" in p.name))
    foreign = [name for name in names if name not in TRAINING_OUTPUTS]
    if "README.md" in names and "model_card.json" not in names:
        foreign.insert(0, "README.md")
    return foreign


def _read_val(val_path: str | Path | None) -> pd.DataFrame | None:
    """The validation file as the final metrics read it; read before any training, so that an unreadable one
    is refused up front."""
    return None if val_path is None else load_oqmd(val_path, drop_outliers=False)[0]


# --- 1. carve ---------------------------------------------------------------------------------

@dataclass
class Carve:
    """A cleaned training file split into the rows that fit and the seeded held-out rows."""

    fit: pd.DataFrame
    holdout: pd.DataFrame
    report: CleaningReport
    provenance: dict


def carve_training_file(train_path: str | Path, *, holdout_fraction: float = 0.05, seed: int = 0,
                        max_rows: int | None = None) -> Carve:
    """Load ``train_path`` (outliers dropped), sample ``max_rows`` (seeded), carve ``holdout_fraction``.

    ``provenance`` holds what every card records: file name and sha256, the cleaning summary,
    ``n_fit``, ``split_seed`` and the outlier filter. A ``seed`` outside 0 .. 2**32 - 1 or a
    ``max_rows`` below 1 raises :class:`TrainingError` before the file is read.
    """
    from fh_screen.errors import check_count, check_seed

    check_seed(seed, "seed", TrainingError)
    if max_rows is not None:
        check_count(max_rows, "max_rows", TrainingError)
    frame, report = load_oqmd(train_path)
    if max_rows is not None and max_rows < len(frame):
        frame = frame.sample(n=max_rows, random_state=seed).reset_index(drop=True)
    check_trainable(frame, train_path)
    fit_frame, holdout = split_frame(frame, (1 - holdout_fraction, holdout_fraction), seed=seed)
    provenance = {
        "train_file": str(Path(train_path).name),
        "train_sha256": file_sha256(train_path),
        "train_cleaning": report.summary(),
        "n_fit": len(fit_frame),
        "split_seed": seed,
        "outlier_filter_ev_per_atom": list(OUTLIER_RANGE_EV_PER_ATOM),
    }
    return Carve(fit_frame, holdout, report, provenance)


def _features(frame: pd.DataFrame, elements) -> np.ndarray:
    return fraction_matrix(frame["formula"].tolist(), elements).matrix


def _elements_seen(matrix: np.ndarray, elements) -> list[str]:
    present = (matrix > 0).any(axis=0)
    return [s for s, seen in zip(elements, present) if seen]


# --- 4. calibrate σ and 5. validate ---------------------------------------------------------------

def calibrate_sigma(checkpoint: Checkpoint, predict: Callable[[Checkpoint], tuple[np.ndarray, np.ndarray]],
                    y_ev_per_atom: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Fit ``checkpoint``'s σ scale on held-out rows and set it in its metadata.

    ``predict(checkpoint)`` gives (mean, σ) of the held-out rows; it is called with the scale at 1
    (the raw σ). Returns the scale, the predicted mean and the raw σ.
    """
    checkpoint.metadata["sigma_scale"] = 1.0
    mean, raw_sigma = predict(checkpoint)
    errors = mean - np.asarray(y_ev_per_atom, dtype=np.float64)
    scale = calibrate_sigma_scale(errors, raw_sigma, TARGET_COVERAGE)
    checkpoint.metadata["sigma_scale"] = scale
    return scale, mean, raw_sigma


def calibrate_on_early_stopping_split(checkpoint: Checkpoint, x_stop: np.ndarray, y_stop_ev_per_atom: np.ndarray) -> dict:
    """Fit the σ scale of an MLP ensemble on its early-stopping rows; set it on ``checkpoint``.

    The raw σ (the members' spread, scale 1) is measured on the rows, the factor is
    :func:`~fh_screen.models.calibration.calibrate_sigma_scale` of their errors and is stored as
    ``checkpoint.metadata["sigma_scale"]``. The rows also chose each member's best epoch, so
    their errors are slightly optimistic; the coverage on val is the independent check.

    Parameters
    ----------
    checkpoint
        An MLP ensemble (two or more members); its ``sigma_scale`` is replaced.
    x_stop
        Fraction matrix of the early-stopping rows.
    y_stop_ev_per_atom
        Their ΔH_f (eV/atom).

    Returns
    -------
    dict
        ``early_stopping_split`` (error metrics), ``sigma_scale`` and the split's coverage of
        ±1.645σ before (``early_stopping_coverage_1.645_sigma_raw``) and after
        (``early_stopping_coverage_1.645_sigma``) scaling.
    """
    from fh_screen.models.predictor import Predictor

    if not isinstance(checkpoint.spec, NetworkSpec) or len(checkpoint.member_state_dicts) < 2:
        raise TrainingError("σ calibration needs a fully connected ensemble of two or more members")
    scale, mean, raw_sigma = calibrate_sigma(checkpoint, lambda c: Predictor(c).predict_matrix(x_stop), y_stop_ev_per_atom)
    errors = mean - np.asarray(y_stop_ev_per_atom, dtype=np.float64)
    return {
        "early_stopping_split": error_metrics(y_stop_ev_per_atom, mean),
        "sigma_scale": scale,
        "early_stopping_coverage_1.645_sigma_raw": interval_coverage(errors, raw_sigma),
        "early_stopping_coverage_1.645_sigma": interval_coverage(errors, raw_sigma * scale),
    }


def val_metrics(checkpoint: Checkpoint, val_all: pd.DataFrame) -> dict:
    """Error metrics of ``checkpoint`` on a loaded val frame (outliers kept and marked), and σ coverage.

    Parameters
    ----------
    checkpoint
        The model, with its σ scale as it will ship.
    val_all
        ``load_oqmd(val_path, drop_outliers=False)[0]``.

    Returns
    -------
    dict
        ``val_all_rows``, ``val_abs_dhf_lt_5``, ``val_outlier_filtered`` and, for ensembles,
        ``val_coverage_1.645_sigma`` on the abs(ΔH_f) < 5 rows (as for the attention models).
    """
    from fh_screen.models.predictor import Predictor

    y_val = val_all["dhf_ev_per_atom"].to_numpy()
    predicted, sigma = Predictor(checkpoint).predict_matrix(_features(val_all, checkpoint.elements))
    inside = val_all["passed_outlier_filter"].to_numpy()
    small = np.abs(y_val) < 5
    metrics = {
        "val_all_rows": error_metrics(y_val, predicted),
        "val_abs_dhf_lt_5": error_metrics(y_val[small], predicted[small]),
        "val_outlier_filtered": error_metrics(y_val[inside], predicted[inside]),
    }
    if sigma is not None:
        metrics["val_coverage_1.645_sigma"] = interval_coverage(predicted[small] - y_val[small], sigma[small])
    return metrics


def _machine(device: str | None = None) -> str:
    import torch

    text = f"{platform.machine()} {platform.system()}, {os.cpu_count() or 1} cores, torch {torch.__version__}"
    return f"{text}, device {device}" if device else text


def _command() -> str:
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])


# --- fully connected ensembles ----------------------------------------------------------------

@dataclass
class TrainingRun:
    """A trained model: its checkpoint, the member histories and the validation metrics."""

    checkpoint: Checkpoint
    members: list[TrainedNetwork]
    metrics: dict


def train_model(
    train_path: str | Path,
    val_path: str | Path | None = None,
    *,
    preset: str = "paper",
    spec: NetworkSpec | None = None,
    config: TrainConfig = TrainConfig(),
    n_members: int = 1,
    early_stopping_fraction: float = 0.05,
    max_train_rows: int | None = None,
    name: str | None = None,
    on_epoch: Callable[[int, EpochRecord], None] | None = None,
) -> TrainingRun:
    """Train ``n_members`` networks of ``preset`` on ``train_path``; evaluate on ``val_path``.

    A random ``early_stopping_fraction`` of the training file (seeded) drives the LR schedule and
    early stopping, so ``val_path`` stays untouched until the final evaluation. Each ensemble
    member uses its own seed (``config.seed + member``); with ``n_members > 1`` the model reports
    the member spread as σ, scaled by a factor fitted on the early-stopping rows so that ±1.645σ
    holds :data:`~fh_screen.models.calibration.TARGET_COVERAGE` of their errors
    (``metadata["sigma_scale"]``; see :func:`calibrate_on_early_stopping_split`).
    """
    spec = spec or PRESETS[preset]
    elements = DEFAULT_ELEMENTS
    spec = replace(spec, n_inputs=len(elements))
    carve = carve_training_file(train_path, holdout_fraction=early_stopping_fraction, seed=config.seed, max_rows=max_train_rows)
    val_all = _read_val(val_path)
    fit_frame, stop_frame = carve.fit, carve.holdout
    x_fit, x_stop = _features(fit_frame, elements), _features(stop_frame, elements)
    y_fit, y_stop = fit_frame["dhf_ev_per_atom"].to_numpy(), stop_frame["dhf_ev_per_atom"].to_numpy()
    data = FitData((x_fit,), y_fit, (x_stop,), y_stop)

    # One target normalisation for every member, so they can be averaged in output space.
    members: list[TrainedNetwork] = []
    for member in range(n_members):
        recipe = MlpRecipe(spec, replace(config, seed=config.seed + member))
        callback = (lambda record, m=member: on_epoch(m, record)) if on_epoch else None
        members.append(fit(recipe, data, on_epoch=callback))
    mean, std = members[0].target_mean_ev_per_atom, members[0].target_std_ev_per_atom

    checkpoint = Checkpoint(
        name=name or preset,
        version="1",
        spec=spec,
        elements=list(elements),
        elements_in_training=_elements_seen(x_fit, elements),
        target_mean_ev_per_atom=mean,
        target_std_ev_per_atom=std,
        member_state_dicts=[m.state_dict for m in members],
    )
    metrics: dict = {
        "members_best_epoch": [m.best_epoch for m in members],
        "members_stopped": [m.stopped_reason for m in members],
        "seconds_per_epoch_median": float(np.median([r.seconds for m in members for r in m.history])),
    }
    if n_members > 1:
        metrics.update(calibrate_on_early_stopping_split(checkpoint, x_stop, y_stop))
    else:
        metrics["early_stopping_split"] = error_metrics(y_stop, _predict(checkpoint, x_stop))
    data = {**carve.provenance, "n_early_stopping": len(stop_frame)}
    if val_all is not None:
        metrics.update(val_metrics(checkpoint, val_all))
        data.update(val_file=str(Path(val_path).name), val_sha256=file_sha256(val_path), n_val=len(val_all))
    checkpoint.metadata = {
        **({"sigma_scale": checkpoint.sigma_scale} if n_members > 1 else {}),
        "data": data,
        "metrics": metrics,
        "training": {"config": config.as_dict(), "n_members": n_members, "preset": preset, "spec": spec.as_dict()},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": _command(),
        "machine": _machine(),
    }
    return TrainingRun(checkpoint=checkpoint, members=members, metrics=metrics)


def _predict(checkpoint: Checkpoint, matrix: np.ndarray) -> np.ndarray:
    from fh_screen.models.predictor import Predictor

    return Predictor(checkpoint).predict_matrix(matrix)[0]


def write_model_card(run: TrainingRun, directory: str | Path) -> Path:
    """Save ``model.pt``, ``model_card.json`` and a human ``README.md`` into ``directory``."""
    directory = Path(directory)
    save_checkpoint(run.checkpoint, directory / "model.pt")
    history = [[{"epoch": r.epoch, "train_mae": r.train_mae_ev_per_atom, "val_mae": r.val_mae_ev_per_atom} for r in m.history] for m in run.members]
    return write_card_files(run.checkpoint, directory, history)


def write_card_files(checkpoint: Checkpoint, directory: str | Path, history: list) -> Path:
    """Write ``model_card.json`` and ``README.md`` of a fully connected model (each atomically).

    Parameters
    ----------
    checkpoint
        The model as saved in ``directory / "model.pt"``; its metadata fills the card.
    directory
        The model folder.
    history
        Per member, the per-epoch records (``epoch``, ``train_mae``, ``val_mae``).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    card = {
        "name": checkpoint.name,
        "version": checkpoint.version,
        "identity_sha256": checkpoint.identity(),
        "architecture": checkpoint.spec.architecture,
        "n_members": len(checkpoint.member_state_dicts),
        "elements": f"{checkpoint.elements[0]}–{checkpoint.elements[-1]} ({len(checkpoint.elements)} slots)",
        **checkpoint.metadata,
        "history": history,
    }
    write_json(card, directory / "model_card.json")
    atomic_write_text(directory / "README.md", _card_markdown(card))
    return directory


def _card_markdown(card: dict) -> str:
    metrics = card["metrics"]
    lines = [
        f"# fh-screen model `{card['name']}` v{card['version']}",
        "",
        f"ElemNet-style fully connected network `{card['architecture']}` (ReLU, linear output) on element",
        f"fractions ({card['elements']}), {card['n_members']} member(s); predicts OQMD formation enthalpy in eV/atom.",
        "",
        "## Data",
        f"- train: `{card['data']['train_file']}` sha256 `{card['data']['train_sha256']}` ({card['data']['train_cleaning']})",
        f"- {card['data']['n_fit']} rows fit, {card['data']['n_early_stopping']} rows (seeded split) for LR schedule and early stopping",
    ]
    if "val_all_rows" in metrics:
        lines.append(f"- val: `{card['data']['val_file']}` sha256 `{card['data']['val_sha256']}`, {card['data']['n_val']} rows, never used in training")
    lines += ["", "## Uncertainty (σ)", *_sigma_lines(card)]
    if "val_all_rows" in metrics:
        lines += ["", "## Validation metrics (eV/atom)", "", "| rows | n | MAE | RMSE | p80 | p90 | R² |", "|---|---|---|---|---|---|---|"]
        for key, label in (("val_all_rows", "all"), ("val_abs_dhf_lt_5", "abs(ΔH_f) < 5")):
            m = metrics[key]
            lines.append(f"| {label} | {m['n']} | {m['mae_ev_per_atom']:.4f} | {m['rmse_ev_per_atom']:.4f} | {m['p80_ae_ev_per_atom']:.4f} | {m['p90_ae_ev_per_atom']:.4f} | {m['r2']:.4f} |")
    lines += ["", "## Provenance", f"- command: `{card['command']}`", f"- created: {card['created']}", f"- machine: {card['machine']}",
              f"- training config: `{json.dumps(card['training']['config'])}`"]
    if "recalibration" in card:
        recal = card["recalibration"]
        lines.append(f"- σ recalibrated after training (weights unchanged, v{recal['previous_version']} → v{card['version']}): "
                     f"`{recal['command']}` on {recal['date']}")
    lines += [f"- identity sha256 (spec, σ scale + tensors): `{card['identity_sha256']}`", ""]
    return "\n".join(lines)


def _sigma_lines(card: dict) -> list[str]:
    """How the card's σ is made and scaled (README lines)."""
    metrics = card["metrics"]
    if card["n_members"] < 2:
        return ["- single network: no σ"]
    spread = f"σ is the standard deviation (ddof=1) of the {card['n_members']} members' predictions"
    if "sigma_scale" not in card:
        return [f"- {spread}, not calibrated (raw spread)"]
    n_stop = metrics["early_stopping_split"]["n"]
    lines = [
        f"- {spread}, multiplied by {card['sigma_scale']:.3f}: the factor that puts {TARGET_COVERAGE:.0%} of the errors of the",
        f"  {n_stop} early-stopping rows (the seeded carve of train.csv above; val.csv is never used) within ±1.645σ",
        f"  (coverage there {metrics['early_stopping_coverage_1.645_sigma_raw']:.3f} raw → {metrics['early_stopping_coverage_1.645_sigma']:.3f} scaled)",
        "- the same rows chose each member's best epoch, so their errors are slightly optimistic; val coverage is the independent check",
    ]
    if "val_coverage_1.645_sigma" in metrics:
        raw = card.get("recalibration", {}).get("val_coverage_1.645_sigma_before")
        lines.append(f"- coverage of ±1.645σ on val (abs(ΔH_f) < 5): {metrics['val_coverage_1.645_sigma']:.3f}"
                     + (f" (raw spread before recalibration: {raw:.3f})" if raw is not None else ""))
    return lines


def write_attention_card(checkpoint: Checkpoint, directory: str | Path) -> Path:
    """Write ``model_card.json`` and ``README.md`` for an attention model saved as ``model.pt``."""
    directory = Path(directory)
    meta = checkpoint.metadata
    metrics = meta["metrics"]
    card = {
        "name": checkpoint.name,
        "version": checkpoint.version,
        "identity_sha256": checkpoint.identity(),
        "architecture": _ensemble_label(checkpoint),
        "n_members": len(checkpoint.member_state_dicts),
        "elements": f"{checkpoint.elements[0]}–{checkpoint.elements[-1]} ({len(checkpoint.elements)} slots)",
        **{k: v for k, v in meta.items() if k != "histories"},
        "history": meta.get("histories", []),
    }
    write_json(card, directory / "model_card.json")
    lines = [
        f"# fh-screen model `{checkpoint.name}` v{checkpoint.version}",
        "",
        f"An ensemble of {card['n_members']} attention networks ({card['architecture']}) over the elements present, each with a",
        "mean and a σ (Laplace scale b) head; the prediction is the "
        + ("mean of the members weighted by 1/b² of each member's own scale for that input"
           if meta.get("member_weighting") == "inverse_variance" else "ensemble mean")
        + ", and σ is the mixture's spread (the heads' scales and the members' disagreement),",
        f"scaled by {meta['sigma_scale']:.3f} so that 90% of held-out errors lie within ±1.645σ.",
        "Element vectors: matminer `MatscholarElementData` (mat2vec), stored in the checkpoint.",
        "",
        "## Data",
        f"- train: `{meta['data']['train_file']}` sha256 `{meta['data']['train_sha256']}` ({meta['data']['train_cleaning']})",
        f"- {meta['data']['n_fit']} rows fit; {meta['data']['n_holdout']} rows (seeded {meta['data']['holdout_fraction']:.0%} carve of train) calibrate σ",
        "- val.csv is never used in training or calibration; it gives the figures below",
        "",
        "## Metrics (eV/atom)",
        "",
        "| rows | n | MAE | p80 | p90 | R² |",
        "|---|---|---|---|---|---|",
    ]
    for key, label in (("holdout", "train holdout"), ("val_all_rows", "val, all rows"), ("val_abs_dhf_lt_5", "val, abs(ΔH_f) < 5")):
        if key in metrics:
            m = metrics[key]
            lines.append(f"| {label} | {m['n']} | {m['mae_ev_per_atom']:.4f} | {m['p80_ae_ev_per_atom']:.4f} | {m['p90_ae_ev_per_atom']:.4f} | {m['r2']:.4f} |")
    if "val_coverage_1.645_sigma" in metrics:
        lines.append(f"\nCoverage of ±1.645σ on val (abs(ΔH_f) < 5): {metrics['val_coverage_1.645_sigma']:.3f}")
    lines += ["", "## Provenance", f"- command: `{meta['command']}`", f"- machine: {meta['machine']}",
              f"- training config: `{json.dumps(meta['training']['config'])}`", f"- identity sha256: `{card['identity_sha256']}`", ""]
    atomic_write_text(directory / "README.md", "\n".join(lines))
    return directory


def _ensemble_label(checkpoint: Checkpoint) -> str:
    """``4 × attention d128 L3 h4 ff256 + 1 × attention d256 …`` for the members of a checkpoint."""
    from collections import Counter

    labels = [checkpoint.spec_of(i).label for i in range(len(checkpoint.member_state_dicts))]
    return " + ".join(f"{n} × {label}" for label, n in Counter(labels).items())


# --- attention ensembles ---------------------------------------------------------------------

@dataclass
class AttentionData:
    """Set tensors of the fit and holdout carves of a training file, with its provenance."""

    fit_indices: np.ndarray
    fit_fractions: np.ndarray
    fit_y_ev_per_atom: np.ndarray
    holdout_indices: np.ndarray
    holdout_fractions: np.ndarray
    holdout_y_ev_per_atom: np.ndarray
    elements_in_training: list[str]
    provenance: dict

    def save(self, path: str | Path) -> Path:
        """Write the arrays and provenance to one ``.npz`` (a cache; never committed)."""
        path = Path(path)
        arrays = {k: v for k, v in self.__dict__.items() if isinstance(v, np.ndarray)}
        meta = json.dumps({"elements_in_training": self.elements_in_training, "provenance": self.provenance})
        return atomic_write(path, lambda tmp: np.savez_compressed(tmp, **arrays, meta=meta), keep_suffix=True)

    def fit_data(self) -> FitData:
        """The set tensors as the training loop reads them."""
        return FitData((self.fit_indices, self.fit_fractions), self.fit_y_ev_per_atom,
                       (self.holdout_indices, self.holdout_fractions), self.holdout_y_ev_per_atom)

    @classmethod
    def load(cls, path: str | Path) -> AttentionData:
        """Inverse of :meth:`save`."""
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            arrays = {k: data[k] for k in data.files if k != "meta"}
        return cls(**arrays, **meta)


def prepare_attention_data(train_path: str | Path, *, holdout_fraction: float = 0.05, seed: int = 0, max_rows: int | None = None) -> AttentionData:
    """Load and clean ``train_path`` (outliers dropped), carve a seeded holdout, build set tensors."""
    carve = carve_training_file(train_path, holdout_fraction=holdout_fraction, seed=seed, max_rows=max_rows)
    fit_matrix = _features(carve.fit, DEFAULT_ELEMENTS)
    fit_idx, fit_frac = set_tensors(fit_matrix)
    hold_idx, hold_frac = set_tensors(_features(carve.holdout, DEFAULT_ELEMENTS), max_length=fit_idx.shape[1])
    return AttentionData(
        fit_idx, fit_frac, carve.fit["dhf_ev_per_atom"].to_numpy(np.float64),
        hold_idx, hold_frac, carve.holdout["dhf_ev_per_atom"].to_numpy(np.float64),
        elements_in_training=_elements_seen(fit_matrix, DEFAULT_ELEMENTS),
        provenance={**carve.provenance, "n_holdout": len(carve.holdout), "holdout_fraction": holdout_fraction, "max_rows": max_rows},
    )


@dataclass(frozen=True)
class EnsembleMember:
    """One member of an ensemble recipe: its preset, its number within that preset, its spec."""

    preset: str
    number: int
    spec: AttentionSpec
    #: this member's schedule length when the recipe sets one (``attention-large*4@30``), else the config's
    epochs: int | None = None

    @property
    def label(self) -> str:
        """``attention-2``: the state file's stem."""
        return f"{self.preset}-{self.number}"

    def config(self, base: AttentionTrainConfig) -> AttentionTrainConfig:
        """``base`` with this member's seed (``base.seed + number``) and its epochs, if the recipe sets them."""
        return replace(base, seed=base.seed + self.number, epochs=self.epochs or base.epochs)


#: The shipped default: six ``attention`` members (seeds 0-5, 60 epochs) and four
#: ``attention-large`` members (seeds 0-3, 30 epochs); see docs/model-experiments.md.
DEFAULT_RECIPE = "attention*6+attention-large*4@30"

#: Version written into assembled attention checkpoints (3: mixed widths, inverse-variance weighting).
MODEL_VERSION = "3"


def parse_recipe(recipe: str, element_features: str | None = None) -> list[EnsembleMember]:
    """Members of a recipe such as ``attention*6+attention-large*4@30`` (presets of ATTENTION_PRESETS).

    ``PRESET*N`` adds N members (numbers 0..N-1, seeds ``config.seed + number``); ``@E`` gives
    them a schedule of E epochs instead of the config's.
    """
    members: list[EnsembleMember] = []
    for part in recipe.replace(" ", "").split("+"):
        head, _, epochs = part.partition("@")
        preset, _, count = head.partition("*")
        if preset not in ATTENTION_PRESETS:
            raise TrainingError(f"unknown attention preset {preset!r} in recipe {recipe!r} (choose from {', '.join(ATTENTION_PRESETS)})")
        if (count and not count.isdigit()) or (epochs and not epochs.isdigit()) or (part.count("@") and not epochs):
            raise TrainingError(f"malformed recipe part {part!r} (use e.g. attention*4 or attention-large*4@30)")
        spec = ATTENTION_PRESETS[preset]
        if element_features:
            spec = replace(spec, element_features=element_features)
        members += [EnsembleMember(preset, k, spec, int(epochs) if epochs else None) for k in range(int(count or 1))]
    labels = [m.label for m in members]
    if len(set(labels)) != len(labels):
        raise TrainingError(f"recipe {recipe!r} names a preset twice: give each preset one part")
    return members


def _member_state(output_dir: Path, member: EnsembleMember) -> Path:
    return output_dir / "state" / f"{member.label}.pt"


def train_attention_members(
    data: AttentionData,
    output_dir: str | Path,
    members: list[EnsembleMember],
    config: AttentionTrainConfig,
    *,
    element_vectors: np.ndarray | None = None,
    on_epoch=None,
) -> None:
    """Train (or resume) ``members`` with :meth:`EnsembleMember.config` (seed and epochs per member)."""
    output_dir = Path(output_dir)
    (output_dir / "state").mkdir(parents=True, exist_ok=True)
    for member in members:
        member_config = member.config(config)
        callback = (lambda record, m=member: on_epoch(m, record)) if on_epoch else None
        fit(AttentionRecipe(member.spec, member_config, element_vectors), data.fit_data(),
            state_path=_member_state(output_dir, member), on_epoch=callback)


def assemble_attention_model(
    data: AttentionData,
    output_dir: str | Path,
    members: list[EnsembleMember],
    config: AttentionTrainConfig,
    *,
    name: str,
    val_path: str | Path | None = None,
    command: str | None = None,
    member_weighting: str = "inverse_variance",
):
    """Join finished members into one checkpoint, calibrate σ on the holdout, evaluate on val.

    ``member_weighting`` is how the predictor combines the members (``inverse_variance``: each
    member weighted by 1/b² of its own Laplace scale for that input; ``mean``: equal weights).
    """
    import torch

    from fh_screen.models.predictor import Predictor

    output_dir = Path(output_dir)
    states, histories = [], []
    for member in members:
        path = _member_state(output_dir, member)
        if not path.is_file():
            raise FileNotFoundError(f"member {member.label} has no training state at {path}: train it first")
        state = torch.load(path, map_location="cpu", weights_only=True)
        member_config = member.config(config)
        if state.get("config") != member_config.identity():
            raise TrainingError(f"training state {path} belongs to another run (settings differ from the recipe's): re-train {member.label}")
        if state["epoch"] < member_config.epochs:
            raise TrainingError(f"member {member.label} stopped at epoch {state['epoch']} of {member_config.epochs}: re-run to resume it")
        states.append(state["ema"])
        histories.append(state["history"])
    y = data.fit_y_ev_per_atom
    specs = [m.spec for m in members]
    checkpoint = Checkpoint(
        name=name, version=MODEL_VERSION, spec=specs[0], elements=list(_elements(specs[0])),
        elements_in_training=data.elements_in_training,
        target_mean_ev_per_atom=float(np.mean(y)), target_std_ev_per_atom=float(np.std(y)),
        member_state_dicts=states, metadata={"sigma_scale": 1.0, "member_weighting": member_weighting},
        member_specs=specs if len(set(specs)) > 1 else None,
    )
    scale, hold_mean, _ = calibrate_sigma(
        checkpoint, lambda c: Predictor(c).model.predict_sets(data.holdout_indices, data.holdout_fractions), data.holdout_y_ev_per_atom)
    metrics: dict = {"holdout": error_metrics(data.holdout_y_ev_per_atom, hold_mean),
                     "holdout_coverage_1.645_sigma": TARGET_COVERAGE, "sigma_scale": scale}
    if val_path is not None:
        val_all, _ = load_oqmd(val_path, drop_outliers=False)
        metrics.update({"val_sha256": file_sha256(val_path), **val_metrics(checkpoint, val_all)})
    checkpoint.metadata.update({
        "data": data.provenance | ({"val_file": Path(val_path).name} if val_path else {}),
        "metrics": metrics,
        "training": {"config": config.as_dict(), "n_members": len(members), "kind": "attention",
                     "members": [{"label": m.label, "spec": m.spec.as_dict(), "seed": m.config(config).seed,
                                  "epochs": m.config(config).epochs} for m in members]},
        "histories": histories,
        "command": command or _command(),
        "machine": _machine(config.device),
    })
    return checkpoint


def _elements(spec: AttentionSpec) -> tuple[str, ...]:
    return DEFAULT_ELEMENTS[: spec.n_elements]


def run_attention_training(
    train_path: str | Path,
    output_dir: str | Path,
    *,
    recipe: str = DEFAULT_RECIPE,
    config: AttentionTrainConfig = AttentionTrainConfig(),
    val_path: str | Path | None = None,
    member_ids: list[int] | None = None,
    cache: str | Path | None = None,
    element_vectors: np.ndarray | None = None,
    element_features: str | None = None,
    assemble: bool = True,
    name: str = "attention-ensemble",
    command: str | None = None,
    note: str = "",
    max_rows: int | None = None,
    on_epoch=None,
):
    """The whole resumable pipeline behind ``fh-screen train --recipe`` and the training script.

    Featurises ``train_path`` once (cached in ``cache``, default ``<output>/train_carve.npz``),
    trains the recipe's members (or only ``member_ids``), then, unless ``assemble`` is false,
    writes ``model.pt``, ``model_card.json`` and ``README.md`` into ``output_dir`` and returns
    the checkpoint.
    """
    output_dir = check_model_folder(output_dir)
    if assemble:
        _read_val(val_path)  # an unreadable validation file is refused before the members train
    cache = Path(cache) if cache else output_dir / "train_carve.npz"
    if cache.is_file():
        data = AttentionData.load(cache)
        expected = {"max_rows": max_rows, "split_seed": config.seed}
        if Path(train_path).is_file():
            expected["train_sha256"] = file_sha256(train_path)
        stale = {k for k, v in expected.items() if data.provenance.get(k) != v}
        if stale:
            raise TrainingError(f"feature cache {cache} was made from other data ({', '.join(sorted(stale))} differ): delete it or pass another --cache")
    else:
        data = prepare_attention_data(train_path, seed=config.seed, max_rows=max_rows)
        cache.parent.mkdir(parents=True, exist_ok=True)
        data.save(cache)
    members = parse_recipe(recipe, element_features)
    chosen = [members[i] for i in member_ids] if member_ids is not None else members
    train_attention_members(data, output_dir, chosen, config, element_vectors=element_vectors, on_epoch=on_epoch)
    if not assemble:
        return None
    checkpoint = assemble_attention_model(data, output_dir, members, config, name=name, val_path=val_path, command=command)
    if note:
        checkpoint.metadata["training"]["note"] = note
    save_checkpoint(checkpoint, output_dir / "model.pt")
    write_attention_card(checkpoint, output_dir)
    return checkpoint
