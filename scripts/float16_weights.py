"""Measure (and with --write, apply) float16 storage of the shipped weights.

For each shipped model the script predicts every row of ``val.csv`` twice, with the float32
weights and with the same weights rounded to float16 (and read back as float32, as
:func:`fh_screen.models.checkpoint.load_checkpoint` does), and reports the largest and the mean
absolute change of the predicted ΔH_f (and of σ, for ensembles) in meV/atom. With ``--write`` the
measurement goes into each model's ``model_card.json`` (``weights_storage``) and ``README.md``,
and a model whose largest change is below ``--limit-mev`` (1 meV/atom) is rewritten with float16
tensors (the others stay float32).

    python scripts/float16_weights.py --json docs/evaluation/float16_weights.json   # measure (about 20 min on 2 cores)
    python scripts/float16_weights.py --from-json docs/evaluation/float16_weights.json --write   # apply a measurement
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


def rounded(checkpoint: Checkpoint, dtype: torch.dtype = torch.float16) -> Checkpoint:
    """``checkpoint`` with every floating tensor stored as ``dtype``."""
    members = [{k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()} for state in checkpoint.member_state_dicts]
    return replace(checkpoint, member_state_dicts=members, metadata={**checkpoint.metadata, "weights_dtype": str(dtype).removeprefix("torch.")})


def upcast(checkpoint: Checkpoint) -> Checkpoint:
    """What load_checkpoint makes of a float16 file: the same values as float32 tensors."""
    members = [{k: (v.float() if v.is_floating_point() else v) for k, v in state.items()} for state in checkpoint.member_state_dicts]
    return replace(checkpoint, member_state_dicts=members)


def measure(checkpoint: Checkpoint, formulas: list[str]) -> dict:
    """Largest and mean absolute change of ΔH_f (and σ) over ``formulas``, in meV/atom."""
    started = time.perf_counter()
    full = Predictor(checkpoint).predict_formulas(formulas)
    half = Predictor(upcast(rounded(checkpoint))).predict_formulas(formulas)
    ok = np.isfinite(full.dhf_ev_per_atom) & np.isfinite(half.dhf_ev_per_atom)
    change = np.abs(full.dhf_ev_per_atom[ok] - half.dhf_ev_per_atom[ok]) * 1000
    out = {
        "n_rows": int(ok.sum()),
        "max_abs_change_mev_per_atom": float(change.max()),
        "mean_abs_change_mev_per_atom": float(change.mean()),
        "p99_abs_change_mev_per_atom": float(np.percentile(change, 99)),
    }
    if full.dhf_std_ev_per_atom is not None:
        std_change = np.abs(full.dhf_std_ev_per_atom[ok] - half.dhf_std_ev_per_atom[ok]) * 1000
        out["max_abs_std_change_mev_per_atom"] = float(std_change.max())
        out["mean_abs_std_change_mev_per_atom"] = float(std_change.mean())
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def record(name: str, path: Path, checkpoint: Checkpoint, result: dict) -> None:
    """The measurement into the model's card and README; float16 weights when it is below the limit."""
    card_path = path.parent / "model_card.json"
    card = json.loads(card_path.read_text())
    card["weights_storage"] = result
    readme = path.parent / "README.md"
    text = "\n".join(line for line in readme.read_text().rstrip("\n").splitlines() if "float16" not in line)
    change = (f"over all {result['n_rows']:,} rows of {result['val_file']} float16 weights move the predictions by at most "
              f"{result['max_abs_change_mev_per_atom']:.2f} meV/atom (mean {result['mean_abs_change_mev_per_atom']:.3f}, "
              f"p99 {result['p99_abs_change_mev_per_atom']:.2f})")
    if result["stored_as"] == "float16":
        save_checkpoint(rounded(checkpoint), path)
        old_ids = {card.get(key) for key in ("identity_sha256", "weights_sha256")} | {checkpoint.identity()}
        new_id = load_checkpoint(path).identity()
        for key in ("identity_sha256", "weights_sha256"):
            if key in card:
                card[f"float32_{key}"] = card[key]
                card[key] = new_id
        for old in old_ids - {None}:
            text = text.replace(old, new_id)
        text += f"\n- weights stored as float16: {change} (`python scripts/float16_weights.py`)\n"
    else:
        text += (f"\n- weights stored as float32: {change}, above the {result['limit_mev_per_atom']:g} meV/atom "
                 f"limit for float16 storage (`python scripts/float16_weights.py`)\n")
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
        if checkpoint.metadata.get("weights_dtype") == "float16":
            print(f"{name}: already float16", file=sys.stderr)
            continue
        result = saved.get(name) or measure(checkpoint, formulas)
        result["val_file"] = val.name
        result["limit_mev_per_atom"] = args.limit_mev
        result["stored_as"] = "float16" if result["max_abs_change_mev_per_atom"] < args.limit_mev else "float32"
        results[name] = result
        print(name, json.dumps(result), flush=True)
        if args.write:
            record(name, path, checkpoint, result)
    if args.json:
        write_json(results, args.json)
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
