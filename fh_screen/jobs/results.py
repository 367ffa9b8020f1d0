"""Bring results back: a job that turns the finished calculations of its own JobStore into reference entries.

:class:`ResultsBackMaker` makes a job a flow can end with (after the handoff's relaxes or DFT
flows, e.g. ``Flow([..., ResultsBackMaker().make(handoff.output)])``): when it runs it reads the
JobStore it runs in (``jobflow.CURRENT_JOB.store``, or ``job_store`` if given), computes the
missing force-field element references with ``force_field_maker`` (cached), and runs
:class:`~fh_screen.store.results_builder.ResultsBuilder` into fh-screen's configured store
(``results``, ``element_references`` and ``reference`` collections of the embedded file, or the
``store_path`` given). Its output counts what came back, by state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobflow import Maker

from fh_screen.jobs.base import fh_screen_job

logger = logging.getLogger(__name__)

__all__ = ["ResultsBackMaker", "bring_results_back"]


def bring_results_back(job_store, store_path: str | Path, force_field_maker=None) -> dict[str, Any]:
    """Run the results builder from ``job_store`` into the embedded store at ``store_path``.

    Returns ``{"states": {state: count}, "formulas": [...successful...], "n_results": total}``.
    """
    from fh_screen.store.backend import SQLiteStore
    from fh_screen.store.results_builder import ResultsBuilder, SOURCES, force_field_element_references, parse_task

    store_path = Path(store_path)
    store_path.parent.mkdir(parents=True, exist_ok=True)
    results = SQLiteStore(store_path, "results", key="result_id")
    elements = SQLiteStore(store_path, "element_references", key="reference_id")
    reference = SQLiteStore(store_path, "reference", key="formula")
    if force_field_maker is not None:
        job_store.connect()
        wanted: set[str] = set()
        for doc in job_store.query({"output": {"$ne": None}}, properties=["uuid", "index", "name", "output", "metadata"]):
            facts = parse_task(doc)
            if facts is not None and facts["source"] == SOURCES["force_field"] and facts["composition"] is not None:
                wanted |= {str(e) for e in facts["composition"].elements}
        elements.connect()
        force_field_element_references(sorted(wanted), force_field_maker, elements)
        elements.close()
    before = set()
    results.connect()
    before = set(results.distinct("result_id"))
    results.close()
    # the builder's own run() closes every store at the end, the JobStore jobflow is writing to
    # included; the steps run here and only fh-screen's stores are closed
    builder = ResultsBuilder(job_store, results, reference, elements)
    builder.connect()
    for item in builder.get_items():
        builder.update_targets([builder.process_item(item)])
    for store in (results, reference, elements):
        store.close()
    results.connect()
    docs = [d for d in results.query({}) if d["result_id"] not in before]
    results.close()
    states: dict[str, int] = {}
    for doc in docs:
        states[doc["state"]] = states.get(doc["state"], 0) + 1
    return {"states": states, "n_results": len(docs),
            "formulas": sorted({d["formula"] for d in docs if d["state"] == "successful" and d["formula"]})}


@dataclass
class ResultsBackMaker(Maker):
    """A job that brings the finished force-field/VASP calculations of its JobStore back into fh-screen's store.

    Parameters
    ----------
    name
        Job name.
    force_field_maker
        The maker the force-field relaxes used (e.g. ``chgnet_prerelax_maker()``): elemental
        references are relaxed with it once per element. None: only cached references are used.
    store_path
        The fh-screen store file (default: the configured embedded store).
    """

    name: str = "fh-screen results back"
    force_field_maker: Any = None
    store_path: str | None = None

    def make(self, upstream: Any = None, job_store=None):
        """A job that runs after ``upstream`` (any output reference) and returns the counts of what came back.

        The job reads the JobStore it runs in (its config exposes the store), unless
        ``job_store`` is given.
        """
        made = _results_back_job(self.force_field_maker, self.store_path, upstream, job_store)
        made.name = self.name
        made.config.expose_store = True
        return made


@fh_screen_job
def _results_back_job(force_field_maker, store_path, upstream=None, job_store=None) -> dict:
    """The body of :meth:`ResultsBackMaker.make`'s job."""
    from jobflow import CURRENT_JOB

    from fh_screen.settings import FhScreenSettings

    store = job_store if job_store is not None else CURRENT_JOB.store
    if store is None:
        from fh_screen.errors import FhScreenError

        raise FhScreenError("results back: no JobStore to read (run the job in a flow, or pass job_store)")
    from fh_screen.version import __version__

    counts = bring_results_back(store, store_path or FhScreenSettings().store_path, force_field_maker)
    return {**counts, "fh_screen_version": __version__}
