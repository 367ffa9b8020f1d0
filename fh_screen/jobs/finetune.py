"""The model learns: a job that fine-tunes a model on the entries that came back.

:class:`FinetuneMaker` makes a job a flow can end with, after
:class:`~fh_screen.jobs.results.ResultsBackMaker` (``Flow([..., back, FinetuneMaker().make(back.output)])``):
it reads the reference entries of one ``source`` (``chgnet`` by default) from fh-screen's store,
or takes the entries it is given, fine-tunes the model
(:func:`fh_screen.models.finetune.run_finetune`: low learning rate, a few epochs, replay of a
seeded sample of ``train.csv``) and writes the new ``name@version`` into the model folder. A val
regression above the options' limit fails the job with one line (nothing written) unless
``force``. Its output is :class:`FinetuneDocument`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from jobflow import Maker
from pydantic import BaseModel, Field

from fh_screen.jobs.base import fh_screen_job
from fh_screen.models.finetune import FinetuneError, FinetuneOptions, NewEntries

logger = logging.getLogger(__name__)

__all__ = [
    "FinetuneDocument", "FinetuneMaker", "FinetunePlan", "check_store_entries", "default_output_dir", "finetune_to_folder",
    "plan_finetune", "store_entries",
]


class FinetuneDocument(BaseModel):
    """What a fine-tuning job wrote: the new model and its errors before/after (eV/atom)."""

    model_name: str = Field(description="Name of the new model.")
    model_version: str = Field(description="Its version (UTC date and weights hash).")
    model_path: str = Field(description="Path of its model.pt (pass it as --model / model=).")
    base: str = Field(description="The model it was fine-tuned from, name@version.")
    n_entries: int = Field(description="New entries it learned from.")
    entries: str = Field(description="Where the entries came from.")
    n_entries_rows: int | None = Field(None, description="Rows read from the entries (learned from or set aside).")
    entries_set_aside: dict[str, int] = Field(
        default_factory=dict, description="Rows of the entries set aside, by reason (outliers, pure elements, ...).")
    new_entries_mae_before: float
    new_entries_mae_after: float
    val_mae_before: float | None = None
    val_mae_after: float | None = None
    forced: bool = False
    seconds: float = 0.0

    @classmethod
    def from_report(cls, report: dict, path: Path, name: str, version: str) -> FinetuneDocument:
        """The document of a :func:`~fh_screen.models.finetune.run_finetune` report."""
        metrics = report["metrics"]
        val = {}
        if "val_before" in metrics:
            val = {"val_mae_before": metrics["val_before"]["val_abs_dhf_lt_5"]["mae_ev_per_atom"],
                   "val_mae_after": metrics["val_after"]["val_abs_dhf_lt_5"]["mae_ev_per_atom"]}
        return cls(model_name=name, model_version=version, model_path=str(path), base=report["base"],
                   n_entries=report["data"]["n_entries"], entries=report["data"]["entries"],
                   n_entries_rows=report["data"].get("n_entries_rows"),
                   entries_set_aside=report["data"].get("entries_set_aside") or {},
                   new_entries_mae_before=metrics["new_entries_before"]["mae_ev_per_atom"],
                   new_entries_mae_after=metrics["new_entries_after"]["mae_ev_per_atom"],
                   forced=bool(report.get("forced")), seconds=report["seconds"], **val)


def store_entries(source: str = "chgnet", *, chemsys: str | None = None, store_path: str | Path | None = None) -> pd.DataFrame:
    """The reference entries of ``source`` (``formula``, ``dhf_ev_per_atom``) in fh-screen's store.

    ``store_path``: an embedded store file (default: the configured store, MongoDB included).
    ``chemsys`` keeps the entries of one system and its subsystems. Raises :class:`FinetuneError`
    (one line) when the store holds none.
    """
    from fh_screen.store import FhScreenStore, SQLiteStore

    check_store_entries(source, chemsys=chemsys, store_path=store_path)
    if store_path is not None:  # the file ResultsBackMaker wrote: its reference collection is all that is read
        store = FhScreenStore(reference=SQLiteStore(store_path, "reference", key="formula", read_only=True),
                              ensure_indexes=False)
    else:
        store = FhScreenStore.from_settings(read_only=True)
    with store:
        frame = store.reference_frame(chemsys=chemsys, source=source)
        where = getattr(store.reference, "name", None) or store.name
    if not len(frame):
        raise FinetuneError(f"no reference entries of source {source!r}" + (f" in {chemsys}" if chemsys else "")
                            + f" in {where}: bring results back first (ResultsBackMaker)")
    return frame[["formula", "dhf_ev_per_atom"]]


def check_store_entries(source: Any, *, chemsys: Any = None, store_path: Any = None, store_must_exist: bool = True) -> None:
    """The checks of :func:`store_entries` that need no store: the source name, the system, the store file.

    ``store_must_exist=False``: the file may be written by a job that runs first (only a folder in
    its place is refused). Raises :class:`FinetuneError` (one line, the CLI's words).
    """
    from fh_screen.errors import FhScreenError, one_line
    from fh_screen.store.documents import subsystems
    from fh_screen.store.query import parse_sources

    try:
        if not isinstance(source, str):
            parse_sources(source)  # one message for every non-name
            raise FinetuneError(f"source must be one source name (e.g. chgnet), got {source!r}")
        parse_sources(source)
        if chemsys is not None:
            subsystems(chemsys)
    except FinetuneError:
        raise
    except FhScreenError as exc:
        raise FinetuneError(one_line(exc)) from None
    if store_path is not None:
        if not isinstance(store_path, (str, Path)):
            raise FinetuneError(f"store_path must be a store file path, got {store_path!r}")
        path = Path(store_path)
        if (store_must_exist and not path.is_file()) or path.is_dir():
            raise FinetuneError(f"no store at {store_path}")


@dataclass
class FinetunePlan:
    """What a fine-tuning will read and write, checked before any entry is read (:func:`plan_finetune`)."""

    base: Any
    name: str
    output_dir: Path
    train_path: Path
    val_path: Path


def plan_finetune(
    model: str | Path | None,
    *,
    name: str | None = None,
    output_dir: str | Path | None = None,
    train_path: str | Path | None = None,
    val_path: str | Path | None = None,
) -> FinetunePlan:
    """Every check of a fine-tuning that needs no new entries, in one place for the CLI and :class:`FinetuneMaker`.

    The model loads (name or path; None: the default model), the new name is usable (``""`` is
    refused, None gives ``<model>-ft``; no shipped or user model has it:
    :func:`~fh_screen.models.finetune.check_new_model_name`), the train and val files exist and
    differ, and the output folder (default :func:`default_output_dir`) is new or empty and can be
    written (:func:`~fh_screen.models.finetune.check_output_dir`, which leaves nothing behind).
    Raises :class:`FinetuneError` or the model's one-line error.
    """
    from fh_screen.data import shared_data_dir
    from fh_screen.models.finetune import check_new_model_name, check_output_dir
    from fh_screen.models.predictor import Predictor

    if model is not None and not isinstance(model, (str, Path)):
        raise FinetuneError(f"model must be a model name or checkpoint path, got {model!r}")
    for label, value in (("name", name), ("output_dir", output_dir), ("train_path", train_path), ("val_path", val_path)):
        if value is not None and not isinstance(value, (str, Path)):
            raise FinetuneError(f"{label} must be {'a text' if label == 'name' else 'a path'}, got {value!r}")
    base = Predictor.from_name(model).checkpoint  # an unknown model fails here, before any work
    name = check_new_model_name(name if name is not None else f"{base.name}-ft")
    if train_path is None or val_path is None:
        folder = shared_data_dir()
        train_path = train_path or folder / "train.csv"
        val_path = val_path or folder / "val.csv"
    train_path, val_path = Path(train_path), Path(val_path)
    for label, path in (("train", train_path), ("val", val_path)):
        if not path.is_file():
            raise FinetuneError(f"{label} file not found: {path}")
    if train_path.resolve() == val_path.resolve():
        raise FinetuneError(f"the replay file and the val file are the same ({train_path}): replay from train.csv only")
    output_dir = Path(output_dir) if output_dir is not None else default_output_dir(name)
    check_output_dir(output_dir)
    return FinetunePlan(base, name, output_dir, train_path, val_path)


def default_output_dir(name: str, settings=None) -> Path:
    """Where a user's model ``name`` goes: ``<model_dir>/<name>`` (found by name), else ``<data_dir>/models/<name>``."""
    if settings is None:
        from fh_screen.settings import FhScreenSettings

        settings = FhScreenSettings()
    root = settings.model_dir if settings.model_dir is not None else settings.data_dir / "models"
    return Path(root).expanduser() / name


def shipped_model_names() -> list[str]:
    """Names of the models shipped with fh-screen (a user's model may not take one)."""
    from importlib import resources

    shipped = Path(str(resources.files("fh_screen") / "pretrained"))
    return sorted(p.name for p in shipped.iterdir() if (p / "model.pt").is_file())


def finetune_to_folder(
    model: str | None,
    entries: pd.DataFrame | str | Path,
    *,
    name: str | None = None,
    output_dir: str | Path | None = None,
    train_path: str | Path | None = None,
    val_path: str | Path | None = None,
    options: FinetuneOptions = FinetuneOptions(),
    force: bool = False,
    entries_label: str = "entries",
    command: str | None = None,
    on_epoch=None,
    on_entries: Callable[[NewEntries], None] | None = None,
    plan: FinetunePlan | None = None,
) -> FinetuneDocument:
    """Load ``model`` (name or path; default model when None), fine-tune it on ``entries``, write it.

    The shared body of ``fh-screen finetune`` and :class:`FinetuneMaker`: :func:`plan_finetune`
    checks everything but the entries first (train/val default to the shared OQMD files, the
    output to :func:`default_output_dir`); the entries are read as ``fh-screen ingest`` reads
    them (:func:`~fh_screen.models.finetune.read_entries`) and ``on_entries`` is called with them
    (the CLI prints the rows set aside); the card and the document record those rows. ``plan``:
    the :func:`plan_finetune` of these arguments, already made (the model is not loaded again).
    """
    from fh_screen.models.finetune import read_entries, run_finetune

    if plan is None:
        plan = plan_finetune(model, name=name, output_dir=output_dir, train_path=train_path, val_path=val_path)
    new = read_entries(entries, entries_label)
    if new.n_set_aside:
        logger.info("%s", new.note())
    if on_entries is not None:
        on_entries(new)
    result = run_finetune(plan.base, new, plan.train_path, plan.val_path, plan.output_dir, options, name=plan.name,
                          force=force, entries_label=entries_label, command=command, on_epoch=on_epoch)
    checkpoint = result.checkpoint
    return FinetuneDocument.from_report(result.report, plan.output_dir / "model.pt", checkpoint.name, checkpoint.version)


def _entries_frame(entries: Any) -> pd.DataFrame:
    """The records given to :meth:`FinetuneMaker.make` as a frame; one line when they are not records."""
    if isinstance(entries, (str, bytes, dict)) or not isinstance(entries, Sequence):
        raise FinetuneError(f"entries must be a list of {{'formula', 'dhf_ev_per_atom'}} records, got {type(entries).__name__}")
    bad = next((e for e in entries if not isinstance(e, dict)), None)
    if bad is not None:
        raise FinetuneError(f"entries must be a list of {{'formula', 'dhf_ev_per_atom'}} records, got an item {bad!r}")
    return pd.DataFrame(list(entries))


def _entries_label(entries: Sequence) -> str:
    return f"{len(entries)} entries given to the job"


@dataclass
class FinetuneMaker(Maker):
    """A job that fine-tunes a model on new entries and writes it as a new ``name@version``.

    Parameters
    ----------
    name
        Job name.
    model
        The model to start from (name or path; None: the default model).
    model_name
        Name of the new model (default ``<model>-ft``).
    source
        Reference source whose entries the job learns from when it is given none (``chgnet``).
    chemsys
        Only the entries of this system and its subsystems (None: all of the source).
    store_path
        The fh-screen store file the entries are read from (default: the configured store).
    output_dir
        Folder of the new model (default ``<model_dir>/<model_name>``).
    train_path, val_path
        Replay and check files (default: the shared ``train.csv`` and ``val.csv``).
    options
        :class:`~fh_screen.models.finetune.FinetuneOptions` (or a dict of them).
    force
        Write the model even when val regressed by more than the options allow.
    """

    name: str = "fh-screen finetune"
    model: str | None = None
    model_name: str | None = None
    source: str = "chgnet"
    chemsys: str | None = None
    store_path: str | None = None
    output_dir: str | None = None
    train_path: str | None = None
    val_path: str | None = None
    options: Any = field(default_factory=FinetuneOptions)
    force: bool = False

    def check_make(self, upstream: Any = None, entries: Sequence[dict] | None = None):
        """The checks :meth:`make` runs when the job is made (one line, the CLI's words).

        Everything that needs no upstream data: the options, the model, the new model's name, the
        train and val files, the output folder, the source, system and store file the entries
        are read from, and entries given here (read as the job will read them, and within the
        model's elements). A store file
        may be missing when ``upstream`` is another job's output (it may write it); entries
        holding another job's output are read when the job runs. Returns ``(maker, args, kwargs)``.
        """
        from jobflow.core.reference import find_and_get_references

        maker = self
        if isinstance(self.options, dict):
            from pydantic import ValidationError

            try:
                options = FinetuneOptions(**{k: v for k, v in self.options.items() if not str(k).startswith("@")})
            except ValidationError as exc:
                error = exc.errors()[0]
                raise FinetuneError(f"finetune option {'.'.join(map(str, error['loc']))}: {error['msg']}") from None
            from dataclasses import replace

            maker = replace(self, options=options)
        elif not isinstance(self.options, FinetuneOptions):
            raise FinetuneError(f"options must be FinetuneOptions or a dict of them, got {type(self.options).__name__}")
        if not isinstance(self.force, bool):
            raise FinetuneError(f"force must be True or False, got {self.force!r}")
        plan = plan_finetune(self.model, name=self.model_name, output_dir=self.output_dir, train_path=self.train_path,
                             val_path=self.val_path)
        if entries is None:
            check_store_entries(self.source, chemsys=self.chemsys, store_path=self.store_path,
                                store_must_exist=not find_and_get_references(upstream))
        elif not find_and_get_references(entries):
            from fh_screen.models.finetune import check_entry_elements, read_entries

            check_entry_elements(read_entries(_entries_frame(entries), _entries_label(entries)), plan.base.elements)
        return maker, (upstream,), {"entries": entries}

    @fh_screen_job(output_schema=FinetuneDocument, check=check_make)
    def make(self, upstream: Any = None, entries: Sequence[dict] | None = None) -> FinetuneDocument:
        """A job that runs after ``upstream`` (e.g. a ResultsBackMaker's output) and fine-tunes.

        ``entries``: ``{"formula", "dhf_ev_per_atom"}`` records to learn from; None: the store's
        entries of :attr:`source`.
        """
        options = self.options if isinstance(self.options, FinetuneOptions) else FinetuneOptions(**self.options)
        if entries is not None:
            frame, label = _entries_frame(entries), _entries_label(entries)
        else:
            frame = store_entries(self.source, chemsys=self.chemsys, store_path=self.store_path)
            label = f"store source {self.source}" + (f" ({self.chemsys})" if self.chemsys else "")
        return finetune_to_folder(self.model, frame, name=self.model_name, output_dir=self.output_dir,
                                  train_path=self.train_path, val_path=self.val_path, options=options,
                                  force=self.force, entries_label=label, command=f"FinetuneMaker job {self.name!r}")
