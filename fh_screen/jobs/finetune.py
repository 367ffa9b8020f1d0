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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from jobflow import Maker
from pydantic import BaseModel, Field

from fh_screen.jobs.base import fh_screen_job
from fh_screen.models.finetune import FinetuneError, FinetuneOptions

logger = logging.getLogger(__name__)

__all__ = ["FinetuneDocument", "FinetuneMaker", "default_output_dir", "finetune_to_folder", "store_entries"]


class FinetuneDocument(BaseModel):
    """What a fine-tuning job wrote: the new model and its errors before/after (eV/atom)."""

    model_name: str = Field(description="Name of the new model.")
    model_version: str = Field(description="Its version (UTC date and weights hash).")
    model_path: str = Field(description="Path of its model.pt (pass it as --model / model=).")
    base: str = Field(description="The model it was fine-tuned from, name@version.")
    n_entries: int = Field(description="New entries it learned from.")
    entries: str = Field(description="Where the entries came from.")
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

    if store_path is not None:  # the file ResultsBackMaker wrote: its reference collection is all that is read
        if not Path(store_path).is_file():
            raise FinetuneError(f"no store at {store_path}")
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
    entries: pd.DataFrame,
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
) -> FinetuneDocument:
    """Load ``model`` (name or path; default model when None), fine-tune it on ``entries``, write it.

    The shared body of ``fh-screen finetune`` and :class:`FinetuneMaker`: train/val default to
    the shared OQMD files (``train.csv``, ``val.csv``), the output to :func:`default_output_dir`.
    """
    from fh_screen.data import shared_data_dir
    from fh_screen.models.finetune import check_model_name, entries_table, run_finetune
    from fh_screen.models.predictor import Predictor

    base = Predictor.from_name(model).checkpoint  # an unknown model fails here, before any work
    name = check_model_name(name or f"{base.name}-ft", shipped_model_names())
    if train_path is None or val_path is None:
        folder = shared_data_dir()
        train_path = train_path or folder / "train.csv"
        val_path = val_path or folder / "val.csv"
    for label, path in (("train", train_path), ("val", val_path)):
        if not Path(path).is_file():
            raise FinetuneError(f"{label} file not found: {path}")
    table = entries_table(entries, entries_label)
    output_dir = Path(output_dir) if output_dir is not None else default_output_dir(name)
    result = run_finetune(base, table, train_path, val_path, output_dir, options, name=name, force=force,
                          entries_label=entries_label, command=command, on_epoch=on_epoch)
    checkpoint = result.checkpoint
    return FinetuneDocument.from_report(result.report, output_dir / "model.pt", checkpoint.name, checkpoint.version)


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

    def check_make(self, *args, **kwargs):
        """The checks :meth:`make` runs when the job is made: the options and the new model's name
        (a typo fails at ``make()``, one line). Returns ``(maker, args, kwargs)`` for the job."""
        from fh_screen.models.finetune import check_model_name

        if self.model_name is not None:
            check_model_name(self.model_name, shipped_model_names())
        if isinstance(self.options, dict):
            from pydantic import ValidationError

            try:
                options = FinetuneOptions(**{k: v for k, v in self.options.items() if not str(k).startswith("@")})
            except ValidationError as exc:
                error = exc.errors()[0]
                raise FinetuneError(f"finetune option {'.'.join(map(str, error['loc']))}: {error['msg']}") from None
            from dataclasses import replace

            return replace(self, options=options), args, kwargs
        return self, args, kwargs

    @fh_screen_job(output_schema=FinetuneDocument, check=check_make)
    def make(self, upstream: Any = None, entries: Sequence[dict] | None = None) -> FinetuneDocument:
        """A job that runs after ``upstream`` (e.g. a ResultsBackMaker's output) and fine-tunes.

        ``entries``: ``{"formula", "dhf_ev_per_atom"}`` records to learn from; None: the store's
        entries of :attr:`source`.
        """
        options = self.options if isinstance(self.options, FinetuneOptions) else FinetuneOptions(**self.options)
        if entries is not None:
            frame, label = pd.DataFrame(list(entries)), f"{len(entries)} entries given to the job"
        else:
            frame = store_entries(self.source, chemsys=self.chemsys, store_path=self.store_path)
            label = f"store source {self.source}" + (f" ({self.chemsys})" if self.chemsys else "")
        return finetune_to_folder(self.model, frame, name=self.model_name, output_dir=self.output_dir,
                                  train_path=self.train_path, val_path=self.val_path, options=options,
                                  force=self.force, entries_label=label, command=f"FinetuneMaker job {self.name!r}")
