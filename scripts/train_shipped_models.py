"""Train the shipped models: `paper-ensemble` (5 × Table-1 network) and `paper` (its first member).

Run from the repository root with the shared data beside the checkout:

    python scripts/train_shipped_models.py [--members 5] [--max-minutes 12]

Writes fh_screen/pretrained/{paper,paper-ensemble}/ (model.pt, model_card.json, README.md).
"""

from __future__ import annotations

import argparse
import copy
import logging
from pathlib import Path
import os

os.environ.setdefault("FH_SCREEN_OQMD_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data" / "oqmd"))  # checkout layout: scripts may assume it, the package does not

from fh_screen.data import shared_data_dir
from fh_screen.models.fit import TrainConfig
from fh_screen.models.metrics import error_metrics
from fh_screen.models.train import TrainingRun, train_model, write_model_card

MODELS_DIR = Path(__file__).resolve().parents[1] / "fh_screen" / "pretrained"


def _single_member(run: TrainingRun, val_path: Path) -> TrainingRun:
    """The ensemble's first member as a model of its own, re-evaluated alone."""
    import numpy as np

    from fh_screen.chem.formula import fraction_matrix
    from fh_screen.data import load_oqmd
    from fh_screen.models.predictor import Predictor

    checkpoint = copy.deepcopy(run.checkpoint)
    checkpoint.name = "paper"
    checkpoint.member_state_dicts = checkpoint.member_state_dicts[:1]
    val, _ = load_oqmd(val_path, drop_outliers=False)
    y = val["dhf_ev_per_atom"].to_numpy()
    predicted = Predictor(checkpoint).predict_matrix(fraction_matrix(val["formula"].tolist()).matrix)[0]
    metrics = dict(run.metrics)
    metrics["val_all_rows"] = error_metrics(y, predicted)
    metrics["val_abs_dhf_lt_5"] = error_metrics(y[np.abs(y) < 5], predicted[np.abs(y) < 5])
    inside = val["passed_outlier_filter"].to_numpy()
    metrics["val_outlier_filtered"] = error_metrics(y[inside], predicted[inside])
    metrics.pop("early_stopping_split", None)
    for key in [k for k in metrics if "coverage" in k or k == "sigma_scale"]:  # one network has no σ
        metrics.pop(key)
    metrics["members_best_epoch"] = metrics["members_best_epoch"][:1]
    metrics["members_stopped"] = metrics["members_stopped"][:1]
    checkpoint.metadata = {**{k: v for k, v in checkpoint.metadata.items() if k != "sigma_scale"}, "metrics": metrics,
                           "training": {**checkpoint.metadata["training"], "n_members": 1,
                                        "note": "member 0 (seed 0) of the paper-ensemble run"}}
    return TrainingRun(checkpoint=checkpoint, members=run.members[:1], metrics=metrics)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--max-minutes", type=float, default=None, help="wall-clock cap per member (experiments only: a capped run is not reproducible, shipped models never use it)")
    parser.add_argument("--epochs", type=int, default=400)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    data = shared_data_dir()
    config = TrainConfig(epochs=args.epochs, max_minutes=args.max_minutes)

    def on_epoch(member, record):
        if record.epoch % 10 == 0:
            logging.info("member %d epoch %d train %.4f val %.4f lr %.1e %.1fs", member, record.epoch,
                         record.train_mae_ev_per_atom, record.val_mae_ev_per_atom, record.learning_rate, record.seconds)

    run = train_model(data / "train.csv", data / "val.csv", preset="paper", config=config,
                      n_members=args.members, name="paper-ensemble", on_epoch=on_epoch)
    write_model_card(run, MODELS_DIR / "paper-ensemble")
    write_model_card(_single_member(run, data / "val.csv"), MODELS_DIR / "paper")
    for name in ("paper", "paper-ensemble"):
        logging.info("%s: %s", name, (MODELS_DIR / name / "README.md").read_text().split("## Provenance")[0][-600:])


if __name__ == "__main__":
    main()
