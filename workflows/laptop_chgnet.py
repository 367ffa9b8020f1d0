"""Recipe: screen a system → trial structures → CHGNet relax, all on a laptop (no DFT, no server).

    python workflows/laptop_chgnet.py Li-Fe-O --top-n 3 --store ./fh_jobs.sqlite

The flow runs with jobflow's ``run_locally`` on the JobStore configured in ``~/.jobflow.yaml``
(``--store FILE`` for fh-screen's embedded SQLite JobStore instead; see docs/jobs.md); every output
(prescreen ranking, structures, CHGNet task documents, the final choice) is kept there and can be
read back with ``fh_screen.jobs.read_output(store, uuid)`` or queried by job name. The prescreen
is also saved to the fh-screen store: ``fh-screen runs``.
"""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

from jobflow import Flow

if TYPE_CHECKING:
    from fh_screen.jobs import HandoffDocument


def build(
    chemsys: str,
    top_n: int = 3,
    max_atoms: int = 8,
    n_structures: int = 2,
    max_sites: int = 12,
    relax_steps: int = 200,
    model: str | None = None,
    use_reference: bool = True,
    reference_store=None,
) -> Flow:
    """The laptop flow: prescreen → structures → CHGNet pre-relax (lowest energy per composition kept)."""
    from fh_screen.jobs import HandoffMaker, PrescreenMaker, PrescreenToDFTMaker, StructureMaker, chgnet_prerelax_maker

    maker = PrescreenToDFTMaker(
        name="fh-screen laptop (CHGNet)",
        prescreen_maker=PrescreenMaker(
            model=model, top_n=top_n, use_reference=use_reference, reference_store=reference_store,
            screen_options={"max_atoms": max_atoms, "charge_neutral": True},
        ),
        structure_maker=StructureMaker(n_structures=n_structures, max_sites=max_sites),
        handoff_maker=HandoffMaker(dft_maker=None, prerelax_maker=chgnet_prerelax_maker(steps=relax_steps)),
    )
    return maker.make(chemsys)


def handoff_lines(doc: HandoffDocument) -> list[str]:
    """The flow's result as text: one line per CHGNet winner, then one per problem noted on the way.

    Parameters
    ----------
    doc
        The flow's output, read back from the JobStore.
    """
    lines = [
        f"{e.formula:<10} {e.energy_ev_per_atom:8.4f} eV/atom  ({e.source} {e.prototype or ''}, {e.n_trials} tried)"
        for e in doc.entries
    ]
    return lines + [f"note [{p.stage}] {p.formula or ''}: {p.message}" for p in doc.problems]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chemsys", help="chemical system, e.g. Li-Fe-O")
    parser.add_argument("--top-n", type=int, default=3)
    parser.add_argument("--max-atoms", type=int, default=8)
    parser.add_argument("--max-sites", type=int, default=12)
    parser.add_argument("--steps", type=int, default=200, help="CHGNet relax steps")
    parser.add_argument("--store", default=None,
                        help="SQLite JobStore file (default: JOB_STORE of ~/.jobflow.yaml, else ~/.fh_screen/jobflow.sqlite)")
    parser.add_argument("--workdir", default="fh_screen_runs", help="folder for the job directories (ASE writes files)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import torch

    from jobflow import run_locally

    from fh_screen.jobs import job_store

    torch.set_num_threads(1)
    flow = build(args.chemsys, top_n=args.top_n, max_atoms=args.max_atoms, max_sites=args.max_sites,
                 relax_steps=args.steps)
    from pathlib import Path

    from fh_screen.jobs import read_output

    store = job_store(args.store)
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    run_locally(flow, store=store, log=False, create_folders=True, root_dir=args.workdir)
    with store:
        doc = read_output(store, flow.output.uuid)
    print("CHGNet winners:")
    for line in handoff_lines(doc):
        print(f"  {line}")


if __name__ == "__main__":
    main()
