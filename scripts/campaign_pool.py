"""Pool campaign reports: each draw's loop / one-shot ratio, and all draws together.

Each report (``fh-screen campaign --json``) is one draw of systems. The pooled ratio sums the
discoveries of every system of every report, and its 95 % interval resamples those systems with
replacement (2,000 draws, the same bootstrap as each report's own interval). Two reports that
share a seed hold the same systems; pooling them would count those systems twice and narrow the
interval, so the script refuses them (one line, exit 2), as it refuses a file that is not a report.

    python scripts/campaign_pool.py docs/campaign/campaign-p-stable.json seeds-5-6.json seeds-7-2.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from fh_screen.study.campaign import BOOTSTRAP_SEED, bootstrap_ratio_ci95

#: Resamples of the pooled interval (the default of ``CampaignOptions.bootstrap``).
BOOTSTRAP_DRAWS = 2000


class PoolError(ValueError):
    """A report that cannot be pooled: unreadable, not a campaign report, or a draw given twice."""


def per_system_discoveries(report: dict, strategy: str) -> np.ndarray:
    """Discoveries of ``strategy`` in each system of a campaign report."""
    return np.array([sum(system["hits"][strategy]) for system in report["systems"]], dtype=float)


def pooled_rows(reports: dict[str, dict], numerator: str = "loop", denominator: str = "one_shot") -> list[dict]:
    """One row per report (named by its key), then the pooled row: totals, ratio and 95 % interval."""
    rows, tops, bottoms = [], [], []
    for name, report in reports.items():
        top, bottom = per_system_discoveries(report, numerator), per_system_discoveries(report, denominator)
        tops.append(top)
        bottoms.append(bottom)
        rows.append(_row(name, top, bottom))
    rows.append(_row(f"pooled ({sum(len(t) for t in tops)} systems)", np.concatenate(tops), np.concatenate(bottoms)))
    return rows


def _row(name: str, top: np.ndarray, bottom: np.ndarray) -> dict:
    ratio = float(top.sum() / bottom.sum()) if bottom.sum() else float("nan")
    return {"draw": name, "systems": len(top), "numerator": float(top.sum()), "denominator": float(bottom.sum()),
            "ratio": ratio, "ci95": bootstrap_ratio_ci95(top, bottom, BOOTSTRAP_DRAWS, BOOTSTRAP_SEED)}


def load_reports(paths: list[Path]) -> dict[str, dict]:
    """Read campaign reports keyed by a draw name; refuse a file that is not one, or a seed given twice."""
    reports: dict[str, dict] = {}
    seen: dict[int, Path] = {}
    for path in paths:
        try:
            report = json.loads(path.read_text())
            seeds = [int(seed) for seed in report["options"]["seeds"]]
            if not all("hits" in system for system in report["systems"]):
                raise KeyError("hits")
        except FileNotFoundError:
            raise PoolError(f"{path}: no such file") from None
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise PoolError(f"{path}: not a campaign report (fh-screen campaign --json): "
                            f"{type(error).__name__}: {error}") from None
        for seed in seeds:
            if seed in seen:
                raise PoolError(f"{path}: seed {seed} is also in {seen[seed]}; the same systems would count twice")
            seen[seed] = path
        reports[f"seeds {'+'.join(map(str, seeds))} ({path.name})"] = report
    return reports


def main(argv: list[str] | None = None) -> None:
    """Command line: print a Markdown table of the draws and their pool."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", type=Path, nargs="+", help="campaign reports (fh-screen campaign --json)")
    parser.add_argument("--numerator", default="loop", help="strategy on top of the ratio (default loop)")
    parser.add_argument("--denominator", default="one_shot", help="strategy below (default one_shot)")
    args = parser.parse_args(argv)
    try:
        reports = load_reports(args.reports)
    except PoolError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"| draw | {args.numerator} | {args.denominator} | ratio [95 %] |\n|---|---|---|---|")
    for row in pooled_rows(reports, args.numerator, args.denominator):
        low, high = row["ci95"]
        print(f"| {row['draw']} | {row['numerator']:.0f} | {row['denominator']:.0f} | "
              f"{row['ratio']:.3f} [{low:.3f}, {high:.3f}] |")


if __name__ == "__main__":
    main()
