"""Recipe: the closed loop on a laptop: screen → structures → CHGNet relax → results back → re-screen → fine-tune.

    python workflows/closed_loop_chgnet.py Li-O --top-n 2 --store ./fh_jobs.sqlite

One jobflow flow, run with ``run_locally`` (no DFT, no server):

1. the prescreen ranks the system and selects ``--top-n`` new candidates;
2. trial structures are built and relaxed with CHGNet (lowest energy per composition kept);
3. :class:`~fh_screen.jobs.results.ResultsBackMaker` turns the CHGNet energies into formation
   enthalpies (elemental references relaxed with the same CHGNet settings, cached) and writes
   them into fh-screen's store as reference entries of source ``chgnet``;
4. a second prescreen of the same system now lists those compositions as known, at their CHGNet
   value, with ``known_source == "chgnet"`` (the hull moves with them), and selects others;
5. :class:`~fh_screen.jobs.finetune.FinetuneMaker` fine-tunes the screening model on the
   ``chgnet`` entries of the system (replay of ``train.csv``, checked on ``val.csv``) and writes
   it as ``<model>-ft`` into the model folder (a rerun writes ``<model>-ft-2``, ``-3``, ... beside
   the earlier ones and says so: :func:`finetuned_model_name`); a val regression above 0.002
   eV/atom fails that job (nothing written) unless ``--force``. Without an OQMD data folder
   (``FH_SCREEN_OQMD_DIR``: a laptop with only the package) this step is skipped with a note;
   so it is when step 3 brought no new successful entry back (:func:`finetune_skip_note`: a
   rerun with nothing new would learn what the last model learned, under a new name).

The fh-screen store is the configured store (``~/.fh_screen.yaml``, ``FH_SCREEN_*``: the embedded
file, or MongoDB when ``FH_SCREEN_MONGO_URI`` is set; ``fh-screen runs``, ``fh-screen query
--source chgnet``) or ``--fh-store FILE``: the results, both screens and the fine-tuning read and
write the same one. CHGNet and
OQMD are different methods: putting both on one hull is a choice (docs/store.md, docs/finetune.md).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobflow import Flow, Response, job

if TYPE_CHECKING:
    from maggma.core import Store

    from fh_screen.jobs.finetune import FinetuneDocument
    from fh_screen.store.documents import ScreenDoc

logger = logging.getLogger(__name__)


@job
def after(value: Any, upstream: Any = None) -> Any:
    """Pass ``value`` on once ``upstream`` has run (orders the re-screen after the results came back)."""
    return value


def finetune_skip_note(results: dict[str, Any]) -> str | None:
    """Why the loop does not fine-tune after these results came back (None: it does).

    ``results`` is the ResultsBackMaker's output. The fine-tuning learns from the store's entries
    of the system; when no new or changed successful entry came back, those are the entries an
    earlier run learned from, and the new model would be that run's model again under a new name.
    """
    if results.get("formulas"):
        return None
    states = ", ".join(f"{n} {state}" for state, n in sorted((results.get("states") or {}).items())) or "nothing new"
    return (f"fine-tuning skipped: the results brought back no new successful entry ({states}), "
            "so the model has nothing new to learn")


@job
def when_new_entries(results: dict[str, Any], upstream: Any = None) -> Response:
    """Let the fine-tuning (its child) run only when ``results`` brought a new successful entry back.

    Output ``{"finetune": bool, "note": the skip line or None}`` (:func:`finetune_skip_note`); when
    there is nothing new the fine-tuning job is stopped (``stop_children``), not failed.
    """
    note = finetune_skip_note(results)
    if note is not None:
        logger.info(note)
    return Response(output={"finetune": note is None, "note": note}, stop_children=note is not None)


def finetune_data_note() -> str | None:
    """Why the loop cannot fine-tune here (None: it can): no OQMD data folder is configured.

    Fine-tuning replays ``train.csv`` and checks ``val.csv``; a laptop with only the package has
    neither, and the loop up to the re-screen needs neither, so ``main`` runs it without the last
    step and says so, instead of refusing the whole loop.
    """
    from fh_screen.data import DataError, shared_data_dir

    try:
        shared_data_dir()
    except DataError:
        return ("fine-tuning skipped: it replays train.csv and checks val.csv, and no OQMD data folder is configured "
                "(set FH_SCREEN_OQMD_DIR to the folder holding them; --no-finetune says you do not want it)")
    return None


def finetuned_model_name(model: str | None = None, model_name: str | None = None,
                         model_output: str | None = None) -> tuple[str, str | None]:
    """The name of the model the loop fine-tunes, and a note when a rerun had to pick a new one.

    Without ``model_name`` and ``model_output``: ``<model>-ft`` (``<model>`` the screening model's
    own name), or when its folder (:func:`~fh_screen.jobs.finetune.default_output_dir`) already
    holds a model from an earlier run (or anything else: it is not written over), the first free one of ``<model>-ft-2``, ``<model>-ft-3``,
    ...: a rerun writes a new model beside the last, never over it. A name or folder given that
    already holds a model raises :class:`~fh_screen.models.finetune.FinetuneError` (one line)
    before anything runs.
    """
    from fh_screen.jobs.finetune import default_output_dir, shipped_model_names
    from fh_screen.models.finetune import FinetuneError, check_model_name
    from fh_screen.models.predictor import load_predictor

    def taken(folder: Path) -> bool:  # a model, or anything else the fine-tuning may not write over
        folder = Path(folder).expanduser()
        return folder.exists() and (not folder.is_dir() or next(folder.iterdir(), None) is not None)

    if model_name is not None or model_output is not None:
        name = check_model_name(model_name or f"{load_predictor(model).checkpoint.name}-ft", shipped_model_names())
        folder = Path(model_output) if model_output is not None else default_output_dir(name)
        if (folder.expanduser() / "model.pt").exists():  # other refusals: FinetuneMaker.make, in the CLI's words
            raise FinetuneError(f"{folder} already holds a model: give the fine-tuned model another name (--name) "
                                "or leave --name out (a rerun then writes <model>-ft-2, -3, ...)")
        return name, None
    stem = f"{load_predictor(model).checkpoint.name}-ft"  # the cache the screens load the model from
    name, n = stem, 1
    while taken(default_output_dir(name)):
        n += 1
        name = f"{stem}-{n}"
    check_model_name(name, shipped_model_names())
    if n == 1:
        return name, None
    held = "already holds a model" if (default_output_dir(stem) / "model.pt").exists() else "already holds other files"
    return name, (f"{stem} {held} ({default_output_dir(stem)}): this run writes the fine-tuned "
                  f"model as {name} ({default_output_dir(name)})")


def build(
    chemsys: str,
    top_n: int = 2,
    max_atoms: int = 8,
    n_structures: int = 2,
    max_sites: int = 12,
    relax_steps: int = 200,
    model: str | None = None,
    fh_store: str | None = None,
    reference_store: Store | None = None,
    finetune: bool = True,
    finetune_options: dict | None = None,
    model_name: str | None = None,
    model_output: str | None = None,
    train_path: str | None = None,
    val_path: str | None = None,
    force: bool = False,
) -> Flow:
    """The closed-loop flow; its output is ``{"first", "rescreen", "results", "finetune"}``.

    Its jobs: the first screen's flow, the results back, the gate ordering the re-screen after
    them, the re-screen, then with ``finetune`` the fine-tuning and the job before it that lets it
    run only when a new successful entry came back (:func:`when_new_entries`).

    Parameters
    ----------
    chemsys
        The system, e.g. ``Li-O``.
    top_n
        Candidates relaxed (the CHGNet budget).
    max_atoms, n_structures, max_sites, relax_steps
        Size of the candidates, trial structures per composition, their largest cell and the
        CHGNet relax steps.
    model
        Screening model (name or path; None: the default model); the one fine-tuned.
    fh_store
        fh-screen store file the results go into and both screens read (None: the configured
        store, embedded or MongoDB). A file that does not exist yet is made a whole fh-screen store first,
        filled with the OQMD reference table shipped with the package, as the configured store is
        on first use (``fh-screen query --store FILE`` reads it).
    reference_store
        A maggma Store of reference entries both screens read instead (tests).
    finetune
        End with the fine-tuning job.
    finetune_options
        :class:`~fh_screen.models.finetune.FinetuneOptions` fields (default: 5,000 val rows).
    model_name, model_output
        Name and folder of the fine-tuned model (default ``<model>-ft`` in the model folder, or
        the next free ``<model>-ft-N`` when an earlier run wrote it: :func:`finetuned_model_name`;
        a name or folder given that holds a model already fails here, in one line).
    train_path, val_path
        Replay and check files (default: the shared OQMD ``train.csv`` and ``val.csv``).
    force
        Write the fine-tuned model even when val regressed.
    """
    from fh_screen.chem.candidates import parse_chemsys
    from fh_screen.jobs import HandoffMaker, PrescreenMaker, PrescreenToDFTMaker, StructureMaker, chgnet_prerelax_maker
    from fh_screen.jobs.finetune import FinetuneMaker
    from fh_screen.jobs.results import ResultsBackMaker
    from fh_screen.store import FhScreenStore, SQLiteStore
    from fh_screen.store.bootstrap import ensure_reference_data

    label = "-".join(parse_chemsys(chemsys))
    if reference_store is None and fh_store is not None:
        if not Path(fh_store).exists():  # first use, as the configured store: the shipped OQMD table
            ensure_reference_data(fh_store)
            FhScreenStore.embedded(fh_store).connect().close()  # every collection, so fh-screen --store reads it
        reference_store = SQLiteStore(fh_store, "reference", key="formula")
    # both screens are saved where their reference is read (the configured store without --fh-store)
    screens_store = None if fh_store is None else SQLiteStore(fh_store, "screens", key="run_id")
    relax = chgnet_prerelax_maker(steps=relax_steps)
    screen_options = {"max_atoms": max_atoms, "charge_neutral": True}

    def prescreen(name: str) -> PrescreenMaker:
        return PrescreenMaker(name=name, model=model, top_n=top_n, reference_store=reference_store,
                              screens_store=screens_store, screen_options=screen_options)

    first = PrescreenToDFTMaker(
        name="fh-screen closed loop (CHGNet)",
        prescreen_maker=prescreen("fh-screen prescreen"),
        structure_maker=StructureMaker(n_structures=n_structures, max_sites=max_sites),
        handoff_maker=HandoffMaker(dft_maker=None, prerelax_maker=relax),
    ).make(label)
    back = ResultsBackMaker(force_field_maker=relax, store_path=fh_store).make(first.output)
    gate = after(label, back.output)
    gate.name = "fh-screen results are back"
    rescreen = prescreen(f"fh-screen re-screen {label}").make(gate.output)
    jobs = [first, back, gate, rescreen]
    output = {"first": first.jobs[0].output, "rescreen": rescreen.output, "results": back.output}
    if finetune:
        model_name, note = finetuned_model_name(model, model_name, model_output)
        if note:
            logger.info(note)
        options = {"val_rows": 5000, **(finetune_options or {})}
        new = when_new_entries(back.output, rescreen.output)
        new.name = "fh-screen new entries back?"
        learn = FinetuneMaker(model=model, model_name=model_name, chemsys=label, store_path=fh_store,
                              output_dir=model_output,
                              train_path=train_path, val_path=val_path, options=options, force=force).make(new.output)
        jobs += [learn, new]  # the fine-tuning stays jobs[4]
        output["finetune"] = learn.output
    return Flow(jobs, output=output, name=f"fh-screen closed loop {label}")


def loop_lines(first: ScreenDoc, rescreen: ScreenDoc, results: dict[str, Any],
               finetuned: FinetuneDocument | None = None) -> list[str]:
    """The loop's story as text: what was picked, what came back, how the re-screen sees it, what the model learned.

    Parameters
    ----------
    first, rescreen
        The two screens' documents (:class:`~fh_screen.store.documents.ScreenDoc`).
    results
        The ResultsBackMaker's output (counts by state, formulas that came back).
    finetuned
        The FinetuneMaker's output (:class:`~fh_screen.jobs.finetune.FinetuneDocument`), if any.
    """
    again = {c.formula: c for c in rescreen.candidates}
    lines = [f"first screen picked: {', '.join(first.selected_formulas) or 'nothing'}",
             f"results back: {results.get('states', {})}"]
    for candidate in first.selected:
        row = again.get(candidate.formula)
        if row is None:
            lines.append(f"  {candidate.formula:<10} predicted {candidate.dhf_pred_ev_per_atom:8.4f}; not in the re-screen's table")
            continue
        source = getattr(row, "known_source", None)
        known = f"known {row.known_dhf_ev_per_atom:8.4f} ({source})" if row.is_known else "still new"
        lines.append(f"  {candidate.formula:<10} predicted {candidate.dhf_pred_ev_per_atom:8.4f} → {known}, "
                     f"E_hull {row.e_above_hull_pred_ev_per_atom:+.4f} eV/atom")
    lines.append(f"re-screen picks: {', '.join(rescreen.selected_formulas) or 'nothing'}")
    if finetuned is not None:
        lines.append(f"fine-tuned {finetuned.model_name}@{finetuned.model_version} on {finetuned.n_entries} entries: "
                     f"MAE there {finetuned.new_entries_mae_before:.4f} → {finetuned.new_entries_mae_after:.4f}, val "
                     f"{finetuned.val_mae_before:.4f} → {finetuned.val_mae_after:.4f} eV/atom ({finetuned.model_path})")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chemsys", nargs="?", help="chemical system, e.g. Li-P (or --system)")
    parser.add_argument("--system", dest="system", default=None, help="the chemical system, as the positional argument")
    parser.add_argument("--top-n", "--budget", dest="top_n", type=int, default=2, help="candidates relaxed with CHGNet")
    parser.add_argument("--max-atoms", type=int, default=8)
    parser.add_argument("--max-sites", type=int, default=12)
    parser.add_argument("--structures", type=int, default=2, help="trial structures per candidate")
    parser.add_argument("--steps", type=int, default=200, help="CHGNet relax steps")
    parser.add_argument("--model", default=None, help="screening model, the one fine-tuned (default: the default model)")
    parser.add_argument("--fh-store", default=None, help="fh-screen store file (default: the configured embedded store)")
    parser.add_argument("--store", default=None,
                        help="SQLite JobStore file (default: JOB_STORE of ~/.jobflow.yaml, else ~/.fh_screen/jobflow.sqlite)")
    parser.add_argument("--no-finetune", action="store_true", help="stop after the re-screen")
    parser.add_argument("--name", default=None, help="name of the fine-tuned model (default <model>-ft)")
    parser.add_argument("--val-rows", type=int, default=5000, help="val rows the fine-tuned model is checked on")
    parser.add_argument("--force", action="store_true", help="write the fine-tuned model even if val regressed")
    parser.add_argument("--workdir", default="fh_screen_runs", help="folder for the job directories (ASE writes files)")
    args = parser.parse_args(argv)
    chemsys = args.chemsys or args.system
    if not chemsys or (args.chemsys and args.system and args.chemsys != args.system):
        parser.error("give one chemical system, e.g. Li-P")
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from pathlib import Path

    import torch
    from jobflow import run_locally

    from fh_screen.errors import FhScreenError
    from fh_screen.jobs import job_store, read_output

    torch.set_num_threads(1)
    finetune = not args.no_finetune
    if finetune and (note := finetune_data_note()):
        print(note)
        finetune = False
    try:
        flow = build(chemsys, top_n=args.top_n, max_atoms=args.max_atoms, n_structures=args.structures,
                     max_sites=args.max_sites, relax_steps=args.steps, model=args.model, fh_store=args.fh_store,
                     finetune=finetune, finetune_options={"val_rows": args.val_rows}, model_name=args.name,
                     force=args.force)
    except FhScreenError as exc:  # a model name already taken, an unknown model, ...: one line, nothing ran
        parser.exit(2, f"error: {exc}\n")
    store = job_store(args.store)
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    responses = run_locally(flow, store=store, log=False, create_folders=True, root_dir=args.workdir)
    steps = [*flow.jobs[0].jobs, *flow.jobs[1:]]
    skip_note = None
    if len(flow.jobs) > 5 and flow.jobs[5].uuid in responses:  # the fine-tuning was stopped: nothing new came back
        with store:
            skip_note = (read_output(store, flow.jobs[5].uuid) or {}).get("note")
    failed = [job.name for job in steps if job.uuid not in responses and not (skip_note and job is flow.jobs[4])]
    with store:
        first = read_output(store, flow.jobs[0].jobs[0].uuid) if flow.jobs[0].jobs[0].uuid in responses else None
        if first is not None and not first.selected_formulas:
            print(f"the first screen of {chemsys} selected nothing new (every candidate of <= {args.max_atoms} atoms is "
                  "known, or none is charge balanced): try --max-atoms or another system")
        if failed[:1] == ["fh-screen finetune"] or not failed:
            rescreen = read_output(store, flow.jobs[3].uuid)
            results = read_output(store, flow.jobs[1].uuid)
            finetuned = read_output(store, flow.jobs[4].uuid) if len(flow.jobs) > 4 and not failed and not skip_note else None
            for line in loop_lines(first, rescreen, results, finetuned):
                print(line)
    if skip_note:
        print(skip_note)
    if failed:
        print(f"the loop stopped at: {', '.join(failed)} (the error is logged above)")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
