"""Fine-tune a trained model on new entries (the user's own calculations) without forgetting OQMD.

The closing step of the loop (issue 19, point 3): calculations come back (CHGNet, VASP, a table)
and the model that proposed them learns from them, in minutes on a CPU. Every member of the
ensemble starts from its trained weights and takes a few epochs of AdamW at a low learning rate
on the new entries, oversampled to :attr:`FinetuneOptions.new_share` of each epoch, mixed with a
seeded *replay* sample of ``train.csv`` (compositions of the new entries left out) that holds the
model to what it knew. ``val.csv`` is never trained on: it measures, before and after, whether
the model forgot (compositions of the new entries are left out of it, so it stays independent).

:func:`finetune` returns the new checkpoint and a report (MAE on the new entries and on val,
before and after); :func:`run_finetune` also refuses a val regression above
:attr:`FinetuneOptions.max_val_regression_ev_per_atom` (unless forced) before anything is
written, and :func:`write_finetuned_model` saves ``model.pt``, ``model_card.json`` and
``README.md``. The model keeps its architecture, normalisation and σ scale (σ is not
recalibrated: the card says so); it gets its own name and a version made of the date and its
weights' hash, so its stored predictions never mix with the base model's.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import logging
import math
import platform
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from fh_screen.errors import FhScreenError
from fh_screen.models.attention import AttentionSpec, laplace_nll, set_tensors
from fh_screen.models.checkpoint import Checkpoint, dated_version, save_checkpoint
from fh_screen.models.metrics import error_metrics
from fh_screen.models.mlp import NetworkSpec
from fh_screen.models.torch_threads import restores_torch_threads

logger = logging.getLogger(__name__)

__all__ = [
    "FinetuneError",
    "FinetuneOptions",
    "FinetuneResult",
    "NewEntries",
    "check_entry_elements",
    "check_model_name",
    "check_new_model_name",
    "check_output_dir",
    "entries_table",
    "finetune",
    "read_entries",
    "run_finetune",
    "write_finetuned_model",
]


class FinetuneError(FhScreenError):
    """Fine-tuning that cannot run or whose result is refused; one line."""


class FinetuneOptions(BaseModel):
    """How a model is fine-tuned (defaults: a few minutes on one CPU core for the default model)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    epochs: int = Field(4, ge=1, le=200, description="passes over the replay sample and the oversampled new entries")
    learning_rate: float = Field(1e-4, gt=0, le=1e-2, description="AdamW learning rate (constant; ~1/15 of the shipped model's peak)")
    batch_size: int = Field(256, ge=1, description="rows per step")
    replay_rows: int = Field(2048, ge=0, description="rows of train.csv replayed against forgetting (seeded sample)")
    new_share: float = Field(0.25, gt=0, lt=1, description="share of each epoch's rows that are new entries (oversampled)")
    nll_weight: float = Field(0.1, ge=0, description="weight of the σ head's Laplace NLL (attention models), as in training")
    grad_clip: float = Field(1.0, ge=0, description="gradient-norm clip (0: none)")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="seed of the replay sample, the val sample and the batch order "
                      "(0 to 2**32 - 1)")
    threads: int = Field(1, ge=1, description="torch CPU threads")
    val_rows: int | None = Field(None, ge=1, description="evaluate on a seeded sample of this many val rows (None: all)")
    max_val_regression_ev_per_atom: float = Field(
        0.002, ge=0, allow_inf_nan=False,
        description="largest rise of the val MAE (abs(ΔH_f) < 5 rows) accepted without force (finite: inf would let any through)")


@dataclass
class FinetuneResult:
    """A fine-tuned checkpoint (not yet saved) and what it did on the new entries and on val."""

    checkpoint: Checkpoint
    report: dict

    @property
    def val_regression_ev_per_atom(self) -> float | None:
        """Val MAE after minus before (positive: the model got worse on val); None without val."""
        return self.report["metrics"].get("val_regression_ev_per_atom")

    @property
    def regressed(self) -> bool:
        """True when the val MAE rose by more than the options allow."""
        rise = self.val_regression_ev_per_atom
        return rise is not None and rise > self.report["options"]["max_val_regression_ev_per_atom"]


