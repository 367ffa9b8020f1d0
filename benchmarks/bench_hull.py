"""Hull cost by dimension: the bound behind ``fh_screen.chem.hull.hull_energies`` and ``check_size``.

Standalone: ``python benchmarks/bench_hull.py [--repeats 3] [--json out.json]``. Prints medians of

1. qhull (``build_hull``) on the known OQMD phases of real systems with 2–8 elements, and the
   old way (known + every enumerated candidate) for the same systems where it finishes;
2. one hull linear programme (HiGHS) per query, by number of elements and points;
3. ``hull_energies`` on every candidate of large systems (the screen's hull stage), and whole
   ``screen()`` calls of the largest systems ``check_size`` accepts, with the fast ``paper``
   network so that enumeration, hull and naming dominate (a slower model adds its own
   prediction time: candidates / its rate), e.g.
   ``H-Li-Be-B-C-N-O-F-Na-Mg`` at ``max_atoms=6`` and 8.

Reads ``train.csv`` from ``--train`` or the shared OQMD folder (``$FH_SCREEN_OQMD_DIR``).
"""

from __future__ import annotations

import argparse
import json
import re
import time

import numpy as np

from timing import median_seconds  # noqa: E402 - benchmarks/ is on sys.path




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    parser.add_argument("--sections", default="qhull,lp,screens", help="comma-separated subset of qhull, lp, screens")
    parser.add_argument("--train", default=None, help="OQMD train.csv (default: $FH_SCREEN_OQMD_DIR/train.csv or "
                                                      "../shared/data/oqmd/train.csv)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    import pandas as pd

    from fh_screen.chem.candidates import count_candidates, enumerate_counts, parse_chemsys
    from fh_screen.chem.hull import QHULL_MAX_ELEMENTS, _hull_energy_lp, build_hull, hull_energies
    from fh_screen.models.predictor import Predictor
    from fh_screen.screening import ScreenOptions, known_counts, screen

    import os
    from pathlib import Path

    train_path = args.train or Path(os.environ.get("FH_SCREEN_OQMD_DIR", "../shared/data/oqmd")) / "train.csv"
    train = pd.read_csv(train_path, keep_default_na=False, na_values=[""])
    train = train.rename(columns={"target": "dhf_ev_per_atom"})
    predictor = Predictor.from_name("paper")
    results: dict = {"qhull_max_elements": QHULL_MAX_ELEMENTS, "rows": []}

    def known_of(system):
        rows, dhf = known_counts(train, system)
        return rows / rows.sum(axis=1, keepdims=True), dhf

    sections = set(args.sections.split(","))
    systems = ["Li-O", "Li-Fe-O", "Li-Fe-P-O", "Li-Fe-Mn-P-O", "Li-Na-Fe-Mn-P-O", "Li-Na-K-Fe-Mn-P-O", "Li-Na-K-Fe-Mn-Co-P-O"]
    if "qhull" not in sections:
        systems = []
    else:
        print(f"{'system':34s} {'k':>2s} {'known':>6s} {'cands':>7s} {'qhull known':>12s} {'qhull all':>10s} {'hull_energies':>14s}")
    for text in systems:
        system = parse_chemsys(text)
        k = len(system)
        max_atoms = {2: 20, 3: 20, 4: 20, 5: 12, 6: 8, 7: 7, 8: 6}[k]
        fractions, dhf = known_of(system)
        counts = enumerate_counts(k, max_atoms)
        query = counts / counts.sum(axis=1, keepdims=True)
        energies = predictor.predict_counts(counts, system).dhf_ev_per_atom.astype(float)
        t_known = median_seconds(lambda: build_hull(system, fractions, dhf), args.repeats)
        t_all = float("nan")
        if k <= 5:  # the old way: qhull over known + every candidate
            t_all = median_seconds(lambda: build_hull(system, np.concatenate([fractions, query]), np.concatenate([dhf, energies])), 1)
        t_energies = median_seconds(lambda: hull_energies(system, fractions, dhf, query), args.repeats)
        row = {"system": text, "elements": k, "known": len(dhf), "max_atoms": max_atoms, "candidates": len(query),
               "qhull_known_s": t_known, "qhull_known_plus_candidates_s": t_all, "hull_energies_s": t_energies}
        results["rows"].append(row)
        print(f"{text:34s} {k:2d} {len(dhf):6d} {len(query):7d} {t_known:12.4f} {t_all:10.3f} {t_energies:14.3f}")

    results["lp"] = []
    lp_systems = ["Li-Fe-P-O", "Li-Na-Fe-Mn-P-O", "Li-Na-K-Fe-Mn-Co-P-O", "H-Li-Be-B-C-N-O-F-Na-Mg"] if "lp" in sections else []
    if lp_systems:
        print("\none hull linear programme (HiGHS) per query")
    for text in lp_systems:
        system = parse_chemsys(text)
        fractions, dhf = known_of(system)
        k = len(system)
        points = np.concatenate([np.eye(k), fractions])
        point_energies = np.concatenate([np.zeros(k), dhf])
        use = point_energies < 0
        use[:k] = True
        x = np.full(k, 1.0 / k)
        seconds = median_seconds(lambda: _hull_energy_lp(points[use], point_energies[use], x), max(5, args.repeats))
        results["lp"].append({"system": text, "elements": k, "points": int(use.sum()), "seconds_per_query": seconds})
        print(f"{text:34s} {k:2d} elements {int(use.sum()):6d} points: {1000 * seconds:.2f} ms per query")

    results["screens"] = []
    screens = [("Li-Fe-P-O", 20), ("Li-Na-Fe-Mn-P-O", 20), ("Li-Na-K-Fe-Mn-P-O", 14),
               ("H-Li-Be-B-C-N-O-F-Na-Mg", 6), ("H-Li-Be-B-C-N-O-F-Na-Mg", 8)] if "screens" in sections else []
    if screens:
        print("\nwhole screens, paper model; the largest systems check_size accepts; known = the system's train rows")
    from fh_screen.screening import check_size, hull_programmes

    elements_of = train["formula"].map(lambda f: frozenset(re.findall(r"[A-Z][a-z]?", f)))
    for text, max_atoms in screens:
        system = parse_chemsys(text)
        options = ScreenOptions(max_atoms=max_atoms)
        n = check_size(system, options)  # raises if refused
        known = train[[e <= frozenset(system) for e in elements_of]]
        seconds = median_seconds(lambda: screen(system, predictor=predictor, known=known, options=options), 1)
        programmes = hull_programmes(len(system), max_atoms)
        results["screens"].append({"system": text, "max_atoms": max_atoms, "candidates": n, "hull_programmes": programmes,
                                   "known_rows": len(known), "seconds": seconds})
        print(f"{text:34s} max_atoms={max_atoms:2d} {n:8,d} candidates, {programmes:5,d} programmes: {seconds:.2f} s")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main()
