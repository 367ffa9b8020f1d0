"""``fh-screen train``: train a model on OQMD files and write it with its model card."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from fh_screen.cli.common import console, error_console, fail, one_line_errors

__all__ = ["register"]


def train_command(
    train_path: Path = typer.Argument(..., help="Training data (shared CSV, OQMD dump table or OPTIMADE JSON)."),
    output_dir: Path = typer.Option(..., "--output", "-o", help="Folder for model.pt, model_card.json and README.md (new, empty or an earlier training's)."),
    val_path: Optional[Path] = typer.Option(None, "--val", help="Validation file, used only for the final metrics."),
    preset: str = typer.Option("paper", help="Fully connected preset (paper, wide, fig2-32, …, overfit); see --recipe for attention."),
    recipe: Optional[str] = typer.Option(None, help="Attention ensemble recipe, e.g. 'attention*6+attention-large*4@30' (the default model; @N: N epochs for those members); resumable."),
    device: str = typer.Option("auto", help="Attention training device: cpu, cuda or auto (cuda when present)."),
    architecture: Optional[str] = typer.Option(None, help="Architecture label overriding the preset, e.g. 128x2+64x2+32x1+1x1."),
    dropout: Optional[float] = typer.Option(None, min=0.0, max=0.9, help="Dropout rate at the preset's dropout positions."),
    members: int = typer.Option(1, min=1, help="Ensemble members (>1 gives an uncertainty)."),
    epochs: int = typer.Option(400, min=1),
    batch_size: int = typer.Option(512, min=1),
    learning_rate: float = typer.Option(1e-3, min=0.0),
    patience: int = typer.Option(30, min=1, help="Early-stopping patience in epochs."),
    max_minutes: Optional[float] = typer.Option(None, help="Stop each member after this many minutes."),
    max_rows: Optional[int] = typer.Option(None, help="Train on a random subset of this many rows."),
    seed: int = typer.Option(0),
    threads: int = typer.Option(1, min=1, help="torch threads (keep at or below free cores)."),
    name: Optional[str] = typer.Option(None, help="Model name written into the checkpoint."),
) -> None:
    """Train a model: the seed study's network, or with --recipe an attention ensemble (resumable).

    The model gets its own identity: ``--name`` (default: the output folder's name; a shipped
    model's name is refused) and a version made of the date and the weights' hash, written into
    the checkpoint and its card, so stored predictions never mix with a shipped model's.
    """
    from dataclasses import replace

    from fh_screen.errors import check_count, check_positive, check_seed

    check_seed(seed, "--seed")  # the numbers first, in one line each, before any file is read
    if max_rows is not None:
        check_count(max_rows, "--max-rows")
    check_positive(learning_rate, "--learning-rate")
    if max_minutes is not None:
        check_positive(max_minutes, "--max-minutes")
    name = user_model_name(name, output_dir)
    _check_output(output_dir)
    if recipe is not None:
        _train_attention(train_path, output_dir, val_path, recipe, device, epochs if epochs != 400 else None,
                         max_rows, seed, threads, name)
        return

    from fh_screen.models.mlp import PRESETS, parse_architecture
    from fh_screen.models.fit import TrainConfig
    from fh_screen.models.train import train_model, write_model_card

    if preset not in PRESETS:
        fail(f"unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
    spec = PRESETS[preset]
    if architecture:
        parse_architecture(architecture)
        spec = replace(spec, architecture=architecture)
    if dropout is not None:
        spec = replace(spec, dropout=dropout)
    config = TrainConfig(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                         early_stopping_patience=patience, seed=seed, threads=threads, max_minutes=max_minutes)
    if not error_console().is_terminal:  # a log, not a live bar: one line per member every 10 epochs on stderr
        def on_epoch(member, record):
            if record.epoch == 1 or record.epoch % 10 == 0:
                error_console().print(f"member {member + 1}/{members} epoch {record.epoch}: train {record.train_mae_ev_per_atom:.4f}, "
                                      f"val {record.val_mae_ev_per_atom:.4f} eV/atom")

        run = train_model(train_path, val_path, preset=preset, spec=spec, config=config, n_members=members,
                          max_train_rows=max_rows, name=name, on_epoch=on_epoch)
    else:
        run = _train_with_bars(train_path, val_path, preset, spec, config, members, max_rows, name, epochs)
    run = replace(run, checkpoint=replace(run.checkpoint, version=user_model_version(run.checkpoint)))
    write_model_card(run, output_dir)
    console().print(f"model {run.checkpoint.name}@{run.checkpoint.version} (weights sha256 "
                    f"{run.checkpoint.identity()[:16]}…)", highlight=False, soft_wrap=True)
    summary = run.metrics.get("val_abs_dhf_lt_5") or run.metrics["early_stopping_split"]
    console().print(f"saved {output_dir / 'model.pt'}: MAE {summary['mae_ev_per_atom']:.4f} eV/atom, "
                    f"p80 {summary['p80_ae_ev_per_atom']:.4f}, p90 {summary['p90_ae_ev_per_atom']:.4f}")


def _check_output(output_dir: Path) -> None:
    """Exit with one line naming ``--output`` when no model folder can be written there (before training)."""
    from fh_screen.errors import TrainingError
    from fh_screen.models.train import check_model_folder

    try:
        check_model_folder(output_dir)
    except TrainingError as exc:
        fail(f"--output: {exc}")


def user_model_name(name: Optional[str], output_dir: Path) -> str:
    """The name of a model trained by the user: ``name`` or the output folder's; never a shipped model's."""
    import re

    from fh_screen.models.predictor import available_models

    chosen = name or Path(output_dir).expanduser().resolve().name
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}", chosen or ""):
        fail(f"model name must be 1-64 letters, digits or ._+- characters, got {chosen!r} (give --name)")
    if chosen in available_models():
        fail(f"{chosen!r} is the name of a model shipped with fh-screen; give your model its own --name")
    return chosen


def user_model_version(checkpoint) -> str:
    """Version of a freshly trained model: UTC date and the first 8 hex digits of its weights' hash."""
    from fh_screen.models.checkpoint import dated_version

    return dated_version(checkpoint)


def _train_with_bars(train_path, val_path, preset, spec, config, members, max_rows, name, epochs):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from fh_screen.models.train import train_model

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[status]}"), console=error_console()) as progress:
        tasks = [progress.add_task(f"member {m + 1}/{members}", total=epochs, status="") for m in range(members)]

        def on_epoch(member, record):
            progress.update(tasks[member], completed=record.epoch,
                            status=f"train {record.train_mae_ev_per_atom:.4f}  val {record.val_mae_ev_per_atom:.4f} eV/atom")

        return train_model(train_path, val_path, preset=preset, spec=spec, config=config, n_members=members,
                           max_train_rows=max_rows, name=name, on_epoch=on_epoch)


