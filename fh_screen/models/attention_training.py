"""From ``train.csv`` to a saved attention-ensemble model: carve, featurise, train members, calibrate.

Every member trains on the same ``fit`` rows with its own seed; the ``holdout`` rows (a seeded
carve of the training file, never ``val.csv``) calibrate the σ scale and report the held-out
error. Members train one after another or in parallel processes (``members=[...]``) and each
resumes from its own state file in ``<output>/state/``; :func:`assemble_attention_model` then
joins the finished members into one checkpoint. ``val.csv`` enters only the final metrics.
"""

from __future__ import annotations

import json
import logging
import platform
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from fh_screen.models.calibration import TARGET_COVERAGE, calibrate_sigma_scale  # re-exported: they lived here first
from fh_screen.io import atomic_write
from fh_screen.models.attention import AttentionSpec, set_tensors
from fh_screen.models.fit_attention import AttentionTrainConfig, predict_attention, train_attention_network
from fh_screen.errors import TrainingError

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_RECIPE",
    "AttentionData",
    "EnsembleMember",
    "parse_recipe",
    "assemble_attention_model",
    "calibrate_sigma_scale",
    "prepare_attention_data",
    "train_attention_members",
]


@dataclass
class AttentionData:
    """Set tensors of the fit and holdout carves of a training file, with its provenance."""

    fit_indices: np.ndarray
    fit_fractions: np.ndarray
    fit_y_ev_per_atom: np.ndarray
    holdout_indices: np.ndarray
    holdout_fractions: np.ndarray
    holdout_y_ev_per_atom: np.ndarray
    elements_in_training: list[str]
    provenance: dict

    def save(self, path: str | Path) -> Path:
        """Write the arrays and provenance to one ``.npz`` (a cache; never committed)."""
        path = Path(path)
        arrays = {k: v for k, v in self.__dict__.items() if isinstance(v, np.ndarray)}
        meta = json.dumps({"elements_in_training": self.elements_in_training, "provenance": self.provenance})
        return atomic_write(path, lambda tmp: np.savez_compressed(tmp, **arrays, meta=meta), keep_suffix=True)

    @classmethod
    def load(cls, path: str | Path) -> AttentionData:
        """Inverse of :meth:`save`."""
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            arrays = {k: data[k] for k in data.files if k != "meta"}
        return cls(**arrays, **meta)


def prepare_attention_data(train_path: str | Path, *, holdout_fraction: float = 0.05, seed: int = 0, max_rows: int | None = None) -> AttentionData:
    """Load and clean ``train_path`` (outliers dropped), carve a seeded holdout, build set tensors."""
    from fh_screen.chem.formula import DEFAULT_ELEMENTS, fraction_matrix
    from fh_screen.data import OUTLIER_RANGE_EV_PER_ATOM, check_trainable, file_sha256, load_oqmd, split_frame

    frame, report = load_oqmd(train_path)
    if max_rows is not None and max_rows < len(frame):
        frame = frame.sample(n=max_rows, random_state=seed).reset_index(drop=True)
    check_trainable(frame, train_path)
    fit, holdout = split_frame(frame, (1 - holdout_fraction, holdout_fraction), seed=seed)
    fit_matrix = fraction_matrix(fit["formula"].tolist(), DEFAULT_ELEMENTS).matrix
    hold_matrix = fraction_matrix(holdout["formula"].tolist(), DEFAULT_ELEMENTS).matrix
    fit_idx, fit_frac = set_tensors(fit_matrix)
    hold_idx, hold_frac = set_tensors(hold_matrix, max_length=fit_idx.shape[1])
    present = (fit_matrix > 0).any(axis=0)
    return AttentionData(
        fit_idx, fit_frac, fit["dhf_ev_per_atom"].to_numpy(np.float64),
        hold_idx, hold_frac, holdout["dhf_ev_per_atom"].to_numpy(np.float64),
        elements_in_training=[s for s, seen in zip(DEFAULT_ELEMENTS, present) if seen],
        provenance={
            "train_file": Path(train_path).name,
            "train_sha256": file_sha256(train_path),
            "train_cleaning": report.summary(),
            "n_fit": len(fit),
            "n_holdout": len(holdout),
            "holdout_fraction": holdout_fraction,
            "split_seed": seed,
            "max_rows": max_rows,
            "outlier_filter_ev_per_atom": list(OUTLIER_RANGE_EV_PER_ATOM),
        },
    )


@dataclass(frozen=True)
class EnsembleMember:
    """One member of an ensemble recipe: its preset, its number within that preset, its spec."""

    preset: str
    number: int
    spec: AttentionSpec
    #: this member's schedule length when the recipe sets one (``attention-large*4@30``), else the config's
    epochs: int | None = None

    @property
    def label(self) -> str:
        """``attention-2``: the state file's stem."""
        return f"{self.preset}-{self.number}"

    def config(self, base: AttentionTrainConfig) -> AttentionTrainConfig:
        """``base`` with this member's seed (``base.seed + number``) and its epochs, if the recipe sets them."""
        return replace(base, seed=base.seed + self.number, epochs=self.epochs or base.epochs)


