"""``fh-screen evaluate``: reproduce the seed study (CV, data size, architectures, overfitting), or
evaluate a model the way the screen uses it (``--study stability --model NAME``).

Each seed study writes ``<output-dir>/study/<name>.json`` (metrics, exact command, caps, data
hashes, seconds, machine) and ``<output-dir>/figures/<name>.png``; the stability study writes
``<output-dir>/evaluation/<model>.json`` and ``.png`` (see :mod:`fh_screen.study.evaluation`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from fh_screen.cli.common import console, fail, one_line_errors
from fh_screen.errors import one_line
from fh_screen.defaults import DEFAULT_PREFILTER_MODEL, DEFAULT_REFINE_TOP

__all__ = ["register"]

STUDIES = ("cv", "size", "arch", "overfit")


def _parse_sizes(text: str) -> list[int | None]:
    sizes: list[int | None] = []
    for part in text.split(","):
        part = part.strip().lower()
        if part == "all":
            sizes.append(None)
        elif part.isdigit() and int(part) > 0:
            sizes.append(int(part))
        else:
            fail(f"bad training-set size {part!r} in --sizes (positive integers or 'all', comma separated)")
    return sizes


def evaluate_command(
    study: str = typer.Option("cv", "--study", "-s", help="cv, size, arch, overfit or all (run in that order), stability, or claims (what P(stable) and the short list claim, on val)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="stability: shipped model name (or name@version) or .pt path or model folder (default model)."),
    systems: int = typer.Option(400, "--systems", min=1, help="stability: chemical systems of the rediscovery test."),
    hull_systems: int = typer.Option(5000, "--hull-systems", min=1, help="stability: val systems of the hull classification."),
    refine_top: int = typer.Option(DEFAULT_REFINE_TOP, "--refine-top", min=0, help="stability: the screens' --refine-top (0: the model predicts every candidate)."),
    prefilter: str = typer.Option(DEFAULT_PREFILTER_MODEL, "--prefilter", help="stability: the fast model that ranks every candidate before the refine."),
    train_path: Optional[Path] = typer.Option(None, "--train", help="Training CSV (default: shared oqmd/train.csv)."),
    val_path: Optional[Path] = typer.Option(None, "--val", help="Held-out CSV (default: shared oqmd/val.csv)."),
    output_dir: Path = typer.Option(Path("docs"), "--output-dir", "-o", help="JSON goes to DIR/study, PNG to DIR/figures."),
    folds: int = typer.Option(10, help="Cross-validation folds."),
    seed: int = typer.Option(0, help="Seed of folds, subsets and training."),
    preset: str = typer.Option("paper", help="Network of the CV and data-size studies."),
    epochs: int = typer.Option(150, min=1, help="Epoch cap per run."),
    max_minutes: Optional[float] = typer.Option(4.0, help="Wall-clock cap per run (minutes)."),
    patience: Optional[int] = typer.Option(None, min=1, help="Early-stopping patience (default: TrainConfig's)."),
    batch_size: Optional[int] = typer.Option(None, min=1, help="Mini-batch size (default: TrainConfig's)."),
    threads: int = typer.Option(1, min=1, help="torch threads (keep at or below free cores)."),
    sizes: str = typer.Option("5000,10000,50000,all", help="Training-set sizes of the size study."),
    presets: str = typer.Option("fig2-32,fig2-64,fig2-96,fig2-128", help="Presets of the architecture study."),
    overfit_epochs: int = typer.Option(150, min=1, help="Epochs of the overfit run (no early stopping)."),
    overfit_rows: Optional[int] = typer.Option(None, min=10, help="Train the overfit run on this many rows (default all)."),
    max_rows: Optional[int] = typer.Option(None, min=20, help="Use a seeded subset of this many rows of each file (quick runs)."),
) -> None:
    """Reproduce the seed study's figures: 10-fold CV, data size, architecture and overfitting."""
    import time
    from dataclasses import fields, replace

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from fh_screen.study import seed_study as st
    from fh_screen.models.mlp import PRESETS
    from fh_screen.models.fit import TrainConfig

    from fh_screen.errors import check_positive, check_seed

    check_seed(seed, "--seed")
    if max_minutes is not None:
        check_positive(max_minutes, "--max-minutes")
    if study not in (*STUDIES, "all", "stability", "claims"):
        fail(f"unknown study {study!r} (choose from {', '.join(STUDIES)}, all, stability or claims)")
    if study in ("claims", "stability"):
        _check_models(model, prefilter)
    _check_output_dir(output_dir, ("evaluation",) if study in ("claims", "stability") else ("study", "figures"))
    if study == "claims":
        _claims(model, train_path, val_path, output_dir, systems, seed, threads, refine_top, prefilter)
        return
    if study == "stability":
        _stability(model, train_path, val_path, output_dir, systems, hull_systems, seed, threads, refine_top, prefilter)
        return
    chosen = list(STUDIES) if study == "all" else [study]
    if preset not in PRESETS:
        fail(f"unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
    if folds < 2:
        fail(f"--folds must be at least 2, got {folds}")
    size_list = _parse_sizes(sizes)
    preset_list = [p.strip() for p in presets.split(",") if p.strip()]
    if unknown := [p for p in preset_list if p not in PRESETS]:
        fail(f"unknown preset(s) {', '.join(unknown)} in --presets (choose from {', '.join(PRESETS)})")
    train_path, val_path = _default_data(train_path, val_path)
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    config = TrainConfig(epochs=epochs, seed=seed, threads=threads, max_minutes=max_minutes,
                         early_stopping_patience=patience or defaults["early_stopping_patience"],
                         batch_size=batch_size or defaults["batch_size"])
    caps = {"epochs_per_run": epochs, "max_minutes_per_run": max_minutes, "early_stopping_patience": config.early_stopping_patience, "batch_size": config.batch_size,
            "max_rows_per_file": max_rows, "early_stopping_fraction": 0.05}
    out = console()

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[status]}"), console=out) as progress:
        tasks: dict[str, int] = {}

        def on_epoch(label, record):
            if label not in tasks:
                total = overfit_epochs if label == "overfit" else epochs
                tasks[label] = progress.add_task(label, total=total, status="")
            progress.update(tasks[label], completed=record.epoch,
                            status=f"train {record.train_mae_ev_per_atom:.4f}  val {record.val_mae_ev_per_atom:.4f}  "
                                   f"lr {record.learning_rate:.1e}")

        def on_run(label, result):
            m = result.metrics
            progress.console.print(f"{label}: MAE {m['mae_ev_per_atom']:.4f} eV/atom (p80 {m['p80_ae_ev_per_atom']:.4f}, "
                                   f"p90 {m['p90_ae_ev_per_atom']:.4f}), best epoch {result.best_epoch}/{len(result.history)}, "
                                   f"{result.stopped_reason}, {result.seconds:.0f} s", soft_wrap=True)

        train = val = None
        for name in chosen:
            started = time.perf_counter()
            if name == "cv":
                data = st.load_study_data([train_path, val_path], max_rows=max_rows, seed=seed)
                progress.console.print(f"cross-validation on {len(data)} compositions ({folds} folds)")
                result = st.cross_validate(data, PRESETS[preset], config, n_folds=folds, seed=seed,
                                           on_epoch=on_epoch, on_run=on_run)
                summary = result.summary()
                payload = {"study": "cross-validation (seed Fig. 5/6)", "preset": preset,
                           "architecture": PRESETS[preset].architecture, "seed_study": st.SEED_STUDY, "cv_seed": seed,
                           **summary, "folds": [f.summary() for f in result.folds],
                           "provenance": st.provenance(config, data.sources, started, caps=caps)}
                _write(st, payload, output_dir, "cv", lambda path: st.write_cv_figure(result, path), progress)
                progress.console.print(f"CV MAE {summary['fold_mae_mean_ev_per_atom']:.4f} ± {summary['fold_mae_std_ev_per_atom']:.4f} "
                                       f"eV/atom; pooled p80 {summary['pooled_out_of_fold']['p80_ae_ev_per_atom']:.4f}, "
                                       f"p90 {summary['pooled_out_of_fold']['p90_ae_ev_per_atom']:.4f}", soft_wrap=True)
                continue
            if train is None:
                train = st.load_study_data([train_path], max_rows=max_rows, seed=seed)
                val = st.load_study_data([val_path], max_rows=max_rows, seed=seed)
            sources = train.sources + val.sources
            if name == "size":
                runs = st.data_size_study(train, val, size_list, PRESETS[preset], config, seed=seed, on_epoch=on_epoch, on_run=on_run)
                payload = {"study": "accuracy vs training-set size (seed Fig. 4)", "preset": preset, "test_set": str(val_path),
                           "runs": [r.summary() for r in runs], "provenance": st.provenance(config, sources, started, caps=caps)}
                _write(st, payload, output_dir, "data_size", lambda path: st.write_size_figure(runs, path), progress)
            elif name == "arch":
                runs = st.architecture_study(train, val, preset_list, config, on_epoch=on_epoch, on_run=on_run)
                payload = {"study": "architecture (seed Fig. 2)", "test_set": str(val_path), "runs": [r.summary() for r in runs],
                           "provenance": st.provenance(config, sources, started, caps=caps)}
                _write(st, payload, output_dir, "architecture", lambda path: st.write_architecture_figure(runs, path), progress)
            else:
                subset = train
                if overfit_rows is not None and overfit_rows < len(train):
                    import numpy as np

                    subset = train.subset(np.sort(np.random.default_rng(seed).permutation(len(train))[:overfit_rows]))
                overfit_config = replace(config, epochs=overfit_epochs)
                run = st.overfit_study(subset, val, PRESETS["overfit"], overfit_config, on_epoch=on_epoch)
                on_run("overfit", run)
                payload = {"study": "overfitting of 256x2+128x2+64x2+32x1+1x1 (seed Fig. 3), early stopping and LR schedule disabled",
                           "test_set": str(val_path), "n_train_rows": len(subset), "run": run.summary(),
                           "provenance": st.provenance(run.config, sources, started,
                                                       caps={**caps, "epochs_per_run": overfit_epochs,
                                                             "early_stopping": "disabled", "lr_schedule": "disabled (constant LR)",
                                                             "overfit_rows": overfit_rows})}
                _write(st, payload, output_dir, "overfit",
                       lambda path: st.write_loss_curves_figure(run, path, f"{run.spec.architecture}, constant LR, no early stopping (Fig. 3)"),
                       progress)


