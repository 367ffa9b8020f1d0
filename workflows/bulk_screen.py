"""Recipe: prescreen many chemical systems in one flow (one prescreen job per system).

    python workflows/bulk_screen.py Li-Fe-O Na-Mn-O Li-Co-O --top-n 5          # run here
    python workflows/bulk_screen.py $(cat systems.txt) --backend fireworks      # at scale

Every job returns a ScreenDoc (in the JobStore) and saves it to the fh-screen store's ``screens``
collection (``fh-screen runs`` lists them); query the JobStore with
``store.query({"name": {"$regex": "^fh-screen prescreen"}})``. ``--structures`` adds the
structure stage, ``--dft`` the full handoff to atomate2 VASP.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from jobflow import Flow


def build(systems: Sequence[str], top_n: int = 5, max_atoms: int = 12, structures: bool = False, dft: bool = False,
          model: str | None = None, use_reference: bool = True, reference_store=None) -> Flow:
    """One flow holding a prescreen (and optionally structures / DFT handoff) per system."""
    from fh_screen.jobs import PrescreenMaker, PrescreenToDFTMaker, StructureMaker

    prescreen = PrescreenMaker(model=model, top_n=top_n, use_reference=use_reference, reference_store=reference_store,
                               screen_options={"max_atoms": max_atoms, "charge_neutral": True})
    parts = []
    for system in systems:
        if dft:
            parts.append(PrescreenToDFTMaker(prescreen_maker=prescreen).make(system))
        elif structures:
            job = prescreen.make(system)
            parts.append(Flow([job, StructureMaker().make(job.output.selected_formulas)], name=f"screen {system}"))
        else:
            parts.append(prescreen.make(system))
    return Flow(parts, name=f"fh-screen bulk ({len(parts)} systems)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("systems", nargs="+")
    parser.add_argument("--top-n", type=int, default=5)
    parser.add_argument("--max-atoms", type=int, default=12)
    parser.add_argument("--structures", action="store_true")
    parser.add_argument("--dft", action="store_true")
    parser.add_argument("--backend", choices=["local", "fireworks", "jobflow-remote"], default="local")
    parser.add_argument("--store", default=None,
                        help="SQLite JobStore file for --backend local (default: JOB_STORE of ~/.jobflow.yaml)")
    parser.add_argument("--launchpad", default=None)
    parser.add_argument("--worker", default=None)
    args = parser.parse_args(argv)

    from fh_screen.jobs.submit import run_flow

    flow = build(args.systems, top_n=args.top_n, max_atoms=args.max_atoms, structures=args.structures, dft=args.dft)
    result = run_flow(flow, args.backend, store_path=args.store, launchpad_file=args.launchpad, worker=args.worker)
    if args.backend == "local":
        from fh_screen.jobs import job_store, read_output

        with job_store(args.store) as store:
            for job in flow.jobs:
                first = job if not isinstance(job, Flow) else job.jobs[0]
                out = read_output(store, first.uuid)
                print(f"{out.chemsys:<16} {out.n_candidates:>7} candidates  selected: {', '.join(out.selected_formulas)}"
                      f"  (fh-screen query --run {out.run_id})")
    else:
        print(result)


if __name__ == "__main__":
    main()
