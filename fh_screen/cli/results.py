"""``fh-screen results``: the calculations brought back into the store, whatever became of them.

Every job :class:`~fh_screen.jobs.results.ResultsBackMaker` (or the results builder) read is one
document of the ``results`` collection: ``successful`` with its formation enthalpy, or
``failed``, ``unconverged``, ``rejected`` or ``no_reference`` with the reason. This lists them
(filters: state, source, formula, chemical system), so a failed relax is as visible as a new
reference entry, and two results of one composition and source are both traceable by job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from fh_screen.cli.common import (
    check_outputs,
    console,
    fail,
    is_stdout,
    one_line_errors,
    status_console,
    store_file_in_use,
    write_csv,
    write_json_file,
)

__all__ = ["register"]

#: Columns of the table and of ``--csv`` (``--json`` has every field but the structure).
RESULT_COLUMNS = ["formula", "source", "state", "dhf_ev_per_atom", "energy_per_atom_ev", "functional",
                  "force_field_model", "job_uuid",
                  "job_name", "message", "expected_formula", "last_updated"]
STATES = ("successful", "failed", "unconverged", "rejected", "no_reference")


def _results_store(store_file: Optional[Path]):
    """The ``results`` collection, read-only: of ``store_file``, else of the configured store (embedded or
    MongoDB); None when the configured embedded store has not been written yet (nothing has come back,
    as an empty MongoDB database reads). A ``--store`` path that does not exist is an error."""
    from fh_screen.settings import FhScreenSettings
    from fh_screen.store import SQLiteStore

    settings = FhScreenSettings()
    if store_file is None and settings.mongo_uri:
        from fh_screen.store.mongo import check_reachable, mongo_collection

        results = mongo_collection(settings, settings.results_collection, "result_id")
        check_reachable(results, settings.mongo_uri)  # one line, as every other command says it
        return results
    path = store_file if store_file is not None else settings.store_path
    if store_file is None and not Path(path).exists():
        return None
    if not Path(path).is_file():
        fail(f"no store at {path}: nothing has come back yet (ResultsBackMaker, workflows/closed_loop_chgnet.py)")
    return SQLiteStore(path, settings.results_collection if store_file is None else "results", key="result_id",
                       read_only=True)


def _no_results_yet(store) -> bool:
    """No store written yet, or an embedded store file that has never held a results collection
    (nothing brought back into it)."""
    from fh_screen.store import SQLiteStore

    if store is None:
        return True
    # MongoDB: a collection that does not exist reads as empty
    return isinstance(store, SQLiteStore) and not store.collection_exists()


def results_command(
    state: Optional[str] = typer.Option(None, "--state", help=f"Only results in this state ({', '.join(STATES)})."),
    source: Optional[str] = typer.Option(None, "--source", "--sources", help="Only results of these sources (chgnet, atomate2-vasp; comma separated)."),
    formula: Optional[list[str]] = typer.Option(None, "--formula", "-f", help="Formula (repeatable); reduced first."),
    chemsys: Optional[str] = typer.Option(None, "--chemsys", "-c", help="Li-Fe-O: every result whose elements are a subset."),
    limit: int = typer.Option(50, "--limit", help="Rows in the table (0: all); --json/--csv get every row."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the results as a JSON list ('-': print it)."),
    csv_path: Optional[Path] = typer.Option(None, "--csv", help="Write the results as CSV ('-': print it)."),
    store_file: Optional[Path] = typer.Option(None, "--store", help="Embedded store file (default: the configured store)."),
) -> None:
    """List the calculations brought back (successful, failed, unconverged, rejected, no_reference) with their reasons."""
    from datetime import datetime

    import pandas as pd

    from fh_screen.store.query import absent_sources_note, criteria_for, parse_sources

    if limit < 0:
        fail(f"--limit must be 0 (all rows) or more, got {limit}")
    if state is not None and state.strip().lower() not in STATES:
        fail(f"--state must be one of {', '.join(STATES)}, got {state!r}")
    check_outputs(json_path, csv_path, inputs={"the store file": store_file_in_use(store_file)})
    criteria = criteria_for(formula or None, chemsys)  # a bad formula or system fails here
    if source is not None:
        parse_sources(source)  # and a bad source name (the criterion is made once the store is open)
    if state is not None:
        criteria["state"] = state.strip().lower()
    store = _results_store(store_file)
    docs: list[dict] = []
    empty = _no_results_yet(store)
    note = ""
    if not empty:
        store.connect()
        try:
            empty = not store.count()  # MongoDB: a collection never written reads as empty, as a new file does
            if not empty:
                if source is not None:  # ChgNet reads as chgnet unless results are stored under that spelling
                    criteria.update(criteria_for(source=source, sources_present=lambda: store.distinct("source")))
                docs = [{k: v.isoformat() if isinstance(v, datetime) else v for k, v in d.items()
                         if k not in ("_id", "structure")}
                        for d in store.query(criteria=criteria, sort={"last_updated": -1, "result_id": 1})]
                note = absent_sources_note(source, {d.get("source") for d in docs}, lambda: store.distinct("source"),
                                           "the store", what="result")
        finally:
            store.close()
    out = status_console(json_path, csv_path)
    if json_path is not None:
        write_json_file(docs, json_path)
        if not is_stdout(json_path):
            out.print(f"wrote {len(docs)} results to {json_path}", highlight=False)
    if csv_path is not None:
        write_csv(pd.DataFrame(docs, columns=RESULT_COLUMNS), csv_path)
        if not is_stdout(csv_path):
            out.print(f"wrote {len(docs)} rows to {csv_path}", highlight=False)
    if json_path is None and csv_path is None:
        if empty:
            from fh_screen.settings import FhScreenSettings

            where = FhScreenSettings().store_path if store is None else store.path if hasattr(store, "path") else store.name
            out.print(f"no results in {where} yet: nothing has come back (ResultsBackMaker, "
                      "workflows/closed_loop_chgnet.py)", highlight=False, soft_wrap=True)
        else:
            _print_results(docs, limit)
    if note:
        out.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)


def _print_results(docs: list[dict], limit: int) -> None:
    from rich.table import Table

    out = console()
    if not docs:
        out.print("no matching results")
        return
    counts: dict[str, int] = {}
    for doc in docs:
        counts[doc["state"]] = counts.get(doc["state"], 0) + 1
    shown = docs[:limit] if limit else docs
    table = Table(title=f"results: {len(docs)} ({', '.join(f'{n} {s}' for s, n in sorted(counts.items()))})"
                  + (f"; first {limit} (--limit 0 for all)" if limit and len(docs) > limit else ""))
    for title in ("formula", "source", "state", "ΔH_f (eV/atom)", "job", "why not"):
        table.add_column(title, justify="right" if "eV" in title else "left")
    for doc in shown:
        dhf = doc.get("dhf_ev_per_atom")
        table.add_row(str(doc.get("formula") or doc.get("expected_formula") or "?"), str(doc.get("source")),
                      str(doc.get("state")), "" if dhf is None else f"{dhf:.3f}", str(doc.get("job_uuid", ""))[:8],
                      str(doc.get("message") or ""))
    out.print(table)


def register(app: typer.Typer) -> None:
    """Add ``results`` to the application."""
    app.command("results")(one_line_errors(results_command))
