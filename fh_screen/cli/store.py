"""``fh-screen ingest`` / ``query`` / ``predict-store``: the maggma store of OQMD data and predictions."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from fh_screen.cli.common import (
    OutputBatch,
    check_outputs,
    console,
    error_console,
    fail,
    is_stdout,
    one_line_errors,
    status_console,
    store_file_in_use,
)

__all__ = ["dft_first", "register"]

_STORE_HELP = "Embedded store file to use instead of the configured one (settings: ~/.fh_screen.yaml, FH_SCREEN_*)."


class Kind(str, Enum):
    """Which collection ``query`` reads."""

    reference = "reference"
    predicted = "predicted"
    both = "both"


def _entries(n: int) -> str:
    """``1 reference entry``, ``2 reference entries``."""
    return f"{n:,} reference {'entry' if n == 1 else 'entries'}"


def _holds(store) -> str:
    """What the store's reference collection holds now, naming it (``sqlite://s.db/reference holds 3 reference entries``)."""
    return f"{store.reference_name} holds {_entries(store.n_reference())}"


def _open_store(store_file: Optional[Path], read_only: bool, must_exist: Optional[bool] = None, fill: bool = True):
    """The store of ``--store FILE`` or the configured one; ``must_exist`` (default: ``read_only``) refuses,
    in one line, a store file that is not there (and would not be filled from the shipped table; with
    ``fill`` False, a configured one that would be is refused too)."""
    from fh_screen.settings import FhScreenSettings
    from fh_screen.store import FhScreenStore

    must_exist = read_only if must_exist is None else must_exist
    if store_file is not None:
        if must_exist and not _holds_a_file(store_file):
            fail(f"no store at {store_file}: run `fh-screen ingest FILE --store {store_file}` first")
        return FhScreenStore.embedded(store_file, read_only=read_only)
    settings = FhScreenSettings()
    if not fill:  # nothing is written on opening: neither the shipped table nor (MongoDB) empty collections
        settings = settings.model_copy(update={"reference_data": False})
    if must_exist and not settings.reference_data:
        if settings.mongo_uri:
            from fh_screen.store.mongo import mongo_label, mongo_reference_exists

            if not mongo_reference_exists(settings):
                fail(f"no store at {mongo_label(settings)}: run `fh-screen ingest FILE` first")
        elif not _holds_a_file(settings.store_path):
            fail(f"no store at {settings.store_path}: run `fh-screen ingest FILE` first")
    return FhScreenStore.from_settings(settings, read_only=read_only)  # first use: fills the shipped OQMD table


def _holds_a_file(path: Path) -> bool:
    """Whether ``path`` is a file with something in it (an empty file is no store)."""
    return path.is_file() and path.stat().st_size > 0


