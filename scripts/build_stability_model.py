"""Build the P(stable) classifier that ships in ``fh_screen/reference_data/stability_model.json``.

Three steps, each resumable (examples are cached as ``.npz`` under ``--work``)::

    # 1. examples: the fitting protocol (train.csv alone: the 5 % carve hidden, the rest known)
    python scripts/build_stability_model.py examples --protocol fit --systems 400 --skip 0
    python scripts/build_stability_model.py examples --protocol fit --systems 400 --skip 400 ...
    #    and, for model selection and the reported figures only, the val protocol (the first 300
    #    systems choose the settings; the next 300 confirm them; val-shift checks the shift)
    python scripts/build_stability_model.py examples --protocol val --systems 300
    python scripts/build_stability_model.py examples --protocol val-confirm --systems 300 --skip 300
    python scripts/build_stability_model.py examples --protocol val-shift --systems 300
    # 2. fit (train.csv examples only) and write the shipped JSON + card
    python scripts/build_stability_model.py fit --install
    # 3. the claims figures on val: fh-screen evaluate --study claims

``--data-dir`` (default ``$FH_SCREEN_OQMD_DIR`` or ``../shared/data/oqmd``) holds train.csv/val.csv.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from fh_screen.study.claims import ClaimsExamples, carve_split, claims_metrics, protocol_examples, reliability_ok
from fh_screen.data import file_sha256, load_oqmd, shared_data_dir
from fh_screen.data import make_set
from fh_screen.screening.stability import FEATURE_NAMES, STABILITY_MODEL_PATH, StabilityModel, TreeEnsemble

logger = logging.getLogger("build_stability_model")

#: Gradient-boosting settings (chosen on val by the claims metrics; docs/claims.md).
HYPERPARAMETERS = {"max_iter": 200, "learning_rate": 0.05, "max_leaf_nodes": 15, "min_samples_leaf": 1000,
                   "l2_regularization": 10.0, "max_bins": 255}


def _set(frame: pd.DataFrame):
    return make_set(frame["formula"].astype(str).tolist(), frame["dhf_ev_per_atom"].to_numpy(np.float64))


def cmd_examples(args) -> None:
    from fh_screen.models.predictor import Predictor

    data = shared_data_dir(args.data_dir)
    fit, carve = carve_split(data / "train.csv")
    if args.protocol == "fit":
        known, hidden = _set(fit), _set(carve)
    else:
        train, _ = load_oqmd(data / "train.csv")
        val, _ = load_oqmd(data / "val.csv")
        if args.protocol == "val-shift":  # half of val joins the known phases, the other half stays hidden
            order = np.random.default_rng(1).permutation(len(val))
            half = val.iloc[np.sort(order[: len(val) // 2])]
            val = val.iloc[np.sort(order[len(val) // 2:])]
            train = pd.concat([train, half], ignore_index=True)
        known, hidden = _set(train), _set(val)
    from fh_screen.screening import ScreenOptions
    from fh_screen.screening.options import NO_STABILITY_MODEL

    predictor = Predictor.from_name(args.model)
    # the features do not depend on the classifier being built: screen without one (a shipped file
    # of another feature set would not load while the next one is being built). The rows of the
    # cascade's P(stable) head that the screen's model refines are picked by the fixed head
    # classifier (fh_screen.screening.stability.STABILITY_HEAD_MODEL_PATH), as in every screen
    options = ScreenOptions(stability_model=NO_STABILITY_MODEL)
    started = time.perf_counter()
    examples = protocol_examples(known, hidden, predictor, n_systems=args.systems, seed=args.seed, skip=args.skip,
                                 options=options,
                                 progress=lambda i, n: logger.info("%s: %d/%d systems, %.0f s", args.protocol, i, n,
                                                                   time.perf_counter() - started) if i % 25 == 0 else None)
    out = Path(args.work) / f"{args.protocol}-seed{args.seed}-skip{args.skip}-n{args.systems}.npz"
    examples.save(out)
    logger.info("wrote %s: %d rows, %d systems, %d real, %.0f s", out, len(examples.label), len(examples.systems),
                int(examples.n_real.sum()), time.perf_counter() - started)


def load_examples(work: Path, protocol: str) -> ClaimsExamples:
    parts = sorted(Path(work).glob(f"{protocol}-seed*.npz"))
    if not parts:
        raise SystemExit(f"no {protocol} examples under {work}: run the examples step first")
    return ClaimsExamples.concatenate([ClaimsExamples.load(p) for p in parts])


def fit_trees(examples: ClaimsExamples, params: dict, seed: int = 0, negative_fraction: float = 1.0):
    """Gradient-boosted trees on the examples; with ``negative_fraction`` < 1 a seeded share of the
    unlabelled rows is kept and weighted by its inverse (the same expected log-loss, a faster fit)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    x = examples.features.astype(np.float64)
    y = examples.label.astype(bool)
    weight = None
    if negative_fraction < 1.0:
        keep = y | (np.random.default_rng(seed).random(len(y)) < negative_fraction)
        x, y = x[keep], y[keep]
        weight = np.where(y, 1.0, 1.0 / negative_fraction)
    model = HistGradientBoostingClassifier(**params, early_stopping=False, random_state=seed)
    model.fit(x, y, sample_weight=weight)
    return model