def _check_models(model: Optional[str], prefilter: str) -> None:
    """Exit with one line naming ``--model`` or ``--prefilter`` when either names no model (before any data is read)."""
    from fh_screen.errors import FhScreenError
    from fh_screen.models.predictor import check_model_reference

    for flag, reference in (("--model", model), ("--prefilter", prefilter)):
        try:
            check_model_reference(reference)
        except FhScreenError as exc:
            fail(f"{flag}: {one_line(exc, first_line=True)}")


def _check_output_dir(output_dir: Path, subfolders: tuple[str, ...]) -> None:
    """Exit with one line naming ``--output-dir`` when the study could not write its files there
    (checked before the study runs: it used to fail only when writing, after the last run)."""
    import os

    for folder in (output_dir, *(output_dir / sub for sub in subfolders)):
        folder = folder.expanduser()
        existing = next(p for p in (folder, *folder.absolute().parents) if p.exists())
        if not existing.is_dir():
            fail(f"--output-dir {output_dir}: {existing} is a file, not a folder")
        if not os.access(existing, os.W_OK | os.X_OK):
            fail(f"--output-dir {output_dir}: {existing} is not writable")


def _default_data(train_path: Optional[Path], val_path: Optional[Path]) -> tuple[Path, Path]:
    """``--train`` and ``--val``, the configured OQMD folder's files for those not given."""
    from fh_screen.data import shared_data_dir

    if train_path is None or val_path is None:
        missing = " and ".join(f"{flag} FILE" for flag, path in (("--train", train_path), ("--val", val_path)) if path is None)
        folder = shared_data_dir(instead=f"give {missing}")
        train_path, val_path = train_path or folder / "train.csv", val_path or folder / "val.csv"
    return Path(train_path), Path(val_path)


