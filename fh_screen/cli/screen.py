"""``fh-screen screen Li-Fe-P-O`` (or just ``fh-screen Li-Fe-P-O``): rank a system's candidates.

Known phases come from the store's OQMD reference entries (filled from the table shipped with
the package on first use); every screen is saved to the store with its run id unless
``--no-store``. Heavy libraries are imported inside the command.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from fh_screen.cli.common import check_output_path, console, error_console, fail, one_line_errors
from fh_screen.screening.probability import DEFAULT_REFINE_TOP

__all__ = ["register", "write_outputs"]

_INGEST_HINT = (
    "no OQMD reference entries in the store: the hull is built from the elements and the predictions alone; "
    "run `fh-screen ingest PATH` (e.g. train.csv) to anchor it on DFT values; an embedded store is filled from "
    "the OQMD table shipped with fh-screen unless reference_data is off (FH_SCREEN_REFERENCE_DATA)"
)


def screen_command(
    chemsys: str = typer.Argument(..., help="Chemical system, elements joined by '-', e.g. Li-Fe-P-O."),
    top: int = typer.Option(20, "--top", "-n", help="Rows of the ranked table to print."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the full ranked list as JSON here."),
    csv_path: Optional[Path] = typer.Option(None, "--csv", help="Write the full ranked list as CSV here."),
    plot_path: Optional[Path] = typer.Option(None, "--plot", help="Draw the phase diagram (ternary/quaternary) to a .png."),
    max_atoms: int = typer.Option(20, "--max-atoms", help="Largest formula unit (atoms) to enumerate."),
    max_per_element: Optional[int] = typer.Option(None, "--max-per-element", help="Most atoms of one element (default max-atoms - 1)."),
    charge_neutral: bool = typer.Option(False, "--charge-neutral", help="Keep only charge-balanced new compositions."),
    exclude_known: bool = typer.Option(False, "--exclude-known", help="Leave known compositions out of the list (they still shape the hull)."),
    force: bool = typer.Option(False, "--force", help="Run even when the enumeration is above --max-candidates."),
    max_candidates: int = typer.Option(250_000, "--max-candidates", help="Refuse larger enumerations unless --force."),
    tolerance: float = typer.Option(0.05, "--tolerance", help="E_hull window (eV/atom) for the probability of being stable."),
    no_store: bool = typer.Option(False, "--no-store", help="Do not save this screen to the store."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Shipped model name or path to a .pt checkpoint."),
    refine_top: int = typer.Option(DEFAULT_REFINE_TOP, "--refine-top", min=0,
                                   help="With the (slow) attention model: predict only the best N new candidates of the fast "
                                        "paper prefilter (a fast single network) with it; 0 predicts every candidate with it."),
    sources: Optional[str] = typer.Option(None, "--sources", help="Reference sources on the hull, e.g. oqmd,chgnet "
                                          "(default: every source in the store; the lowest value of a composition counts)."),
) -> None:
    """Rank the candidate compositions of a chemical system by predicted stability."""
    from fh_screen.chem.candidates import parse_chemsys
    from fh_screen.screening import ScreenOptions, check_size

    started = time.perf_counter()
    system = parse_chemsys(chemsys)
    if top < 0:
        fail(f"--top must be 0 or more, got {top}")
    for path in (json_path, csv_path, plot_path):
        if path is not None:
            check_output_path(Path(path).expanduser())  # before any work: folder exists, writable, not a folder
    if plot_path is not None:
        if Path(plot_path).suffix.lower() != ".png":
            fail(f"--plot needs a .png path, got {plot_path}")
        if len(system) not in (3, 4):
            fail(f"--plot draws ternary and quaternary systems only; {'-'.join(system)} has {len(system)} elements")
    options = ScreenOptions(
        max_atoms=max_atoms,
        max_per_element=max_per_element,
        charge_neutral=charge_neutral,
        include_known=not exclude_known,
        max_candidates=max_candidates,
        force=force,
        e_hull_tolerance_ev_per_atom=tolerance,
        refine_top=refine_top or None,
    )
    options.validate()
    check_size(system, options)  # limits and size are checked before loading anything heavy

    with _Stages() as stages:
        stages("loading the model")
        from fh_screen.models.predictor import Predictor

        predictor = Predictor.from_name(model)
        stages("reading known phases from the store")
        known, n_reference, store_note = _known_from_store(system, read_only=no_store, sources=sources)
        from fh_screen.screening import screen

        result = screen(system, predictor=predictor, known=known, options=options, progress=stages)
        saved = ""
        if not no_store:
            n_own = int(result.table["refined"].sum()) if "refined" in result.table else result.n_candidates
            stages(f"saving {n_own:,} predictions of {predictor.name} to the store")
            saved = _save(result, predictor, options)
        if plot_path is not None:
            stages("drawing the phase diagram")
            from fh_screen.plotting import plot_screen

            plot_screen(result, plot_path, top=min(max(top, 0), 30))
    write_outputs(result, json_path=json_path, csv_path=csv_path)
    _print(result, top, predictor, time.perf_counter() - started)
    notes = []
    if store_note:
        notes.append(store_note)
    elif n_reference == 0:
        notes.append(_INGEST_HINT)
    notes.extend(result.warnings)
    out = console()
    for note in notes:
        out.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
    for label, path in (("JSON", json_path), ("CSV", csv_path), ("plot", plot_path)):
        if path is not None:
            out.print(f"wrote {label} to {path}", highlight=False, soft_wrap=True)
    if saved:
        out.print(saved, highlight=False, soft_wrap=True)


class _Stages:
    """Progress on stderr: a transient line naming the current stage on a terminal; otherwise
    (logs, pipes, batch jobs) one line per finished stage with its duration.

    A stage that fails prints nothing, so an error stays the only line.
    """

    def __enter__(self):
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self._stderr = error_console()
        self._progress = None
        self._current: tuple[str, float] | None = None
        if self._stderr.is_terminal:
            self._progress = Progress(
                SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                console=self._stderr, transient=True,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task("starting", total=None)
        return self

    def _finish_current(self) -> None:
        if self._progress is None and self._current is not None:
            label, started = self._current
            self._stderr.print(f"fh-screen: {label}: {time.perf_counter() - started:.1f} s", highlight=False, soft_wrap=True)
        self._current = None

    def __call__(self, label: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=label)
            return
        self._finish_current()
        self._current = (label, time.perf_counter())

    def __exit__(self, exc_type, *exc):
        if self._progress is not None:
            return self._progress.__exit__(exc_type, *exc)
        if exc_type is None:
            self._finish_current()
        return None


def _known_from_store(system: tuple[str, ...], read_only: bool, sources: str | None = None):
    """(reference frame or None, number of reference entries, note or '').

    With ``read_only`` (``--no-store``) a store file that does not exist yet is not created: the
    OQMD table shipped with the package is read directly instead (unless ``reference_data`` is off).
    """
    from fh_screen.settings import FhScreenSettings
    from fh_screen.store import FhScreenStore

    settings = FhScreenSettings()
    if read_only and not settings.mongo_uri and not settings.store_path.exists():
        if not settings.reference_data:
            return None, 0, ""
        from fh_screen.store.bootstrap import packaged_reference_frame, reference_metadata

        frame = packaged_reference_frame("-".join(system))  # the shipped table is OQMD's
        if sources is not None:
            from fh_screen.store.query import parse_sources

            frame = frame.iloc[0:0] if "oqmd" not in parse_sources(sources) else frame
        return frame, reference_metadata()["n_compositions"], ""
    with FhScreenStore.from_settings(settings, read_only=read_only) as store:
        n_reference = store.n_reference()
        if n_reference == 0:
            return None, 0, ""
        return store.reference_frame(chemsys="-".join(system), source=sources), n_reference, ""


def _save(result, predictor, options) -> str:
    """Write the screen (``screens``, a new run id) and its predictions (``predictions``) to the store.

    The screens document is the one the prescreen job returns (:meth:`ScreenDoc.from_result`);
    ``result.run_id`` becomes the stored run id, so the printed id is the one to query.
    """
    from fh_screen.store import FhScreenStore, ScreenDoc

    doc = ScreenDoc.from_result(result, options, origin="cli")
    with FhScreenStore.from_settings() as store:
        n_saved = store.save_predictions(result.table, predictor, formulas_reduced=True)
        store.save_screen(doc)
    result.run_id = doc.run_id
    return f"saved run {doc.run_id} ({n_saved:,} predictions) to the store: fh-screen query --run {doc.run_id}"


def write_outputs(result, *, json_path: Optional[Path] = None, csv_path: Optional[Path] = None) -> None:
    """Write the ranked list with exactly :data:`fh_screen.screening.result.RESULT_COLUMNS` (atomic writes)."""
    import json

    from fh_screen.screening import RESULT_COLUMNS

    if json_path is not None:
        records = [{key: row[key] for key in RESULT_COLUMNS} for row in result.records()]
        _atomic_write(Path(json_path), lambda tmp: tmp.write_text(json.dumps(records, indent=1, allow_nan=False) + "\n"))
    if csv_path is not None:
        frame = result.table[RESULT_COLUMNS]
        _atomic_write(Path(csv_path), lambda tmp: frame.to_csv(tmp, index=False, float_format="%.6g"))


def _atomic_write(path: Path, write) -> None:
    """Checked, atomic write with clean-up (see :func:`fh_screen.cli.common.atomic_write`)."""
    from fh_screen.cli.common import atomic_write

    atomic_write(path, write)


def _fmt(value, digits: int = 3) -> str:
    import math

    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return f"{value:.{digits}f}"


def _print(result, top: int, predictor, seconds: float) -> None:
    from rich.table import Table

    table = Table(
        title=f"{'-'.join(result.chemsys)}: top {min(top, len(result.table))} of {result.n_candidates:,} candidates "
        f"— model {predictor.name}@{predictor.version}",
        title_justify="left",
    )
    has_std = "dhf_std_ev_per_atom" in result.table.columns
    table.add_column("rank", justify="right")
    table.add_column("formula")
    table.add_column("ΔH_f pred\n(eV/atom)", justify="right")
    if has_std:
        table.add_column("σ", justify="right")
    table.add_column("E_hull\n(eV/atom)", justify="right")
    if has_std:
        table.add_column("P(stable)", justify="right")
    table.add_column("ΔH_f DFT\n(eV/atom)", justify="right")
    table.add_column("decomposition")
    for row in result.table.head(max(top, 0)).itertuples(index=False):
        cells = [str(row.rank), row.formula, _fmt(row.dhf_pred_ev_per_atom)]
        if has_std:
            cells.append(_fmt(row.dhf_std_ev_per_atom))
        cells.append(_fmt(row.e_above_hull_pred_ev_per_atom))
        if has_std:
            cells.append(_fmt(row.p_stable, 2))
        cells.append(_fmt(row.known_dhf_ev_per_atom))
        if row.is_known and row.e_above_hull_pred_ev_per_atom == 0:
            cells.append("on hull (DFT)")
        elif row.e_above_hull_pred_ev_per_atom < 0:
            cells.append(f"below {row.decomposition}")
        else:
            cells.append(row.decomposition)
        table.add_row(*cells)
    out = console()
    if top > 0:
        out.print(table)
    n_known = int(result.table["is_known"].sum())
    new = ~result.table["is_known"]
    n_below = int((new & (result.table["e_above_hull_pred_ev_per_atom"] < 0)).sum())
    n_selected = int(result.table["selected"].sum()) if "selected" in result.table else 0
    if top > 0:
        out.print("E_hull: above the hull of the known (DFT) phases, a known composition at its DFT value, a new one at "
                  "its prediction (negative: predicted below it). Ranked by log P(below the known hull) + log prior "
                  "(docs/evaluation.md).", highlight=False, soft_wrap=True)
    if result.prefilter and "refined" in result.table:
        out.print(f"{result.prefilter} ranked every candidate; {result.model_name} predicted the best "
                  f"{int(result.table['refined'].sum()):,} (known ones included), which head the list (--refine-top 0: all).",
                  highlight=False, soft_wrap=True)
    out.print(
        f"{result.n_candidates:,} candidates ({n_known:,} known), {n_below:,} new ones predicted below the known hull, "
        f"{n_selected:,} selected as new candidates; {result.n_known:,} known phases in the hull; {seconds:.2f} s; "
        f"run {result.run_id}",
        highlight=False,
        soft_wrap=True,
    )


def register(app: typer.Typer) -> None:
    """Add ``screen`` to the application."""
    app.command("screen")(one_line_errors(screen_command))
