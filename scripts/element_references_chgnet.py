"""Relax every force-field reference prototype of some elements with CHGNet, and print their energies.

Each element's candidates are :func:`fh_screen.store.results_builder.element_prototypes`: bcc,
fcc, hcp (diamond for covalent elements) and, where listed, the experimental ground-state type
(:data:`~fh_screen.store.results_builder.GROUND_STATE_TYPES`). The reference is the lowest; the
table shows how far the ground-state type lies below the best metal lattice (the gain in
docs/jobs.md). CHGNet relax with ``fmax`` 0.05 eV/Å, about a minute per element on 2 cores:

    python scripts/element_references_chgnet.py P As Sb Bi Se Te S C Br I
"""

from __future__ import annotations

import argparse
import warnings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("elements", nargs="+", help="element symbols")
    parser.add_argument("--steps", type=int, default=200, help="relax steps per prototype")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")  # a script: CHGNet's and pymatgen's chatter off
    from chgnet.model import StructOptimizer

    from fh_screen.store.results_builder import GROUND_STATE_TYPES, element_prototypes

    optimizer = StructOptimizer()
    print("element | best metal/diamond lattice (eV/atom) | ground-state type (eV/atom) | gain (eV/atom)")
    for element in args.elements:
        prototypes = element_prototypes(element)
        energies = []
        for structure in prototypes:
            relaxed = optimizer.relax(structure, steps=args.steps, fmax=0.05, verbose=False)
            energies.append(float(relaxed["trajectory"].energies[-1]) / len(structure))
        if element in GROUND_STATE_TYPES:
            old, new = min(energies[:-1]), energies[-1]
            print(f"{element} | {old:.4f} | {new:.4f} | {old - new:+.3f}")
        else:
            print(f"{element} | {min(energies):.4f} | — | —")


if __name__ == "__main__":
    main()
