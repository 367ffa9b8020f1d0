"""Build a recalibration prior for the campaign loop from a rehearsal campaign on train.csv alone.

A *rehearsal* campaign on train.csv alone: the seeded 5 % carve of train.csv that the shipped
models never fitted (split seed 0, :func:`fh_screen.study.claims.carve_split`) plays DFT, the rest
of train.csv is known, and P(stable) counts analogues among the known part only. The weights the
loop's logistic recalibration learned by the end of that campaign are what a campaign with
``CampaignOptions(learned_prior_path=OUT)`` starts from and is shrunk toward. val.csv plays no
part. (Measured in docs/campaign.md: on the tuning seeds neither these weights nor their
feedback features alone found more than starting from zero, so the default stays zero.)

    python scripts/build_campaign_prior.py --systems 200 --seed 100 --seed 101 --output prior.json

``--data-dir`` (default ``$FH_SCREEN_OQMD_DIR`` or ``../shared/data/oqmd``) holds train.csv.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from fh_screen.data import file_sha256, make_set, shared_data_dir
from fh_screen.models.predictor import Predictor
from fh_screen.screening.analogues import AnalogueIndex
from fh_screen.study.campaign import CampaignOptions, run_campaign
from fh_screen.study.campaign_learning import FEATURE_NAMES
from fh_screen.study.claims import carve_split

logger = logging.getLogger("build_campaign_prior")


def build_prior(data_dir: Path | None, n_systems: int, seeds: tuple[int, ...], model: str | None,
                learned_l2: float) -> dict:
    """Run the rehearsal campaign and return the prior document (weights, data, figures)."""
    data = shared_data_dir(data_dir)
    fit, carve = carve_split(data / "train.csv")
    fit_formulas = fit["formula"].astype(str).tolist()
    known = make_set(fit_formulas, fit["dhf_ev_per_atom"].to_numpy(np.float64))
    oracle = make_set(carve["formula"].astype(str).tolist(), carve["dhf_ev_per_atom"].to_numpy(np.float64))
    analogues = AnalogueIndex.from_formulas(fit_formulas)
    predictor = Predictor.from_name(model)
    options = CampaignOptions(n_systems=n_systems, seeds=seeds, learned_l2=learned_l2)
    started = time.perf_counter()
    report = run_campaign(known, oracle, predictor, options, analogues=analogues,
                          progress=lambda done, total: logger.info("rehearsal %d/%d, %.0f s", done, total,
                                                                   time.perf_counter() - started)
                          if done % 100 == 0 else None)
    examples = sum(len(system["picks"]["loop"]) for system in report["systems"])
    return {
        "name": "campaign-prior",
        "description": "weights of the campaign loop's logistic recalibration (fh_screen.study.campaign_learning) "
                       "learned by a rehearsal campaign on train.csv alone",
        "feature_names": list(FEATURE_NAMES),
        "weights": report["recalibration"],
        "data": {
            "train_file": "train.csv",
            "train_sha256": file_sha256(data / "train.csv"),
            "protocol": "rehearsal: the seeded 5 % carve of train.csv (split seed 0, the shipped models' holdout) "
                        "plays DFT, the rest of train.csv is known and is the analogue index; val.csv unused",
            "n_known": len(fit), "n_oracle": len(carve),
        },
        "model": report["model"],
        "options": report["options"],
        "rehearsal": {
            "n_systems": report["n_systems"], "n_targets": report["n_targets"], "n_calculations": examples,
            "loop_discoveries": report["loop_discoveries"], "one_shot_discoveries": report["one_shot_discoveries"],
            "picks_with_energy_share": report["picks_with_energy_share"],
            "seconds": round(time.perf_counter() - started, 1),
        },
        "command": "python scripts/build_campaign_prior.py " + " ".join(sys.argv[1:]),
    }


def main(argv: list[str] | None = None) -> None:
    """Command line: run the rehearsal and write the prior."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--systems", type=int, default=200, help="systems per seed")
    parser.add_argument("--seed", type=int, action="append", help="seed of the system draw (repeat to pool)")
    parser.add_argument("--model", default=None, help="shipped model name (default model)")
    parser.add_argument("--learned-l2", type=float, default=CampaignOptions().learned_l2)
    parser.add_argument("--output", type=Path, required=True, help="where to write the prior JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    output = args.output
    document = build_prior(args.data_dir, args.systems, tuple(args.seed or (100,)), args.model, args.learned_l2)
    output.write_text(json.dumps(document, indent=1) + "\n")
    logger.info("wrote %s: %s", output, document["rehearsal"])


if __name__ == "__main__":
    main()