def _data_files(train_path: Optional[Path], val_path: Optional[Path]) -> tuple[Path, Path]:
    """The train and val files (the shared OQMD ones by default); exit with one line if one is missing."""
    paths = _default_data(train_path, val_path)
    for path in paths:
        if not path.is_file():
            fail(f"data file not found: {path}")
    return paths


def _stability(model: Optional[str], train_path: Optional[Path], val_path: Optional[Path], output_dir: Path,
               systems: int, hull_systems: int, seed: int, threads: int, refine_top: int = DEFAULT_REFINE_TOP,
               prefilter: str = DEFAULT_PREFILTER_MODEL) -> None:
    """Accuracy, hull classification, rediscovery and calibration of one model (fh_screen.study.evaluation)."""
    import re
    import time

    import torch

    from fh_screen.study import evaluation as ev
    from fh_screen.data import file_sha256
    from fh_screen.models.predictor import Predictor
    from fh_screen.io import write_json

    torch.set_num_threads(threads)
    train_path, val_path = _data_files(train_path, val_path)
    predictor = Predictor.from_name(model)
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", predictor.name) or "model"
    out = console()
    started = time.perf_counter()

    def step(label: str) -> None:
        out.print(f"[{time.perf_counter() - started:6.1f} s] {label}", highlight=False, soft_wrap=True)

    from fh_screen.screening import ScreenOptions

    payload, records = ev.evaluate_model(predictor, train_path, val_path, n_systems=systems, hull_systems=hull_systems,
                                         seed=seed, progress=step, options=ScreenOptions(refine_top=refine_top or None, prefilter_model=prefilter))
    png_path = ev.write_figure(payload, records, output_dir / "evaluation" / f"{name}.png")
    payload.pop("_val_errors")
    payload["command"] = (f"fh-screen evaluate --study stability --model {model or predictor.name} --systems {systems} "
                          f"--hull-systems {hull_systems} --refine-top {refine_top} --prefilter {prefilter} --seed {seed} --threads {threads} "
                          f"--train {train_path} --val {val_path}"
                          f" --output-dir {output_dir}")
    payload["data"] = [{"path": str(p), "sha256": file_sha256(p)} for p in (train_path, val_path)]
    payload["threads"] = threads
    json_path = write_json(payload, output_dir / "evaluation" / f"{name}.json")
    acc, hull, red, cal = payload["accuracy"], payload["hull_classification"], payload["rediscovery"], payload["calibration"]
    rule = red["rules"].get("screen", {})
    out.print(f"{predictor.name}: MAE {acc['mae_abs_lt_5_ev_per_atom']:.4f} (all {acc['mae_all_ev_per_atom']:.4f}), "
              f"p80 {acc['p80_ae_ev_per_atom']:.3f}, p90 {acc['p90_ae_ev_per_atom']:.3f} eV/atom; hull P {hull['precision']:.2f} "
              f"R {hull['recall']:.2f} F1 {hull['f1']:.2f}; rediscovery ({red['n_systems']} systems, {red['n_hidden']} hidden) "
              f"recall@10 {rule.get('recall_at_10', float('nan')):.3f}, @50 {rule.get('recall_at_50', float('nan')):.3f}, "
              f"@1% {rule.get('recall_at_1pct', float('nan')):.3f}, median rank {rule.get('median_rank_pct', float('nan')):.2f} % "
              f"(random recall@10 {red['random']['recall_at_10']:.3f}); coverage of ±1.645σ "
              + (f"{cal['coverage_90']:.3f}" if cal.get("coverage_90") is not None else "n/a (single network)"),
              highlight=False, soft_wrap=True)
    out.print(f"wrote {json_path} and {png_path}", highlight=False, soft_wrap=True)


