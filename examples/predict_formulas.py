"""Predict formation enthalpies of a few formulas inside a jobflow flow and read them back.

    python examples/predict_formulas.py LiFePO4 Fe2O3 Li2O

The ``predict_job`` / ``rank_job`` / ``select_job`` building blocks are the prescreen's steps as
separate jobs: here the formulas are given instead of enumerated, ranked on the hull of their
chemical system, and the two most stable are selected.
"""

from __future__ import annotations

import sys

from jobflow import Flow, JobStore, run_locally
from maggma.stores import MemoryStore
from pymatgen.core import Composition

from fh_screen.jobs import read_output
from fh_screen.jobs.prescreen import predict_job, rank_job, select_job


def main(formulas: list[str]) -> None:
    formulas = formulas or ["LiFePO4", "Fe2O3", "Li2O", "Li3PO4", "FePO4"]
    elements = sorted({el.symbol for f in formulas for el in Composition(f).elements})
    predicted = predict_job(formulas)
    ranked = rank_job(predicted.output, "-".join(elements), top_n=None)
    best = select_job(ranked.output, top_n=2)
    store = JobStore(MemoryStore())
    run_locally(Flow([predicted, ranked, best]), store=store, log=False, ensure_success=True)
    doc = read_output(store, ranked.uuid)
    for c in doc.candidates:
        print(f"#{c.rank:<2} {c.formula:<10} ΔH_f {c.dhf_pred_ev_per_atom:7.3f}  E_hull {c.e_above_hull_pred_ev_per_atom:6.3f} eV/atom")
    print("selected:", ", ".join(read_output(store, best.uuid).selected_formulas))


if __name__ == "__main__":
    main(sys.argv[1:])
