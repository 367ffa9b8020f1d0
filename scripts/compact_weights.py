"""Measure (and with --write, apply) compact storage of the shipped weights.

For each shipped model the script predicts every row of ``val.csv`` with the float32 weights,
with the weights as ``int16-per-column`` stores them (int16 matrices, one float32 scale per input
column: :mod:`fh_screen.models.weight_storage`) and, for comparison, rounded to float16, and
reports the largest, p99 and mean absolute change of the predicted ΔH_f (and of σ, for ensembles)
in meV/atom. With ``--write`` the measurement goes into each model's ``model_card.json``
(``weights_storage``) and ``README.md``, and a model whose largest int16 change is below
``--limit-mev`` (1 meV/atom) is rewritten in int16-per-column storage (the others stay float32).

    python scripts/compact_weights.py --json docs/evaluation/weights_storage.json           # measure (about 5 min on 2 cores)
    python scripts/compact_weights.py --from-json docs/evaluation/weights_storage.json --write   # apply a measurement
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("FH_SCREEN_OQMD_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data" / "oqmd"))  # checkout layout

import numpy as np
import pandas as pd
import torch

from fh_screen.data import shared_data_dir
from fh_screen.io import atomic_write_text, json_text, write_json
from fh_screen.models.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from fh_screen.models.predictor import Predictor, available_models, shipped_model_path
from fh_screen.models.weight_storage import FLOAT32, INT16_PER_COLUMN, compact_state, expand_state


def as_int16(checkpoint: Checkpoint) -> Checkpoint:
    """``checkpoint`` with the float32 values that int16-per-column storage gives back."""
    return replace(checkpoint, member_state_dicts=[expand_state(*compact_state(s)) for s in checkpoint.member_state_dicts])


def as_float16(checkpoint: Checkpoint) -> Checkpoint:
    """``checkpoint`` with every floating tensor rounded to float16 (and run as float32)."""
    members = [{k: (v.half().float() if v.is_floating_point() else v) for k, v in s.items()} for s in checkpoint.member_state_dicts]
    return replace(checkpoint, member_state_dicts=members)


def change(full, other) -> dict:
    """Largest, p99 and mean absolute change of ΔH_f (and σ) between two prediction sets, meV/atom."""
    ok = np.isfinite(full.dhf_ev_per_atom) & np.isfinite(other.dhf_ev_per_atom)
    delta = np.abs(full.dhf_ev_per_atom[ok] - other.dhf_ev_per_atom[ok]) * 1000
    out = {"n_rows": int(ok.sum()), "max_abs_change_mev_per_atom": float(delta.max()),
           "p99_abs_change_mev_per_atom": float(np.percentile(delta, 99)), "mean_abs_change_mev_per_atom": float(delta.mean())}
    if full.dhf_std_ev_per_atom is not None:
        std_delta = np.abs(full.dhf_std_ev_per_atom[ok] - other.dhf_std_ev_per_atom[ok]) * 1000
        out["max_abs_std_change_mev_per_atom"] = float(std_delta.max())
        out["mean_abs_std_change_mev_per_atom"] = float(std_delta.mean())
    return out


def measure(checkpoint: Checkpoint, formulas: list[str]) -> dict:
    """What int16-per-column and float16 storage do to the predictions over ``formulas``."""
    started = time.perf_counter()
    full = Predictor(checkpoint).predict_formulas(formulas)
    result = {INT16_PER_COLUMN: change(full, Predictor(as_int16(checkpoint)).predict_formulas(formulas)),
              "float16": change(full, Predictor(as_float16(checkpoint)).predict_formulas(formulas))}
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def describe(result: dict) -> str:
    """One README line for a measurement."""
    int16, half = result[INT16_PER_COLUMN], result["float16"]
    return (f"over all {int16['n_rows']:,} rows of {result['val_file']} int16-per-column storage moves the predictions by at most "
            f"{int16['max_abs_change_mev_per_atom']:.2f} meV/atom (mean {int16['mean_abs_change_mev_per_atom']:.4f}, p99 "
            f"{int16['p99_abs_change_mev_per_atom']:.3f}); float16 would move them by up to "
            f"{half['max_abs_change_mev_per_atom']:.2f}")


def record(path: Path, checkpoint: Checkpoint, result: dict) -> None:
    """The measurement into the model's card and README; int16-per-column weights when below the limit."""
    card_path = path.parent / "model_card.json"
    card = json.loads(card_path.read_text())
    card["weights_storage"] = result
    readme = path.parent / "README.md"
    text = "\n".join(line for line in readme.read_text().rstrip("\n").splitlines() if not line.startswith("- weights stored as"))
    if result["stored_as"] == INT16_PER_COLUMN:
        save_checkpoint(checkpoint, path, weights_storage=INT16_PER_COLUMN)
        old_id, new_id = checkpoint.identity(), load_checkpoint(path).identity()
        for key in ("identity_sha256", "weights_sha256"):
            if key in card:
                card[f"float32_{key}"] = card.get(f"float32_{key}", card[key])
                card[key] = new_id
        text = text.replace(old_id, new_id)
        text += f"\n- weights stored as int16 per column: {describe(result)} (`python scripts/compact_weights.py`)\n"
    else:
        text += (f"\n- weights stored as float32: {describe(result)}, above the {result['limit_mev_per_atom']:g} meV/atom "
                 f"limit for compact storage (`python scripts/compact_weights.py`)\n")
    atomic_write_text(card_path, json_text(card))
    atomic_write_text(readme, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help="shipped model names (default: all)")
    parser.add_argument("--val", type=Path, default=None, help="val.csv (default: the configured OQMD folder)")
    parser.add_argument("--limit-mev", type=float, default=1.0)
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="write the measurements here")
    parser.add_argument("--from-json", type=Path, default=None, help="use these measurements instead of measuring")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    val = args.val or shared_data_dir() / "val.csv"
    formulas = pd.read_csv(val, keep_default_na=False)["formula"].astype(str).tolist()
    saved = json.loads(args.from_json.read_text()) if args.from_json else {}
    results = {}
    for name in args.models or available_models():
        path = shipped_model_path(name)
        checkpoint = load_checkpoint(path)
        if checkpoint.stored_as != FLOAT32:
            print(f"{name}: already stored as {checkpoint.stored_as}", file=sys.stderr)
            continue
        result = saved.get(name) or measure(checkpoint, formulas)
        result["val_file"] = val.name
        result["limit_mev_per_atom"] = args.limit_mev
        below = result[INT16_PER_COLUMN]["max_abs_change_mev_per_atom"] < args.limit_mev
        result["stored_as"] = INT16_PER_COLUMN if below else FLOAT32
        results[name] = result
        print(name, json.dumps(result), flush=True)
        if args.write:
            record(path, checkpoint, result)
    if args.json:
        write_json(results, args.json)
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
