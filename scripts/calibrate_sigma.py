"""Recalibrate the σ of an already trained fully connected ensemble, without retraining it.

Rebuilds the model's early-stopping split (the seeded 5 % carve of train.csv recorded in its card),
checks that it is the same split (row count and early-stopping MAE as in the card), fits the σ
scale there (never on val.csv), measures the coverage of ±1.645σ on val.csv and writes model.pt,
model_card.json and README.md with the new scale and a bumped version. Tensors and spec stay as
they are; the identity changes only through its σ-scale field.

Run from the repository root with the shared data beside the checkout:

    python scripts/calibrate_sigma.py --model paper-ensemble [--data DIR] [--install]

Without --install the files go to runs/<name>/; with it, to fh_screen/pretrained/<name>/.
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import math
import os
import sys
from pathlib import Path

os.environ.setdefault("FH_SCREEN_OQMD_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data" / "oqmd"))  # checkout layout: scripts may assume it, the package does not

ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = ROOT / "fh_screen" / "pretrained"
#: Relative tolerance on the early-stopping MAE when checking that the rebuilt split is the card's.
MAE_RELATIVE_TOLERANCE = 1e-5


class CalibrationError(Exception):
    """Why the model cannot be recalibrated; printed as one line."""


def _bump(version: str) -> str:
    try:
        return str(int(version) + 1)
    except ValueError:
        raise CalibrationError(f"model version {version!r} is not a whole number: cannot bump it") from None


def recalibrate(model: str, data_dir: Path, output_dir: Path, command: str) -> dict:
    """Refit the σ scale of ``model`` on its early-stopping split and write it to ``output_dir``.

    Returns a summary (scale and coverage before/after on the split and on val, paths).
    """
    from fh_screen.models.calibration import interval_coverage
    from fh_screen.chem.formula import fraction_matrix
    from fh_screen.data import file_sha256, load_oqmd, split_frame
    from fh_screen.models.attention import AttentionSpec
    from fh_screen.models.checkpoint import load_checkpoint, save_checkpoint
    from fh_screen.models.predictor import Predictor, shipped_model_path
    from fh_screen.models.train import calibrate_on_early_stopping_split, val_metrics, write_card_files

    source = Path(model) if Path(model).suffix == ".pt" else shipped_model_path(model)
    card_path = source.parent / "model_card.json"
    if not card_path.is_file():
        raise CalibrationError(f"no model card beside {source}: cannot know its split")
    card = json.loads(card_path.read_text())
    checkpoint = load_checkpoint(source)
    if isinstance(checkpoint.spec, AttentionSpec) or len(checkpoint.member_state_dicts) < 2:
        raise CalibrationError(f"{checkpoint.name} is not a fully connected ensemble (single network or attention model): nothing to recalibrate")
    recorded = card.get("metrics", {}).get("early_stopping_split")
    if not recorded or "split_seed" not in card.get("data", {}):
        raise CalibrationError(f"the card of {checkpoint.name} records no early-stopping split")
    previous_version, previous_identity, previous_scale = checkpoint.version, checkpoint.identity(), checkpoint.sigma_scale
    previous_tensors = _tensor_identity(checkpoint)

    frame, _ = load_oqmd(data_dir / "train.csv")
    _, stop = split_frame(frame, (0.95, 0.05), seed=int(card["data"]["split_seed"]))
    x_stop = fraction_matrix(stop["formula"].tolist(), checkpoint.elements).matrix
    y_stop = stop["dhf_ev_per_atom"].to_numpy()
    fitted = copy.deepcopy(checkpoint)
    split = calibrate_on_early_stopping_split(fitted, x_stop, y_stop)
    mae, mae_card = split["early_stopping_split"]["mae_ev_per_atom"], recorded["mae_ev_per_atom"]
    if len(stop) != recorded["n"] or not math.isclose(mae, mae_card, rel_tol=MAE_RELATIVE_TOLERANCE):
        raise CalibrationError(f"rebuilt early-stopping split differs from the card's (n {len(stop)} vs {recorded['n']}, "
                               f"MAE {mae:.6f} vs {mae_card:.6f} eV/atom): is {data_dir / 'train.csv'} the training file?")
    scale = split["sigma_scale"]
    mean_before, sigma_before = Predictor(checkpoint).predict_matrix(x_stop)
    summary = {"model": checkpoint.name, "sigma_scale_before": previous_scale, "sigma_scale": scale,
               "split_n": len(stop), "split_coverage_before": interval_coverage(mean_before - y_stop, sigma_before),
               "split_coverage_raw": split["early_stopping_coverage_1.645_sigma_raw"],
               "split_coverage_after": split["early_stopping_coverage_1.645_sigma"]}
    if scale == previous_scale:
        return summary | {"unchanged": True}

    val_path = data_dir / "val.csv"
    val_sha = file_sha256(val_path)
    if card["data"].get("val_sha256") not in (None, val_sha):
        raise CalibrationError(f"{val_path} is not the val file of the card (sha256 {val_sha[:12]}…, card {card['data']['val_sha256'][:12]}…)")
    val_all, _ = load_oqmd(val_path, drop_outliers=False)
    val_after = val_metrics(fitted, val_all)
    val_mae, val_mae_card = val_after["val_abs_dhf_lt_5"]["mae_ev_per_atom"], card["metrics"]["val_abs_dhf_lt_5"]["mae_ev_per_atom"]
    if not math.isclose(val_mae, val_mae_card, rel_tol=MAE_RELATIVE_TOLERANCE):
        raise CalibrationError(f"val MAE {val_mae:.6f} differs from the card's {val_mae_card:.6f} eV/atom: not the model the card describes")
    val_before = val_metrics(checkpoint, val_all)["val_coverage_1.645_sigma"]

    metrics = dict(checkpoint.metadata["metrics"])
    metrics.update(split)
    metrics["early_stopping_split"] = recorded  # the card's figures; the rebuilt split matched them
    metrics["val_coverage_1.645_sigma"] = val_after["val_coverage_1.645_sigma"]
    fitted.version = _bump(previous_version)
    fitted.metadata = {
        "sigma_scale": scale,
        **{k: v for k, v in checkpoint.metadata.items() if k != "sigma_scale"},
        "metrics": metrics,
        "recalibration": {
            "command": command,
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "note": "σ recalibrated after training on the early-stopping split; weights and spec unchanged",
            "previous_version": previous_version,
            "previous_identity_sha256": previous_identity,
            "previous_sigma_scale": previous_scale,
            "val_coverage_1.645_sigma_before": val_before,
        },
    }
    if _tensor_identity(fitted) != previous_tensors:
        raise CalibrationError("internal error: the recalibrated checkpoint's tensors or spec differ from the trained ones")
    output_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(fitted, output_dir / "model.pt")
    reloaded = load_checkpoint(output_dir / "model.pt")
    if reloaded.identity() != fitted.identity():
        raise CalibrationError(f"written checkpoint {output_dir / 'model.pt'} does not read back identically")
    write_card_files(fitted, output_dir, card.get("history", []))
    return summary | {"val_coverage_before": val_before, "val_coverage_after": val_after["val_coverage_1.645_sigma"],
                      "version": f"{previous_version} -> {fitted.version}", "identity_before": previous_identity,
                      "identity_after": fitted.identity(), "output": str(output_dir)}


def _tensor_identity(checkpoint) -> str:
    """The identity with the σ scale at 1: spec, elements, normalisation and tensors only."""
    probe = copy.copy(checkpoint)
    probe.metadata = {}
    return probe.identity()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="shipped model name (or a model.pt with its model_card.json beside it)")
    parser.add_argument("--data", type=Path, default=None, help="folder of train.csv and val.csv (default: FH_SCREEN_OQMD_DIR)")
    parser.add_argument("--install", action="store_true", help="write into fh_screen/pretrained/<name>/ instead of runs/<name>/")
    args = parser.parse_args(argv)
    from fh_screen.data import shared_data_dir
    from fh_screen.errors import FhScreenError

    argv = sys.argv[1:] if argv is None else argv
    command = " ".join(["python scripts/calibrate_sigma.py", *argv])
    name = Path(args.model).parent.name if args.model.endswith(".pt") else args.model
    output = (MODELS_DIR if args.install else ROOT / "runs") / name
    try:
        summary = recalibrate(args.model, shared_data_dir(args.data), output, command)
    except (CalibrationError, FhScreenError, OSError) as exc:
        print(f"calibrate_sigma: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    if summary.get("unchanged"):
        print(f"{name}: σ scale already {summary['sigma_scale']:.4f} (fitted on its early-stopping split): nothing to write")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
