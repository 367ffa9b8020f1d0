"""Run the laptop recipe end to end: screen → trial structures → CHGNet relax, no DFT, no server.

The flow is the one of ``workflows/laptop_chgnet.py`` with its defaults.

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

from fh_screen.jobs import local_job_store, read_output

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, for workflows/
from workflows.laptop_chgnet import build, handoff_lines  # noqa: E402


def main(chemsys: str = "Li-Fe-O", store_file: str = "fh_jobs.sqlite") -> None:
    torch.set_num_threads(1)
    # the recipe's defaults: top 3 of a charge-neutral screen up to 8 atoms, 2 structures each, 200 CHGNet steps
    flow = build(chemsys)
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
    for line in handoff_lines(handoff):
        print(f"  {line}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
