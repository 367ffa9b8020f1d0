"""Val metrics of trained attention runs (members alone, and their ensemble) for docs/model-experiments.md.

    python scripts/model_experiments.py runs/attention-ensemble runs/exp-large runs/exp-nomat ...

Each run folder holds ``state/member-N.pt`` files written by ``scripts/train_default_model.py``
(finished or not: the epoch reached is reported). Rows are printed as a markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    import torch

    from fh_screen.composition import DEFAULT_ELEMENTS, fraction_matrix
    from fh_screen.data import load_oqmd
    from fh_screen.network.attention import set_tensors
    from fh_screen.network.checkpoint import Checkpoint, spec_from_dict
    from fh_screen.predictor import Predictor
    from fh_screen.training import error_metrics

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("FH_SCREEN_OQMD_DIR", ROOT.parent / "shared" / "data" / "oqmd")))
    args = parser.parse_args()
    val, _ = load_oqmd(args.data / "val.csv", drop_outliers=False)
    y = val["dhf_ev_per_atom"].to_numpy()
    inside = np.abs(y) < 5
    indices, fractions = set_tensors(fraction_matrix(val["formula"].tolist(), DEFAULT_ELEMENTS).matrix)
    train, _ = load_oqmd(args.data / "train.csv")
    mean, std = float(train["dhf_ev_per_atom"].mean()), float(train["dhf_ev_per_atom"].std(ddof=0))
    print("| run | members | epochs | params/member | val MAE (abs<5) | p90 | val MAE all | predictions/s (1 member, this machine) |")
    print("|---|---|---|---|---|---|---|---|")
    for run in args.runs:
        paths = sorted((run / "state").glob("*.pt"))
        states = [torch.load(p, map_location="cpu", weights_only=True) for p in paths]
        spec = None
        outputs = []
        for number, state in enumerate(states):
            spec = spec_from_dict(state["spec"])
            checkpoint = Checkpoint(name=run.name, spec=spec, elements=list(DEFAULT_ELEMENTS[: spec.n_elements]),
                                    target_mean_ev_per_atom=mean, target_std_ev_per_atom=std, member_state_dicts=[state["ema"]])
            predictor = Predictor(checkpoint)
            tick = time.perf_counter()
            predicted, _ = predictor.predict_sets(indices, fractions)
            rate = len(y) / (time.perf_counter() - tick)
            outputs.append(predicted)
            params = sum(v.numel() for k, v in state["ema"].items() if k != "element_vectors")
            m = error_metrics(y[inside], predicted[inside])
            print(f"| {run.name} {paths[number].stem} | 1 | {state['epoch']} | {params:,} | {m['mae_ev_per_atom']:.4f} | {m['p90_ae_ev_per_atom']:.4f} | "
                  f"{error_metrics(y, predicted)['mae_ev_per_atom']:.4f} | {rate:,.0f} |")
        if len(outputs) > 1:
            predicted = np.mean(outputs, axis=0)
            m = error_metrics(y[inside], predicted[inside])
            print(f"| {run.name} ensemble | {len(outputs)} | | | {m['mae_ev_per_atom']:.4f} | {m['p90_ae_ev_per_atom']:.4f} | "
                  f"{error_metrics(y, predicted)['mae_ev_per_atom']:.4f} | |")
        np.save(f"/tmp/val_pred_{run.name}.npy", np.array(outputs))


if __name__ == "__main__":
    main()
