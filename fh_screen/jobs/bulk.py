"""The bulk sweep as a jobflow flow: systems in disjoint batches, one job per batch.

``BulkScreenMaker().make(systems)`` returns a :class:`jobflow.Flow` of ``bulk_batch`` jobs, each
running :func:`fh_screen.sweep.run_sweep` on its own slice (the one screen service, one screen
document per system, systems already stored with this model and these options skipped). Run it
with ``run_locally`` or hand the jobs to jobflow-remote / FireWorks workers: each worker reads
the reference entries of its systems and writes its systems' documents to the store configured
where it runs (a MongoDB for several nodes, ``docs/bulk.md``); a batch that fails or is killed
is simply rerun, and resumes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jobflow import Flow, Maker
from pydantic import BaseModel, Field

from fh_screen.errors import FhScreenError
from fh_screen.jobs.base import fh_screen_job

__all__ = ["BulkBatchDocument", "BulkScreenMaker", "bulk_batch"]


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


@fh_screen_job(output_schema=BulkBatchDocument)
def bulk_batch(systems: list[str], screen_options: dict[str, Any] | None = None, model: str | None = None,
               keep_top: int | None = 100, store_file: str | None = None,
               sources: str | list[str] | None = None) -> BulkBatchDocument:
    """Sweep ``systems`` into the store (the store configured where the job runs, or ``store_file``).

    ``sources``: the reference sources that count for each hull (None: every source in the store);
    ``keep_top``: candidates kept per document (None or 0: all).
    """
    from fh_screen.screening import ScreenOptions
    from fh_screen.sweep import SweepOptions, run_sweep

    report = run_sweep(list(systems), ScreenOptions.from_mapping(screen_options or {}),
                       SweepOptions(model=model, store_file=store_file, keep_top=keep_top, sources=sources))
    return BulkBatchDocument(**report.to_json())


@dataclass
class BulkScreenMaker(Maker):
    """Split a sweep into ``batch_size`` batches, one :func:`bulk_batch` job each.

    Parameters
    ----------
    name
        Name of the flow.
    screen_options
        :class:`~fh_screen.screening.ScreenOptions` fields (empty: the defaults, as ``fh-screen bulk``).
    model
        Shipped model name or checkpoint path (None: the default model).
    keep_top
        Candidates kept per screen document (None or 0: all, as ``fh-screen bulk --keep-top 0``).
    batch_size
        Systems per job (a ternary costs ~0.15 s: 500 systems is a job of a minute or two).
    store_file
        Embedded store file (None: the store configured where each job runs).
    sources
        Reference sources that count for each hull (``"oqmd,chgnet"`` or a list; None: every
        source in the store), as ``fh-screen bulk --sources``.
    """

    name: str = "bulk screen"
    screen_options: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    keep_top: int | None = 100
    batch_size: int = 500
    store_file: str | None = None
    sources: str | list[str] | None = None

    def make(self, systems: Sequence[str] | str) -> Flow:
        """The flow for ``systems`` (checked here: a bad system or option fails at ``make()`` with one line)."""
        from fh_screen.chem.candidates import parse_chemsys
        from fh_screen.models.predictor import check_model_reference
        from fh_screen.screening import ScreenOptions
        from fh_screen.sweep import check_keep_top, check_screen_options

        if isinstance(systems, str):
            systems = [systems]
        if not isinstance(self.screen_options, Mapping):
            raise FhScreenError(f"screen_options must be a mapping of ScreenOptions fields, got {self.screen_options!r}")
        # an unknown name, a bad value or a limit the screen refuses (max_atoms from 2, ...): one line
        check_screen_options(ScreenOptions.from_mapping(self.screen_options))
        check_model_reference(self.model)  # a wrong name or version fails here, not in every batch at run time
        keep_top = check_keep_top(self.keep_top)
        if self.sources is not None:
            from fh_screen.store.query import parse_sources

            parse_sources(self.sources)  # a bad list fails at make(), in one line
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise FhScreenError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        canonical = list(dict.fromkeys("-".join(parse_chemsys(s)) for s in systems))
        if not canonical:
            raise FhScreenError("no system to sweep")
        jobs = []
        for start in range(0, len(canonical), self.batch_size):
            batch = canonical[start:start + self.batch_size]
            job = bulk_batch(batch, dict(self.screen_options), self.model, keep_top, self.store_file, self.sources)
            job.name = f"{self.name} {start // self.batch_size + 1}"
            jobs.append(job)
        return Flow(jobs, output=[j.output for j in jobs], name=self.name)
