"""Screening and prediction throughput: each function returns a dict of measured figures.

Run through ``python benchmarks/run_all.py`` (writes BENCHMARKS.md), or alone::

    python benchmarks/bench_screen.py            # prints JSON
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from timing import median_seconds  # noqa: E402 - benchmarks/ is on sys.path

SYSTEMS = {"ternary": "Li-Fe-O", "quaternary": "Li-Fe-P-O", "quinary": "Li-Fe-P-O-Mn"}




def pipeline_throughput(threads: int = 2, repeats: int = 3, model: str | None = None) -> dict:
    """Candidates/s for enumerate → featurise (scatter to 94 fractions) → predict, per stage.

    ``screen_path_per_s`` is what a screen runs: enumerate, then ``Predictor.predict_counts``
    (fractions of the system's columns only, no 94-wide matrix).
    """
    import torch

    from fh_screen.chem.formula import scatter_counts
    from fh_screen.chem.candidates import enumerate_counts, parse_chemsys
    from fh_screen.models.predictor import Predictor

    torch.set_num_threads(threads)
    predictor = Predictor.from_name(model)
    out = {"threads": threads, "model": f"{predictor.name}@{predictor.version}", "n_members": predictor.checkpoint.member_state_dicts.__len__(), "systems": {}}
    for label, chemsys in (("quinary", "Li-Fe-P-O-Mn"), ("senary", "Li-Fe-P-O-Mn-Co")):
        system = parse_chemsys(chemsys)
        counts = enumerate_counts(len(system), 20)
        matrix = scatter_counts(counts, system, predictor.elements)
        predictor.predict_matrix(matrix[:1000])  # warm up
        t_enum = median_seconds(lambda: enumerate_counts(len(system), 20), repeats)
        t_feat = median_seconds(lambda: scatter_counts(counts, system, predictor.elements), repeats)
        t_pred = median_seconds(lambda: predictor.predict_matrix(matrix), repeats)
        t_counts = median_seconds(lambda: predictor.predict_counts(counts, system), repeats)
        n = len(counts)
        out["systems"][label] = {
            "chemsys": chemsys, "n_candidates": n,
            "enumerate_per_s": n / t_enum, "featurise_per_s": n / t_feat, "predict_per_s": n / t_pred,
            "featurise_predict_per_s": n / (t_feat + t_pred),
            "end_to_end_per_s": n / (t_enum + t_feat + t_pred),
            "screen_path_per_s": n / (t_enum + t_counts),
        }
    return out


def strings_vs_counts(n: int = 100_000, threads: int = 2, repeats: int = 3, model: str = "paper-ensemble") -> dict:
    """Predictions/s from formula strings (``predict_formulas``) vs count arrays (``predict_counts``).

    Measured with a fast model (``paper-ensemble``), where the string handling is visible; with
    the attention default the network dominates both paths (``bench_models.py``).
    """
    import torch

    from fh_screen.chem.candidates import enumerate_counts, formulas_from_counts, parse_chemsys
    from fh_screen.models.predictor import Predictor

    torch.set_num_threads(threads)
    predictor = Predictor.from_name(model)
    system = parse_chemsys("Li-Fe-P-O-Mn-Co")
    counts = enumerate_counts(len(system), 20)[:n]
    formulas = formulas_from_counts(counts, system)
    predictor.predict_counts(counts[:1000], system)
    t_strings = median_seconds(lambda: predictor.predict_formulas(formulas), repeats)
    t_counts = median_seconds(lambda: predictor.predict_counts(counts, system), repeats)
    return {
        "n": len(counts), "threads": threads,
        "predict_formulas_per_s": len(counts) / t_strings,
        "predict_counts_per_s": len(counts) / t_counts,
        "ratio_counts_over_strings": t_strings / t_counts,
    }


def featurise_vs_matminer(n_fast: int = 100_000, n_matminer: int = 3_000, repeats: int = 3) -> dict:
    """Formulas/s: ``fraction_matrix`` (fast path) vs matminer ``ElementFraction`` (``set_n_jobs(1)``)."""
    from matminer.featurizers.composition import ElementFraction
    from pymatgen.core import Composition

    from fh_screen.chem.formula import fraction_matrix
    from fh_screen.chem.candidates import enumerate_counts, formulas_from_counts, parse_chemsys

    system = parse_chemsys("Li-Fe-P-O-Mn-Co")
    formulas = formulas_from_counts(enumerate_counts(len(system), 20)[:n_fast], system)
    t_fast = median_seconds(lambda: fraction_matrix(formulas), repeats)
    featurizer = ElementFraction()
    featurizer.set_n_jobs(1)
    subset = formulas[:n_matminer]

    def matminer_run():
        compositions = [Composition(f) for f in subset]
        return featurizer.featurize_many(compositions, pbar=False)

    t_mm = median_seconds(matminer_run, max(1, repeats - 1))
    fast_rate, mm_rate = len(formulas) / t_fast, len(subset) / t_mm
    return {
        "n_fast": len(formulas), "n_matminer": len(subset),
        "fraction_matrix_per_s": fast_rate, "matminer_element_fraction_per_s": mm_rate,
        "ratio": fast_rate / mm_rate,
    }


def _cli(args: list[str], env: dict) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "fh_screen.cli", *args], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"fh-screen {' '.join(args)} failed: {done.stderr.strip()[-300:]}")
    return seconds


def cli_wall_times(repeats: int = 3, known_csv: str | None = None) -> dict:
    """Wall time of the CLI: cold (a new process each run) and warm (in-process, model loaded).

    Uses a temporary data dir; when ``known_csv`` is given its rows are ingested first so the
    hull is anchored on DFT entries as in real use.
    """
    from typer.testing import CliRunner

    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, FH_SCREEN_DATA_DIR=str(Path(tmp) / "data"), FH_SCREEN_CONFIG_FILE=os.devnull)
        os.environ.update(FH_SCREEN_DATA_DIR=env["FH_SCREEN_DATA_DIR"], FH_SCREEN_CONFIG_FILE=env["FH_SCREEN_CONFIG_FILE"])
        n_reference = 0
        if known_csv:
            from fh_screen.store import FhScreenStore
            from fh_screen.store.ingest import ingest_file

            with FhScreenStore.from_settings() as store:
                ingest_file(store.reference, known_csv)
                n_reference = store.n_reference()
        out = {"n_reference_entries": n_reference, "help_cold_s": statistics.median(_cli(["--help"], env) for _ in range(repeats))}
        from fh_screen.cli import build_app

        app = build_app()
        runner = CliRunner()
        for label, chemsys in SYSTEMS.items():
            args = ["screen", chemsys, "--top", "10", "--no-store"]
            cold = statistics.median(_cli(args, env) for _ in range(repeats))
            runner.invoke(app, args)  # first in-process run loads torch, pymatgen, the model

            def warm_run():
                result = runner.invoke(app, args)
                if result.exit_code != 0:
                    raise RuntimeError(result.output)

            warm = median_seconds(warm_run, repeats)
            saving = median_seconds(lambda: runner.invoke(app, ["screen", chemsys, "--top", "0"]), 1)
            out[label] = {"chemsys": chemsys, "cold_s": cold, "warm_s": warm, "warm_with_store_save_s": saving}
    return out


def profile_screen(chemsys: str = "Li-Fe-P-O", top: int = 12) -> list[tuple[str, float]]:
    """Cumulative seconds of the main stages of one warm ``screen()`` call (cProfile)."""
    import cProfile
    import pstats

    from fh_screen.models.predictor import Predictor
    from fh_screen.screening import screen

    predictor = Predictor.from_name(None)
    screen(chemsys, predictor=predictor)
    profiler = cProfile.Profile()
    profiler.enable()
    screen(chemsys, predictor=predictor)
    profiler.disable()
    stats = pstats.Stats(profiler).stats
    wanted = {
        "enumerate_counts": "enumerate", "predict_counts": "featurise + predict (torch)",
        "build_hull": "hull (qhull)", "e_above_hull": "e_above_hull (matrix product)",
        "decomposition": "decompositions (barycentric)", "format_decomposition": "decomposition strings",
        "formulas_from_counts": "formula strings", "pymatgen_phase_diagram": "pymatgen PhaseDiagram",
        "screen": "screen() total",
    }
    rows = []
    for (filename, _, name), values in stats.items():
        if name in wanted and "fh_screen" in filename:
            rows.append((wanted[name], values[3]))
    return sorted(rows, key=lambda r: -r[1])[:top]


if __name__ == "__main__":
    print(json.dumps({"pipeline": pipeline_throughput(), "strings_vs_counts": strings_vs_counts()}, indent=1))
