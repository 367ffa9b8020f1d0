"""Reproduction of the seed study: 10-fold CV (Fig. 5/6), data size (Fig. 4), architectures (Fig. 2, 3).

Every study trains with :func:`fh_screen.models.fit.train_network` (no second training loop):
a seeded ``early_stopping_fraction`` of each training part drives the LR schedule and early
stopping, and the metrics come from :func:`fh_screen.models.metrics.error_metrics` on data the network
never saw. ``run_*`` functions add provenance and write the JSON and PNG files; the figure
writers import matplotlib (Agg backend) lazily.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from fh_screen.chem.formula import DEFAULT_ELEMENTS, fraction_matrix
from fh_screen.data import OUTLIER_RANGE_EV_PER_ATOM, file_sha256, kfold_indices, load_oqmd
from fh_screen.errors import FhScreenError
from fh_screen.io import save_figure
from fh_screen.models.mlp import PRESETS, NetworkSpec, build_network
from fh_screen.models.fit import EpochRecord, TrainConfig, TrainedNetwork, train_network
from fh_screen.models.metrics import error_metrics

logger = logging.getLogger(__name__)

__all__ = [
    "ARCHITECTURE_PRESETS",
    "DATA_SIZES",
    "SEED_STUDY",
    "CrossValidationResult",
    "RunResult",
    "StudyData",
    "StudyError",
    "architecture_study",
    "cross_validate",
    "data_size_study",
    "load_study_data",
    "overfit_study",
    "provenance",
    "write_architecture_figure",
    "write_cv_figure",
    "write_loss_curves_figure",
    "write_size_figure",
]

#: The seed study's headline figures (eV/atom): 10-fold CV MAE and the 80th/90th error percentiles.
SEED_STUDY = {"mae_ev_per_atom": 0.075, "p80_ae_ev_per_atom": 0.080, "p90_ae_ev_per_atom": 0.180}
#: Training-set sizes of the seed's Fig. 4 (``None`` = all rows).
DATA_SIZES: tuple[int | None, ...] = (5000, 10000, 50000, None)
#: Architectures of the seed's Fig. 2, smallest first.
ARCHITECTURE_PRESETS: tuple[str, ...] = ("fig2-32", "fig2-64", "fig2-96", "fig2-128")

#: ``on_epoch(run_label, record)`` — called after every epoch of every run (progress bars).
EpochCallback = Callable[[str, EpochRecord], None]
#: ``on_run(run_label, result)`` — called when a run (fold, size, architecture) finishes.
RunCallback = Callable[[str, "RunResult"], None]


class StudyError(FhScreenError):
    """Bad study settings (fold count, sizes, presets); one-line message."""


@dataclass
class StudyData:
    """Feature matrix and targets of one or more cleaned OQMD files, with their provenance."""

    formulas: list[str]
    x: np.ndarray
    y_ev_per_atom: np.ndarray
    sources: list[dict]

    def __len__(self) -> int:
        return len(self.y_ev_per_atom)

    def subset(self, rows: np.ndarray) -> StudyData:
        """The rows ``rows`` (same sources)."""
        return StudyData([self.formulas[i] for i in rows], self.x[rows], self.y_ev_per_atom[rows], self.sources)


def load_study_data(
    paths: Sequence[str | Path],
    *,
    elements: Sequence[str] = DEFAULT_ELEMENTS,
    max_rows: int | None = None,
    seed: int = 0,
) -> StudyData:
    """Union of the cleaned OQMD files ``paths`` (outliers dropped, lowest ΔH_f per composition).

    ``max_rows`` keeps a seeded random subset (quick runs and tests); a ``seed`` outside
    0 .. 2**32 - 1 or a ``max_rows`` below 1 raises :class:`StudyError`.
    """
    from fh_screen.errors import check_count, check_seed

    check_seed(seed, "seed", StudyError)
    if max_rows is not None:
        check_count(max_rows, "max_rows", StudyError)
    frames, sources = [], []
    for path in paths:
        frame, report = load_oqmd(path)
        frames.append(frame)
        sources.append({"file": str(path), "sha256": file_sha256(path), "cleaning": report.summary(), "n_rows": len(frame)})
    frame = pd.concat(frames, ignore_index=True).sort_values("dhf_ev_per_atom", kind="stable")
    frame = frame.drop_duplicates("formula", keep="first").sort_index().reset_index(drop=True)
    if max_rows is not None and max_rows < len(frame):
        keep = np.sort(np.random.default_rng(seed).choice(len(frame), size=max_rows, replace=False))
        frame = frame.iloc[keep].reset_index(drop=True)
    formulas = frame["formula"].tolist()
    x = fraction_matrix(formulas, elements).matrix
    return StudyData(formulas, x, frame["dhf_ev_per_atom"].to_numpy(dtype=float), sources)


@dataclass
class RunResult:
    """One trained network: where its data came from, its history and its held-out metrics."""

    label: str
    spec: NetworkSpec
    n_fit: int
    n_early_stopping: int
    metrics: dict
    history: list[EpochRecord]
    best_epoch: int
    stopped_reason: str
    seconds: float
    config: TrainConfig = field(default_factory=TrainConfig)
    predictions_ev_per_atom: np.ndarray = field(repr=False, default_factory=lambda: np.empty(0))

    def summary(self) -> dict:
        """JSON-ready summary (histories as compact lists)."""
        return {
            "label": self.label,
            "architecture": self.spec.architecture,
            "n_parameters": count_parameters(self.spec),
            "n_fit": self.n_fit,
            "n_early_stopping": self.n_early_stopping,
            "metrics": self.metrics,
            "best_epoch": self.best_epoch,
            "epochs_run": len(self.history),
            "stopped_reason": self.stopped_reason,
            "seconds": round(self.seconds, 2),
            "training_config": self.config.as_dict(),
            "seconds_per_epoch_median": float(np.median([r.seconds for r in self.history])) if self.history else None,
            "history": {
                "train_mae_ev_per_atom": [round(r.train_mae_ev_per_atom, 5) for r in self.history],
                "val_mae_ev_per_atom": [round(r.val_mae_ev_per_atom, 5) for r in self.history],
                "learning_rate": [r.learning_rate for r in self.history],
            },
        }


def count_parameters(spec: NetworkSpec) -> int:
    """Trainable parameters of ``spec``."""
    return int(sum(p.numel() for p in build_network(spec).parameters()))


def predict_trained(trained: TrainedNetwork, x: np.ndarray, batch_size: int = 8192) -> np.ndarray:
    """ΔH_f (eV/atom) of the best state of ``trained`` for fraction rows ``x``."""
    import torch

    network = build_network(trained.spec)
    network.load_state_dict(trained.state_dict)
    network.eval()
    xt = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32))
    with torch.inference_mode():
        out = torch.cat([network(xt[i:i + batch_size]).squeeze(-1) for i in range(0, len(xt), batch_size)]).numpy()
    return out.astype(float) * trained.target_std_ev_per_atom + trained.target_mean_ev_per_atom


def _holdout_split(n_rows: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n_rows)
    n_stop = max(1, int(round(fraction * n_rows)))
    return np.sort(order[n_stop:]), np.sort(order[:n_stop])


def fit_and_evaluate(
    label: str,
    x_train: np.ndarray,
    y_train_ev_per_atom: np.ndarray,
    x_test: np.ndarray,
    y_test_ev_per_atom: np.ndarray,
    spec: NetworkSpec,
    config: TrainConfig,
    *,
    early_stopping_fraction: float = 0.05,
    on_epoch: EpochCallback | None = None,
) -> RunResult:
    """Hold ``early_stopping_fraction`` of the training rows out for early stopping, train, test."""
    if not 0 < early_stopping_fraction < 1:
        raise StudyError(f"early-stopping fraction must be between 0 and 1, got {early_stopping_fraction}")
    spec = replace(spec, n_inputs=x_train.shape[1])
    fit, stop = _holdout_split(len(x_train), early_stopping_fraction, config.seed)
    started = time.perf_counter()
    callback = (lambda record: on_epoch(label, record)) if on_epoch else None
    trained = train_network(x_train[fit], y_train_ev_per_atom[fit], x_train[stop], y_train_ev_per_atom[stop], spec, config, callback)
    predicted = predict_trained(trained, x_test)
    return RunResult(
        label=label,
        spec=spec,
        n_fit=len(fit),
        n_early_stopping=len(stop),
        metrics=error_metrics(y_test_ev_per_atom, predicted),
        history=trained.history,
        best_epoch=trained.best_epoch,
        stopped_reason=trained.stopped_reason,
        seconds=time.perf_counter() - started,
        config=config,
        predictions_ev_per_atom=predicted,
    )


# --------------------------------------------------------------------------- cross-validation


@dataclass
class CrossValidationResult:
    """Out-of-fold predictions of a k-fold cross-validation and the per-fold runs."""

    y_ev_per_atom: np.ndarray
    oof_prediction_ev_per_atom: np.ndarray
    test_indices: list[np.ndarray]
    folds: list[RunResult]

    def summary(self) -> dict:
        """Mean ± std of the per-fold MAE, pooled out-of-fold metrics and the error CDF."""
        maes = np.array([f.metrics["mae_ev_per_atom"] for f in self.folds])
        errors = np.abs(self.oof_prediction_ev_per_atom - self.y_ev_per_atom)
        return {
            "n_folds": len(self.folds),
            "n_rows": int(len(self.y_ev_per_atom)),
            "fold_mae_mean_ev_per_atom": float(maes.mean()),
            "fold_mae_std_ev_per_atom": float(maes.std(ddof=1)) if len(maes) > 1 else 0.0,
            "fold_mae_ev_per_atom": [float(m) for m in maes],
            "pooled_out_of_fold": error_metrics(self.y_ev_per_atom, self.oof_prediction_ev_per_atom),
            "pooled_out_of_fold_abs_dhf_lt_5": error_metrics(
                self.y_ev_per_atom[np.abs(self.y_ev_per_atom) < 5],
                self.oof_prediction_ev_per_atom[np.abs(self.y_ev_per_atom) < 5],
            ),
            "fraction_of_errors_below_ev_per_atom": {
                f"{t:.3f}": float(np.mean(errors < t)) for t in (0.05, 0.075, 0.08, 0.1, 0.18, 0.25, 0.5)
            },
            "error_percentiles_ev_per_atom": {str(q): float(np.percentile(errors, q)) for q in (10, 25, 50, 75, 80, 90, 95, 99)},
        }


def cross_validate(
    data: StudyData,
    spec: NetworkSpec = PRESETS["paper"],
    config: TrainConfig = TrainConfig(),
    *,
    n_folds: int = 10,
    seed: int = 0,
    early_stopping_fraction: float = 0.05,
    on_epoch: EpochCallback | None = None,
    on_run: RunCallback | None = None,
) -> CrossValidationResult:
    """Shuffled ``n_folds``-fold CV (:func:`fh_screen.data.kfold_indices` from ``seed``).

    Fold ``k`` trains on the other folds (less its early-stopping holdout) with seed
    ``config.seed + k`` and predicts fold ``k``; every row gets exactly one out-of-fold prediction.
    """
    if n_folds < 2:
        raise StudyError(f"cross-validation needs at least 2 folds, got {n_folds}")
    if len(data) < n_folds * 2:
        raise StudyError(f"{len(data)} rows are too few for {n_folds}-fold cross-validation")
    oof = np.full(len(data), np.nan)
    folds: list[RunResult] = []
    test_indices: list[np.ndarray] = []
    for k, (train_rows, test_rows) in enumerate(kfold_indices(len(data), n_folds, seed)):
        label = f"fold {k + 1}/{n_folds}"
        result = fit_and_evaluate(
            label, data.x[train_rows], data.y_ev_per_atom[train_rows], data.x[test_rows], data.y_ev_per_atom[test_rows],
            spec, replace(config, seed=config.seed + k), early_stopping_fraction=early_stopping_fraction, on_epoch=on_epoch,
        )
        oof[test_rows] = result.predictions_ev_per_atom
        folds.append(result)
        test_indices.append(test_rows)
        logger.info("%s: MAE %.4f eV/atom", label, result.metrics["mae_ev_per_atom"])
        if on_run is not None:
            on_run(label, result)
    return CrossValidationResult(data.y_ev_per_atom, oof, test_indices, folds)


# --------------------------------------------------------------------------- data size, architectures


def data_size_study(
    train: StudyData,
    test: StudyData,
    sizes: Sequence[int | None] = DATA_SIZES,
    spec: NetworkSpec = PRESETS["paper"],
    config: TrainConfig = TrainConfig(),
    *,
    seed: int = 0,
    early_stopping_fraction: float = 0.05,
    on_epoch: EpochCallback | None = None,
    on_run: RunCallback | None = None,
) -> list[RunResult]:
    """Train on nested random subsets of ``train`` (``None`` = all rows); test each on ``test``.

    The subsets are prefixes of one seeded permutation, so every smaller set is inside the larger.
    """
    order = np.random.default_rng(seed).permutation(len(train))
    runs = []
    for size in sizes:
        if size is not None and not 10 <= size:
            raise StudyError(f"training-set size must be at least 10 rows, got {size}")
        n = len(train) if size is None or size >= len(train) else int(size)
        rows = np.sort(order[:n])
        runs.append((f"{n} rows", train.x[rows], train.y_ev_per_atom[rows], spec))
    return _fit_each(runs, test, config, early_stopping_fraction, on_epoch, on_run)


def _fit_each(runs, test: StudyData, config: TrainConfig, early_stopping_fraction: float,
              on_epoch: EpochCallback | None, on_run: RunCallback | None) -> list[RunResult]:
    """Train and test each ``(label, x, y_ev_per_atom, spec)`` in turn, reporting each run."""
    results = []
    for label, x, y, spec in runs:
        result = fit_and_evaluate(label, x, y, test.x, test.y_ev_per_atom, spec, config,
                                  early_stopping_fraction=early_stopping_fraction, on_epoch=on_epoch)
        results.append(result)
        if on_run is not None:
            on_run(label, result)
    return results


def architecture_study(
    train: StudyData,
    test: StudyData,
    presets: Sequence[str] = ARCHITECTURE_PRESETS,
    config: TrainConfig = TrainConfig(),
    *,
    early_stopping_fraction: float = 0.05,
    on_epoch: EpochCallback | None = None,
    on_run: RunCallback | None = None,
) -> list[RunResult]:
    """Train each preset (Fig. 2) on ``train`` with the same config and seed; test on ``test``."""
    unknown = [p for p in presets if p not in PRESETS]
    if unknown:
        raise StudyError(f"unknown preset(s) {', '.join(unknown)} (choose from {', '.join(PRESETS)})")
    runs = [(preset, train.x, train.y_ev_per_atom, PRESETS[preset]) for preset in presets]
    return _fit_each(runs, test, config, early_stopping_fraction, on_epoch, on_run)


def overfit_study(
    train: StudyData,
    test: StudyData,
    spec: NetworkSpec = PRESETS["overfit"],
    config: TrainConfig = TrainConfig(epochs=150),
    *,
    early_stopping_fraction: float = 0.05,
    constant_learning_rate: bool = True,
    on_epoch: EpochCallback | None = None,
) -> RunResult:
    """Train ``spec`` (Fig. 3's 256x2+128x2+64x2+32+1) with early stopping disabled.

    With ``constant_learning_rate`` the plateau schedule never lowers the LR either (it would
    freeze the weights and hide the divergence). The history holds training MAE and held-out
    (early-stopping split) MAE per epoch, so the curves show the gap opening; the test metrics
    are those of the best epoch.
    """
    config = replace(config, early_stopping_patience=config.epochs + 1)
    if constant_learning_rate:
        config = replace(config, schedule="plateau", lr_patience=config.epochs + 1)
    return fit_and_evaluate("overfit", train.x, train.y_ev_per_atom, test.x, test.y_ev_per_atom, spec, config,
                            early_stopping_fraction=early_stopping_fraction, on_epoch=on_epoch)


# --------------------------------------------------------------------------- provenance and files


def provenance(config: TrainConfig, sources: Sequence[dict], started: float, **extra) -> dict:
    """Command, caps, data hashes, seconds and machine of a study run."""
    import torch

    return {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 1),
        "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} cores (shared), torch {torch.__version__}, "
                   f"{config.threads} thread(s)",
        "training_config": config.as_dict(),
        "data": list(sources),
        "outlier_filter_ev_per_atom": list(OUTLIER_RANGE_EV_PER_ATOM),
        **extra,
    }


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, path, dpi=90, bbox_inches="tight")


def write_cv_figure(result: CrossValidationResult, path: str | Path) -> Path:
    """Fig. 6 (parity plot with y = x; error CDF with 80%/90% marks) and Fig. 5 (fold-1 loss curves)."""
    plt = _pyplot()
    y, pred = result.y_ev_per_atom, result.oof_prediction_ev_per_atom
    errors = np.sort(np.abs(pred - y))
    summary = result.summary()
    fig, (ax_parity, ax_cdf, ax_loss) = plt.subplots(1, 3, figsize=(14, 4.2))
    low, high = float(min(y.min(), pred.min())), float(max(y.max(), pred.max()))
    hb = ax_parity.hexbin(pred, y, gridsize=120, bins="log", mincnt=1, cmap="viridis", extent=(low, high, low, high))
    fig.colorbar(hb, ax=ax_parity, label="compositions (log)")
    ax_parity.plot([low, high], [low, high], "r-", lw=0.8, label="y = x")
    ax_parity.set(xlabel="predicted ΔH_f (eV/atom)", ylabel="DFT ΔH_f (eV/atom)",
                  title=f"{summary['n_folds']}-fold CV, n = {len(y)}: MAE {summary['fold_mae_mean_ev_per_atom']:.3f} "
                        f"± {summary['fold_mae_std_ev_per_atom']:.3f}")
    ax_parity.legend(loc="upper left")
    ax_cdf.plot(errors, np.arange(1, len(errors) + 1) / len(errors), "b-")
    for q, colour in ((80, "g"), (90, "m")):
        value = float(np.percentile(errors, q))
        ax_cdf.axhline(q / 100, color=colour, ls=":", lw=0.8)
        ax_cdf.axvline(value, color=colour, ls="--", lw=0.8, label=f"{q}% < {value:.3f} eV/atom")
        seed_value = SEED_STUDY[f"p{q}_ae_ev_per_atom"]
        ax_cdf.plot([seed_value], [q / 100], marker="x", color=colour, ms=8, ls="none", label=f"seed study {q}% < {seed_value:.3f}")
    ax_cdf.set(xlim=(0, max(0.5, float(np.percentile(errors, 95)))), ylim=(0, 1), xlabel="|error| (eV/atom)",
               ylabel="cumulative fraction", title="error CDF (out-of-fold)")
    ax_cdf.legend(loc="lower right", fontsize=8)
    history = result.folds[0].history
    epochs = [r.epoch for r in history]
    ax_loss.plot(epochs, [r.train_mae_ev_per_atom for r in history], label="loss (train MAE)")
    ax_loss.plot(epochs, [r.val_mae_ev_per_atom for r in history], label="val loss (early-stopping split)")
    ax_loss.axhline(result.folds[0].metrics["mae_ev_per_atom"], color="k", ls=":", lw=0.8,
                    label=f"test fold MAE {result.folds[0].metrics['mae_ev_per_atom']:.3f}")
    ax_loss.set(xlabel="epoch", ylabel="MAE (eV/atom)", title="fold 1 training (Fig. 5)", ylim=(0, None))
    ax_loss.legend(fontsize=8)
    fig.tight_layout()
    out = _save(fig, path)
    plt.close(fig)
    return out


def _mae_figure(x: Sequence[float], maes: Sequence[float], path: str | Path, figsize: tuple[float, float], **axes) -> Path:
    """A line of val MAEs with each value written beside its point; ``axes`` go to ``ax.set``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=figsize)
    ax.plot(x, maes, "o-")
    for position, mae in zip(x, maes):
        ax.annotate(f"{mae:.3f}", (position, mae), textcoords="offset points", xytext=(4, 6), fontsize=8)
    ticks = axes.pop("xticklabels", None)
    if ticks is not None:
        ax.set_xticks(list(x), ticks, fontsize=7)
    ax.set(ylabel="MAE on val.csv (eV/atom)", ylim=(0, None), **axes)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = _save(fig, path)
    plt.close(fig)
    return out


