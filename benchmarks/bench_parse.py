"""Formula-string featurisation speed: the fast path against the pymatgen reference and the network.

Figures are formulas per second on every OQMD formula in ``train.csv`` + ``val.csv`` (290,445
strings; generated formulas when the shared data is absent), median of ``repeats`` runs, torch
limited to ``threads`` threads:

* ``fraction_matrix_per_s``: :func:`fh_screen.chem.formula.fraction_matrix` (strings → 94-wide
  fraction matrix), the path ``Predictor.predict_formulas`` takes;
* ``grammar_per_s``: :func:`~fh_screen.chem.formula.parse_amounts` one string at a time (the path
  every non-plain formula takes);
* ``pymatgen_reference_per_s``: ``fraction_vector(parse_formula(f))``, the pymatgen reference
  path, on a 20,000-formula subset;
* ``network_only_per_s``: ``Predictor.predict_matrix`` on the ready matrix (the limit the string
  path is measured against); ``strings_to_predictions_per_s``: ``predict_formulas`` end to end.

Run alone (prints JSON)::

    python benchmarks/bench_parse.py [--threads 2] [--repeats 5] [--model paper]
"""

from __future__ import annotations

import argparse
import json
import os
import time

from timing import median_seconds  # noqa: E402 - benchmarks/ is on sys.path




def benchmark_formulas() -> tuple[list[str], str]:
    """Every OQMD formula of the shared split, or generated ones when the data is absent."""
    import pandas as pd

    from pathlib import Path

    from fh_screen.data import DataError, shared_data_dir

    # Like the tests, the benchmark knows the checkout layout: the shared data lies beside it.
    os.environ.setdefault("FH_SCREEN_OQMD_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data" / "oqmd"))
    try:
        folder = shared_data_dir()
    except DataError:
        folder = Path("/nonexistent")
    paths = [folder / "train.csv", folder / "val.csv"]
    if all(p.is_file() for p in paths):
        frames = [pd.read_csv(p, keep_default_na=False, na_values=[""]) for p in paths]
        return pd.concat(frames)["formula"].astype(str).tolist(), "OQMD train.csv + val.csv"
    from fh_screen.chem.candidates import enumerate_counts, formulas_from_counts, parse_chemsys

    system = parse_chemsys("Li-Fe-P-O-Mn-Co")
    return formulas_from_counts(enumerate_counts(len(system), 20)[:290_000], system), "generated Li-Fe-P-O-Mn-Co"


def parse_throughput(threads: int = 2, repeats: int = 5, model: str = "paper", n_reference: int = 20_000) -> dict:
    """Formulas/s of the string paths and of the network alone (see the module docstring)."""
    import torch

    from fh_screen.chem.formula import fraction_matrix, fraction_vector, parse_amounts, parse_formula
    from fh_screen.models.predictor import Predictor

    torch.set_num_threads(threads)
    formulas, source = benchmark_formulas()
    n = len(formulas)
    fraction_matrix(formulas[:1000])  # warm caches (symbol table)
    t_fast = median_seconds(lambda: fraction_matrix(formulas), repeats)
    subset = formulas[:n_reference]
    t_grammar = median_seconds(lambda: [parse_amounts(f) for f in subset], max(1, repeats // 2))
    t_reference = median_seconds(lambda: [fraction_vector(parse_formula(f)) for f in subset], 1)

    predictor = Predictor.from_name(model)
    matrix = fraction_matrix(formulas).matrix
    predictor.predict_matrix(matrix[:1000])
    t_network = median_seconds(lambda: predictor.predict_matrix(matrix), repeats)
    t_end_to_end = median_seconds(lambda: predictor.predict_formulas(formulas), repeats)
    return {
        "formulas": source, "n_formulas": n, "n_reference": len(subset), "threads": threads, "model": model,
        "cpu_count": os.cpu_count(), "repeats": repeats,
        "fraction_matrix_per_s": n / t_fast,
        "grammar_per_s": len(subset) / t_grammar,
        "pymatgen_reference_per_s": len(subset) / t_reference,
        "network_only_per_s": n / t_network,
        "strings_to_predictions_per_s": n / t_end_to_end,
        "fast_over_reference": (n / t_fast) / (len(subset) / t_reference),
    }


def main(argv: list[str] | None = None) -> dict:
    """Parse options, run :func:`parse_throughput`, print and return its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", default="paper")
    args = parser.parse_args(argv)
    figures = parse_throughput(threads=args.threads, repeats=args.repeats, model=args.model)
    print(json.dumps(figures, indent=1))
    return figures


if __name__ == "__main__":
    main()
