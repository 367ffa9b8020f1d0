"""``fh-screen runs`` (list the stored screens) and ``fh-screen query --run ID`` (show one).

Every ``fh-screen SYSTEM`` run (unless ``--no-store``) and every prescreen job writes one document
to the store's ``screens`` collection, under a new run id; nothing overwrites an earlier screen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from fh_screen.cli.common import (
    OutputBatch,
    check_outputs,
    console,
    fail,
    is_stdout,
    one_line_errors,
    status_console,
    store_file_in_use,
    write_json_file,
)

__all__ = ["register", "runs_command", "show_run"]

_STORE_HELP = "Embedded store file to use instead of the configured one (settings: ~/.fh_screen.yaml, FH_SCREEN_*)."


def _open_store(store_file: Optional[Path]):
    """The store to read, read-only; None when the configured embedded store has not been written
    yet (nothing saved: as an empty MongoDB database reads). A ``--store`` path that does not exist
    is an error (most likely a typo)."""
    from fh_screen.settings import FhScreenSettings
    from fh_screen.store import FhScreenStore

    if store_file is not None:
        if not store_file.exists():
            fail(f"no store at {store_file}")
        return FhScreenStore.embedded(store_file, read_only=True)
    settings = FhScreenSettings()
    if not settings.mongo_uri and not settings.store_path.exists():
        return None
    if settings.mongo_uri:  # reading screens writes nothing: no first-use fill of an unused database (no file is made either)
        settings = settings.model_copy(update={"reference_data": False})
    return FhScreenStore.from_settings(settings, read_only=True)


def _has_screens(store) -> bool:
    """Whether any screen is saved in ``store`` (False for an embedded file written before the screens collection
    existed, or a MongoDB database whose screens collection is empty or not there): nothing to list."""
    from fh_screen.store import SQLiteStore

    screens = store.screens
    if isinstance(screens, SQLiteStore) and screens.read_only and not screens.collection_exists():
        return False
    return screens.count() > 0


def _stored_models(store) -> list[str]:
    """``name@version`` of every model with a saved screen (to name them when a --model matches none)."""
    pairs = {(d.get("model_name"), d.get("model_version"))
             for d in store.screens.query(properties=["model_name", "model_version"])}
    return sorted(f"{name}@{version}" for name, version in pairs)


def runs_command(
    chemsys: Optional[str] = typer.Option(None, "--chemsys", "-c", help="Only screens of this system (elements in any order)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Only screens made with this model (name or name@version)."),
    limit: int = typer.Option(20, "--limit", help="Newest N screens (0: all)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the listing as JSON here ('-': print it)."),
    store_file: Optional[Path] = typer.Option(None, "--store", help=_STORE_HELP),
) -> None:
    """List the saved screens (CLI runs and prescreen jobs), newest first."""
    if limit < 0:
        fail(f"--limit must be 0 or more, got {limit}")
    check_outputs(json_path, inputs={"the store file": store_file_in_use(store_file)})
    store = _open_store(store_file)
    rows: list[dict] = []
    models: list[str] = []
    if store is not None:
        with store:
            rows = store.screen_summaries(chemsys=chemsys, model_name=model, limit=limit) if _has_screens(store) else []
            models = _stored_models(store) if model and not rows and _has_screens(store) else []
    if json_path is not None:
        _write_json(rows, json_path)
        if not is_stdout(json_path):
            console().print(f"wrote {len(rows)} screens to {json_path}", highlight=False)
        return
    out = console()
    if not rows:
        of = (f" of {chemsys}" if chemsys else "") + (f" by model {model}" if model else "")
        held = f" (the store holds screens of {', '.join(models)})" if models else ""
        if not of:  # nothing saved at all: no store file yet, an unused MongoDB database, an empty store
            held = " yet (run `fh-screen SYSTEM` to save one)"
        out.print(f"no saved screens{of}{held}", highlight=False, soft_wrap=True)
        return
    from rich.table import Table

    table = Table(title=f"{len(rows)} saved screens, newest first (fh-screen query --run ID shows one)", title_justify="left")
    for title in ("run id", "created (UTC)", "system", "origin", "model", "candidates", "known", "selected"):
        table.add_column(title, justify="right" if title in ("candidates", "known") else "left")
    for row in rows:
        created = row.get("created_at")
        table.add_row(
            row["run_id"], created.strftime("%Y-%m-%d %H:%M:%S") if hasattr(created, "strftime") else str(created or ""),
            row.get("chemsys", ""), row.get("origin", ""), f"{row.get('model_name')}@{row.get('model_version')}",
            f"{row.get('n_candidates', 0):,}", f"{row.get('n_reference', 0):,}",
            _short_list(row.get("selected_formulas") or []),
        )
    out.print(table)
    out.print("selected: the run's short list of new candidates worth a DFT calculation (count: first three); "
              "fh-screen query --run ID shows them all.", highlight=False, soft_wrap=True)


def _short_list(formulas: list[str]) -> str:
    """``"12: A, B, C, …"`` for a long list, the formulas themselves for three or fewer."""
    if len(formulas) <= 3:
        return ", ".join(formulas) or "none"
    return f"{len(formulas)}: {', '.join(formulas[:3])}, …"


def show_run(run_id: str, *, store_file: Optional[Path] = None, limit: int = 50,
             json_path: Optional[Path] = None, csv_path: Optional[Path] = None) -> None:
    """Print (or write) the screen stored under ``run_id``: its ranked candidates and selection."""
    check_outputs(json_path, csv_path, provenance_of=(json_path, csv_path),
                  inputs={"the store file": store_file_in_use(store_file)})
    store = _open_store(store_file)
    if store is None:
        from fh_screen.settings import FhScreenSettings

        fail(f"no screen with run id {run_id!r}: no screen has been saved yet "
             f"(no store at {FhScreenSettings().store_path}; run `fh-screen SYSTEM`)")
    with store:
        if not _has_screens(store):
            fail(f"no screen with run id {run_id!r}: no screen has been saved in {store.screens.name}")
        doc = store.get_screen(run_id)
    out = status_console(json_path, csv_path)
    from fh_screen.exports import provenance_path, stored_screen_provenance

    from fh_screen.exports import stored_screen_frame

    frame = stored_screen_frame(doc) if csv_path is not None else None  # the columns and order of the screen's own --csv
    with OutputBatch() as outputs:  # the tables and their provenance files, all or none
        if json_path is not None:
            outputs.text(doc.model_dump_json(indent=1) + "\n", json_path)
            if not is_stdout(json_path):
                outputs.json(stored_screen_provenance(doc), provenance_path(json_path))
        if csv_path is not None:
            outputs.csv(frame, csv_path, float_format="%.6g")
            if not is_stdout(csv_path):
                outputs.json(stored_screen_provenance(doc), provenance_path(csv_path))
    if json_path is not None and not is_stdout(json_path):
        out.print(f"wrote screen {doc.run_id} to {json_path} (its provenance beside it: *.provenance.json)",
                  highlight=False)
    if csv_path is not None and not is_stdout(csv_path):
        out.print(f"wrote {len(frame)} candidates to {csv_path} (its provenance beside it: *.provenance.json)",
                  highlight=False)
    if json_path is None and csv_path is None:
        _print_screen(doc, limit)


def _print_screen(doc, limit: int) -> None:
    from rich.table import Table

    out = console()
    shown = doc.candidates[:limit] if limit else doc.candidates
    kept = f" (the first {len(doc.candidates):,} kept)" if len(doc.candidates) < doc.n_candidates else ""
    table = Table(
        title=f"run {doc.run_id}: {doc.chemsys}, {doc.n_candidates:,} candidates{kept} — model "
        f"{doc.model_name}@{doc.model_version}, {doc.origin}, {doc.created_at:%Y-%m-%d %H:%M:%S} UTC",
        title_justify="left",
    )
    for title in ("rank", "formula", "ΔH_f pred\n(eV/atom)", "E_hull pred\n(eV/atom)", "ΔH_f known\n(eV/atom)", "decomposition"):
        table.add_column(title, justify="left" if title in ("formula", "decomposition") else "right")
    for c in shown:
        table.add_row(str(c.rank), c.formula, _number(c.dhf_pred_ev_per_atom), _number(c.e_above_hull_pred_ev_per_atom),
                      _number(c.known_dhf_ev_per_atom), c.decomposition or "")
    out.print(table)
    options = ", ".join(f"{k}={v}" for k, v in doc.options.items())
    out.print(f"options: {options}", highlight=False, soft_wrap=True)
    counted = ", ".join(doc.sources) if doc.sources is not None else "every source in the store"
    out.print(f"reference: {doc.reference or 'none'} ({doc.n_reference:,} known phases in the hull; "
              f"sources: {counted})", highlight=False, soft_wrap=True)
    if doc.selection:
        out.print(f"selected ({doc.selection}): {', '.join(doc.selected_formulas) or 'none'}", highlight=False,
                  soft_wrap=True)
    for problem in doc.problems:
        out.print(f"[yellow]note:[/] [{problem.stage}] {problem.formula or ''} {problem.message}", highlight=False,
                  soft_wrap=True)


def _number(value, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _write_json(rows: list[dict], path: Path) -> None:
    clean = [{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()} for row in rows]
    write_json_file(clean, path)


def register(app: typer.Typer) -> None:
    """Add ``runs`` to the application (``query --run`` lives in :mod:`fh_screen.cli.store`)."""
    app.command("runs")(one_line_errors(runs_command))
