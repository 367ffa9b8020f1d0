"""Train the default model (`attention-ensemble`) from `train.csv`: one documented, resumable command.

    python scripts/train_default_model.py                     # all members, then assemble + install
    python scripts/train_default_model.py --device cuda       # the same on a GPU
    python scripts/train_default_model.py --member-ids 2 --no-assemble   # one member (parallel runs)

Each member's full training state is saved after every epoch under ``<output>/state/``; running
the same command again after an interruption resumes where it stopped. The holdout that
calibrates σ is a seeded 5% carve of train.csv; val.csv is read only for the reported metrics.
The data directory comes from ``--data`` or ``$FH_SCREEN_OQMD_DIR`` (default ../shared/data/oqmd
beside the checkout).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fh_screen.models.train import DEFAULT_RECIPE, run_attention_training  # noqa: E402
from fh_screen.models.fit import AttentionTrainConfig, add_config_arguments, config_from_args  # noqa: E402

#: Training settings given as flags (``--batch-size``, ...), with the config's defaults and help.
CONFIG_FLAGS = ("epochs", "batch_size", "learning_rate", "weight_decay", "seed", "threads")


def _device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("FH_SCREEN_OQMD_DIR", ROOT.parent / "shared" / "data" / "oqmd")))
    parser.add_argument("--output", type=Path, default=ROOT / "runs" / "attention-ensemble")
    parser.add_argument("--name", default="attention-ensemble")
    parser.add_argument("--recipe", default=DEFAULT_RECIPE, help="ensemble members by preset, e.g. attention*6 or attention*4+attention-large*1")
    parser.add_argument("--element-features", choices=["mat2vec", "none"], default=None)
    parser.add_argument("--member-ids", default=None, help="comma-separated positions in the recipe to train in this process (default: all)")
    add_config_arguments(parser, AttentionTrainConfig, CONFIG_FLAGS)
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when present)")
    parser.add_argument("--cache", type=Path, default=None, help="featurised train carve (.npz), made if missing")
    parser.add_argument("--element-vectors", type=Path, default=None, help="element table (.npy) for machines without matminer")
    parser.add_argument("--no-assemble", action="store_true", help="train only; do not build the final model")
    parser.add_argument("--note", default="", help="free text recorded in the model card (e.g. where members trained)")
    parser.add_argument("--install", action="store_true", help="copy the finished model into fh_screen/pretrained/<name>/")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s [{args.name} {args.member_ids or 'all'}] %(message)s")

    config = config_from_args(args, AttentionTrainConfig, CONFIG_FLAGS, device=_device(args.device))
    vectors = None
    if args.element_vectors:
        import numpy as np

        vectors = np.load(args.element_vectors)
    command = "python scripts/train_default_model.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    checkpoint = run_attention_training(
        args.data / "train.csv", args.output, recipe=args.recipe, config=config, val_path=args.data / "val.csv",
        member_ids=[int(m) for m in args.member_ids.split(",")] if args.member_ids else None,
        cache=args.cache, element_vectors=vectors, element_features=args.element_features,
        assemble=not args.no_assemble, name=args.name, command=command.strip(), note=args.note,
    )
    if checkpoint is None:
        return
    logging.info("saved %s", args.output / "model.pt")
    if args.install:
        target = ROOT / "fh_screen" / "pretrained" / args.name
        target.mkdir(parents=True, exist_ok=True)
        for name in ("model.pt", "model_card.json", "README.md"):
            shutil.copy2(args.output / name, target / name)
        logging.info("installed into %s", target)


if __name__ == "__main__":
    main()
