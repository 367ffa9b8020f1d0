"""Bring results back: a job that turns the finished calculations of its own JobStore into reference entries.

:class:`ResultsBackMaker` makes a job a flow can end with (after the handoff's relaxes or DFT
flows, e.g. ``Flow([..., ResultsBackMaker().make(handoff.output)])``): when it runs it reads the
JobStore it runs in (``jobflow.CURRENT_JOB.store``, or ``job_store`` if given), computes the
missing force-field element references with ``force_field_maker`` (cached), and runs
:class:`~fh_screen.store.results_builder.ResultsBuilder` into fh-screen's configured store — the
one every screen, query and ``fh-screen finetune`` reads (:func:`results_stores`): the
``reference``, ``results`` and ``element_references`` collections of the embedded file, or of
the MongoDB database when ``mongo_uri`` / ``FH_SCREEN_MONGO_URI`` is set; or of the embedded
``store_path`` file given. Its output counts what came back, by state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobflow import Job, Maker

from fh_screen.errors import FhScreenError
from fh_screen.jobs.base import fh_screen_job

if TYPE_CHECKING:
    from jobflow import JobStore
    from maggma.core import Store

    from fh_screen.settings import FhScreenSettings

logger = logging.getLogger(__name__)

__all__ = [
    "RESULTS_COLLECTIONS", "ResultsBackError", "ResultsBackMaker", "bring_results_back", "check_force_field_maker",
    "check_flag", "check_job_store", "check_store_path", "check_upstream", "results_stores",
]

#: Default names of the two collections the results builder adds beside ``reference``
#: (``results_collection`` / ``element_references_collection`` in the settings name them instead).
RESULTS_COLLECTIONS = {"results": "results", "element_references": "element_references"}
_KEYS = {"results": "result_id", "element_references": "reference_id"}


#: the first bytes of every SQLite database file (an embedded store is one)
_SQLITE_HEADER = b"SQLite format 3\x00"


class ResultsBackError(FhScreenError):
    """Results that cannot be brought back as asked (a bad store path, maker or JobStore); one line."""


def check_store_path(store_path: Any) -> Path | None:
    """``store_path`` as a path if an embedded store file can be written there (None stays None).

    Refused in one line (:class:`ResultsBackError`): a value that is not a path, a folder in
    the file's place, and a folder that cannot hold it (a file in the way, not writable, or a
    place where no folder can be made, such as ``/proc``). Nothing is left behind.
    """
    import os
    import tempfile

    if store_path is None:
        return None
    if not isinstance(store_path, (str, os.PathLike)) or not str(store_path).strip():
        raise ResultsBackError(f"store_path must be the path of an embedded store file, got {store_path!r}")
    path = Path(store_path).expanduser()
    if path.is_dir():
        raise ResultsBackError(f"store_path {path} is a folder: give the path of a store file")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ResultsBackError(f"cannot write the store {path}: {folder} is not a folder")
    if path.exists():
        if not path.is_file():
            raise ResultsBackError(f"store_path {path} is not a file: give the path of a store file")
        if not os.access(path, os.R_OK | os.W_OK):
            raise ResultsBackError(f"cannot write the store {path}: the file is not writable")
        with open(path, "rb") as handle:
            header = handle.read(len(_SQLITE_HEADER))
        if header and header != _SQLITE_HEADER:  # an empty file is a new store, as SQLite reads it
            raise ResultsBackError(f"store_path {path} is not an fh-screen store (not an SQLite database file)")
        return path
    try:  # the one sure test that a file (or its folders) can be made there: make one, remove it
        os.rmdir(tempfile.mkdtemp(prefix=".fh-screen-check-", dir=folder))
    except OSError as exc:
        raise ResultsBackError(f"cannot write the store {path}: {exc.strerror or exc} in {folder}") from None
    return path


def check_force_field_maker(maker: Any) -> None:
    """Refuse (one line) a ``force_field_maker`` that is not an atomate2 force-field relax maker (None passes)."""
    if maker is None:
        return
    if not isinstance(maker, Maker):
        raise ResultsBackError(f"force_field_maker must be an atomate2 force-field relax maker "
                               f"(e.g. chgnet_prerelax_maker()) or None, got {type(maker).__name__} {maker!r:.40}")
    if getattr(maker, "force_field_name", None) is None:
        raise ResultsBackError(f"cannot tell the force field of {type(maker).__name__}: force_field_maker must be an "
                               "atomate2 force-field relax maker with a force_field_name (e.g. chgnet_prerelax_maker())")


def check_job_store(job_store: Any) -> None:
    """Refuse (one line) a ``job_store`` that is neither a jobflow JobStore nor a maggma Store (None passes)."""
    from jobflow import JobStore
    from maggma.core import Store

    if job_store is not None and not isinstance(job_store, (JobStore, Store)):
        raise ResultsBackError(f"job_store must be a jobflow JobStore or a maggma Store, got {type(job_store).__name__}")


def check_flag(name: str, value: Any) -> None:
    """Refuse (one line) a switch that is not True or False (``"no"`` would read as on)."""
    if not isinstance(value, bool):
        raise ResultsBackError(f"{name} must be True or False, got {value!r}")


def check_upstream(upstream: Any) -> None:
    """Refuse (one line) a Flow or Job given where its output is meant: the job would not wait for it."""
    from jobflow import Flow

    if isinstance(upstream, (Flow, Job)):
        raise ResultsBackError(f"make() takes the output of the calculations ({type(upstream).__name__.lower()}.output), "
                               f"not the {type(upstream).__name__} itself: the job would not wait for it to finish")


def results_stores(
    store_path: str | Path | None = None, settings: FhScreenSettings | None = None,
) -> tuple[Store, Store, Store, str]:
    """The ``(results, element_references, reference)`` collections the results come back into, and where they are.

    Parameters
    ----------
    store_path
        An embedded store file: its ``results``, ``element_references`` and ``reference``
        collections (the file ``fh-screen --store FILE`` and ``FinetuneMaker(store_path=FILE)``
        read); a new file is filled with the shipped OQMD table first, as every door fills it. None: fh-screen's configured store (:class:`~fh_screen.settings.FhScreenSettings`),
        the one :meth:`~fh_screen.store.FhScreenStore.from_settings` opens for screens and
        queries — MongoDB when ``mongo_uri`` is set (one line when the server does not answer),
        else the embedded file (filled with the shipped OQMD table on first use).
    settings
        The settings to use (default: read from ``~/.fh_screen.yaml`` and ``FH_SCREEN_*``).

    Returns
    -------
    tuple
        Three unconnected maggma Stores (keys ``result_id``, ``reference_id``, ``formula``) and a
        password-free label of the store for messages.
    """
    from fh_screen.store import FhScreenStore, SQLiteStore

    if store_path is not None:
        path = check_store_path(store_path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ResultsBackError(f"cannot write the store {path}: {exc.strerror or exc}") from None
        from fh_screen.store.bootstrap import fill_store_file

        # a new file is a whole store filled with the shipped table, as `fh-screen SYSTEM --store FILE` makes it:
        # a screen of it must not see the results alone as the known phases
        fill_store_file(path)
        FhScreenStore.embedded(path).connect().close()  # a whole store: `fh-screen query --store FILE` opens it
        return (SQLiteStore(path, RESULTS_COLLECTIONS["results"], key=_KEYS["results"]),
                SQLiteStore(path, RESULTS_COLLECTIONS["element_references"], key=_KEYS["element_references"]),
                SQLiteStore(path, "reference", key="formula"), str(path))
    if settings is None:
        from fh_screen.settings import FhScreenSettings

        settings = FhScreenSettings()
    configured = FhScreenStore.from_settings(settings)  # the reference every screen reads (filled on first use)
    reference = configured.reference
    names = {which: getattr(settings, f"{which}_collection") for which in RESULTS_COLLECTIONS}
    if settings.mongo_uri:
        from fh_screen.store.mongo import mongo_collection

        results, elements = (mongo_collection(settings, names[w], _KEYS[w]) for w in ("results", "element_references"))
        return results, elements, reference, configured.name
    path = settings.store_path
    path.parent.mkdir(parents=True, exist_ok=True)
    configured.connect().close()  # every collection, so that the read-only doors (fh-screen query, runs) open the file
    results, elements = (SQLiteStore(path, names[w], key=_KEYS[w], busy_timeout_s=settings.busy_timeout_s)
                         for w in ("results", "element_references"))
    return results, elements, reference, str(path)


def bring_results_back(
    job_store: JobStore | Store,
    store_path: str | Path | None = None,
    force_field_maker: Maker | None = None,
    refresh_force_field_references: bool = False,
    refresh_vasp_references: bool = False,
) -> dict[str, Any]:
    """Run the results builder from ``job_store`` into fh-screen's store.

    Parameters
    ----------
    job_store
        The jobflow ``JobStore`` (or its docs store) holding the finished jobs.
    store_path
        An embedded store file to write into; None (default): the configured store, embedded or
        MongoDB (:func:`results_stores`), so that screens and ``fh-screen finetune`` see the results.
    force_field_maker
        The maker the force-field relaxes used: the missing element references are relaxed with
        it (cached in ``element_references``); a relax of the pure element in ``job_store``
        that came out lower (of the same model) is the reference instead. None: only cached
        references are used.
    refresh_force_field_references
        Relax the element references of ``force_field_maker``'s source again (the cached ones are
        replaced, e.g. those cached before the ground-state prototypes) and rebuild every result of
        that source against them. Needs ``force_field_maker``. Every element cached before is
        relaxed again, and the cache changes only once every relax succeeded: a failed relax
        leaves the earlier references as they were.
    refresh_vasp_references
        Pin the VASP element references again to the lowest pure-element task in ``job_store``
        and rebuild every VASP result against them (what a note about a lower element task asks for).

    Returns
    -------
    dict
        ``{"states": {state: count}, "formulas": [...successful...], "n_results": total, "store": where,
        "duplicates": {"formula|source": [job uuids, the entry's first]}, "notes": [...]}``. The
        counts cover every result new or changed (state or ΔH_f) by this run, e.g. a ``no_reference``
        one whose element reference arrived. A composition and source with several successful
        results keeps them all; the lowest is the reference entry (pure elements are not entries:
        their lowest VASP task is pinned as the element reference). ``notes``: one line per
        pure-element VASP task lower than its pinned reference (rebuild with ``refresh_vasp_references=True``).

    Raises
    ------
    ResultsBackError
        One line, for a ``job_store``, ``store_path`` or ``force_field_maker`` that cannot be
        used, before anything is read or written.
    """
    from fh_screen.store.results_builder import (
        ResultsBuilder,
        force_field_element_references,
        force_field_model,
        force_field_source,
        lowest_force_field_elements,
        parse_task,
    )

    if job_store is None:
        raise ResultsBackError("results back: no JobStore to read (run the job in a flow, or pass job_store)")
    check_job_store(job_store)
    check_force_field_maker(force_field_maker)
    check_flag("refresh_force_field_references", refresh_force_field_references)
    check_flag("refresh_vasp_references", refresh_vasp_references)
    if refresh_force_field_references and force_field_maker is None:
        raise ResultsBackError("refresh_force_field_references needs the force_field_maker that relaxes the references")
    results, elements, reference, where = results_stores(store_path)
    refreshed: str | None = None
    if force_field_maker is not None:
        from maggma.stores import MemoryStore

        job_store.connect()
        source = force_field_source(force_field_maker.force_field_name)
        tasks = []
        for doc in job_store.query({"output": {"$ne": None}}, properties=["uuid", "index", "name", "output", "metadata"]):
            facts = parse_task(doc)
            if facts is not None and facts["source"] == source and facts["composition"] is not None:
                tasks.append(facts)
        wanted = sorted({str(e) for facts in tasks for e in facts["composition"].elements})
        elements.connect()
        cached = set(elements.distinct("element", {"source": source}))
        if refresh_force_field_references:
            # every element cached before is relaxed again too (its results are rebuilt), into a scratch
            # store first: the cache changes only once every relax succeeded (a failure raises here)
            fresh = MemoryStore(collection_name="element_references", key="reference_id")
            fresh.connect()
            relaxed = force_field_element_references(sorted(set(wanted) | cached), force_field_maker, fresh)
            elements.update([{k: v for k, v in doc.items() if k != "_id"} for doc in fresh.query({})],
                            key="reference_id")  # one key per element and source: replaced
            cached, refreshed = set(), source
        else:
            relaxed = force_field_element_references(wanted, force_field_maker, elements)
        # a reference cached now is the lower of the relaxed prototypes and the JobStore's own relaxes of the element
        lower = [doc for element, doc in lowest_force_field_elements(tasks, source, force_field_model(force_field_maker)).items()
                 if element not in cached and doc.energy_per_atom_ev < relaxed[element] - 1e-9]
        for doc in lower:
            logger.info("the %s reference of %s is job %s at %.4f eV/atom, below the best prototype (%.4f)",
                        source, doc.element, doc.job_uuid, doc.energy_per_atom_ev, relaxed[doc.element])
        if lower:
            elements.update([doc.model_dump() for doc in lower], key="reference_id")
        elements.close()
    results.connect()
    before = {d["result_id"]: (d.get("state"), d.get("dhf_ev_per_atom"))
              for d in results.query({}, properties=["result_id", "state", "dhf_ev_per_atom"])}
    results.close()
    # the builder's own run() closes every store at the end, the JobStore jobflow is writing to
    # included; the steps run here and only fh-screen's stores are closed
    builder = ResultsBuilder(job_store, results, reference, elements, rebuild_source=refreshed,
                             refresh_vasp_references=refresh_vasp_references)
    builder.connect()
    for item in builder.get_items():
        builder.update_targets([builder.process_item(item)])
    for store in (results, reference, elements):
        store.close()
    results.connect()
    docs = [d for d in results.query({}) if before.get(d["result_id"]) != (d.get("state"), d.get("dhf_ev_per_atom"))]
    # pure elements are the pinned element references, not entries: never duplicates
    duplicates = _duplicates(results, {(d["formula"], d["source"]) for d in docs
                                       if d.get("formula") and "-" in (d.get("chemsys") or "")})
    results.close()
    states: dict[str, int] = {}
    for doc in docs:
        states[doc["state"]] = states.get(doc["state"], 0) + 1
    logger.info("results back into %s: %s", where, states or "nothing new or changed")
    for key, jobs in duplicates.items():
        logger.info("%s: %d successful results, all kept (fh-screen results --formula); the lowest is the entry",
                    key, len(jobs))
    return {"states": states, "n_results": len(docs), "store": where, "duplicates": duplicates,
            "formulas": sorted({d["formula"] for d in docs if d["state"] == "successful" and d["formula"]}),
            "notes": list(builder.notes)}


def _duplicates(results: Store, touched: set[tuple[str, str]]) -> dict[str, list[str]]:
    """``"formula|source"`` -> job uuids (lowest ΔH_f first) of each touched composition with several successful results."""
    found: dict[str, list[str]] = {}
    for formula, source in sorted(touched):
        rows = sorted(results.query({"formula": formula, "source": source, "state": "successful"},
                                    properties=["job_uuid", "dhf_ev_per_atom"]),
                      key=lambda d: (d["dhf_ev_per_atom"], d["job_uuid"]))
        if len(rows) > 1:
            found[f"{formula}|{source}"] = [d["job_uuid"] for d in rows]
    return found


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
        An embedded fh-screen store file to write into. None (default): the configured store,
        MongoDB included (:func:`results_stores`), which screens and ``fh-screen finetune`` read.
    refresh_force_field_references
        Relax the force field's element references again and rebuild its results against them
        (:func:`bring_results_back`).
    refresh_vasp_references
        Pin the VASP element references again and rebuild the VASP results (:func:`bring_results_back`).
    """

    name: str = "fh-screen results back"
    force_field_maker: Maker | None = None
    store_path: str | None = None
    refresh_force_field_references: bool = False
    refresh_vasp_references: bool = False

    def check_make(self, job_store: Any = None) -> None:
        """The checks :meth:`make` runs when the job is made: the store path, the maker, the JobStore (one line)."""
        if not isinstance(self.name, str):
            raise ResultsBackError(f"name must be a text, got {self.name!r}")
        check_store_path(self.store_path)
        check_force_field_maker(self.force_field_maker)
        check_flag("refresh_force_field_references", self.refresh_force_field_references)
        check_flag("refresh_vasp_references", self.refresh_vasp_references)
        if self.refresh_force_field_references and self.force_field_maker is None:
            raise ResultsBackError("refresh_force_field_references needs the force_field_maker that relaxes the references")
        check_job_store(job_store)

    def make(self, upstream: Any = None, job_store: JobStore | Store | None = None) -> Job:
        """A job that runs after ``upstream`` (any output reference) and returns the counts of what came back.

        The job reads the JobStore it runs in (its config exposes the store), unless
        ``job_store`` is given. Its output is :func:`bring_results_back`'s dict plus
        ``fh_screen_version``.

        A ``store_path``, ``force_field_maker`` or ``job_store`` that cannot be used raises
        :class:`ResultsBackError` here, in one line.
        """
        self.check_make(job_store)
        check_upstream(upstream)
        made = _results_back_job(self.force_field_maker, self.store_path, upstream, job_store,
                                 self.refresh_force_field_references, self.refresh_vasp_references)
        made.name = self.name
        made.config.expose_store = True
        return made


@fh_screen_job
def _results_back_job(
    force_field_maker: Maker | None,
    store_path: str | Path | None,
    upstream: Any = None,
    job_store: JobStore | Store | None = None,
    refresh_force_field_references: bool = False,
    refresh_vasp_references: bool = False,
) -> dict[str, Any]:
    """The body of :meth:`ResultsBackMaker.make`'s job."""
    from jobflow import CURRENT_JOB

    store = job_store if job_store is not None else CURRENT_JOB.store
    from fh_screen.version import __version__

    counts = bring_results_back(store, store_path, force_field_maker,  # None: the configured store
                                refresh_force_field_references=refresh_force_field_references,
                                refresh_vasp_references=refresh_vasp_references)
    return {**counts, "fh_screen_version": __version__}