def grouped_folds(examples: ClaimsExamples, n_folds: int, seed: int = 0) -> np.ndarray:
    """Fold of each row, by the element set of the row's own composition (a shared subsystem such
    as Li-O sits in one fold whichever system screened it)."""
    from fh_screen.chem.formula import parse_formula

    sets = {}
    fold = np.empty(len(examples.formulas), dtype=np.int64)
    rng = np.random.default_rng(seed)
    for i, formula in enumerate(examples.formulas):
        elements = tuple(sorted(str(e) for e in parse_formula(formula).elements))
        if elements not in sets:
            sets[elements] = int(rng.integers(n_folds))
        fold[i] = sets[elements]
    return fold


def cmd_fit(args) -> None:
    fit_examples = load_examples(Path(args.work), "fit")
    logger.info("fitting on %d rows (%d real) from %d systems", len(fit_examples.label), int(fit_examples.label.sum()),
                len(fit_examples.systems))
    params = dict(HYPERPARAMETERS)
    if args.params:
        params.update(json.loads(args.params))
    started = time.perf_counter()
    model = fit_trees(fit_examples, params, negative_fraction=args.negative_fraction)
    trees = TreeEnsemble.from_sklearn(model)
    check = fit_examples.features[:2000].astype(np.float64)
    ours = 1 / (1 + np.exp(-trees.raw_score(check)))
    theirs = model.predict_proba(check)[:, 1]
    if not np.allclose(ours, theirs, atol=1e-9):
        raise SystemExit(f"exported trees disagree with scikit-learn by {np.abs(ours - theirs).max():.2e}")
    shift = float(args.log_odds_shift)
    train_path = shared_data_dir(args.data_dir) / "train.csv"
    metadata = {
        "name": "stability", "version": args.version,
        "description": "P(stable) of a new candidate: gradient-boosted trees over the screen's per-candidate features",
        "data": {"train_file": "train.csv", "train_sha256": file_sha256(train_path),
                 "protocol": "fitting protocol: the seeded 5 % carve of train.csv (split seed 0, the shipped models' "
                             "holdout) hidden, the rest of train.csv known",
                 "n_systems": len(fit_examples.systems), "n_rows": int(len(fit_examples.label)),
                 "n_real_rows": int(fit_examples.label.sum()), "val_used": "model selection and figures only"},
        "hyperparameters": params, "negative_fraction": args.negative_fraction, "log_odds_shift": shift,
        "command": "python scripts/build_stability_model.py " + " ".join(sys.argv[1:]),
        "fit_seconds": round(time.perf_counter() - started, 1),
        "fit_protocol_metrics": claims_metrics(fit_examples, 1 / (1 + np.exp(-(trees.raw_score(fit_examples.features) + shift)))),
    }
    stability = StabilityModel(trees, FEATURE_NAMES, shift, metadata)
    for protocol in ("val", "val-confirm", "val-shift"):
        try:
            val_examples = load_examples(Path(args.work), protocol)
        except SystemExit:
            continue
        p = stability.p_stable(val_examples.features)
        metrics = claims_metrics(val_examples, p)
        metrics["reliability_within_factor_2"] = reliability_ok(metrics)
        metadata[f"{protocol}_metrics"] = metrics
        logger.info("%s: %s", protocol, json.dumps({k: v for k, v in metrics.items() if k != "reliability"}))
        for row in metrics["reliability"]:
            logger.info("  p %.2f-%.2f: n %d mean %.4f observed %.4f", row["p_low"], row["p_high"], row["n"],
                        row["mean_p"] or 0, row["observed"] or 0)
    out = Path(args.output) if args.output else (STABILITY_MODEL_PATH if args.install else Path(args.work) / "stability_model.json")
    out.write_text(json.dumps(stability.to_json(), separators=(",", ":")))
    logger.info("wrote %s (%.1f MB)", out, out.stat().st_size / 1e6)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--work", default=str(Path.home() / ".cache" / "fh_screen" / "stability"))
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("examples")
    ex.add_argument("--protocol", choices=["fit", "val", "val-confirm", "val-shift"], required=True,
                    help="val-confirm: the val protocol on systems kept out of model selection (use --skip 300)")
    ex.add_argument("--systems", type=int, default=400)
    ex.add_argument("--seed", type=int, default=0)
    ex.add_argument("--skip", type=int, default=0)
    ex.add_argument("--model", default=None)
    fit = sub.add_parser("fit")
    fit.add_argument("--params", default=None, help="JSON overrides of HYPERPARAMETERS")
    fit.add_argument("--log-odds-shift", default=0.0, type=float)
    fit.add_argument("--negative-fraction", default=0.25, type=float,
                     help="share of unlabelled rows kept (weighted by its inverse) for a faster fit")
    fit.add_argument("--version", type=int, default=1)
    fit.add_argument("--install", action="store_true", help="write the package's shipped file")
    fit.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    {"examples": cmd_examples, "fit": cmd_fit}[args.command](args)


if __name__ == "__main__":
    main()
