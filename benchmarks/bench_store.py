"""Store benchmark: ingest all of ../shared/data/oqmd into the embedded store, then time queries.

    python benchmarks/bench_store.py [--repeats 3] [--queries 20]

Prints one JSON object: median full-ingest seconds (train.csv + val.csv, fresh store each
repeat, including reading and cleaning the CSVs), median re-ingest seconds (nothing changes),
and median seconds of a chemical-system query (Li-Fe-P-O: every entry whose elements are a
subset) and of a formula query over the full store.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
import os

os.environ.setdefault("FH_SCREEN_OQMD_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data" / "oqmd"))  # checkout layout: scripts may assume it, the package does not


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--queries", type=int, default=20)
    args = parser.parse_args()

    from fh_screen.data import shared_data_dir
    from fh_screen.store import FhScreenStore
    from fh_screen.store.ingest import ingest_path

    data = shared_data_dir()
    ingest_s, ingest_cpu_s, reingest_s, report = [], [], [], None
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            path = Path(tmp) / f"bench{repeat}.sqlite"
            with FhScreenStore.embedded(path) as store:
                start, cpu = time.perf_counter(), time.process_time()
                report = ingest_path(store.reference, data)
                ingest_s.append(time.perf_counter() - start)
                ingest_cpu_s.append(time.process_time() - cpu)
                if repeat == 0:
                    start = time.perf_counter()
                    again = ingest_path(store.reference, data)
                    reingest_s.append(time.perf_counter() - start)
                    assert again.inserted == again.updated == 0
        with FhScreenStore.embedded(path, read_only=True) as store:
            chemsys_s, formula_s = [], []
            for _ in range(args.queries):
                start = time.perf_counter()
                frame = store.reference_frame(chemsys="Li-Fe-P-O")
                chemsys_s.append(time.perf_counter() - start)
                start = time.perf_counter()
                store.reference_frame(formula="LiFePO4")
                formula_s.append(time.perf_counter() - start)
            n_entries = store.n_reference()
            file_mb = path.stat().st_size / 1e6
    result = {
        "store": "embedded SQLiteStore",
        "n_entries": n_entries,
        "summary": report.summary(),
        "ingest_full_median_s": round(statistics.median(ingest_s), 2),
        "ingest_full_all_s": [round(t, 2) for t in ingest_s],
        "ingest_full_cpu_median_s": round(statistics.median(ingest_cpu_s), 2),
        "load_average_1min": round(__import__("os").getloadavg()[0], 2),
        "reingest_unchanged_s": round(statistics.median(reingest_s), 2),
        "chemsys_query_Li_Fe_P_O_median_s": round(statistics.median(chemsys_s), 4),
        "chemsys_query_n_entries": len(frame),
        "formula_query_median_s": round(statistics.median(formula_s), 4),
        "store_file_mb": round(file_mb, 1),
    }
    print(json.dumps(result, indent=1))
    section = {  # picked up by benchmarks/run_all.py when it writes BENCHMARKS.md
        "title": "Embedded store: ingest and query (all of ../shared/data/oqmd)",
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": f"python benchmarks/bench_store.py --repeats {args.repeats} --queries {args.queries}",
        "rows": [
            {"what": f"full ingest, fresh store ({n_entries:,} entries; median of {args.repeats})", "value": result["ingest_full_median_s"], "unit": "s wall"},
            {"what": "full ingest, CPU time", "value": result["ingest_full_cpu_median_s"], "unit": "s CPU"},
            {"what": "re-ingest, nothing changes", "value": result["reingest_unchanged_s"], "unit": "s wall"},
            {"what": f"chemsys query Li-Fe-P-O ({len(frame)} entries, subset semantics; median of {args.queries})", "value": result["chemsys_query_Li_Fe_P_O_median_s"], "unit": "s"},
            {"what": "formula query LiFePO4", "value": result["formula_query_median_s"], "unit": "s"},
            {"what": "store file", "value": result["store_file_mb"], "unit": "MB"},
        ],
        "notes": f"load average (1 min) at the end: {result['load_average_1min']}; targets: ingest well under a minute, chemsys query well under a second.",
    }
    results_dir = Path(__file__).resolve().parent / "results"
    results_dir.mkdir(exist_ok=True)
    (results_dir / "store.json").write_text(json.dumps(section, indent=1) + "\n")


if __name__ == "__main__":
    main()
