"""Val metrics of trained attention members, alone and as ensembles, for docs/model-experiments.md.

    python scripts/model_experiments.py runs/attention-ensemble runs/large30 \\
        --ensemble "6 d128=runs/attention-ensemble/state/attention-?.pt" \\
        --ensemble "6 d128 + 7 d256/30=runs/attention-ensemble/state/attention-?.pt,runs/large30/state/*.pt"

Each run folder holds ``state/<preset>-N.pt`` files written by ``scripts/train_default_model.py``
(finished or not: the epoch reached is reported); a single ``.pt`` state file may be given too.
Each member's val predictions (mean and its own σ) are cached beside it (``<state>.val2.npy``)
so ensembles of many members are cheap to compare; every ensemble is reported as a plain mean and
with the shipped inverse-variance weighting (each member weighted by 1/σ² of its own head). Rows are printed as a markdown table.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _member_files(target: Path) -> list[Path]:
    return [target] if target.suffix == ".pt" else sorted((target / "state").glob("*.pt"))


def main() -> None:
    import torch

    from fh_screen.models.train import AttentionData
    from fh_screen.chem.formula import DEFAULT_ELEMENTS, fraction_matrix
    from fh_screen.data import load_oqmd
    from fh_screen.models.attention import set_tensors
    from fh_screen.models.checkpoint import Checkpoint, spec_from_dict
    from fh_screen.models.predictor import Predictor
    from fh_screen.models.metrics import error_metrics

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path, help="run folders or member state files")
    parser.add_argument("--ensemble", action="append", default=[], metavar="LABEL=GLOB[,GLOB]",
                        help="also report the mean of these members (repeatable)")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("FH_SCREEN_OQMD_DIR", ROOT.parent / "shared" / "data" / "oqmd")))
    parser.add_argument("--cache", type=Path, default=ROOT / "runs" / "attention-ensemble" / "train_carve.npz",
                        help="the train carve the members trained on (their target standardisation)")
    args = parser.parse_args()

    val, _ = load_oqmd(args.data / "val.csv", drop_outliers=False)
    y = val["dhf_ev_per_atom"].to_numpy()
    inside = np.abs(y) < 5
    fit_y = AttentionData.load(args.cache).fit_y_ev_per_atom
    mean, std = float(np.mean(fit_y)), float(np.std(fit_y))
    sets: tuple[np.ndarray, np.ndarray] | None = None

    def predictions(path: Path) -> tuple[np.ndarray, dict]:
        """(2, n) array: the member's val mean and its own σ (√2·b of its Laplace head), eV/atom."""
        nonlocal sets
        state = torch.load(path, map_location="cpu", weights_only=True)
        cached = path.with_suffix(".val2.npy")
        if cached.is_file() and cached.stat().st_mtime >= path.stat().st_mtime:
            return np.load(cached), state
        if sets is None:
            sets = set_tensors(fraction_matrix(val["formula"].tolist(), DEFAULT_ELEMENTS).matrix)
        spec = spec_from_dict(state["spec"])
        checkpoint = Checkpoint(name=path.stem, spec=spec, elements=list(DEFAULT_ELEMENTS[: spec.n_elements]),
                                target_mean_ev_per_atom=mean, target_std_ev_per_atom=std, member_state_dicts=[state["ema"]])
        predicted = np.stack(Predictor(checkpoint).model.predict_sets(*sets))
        np.save(cached, predicted)
        return predicted, state

    def row(label: str, n: int, epochs: str, params: str, predicted: np.ndarray) -> str:
        m = error_metrics(y[inside], predicted[inside])
        return (f"| {label} | {n} | {epochs} | {params} | {m['mae_ev_per_atom']:.4f} | {m['p80_ae_ev_per_atom']:.4f} | "
                f"{m['p90_ae_ev_per_atom']:.4f} | {error_metrics(y, predicted)['mae_ev_per_atom']:.4f} |")

    print("| members | n | epochs | params/member | val MAE (abs<5) | p80 | p90 | val MAE all |")
    print("|---|---|---|---|---|---|---|---|")
    for target in args.runs:
        for path in _member_files(target):
            predicted, state = predictions(path)
            predicted = predicted[0]
            params = sum(v.numel() for k, v in state["ema"].items() if k != "element_vectors")
            print(row(f"{path.parent.parent.name if path.parent.name == 'state' else path.parent.name}/{path.stem}",
                      1, str(state["epoch"]), f"{params:,}", predicted))
    for spec in args.ensemble:
        label, _, patterns = spec.partition("=")
        paths = [Path(p) for pattern in patterns.split(",") for p in sorted(glob.glob(pattern))]
        if not paths:
            parser.error(f"--ensemble {label!r}: no state file matches {patterns!r}")
        outputs = np.stack([predictions(p)[0] for p in paths])  # (members, 2, n)
        means, sigmas = outputs[:, 0], outputs[:, 1]
        print(row(f"ensemble: {label}", len(paths), "", "", means.mean(axis=0)))
        weights = sigmas ** -2.0 / (sigmas ** -2.0).sum(axis=0)  # the shipped rule: 1/b² of each member's head
        print(row(f"ensemble: {label}, inverse-variance", len(paths), "", "", (weights * means).sum(axis=0)))


if __name__ == "__main__":
    main()