#: Checkpoint metadata that changes predictions (kept as is by fine-tuning).
PREDICTION_METADATA = ("sigma_scale", "member_weighting")

#: Model names: what ``fh-screen train --name`` accepts.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")


def check_model_name(name: str, taken: list[str] | tuple[str, ...] = ()) -> str:
    """``name`` if it can name a user's model: 1-64 letters, digits or ``._+-``, not one of ``taken``."""
    if not _NAME.fullmatch(name or ""):
        raise FinetuneError(f"model name must be 1-64 letters, digits or ._+- characters, got {name!r}")
    if name in taken:
        raise FinetuneError(f"{name!r} is the name of a model shipped with fh-screen; give the fine-tuned model its own name")
    return name


def check_new_model_name(name: str) -> str:
    """``name`` if a new model may take it: :func:`check_model_name`, and no model found by that name has it.

    Models are found by name in the user's model folder, then among the shipped ones
    (:func:`~fh_screen.models.predictor.model_dirs`): a second model of the same name would be
    shadowed by the first (``--model NAME@VERSION`` could not reach it). Raises :class:`FinetuneError`.
    """
    from fh_screen.models.predictor import model_dirs

    users, shipped = model_dirs()
    check_model_name(name, sorted(p.name for p in shipped.iterdir() if (p / "model.pt").is_file()))
    if (users / name / "model.pt").is_file():
        raise FinetuneError(f"a model named {name!r} is already in {users} (models are found by name there); "
                            f"give the fine-tuned model its own name")
    return name


def check_output_dir(output_dir: str | Path) -> Path:
    """``output_dir`` as a path if the new model can be written there: a new folder, or an empty one.

    Refused in one line (:class:`FinetuneError`), before any training: a file in its place, a
    folder holding a model or anything else (nothing of the user's is overwritten), and a place
    where the folder cannot be made or written (a file as parent, no permission, ``/proc``).
    The probe leaves nothing behind.
    """
    import os
    import tempfile

    path = Path(output_dir).expanduser()
    if path.exists() and not path.is_dir():
        raise FinetuneError(f"{output_dir} is a file: the new model needs a folder (choose another name or output folder)")
    if (path / "model.pt").exists():
        raise FinetuneError(f"{output_dir} already holds a model: choose another name or output folder")
    try:
        holds = path.is_dir() and next(path.iterdir(), None) is not None
    except OSError as exc:
        raise FinetuneError(f"cannot write the new model into {output_dir}: {exc.strerror or exc}") from None
    if holds:
        raise FinetuneError(f"{output_dir} is not empty: the new model needs a new or empty folder "
                            f"(choose another name or output folder)")
    folder = path
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise FinetuneError(f"cannot write the new model into {output_dir}: {folder} is not a folder")
    try:  # the one sure test that the folder can be made and written: make one inside, remove it
        os.rmdir(tempfile.mkdtemp(prefix=".fh-screen-check-", dir=folder))
    except OSError as exc:
        raise FinetuneError(f"cannot write the new model into {output_dir}: {exc.strerror or exc} in {folder}") from None
    return path


@dataclass
class NewEntries:
    """New entries read as ``fh-screen ingest`` reads a file: the usable table and the rows set aside."""

    table: pd.DataFrame
    label: str
    n_rows: int
    set_aside: dict[str, int]
    #: Each reduced formula of :attr:`table` as the entries wrote it (``FOg`` -> ``OgF``), for messages.
    written: dict[str, str] = field(default_factory=dict)

    @property
    def n_set_aside(self) -> int:
        """Rows read but not learned from, all reasons together."""
        return sum(self.set_aside.values())

    def note(self) -> str | None:
        """One line naming the rows set aside and why; None when every row is used."""
        if not self.n_set_aside:
            return None
        reasons = ", ".join(f"{n} {reason}" for reason, n in self.set_aside.items())
        return (f"{self.n_set_aside} of {self.n_rows} rows of {self.label} set aside ({reasons}); "
                f"learning from {len(self.table)}")


#: Words of the rows :func:`read_entries` sets aside beyond :data:`fh_screen.data.REJECTION_REASONS`.
PURE_ELEMENTS = "pure elements"


