"""Run the laptop recipe end to end: screen → trial structures → CHGNet relax, no DFT, no server.

    python examples/laptop_recipe.py Li-Fe-O

Everything lands in an embedded SQLite JobStore (``./fh_jobs.sqlite``; with JOB_STORE configured
in ``~/.jobflow.yaml`` — docs/jobs.md — drop ``store=``); the script reads the outputs back from
it: the ranked candidates, the structures tried and the CHGNet winners. The screen is also saved
to the fh-screen store (``fh-screen runs``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from jobflow import run_locally

from fh_screen.jobs import (
    HandoffMaker,
    PrescreenMaker,
    PrescreenToDFTMaker,
    StructureMaker,
    chgnet_prerelax_maker,
    local_job_store,
    read_output,
)


def main(chemsys: str = "Li-Fe-O", store_file: str = "fh_jobs.sqlite") -> None:
    torch.set_num_threads(1)
    flow = PrescreenToDFTMaker(
        prescreen_maker=PrescreenMaker(top_n=3, screen_options={"max_atoms": 8, "charge_neutral": True}),
        structure_maker=StructureMaker(n_structures=2, max_sites=12),
        handoff_maker=HandoffMaker(dft_maker=None, prerelax_maker=chgnet_prerelax_maker(steps=200)),
    ).make(chemsys)
    Path("fh_runs").mkdir(exist_ok=True)
    run_locally(flow, store=local_job_store(store_file), log=False, create_folders=True, root_dir="fh_runs")

    store = local_job_store(store_file)
    with store:
        prescreen = read_output(store, flow.jobs[0].uuid)
        structures = read_output(store, flow.jobs[1].uuid)
        handoff = read_output(store, flow.output.uuid)
    print(f"{prescreen.chemsys}: {prescreen.n_candidates} candidates ranked by {prescreen.model_name}@{prescreen.model_version}")
    for c in prescreen.selected:
        print(f"  #{c.rank:<3} {c.formula:<10} ΔH_f {c.dhf_pred_ev_per_atom:7.3f}  E_hull {c.e_above_hull_pred_ev_per_atom:6.3f} eV/atom")
    print(f"{len(structures.structures)} trial structures; CHGNet winners:")
    for e in handoff.entries:
        print(f"  {e.formula:<10} {e.energy_ev_per_atom:8.4f} eV/atom  ({e.source} {e.prototype or ''}, {e.n_trials} tried)")
    for p in handoff.problems:
        print(f"  note [{p.stage}] {p.formula or ''} {p.message}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
