"""How much can any recalibration of the first screen win on the campaign testbed?

The campaign's loop (``fh_screen.study.campaign``) learns a logistic recalibration of the screen's
ranking from its own calculations. This script asks what the best *static* recalibration could
do if it had every label: for each seed of a campaign, it fits a classifier on the first screens
of the other seeds' systems with full oracle labels (is this new candidate a discovery?) and
re-ranks the held-out seed's first screens with it; the top ``budget`` candidates per system are
the recalibrated one-shot list. Models: the loop's own logistic features (element counts, size,
charge balance, temperature) and a gradient-boosted tree on everything the screen table holds.

This uses oracle labels of other systems, which the loop never sees and nothing shipped may
train on (val.csv): it is an analysis of the testbed, not a method. Run it on the tuning seeds.

    python scripts/campaign_ceiling.py --seed 7 --seed 2 --seed 3 --seed 4 \
        --json docs/campaign/ceiling.json      # about 2 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
from pymatgen.core import Composition
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

from fh_screen.data import load_set, shared_data_dir
from fh_screen.models.predictor import Predictor
from fh_screen.screening import ScreenOptions, screen
from fh_screen.study.campaign import campaign_systems

LOGGER = logging.getLogger("campaign_ceiling")

TREE_FEATURES = ["log_odds", "e_above_hull_pred_ev_per_atom", "dhf_pred_ev_per_atom", "dhf_std_ev_per_atom",
                 "n_elements", "system_elements", "log_atoms", "charge_balanced", "rank_in_system"]


def first_screens(seed: int, n_systems: int, top: int, predictor: Predictor, known, oracle) -> pd.DataFrame:
    """The first screen's new candidates of every system of one seed, in the screen's order, labelled."""
    frames = []
    for index, system in enumerate(campaign_systems(known, oracle, n_systems, seed)):
        table = screen(system.chemsys, predictor=predictor, known=system.known, options=ScreenOptions()).table
        new = table[~table["is_known"].to_numpy(bool)].copy()
        new = new.sort_values(["p_stable", "stability_score"], ascending=[False, False], kind="stable").head(top)
        compositions = [Composition(f) for f in new["formula"]]
        reduced = [c.reduced_formula for c in compositions]
        new["system"] = f"{seed}:{index}"
        new["seed"] = seed
        new["target"] = [r in system.targets for r in reduced]
        new["n_elements"] = [len(c) for c in compositions]
        new["system_elements"] = len(system.chemsys)
        new["log_atoms"] = [np.log(c.reduced_composition.num_atoms) for c in compositions]
        new["rank_in_system"] = np.arange(len(new))
        new["n_targets"] = len(system.targets)
        frames.append(new)
    frame = pd.concat(frames, ignore_index=True)
    p = frame["p_stable"].clip(1e-6, 1 - 1e-6)
    frame["log_odds"] = np.log(p / (1 - p))
    frame["charge_balanced"] = frame["charge_balanced"].astype(float)
    frame["e_above_hull_pred_ev_per_atom"] = frame["e_above_hull_pred_ev_per_atom"].clip(-0.5, 0.5)
    return frame


def logistic_features(frame: pd.DataFrame) -> np.ndarray:
    """The loop's static features: element count against the system's, size, charge balance, log-odds."""
    pairs = [(a, b) for a in (2, 3, 4) for b in range(2, a + 1)]
    columns = [((frame["system_elements"] == a) & (frame["n_elements"] == b)).astype(float) for a, b in pairs]
    columns += [frame["log_atoms"], frame["charge_balanced"], frame["log_odds"]]
    return np.column_stack(columns)


def top_discoveries(frame: pd.DataFrame, score: np.ndarray, budget: int) -> int:
    """Discoveries of the top ``budget`` candidates per system by ``score`` (ties: the screen's order)."""
    ranked = frame.assign(score=score).sort_values(["system", "score", "rank_in_system"], ascending=[True, False, True])
    return int(ranked.groupby("system").head(budget)["target"].sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, action="append", required=True, help="campaign seeds (at least two)")
    parser.add_argument("--systems", type=int, default=100)
    parser.add_argument("--budget", type=int, default=10)
    parser.add_argument("--top", type=int, default=60, help="candidates per system kept for fitting and re-ranking")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if len(args.seed) < 2:
        parser.error("--seed: give at least two seeds (one is held out while the others train)")

    started = time.time()
    folder = shared_data_dir()
    known, oracle = load_set(folder / "train.csv"), load_set(folder / "val.csv")
    predictor = Predictor.from_name(None)
    frames = {}
    for seed in args.seed:
        frames[seed] = first_screens(seed, args.systems, args.top, predictor, known, oracle)
        LOGGER.info("seed %d: %d candidates", seed, len(frames[seed]))

    rows = []
    for seed in args.seed:
        test = frames[seed]
        train = pd.concat([frames[s] for s in args.seed if s != seed], ignore_index=True)
        logistic = LogisticRegression(C=1.0, max_iter=5000).fit(logistic_features(train), train["target"])
        tree = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, max_leaf_nodes=15,
                                              min_samples_leaf=40, random_state=0)
        tree.fit(train[TREE_FEATURES], train["target"])
        rows.append({
            "seed": seed,
            "targets": int(test.groupby("system")["n_targets"].first().sum()),
            "one_shot": top_discoveries(test, test["log_odds"].to_numpy(), args.budget),
            "logistic_recalibrated": top_discoveries(test, logistic.predict_proba(logistic_features(test))[:, 1],
                                                     args.budget),
            "tree_recalibrated": top_discoveries(test, tree.predict_proba(test[TREE_FEATURES])[:, 1], args.budget),
        })
        LOGGER.info("%s", rows[-1])
    pooled = {key: int(sum(r[key] for r in rows)) for key in ("one_shot", "logistic_recalibrated", "tree_recalibrated")}
    report = {
        "command": "python scripts/campaign_ceiling.py " + " ".join(f"--seed {s}" for s in args.seed)
        + f" --systems {args.systems} --budget {args.budget} --top {args.top} --json {args.json}",
        "model": f"{predictor.name}@{predictor.version}",
        "per_seed": rows,
        "pooled": pooled,
        "ratios_to_one_shot": {k: round(v / pooled["one_shot"], 3) for k, v in pooled.items()},
        "seconds": round(time.time() - started, 1),
        "machine": f"{platform.machine()}, {platform.system()}, python {platform.python_version()}",
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    LOGGER.info("pooled %s ratios %s", pooled, report["ratios_to_one_shot"])


if __name__ == "__main__":
    main()