#: The shipped default: six ``attention`` members (seeds 0-5, 60 epochs) and four
#: ``attention-large`` members (seeds 0-3, 30 epochs); see docs/model-experiments.md.
DEFAULT_RECIPE = "attention*6+attention-large*4@30"

#: Version written into assembled attention checkpoints (3: mixed widths, inverse-variance weighting).
MODEL_VERSION = "3"


def parse_recipe(recipe: str, element_features: str | None = None) -> list[EnsembleMember]:
    """Members of a recipe such as ``attention*6+attention-large*4@30`` (presets of ATTENTION_PRESETS).

    ``PRESET*N`` adds N members (numbers 0..N-1, seeds ``config.seed + number``); ``@E`` gives
    them a schedule of E epochs instead of the config's.
    """
    from fh_screen.models.attention import ATTENTION_PRESETS

    members: list[EnsembleMember] = []
    for part in recipe.replace(" ", "").split("+"):
        head, _, epochs = part.partition("@")
        preset, _, count = head.partition("*")
        if preset not in ATTENTION_PRESETS:
            raise TrainingError(f"unknown attention preset {preset!r} in recipe {recipe!r} (choose from {', '.join(ATTENTION_PRESETS)})")
        if (count and not count.isdigit()) or (epochs and not epochs.isdigit()) or (part.count("@") and not epochs):
            raise TrainingError(f"malformed recipe part {part!r} (use e.g. attention*4 or attention-large*4@30)")
        spec = ATTENTION_PRESETS[preset]
        if element_features:
            spec = replace(spec, element_features=element_features)
        members += [EnsembleMember(preset, k, spec, int(epochs) if epochs else None) for k in range(int(count or 1))]
    labels = [m.label for m in members]
    if len(set(labels)) != len(labels):
        raise TrainingError(f"recipe {recipe!r} names a preset twice: give each preset one part")
    return members


def _member_state(output_dir: Path, member: EnsembleMember) -> Path:
    return output_dir / "state" / f"{member.label}.pt"


def train_attention_members(
    data: AttentionData,
    output_dir: str | Path,
    members: list[EnsembleMember],
    config: AttentionTrainConfig,
    *,
    element_vectors: np.ndarray | None = None,
    on_epoch=None,
) -> None:
    """Train (or resume) ``members`` with :meth:`EnsembleMember.config` (seed and epochs per member)."""
    output_dir = Path(output_dir)
    (output_dir / "state").mkdir(parents=True, exist_ok=True)
    for member in members:
        member_config = member.config(config)
        callback = (lambda record, m=member: on_epoch(m, record)) if on_epoch else None
        train_attention_network(
            data.fit_indices, data.fit_fractions, data.fit_y_ev_per_atom,
            data.holdout_indices, data.holdout_fractions, data.holdout_y_ev_per_atom,
            member.spec, member_config, element_vectors=element_vectors,
            state_path=_member_state(output_dir, member), on_epoch=callback,
        )


def assemble_attention_model(
    data: AttentionData,
    output_dir: str | Path,
    members: list[EnsembleMember],
    config: AttentionTrainConfig,
    *,
    name: str,
    val_path: str | Path | None = None,
    command: str | None = None,
    member_weighting: str = "inverse_variance",
):
    """Join finished members into one checkpoint, calibrate σ on the holdout, evaluate on val.

    ``member_weighting`` is how the predictor combines the members (``inverse_variance``: each
    member weighted by 1/b² of its own Laplace scale for that input; ``mean``: equal weights).
    """
    import torch

    from fh_screen.models.checkpoint import Checkpoint
    from fh_screen.models.predictor import Predictor
    from fh_screen.models.metrics import error_metrics

    output_dir = Path(output_dir)
    states, histories = [], []
    for member in members:
        path = _member_state(output_dir, member)
        if not path.is_file():
            raise FileNotFoundError(f"member {member.label} has no training state at {path}: train it first")
        state = torch.load(path, map_location="cpu", weights_only=True)
        member_config = member.config(config)
        if state.get("config") != member_config.identity():
            raise TrainingError(f"training state {path} belongs to another run (settings differ from the recipe's): re-train {member.label}")
        if state["epoch"] < member_config.epochs:
            raise TrainingError(f"member {member.label} stopped at epoch {state['epoch']} of {member_config.epochs}: re-run to resume it")
        states.append(state["ema"])
        histories.append(state["history"])
    y = data.fit_y_ev_per_atom
    specs = [m.spec for m in members]
    checkpoint = Checkpoint(
        name=name, version=MODEL_VERSION, spec=specs[0], elements=list(_elements(specs[0])),
        elements_in_training=data.elements_in_training,
        target_mean_ev_per_atom=float(np.mean(y)), target_std_ev_per_atom=float(np.std(y)),
        member_state_dicts=states, metadata={"sigma_scale": 1.0, "member_weighting": member_weighting},
        member_specs=specs if len(set(specs)) > 1 else None,
    )
    predictor = Predictor(checkpoint)
    hold_mean, hold_sigma = predictor.model.predict_sets(data.holdout_indices, data.holdout_fractions)
    scale = calibrate_sigma_scale(hold_mean - data.holdout_y_ev_per_atom, hold_sigma)
    checkpoint.metadata["sigma_scale"] = scale
    metrics: dict = {"holdout": error_metrics(data.holdout_y_ev_per_atom, hold_mean),
                     "holdout_coverage_1.645_sigma": TARGET_COVERAGE, "sigma_scale": scale}
    if val_path is not None:
        metrics.update(validation_metrics(Predictor(checkpoint), val_path))
    checkpoint.metadata.update({
        "data": data.provenance | ({"val_file": Path(val_path).name} if val_path else {}),
        "metrics": metrics,
        "training": {"config": config.as_dict(), "n_members": len(members), "kind": "attention",
                     "members": [{"label": m.label, "spec": m.spec.as_dict(), "seed": m.config(config).seed,
                                  "epochs": m.config(config).epochs} for m in members]},
        "histories": histories,
        "command": command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "machine": f"{platform.machine()} {platform.system()}, torch {torch.__version__}, device {config.device}",
    })
    return checkpoint