def ingest_command(
    path: Optional[Path] = typer.Argument(None, help="OQMD-style file (shared CSV, dump table, OPTIMADE JSON) or a folder of them."),
    source: str = typer.Option(
        "user", "--source", help="Name of these values (e.g. my-dft, oqmd-1.6; read in lower case): they sit beside the shipped OQMD "
        "entries (source oqmd, never ingested into) and the hull uses the lowest value per composition."),
    remove_source: Optional[str] = typer.Option(
        None, "--remove-source", help="Remove every reference entry of this source instead of ingesting (not oqmd, "
        "the shipped table, nor the results' sources chgnet, atomate2-vasp, ...; OQMD removes entries once ingested "
        "under that spelling beside them)."),
    source_version: Optional[str] = typer.Option(None, "--source-version", help="Version to record, e.g. 1.6."),
    keep_outliers: bool = typer.Option(
        False, "--keep-outliers", help="Store values outside (-20, 5) eV/atom, flagged, instead of rejecting them."
    ),
    store_file: Optional[Path] = typer.Option(None, "--store", help=_STORE_HELP),
) -> None:
    """Load DFT formation enthalpies into the store under a source name (idempotent per (formula, source))."""
    from fh_screen.store.ingest import check_ingest_source

    if remove_source is not None:
        if path is not None:
            fail("give either a PATH to ingest or --remove-source NAME, not both")
        from fh_screen.store.stores import check_removable_source

        remove_source = check_removable_source(remove_source)  # before the store is opened
        # only a store that exists holds entries to remove: none is made (nor filled with the shipped table)
        with _open_store(store_file, read_only=False, must_exist=True, fill=False) as store:
            n_removed = store.remove_source(remove_source)
            console().print(f"removed {_entries(n_removed)} of source {remove_source!r}; "
                            f"{_holds(store)}", highlight=False, soft_wrap=True)
            if not n_removed:  # a misspelt name: say which sources the store holds
                from rich.markup import escape

                from fh_screen.store.query import absent_sources_note

                note = absent_sources_note(remove_source, set(), lambda: store.reference.distinct("source"),
                                           "the store")
                if note:
                    console().print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
        return
    if path is None:
        fail("give a PATH to ingest (or --remove-source NAME)")
    source = check_ingest_source(source)  # stored stripped and lower case, as --sources selects it
    stored = [0, 0]  # entries of the files ingested, of the file being ingested (written in whole batches)
    try:
        _ingest(path, source, source_version, keep_outliers, store_file, stored)
    except KeyboardInterrupt:
        error_console().print(f"interrupted after {sum(stored):,} {'entry' if sum(stored) == 1 else 'entries'} of "
                              f"source {source}; rerun the same command to complete it", highlight=False,
                              soft_wrap=True, markup=False)
        raise typer.Exit(130) from None