def read_entries(entries: pd.DataFrame | str | Path, label: str | None = None) -> NewEntries:
    """New entries as the tidy table (reduced ``formula``, ``dhf_ev_per_atom``) and what was set aside.

    ``entries`` is a file (CSV ``formula,dhf_ev_per_atom`` or ``formula,target``, an OQMD dump or
    OPTIMADE JSON) or a frame with those two columns (e.g. the store's entries of one source).
    Rows are checked as ``fh-screen ingest`` checks them (:func:`fh_screen.data.check_rows`):
    a formula with an element that does not exist, or a pure element with a ΔH_f other than 0,
    refuses the whole table. Duplicates keep the lowest value; outliers, bad formulas, missing or
    non-numeric values and pure elements are set aside and counted. Raises
    :class:`FinetuneError` (one line) when the table is refused or nothing usable is left.
    """
    from fh_screen.data import REJECTION_REASONS, DataError, check_rows, clean, load_oqmd

    if isinstance(entries, (str, Path)):
        label = label or str(entries)
        try:
            table, report = load_oqmd(entries, drop_outliers=False, keep_written=True)
        except DataError as exc:
            raise FinetuneError(str(exc)) from None
    else:
        label = label or "the given entries"
        if len(entries.columns) or len(entries):
            missing = [c for c in ("formula", "dhf_ev_per_atom") if c not in entries.columns]
            if missing:
                raise FinetuneError(f"new entries need columns formula and dhf_ev_per_atom (missing {', '.join(missing)})")
            frame = pd.DataFrame({"formula": entries["formula"], "dhf_ev_per_atom": entries["dhf_ev_per_atom"],
                                  "source_id": None})
        else:  # no rows at all (e.g. an empty list of records)
            frame = pd.DataFrame({"formula": [], "dhf_ev_per_atom": [], "source_id": []})
        table, report = clean(frame, drop_outliers=False, keep_written=True)
    try:
        check_rows(table, report, label, "nothing was fine-tuned")
    except DataError as exc:
        raise FinetuneError(str(exc)) from None
    table = table[table["passed_outlier_filter"]]
    multi = table[table["formula"].map(_n_elements) >= 2]
    set_aside = {REJECTION_REASONS[reason]: n for reason, n in report.rejected.items() if n}
    if len(table) - len(multi):
        set_aside[PURE_ELEMENTS] = len(table) - len(multi)
    if not len(multi):
        why = ", ".join(f"{n} {reason}" for reason, n in set_aside.items()) or "no rows"
        raise FinetuneError(f"no usable new entries in {label} (compounds of two or more elements with a finite "
                            f"ΔH_f): {report.n_raw} rows, set aside: {why}")
    written = dict(zip(multi["formula"], multi["written_formula"]))
    return NewEntries(multi.drop(columns="written_formula").reset_index(drop=True), label, report.n_raw, set_aside, written)


def check_entry_elements(entries: NewEntries | pd.DataFrame, elements: list[str] | tuple[str, ...]) -> None:
    """Refuse new entries with an element outside the model's ``elements``, quoting the formula as written.

    The model has no input for such an element: nothing could be learned from the row. Raises
    :class:`FinetuneError` (one line) naming the first such entry.
    """
    from fh_screen.chem.formula import fraction_matrix

    written = entries.written if isinstance(entries, NewEntries) else {}
    table = entries.table if isinstance(entries, NewEntries) else entries
    formulas = [written.get(f, f) for f in table["formula"]]
    elements = list(elements)
    for formula, error in zip(formulas, fraction_matrix(formulas, elements).errors):
        if error:
            raise FinetuneError(f"new entry outside the model's elements ({elements[0]}–{elements[-1]}): {formula}: {error}")


def entries_table(entries: pd.DataFrame | str | Path, label: str | None = None) -> pd.DataFrame:
    """The usable new entries of :func:`read_entries` (reduced ``formula``, ``dhf_ev_per_atom``)."""
    return read_entries(entries, label).table


def _n_elements(formula: str) -> int:
    from fh_screen.chem.formula import parse_amounts

    return len(parse_amounts(formula))


