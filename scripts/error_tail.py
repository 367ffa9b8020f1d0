"""Where a model's large val errors are, and whether a per-system bias correction removes them.

    python scripts/error_tail.py [--model attention-ensemble] [--cache runs/attention-ensemble/train_carve.npz]

Prints (1) the share of val errors above 0.055 eV/atom and the p90 by number of elements and
by ΔH_f range, and (2) val MAE/p90 after adding ``alpha`` × the model's mean residual on the
training compounds of the same element set (alpha fitted on the train holdout, where that mean
is out of sample for the holdout rows). Numbers quoted in docs/model-experiments.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

THRESHOLD_EV_PER_ATOM = 0.055


def _system_keys(indices: np.ndarray) -> np.ndarray:
    ordered = np.sort(indices, axis=1)
    return np.array(["-".join(map(str, row[row > 0].tolist())) for row in ordered])


def main() -> None:
    from fh_screen.models.train import AttentionData
    from fh_screen.chem.formula import fraction_matrix
    from fh_screen.data import load_oqmd
    from fh_screen.models.attention import set_tensors
    from fh_screen.models.predictor import Predictor

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="attention-ensemble")
    parser.add_argument("--cache", type=Path, default=ROOT / "runs" / "attention-ensemble" / "train_carve.npz",
                        help="the train carve (fit + holdout set tensors) the model trained on")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("FH_SCREEN_OQMD_DIR", ROOT.parent / "shared" / "data" / "oqmd")))
    args = parser.parse_args()

    predictor = Predictor.from_name(args.model, threads=2)
    val, _ = load_oqmd(args.data / "val.csv", drop_outliers=False)
    val = val[np.abs(val["dhf_ev_per_atom"]) < 5].reset_index(drop=True)
    val_indices, val_fractions = set_tensors(fraction_matrix(val["formula"].tolist(), predictor.elements).matrix)
    y_val = val["dhf_ev_per_atom"].to_numpy()
    pred_val = predictor.model.predict_sets(val_indices, val_fractions)[0]
    error = np.abs(pred_val - y_val)
    frame = pd.DataFrame({"error": error, "n_elements": (val_fractions > 0).sum(axis=1),
                          "dhf_range": pd.cut(y_val, [-5, -3, -2, -1, -0.5, -0.2, 0, 0.2, 0.5, 1, 5])})
    summary = lambda x: pd.Series({"n": len(x), "share": len(x) / len(frame), "MAE": x.mean(),  # noqa: E731
                                   "p90": np.percentile(x, 90), f"> {THRESHOLD_EV_PER_ATOM}": (x > THRESHOLD_EV_PER_ATOM).mean()})
    print(f"{args.model}: val MAE {error.mean():.4f}, p90 {np.percentile(error, 90):.4f} eV/atom (abs(ΔH_f) < 5)\n")
    for column in ("n_elements", "dhf_range"):
        print(frame.groupby(column, observed=True)["error"].apply(summary).unstack().round(4).to_string(), "\n")

    data = AttentionData.load(args.cache)
    residual_fit = predictor.model.predict_sets(data.fit_indices, data.fit_fractions)[0] - data.fit_y_ev_per_atom
    bias = pd.Series(residual_fit).groupby(_system_keys(data.fit_indices)).agg(["mean", "count"])

    def corrected(indices: np.ndarray, predicted: np.ndarray, alpha: float) -> np.ndarray:
        looked_up = bias.reindex(_system_keys(indices))
        usable = (looked_up["count"].fillna(0).to_numpy() >= 3)
        return predicted - alpha * np.where(usable, looked_up["mean"].fillna(0).to_numpy(), 0.0)

    pred_hold = predictor.model.predict_sets(data.holdout_indices, data.holdout_fractions)[0]
    alphas = (0.0, 0.25, 0.5, 1.0, 1.5)
    hold_mae = {a: np.abs(corrected(data.holdout_indices, pred_hold, a) - data.holdout_y_ev_per_atom).mean() for a in alphas}
    best = min(hold_mae, key=hold_mae.get)
    print("per-system bias correction (mean train residual of the same element set, >= 3 compounds):")
    for a in alphas:
        e = np.abs(corrected(val_indices, pred_val, a) - y_val)
        print(f"  alpha {a:4.2f}: holdout MAE {hold_mae[a]:.4f}; val MAE {e.mean():.4f}, p90 {np.percentile(e, 90):.4f}" + ("  <- fitted on holdout" if a == best else ""))


if __name__ == "__main__":
    main()