def validation_metrics(predictor, val_path: str | Path) -> dict:
    """MAE/p80/p90 on all rows and on abs(ΔH_f) < 5 of ``val_path``, and σ coverage."""
    from fh_screen.data import file_sha256, load_oqmd
    from fh_screen.models.metrics import error_metrics

    val, _ = load_oqmd(val_path, drop_outliers=False)
    y = val["dhf_ev_per_atom"].to_numpy()
    result = predictor.predict_formulas(val["formula"].tolist())
    predicted, sigma = result.dhf_ev_per_atom, result.dhf_std_ev_per_atom
    inside = np.abs(y) < 5
    metrics = {
        "val_sha256": file_sha256(val_path),
        "val_all_rows": error_metrics(y, predicted),
        "val_abs_dhf_lt_5": error_metrics(y[inside], predicted[inside]),
    }
    if sigma is not None:
        within = np.abs(predicted - y) <= 1.645 * sigma
        metrics["val_coverage_1.645_sigma"] = float(np.mean(within[inside]))
    return metrics


def _elements(spec: AttentionSpec) -> tuple[str, ...]:
    from fh_screen.chem.formula import DEFAULT_ELEMENTS

    return DEFAULT_ELEMENTS[: spec.n_elements]


def run_attention_training(
    train_path: str | Path,
    output_dir: str | Path,
    *,
    recipe: str = DEFAULT_RECIPE,
    config: AttentionTrainConfig = AttentionTrainConfig(),
    val_path: str | Path | None = None,
    member_ids: list[int] | None = None,
    cache: str | Path | None = None,
    element_vectors: np.ndarray | None = None,
    element_features: str | None = None,
    assemble: bool = True,
    name: str = "attention-ensemble",
    command: str | None = None,
    note: str = "",
    max_rows: int | None = None,
    on_epoch=None,
):
    """The whole resumable pipeline behind ``fh-screen train --recipe`` and the training script.

    Featurises ``train_path`` once (cached in ``cache``, default ``<output>/train_carve.npz``),
    trains the recipe's members (or only ``member_ids``), then, unless ``assemble`` is false,
    writes ``model.pt``, ``model_card.json`` and ``README.md`` into ``output_dir`` and returns
    the checkpoint.
    """
    from fh_screen.models.checkpoint import save_checkpoint
    from fh_screen.models.training import write_attention_card

    output_dir = Path(output_dir)
    cache = Path(cache) if cache else output_dir / "train_carve.npz"
    if cache.is_file():
        data = AttentionData.load(cache)
        expected = {"max_rows": max_rows, "split_seed": config.seed}
        if Path(train_path).is_file():
            from fh_screen.data import file_sha256

            expected["train_sha256"] = file_sha256(train_path)
        stale = {k for k, v in expected.items() if data.provenance.get(k) != v}
        if stale:
            raise TrainingError(f"feature cache {cache} was made from other data ({', '.join(sorted(stale))} differ): delete it or pass another --cache")
    else:
        data = prepare_attention_data(train_path, seed=config.seed, max_rows=max_rows)
        cache.parent.mkdir(parents=True, exist_ok=True)
        data.save(cache)
    members = parse_recipe(recipe, element_features)
    chosen = [members[i] for i in member_ids] if member_ids is not None else members
    train_attention_members(data, output_dir, chosen, config, element_vectors=element_vectors, on_epoch=on_epoch)
    if not assemble:
        return None
    checkpoint = assemble_attention_model(data, output_dir, members, config, name=name, val_path=val_path, command=command)
    if note:
        checkpoint.metadata["training"]["note"] = note
    save_checkpoint(checkpoint, output_dir / "model.pt")
    write_attention_card(checkpoint, output_dir)
    return checkpoint
