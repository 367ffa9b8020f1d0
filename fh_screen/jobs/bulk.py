"""The bulk sweep as a jobflow flow: systems in disjoint batches, one job per batch.

``BulkScreenMaker().make(systems)`` returns a :class:`jobflow.Flow` of batch jobs, each made by a
:class:`BulkBatchMaker` (a ``BulkScreenMaker`` whose ``make`` is the job, so powerups reach it) and
running :func:`fh_screen.sweep.run_sweep` on its own slice (the one screen service, one screen
document per system, systems already stored with this model and these options skipped). Run it
with ``run_locally`` or hand the jobs to jobflow-remote / FireWorks workers: each worker reads
the reference entries of its systems and writes its systems' documents to the store configured
where it runs (a MongoDB for several nodes, ``docs/bulk.md``); a batch that fails or is killed
is simply rerun, and resumes.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from jobflow import Flow
from pydantic import BaseModel, Field

from fh_screen.errors import FhScreenError, one_line
from fh_screen.jobs.base import CheckedMaker, fh_screen_job

__all__ = ["BulkBatchDocument", "BulkBatchMaker", "BulkScreenMaker", "bulk_batch"]


class BulkBatchDocument(BaseModel):
    """What one batch of a sweep did (:class:`fh_screen.sweep.SweepReport`)."""

    model: str = Field(description="model name@version")
    systems_total: int = Field(0, description="systems of the batch")
    systems_done: int = Field(0, description="systems screened and saved by this job")
    systems_skipped: int = Field(0, description="systems already stored with this model and options")
    systems_failed: int = Field(0, description="systems that could not be screened (refused for size, ...)")
    candidates: int = Field(0, description="candidates screened by this job")
    likely: int = Field(0, description="new candidates with P(stable) >= 0.5")
    seconds: float = Field(0.0, description="wall time of the batch")
    processes: int = Field(1, description="worker processes of the batch")
    failures: list[dict[str, str]] = Field(default_factory=list, description="system and one-line reason of each failure")
    stopped: str = Field("", description="why the batch stopped early, if it did")
    notes: list[str] = Field(default_factory=list, description="lines for the user, e.g. a requested source the store "
                                                                 "holds no reference entry of (a typo)")
    no_reference: list[str] = Field(default_factory=list, description="systems screened with no reference compound on "
                                                                        "the hull (a rerun screens them again once the "
                                                                        "store holds one)")


def _sweep_batch(systems: list[str], screen_options: Mapping[str, Any] | None, model: str | None,
                 keep_top: int | None, store_file: str | None, sources: str | list[str] | None) -> BulkBatchDocument:
    """:func:`fh_screen.sweep.run_sweep` of ``systems``, as a :class:`BulkBatchDocument`."""
    from fh_screen.screening import ScreenOptions
    from fh_screen.sweep import SweepOptions, run_sweep

    report = run_sweep(list(systems), ScreenOptions.from_mapping(dict(screen_options or {})),
                       SweepOptions(model=model, store_file=store_file, keep_top=keep_top, sources=sources))
    return BulkBatchDocument(**report.to_json())


@fh_screen_job(output_schema=BulkBatchDocument)
def bulk_batch(systems: list[str], screen_options: dict[str, Any] | None = None, model: str | None = None,
               keep_top: int | None = 100, store_file: str | None = None,
               sources: str | list[str] | None = None) -> BulkBatchDocument:
    """Sweep ``systems`` into the store (the store configured where the job runs, or ``store_file``).

    ``sources``: the reference sources that count for each hull (None: every source in the store);
    ``keep_top``: candidates kept per document (None or 0: all). A job with its values fixed
    (powerups do not reach it): :class:`BulkScreenMaker` makes its batches with
    :class:`BulkBatchMaker` instead.
    """
    return _sweep_batch(systems, screen_options, model, keep_top, store_file, sources)


def _screen_options_mapping(value: Any) -> Any:
    """``ScreenOptions`` as the mapping of its fields (what the maker holds and serialises); anything else as given."""
    from fh_screen.screening import ScreenOptions

    return dataclasses.asdict(value) if isinstance(value, ScreenOptions) else value


@dataclass
class BulkScreenMaker(CheckedMaker):
    """Split a sweep into ``batch_size`` batches, one :class:`BulkBatchMaker` job each.

    Parameters
    ----------
    name
        Name of the flow (the batch jobs are ``"<name> 1"``, ``"<name> 2"``, ...).
    screen_options
        :class:`~fh_screen.screening.ScreenOptions`, or a mapping of its fields (empty: the
        defaults, as ``fh-screen bulk``); options are held as the mapping of their fields.
    model
        Shipped model name or checkpoint path (None: the default model).
    keep_top
        Candidates kept per screen document (None or 0: all, as ``fh-screen bulk --keep-top 0``).
    batch_size
        Systems per job (a ternary costs ~0.15 s: 500 systems is a job of a minute or two).
    store_file
        Embedded store file (None: the store configured where each job runs); a file that does
        not exist yet is made (and filled) when the first batch runs. A value that is not a path,
        a folder, a file that is not a store or a place where no file can be written fails at
        ``make()``.
    sources
        Reference sources that count for each hull (``"oqmd,chgnet"`` or a list; None: every
        source in the store), as ``fh-screen bulk --sources``.

    Notes
    -----
    Every field is checked at ``make()`` and again when a powerup updates the maker
    (``flow.update_maker_kwargs({...}, class_filter=BulkScreenMaker)`` reaches every batch job):
    one line, a typo included.
    """

    error: ClassVar[type[Exception]] = FhScreenError

    name: str = "bulk screen"
    screen_options: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    keep_top: int | None = 100
    batch_size: int = 500
    store_file: str | None = None
    sources: str | list[str] | None = None

    def __post_init__(self) -> None:
        self.screen_options = _screen_options_mapping(self.screen_options)
        if isinstance(self.store_file, os.PathLike):
            self.store_file = os.fspath(self.store_file)

    def _check(self) -> int | None:
        """Validate every field (one line); returns ``keep_top`` as the sweep takes it (0 → None)."""
        from fh_screen.jobs.results import check_store_path
        from fh_screen.models.predictor import check_model_reference
        from fh_screen.screening import ScreenOptions
        from fh_screen.sweep import check_keep_top, check_screen_options

        if not isinstance(self.name, str):
            raise FhScreenError(f"{type(self).__name__}.name must be a text, got {self.name!r}")
        self.__post_init__()  # fields set after construction: the same conversions
        if not isinstance(self.screen_options, Mapping):
            raise FhScreenError(f"screen_options must be ScreenOptions or a mapping of their fields, "
                                f"got {type(self.screen_options).__name__}")
        # an unknown name, a bad value or a limit the screen refuses (max_atoms from 2, ...): one line
        check_screen_options(ScreenOptions.from_mapping(self.screen_options))
        check_model_reference(self.model)  # a wrong name or version fails here, not in every batch at run time
        keep_top = check_keep_top(self.keep_top)
        if self.sources is not None:
            from fh_screen.store.query import parse_sources

            parse_sources(self.sources)  # a bad list fails at make(), in one line
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise FhScreenError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        try:  # a store file may be new; a folder, a non-store file or an unwritable place is refused
            check_store_path(self.store_file)
        except FhScreenError as exc:
            raise FhScreenError(one_line(exc).replace("store_path", "store_file")) from None
        return keep_top

    def make(self, systems: Sequence[str] | str) -> Flow:
        """The flow for ``systems`` (checked here: a bad system or option fails at ``make()`` with one line)."""
        from fh_screen.chem.candidates import parse_chemsys

        keep_top = self._check()
        if isinstance(systems, str):
            systems = [systems]
        if isinstance(systems, (Mapping, bytes)) or not isinstance(systems, Iterable):
            raise FhScreenError(f"systems must be a chemical system such as 'Li-Fe-O' or a list of them, "
                                f"got {type(systems).__name__}")
        canonical = list(dict.fromkeys("-".join(parse_chemsys(s)) for s in systems))
        if not canonical:
            raise FhScreenError("no system to sweep")
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(BulkScreenMaker) if f.init}
        jobs = []
        for start in range(0, len(canonical), self.batch_size):
            batch_maker = BulkBatchMaker(**{**fields, "name": f"{self.name} {start // self.batch_size + 1}",
                                           "screen_options": dict(self.screen_options), "keep_top": keep_top})
            jobs.append(batch_maker.make(canonical[start:start + self.batch_size]))
        return Flow(jobs, output=[j.output for j in jobs], name=self.name)


@dataclass
class BulkBatchMaker(BulkScreenMaker):
    """The maker of one batch job of a :class:`BulkScreenMaker` flow: its ``make`` is the job.

    A ``BulkScreenMaker`` (the same fields, ``batch_size`` unused), so
    ``flow.update_maker_kwargs(update, class_filter=BulkScreenMaker)`` (or ``BulkBatchMaker``)
    reaches every batch and re-validates it. The job sweeps its systems into the store
    (the one configured where it runs, or ``store_file``) and returns a :class:`BulkBatchDocument`.
    """

    name: str = "bulk screen batch"

    def check_make(self, systems: Sequence[str] | str):
        """The checks the batch job runs when it is made: the fields and the systems (one line)."""
        from fh_screen.chem.candidates import parse_chemsys

        self._check()
        if isinstance(systems, str):
            systems = [systems]
        if isinstance(systems, (Mapping, bytes)) or not isinstance(systems, Iterable):
            raise FhScreenError(f"systems must be a list of chemical systems, got {type(systems).__name__}")
        batch = list(dict.fromkeys("-".join(parse_chemsys(s)) for s in systems))
        if not batch:
            raise FhScreenError("no system to sweep")
        return self, (batch,), {}

    @fh_screen_job(output_schema=BulkBatchDocument, check=check_make)
    def make(self, systems: list[str]) -> BulkBatchDocument:
        """The batch job: :func:`fh_screen.sweep.run_sweep` of ``systems`` with this maker's fields."""
        keep_top = self._check()  # what a worker loaded: the same checks, one line
        return _sweep_batch(systems, self.screen_options, self.model, keep_top, self.store_file, self.sources)