def _claims(model: Optional[str], train_path: Optional[Path], val_path: Optional[Path], output_dir: Path,
            systems: int, seed: int, threads: int, refine_top: int = DEFAULT_REFINE_TOP,
            prefilter: str = DEFAULT_PREFILTER_MODEL) -> None:
    """Calibration in the large, reliability, the short list, top-1 precision, recall@10 and the
    sanity set of ionic binaries (fh_screen.claims), on val hidden with train known."""
    import time

    import torch

    from fh_screen.study import claims as cl
    from fh_screen.data import file_sha256
    from fh_screen.models.predictor import Predictor
    from fh_screen.screening import ScreenOptions
    from fh_screen.io import write_json

    torch.set_num_threads(threads)
    train_path, val_path = _data_files(train_path, val_path)
    predictor = Predictor.from_name(model)
    out = console()
    started = time.perf_counter()

    def step(label: str) -> None:
        out.print(f"[{time.perf_counter() - started:6.1f} s] {label}", highlight=False, soft_wrap=True)

    options = ScreenOptions(refine_top=refine_top or None, prefilter_model=prefilter)
    payload, _ = cl.evaluate_claims(predictor, train_path, val_path, n_systems=systems, seed=seed, options=options,
                                    progress=step)
    payload["command"] = (f"fh-screen evaluate --study claims --model {model or predictor.name} --systems {systems} "
                          f"--refine-top {refine_top} --prefilter {prefilter} --seed {seed} --threads {threads} "
                          f"--output-dir {output_dir}")
    payload["data"] = [{"path": Path(p).name, "sha256": file_sha256(p)} for p in (train_path, val_path)]
    name = f"claims-{predictor.name}" + (f"-seed{seed}" if seed else "")
    json_path = write_json(payload, output_dir / "evaluation" / f"{name}.json")
    png_path = cl.write_claims_figure(payload, output_dir / "evaluation" / f"{name}.png")
    m = payload["metrics"]
    sanity = payload["ionic_binaries_train_known"]

    def fmt(value, digits=2):
        return "n/a" if value is None else f"{value:.{digits}f}"

    out.print(f"{m['n_systems']} systems, {m['n_real']} real stable compounds: Σp/real {fmt(m['sum_p_over_real'])}, "
              f"reliability within ×2 {m['reliability_within_factor_2']}, real with p >= 0.3 {fmt(m['real_with_p_ge_0.3_share'])}, "
              f"selected/real {fmt(m['selected_per_real'])}, real share of selected {fmt(m['selected_real_share'])}, "
              f"top-1 precision {fmt(m['top1_precision'])}, recall@10 {fmt(m['recall_at_10'])}, median rank "
              f"{fmt(m['median_rank_pct'])} %; ionic binaries: {sanity['claimed_p_ge_0.5']} claims at p >= 0.5, "
              f"{sanity['claimed_not_charge_balanced']} not charge balanced", highlight=False, soft_wrap=True)
    out.print(f"wrote {json_path} and {png_path}", highlight=False, soft_wrap=True)


def _write(st, payload: dict, output_dir: Path, name: str, draw, progress) -> None:
    from fh_screen.io import write_json

    json_path = write_json(payload, output_dir / "study" / f"{name}.json")
    png_path = draw(output_dir / "figures" / f"{name}.png")
    progress.console.print(f"wrote {json_path} and {png_path}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``evaluate`` to the application."""
    app.command("evaluate")(one_line_errors(evaluate_command))
