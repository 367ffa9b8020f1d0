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

from fh_screen.cli.common import (
    check_outputs,
    error_console,
    fail,
    is_stdout,
    one_line_errors,
    screen_options_from_flags,
    status_console,
    store_file_in_use,
)
from fh_screen.defaults import DEFAULT_REFINE_TOP, DEFAULT_SELECT_P_MIN

__all__ = ["register", "write_outputs"]

def screen_command(
    chemsys: str = typer.Argument(..., help="Chemical system, elements joined by '-', e.g. Li-Fe-P-O."),
    top: int = typer.Option(20, "--top", "-n", help="Rows of the ranked table to print."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the full ranked list as JSON here ('-': print it; the table then goes to stderr)."),
    csv_path: Optional[Path] = typer.Option(None, "--csv", help="Write the full ranked list as CSV here ('-': print it; the table then goes to stderr)."),
    plot_path: Optional[Path] = typer.Option(None, "--plot", help="Draw the phase diagram (binary hull plot, ternary, quaternary) to a .png."),
    max_atoms: int = typer.Option(20, "--max-atoms", help="Largest formula unit (atoms) to enumerate."),
    max_per_element: Optional[int] = typer.Option(None, "--max-per-element", help="Most atoms of one element (default max-atoms - 1)."),
    charge_neutral: bool = typer.Option(False, "--charge-neutral", help="Keep only charge-balanced new compositions."),
    exclude_known: bool = typer.Option(False, "--exclude-known", help="Leave known compositions out of the list (they still shape the hull)."),
    force: bool = typer.Option(False, "--force", help="Run even when the enumeration is above --max-candidates."),
    max_candidates: int = typer.Option(250_000, "--max-candidates", help="Refuse larger enumerations unless --force."),
    tolerance: float = typer.Option(0.05, "--tolerance", help="No effect on the shipped P(stable) (P(on or below the known hull), docs/claims.md): the "
                   "E_hull window (eV/atom) of the σ-only P(E_hull < window) a screen falls back to without a classifier."),
    no_store: bool = typer.Option(False, "--no-store", help="Do not save this screen to the store."),
    store_file: Optional[Path] = typer.Option(None, "--store", help="Embedded store file to use instead of the configured "
                                              "one (filled with the shipped OQMD table on first use, as the configured one)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Shipped model name (or name@version), or path to a .pt checkpoint or a model folder holding model.pt."),
    dft_budget: Optional[int] = typer.Option(None, "--dft-budget", help="Select the N new candidates with the highest "
                                             "P(stable) (the most expected discoveries for N DFT calculations)."),
    select_p_min: float = typer.Option(DEFAULT_SELECT_P_MIN, "--select-p-min",
                                       help="Without --dft-budget: select new candidates with P(stable) at least this."),
    refine_top: int = typer.Option(DEFAULT_REFINE_TOP, "--refine-top", min=0,
                                   help="With the (slow) attention model: predict only the best N new candidates of the fast "
                                        "paper prefilter (a fast single network) with it, then the best N by P(stable) and "
                                        "every selected row; 0 predicts every candidate with it."),
    sources: Optional[str] = typer.Option(None, "--sources", "--source", help="Reference sources on the hull, e.g. oqmd,chgnet "
                                          "(default: every source in the store; the lowest value of a composition counts)."),
) -> None:
    """Rank the candidate compositions of a chemical system by predicted stability."""
    from fh_screen.chem.candidates import parse_chemsys
    from fh_screen.screening import check_size

    started = time.perf_counter()
    system = parse_chemsys(chemsys)
    if top < 0:
        fail(f"--top must be 0 or more, got {top}")
    # before any work: folder exists, writable, not a folder, not the store, nor one file named twice
    check_outputs(json_path, csv_path, plot_path, provenance_of=(json_path, csv_path),
                  inputs={"the store file": store_file_in_use(store_file)})
    if is_stdout(plot_path):
        fail("--plot needs a .png path, not '-'")
    if plot_path is not None:
        if Path(plot_path).suffix.lower() != ".png":
            fail(f"--plot needs a .png path, got {plot_path}")
        from fh_screen.plotting import DRAWN_SIZES

        if len(system) not in DRAWN_SIZES:
            fail(f"--plot draws binary, ternary and quaternary systems only; {'-'.join(system)} has {len(system)} elements")
    options = screen_options_from_flags(
        max_atoms=max_atoms,
        max_per_element=max_per_element,
        charge_neutral=charge_neutral,
        include_known=not exclude_known,
        max_candidates=max_candidates,
        force=force,
        e_hull_tolerance_ev_per_atom=tolerance,
        refine_top=refine_top or None,
        dft_budget=dft_budget,
        select_p_min=select_p_min,
    )
    check_size(system, options)  # limits and size are checked before loading anything heavy

    with _Stages() as stages:
        from fh_screen.models.predictor import load_predictor
        from fh_screen.service import run_screen

        store = _store(store_file, read_only=no_store, stages=stages) if store_file is not None else None
        result, phases, saved = run_screen(system, options=options, read_only=no_store, save=not no_store,
                                           origin="cli", model=model, progress=stages, sources=sources, store=store)
        predictor = load_predictor(model)  # loaded by the screen, kept in the cache
        if plot_path is not None:
            stages("drawing the phase diagram")
            from fh_screen.plotting import plot_screen

            plot_screen(result, plot_path, top=min(max(top, 0), 30))
    write_outputs(result, json_path=json_path, csv_path=csv_path, options=options, saved=saved is not None)
    out = status_console(json_path, csv_path)  # stderr when the ranked list goes to stdout
    _print(result, top, predictor, time.perf_counter() - started, out, saved=saved is not None)
    for note in result.warnings:
        out.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
    for label, path in (("JSON", json_path), ("CSV", csv_path), ("plot", plot_path)):
        if path is not None and not is_stdout(path):
            beside = "" if label == "plot" else " (its provenance beside it: *.provenance.json)"
            out.print(f"wrote {label} to {path}{beside}", highlight=False, soft_wrap=True)
    if saved is not None:
        where = f" --store {store_file}" if store_file is not None else ""
        out.print(f"saved run {saved.run_id} ({saved.n_predictions:,} predictions) to the store: "
                  f"fh-screen query --run {saved.run_id}{where}", highlight=False, soft_wrap=True)


def _store(store_file: Path, *, read_only: bool, stages):
    """The embedded store of ``--store FILE``: filled with the shipped table on first use (unless
    ``--no-store``, which reads the file as it is and creates nothing)."""
    from fh_screen.store import FhScreenStore
    from fh_screen.store.bootstrap import fill_store_file

    path = Path(store_file).expanduser()
    if not read_only:
        stages(f"filling {path} with the shipped reference table (first use)" if not path.exists()
               else "reading known phases from the store")
        fill_store_file(path)
        FhScreenStore.embedded(path).connect().close()  # a file that cannot be written fails here, before the work
    return FhScreenStore.embedded(path, read_only=read_only)


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


def write_outputs(result, *, json_path: Optional[Path] = None, csv_path: Optional[Path] = None, options=None,
                  saved: bool | None = None) -> None:
    """Write the whole ranked table (every column and the model of each row, :mod:`fh_screen.exports`), atomically
    (a path of ``-``: printed on stdout), and beside each file its provenance (``<file>.provenance.json``:
    run id, versions, model, options, known sources, OQMD's attribution); the files as one set
    (:class:`~fh_screen.cli.common.OutputBatch`)."""
    from fh_screen.cli.common import OutputBatch
    from fh_screen.exports import export_frame, export_provenance, export_records, provenance_path

    with OutputBatch() as outputs:  # the tables and their provenance files, all or none
        if json_path is not None:
            outputs.json(export_records(result), json_path)
        if csv_path is not None:
            outputs.csv(export_frame(result), csv_path, float_format="%.6g")
        for path in (json_path, csv_path):
            if path is not None and not is_stdout(path):
                outputs.json(export_provenance(result, options, saved=saved), provenance_path(path))


def _fmt(value, digits: int = 3) -> str:
    import math

    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return f"{value:.{digits}f}"


#: What "known" means with the shipped OQMD table, printed under a screen whose hull uses it.
SHIPPED_OQMD_CAVEAT = (
    "known = in the store: the shipped OQMD table holds the compositions of OQMD's train and val splits (about 85 % "
    "of them; the other 15 % were held back for testing, docs/store.md), so a candidate new here (e.g. Li3PO4 or "
    "MnO2) may already be in OQMD, ICSD or the Materials Project: check the short list there before DFT.")


def _print(result, top: int, predictor, seconds: float, out, *, saved: bool = True) -> None:
    from rich.table import Table

    table = Table(
        title=f"{'-'.join(result.chemsys)}: top {min(top, len(result.table))} of {result.n_candidates:,} candidates "
        f"— model {predictor.name}@{predictor.version}" + (f" (prefilter {result.prefilter})" if result.prefilter else ""),
        title_justify="left",
    )
    cascade = bool(result.prefilter) and "refined" in result.table
    has_std = "dhf_std_ev_per_atom" in result.table.columns
    has_p = "p_stable" in result.table.columns  # every screen ranks by it, a model without σ too
    table.add_column("rank", justify="right")
    table.add_column("formula")
    table.add_column("ΔH_f pred\n(eV/atom)", justify="right")
    if has_std:
        table.add_column("σ", justify="right")
    table.add_column("E_hull\n(eV/atom)", justify="right")
    if has_p:
        table.add_column("P(stable)", justify="right")
    table.add_column("ΔH_f known\n(eV/atom)", justify="right")
    table.add_column("decomposition")
    for row in result.table.head(max(top, 0)).itertuples(index=False):
        prefilter_only = cascade and not row.refined  # the prefilter's value: no σ, not the screen's model
        cells = [str(row.rank), row.formula, _fmt(row.dhf_pred_ev_per_atom) + (" *" if prefilter_only else "")]
        if has_std:
            cells.append(_fmt(row.dhf_std_ev_per_atom))
        cells.append(_fmt(row.e_above_hull_pred_ev_per_atom))
        if has_p:
            cells.append(_fmt(row.p_stable, 2))
        source = getattr(row, "known_source", None)
        computed = source if isinstance(source, str) and source != "oqmd" else None  # the user's own result
        cells.append(_fmt(row.known_dhf_ev_per_atom) + (f" ({computed})" if computed and row.is_known else ""))
        if row.is_known and row.e_above_hull_pred_ev_per_atom == 0:
            cells.append(f"on hull ({computed or 'DFT'})")
        elif row.e_above_hull_pred_ev_per_atom < 0:
            cells.append(f"below {row.decomposition}")
        else:
            cells.append(row.decomposition)
        table.add_row(*cells)
    if top > 0:
        out.print(table)
    n_known = int(result.table["is_known"].sum())
    new = ~result.table["is_known"]
    n_below = int((new & (result.table["e_above_hull_pred_ev_per_atom"] < 0)).sum())
    n_selected = int(result.table["selected"].sum()) if "selected" in result.table else 0
    if top > 0:
        out.print("E_hull: above the hull of the known (DFT) phases, a known composition at its DFT value, a new one at "
                  "its prediction (negative: predicted below it). P(stable): the calibrated probability that DFT puts a "
                  "new composition on the known hull (docs/claims.md); new candidates are ranked by it, known phases "
                  "follow. selected: the short list worth a DFT calculation (P(stable) >= --select-p-min, or the "
                  "--dft-budget best; column `selected`). refined: predicted by the screen's own model rather than "
                  "the fast prefilter (column `refined`; `model` names the model of each row).",
                  highlight=False, soft_wrap=True)
    claims = claims_summary(result)
    if claims:
        out.print(claims, highlight=False, soft_wrap=True)
    if result.prefilter and "refined" in result.table:
        import numpy as np

        unrefined = ~result.table["refined"].to_numpy(bool)
        chosen = result.table["selected"].to_numpy(bool) if "selected" in result.table else np.zeros(len(unrefined), bool)
        stray = int((unrefined & chosen).sum())  # only if the head passes ran out (fh_screen.screening.core)
        out.print(f"{result.prefilter} ranked every candidate; {result.model_name} predicted the known ones, the "
                  f"prefilter's best and the head of the P(stable) order with every selected row "
                  f"({int((~unrefined).sum()):,} rows in all). Rows marked * keep {result.prefilter}'s ΔH_f and have "
                  f"no σ" + (f" ({stray} of the {int(chosen.sum())} selected)" if stray else "") +
                  f"; P(stable) was fitted on this cascade (column `refined`); --refine-top N sets both heads, "
                  f"--refine-top 0: {result.model_name} predicts every candidate.",
                  highlight=False, soft_wrap=True)
    likely = int((new & (result.table["e_above_hull_pred_ev_per_atom"] < 0) & (result.table["p_stable"].fillna(0) >= 0.5)).sum()) if "p_stable" in result.table else 0
    out.print(
        f"{result.n_candidates:,} candidates ({n_known:,} known); {n_below:,} new ones predicted below the known hull, "
        f"{likely:,} of them with P(stable) >= 0.5 (a prediction below the hull is not a claim: P(stable) is); "
        f"{n_selected:,} selected; {result.n_known:,} known phases in the hull; {seconds:.2f} s; "
        f"run {result.run_id}" + ("" if saved else " (not saved: --no-store)"),
        highlight=False,
        soft_wrap=True,
    )
    if "known_source" in result.table and (result.table["known_source"] == "oqmd").any():
        out.print(SHIPPED_OQMD_CAVEAT, highlight=False, soft_wrap=True)


def claims_summary(result, top: int = 5) -> str:
    """"expect about 0.8 new stable compounds here; the top 5 hold 70 % of that; 2 selected (expected 0.6)"."""
    table = result.table
    if "p_stable" not in table or not table["p_stable"].notna().any():
        return ""
    new = table[~table["is_known"].to_numpy(bool)]
    p = new["p_stable"].fillna(0.0).to_numpy(float)
    expected = float(p.sum())
    if expected <= 0:
        return "expect no new stable compound here"
    share = float(p[:top].sum()) / expected
    chosen = new["selected"].to_numpy(bool) if "selected" in new else None
    text = (f"expect about {expected:.2g} new stable compound{'s' if expected >= 1.5 else ''} here (Σ P(stable) over "
            f"{len(new):,} new candidates); the top {min(top, len(new))} hold {100 * share:.0f} % of that")
    if chosen is not None:
        text += (f"; {int(chosen.sum()):,} selected for DFT (expected discoveries {float(p[chosen].sum()):.2g})")
    return text


def register(app: typer.Typer) -> None:
    """Add ``screen`` to the application."""
    app.command("screen")(one_line_errors(screen_command))
