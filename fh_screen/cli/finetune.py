"""``fh-screen finetune``: update a model on new entries (a table, or the store's entries of one source)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from fh_screen.cli.common import console, error_console, fail, one_line_errors

__all__ = ["register"]

#: The flag of each :class:`~fh_screen.models.finetune.FinetuneOptions` field the command sets.
FLAGS = {"epochs": "--epochs", "learning_rate": "--learning-rate", "replay_rows": "--replay-rows", "new_share": "--new-share",
         "val_rows": "--val-rows", "max_val_regression_ev_per_atom": "--max-val-regression", "seed": "--seed",
         "threads": "--threads"}


def _in_range(low: float, high: float, *, high_open: bool):
    """A typer callback refusing values outside ``(low, high]`` (``(low, high)`` when ``high_open``), as click words it."""
    shown = f"{low:g}<x{'<' if high_open else '<='}{high:g}"

    def check(value: float) -> float:
        if not (value > low and (value < high if high_open else value <= high)):
            raise typer.BadParameter(f"{value:g} is not in the range {shown}.")
        return value

    return check


def finetune_command(
    entries: Optional[Path] = typer.Argument(None, help="New entries: CSV formula,dhf_ev_per_atom (or formula,target), OQMD dump or OPTIMADE JSON."),
    source: Optional[str] = typer.Option(None, "--source", help="Learn from the store's reference entries of this source instead (e.g. chgnet)."),
    chemsys: Optional[str] = typer.Option(None, "--chemsys", help="With --source: only entries of this system and its subsystems."),
    store_file: Optional[Path] = typer.Option(None, "--store", help="With --source: an embedded store file (default: the configured store)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model to start from: shipped name (or name@version) or .pt path or model folder (default model)."),
    name: Optional[str] = typer.Option(None, "--name", help="Name of the new model (default <model>-ft)."),
    output_dir: Optional[Path] = typer.Option(None, "--output", "-o", help="Folder of the new model (default <model_dir>/<name>, else ~/.fh_screen/models/<name>)."),
    train_path: Optional[Path] = typer.Option(None, "--train", help="File the replay sample is drawn from (default: shared oqmd/train.csv)."),
    val_path: Optional[Path] = typer.Option(None, "--val", help="File checked before/after, never trained on (default: shared oqmd/val.csv)."),
    epochs: int = typer.Option(4, min=1, max=200),
    learning_rate: float = typer.Option(1e-4, callback=_in_range(0, 0.01, high_open=False),
                                        help="AdamW learning rate (constant). [0<x<=0.01]"),
    replay_rows: int = typer.Option(2048, min=0, help="Rows of the train file replayed against forgetting."),
    new_share: float = typer.Option(0.25, callback=_in_range(0, 1, high_open=True),
                                    help="Share of each epoch's rows that are new entries (oversampled). [0<x<1]"),
    val_rows: Optional[int] = typer.Option(None, min=1, help="Check on a seeded sample of this many val rows (default: all)."),
    max_val_regression: float = typer.Option(0.002, min=0.0, help="Largest val MAE rise (eV/atom) accepted without --force."),
    seed: int = typer.Option(0),
    threads: int = typer.Option(1, min=1, help="torch threads (keep at or below free cores)."),
    force: bool = typer.Option(False, "--force", help="Write the model even when val MAE rose by more than --max-val-regression."),
) -> None:
    """Fine-tune a model on new entries (your CHGNet/DFT results) with replay of train.csv; write it as a new name@version.

    Every member starts from its trained weights: a few epochs at a low learning rate on the new
    entries, mixed with a seeded sample of the train file so it does not forget. The card reports
    the MAE on the new entries and on val before and after; a val MAE rise above
    --max-val-regression is refused (nothing written) unless --force.
    """
    import sys

    from pydantic import ValidationError
    from rich.markup import escape

    from fh_screen.jobs.finetune import check_store_entries, finetune_to_folder, plan_finetune, store_entries
    from fh_screen.models.finetune import FinetuneOptions

    if (entries is None) == (source is None):
        fail("give a table of new entries or --source NAME (one of them)")
    if source is None and (chemsys or store_file):
        fail("--chemsys and --store go with --source")
    try:
        options = FinetuneOptions(epochs=epochs, learning_rate=learning_rate, replay_rows=replay_rows, new_share=new_share,
                                  val_rows=val_rows, max_val_regression_ev_per_atom=max_val_regression, seed=seed, threads=threads)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else ""
        fail(f"option {FLAGS.get(field, field)}: {error['msg']} (got {error.get('input')!r})")
    if entries is not None and not entries.is_file():
        fail(f"new entries file not found: {entries}")
    if source is not None:
        check_store_entries(source, chemsys=chemsys, store_path=store_file)
    # everything but the entries is checked before the store is read (what FinetuneMaker checks at make())
    plan = plan_finetune(model, name=name, output_dir=output_dir, train_path=train_path, val_path=val_path)
    if entries is not None:
        table, label = entries, entries.name
    else:
        table = store_entries(source, chemsys=chemsys, store_path=store_file)
        label = f"store source {source}" + (f" ({chemsys})" if chemsys else "")

    bar = error_console()

    def on_epoch(member: int, epoch: int, loss: float) -> None:
        if epoch == epochs:
            bar.print(f"member {member + 1} fine-tuned ({epochs} epochs)", highlight=False)

    out = console()

    def on_entries(new) -> None:
        if new.note():
            out.print(f"[yellow]note:[/] {escape(new.note())}", highlight=False, soft_wrap=True)

    doc = finetune_to_folder(model, table, name=name, output_dir=output_dir, train_path=train_path, val_path=val_path,
                             options=options, force=force, entries_label=label,
                             command=" ".join(["fh-screen", *sys.argv[1:]]), on_epoch=on_epoch, on_entries=on_entries,
                             plan=plan)
    out.print(f"model {doc.model_name}@{doc.model_version} (from {doc.base}, {doc.n_entries} new entries, {doc.seconds:.0f} s)",
              highlight=False, soft_wrap=True)
    out.print(f"MAE on the new entries: {doc.new_entries_mae_before:.4f} → {doc.new_entries_mae_after:.4f} eV/atom", highlight=False)
    if doc.val_mae_before is not None:
        out.print(f"MAE on val (abs(ΔH_f) < 5): {doc.val_mae_before:.4f} → {doc.val_mae_after:.4f} eV/atom"
                  + (" (regression accepted with --force)" if doc.forced else ""), highlight=False)
    out.print(f"saved {doc.model_path} with model_card.json and README.md; screen with it: fh-screen SYSTEM --model {doc.model_path}",
              highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``finetune`` to the application."""
    app.command("finetune")(one_line_errors(finetune_command))