class _MlpArchitecture:
    """Inputs and loss of a fully connected member: fraction vectors, L1 on the standardised target."""

    @staticmethod
    def inputs(matrix: np.ndarray) -> tuple:
        import torch

        return (torch.as_tensor(np.ascontiguousarray(matrix, dtype=np.float32)),)

    @staticmethod
    def loss(network, inputs: tuple, target, options: FinetuneOptions):
        return (network(*inputs).squeeze(-1) - target).abs().mean()


class _AttentionArchitecture:
    """Inputs and loss of an attention member: set tensors, L1 on the mean plus the σ head's Laplace NLL."""

    @staticmethod
    def inputs(matrix: np.ndarray) -> tuple:
        import torch

        return tuple(torch.as_tensor(a) for a in set_tensors(matrix))

    @staticmethod
    def loss(network, inputs: tuple, target, options: FinetuneOptions):
        mean, log_scale = network(*inputs)
        return (mean - target).abs().mean() + options.nll_weight * laplace_nll(target, mean.detach(), log_scale).mean()


#: What fine-tuning needs of each architecture, by the type of its spec (as :mod:`~fh_screen.models.ensemble` picks inference).
ARCHITECTURES: dict[type, type] = {NetworkSpec: _MlpArchitecture, AttentionSpec: _AttentionArchitecture}


def _matrix(formulas: list[str], elements: list[str], label: str) -> np.ndarray:
    from fh_screen.chem.formula import fraction_matrix

    features = fraction_matrix(formulas, elements)
    for formula, error in zip(formulas, features.errors):
        if error:
            raise FinetuneError(f"{label}: {formula}: {error}")
    return features.matrix


def _metrics(checkpoint: Checkpoint, matrix: np.ndarray, y: np.ndarray, threads: int) -> dict:
    from fh_screen.models.predictor import Predictor

    predicted, _ = Predictor(checkpoint, threads=threads).predict_matrix(matrix)
    return error_metrics(y, predicted)


def _val_metrics(checkpoint: Checkpoint, matrix: np.ndarray, y: np.ndarray, threads: int) -> dict:
    """The cards' val rows: all, and abs(ΔH_f) < 5 (the headline the refusal reads)."""
    from fh_screen.models.predictor import Predictor

    predicted, _ = Predictor(checkpoint, threads=threads).predict_matrix(matrix)
    small = np.abs(y) < 5
    return {"val_all_rows": error_metrics(y, predicted), "val_abs_dhf_lt_5": error_metrics(y[small], predicted[small])}


@restores_torch_threads
def _tune_members(checkpoint: Checkpoint, matrix: np.ndarray, y_ev_per_atom: np.ndarray, options: FinetuneOptions,
                  on_epoch: Callable[[int, int, float], None] | None) -> list[dict]:
    """Each member fine-tuned on the rows of ``matrix`` (the epoch's sample); their new state dicts."""
    import torch

    torch.set_num_threads(options.threads)
    architecture = ARCHITECTURES[type(checkpoint.spec)]
    inputs = architecture.inputs(matrix)
    target = torch.as_tensor(((y_ev_per_atom - checkpoint.target_mean_ev_per_atom)
                              / checkpoint.target_std_ev_per_atom).astype(np.float32))
    states = []
    for number, network in enumerate(checkpoint.build_members()):
        torch.manual_seed(options.seed + number)
        network.train()
        optimiser = torch.optim.AdamW(network.parameters(), lr=options.learning_rate, weight_decay=0.0)
        for epoch in range(1, options.epochs + 1):
            order = np.random.default_rng([options.seed, number, epoch]).permutation(len(target))
            total = 0.0
            for start in range(0, len(order), options.batch_size):
                rows = torch.as_tensor(order[start:start + options.batch_size])
                batch = tuple(t[rows] for t in inputs)
                if len(batch) == 2:  # set tensors: drop the padding columns no row of the batch uses
                    width = max(1, int((batch[1] > 0).sum(dim=1).max()))
                    batch = tuple(t[:, :width] for t in batch)
                loss = architecture.loss(network, batch, target[rows], options)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                if options.grad_clip:
                    torch.nn.utils.clip_grad_norm_(network.parameters(), options.grad_clip)
                optimiser.step()
                total += float(loss.detach()) * len(rows)
            if on_epoch is not None:
                on_epoch(number, epoch, total / len(order))
        network.eval()
        states.append({k: v.detach().cpu().clone() for k, v in network.state_dict().items()})
    return states


