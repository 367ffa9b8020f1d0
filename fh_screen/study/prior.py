"""Builder of the shipped stability prior (``fh_screen/reference_data/stability_prior.json``).

The prior counts, in the OQMD training file only, how often a composition of each shape is a
stable compound (:func:`build_prior`); :func:`fh_screen.screening.probability.log_prior` reads
it. Rebuild it with ``python -m fh_screen.study.prior ../shared/data/oqmd/train.csv``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fh_screen.screening.probability import PRIOR_PATH, pattern_rows

logger = logging.getLogger(__name__)

__all__ = ["PRIOR_MAX_ATOMS", "PRIOR_MAX_ELEMENTS", "build_prior"]

#: Largest number of elements and of atoms the prior tells apart (larger ones use the last cell).
PRIOR_MAX_ELEMENTS = 5


PRIOR_MAX_ATOMS = 20


def _key(row: Sequence[int], neutral: int) -> str:
    return ",".join(str(c) for c in row if c > 0) + f"|{int(neutral)}"


def build_prior(train_path: str | Path, *, n_systems: int = 8000, seed: int = 0, max_atoms: int = PRIOR_MAX_ATOMS) -> dict:
    """Prior table from the OQMD training file: stable compounds / enumerated candidates per shape.

    ``n_systems`` element sets of training compounds (2..:data:`PRIOR_MAX_ELEMENTS` elements)
    are drawn with ``seed``; in each, the compounds made of exactly those elements that lie on
    the hull of the training entries (E_hull <= 1 meV/atom), and the enumerated candidates made
    of exactly those elements, are counted by (elements, atoms, charge balance). Cells get one
    pseudo-count (half a stable compound per 100 candidates of the cell's row) so that empty
    cells are finite.
    """
    from fh_screen.chem.oxidation import charge_neutral_mask
    from fh_screen.chem.candidates import enumerate_counts
    from fh_screen.chem.formula import DEFAULT_ELEMENTS
    from fh_screen.chem.hull import STABLE_TOLERANCE_EV_PER_ATOM, e_above_hull
    from fh_screen.data import in_range, subsystem_rows, load_set

    train = load_set(train_path)
    ok = in_range(train.dhf_ev_per_atom)
    index = train.index()
    systems = sorted(s for s in index if 2 <= len(s) <= PRIOR_MAX_ELEMENTS)
    rng = np.random.default_rng(seed)
    if len(systems) > n_systems:
        systems = [systems[i] for i in np.sort(rng.choice(len(systems), n_systems, replace=False))]
    stable = np.zeros((PRIOR_MAX_ELEMENTS + 1, max_atoms + 1, 2))
    candidates = np.zeros_like(stable)
    full = {j: enumerate_counts(j, max_atoms) for j in range(2, PRIOR_MAX_ELEMENTS + 1)}
    full = {j: c[(c > 0).all(axis=1)] for j, c in full.items()}
    patterns: dict[str, list[int]] = {}

    def pattern_keys(counts: np.ndarray, neutral: np.ndarray, chemsys: tuple[str, ...]) -> list[str]:
        return [_key(row, n) for row, n in zip(pattern_rows(counts, chemsys).tolist(), neutral.tolist())]
    for system in systems:
        j = len(system)
        chemsys = tuple(DEFAULT_ELEMENTS[i] for i in system)
        counts = full[j]
        neutral = charge_neutral_mask(counts, chemsys).astype(np.int64)
        np.add.at(candidates[j], (counts.sum(axis=1), neutral), 1)
        keys, key_counts = np.unique(pattern_keys(counts, neutral, chemsys), return_counts=True)
        for key, n in zip(keys.tolist(), key_counts.tolist()):
            patterns.setdefault(key, [0, 0])[1] += n
        own = index[system]
        own = own[ok[own] & (train.n_atoms[own] <= max_atoms)]
        if len(own) == 0:
            continue
        rows = subsystem_rows(index, system)
        rows = rows[ok[rows]]
        e = e_above_hull(system, train.fractions[rows], train.dhf_ev_per_atom[rows], train.fractions[own], train.dhf_ev_per_atom[own])
        on_hull = own[e <= STABLE_TOLERANCE_EV_PER_ATOM]
        if len(on_hull) == 0:
            continue
        hull_counts = np.rint(train.fractions[on_hull][:, list(system)] * train.n_atoms[on_hull, None]).astype(np.int64)
        hull_neutral = charge_neutral_mask(hull_counts, chemsys).astype(np.int64)
        np.add.at(stable[j], (hull_counts.sum(axis=1), hull_neutral), 1)
        for key in pattern_keys(hull_counts, hull_neutral, chemsys):
            patterns.setdefault(key, [0, 0])[0] += 1
    rate = (stable + 0.5) / (candidates + 100.0)
    log_rate = np.log(rate)
    # rows with no data (0/1 elements, 0/1 atoms) never occur in a screen; keep them finite
    log_rate[:2] = log_rate[2]
    return {
        "description": "log(stable compounds / enumerated candidates) per (elements, atoms per formula unit, charge balanced); "
                       "OQMD training file only",
        "train_path": str(train_path),
        "n_systems": len(systems),
        "seed": seed,
        "stable_counts": stable.tolist(),
        "candidate_counts": candidates.tolist(),
        "log_prior": log_rate.tolist(),
        "patterns": dict(sorted(patterns.items())),
    }


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m fh_screen.screening.probability TRAIN_CSV [-o PATH]``: rebuild the shipped prior."""
    import argparse

    from fh_screen.io import write_json

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("train", type=Path)
    parser.add_argument("-o", "--output", type=Path, default=PRIOR_PATH)
    parser.add_argument("--systems", type=int, default=8000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    write_json(build_prior(args.train, n_systems=args.systems), args.output)
    logger.info("wrote %s", args.output)


if __name__ == "__main__":
    main()