def write_size_figure(results: Sequence[RunResult], path: str | Path) -> Path:
    """Fig. 4: test MAE against training-set size."""
    sizes = [r.n_fit + r.n_early_stopping for r in results]
    return _mae_figure(sizes, [r.metrics["mae_ev_per_atom"] for r in results], path, (5.5, 4), xscale="log",
                       xlabel="training-set size (compositions)", title="accuracy vs data size (Fig. 4)")


def write_architecture_figure(results: Sequence[RunResult], path: str | Path) -> Path:
    """Fig. 2: test MAE per architecture label."""
    labels = [f"{r.spec.architecture}\n({count_parameters(r.spec):,} params)" for r in results]
    return _mae_figure(range(len(results)), [r.metrics["mae_ev_per_atom"] for r in results], path, (6.5, 4),
                       xticklabels=labels, title="architecture study (Fig. 2)")


def write_loss_curves_figure(result: RunResult, path: str | Path, title: str | None = None) -> Path:
    """Fig. 3: training and held-out MAE per epoch."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = [r.epoch for r in result.history]
    ax.plot(epochs, [r.train_mae_ev_per_atom for r in result.history], label="loss (train MAE)")
    ax.plot(epochs, [r.val_mae_ev_per_atom for r in result.history], label="val loss (held-out MAE)")
    ax.axvline(result.best_epoch, color="k", ls=":", lw=0.8, label=f"best val epoch {result.best_epoch}")
    ax.set(xlabel="epoch", ylabel="MAE (eV/atom)", title=title or f"{result.spec.architecture} training", ylim=(0, None))
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = _save(fig, path)
    plt.close(fig)
    return out