def finetune(
    base: Checkpoint,
    entries: pd.DataFrame | NewEntries,
    train_path: str | Path,
    val_path: str | Path | None = None,
    options: FinetuneOptions = FinetuneOptions(),
    *,
    name: str | None = None,
    entries_label: str = "entries",
    on_epoch: Callable[[int, int, float], None] | None = None,
) -> FinetuneResult:
    """Fine-tune every member of ``base`` on ``entries`` with a replay sample of ``train_path``.

    Parameters
    ----------
    base
        The trained model (any architecture); it is not changed.
    entries
        The new entries: :func:`read_entries` (its rows set aside are recorded in the report) or
        its table (reduced ``formula``, ``dhf_ev_per_atom``).
    train_path
        The training file the replay sample is drawn from (seeded, the entries' compositions
        left out); never ``val.csv``.
    val_path
        The validation file measured before and after (the entries' compositions left out), or
        None to skip it (then nothing guards against forgetting: :func:`run_finetune` requires force).
    options
        Learning rate, epochs, replay size, seed; see :class:`FinetuneOptions`.
    name
        Name of the new model (default ``<base name>-ft``).
    entries_label
        Where the entries came from (a file, ``store source chgnet``), for the card.
    on_epoch
        Called with ``(member, epoch, mean loss)`` after each member's epoch.
    """
    from fh_screen.data import file_sha256, load_oqmd

    started = time.perf_counter()
    if val_path is not None and Path(train_path).resolve() == Path(val_path).resolve():
        raise FinetuneError(f"the replay file and the val file are the same ({train_path}): replay from train.csv only")
    check_entry_elements(entries, base.elements)
    if isinstance(entries, NewEntries):
        n_rows, set_aside, entries = entries.n_rows, dict(entries.set_aside), entries.table
    else:
        n_rows, set_aside = len(entries), {}
    entries = entries.reset_index(drop=True)
    elements = list(base.elements)
    x_new = _matrix(entries["formula"].tolist(), elements, f"new entry outside the model's elements ({elements[0]}–{elements[-1]})")
    y_new = entries["dhf_ev_per_atom"].to_numpy(np.float64)
    new_formulas = set(entries["formula"])

    train, train_report = load_oqmd(train_path)
    train = train[~train["formula"].isin(new_formulas)]
    n_replay = min(options.replay_rows, len(train))
    replay = train.sample(n=n_replay, random_state=options.seed) if n_replay else train.iloc[0:0]
    x_replay = _matrix(replay["formula"].tolist(), elements, f"replay row of {Path(train_path).name}")
    y_replay = replay["dhf_ev_per_atom"].to_numpy(np.float64)
    copies = max(1, math.ceil(options.new_share / (1 - options.new_share) * n_replay / len(entries)))
    x_epoch = np.concatenate([x_replay, np.tile(x_new, (copies, 1))])
    y_epoch = np.concatenate([y_replay, np.tile(y_new, copies)])

    metrics: dict = {"new_entries_before": _metrics(base, x_new, y_new, options.threads)}
    data: dict = {
        "entries": entries_label, "n_entries": len(entries), "n_entries_rows": n_rows,
        "entries_set_aside": set_aside, "entries_copies_per_epoch": copies,
        "replay_file": Path(train_path).name, "replay_sha256": file_sha256(train_path),
        "replay_cleaning": train_report.summary(), "n_replay": n_replay,
    }
    if val_path is not None:
        val, _ = load_oqmd(val_path, drop_outliers=False)
        n_val_file = len(val)
        val = val[~val["formula"].isin(new_formulas)]
        if options.val_rows is not None and options.val_rows < len(val):
            val = val.sample(n=options.val_rows, random_state=options.seed)
        if not len(val):
            raise FinetuneError(f"{val_path}: no val rows left once the new entries' compositions are set aside")
        x_val = _matrix(val["formula"].tolist(), elements, f"val row of {Path(val_path).name}")
        y_val = val["dhf_ev_per_atom"].to_numpy(np.float64)
        metrics["val_before"] = _val_metrics(base, x_val, y_val, options.threads)
        data.update(val_file=Path(val_path).name, val_sha256=file_sha256(val_path), n_val=len(val),
                    n_val_set_aside=n_val_file - len(val) if options.val_rows is None else None)

    tuned = copy.copy(base)
    tuned.member_state_dicts = _tune_members(base, x_epoch, y_epoch, options, on_epoch)
    if base.elements_in_training:  # an empty list means "every element OQMD has" (older checkpoints): kept so
        seen = set(base.elements_in_training) | {s for s, used in zip(elements, (x_new > 0).any(axis=0)) if used}
        tuned.elements_in_training = [s for s in elements if s in seen]
    tuned.name = name or f"{base.name}-ft"
    tuned.version = dated_version(tuned)

    metrics["new_entries_after"] = _metrics(tuned, x_new, y_new, options.threads)
    if val_path is not None:
        metrics["val_after"] = _val_metrics(tuned, x_val, y_val, options.threads)
        metrics["val_regression_ev_per_atom"] = (metrics["val_after"]["val_abs_dhf_lt_5"]["mae_ev_per_atom"]
                                                 - metrics["val_before"]["val_abs_dhf_lt_5"]["mae_ev_per_atom"])
    report = {
        "base": f"{base.name}@{base.version}",
        "base_identity_sha256": base.identity(),
        "options": options.model_dump(),
        "data": data,
        "metrics": metrics,
        "seconds": round(time.perf_counter() - started, 1),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {platform.system()}, {options.threads} torch thread(s)",
        "sigma": "σ scale kept from the base model (not recalibrated after fine-tuning)",
    }
    # what changes predictions is kept; the base's provenance moves under "base_card"; the
    # headline metrics are the new model's
    kept = {k: copy.deepcopy(v) for k, v in base.metadata.items() if k in PREDICTION_METADATA}
    headline = {**metrics.get("val_after", {}), "new_entries": metrics["new_entries_after"]}
    tuned.metadata = {**kept, "metrics": headline, "finetune": report,
                      "base_card": {k: copy.deepcopy(v) for k, v in base.metadata.items()
                                    if k not in PREDICTION_METADATA and k != "histories"}}
    logger.info("fine-tuned %s on %d entries in %.0f s", report["base"], len(entries), report["seconds"])
    return FinetuneResult(tuned, report)


