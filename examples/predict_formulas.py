"""Predict formation enthalpies of a few formulas inside a jobflow flow and read them back.

    python examples/predict_formulas.py LiFePO4 Fe2O3 Li2O

The prescreen job screens the chemical system of the formulas (every composition of it, with the
known OQMD phases of the configured store on the hull), so the given formulas come back ranked
against all their competitors; the two most stable new compositions are selected. Uses an
in-memory JobStore (with the ``data`` store fh-screen jobs route the ranked list to); the screen is
also saved to the fh-screen store: ``fh-screen runs``.
"""

from __future__ import annotations

import sys

from jobflow import JobStore, run_locally
from maggma.stores import MemoryStore
from pymatgen.core import Composition

from fh_screen.chem.formula import reduced_formula
from fh_screen.jobs import PrescreenMaker, read_output
from fh_screen.store import elements_of


def main(formulas: list[str]):
    """Run the flow; returns the ranked candidates of the given formulas and the selected formulas."""
    formulas = [reduced_formula(f) for f in (formulas or ["LiFePO4", "Fe2O3", "Li2O", "Li3PO4", "FePO4"])]
    system = "-".join(sorted({el for f in formulas for el in elements_of(f)}))
    largest = max(int(Composition(f).num_atoms) for f in formulas)
    maker = PrescreenMaker(top_n=2, keep_top=None, select_known=True,
                           screen_options={"max_atoms": max(largest, 2), "charge_neutral": False})
    prescreen = maker.make(system)
    store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
    run_locally(prescreen, store=store, log=False, ensure_success=True)
    doc = read_output(store, prescreen.uuid)
    ranked = [c for c in doc.candidates if c.formula in formulas]
    for c in ranked:
        print(f"#{c.rank:<5} {c.formula:<10} ΔH_f {c.dhf_pred_ev_per_atom:7.3f}  "
              f"E_hull {c.e_above_hull_pred_ev_per_atom:6.3f} eV/atom  of {doc.n_candidates} in {doc.chemsys}")
    print("selected:", ", ".join(doc.selected_formulas), f"(run {doc.run_id})")
    return ranked, doc.selected_formulas


if __name__ == "__main__":
    main(sys.argv[1:])