def _train_attention(train_path: Path, output_dir: Path, val_path: Optional[Path], recipe: str, device: str,
                     epochs: Optional[int], max_rows: Optional[int], seed: int, threads: int, name: Optional[str]) -> None:
    import sys

    from fh_screen.models.train import parse_recipe, run_attention_training
    from fh_screen.models.checkpoint import save_checkpoint
    from fh_screen.models.attention import AttentionTrainConfig
    from fh_screen.models.train import write_attention_card

    try:
        parse_recipe(recipe)
    except ValueError as exc:
        fail(str(exc))
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    config = AttentionTrainConfig(seed=seed, threads=threads, device=device,
                                  **({"epochs": epochs} if epochs else {}))

    def on_epoch(member, record):
        error_console().print(f"{member.label} epoch {record.epoch}/{member.config(config).epochs}: train {record.train_mae_ev_per_atom:.4f}, "
                        f"holdout {record.holdout_mae_ev_per_atom:.4f} eV/atom ({record.seconds:.0f} s)")

    checkpoint = run_attention_training(train_path, output_dir, recipe=recipe, config=config, val_path=val_path,
                                        max_rows=max_rows, name=name, on_epoch=on_epoch,
                                        command=" ".join(["fh-screen", *sys.argv[1:]]))
    # a user's model gets its own version (date + weights hash), as the fully connected path does:
    # the assembler writes the shipped ensemble's version, which must not be mistaken for it
    checkpoint.version = user_model_version(checkpoint)
    save_checkpoint(checkpoint, output_dir / "model.pt")
    write_attention_card(checkpoint, output_dir)
    console().print(f"model {checkpoint.name}@{checkpoint.version} (weights sha256 {checkpoint.identity()[:16]}…)",
                    highlight=False, soft_wrap=True)
    metrics = checkpoint.metadata["metrics"]
    summary = metrics.get("val_abs_dhf_lt_5") or metrics["holdout"]
    console().print(f"saved {output_dir / 'model.pt'}: MAE {summary['mae_ev_per_atom']:.4f} eV/atom, "
                    f"p90 {summary['p90_ae_ev_per_atom']:.4f}, σ scale {checkpoint.sigma_scale:.3f}")


def register(app: typer.Typer) -> None:
    """Add ``train`` to the application."""
    app.command("train")(one_line_errors(train_command))