def write_finetuned_model(result: FinetuneResult, directory: str | Path) -> Path:
    """Save ``model.pt``, ``model_card.json`` and ``README.md`` of a fine-tuned model into ``directory``.

    ``directory`` must be new or empty (:func:`check_output_dir`): nothing already there is overwritten.
    """
    from fh_screen.io import atomic_write_text, write_json

    directory = check_output_dir(directory)
    directory.mkdir(parents=True, exist_ok=True)
    checkpoint = result.checkpoint
    save_checkpoint(checkpoint, directory / "model.pt")
    card = {
        "name": checkpoint.name,
        "version": checkpoint.version,
        "identity_sha256": checkpoint.identity(),
        "n_members": len(checkpoint.member_state_dicts),
        "elements": f"{checkpoint.elements[0]}–{checkpoint.elements[-1]} ({len(checkpoint.elements)} slots)",
        **checkpoint.metadata,
    }
    write_json(card, directory / "model_card.json")
    atomic_write_text(directory / "README.md", card_markdown(checkpoint))
    return directory


def card_markdown(checkpoint: Checkpoint) -> str:
    """The human model card of a fine-tuned model (README.md)."""
    report = checkpoint.metadata["finetune"]
    metrics, data, options = report["metrics"], report["data"], report["options"]
    lines = [
        f"# fh-screen model `{checkpoint.name}` v{checkpoint.version}",
        "",
        f"`{report['base']}` fine-tuned on {data['n_entries']} new entries ({data['entries']}): "
        f"{options['epochs']} epochs of AdamW at learning rate {options['learning_rate']:g}, every member from its",
        f"trained weights, with {data['n_replay']} rows of `{data['replay_file']}` replayed against forgetting",
        f"(seeded sample, the new compositions left out; each new entry seen {data['entries_copies_per_epoch']}× per epoch).",
        *_set_aside_lines(data),
        f"{report['sigma']}.",
        "",
        "## Errors (MAE, eV/atom)",
        "",
        "| rows | n | before | after |",
        "|---|---|---|---|",
        f"| new entries (trained on) | {metrics['new_entries_before']['n']} | {metrics['new_entries_before']['mae_ev_per_atom']:.4f} "
        f"| {metrics['new_entries_after']['mae_ev_per_atom']:.4f} |",
    ]
    if "val_before" in metrics:
        for key, label in (("val_abs_dhf_lt_5", "val, abs(ΔH_f) < 5"), ("val_all_rows", "val, all rows")):
            before, after = metrics["val_before"][key], metrics["val_after"][key]
            lines.append(f"| {label} | {before['n']} | {before['mae_ev_per_atom']:.4f} | {after['mae_ev_per_atom']:.4f} |")
        rise = metrics["val_regression_ev_per_atom"]
        lines += ["", f"Val MAE change: {rise:+.4f} eV/atom (refused above +{options['max_val_regression_ev_per_atom']:g} unless forced"
                  + ("; this model was forced" if report.get("forced") else "") + f"). `{data['val_file']}` is never trained on;"
                  " the new entries' compositions are left out of it."]
    else:
        lines += ["", "No val file was measured: nothing checked that the model did not forget (written with force)."]
    lines += ["", "## Provenance", f"- base model identity sha256: `{report['base_identity_sha256']}`",
              f"- replay: `{data['replay_file']}` sha256 `{data['replay_sha256']}`",
              f"- command: `{report.get('command', '')}`", f"- created: {report['created']} in {report['seconds']} s on {report['machine']}",
              f"- options: `{json.dumps(options)}`", f"- identity sha256: `{checkpoint.identity()}`", ""]
    return "\n".join(lines)


