"""From OQMD files to a saved, documented model: split, featurise, train members, evaluate, save.

This is what ``fh-screen train`` and ``scripts/train_shipped_model.py`` run; the shipped model's
card records the exact command.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from fh_screen.models.calibration import TARGET_COVERAGE, calibrate_sigma_scale, interval_coverage
from fh_screen.chem.formula import DEFAULT_ELEMENTS, fraction_matrix
from fh_screen.data import OUTLIER_RANGE_EV_PER_ATOM, check_trainable, file_sha256, load_oqmd, split_frame
from fh_screen.io import atomic_write_text
from fh_screen.models.metrics import error_metrics
from fh_screen.models.attention import AttentionSpec
from fh_screen.models.checkpoint import Checkpoint, save_checkpoint
from fh_screen.models.mlp import PRESETS, NetworkSpec
from fh_screen.models.fit import EpochRecord, TrainConfig, TrainedNetwork, train_network
from fh_screen.errors import TrainingError

logger = logging.getLogger(__name__)

__all__ = ["TrainingRun", "calibrate_on_early_stopping_split", "train_model", "val_metrics",
           "write_card_files", "write_model_card"]


@dataclass
class TrainingRun:
    """A trained model: its checkpoint, the member histories and the validation metrics."""

    checkpoint: Checkpoint
    members: list[TrainedNetwork]
    metrics: dict


def _features(frame: pd.DataFrame, elements) -> np.ndarray:
    return fraction_matrix(frame["formula"].tolist(), elements).matrix


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
    train_frame, train_report = load_oqmd(train_path)
    if max_train_rows is not None and max_train_rows < len(train_frame):
        train_frame = train_frame.sample(n=max_train_rows, random_state=config.seed).reset_index(drop=True)
    check_trainable(train_frame, train_path)
    fit_frame, stop_frame = split_frame(train_frame, (1 - early_stopping_fraction, early_stopping_fraction), seed=config.seed)
    x_fit, x_stop = _features(fit_frame, elements), _features(stop_frame, elements)
    y_fit, y_stop = fit_frame["dhf_ev_per_atom"].to_numpy(), stop_frame["dhf_ev_per_atom"].to_numpy()

    # One target normalisation for every member, so they can be averaged in output space.
    members: list[TrainedNetwork] = []
    for member in range(n_members):
        member_config = replace(config, seed=config.seed + member)
        callback = (lambda record, m=member: on_epoch(m, record)) if on_epoch else None
        members.append(train_network(x_fit, y_fit, x_stop, y_stop, spec, member_config, callback))
    mean, std = members[0].target_mean_ev_per_atom, members[0].target_std_ev_per_atom

    present = (x_fit > 0).any(axis=0)
    checkpoint = Checkpoint(
        name=name or preset,
        version="1",
        spec=spec,
        elements=list(elements),
        elements_in_training=[s for s, seen in zip(elements, present) if seen],
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
    data = {
        "train_file": str(Path(train_path).name),
        "train_sha256": file_sha256(train_path),
        "train_cleaning": train_report.summary(),
        "n_fit": len(fit_frame),
        "n_early_stopping": len(stop_frame),
        "split_seed": config.seed,
        "outlier_filter_ev_per_atom": list(OUTLIER_RANGE_EV_PER_ATOM),
    }
    if val_path is not None:
        val_all, _ = load_oqmd(val_path, drop_outliers=False)
        metrics.update(val_metrics(checkpoint, val_all))
        data.update(val_file=str(Path(val_path).name), val_sha256=file_sha256(val_path), n_val=len(val_all))
    checkpoint.metadata = {
        **({"sigma_scale": checkpoint.sigma_scale} if n_members > 1 else {}),
        "data": data,
        "metrics": metrics,
        "training": {"config": config.as_dict(), "n_members": n_members, "preset": preset, "spec": spec.as_dict()},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "machine": f"{platform.machine()} {platform.system()}, {_cpu_count()} cores, torch {_torch_version()}",
    }
    return TrainingRun(checkpoint=checkpoint, members=members, metrics=metrics)


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

    if isinstance(checkpoint.spec, AttentionSpec) or len(checkpoint.member_state_dicts) < 2:
        raise TrainingError("σ calibration needs a fully connected ensemble of two or more members")
    checkpoint.metadata["sigma_scale"] = 1.0
    mean, raw_sigma = Predictor(checkpoint).predict_matrix(x_stop)
    errors = mean - np.asarray(y_stop_ev_per_atom, dtype=np.float64)
    scale = calibrate_sigma_scale(errors, raw_sigma, TARGET_COVERAGE)
    checkpoint.metadata["sigma_scale"] = scale
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


def _cpu_count() -> int:
    import os

    return os.cpu_count() or 1


def _torch_version() -> str:
    import torch

    return torch.__version__


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
    atomic_write_text(directory / "model_card.json", json.dumps(card, indent=1))
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
    (directory / "model_card.json").write_text(json.dumps(card, indent=1))
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
    (directory / "README.md").write_text("\n".join(lines))
    return directory


def _ensemble_label(checkpoint: Checkpoint) -> str:
    """``4 × attention d128 L3 h4 ff256 + 1 × attention d256 …`` for the members of a checkpoint."""
    from collections import Counter

    labels = [checkpoint.spec_of(i).label for i in range(len(checkpoint.member_state_dicts))]
    return " + ".join(f"{n} × {label}" for label, n in Counter(labels).items())
