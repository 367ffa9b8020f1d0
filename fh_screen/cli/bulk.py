"""``fh-screen bulk``: screen many chemical systems (every combination of elements, or a file), resumable."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from fh_screen.cli.common import (
    OutputBatch,
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

__all__ = ["register"]

_STORE_HELP = "Embedded store file to use instead of the configured one (settings: ~/.fh_screen.yaml, FH_SCREEN_*)."


def bulk_command(
    elements: Optional[str] = typer.Option(None, "--elements", "-e", help="Elements to combine, e.g. Li,Fe,Mn,P,O "
                                           "('all': the 86 elements of OQMD the model knows)."),
    nelements: str = typer.Option("2,3", "--nelements", "-n", help="System sizes to sweep, e.g. 3 or 2,3 or 2-4."),
    systems_file: Optional[Path] = typer.Option(None, "--systems-file", help="Systems to sweep, one per line (Li-Fe-O); "
                                                "instead of --elements."),
    processes: int = typer.Option(1, "--processes", "-p", help="Worker processes (each loads the model once)."),
    keep_top: int = typer.Option(100, "--keep-top", min=0, help="Ranked candidates kept in each system's screen "
                                 "document (0: all)."),
    predictions: bool = typer.Option(True, "--predictions/--no-predictions", help="Also store each screen's "
                                     "predictions (as fh-screen SYSTEM does); --no-predictions: the screen documents only "
                                     "(a smaller store and faster saves, docs/bulk.md)."),
    redo: bool = typer.Option(False, "--redo", help="Screen again the systems already stored with this model and options."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the summary as JSON here ('-': print it; "
                                             "keys systems_done, systems_skipped, systems_failed, candidates, seconds)."),
    store_file: Optional[Path] = typer.Option(None, "--store", help=_STORE_HELP),
    sources: Optional[str] = typer.Option(None, "--sources", "--source", help="Reference sources on each hull, e.g. oqmd,chgnet "
                                          "(default: every source in the store); part of what makes a stored screen count."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Shipped model name (or name@version), or path to a .pt checkpoint or a model folder holding model.pt."),
    max_atoms: int = typer.Option(20, "--max-atoms", help="Largest formula unit (atoms) to enumerate."),
    max_per_element: Optional[int] = typer.Option(None, "--max-per-element", help="Most atoms of one element (default max-atoms - 1)."),
    charge_neutral: bool = typer.Option(False, "--charge-neutral", help="Keep only charge-balanced new compositions."),
    exclude_known: bool = typer.Option(False, "--exclude-known", help="Leave known compositions out of the lists."),
    max_candidates: int = typer.Option(250_000, "--max-candidates", help="Refuse (report and skip) larger systems."),
    tolerance: float = typer.Option(0.05, "--tolerance", help="No effect on the shipped P(stable) (P(on or below the known hull), docs/claims.md): the "
                   "E_hull window (eV/atom) of the σ-only P(E_hull < window) a screen falls back to without a classifier."),
    dft_budget: Optional[int] = typer.Option(None, "--dft-budget", help="Select the N best new candidates of each system."),
    select_p_min: float = typer.Option(DEFAULT_SELECT_P_MIN, "--select-p-min",
                                       help="Without --dft-budget: select new candidates with P(stable) at least this."),
    refine_top: int = typer.Option(DEFAULT_REFINE_TOP, "--refine-top", min=0,
                                   help="With the attention model: predict only the best N of the fast prefilter with it "
                                        "(0: every candidate)."),
) -> None:
    """Screen every system of an element list (or a file) into the store; a rerun skips what is stored."""
    from fh_screen.errors import check_processes
    from fh_screen.sweep import SweepOptions, check_screen_options, read_systems_file, run_sweep, systems_from_elements

    started = time.perf_counter()
    check_processes(processes)  # 1 to 256 (SweepOptions' bounds), in the words predict-store uses
    if (elements is None) == (systems_file is None):
        fail("give either --elements Li,Fe,P,O (with --nelements) or --systems-file FILE")
    check_outputs(json_path, provenance_of=(json_path,),
                  inputs={"the store file": store_file_in_use(store_file), "the systems file": systems_file})
    systems = systems_from_elements(elements, nelements) if elements is not None else read_systems_file(systems_file)
    options = screen_options_from_flags(
        max_atoms=max_atoms, max_per_element=max_per_element, charge_neutral=charge_neutral,
        include_known=not exclude_known, max_candidates=max_candidates, e_hull_tolerance_ev_per_atom=tolerance,
        refine_top=refine_top or None, dft_budget=dft_budget, select_p_min=select_p_min,
    )
    check_screen_options(options)  # the screen's limits (max_atoms from 2, ...), before the model is loaded
    if sources is not None:
        from fh_screen.store.query import parse_sources

        sources = ",".join(parse_sources(sources))  # a bad list fails here, in one line
    sweep = SweepOptions(model=model, store_file=store_file, processes=processes, keep_top=keep_top or None, redo=redo,
                         save_predictions=predictions, sources=sources)
    errors = error_console()
    bar = _Bar(errors)
    try:
        with bar:
            report = run_sweep(systems, options, sweep, on_plan=bar.plan, on_outcome=bar.advance)
    except KeyboardInterrupt as exc:
        # the store's count: workers save systems before the sweep hears of them (SweepInterrupted.saved)
        saved = getattr(exc, "saved", None)
        errors.print(f"interrupted after {bar.done if saved is None else saved:,} saved systems; rerun the same "
                     "command to resume (saved systems are skipped)", highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    report.seconds = time.perf_counter() - started
    for note in report.notes[bar.notes_shown:]:  # the plan's notes were shown before the sweep
        errors.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
    out = status_console(json_path)
    per_system = f" ({1000 * report.seconds / report.systems_done:.0f} ms per screened system)" if report.systems_done else ""
    out.print(f"{report.systems_done:,} systems screened, {report.systems_skipped:,} skipped (already stored), "
              f"{report.systems_failed:,} failed; {report.candidates:,} candidates, {report.likely:,} new ones with "
              f"P(stable) >= 0.5; model {report.model}; {report.seconds:.1f} s{per_system} with {processes} "
              f"process{'es' if processes > 1 else ''}. Best over every stored screen: fh-screen query --top 100 --min-p 0.5",
              highlight=False, soft_wrap=True)
    if json_path is not None:
        from fh_screen.exports import provenance_path, sweep_provenance

        with OutputBatch() as outputs:  # the summary and its provenance, both or neither
            outputs.json(report.to_json(), json_path)
            if not is_stdout(json_path):
                weights = bar.sweep_plan.weights_sha256 if bar.sweep_plan is not None else None
                outputs.json(sweep_provenance(report, options, sweep, weights), provenance_path(json_path))
        if not is_stdout(json_path):
            out.print(f"wrote the summary to {json_path} (its provenance beside it: *.provenance.json)",
                      highlight=False, soft_wrap=True)
    if report.failures:
        first = report.failures[0]
        fail(f"{report.systems_failed:,} system(s) could not be screened (first: {first['system']}: {first['error']})")


class _Bar:
    """A rich progress bar with ETA on a terminal; a line every ~10 % (and every failure) otherwise."""

    def __init__(self, errors):
        self.errors = errors
        self.done = 0
        self.finished = 0
        self.total = 0
        self._progress = None
        self._task = None
        self._next_line = 0
        self.notes_shown = 0
        self.sweep_plan = None  # the plan, once made: the model's weights for the summary's provenance

    def __enter__(self):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("ETA"), TimeRemainingColumn(), console=self.errors, transient=True,
            disable=not self.errors.is_terminal,
        )
        self._progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self._progress.__exit__(*exc)

    def plan(self, plan) -> None:
        self.sweep_plan = plan
        self.total = len(plan.pending)
        for note in plan.notes:
            self.errors.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
        self.notes_shown = len(plan.notes)
        if plan.skipped:
            self.errors.print(f"fh-screen: {len(plan.skipped):,} of {len(plan.skipped) + self.total:,} systems already "
                              f"stored with {plan.model} and these options: skipped (--redo screens them again)",
                              highlight=False, soft_wrap=True)
        self.errors.print(f"fh-screen: screening {self.total:,} systems with {plan.model}", highlight=False, soft_wrap=True)
        self._task = self._progress.add_task("screening", total=self.total)

    def advance(self, outcome) -> None:
        self.finished += 1
        if outcome.status == "done":
            self.done += 1
        else:
            self._progress.console.print(f"[yellow]skipped[/] {outcome.system}: {escape(outcome.error)}",
                                         highlight=False, soft_wrap=True, markup=True)
        self._progress.update(self._task, advance=1, description=outcome.system)
        if not self.errors.is_terminal and self.finished >= self._next_line:
            self.errors.print(f"fh-screen: {self.finished:,}/{self.total:,} systems", highlight=False, soft_wrap=True)
            self._next_line = self.finished + max(1, self.total // 10)


def register(app: typer.Typer) -> None:
    """Add ``bulk`` to the application."""
    app.command("bulk")(one_line_errors(bulk_command))