def _set_aside_lines(data: dict) -> list[str]:
    """The card's line on the rows of the new entries not learned from (none when every row was used)."""
    set_aside = data.get("entries_set_aside") or {}
    if not set_aside:
        return []
    reasons = ", ".join(f"{n} {reason}" for reason, n in set_aside.items())
    return [f"{sum(set_aside.values())} of the {data.get('n_entries_rows')} rows read were set aside ({reasons})."]


def run_finetune(
    base: Checkpoint,
    entries: pd.DataFrame | NewEntries,
    train_path: str | Path,
    val_path: str | Path | None,
    output_dir: str | Path,
    options: FinetuneOptions = FinetuneOptions(),
    *,
    name: str | None = None,
    force: bool = False,
    entries_label: str = "entries",
    command: str | None = None,
    on_epoch: Callable[[int, int, float], None] | None = None,
) -> FinetuneResult:
    """:func:`finetune`, then refuse a val regression (unless ``force``) before writing ``output_dir``.

    Raises :class:`FinetuneError` (one line; nothing written), before any training, when the name
    is taken (:func:`check_new_model_name`) or ``output_dir`` cannot take the model
    (:func:`check_output_dir`: a file, not empty, not writable); after it, when the val MAE rose
    by more than ``options.max_val_regression_ev_per_atom`` or when no ``val_path`` is given,
    unless ``force``.
    """
    check_new_model_name(name if name is not None else f"{base.name}-ft")
    output_dir = check_output_dir(output_dir)
    if val_path is None and not force:
        raise FinetuneError("no val file to check the fine-tuned model against: give one (or force)")
    result = finetune(base, entries, train_path, val_path, options, name=name, entries_label=entries_label, on_epoch=on_epoch)
    result.report["command"] = command
    result.report["forced"] = bool(force and (result.regressed or val_path is None))
    if result.regressed and not force:
        m = result.report["metrics"]
        raise FinetuneError(
            f"refused: val MAE rose by {result.val_regression_ev_per_atom:.4f} eV/atom "
            f"({m['val_before']['val_abs_dhf_lt_5']['mae_ev_per_atom']:.4f} → {m['val_after']['val_abs_dhf_lt_5']['mae_ev_per_atom']:.4f}), "
            f"more than {options.max_val_regression_ev_per_atom:g}; nothing written (lower the learning rate or epochs, or force)")
    write_finetuned_model(result, output_dir)
    return result
