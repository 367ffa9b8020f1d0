"""Run every benchmark and write BENCHMARKS.md (machine, load, medians, side-by-side ratios).

    python benchmarks/run_all.py [--quick] [--output BENCHMARKS.md] [--render-only]

Results also land in ``benchmarks/results/screen.json``. Other benchmark scripts hook in by
writing a JSON file ``benchmarks/results/<name>.json`` of the form
``{"title": "...", "command": "...", "rows": [{"what": ..., "value": ..., "unit": ...}, ...],
"notes": "..."}`` (e.g. ``benchmarks/bench_store.py`` → ``store.json``); :func:`external_sections`
renders every such file that this script did not write itself.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("FH_SCREEN_OQMD_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data" / "oqmd"))  # checkout layout: scripts may assume it, the package does not

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))

import bench_models  # noqa: E402
import bench_parse  # noqa: E402
import bench_screen  # noqa: E402
import bench_screen_stages  # noqa: E402


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return f"{cpu}; {os.cpu_count()} cores visible; Python {platform.python_version()}; torch {torch.__version__}"


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def known_csv(directory: Path) -> str | None:
    """The Li-Fe-P-O-Mn entries of the shared OQMD training file as a small CSV (None if absent)."""
    import pandas as pd

    from fh_screen.data import shared_data_dir

    path = shared_data_dir() / "train.csv"
    if not path.is_file():
        return None
    frame = pd.read_csv(path)
    keep = frame["formula"].str.fullmatch(r"(?:(?:Li|Fe|P|O|Mn)\d*)+")
    out = directory / "li_fe_p_o_mn.csv"
    frame[keep].to_csv(out, index=False)
    return str(out)


def external_sections(own: set[str]) -> list[str]:
    """Markdown sections of the JSON results other benchmark scripts left in benchmarks/results/."""
    lines: list[str] = []
    for path in sorted(RESULTS.glob("*.json")):
        if path.name in own:
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        lines += ["", f"## {data.get('title', path.stem)}", ""]
        if data.get("command"):
            lines += [f"Command: `{data['command']}`" + (f" — measured {data['measured']}" if data.get("measured") else ""), ""]
        rows = data.get("rows") or []
        if rows:
            lines += ["| what | value | unit |", "| --- | ---: | --- |"]
            for row in rows:
                value = row.get("value")
                text = f"{value:,.3g}" if isinstance(value, (int, float)) else str(value)
                lines.append(f"| {row.get('what', '')} | {text} | {row.get('unit', '')} |")
        if data.get("notes"):
            lines += ["", str(data["notes"])]
    return lines


def write_parse_section(figures: dict) -> None:
    """``results/parse.json``: the string path beside the pymatgen reference and the network limit."""
    rows = [
        ("`fraction_matrix` (strings → fractions, the fast path)", figures["fraction_matrix_per_s"]),
        ("formula grammar, one string at a time (`parse_amounts`)", figures["grammar_per_s"]),
        ("pymatgen reference (`fraction_vector(parse_formula(f))`)", figures["pymatgen_reference_per_s"]),
        (f"network alone (`{figures['model']}`, `predict_matrix` on the ready matrix)", figures["network_only_per_s"]),
        (f"strings → predictions (`{figures['model']}`, `predict_formulas`)", figures["strings_to_predictions_per_s"]),
    ]
    payload = {
        "title": f"Formula strings: parse speed beside the network ({figures['n_formulas']:,} {figures['formulas']} strings, {figures['threads']} threads)",
        "command": "python benchmarks/bench_parse.py",
        "rows": [{"what": what, "value": round(value), "unit": "formulas/s (median)"} for what, value in rows],
        "notes": f"Target: ≥ 500,000 formulas/s from strings on 2 cores. Fast path / pymatgen reference: {figures['fast_over_reference']:.0f}×; "
                 "the fast path is tested to give the reference's fractions on every OQMD formula.",
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "parse.json").write_text(json.dumps(payload, indent=1) + "\n")


def _f(x: float, digits: int = 3) -> str:
    return f"{x:,.{digits}g}" if x < 1000 else f"{x:,.0f}"


def render(results: dict) -> str:
    pipe, svc, feat, cli, prof = (results[k] for k in ("pipeline", "strings_vs_counts", "featurise", "cli", "profile"))
    lines = [
        "# Benchmarks",
        "",
        f"Measured {results['measured']} with `{results['command']}` on: {results['machine']}.",
        f"Load average (1/5/15 min) before: {results['load_before']}, after: {results['load_after']} — the 2 cores are "
        "shared with training jobs and other sessions, so absolute figures are pessimistic; every ratio below compares "
        "runs made side by side in the same process.",
        "",
        "## Screening pipeline: enumerate → featurise → predict",
        "",
        "| model | system | candidates | enumerate /s | featurise /s | predict /s | featurise+predict /s | screen path (enumerate + `predict_counts`) /s | target |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for run in (results["pipeline_single"], pipe):
        for label, row in run["systems"].items():
            lines.append(
                f"| {run['model']} ({run['n_members']} net{'s' if run['n_members'] > 1 else ''}, {run['threads']} threads) | {label} {row['chemsys']} | "
                f"{row['n_candidates']:,} | {_f(row['enumerate_per_s'])} | {_f(row['featurise_per_s'])} | {_f(row['predict_per_s'])} | "
                f"{_f(row['featurise_predict_per_s'])} | {_f(row['screen_path_per_s'])} | ≥ 1,000,000 |"
            )
    lines += [
        "",
        "Enumeration (NumPy `repeat`/`gcd`) and featurisation (scatter of count fractions into the 94 slots) are far above "
        "the target; the bound is the network's forward pass (torch CPU matmuls; the ensemble stacks its members into one "
        "batched matmul per layer, so it costs about n_members × a single network or more). The ≥ 1,000,000/s target holds for a single network "
        "(`--model paper`); `paper-ensemble` (5 networks) trades about an order of magnitude of throughput for its σ. The default "
        "`attention-ensemble` is measured in its own section below (it is far slower: a few thousand candidates/s).",
        "",
        f"## Predictions from strings vs count arrays ({svc['n']:,} formulas, paper-ensemble, {svc['threads']} threads)",
        "",
        "| path | predictions /s |",
        "| --- | ---: |",
        f"| `Predictor.predict_formulas` (strings) | {_f(svc['predict_formulas_per_s'])} |",
        f"| `Predictor.predict_counts` (count arrays) | {_f(svc['predict_counts_per_s'])} |",
        f"| ratio counts / strings | {svc['ratio_counts_over_strings']:.2f}× |",
        "",
        "## Featurisation: fast `fraction_matrix` vs matminer `ElementFraction` (`set_n_jobs(1)`)",
        "",
        "| path | formulas | formulas /s |",
        "| --- | ---: | ---: |",
        f"| `fh_screen.chem.formula.fraction_matrix` | {feat['n_fast']:,} | {_f(feat['fraction_matrix_per_s'])} |",
        f"| matminer `ElementFraction` (+ pymatgen `Composition`) | {feat['n_matminer']:,} | {_f(feat['matminer_element_fraction_per_s'])} |",
        f"| ratio | | {feat['ratio']:.1f}× |",
        "",
        f"## `fh-screen` CLI wall time (median of {results['repeats']}; {cli['n_reference_entries']:,} OQMD reference entries in a temporary store)",
        "",
        f"`fh-screen --help` cold: {cli['help_cold_s']:.2f} s.",
        "",
        "| system | cold (new process) | warm (in-process, model loaded) | warm + saving to the store | targets |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for label in bench_screen.SYSTEMS:
        row = cli[label]
        lines.append(
            f"| {label} {row['chemsys']} | {row['cold_s']:.2f} s | {row['warm_s']:.2f} s | {row['warm_with_store_save_s']:.2f} s | "
            "cold ≤ 5 s; quaternary warm ≤ 2 s |"
        )
    missed = [f"{label} ({cli[label]['cold_s']:.2f} s)" for label in bench_screen.SYSTEMS if cli[label]["cold_s"] > 5.0]
    lines += [
        "",
        "Cold runs are bound by imports (torch ≈ 1.4–1.8 s, scipy's spatial module ≈ 0.45 s, pandas ≈ 0.3–0.5 s) and "
        "reading the known phases from the store; `--help` imports none of them. "
        + (f"On this machine the cold target is missed by {', '.join(missed)}; on the AMD EPYC of 2026-12-05 (enumeration "
           "and featurisation 2–3× faster than on the Intel Xeon of 2026-12-07, first table above) the same runs took "
           "3.3–4.6 s." if missed else "Every cold run meets its target on this machine."),
        "",
        "## Where a warm quaternary screen spends its time (cProfile, cumulative s)",
        "",
        "| stage | s |",
        "| --- | ---: |",
    ]
    lines += [f"| {name} | {seconds:.3f} |" for name, seconds in prof]
    lines += external_sections({"screen.json"})
    lines += ["", "Rerun: `python benchmarks/run_all.py` (about 10 minutes on 2 cores; `--quick` for one repeat). The bulk sweeps: `benchmarks/bench_bulk.py` with the commands above (1–4 min each), then `python benchmarks/run_all.py --render-only`."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat of each measurement")
    parser.add_argument("--output", default=str(HERE.parent / "BENCHMARKS.md"))
    parser.add_argument("--render-only", action="store_true",
                        help="measure nothing: write the file again from benchmarks/results/*.json "
                             "(after another benchmark script refreshed its section)")
    args = parser.parse_args()
    if args.render_only:
        Path(args.output).write_text(render(json.loads((RESULTS / "screen.json").read_text())))
        print(f"wrote {args.output} from {RESULTS}")
        return
    repeats = 1 if args.quick else 3
    results = {
        "measured": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python benchmarks/run_all.py" + (" --quick" if args.quick else ""),
        "machine": machine(),
        "load_before": load(),
        "repeats": repeats,
    }
    results["pipeline"] = bench_screen.pipeline_throughput(repeats=repeats, model="paper-ensemble")
    results["pipeline_single"] = bench_screen.pipeline_throughput(repeats=repeats, model="paper")
    results["strings_vs_counts"] = bench_screen.strings_vs_counts(repeats=repeats)
    results["featurise"] = bench_screen.featurise_vs_matminer(repeats=repeats)
    with tempfile.TemporaryDirectory() as tmp:
        results["cli"] = bench_screen.cli_wall_times(repeats=repeats, known_csv=known_csv(Path(tmp)))
    results["profile"] = bench_screen.profile_screen()
    bench_models.main_with(repeats=repeats)
    bench_screen_stages.main_with(repeats=max(repeats, 3))
    write_parse_section(bench_parse.parse_throughput(repeats=max(repeats, 3)))
    results["load_after"] = load()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "screen.json").write_text(json.dumps(results, indent=1) + "\n")
    Path(args.output).write_text(render(results))
    print(f"wrote {args.output} (load {results['load_before']} → {results['load_after']})")


if __name__ == "__main__":
    main()
