"""Throughput of every shipped model in the screen path, side by side in one process.

    python benchmarks/bench_models.py [--repeats 3]

For each model: ``Predictor.predict_counts`` over all 9,369 candidates of Li-Fe-P-O (max 20
atoms), the median wall time of ``repeats`` runs with 2 torch threads, and the CPU seconds the
process spent (robust to other load on a shared machine). Writes ``results/models.json``, which
``run_all.py`` renders into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from timing import median_seconds  # noqa: E402


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def model_throughput(models: list[str], repeats: int = 3, threads: int = 2) -> list[dict]:
    """Candidates/s (wall and per CPU-second) of each model on the quaternary Li-Fe-P-O screen path."""
    import torch

    from fh_screen.chem.candidates import enumerate_counts, parse_chemsys
    from fh_screen.models.predictor import Predictor

    torch.set_num_threads(threads)
    system = parse_chemsys("Li-Fe-P-O")
    counts = enumerate_counts(len(system), 20)
    rows = []
    for name in models:
        predictor = Predictor.from_name(name)
        predictor.predict_counts(counts[:500], system)  # warm up
        walls, cpus = [], []
        for _ in range(repeats):
            cpu, wall = _cpu_seconds(), time.perf_counter()
            predictor.predict_counts(counts, system)
            walls.append(time.perf_counter() - wall)
            cpus.append(_cpu_seconds() - cpu)
        card = predictor.checkpoint.metadata.get("metrics", {})
        val = card.get("val_abs_dhf_lt_5", {})
        rows.append({
            "model": name, "n_members": len(predictor.checkpoint.member_state_dicts),
            "n_candidates": len(counts), "per_s_wall": len(counts) / statistics.median(walls),
            "per_cpu_s": len(counts) / statistics.median(cpus), "quaternary_predict_s": statistics.median(walls),
            "val_mae_ev_per_atom": val.get("mae_ev_per_atom"),
        })
    return rows


def stacked_vs_reference(repeats: int = 3, threads: int = 2) -> dict:
    """The default ensemble's stacked path beside its module-by-module reference, and the reference
    under CPU bf16 autocast (AMX where present), on the same Li-Fe-P-O candidates."""
    import torch

    from fh_screen.chem.candidates import enumerate_counts, parse_chemsys
    from fh_screen.models.predictor import Predictor

    torch.set_num_threads(threads)
    system = parse_chemsys("Li-Fe-P-O")
    counts = enumerate_counts(len(system), 20)
    predictor = Predictor.from_name()
    matrix = np.zeros((len(counts), len(predictor.elements)), dtype=np.float32)
    matrix[:, [predictor.elements.index(s) for s in system]] = counts / counts.sum(axis=1, keepdims=True)

    def reference(bf16: bool = False):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return predictor.predict_matrix_reference(matrix)[0]

    def stacked():
        return predictor.predict_counts(counts, system).dhf_ev_per_atom

    fp32, bf16, fast = reference(), reference(True), stacked()
    t_ref = median_seconds(reference, repeats)
    t_bf16 = median_seconds(lambda: reference(True), repeats)
    t_fast = median_seconds(stacked, repeats)
    bf16_difference = np.abs(np.asarray(fp32) - np.asarray(bf16))
    return {"n_candidates": len(counts), "reference_per_s": len(counts) / t_ref, "stacked_per_s": len(counts) / t_fast,
            "stacked_speedup": t_ref / t_fast, "stacked_max_abs_difference_ev_per_atom": float(np.abs(fast - fp32).max()),
            "bf16_per_s": len(counts) / t_bf16, "bf16_speedup": t_ref / t_bf16,
            "max_abs_difference_ev_per_atom": float(bf16_difference.max()),
            "mean_abs_difference_ev_per_atom": float(bf16_difference.mean())}


def multiply_adds_per_composition(n_elements: int = 4) -> int:
    """Multiply-adds of the default ensemble's stacked path for one composition of ``n_elements``.

    Per element token: the fraction encoding's linear map, then per block the qkv, output and two
    feed-forward maps plus attention over the ``n_elements`` tokens; per composition the readout MLP.
    (The element tokens themselves are a table lookup.)
    """
    from fh_screen.models.predictor import Predictor

    checkpoint = Predictor.from_name().checkpoint
    total = 0
    for number in range(len(checkpoint.member_state_dicts)):
        spec = checkpoint.spec_of(number)
        d, ff, hidden = spec.d_model, spec.d_ff, spec.d_head_hidden
        block = 3 * d * d + d * d + 2 * d * ff + 2 * n_elements * d
        token = (2 * spec.n_frequencies + 2) * d + spec.n_layers * block
        total += n_elements * token + d * hidden + hidden * (hidden // 2) + (hidden // 2) * 2
    return total


def screen_times(repeats: int = 3, threads: int = 2) -> list[dict]:
    """Warm ``screen()`` wall time with the default model: the cascade (default) vs the model on every candidate."""
    from bench_screen_stages import SYSTEMS, warm_screens

    from fh_screen.screening.probability import DEFAULT_REFINE_TOP
    from fh_screen.screening import ScreenOptions

    modes = [(f"cascade (--refine-top {DEFAULT_REFINE_TOP}, default)", DEFAULT_REFINE_TOP, SYSTEMS),
             # the model on all 221,000 senary candidates would take minutes
             ("every candidate (--refine-top 0)", None, SYSTEMS[:2])]
    return [{"system": r["chemsys"], "mode": label, "n_candidates": r["n_candidates"], "seconds": r["seconds"], "per_s": r["per_s"]}
            for label, top, systems in modes
            for r in warm_screens(repeats, threads, systems, ScreenOptions(refine_top=top))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    main_with(args.repeats, args.models.split(","))


MODELS = ("paper", "paper-ensemble", "wide", "attention-ensemble")


def main_with(repeats: int = 3, models: list[str] | tuple[str, ...] = MODELS) -> None:
    """Measure ``models`` and write ``results/models.json`` (also called by ``run_all.py``)."""
    import os

    from fh_screen.screening.probability import DEFAULT_PREFILTER_MODEL, DEFAULT_REFINE_TOP

    load_before = "/".join(f"{x:.2f}" for x in os.getloadavg())
    rows = model_throughput(list(models), repeats=repeats)
    screens = screen_times(repeats=repeats)
    paths = stacked_vs_reference(repeats=repeats)
    load_after = "/".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [
        {"what": f"{r['model']} ({r['n_members']} members, val MAE {r['val_mae_ev_per_atom']:.4f} eV/atom): "
                 f"Li-Fe-P-O screen path, {r['n_candidates']:,} candidates", "value": round(r["per_s_wall"]), "unit": "candidates/s (wall, median)"}
        for r in rows
    ] + [
        {"what": f"{r['model']}: per CPU-second", "value": round(r["per_cpu_s"]), "unit": "candidates per CPU-s"} for r in rows
    ] + [
        {"what": f"screen() warm, {r['system']} ({r['n_candidates']:,} candidates), attention-ensemble, {r['mode']}",
         "value": round(r["seconds"], 2), "unit": f"s ({r['per_s']:,.0f} candidates/s)"}
        for r in screens
    ] + [
        {"what": f"attention-ensemble, stacked path vs module-by-module reference ({paths['n_candidates']:,} Li-Fe-P-O candidates): "
                 f"{paths['stacked_per_s']:,.0f} vs {paths['reference_per_s']:,.0f} candidates/s; predictions differ by up to "
                 f"{paths['stacked_max_abs_difference_ev_per_atom'] * 1000:.4f} meV/atom",
         "value": round(paths["stacked_speedup"], 2), "unit": "× (the shipped path)"},
        {"what": f"attention-ensemble reference under bf16 autocast vs fp32: {paths['bf16_per_s']:,.0f} vs "
                 f"{paths['reference_per_s']:,.0f} candidates/s; predictions differ by up to "
                 f"{paths['max_abs_difference_ev_per_atom'] * 1000:.1f} meV/atom (mean {paths['mean_abs_difference_ev_per_atom'] * 1000:.2f})",
         "value": round(paths["bf16_speedup"], 2), "unit": "× (not adopted)"},
    ]
    fastest = max(r["per_cpu_s"] for r in rows)
    mflop = 2 * multiply_adds_per_composition(4) / 1e6
    notes = (f"Load average before {load_before}, after {load_after}. CPU cost relative to the cheapest model: "
             + ", ".join(f"{r['model']} {fastest / r['per_cpu_s']:.0f}× the fastest" for r in rows)
             + f". The attention ensemble spends about {mflop:.0f} MFLOP per quaternary composition (10 members of two widths, "
               "3 layers each), so 50,000 compositions/s would need about "
               f"{mflop * 50_000 / 1e6:.1f} TFLOP/s, several times the float32 peak of 2 CPU cores: the model alone cannot meet that target. "
               f"In a screen the default therefore runs as a cascade: {DEFAULT_PREFILTER_MODEL} ranks every candidate and the attention "
               f"ensemble predicts the known compositions and the best {DEFAULT_REFINE_TOP:,} new ones (rediscovery figures for each "
               "--refine-top in docs/evaluation.md).")
    payload = {"title": "Shipped models in the screen path (Li-Fe-P-O, predict_counts, 2 threads)",
               "command": "python benchmarks/bench_models.py",
               "measured": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "rows": lines, "notes": notes, "raw": rows, "screens": screens, "paths": paths}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "models.json").write_text(json.dumps(payload, indent=1) + "\n")
    for row in screens:
        print(f"{row['system']:>14} {row['mode']:>38}: {row['seconds']:.2f} s ({row['per_s']:,.0f}/s)")
    for row in rows:
        print(f"{row['model']:>20}: {row['per_s_wall']:>12,.0f}/s wall, {row['per_cpu_s']:>12,.0f}/CPU-s, quaternary {row['quaternary_predict_s']:.2f} s")


if __name__ == "__main__":
    main()