def _ingest(path: Path, source: str, source_version: Optional[str], keep_outliers: bool, store_file: Optional[Path],
            stored: list[int]) -> None:
    """Ingest ``path`` into the store; ``stored`` counts the entries written (or found unchanged) so far."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from fh_screen.store.ingest import IngestReport, ingest_file, ingestable_files

    files = ingestable_files(path, keep_outliers=keep_outliers)
    report = IngestReport()
    out = console()
    with _open_store(store_file, read_only=False) as store:
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=out, transient=True, disable=not out.is_terminal,
        ) as progress:
            for file in files:
                if not out.is_terminal:  # logs and pipes get a line per file; a terminal gets the bar
                    error_console().print(f"fh-screen: ingesting {file}", highlight=False, soft_wrap=True)
                task = progress.add_task(f"ingest {file.name}", total=None)

                def advance(done: int, total: int, task=task) -> None:
                    stored[1] = done  # a batch is one store update: these are in the store
                    progress.update(task, completed=done, total=total)

                part = ingest_file(
                    store.reference, file, source=source, source_version=source_version, keep_outliers=keep_outliers,
                    progress=advance,
                )
                stored[0], stored[1] = stored[0] + stored[1], 0
                if len(files) > 1:
                    out.print(f"{file.name}: {part.summary()}", highlight=False, soft_wrap=True)
                report.merge(part)
        for formula, old, new in report.updated_examples:
            out.print(f"updated {formula}: {old:.4f} → {new:.4f} eV/atom", highlight=False, soft_wrap=True)
        if report.updated > len(report.updated_examples):
            out.print(f"… and {report.updated - len(report.updated_examples)} more updated", highlight=False, soft_wrap=True)
        out.print(f"{report.summary()}; {_holds(store)}", highlight=False, soft_wrap=True)


def query_command(
    formula: Optional[list[str]] = typer.Option(None, "--formula", "-f", help="Formula (repeatable); reduced first."),
    chemsys: Optional[str] = typer.Option(None, "--chemsys", "-c", help="Li-Fe-O: every entry whose elements are a subset."),
    nelements: Optional[int] = typer.Option(None, "--nelements", "-n", help="Number of elements."),
    min_dhf: Optional[float] = typer.Option(None, "--min-dhf", help="Lowest ΔH_f in eV/atom."),
    max_dhf: Optional[float] = typer.Option(None, "--max-dhf", help="Highest ΔH_f in eV/atom."),
    kind: Kind = typer.Option(Kind.both, "--kind", "-k", help="reference (DFT), predicted, or both side by side."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Only predictions of this model (name or name@version): a shipped or user model, or one the store holds predictions or screens of (else refused)."),
    limit: int = typer.Option(50, "--limit", help="Rows in the table (0: all); --json/--csv get every row."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the full result as a JSON list of documents ('-': print it)."),
    csv_path: Optional[Path] = typer.Option(None, "--csv", help="Write the full result as CSV ('-': print it)."),
    include_outliers: bool = typer.Option(False, "--include-outliers", help="Include entries that failed the outlier filter."),
    source: Optional[str] = typer.Option(None, "--source", "--sources", help="Reference entries of these sources only (oqmd, chgnet, atomate2-vasp; comma separated): the reference rows alone, so not with --kind predicted."),
    store_file: Optional[Path] = typer.Option(None, "--store", help=_STORE_HELP),
    run: Optional[str] = typer.Option(None, "--run", help="Show the saved screen with this run id (list them: fh-screen runs)."),
    top: Optional[int] = typer.Option(None, "--top", help="The N best new candidates over every stored screen (0: all), "
                                      "by P(stable); with --chemsys, --model, --min-p, --json (PATH or '-'), --csv."),
    min_p: Optional[float] = typer.Option(None, "--min-p", help="With --top: new candidates with P(stable) at least this."),
) -> None:
    """Query reference (DFT) entries and predictions by formula, chemical system, size and ΔH_f,
    or (--top/--min-p) the best new candidates over every stored screen."""
    from fh_screen.store.query import absent_sources_note, criteria_for

    if limit < 0:
        fail(f"--limit must be 0 (all rows) or more, got {limit}")
    if top is not None or min_p is not None:
        if run is not None or formula or nelements is not None or min_dhf is not None or max_dhf is not None or source \
                or kind is not Kind.both or include_outliers:
            fail("--top/--min-p ranks stored screens: combine them with --chemsys, --model, --json and --csv only")
        return _top_candidates(100 if top is None else top, 0.0 if min_p is None else min_p, chemsys, model,
                               store_file, json_path, csv_path)
    if run is not None:
        if formula or chemsys or nelements is not None or min_dhf is not None or max_dhf is not None or model or source \
                or kind is not Kind.both or include_outliers:
            fail("--run shows one stored screen as it was saved: combine it with --limit, --json, --csv and --store only")
        from fh_screen.cli.runs import show_run

        return show_run(run, store_file=store_file, limit=limit, json_path=json_path, csv_path=csv_path)

    # before any work: folder exists, writable, not a folder, not the store
    check_outputs(json_path, csv_path, provenance_of=(json_path, csv_path),
                  inputs={"the store file": store_file_in_use(store_file)})
    criteria_for(formula, chemsys, nelements, min_dhf, max_dhf, source=source)  # validate before opening the store
    if source is not None and kind is Kind.predicted:
        fail("--source selects reference entries, and predictions have no source: give --kind reference (or leave "
             "--kind out), or drop --source")
    if source is not None and kind is not Kind.reference:
        kind = Kind.reference  # a source belongs to reference entries; predictions have none
    filters = {
        "formula": formula or None, "chemsys": chemsys, "nelements": nelements,
        "min_dhf_ev_per_atom": min_dhf, "max_dhf_ev_per_atom": max_dhf,
    }
    table_limit = 0 if (json_path or csv_path) else limit
    note = ""
    with _open_store(store_file, read_only=True) as store:
        if kind is Kind.reference:
            frame = store.reference_frame(include_outliers=include_outliers, limit=table_limit, source=source, **filters)
            found = set(frame["source"]) if "source" in frame else set()
            note = absent_sources_note(source, found, lambda: store.reference.distinct("source"), "the store")
        elif kind is Kind.predicted:
            frame = store.predictions_frame(model_name=model, limit=table_limit, **filters)
        else:
            frame = dft_first(store.compare_frame(model_name=model, include_outliers=include_outliers, **filters))
            frame = frame.head(table_limit) if table_limit else frame
    out = status_console(json_path, csv_path)
    beside = " (its provenance beside it: *.provenance.json)"
    if any(path is not None and not is_stdout(path) for path in (json_path, csv_path)):
        from fh_screen.exports import provenance_path, store_query_provenance

        provenance = store_query_provenance(frame, {**filters, "source": source, "model": model,
                                                    "include_outliers": include_outliers or None}, kind.value)
    with OutputBatch() as outputs:  # the tables and their provenance files, all or none
        if json_path is not None:
            _write_json(frame, json_path, outputs)
            if not is_stdout(json_path):
                outputs.json(provenance, provenance_path(json_path))
        if csv_path is not None:
            _write_csv(frame, csv_path, outputs)
            if not is_stdout(csv_path):
                outputs.json(provenance, provenance_path(csv_path))
    if json_path is not None and not is_stdout(json_path):
        out.print(f"wrote {len(frame)} document{'' if len(frame) == 1 else 's'} to {json_path}{beside}", highlight=False)
    if csv_path is not None and not is_stdout(csv_path):
        out.print(f"wrote {len(frame)} row{'' if len(frame) == 1 else 's'} to {csv_path}{beside}", highlight=False)
    if json_path is None and csv_path is None:
        _print_table(frame, kind, limit)
    if note:
        out.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)


def _top_candidates(top: int, min_p: float, chemsys, model, store_file, json_path, csv_path) -> None:
    """``fh-screen query --top N --min-p P``: the best new candidates over every stored screen."""
    import pandas as pd

    from fh_screen.store.query import TOP_COLUMNS

    if top < 0:
        fail(f"--top must be 0 (all) or more, got {top}")
    if not 0 <= min_p <= 1:
        fail(f"--min-p must be a probability between 0 and 1, got {min_p}")
    check_outputs(json_path, csv_path, provenance_of=(json_path, csv_path),
                  inputs={"the store file": store_file_in_use(store_file)})
    if chemsys is not None:
        from fh_screen.store.documents import subsystems

        subsystems(chemsys)  # a bad system fails before the store is opened
    files = [path for path in (json_path, csv_path) if path is not None and not is_stdout(path)]
    with _open_store(store_file, read_only=True) as store:
        rows = store.top_candidates(top=top, min_p=min_p, model=model, chemsys=chemsys)
        screens = _screens_of(store, rows) if files else []
    if files:
        from fh_screen.exports import provenance_path, top_candidates_provenance

        provenance = top_candidates_provenance(rows, {"top": top, "min_p": min_p, "chemsys": chemsys, "model": model},
                                               screens)
    out = status_console(json_path, csv_path)
    beside = " (its provenance beside it: *.provenance.json)"
    with OutputBatch() as outputs:  # the tables and their provenance files, all or none
        if json_path is not None:
            outputs.json(rows, json_path)
            if not is_stdout(json_path):
                outputs.json(provenance, provenance_path(json_path))
        if csv_path is not None:
            outputs.csv(pd.DataFrame(rows, columns=TOP_COLUMNS), csv_path)
            if not is_stdout(csv_path):
                outputs.json(provenance, provenance_path(csv_path))
    for path in (json_path, csv_path):
        if path is not None and not is_stdout(path):
            out.print(f"wrote {len(rows)} rows to {path}{beside}", highlight=False)
    if json_path is None and csv_path is None:
        _print_top(rows, top, min_p)


def _screens_of(store, rows: list[dict]) -> list[dict]:
    """The stored screens ``rows`` come from: what their provenance names (model, weights, version, sources)."""
    run_ids = sorted({row["run_id"] for row in rows})
    if not run_ids:
        return []
    fields = ["run_id", "model_name", "model_version", "weights_sha256", "fh_screen_version", "sources",
              "hull_sources", "candidates.known_source"]
    return list(store.screens.query(criteria={"run_id": {"$in": run_ids}}, properties=fields))


def _print_top(rows: list[dict], top: int, min_p: float) -> None:
    from rich.table import Table

    out = console()
    if not rows:
        out.print(f"no new candidate with P(stable) >= {min_p:g} in the stored screens (fill them: fh-screen bulk)")
        return
    table = Table(title=f"best {len(rows)} new candidates over the stored screens (P(stable) >= {min_p:g})",
                  title_justify="left")
    for title in ("rank", "formula", "system", "P(stable)", "E_hull pred\n(eV/atom)", "ΔH_f pred\n(eV/atom)", "model",
                  "run"):
        table.add_column(title, justify="right" if title in ("rank", "P(stable)") or "eV" in title else "left")
    prefiltered = set()
    for i, row in enumerate(rows, start=1):
        other = row.get("dhf_model") not in (None, row["model"])  # the cascade's prefilter predicted this row
        if other:
            prefiltered.add(row["dhf_model"])
        table.add_row(str(i), row["formula"], row["system"], f"{row['p_stable']:.2f}",
                      _number(row["e_above_hull_pred_ev_per_atom"]), _number(row["dhf_pred_ev_per_atom"]) + ("*" if other else ""),
                      row["model"], row["run_id"])
    out.print(table)
    if prefiltered:
        out.print(f"model: the screen's (P(stable) and rank); * ΔH_f and E_hull of the cascade's prefilter "
                  f"({', '.join(sorted(prefiltered))}), which the screen's model did not refine (column dhf_model)",
                  highlight=False, soft_wrap=True)


def dft_first(frame):
    """Rows with a DFT value first (in their order), then predictions of compositions without one.

    A screen stores thousands of predictions of enumerated compositions; the known entries of a
    system must not be buried under them.
    """
    if frame.empty or "dhf_ev_per_atom" not in frame.columns:
        return frame
    import pandas as pd

    known = frame["dhf_ev_per_atom"].notna()
    return pd.concat([frame[known], frame[~known]]).reset_index(drop=True)


def _records(frame) -> list[dict]:
    import math

    records = []
    for row in frame.to_dict(orient="records"):
        clean = {}
        for key, value in row.items():
            if hasattr(value, "isoformat"):
                value = value.isoformat()
            elif isinstance(value, float) and not math.isfinite(value):
                value = None
            elif hasattr(value, "item"):
                value = value.item()
            clean[key] = value
        records.append(clean)
    return records


def _with_model_label(frame):
    """``frame`` with a ``model`` column (``name@version``, as every other export names a model) after
    ``model_name``/``model_version``, which stay; empty where a row has no prediction."""
    if "model_name" not in frame.columns or "model_version" not in frame.columns or "model" in frame.columns:
        return frame
    import pandas as pd

    frame = frame.copy()
    labels = [f"{name}@{version}" if isinstance(name, str) and name and pd.notna(version) else None
              for name, version in zip(frame["model_name"], frame["model_version"])]
    frame.insert(list(frame.columns).index("model_version") + 1, "model", labels)
    return frame


def _write_json(frame, path: Path, outputs: OutputBatch) -> None:
    outputs.json(_records(_with_model_label(frame)), path)


def _write_csv(frame, path: Path, outputs: OutputBatch) -> None:
    frame = _with_model_label(frame)
    if "elements" in frame.columns:
        frame["elements"] = [" ".join(e) if isinstance(e, (list, tuple)) else e for e in frame["elements"]]
    outputs.csv(frame, path)


def _number(value, digits: int = 3) -> str:
    import math

    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.{digits}f}"


def _print_table(frame, kind: Kind, limit: int) -> None:
    from rich.table import Table

    out = console()
    if frame.empty:
        out.print("no matching entries")
        return
    columns = {
        Kind.reference: [("formula", "formula"), ("chemsys", "chemsys"), ("dhf_ev_per_atom", "ΔH_f ref (eV/atom)"),
                         ("source", "source")],
        Kind.predicted: [
            ("formula", "formula"), ("chemsys", "chemsys"), ("dhf_pred_ev_per_atom", "ΔH_f pred (eV/atom)"),
            ("dhf_std_ev_per_atom", "σ (eV/atom)"), ("e_above_hull_pred_ev_per_atom", "E_hull pred (eV/atom)"),
            ("model_name", "model"), ("run_id", "run"),
        ],
        Kind.both: [
            ("formula", "formula"), ("chemsys", "chemsys"), ("dhf_ev_per_atom", "ΔH_f ref (eV/atom)"),
            ("source", "source"), ("dhf_pred_ev_per_atom", "ΔH_f pred (eV/atom)"),
            ("dhf_error_ev_per_atom", "pred − DFT (eV/atom)"),
            ("model_name", "model"),
        ],
    }[kind]
    if "model_name" in frame.columns and "model_version" in frame.columns:  # the model as name@version, as --model takes it
        frame = frame.assign(model_name=[f"{n}@{v}" if isinstance(n, str) and isinstance(v, str) and v else n
                                         for n, v in zip(frame["model_name"], frame["model_version"])])
    columns = [(name, title) for name, title in columns if name in frame.columns and frame[name].notna().any()
               or name in ("formula", "dhf_ev_per_atom", "dhf_pred_ev_per_atom")]
    shown = frame.head(limit) if limit else frame
    table = Table(title=f"{kind.value}: {len(shown)} rows" + (f" (first {limit}; --limit 0 for all)" if limit and len(shown) == limit else ""))
    for name, title in columns:
        table.add_column(title, justify="right" if "ev_per_atom" in name else "left")
    for row in shown.to_dict(orient="records"):
        table.add_row(*[
            _number(row.get(name)) if "ev_per_atom" in name else _text(row.get(name))
            for name, _ in columns
        ])
    out.print(table)


def _text(value) -> str:
    """A table cell: empty for a missing value (None or NaN: a prediction-only row has no source)."""
    return "" if value is None or (isinstance(value, float) and value != value) else str(value)


def predict_store_command(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Shipped model name (or name@version), or path to a .pt checkpoint or a model folder holding model.pt."),
    processes: int = typer.Option(1, "--processes", "-p", help="Worker processes (maggma's multiprocessing runner)."),
    store_file: Optional[Path] = typer.Option(None, "--store", help=_STORE_HELP),
) -> None:
    """Predict every reference entry without a prediction from the model (a maggma Builder).

    The store must exist (a --store FILE that is not there is refused in one line, as by query)."""
    import asyncio

    from maggma.cli.multiprocessing import multi
    from maggma.cli.serial import serial

    from fh_screen.errors import check_processes
    from fh_screen.store.builders import PredictionBuilder

    check_processes(processes)  # bulk's rule: 1 to 256
    store = _open_store(store_file, read_only=False, must_exist=True)  # a typo'd path is not a new, empty store
    before = store.connect().predictions.count()
    store.close()
    builder = PredictionBuilder(store.reference, store.predictions, model=model)
    if processes > 1:
        asyncio.run(multi(builder, num_processes=processes, no_bars=False))
    else:
        serial(builder, no_bars=False)
    with store:
        after = store.predictions.count()
    # predictions carry no run id (they belong to (formula, model)): name the model, not a run `query --run` cannot show
    by = f" by {builder.model_label}" if builder.model_label else ""
    console().print(f"{after - before:,} new predictions{by}; the store holds {after:,}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``ingest``, ``query`` and ``predict-store`` to the application."""
    app.command("ingest")(one_line_errors(ingest_command))
    app.command("query")(one_line_errors(query_command))
    app.command("predict-store")(one_line_errors(predict_store_command))
