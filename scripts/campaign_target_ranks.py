"""Where did a campaign's discoveries sit in the first screen's order, and which did the loop miss?

For every system of a campaign report (``fh-screen campaign --json``), the systems are drawn again
from the report's seeds, screened once as the campaign's first screen does, and each target
(a new compound on the oracle's true hull) is placed at its rank in the new candidates ordered
by the ranked column. The report's loop picks say which targets the loop found. The output
counts found and missed targets per rank band: the one-shot top-B list finds exactly the
targets ranked 1..B, so what the loop finds beyond rank B against what it leaves inside the top
B is what its feedback traded.

    python scripts/campaign_target_ranks.py docs/campaign/campaign-p-stable.json \
        --oracle ../shared/data/oqmd/val.csv --known ../shared/data/oqmd/train.csv   # about 1 min per 100 systems
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from fh_screen.data import load_set, shared_data_dir
from fh_screen.models.predictor import Predictor
from fh_screen.screening import screen
from fh_screen.study.campaign import _reduced, campaign_systems

#: Rank bands of the first screen's order (inclusive), and the band of targets it does not list.
BANDS = ((1, 2), (3, 5), (6, 10), (11, 20), (21, 50), (51, None))
UNLISTED = "unlisted"


def _band(rank: int | None) -> str:
    if rank is None:
        return UNLISTED
    for low, high in BANDS:
        if rank >= low and (high is None or rank <= high):
            return f"{low}-{high}" if high else f"{low}+"
    raise ValueError(f"rank {rank} is in no band")


def target_ranks(report: dict, known_path: Path, oracle_path: Path, model: str | None) -> dict[str, dict[str, int]]:
    """Found and missed targets of the report's loop, counted per rank band of the first screen."""
    options = report["options"]
    known, oracle = load_set(known_path), load_set(oracle_path)
    predictor = Predictor.from_name(model)
    found = {(tuple(sorted(s["chemsys"].split("-"))), s["seed"]):
             {_reduced(f) for f, hit in zip(s["picks"]["loop"], s["hits"]["loop"]) if hit} for s in report["systems"]}
    counts = {"found": Counter(), "missed": Counter()}
    for seed in options["seeds"]:
        for system in campaign_systems(known, oracle, options["n_systems"], seed):
            table = screen(system.chemsys, predictor=predictor, known=system.known).table
            new = table[~table["is_known"]].sort_values([options["score_column"], "rank"], ascending=[False, True])
            order = [_reduced(f) for f in new["formula"]]
            hits = found[(tuple(sorted(system.chemsys)), seed)]
            for target in system.targets:
                rank = order.index(target) + 1 if target in order else None
                counts["found" if target in hits else "missed"][_band(rank)] += 1
    labels = [_band(low) for low, _ in BANDS] + [UNLISTED]
    return {kind: {label: counts[kind][label] for label in labels} for kind in counts}


def main(argv: list[str] | None = None) -> None:
    """Command line: print (and with ``--json`` write) the counts per rank band."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", type=Path, help="a campaign report (fh-screen campaign --json)")
    parser.add_argument("--oracle", type=Path, default=None, help="the report's oracle (default: shared val.csv)")
    parser.add_argument("--known", type=Path, default=None, help="the report's known table (default: shared train.csv)")
    parser.add_argument("--model", default=None, help="the report's model (default model)")
    parser.add_argument("--json", type=Path, default=None, help="also write the counts here")
    args = parser.parse_args(argv)
    folder = shared_data_dir() if args.oracle is None or args.known is None else None
    counts = target_ranks(json.loads(args.report.read_text()), args.known or folder / "train.csv",
                          args.oracle or folder / "val.csv", args.model)
    for kind, row in counts.items():
        print(f"{kind:7s} {sum(row.values()):4d}  " + "  ".join(f"{band}: {n}" for band, n in row.items()))
    if args.json is not None:
        args.json.write_text(json.dumps({"report": str(args.report), **counts}, indent=1) + "\n")


if __name__ == "__main__":
    main()
