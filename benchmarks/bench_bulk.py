"""Bulk sweep benchmark: a seeded slice of ternary systems swept with 1 and 2 processes.

    python benchmarks/bench_bulk.py [--systems 200] [--seed 21] [--model attention-ensemble] [--max-atoms 20]

A fresh temporary store is filled with the OQMD reference table shipped with the package
(290,363 entries, as on a user's first run), then the slice (drawn with ``--seed`` from every
ternary of the 86 elements OQMD and the model share) is swept by :func:`fh_screen.sweep.run_sweep`
with 1 process, and again (``redo``) with 2. Reported: the median per-system latency inside a
process, the sweep's wall time per system (steady state: first to last finished system, so the
workers' start-up is left out; and the total with start-up), the 1→2 speed-up, and where a
system's time goes (store read, screen, save; medians over a sub-slice, in this process).
Prints one JSON object and writes ``benchmarks/results/bulk.json`` for ``run_all.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from itertools import combinations
from pathlib import Path

os.environ.setdefault("FH_SCREEN_OQMD_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data" / "oqmd"))  # checkout layout: scripts may assume it, the package does not

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from timing import median_cpu_seconds  # noqa: E402

#: The issue's yardstick: all ternaries of OQMD's 89 elements.
ALL_TERNARIES = 113_564


def machine() -> str:
    """The CPU, visible cores and versions (as ``run_all.py`` writes them)."""
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}; {os.cpu_count()} cores visible; Python {platform.python_version()}; torch {torch.__version__}"


def ternary_slice(n: int, seed: int) -> list[str]:
    """``n`` ternary systems drawn reproducibly from every ternary of the sweepable elements."""
    from fh_screen.sweep import parse_elements

    elements = sorted(parse_elements("all"))
    every = ["-".join(c) for c in combinations(elements, 3)]
    return sorted(random.Random(seed).sample(every, n))


def sweep(systems, options, store_file: Path, processes: int, model: str | None, redo: bool,
          save_predictions: bool = True) -> dict:
    """One sweep; per-system latencies and the finishing times of the systems."""
    from fh_screen.sweep import SweepOptions, run_sweep

    finished: list[float] = []
    started = time.perf_counter()
    report = run_sweep(systems, options, SweepOptions(model=model, store_file=store_file, processes=processes,
                                                      redo=redo, save_predictions=save_predictions),
                       on_outcome=lambda outcome: finished.append((time.perf_counter(), outcome.seconds, outcome.cpu_seconds)))
    total = time.perf_counter() - started
    times = [t for t, _, _ in finished]
    steady = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else total
    return {
        "processes": processes,
        "done": report.systems_done,
        "failed": report.systems_failed,
        "candidates": report.candidates,
        "latency_median_ms": 1000 * statistics.median(s for _, s, _ in finished),
        "cpu_median_ms": 1000 * statistics.median(c for _, _, c in finished),
        # CPU the sweep's processes got per second of wall time (2 processes on 2 idle cores: ~2)
        "cores_obtained": sum(c for _, _, c in finished[1:]) / max(times[-1] - times[0], 1e-9) if len(times) > 1 else 0.0,
        "wall_ms_per_system_steady": 1000 * steady,
        "wall_ms_per_system_total": 1000 * total / max(len(systems), 1),
        "seconds_total": total,
        "startup_s": times[0] - started if times else total,
    }


#: Functions whose cumulative time splits a screen (cProfile), and how the table names them.
SCREEN_PARTS = {
    "attention_inference.py:predict": "attention model on the refined rows",
    "stability.py:p_stable": "P(stable) classifier",
    "stacked.py:predict": "fast prefilter (paper network) on every candidate",
    "hull.py:hull_energies": "hull energies",
}


def stages(systems, options, store_file: Path, model: str | None, repeats: int, save_predictions: bool = True) -> dict:
    """Median CPU ms per system of each part of the one screen service, in this process (1 thread),
    and the shares of the screen's parts (cProfile, cumulative)."""
    import cProfile
    import pstats

    from fh_screen.models.predictor import load_predictor
    from fh_screen.models.torch_threads import torch_threads
    from fh_screen.screening import screen as rank
    from fh_screen.service import known_phases, run_screen, save_screen
    from fh_screen.store import FhScreenStore

    predictor = load_predictor(model)
    store = FhScreenStore.embedded(store_file)
    read, core, save, whole = [], [], [], []
    with torch_threads(1):
        for system in systems:
            label = tuple(system.split("-"))
            read.append(median_cpu_seconds(lambda: known_phases(label, store=store), repeats))
            phases = known_phases(label, store=store)
            core.append(median_cpu_seconds(lambda: rank(label, predictor=predictor, known=phases.frame, options=options),
                                           repeats))
            result = rank(label, predictor=predictor, known=phases.frame, options=options)
            save.append(median_cpu_seconds(lambda: save_screen(result, options, predictor if save_predictions else None,
                                                               store=store, keep_top=100), 1))
            whole.append(median_cpu_seconds(lambda: run_screen(system, predictor, options=options, store=store,
                                                               save=True, keep_top=100,
                                                               save_predictions=save_predictions), 1))
        known = [known_phases(tuple(s.split("-")), store=store).frame for s in systems]
        profile = cProfile.Profile()
        profile.enable()
        for system, frame in zip(systems, known):
            rank(tuple(system.split("-")), predictor=predictor, known=frame, options=options)
        profile.disable()
    stats = pstats.Stats(profile).stats
    total = sum(v[3] for k, v in stats.items() if k[2] == "screen" and k[0].endswith("screening/core.py"))
    shares = {}
    for key, label in SCREEN_PARTS.items():
        file, name = key.split(":")
        shares[label] = sum(v[3] for k, v in stats.items() if k[0].endswith(file) and k[2] == name) / total
    result = {name: 1000 * statistics.median(values)
              for name, values in (("store_read_ms", read), ("screen_ms", core), ("save_ms", save), ("run_screen_ms", whole))}
    result["screen_shares"] = shares
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", type=int, default=200)
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--model", default=None, help="shipped model (default: the package's default model)")
    parser.add_argument("--max-atoms", type=int, default=20)
    parser.add_argument("--stage-systems", type=int, default=20, help="systems of the slice timed stage by stage")
    parser.add_argument("--no-predictions", action="store_true", help="sweep without storing predictions")
    parser.add_argument("--elements", default=None,
                        help="comma-separated elements: sweep every ternary of them instead of a random slice "
                             "(systems share subsystems, as in a real sweep)")
    parser.add_argument("--results", type=Path, default=HERE / "results" / "bulk.json",
                        help="where the section for run_all.py goes (default benchmarks/results/bulk.json)")
    args = parser.parse_args()

    from fh_screen.models.predictor import load_predictor
    from fh_screen.screening import ScreenOptions

    if args.elements:
        from fh_screen.sweep import systems_from_elements

        systems = systems_from_elements(args.elements.split(","), [3])
        drawn = f"every ternary of the {len(args.elements.split(','))} elements {args.elements}"
    else:
        systems = ternary_slice(args.systems, args.seed)
        drawn = f"ternaries drawn with seed {args.seed} from every ternary of the 86 elements OQMD and the model share"
    options = ScreenOptions(max_atoms=args.max_atoms)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["FH_SCREEN_DATA_DIR"] = tmp
        os.environ["FH_SCREEN_CONFIG_FILE"] = os.devnull
        os.environ["FH_SCREEN_REFERENCE_DATA"] = "true"
        os.environ.pop("FH_SCREEN_MONGO_URI", None)
        from fh_screen.settings import FhScreenSettings
        from fh_screen.store import FhScreenStore

        FhScreenStore.from_settings().connect().close()  # first use: the shipped OQMD table
        store_file = FhScreenSettings().store_path
        predictor = load_predictor(args.model)
        one = sweep(systems, options, store_file, 1, args.model, redo=False, save_predictions=not args.no_predictions)
        two = sweep(systems, options, store_file, 2, args.model, redo=True, save_predictions=not args.no_predictions)
        parts = stages(systems[:args.stage_systems], options, store_file, args.model, repeats=3,
                       save_predictions=not args.no_predictions)
        file_mb = store_file.stat().st_size / 1e6
    load_after = os.getloadavg()
    speedup = one["wall_ms_per_system_steady"] / two["wall_ms_per_system_steady"]
    # on idle cores each process runs at its CPU cost: 2 processes give 2 × cpu(1) / cpu(2)
    speedup_idle = 2 * one["cpu_median_ms"] / two["cpu_median_ms"]
    hours_all = two["wall_ms_per_system_steady"] * ALL_TERNARIES / 3.6e6
    result = {
        "machine": machine(),
        "model": f"{predictor.name}@{predictor.version}",
        "systems": len(systems), "seed": args.seed, "max_atoms": args.max_atoms,
        "one_process": {k: round(v, 2) for k, v in one.items()},
        "two_processes": {k: round(v, 2) for k, v in two.items()},
        "speedup_steady": round(speedup, 2),
        "speedup_projected_idle_cores": round(speedup_idle, 2),
        "all_ternaries_hours_at_two_processes": round(hours_all, 2),
        "stages_median_cpu_ms": {k: round(v, 1) for k, v in parts.items() if k != "screen_shares"},
        "screen_shares": {k: round(v, 3) for k, v in parts["screen_shares"].items()},
        "store_file_mb_after": round(file_mb, 1),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
    }
    print(json.dumps(result, indent=1))
    command = ("python benchmarks/bench_bulk.py " + (f"--elements {args.elements}" if args.elements else
                                                        f"--systems {args.systems} --seed {args.seed}")
               + f" --max-atoms {args.max_atoms}" + (f" --model {args.model}" if args.model else "")
               + (f" --results {args.results}" if args.results.resolve() != HERE / "results" / "bulk.json" else "") + (" --no-predictions" if args.no_predictions else ""))
    section = {  # picked up by benchmarks/run_all.py when it writes BENCHMARKS.md
        "title": f"Bulk sweep: {len(systems)} " + ("ternaries of " + args.elements if args.elements else "seeded ternaries")
                 + f", 1 and 2 processes ({result['model']}, max {args.max_atoms} atoms"
                 + (", screen documents only: --no-predictions)" if args.no_predictions else ")"),
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": command,
        "rows": [
            {"what": "per-system latency in a process, median (1 process)", "value": round(one["latency_median_ms"], 1), "unit": "ms"},
            {"what": "per-system latency in a process, median (2 processes)", "value": round(two["latency_median_ms"], 1), "unit": "ms"},
            {"what": "CPU time per system in a process, median (1 / 2 processes)", "value": f"{one['cpu_median_ms']:.0f} / {two['cpu_median_ms']:.0f}", "unit": "ms CPU"},
            {"what": "cores the sweep obtained (CPU s per wall s; 1 / 2 processes)", "value": f"{one['cores_obtained']:.2f} / {two['cores_obtained']:.2f}", "unit": "cores"},
            {"what": "projected on 2 idle cores: wall per system at 2 processes (CPU median / 2)", "value": round(two["cpu_median_ms"] / 2, 1), "unit": "ms"},
            {"what": "projected on 2 idle cores: speed-up 1 → 2 processes (2 × CPU(1) / CPU(2))", "value": round(speedup_idle, 2), "unit": "×"},
            {"what": "sweep wall time per system, steady state, 1 process", "value": round(one["wall_ms_per_system_steady"], 1), "unit": "ms"},
            {"what": "sweep wall time per system, steady state, 2 processes (target ≤ 60)", "value": round(two["wall_ms_per_system_steady"], 1), "unit": "ms"},
            {"what": "speed-up 1 → 2 processes (target ≥ 1.7)", "value": round(speedup, 2), "unit": "×"},
            {"what": "start-up before the first system (1 / 2 processes)", "value": f"{one['startup_s']:.1f} / {two['startup_s']:.1f}", "unit": "s"},
            {"what": f"all {ALL_TERNARIES:,} ternaries at 2 processes (extrapolated, target ≤ 2)", "value": round(hours_all, 2), "unit": "h"},
            {"what": "stage: known phases read from the store (median)", "value": round(parts["store_read_ms"], 1), "unit": "ms CPU"},
            {"what": "stage: screen (enumerate, predict, hull, P(stable))", "value": round(parts["screen_ms"], 1), "unit": "ms CPU"},
            {"what": "stage: save (screen document, keep_top 100" + ("" if args.no_predictions else ", + predictions") + ")", "value": round(parts["save_ms"], 1), "unit": "ms CPU"},
            {"what": "the one service end to end (run_screen, save=True)", "value": round(parts["run_screen_ms"], 1), "unit": "ms CPU"},
        ] + [{"what": f"share of the screen: {label}", "value": f"{100 * share:.0f} %", "unit": "cProfile, cumulative"}
             for label, share in parts["screen_shares"].items()],
        "notes": (f"Machine: {machine()}. {result['systems']} systems: {drawn}; a fresh store filled with the shipped OQMD table (290,363 entries); 1 torch thread per "
                  f"process. Load average before {'/'.join(map(str, result['load_average_before']))}, after "
                  f"{'/'.join(map(str, result['load_average_after']))}: the 2 cores are shared with other sessions."),
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(section, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
