"""Run a sweep: each system through the one screen service, saved as its own screen document.

:func:`run_sweep` plans (which systems are already stored with this model and these options:
they are skipped), then screens the others, in this process or in ``processes`` worker
processes (``spawn``: safe under every start method, nothing inherited but the arguments). Every
screen goes through :func:`fh_screen.service.run_screen` with ``save=True``, exactly as
``fh-screen SYSTEM`` does; each worker loads the model once and writes its systems' documents
itself (one ``screens`` document per system, written in one transaction after the screen), so a
killed sweep leaves only whole documents and a rerun screens only the systems that have none.

A system that cannot be screened (refused for size, bad system) is reported and skipped; a store
that cannot be read or written stops the sweep with one line (:class:`SweepStoreError`): what was
stored stays stored and a rerun resumes. An embedded store file that is new (or holds no
reference entry) is filled with the OQMD table shipped with fh-screen first, as the configured
store is (:mod:`fh_screen.store.bootstrap`); a system screened with no reference compound on its
hull is named in the report, and a rerun screens it again once the store holds one.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fh_screen.errors import MAX_PROCESSES, FhScreenError, one_line
from fh_screen.screening import ScreenOptions

if TYPE_CHECKING:
    from fh_screen.models.predictor import Predictor
    from fh_screen.store import FhScreenStore

logger = logging.getLogger(__name__)

__all__ = [
    "BULK_KEEP_TOP",
    "LIKELY_P",
    "SweepOptions",
    "SweepPlan",
    "SweepReport",
    "SweepInterrupted",
    "SweepStoreError",
    "SystemOutcome",
    "check_keep_top",
    "check_screen_options",
    "plan_sweep",
    "run_sweep",
    "screen_system",
    "stored_screens",
    "stored_systems",
]

#: Ranked candidates each document of a sweep keeps: the new candidates worth a look (the whole
#: table of a ternary is ~1,400 rows, 0.4 MB as JSON; 113,564 of them would be ~47 GB).
BULK_KEEP_TOP = 100

#: ``p_stable`` from which a new candidate counts as likely stable in the summary.
LIKELY_P = 0.5

#: ``origin`` of the documents a sweep writes.
ORIGIN = "bulk"


class SweepStoreError(FhScreenError):
    """The store failed during a sweep (full, locked, disconnected); what was saved stays, a rerun resumes."""


class SweepInterrupted(KeyboardInterrupt):
    """A sweep stopped by Ctrl-C; ``saved``: the systems it saved, counted in the store once its workers
    stopped (None when the store could not tell). Workers save before the sweep hears of it, so the
    outcomes it heard of may be fewer."""

    def __init__(self, saved: int | None = None) -> None:
        super().__init__()
        self.saved = saved


def check_keep_top(value: Any) -> int | None:
    """``keep_top`` of a sweep's documents: a positive integer, or None for all (0 means all too, as ``--keep-top 0``).

    Raises :class:`~fh_screen.sweep.systems.SweepInputError` (one line) for anything else.
    """
    from fh_screen.sweep.systems import SweepInputError

    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value == 0):
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SweepInputError(f"keep_top must be a positive integer, or 0 or None (every candidate), got {value!r}")
    return value


def check_screen_options(options: ScreenOptions) -> None:
    """The checks every screen makes of ``options`` before anything is loaded, made once for the whole sweep.

    :meth:`ScreenOptions.validate` and the enumeration's limits (``max_atoms`` from 2,
    ``max_per_element`` positive): one line, the screen's own message, instead of every system
    of the sweep refused with it.
    """
    from fh_screen.chem.candidates import count_candidates

    options.validate()
    count_candidates(2, options.max_atoms, options.max_per_element)  # the enumeration's limits check


class SweepOptions(BaseModel):
    """How a sweep runs (what each system's screen does is :class:`~fh_screen.screening.ScreenOptions`).

    A bad value raises :class:`~fh_screen.sweep.systems.SweepInputError` in one line.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True, extra="forbid")

    model: str | None = Field(None, description="shipped model name or .pt path (None: the default model)")
    store_file: Path | None = Field(None, description="embedded store file (None: the configured store)")
    processes: int = Field(1, ge=1, le=MAX_PROCESSES, description="worker processes (1: screen in this process)")
    keep_top: int | None = Field(BULK_KEEP_TOP, ge=1, description="candidates kept per screen document "
                                 "(None or 0: all)")
    redo: bool = Field(False, description="screen again systems already stored with this model and options")
    chunk_size: int | None = Field(None, ge=1, description="systems per task sent to a worker (None: automatic)")
    save_predictions: bool = Field(True, description="also store each screen's predictions (the one saving rule); "
                                   "False: the screen documents only")
    threads: int | None = Field(1, ge=1, description="torch threads per process (None: torch's default). One: a "
                                "ternary's batches are small, and threads fighting for busy cores cost up to 7x")
    sources: tuple[str, ...] | None = Field(None, description="reference sources that count for each hull "
                                            "('oqmd,chgnet' or a list; None: every source in the store)")

    @field_validator("sources", mode="before")
    @classmethod
    def _parsed_sources(cls, value: Any) -> tuple[str, ...] | None:
        """The names as a selection reads them (stripped, lower case but a legacy spelling of an owned name such as
        ``OQMD``, no repeats; :func:`~fh_screen.store.query.parse_sources`); an empty list is refused."""
        from fh_screen.store.query import parse_sources

        return None if value is None else tuple(parse_sources(value))

    @field_validator("keep_top", mode="before")
    @classmethod
    def _kept(cls, value: Any) -> int | None:
        """0 keeps every candidate, as ``fh-screen bulk --keep-top 0``; a negative number is refused."""
        return check_keep_top(value)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _one_line_options_error(exc) from None


def _one_line_options_error(exc: ValidationError) -> FhScreenError:
    """The first error of a :class:`SweepOptions` as one :class:`~fh_screen.sweep.systems.SweepInputError` line."""
    from fh_screen.sweep.systems import SweepInputError

    error = exc.errors()[0]
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, FhScreenError):  # our own validators' message, already one line
        return SweepInputError(one_line(cause))
    name = ".".join(str(part) for part in error.get("loc", ())) or "?"
    return SweepInputError(f"sweep option {name}: {error.get('msg', 'bad value')} (got {error.get('input')!r})")


@dataclass(frozen=True)
class SystemOutcome:
    """What happened to one system: ``done`` (saved as ``run_id``), ``failed`` (reported, skipped) or ``store-error``."""

    system: str
    status: str
    n_candidates: int = 0
    n_likely: int = 0
    run_id: str | None = None
    error: str = ""
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    #: ``done`` with no reference compound on the hull: why (else ``""``); the document's ``problems`` say it too
    no_reference: str = ""
    #: the sources of the known values the screen's hull stood on (``ScreenResult.known_sources``)
    known_sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class SweepPlan:
    """The systems to screen, those skipped as already stored, and the model's identity."""

    pending: list[str]
    skipped: list[str]
    model: str
    weights_sha256: str
    #: lines for the user before the sweep starts (a requested source the store holds nothing of)
    notes: list[str] = field(default_factory=list)
    #: the sources that count for each hull as the store reads them (``OQMD`` reads as ``oqmd`` unless
    #: entries are stored under that spelling; :func:`~fh_screen.store.query.resolve_sources`); None: every source
    sources: tuple[str, ...] | None = None
    #: the sources the hulls of the skipped systems' stored screens stood on
    skipped_sources: tuple[str, ...] = ()


@dataclass
class SweepReport:
    """The summary of a sweep (``--json``: :meth:`to_json`)."""

    model: str
    systems_total: int = 0
    systems_done: int = 0
    systems_skipped: int = 0
    systems_failed: int = 0
    candidates: int = 0
    likely: int = 0
    seconds: float = 0.0
    processes: int = 1
    failures: list[dict[str, str]] = field(default_factory=list)
    stopped: str = ""
    notes: list[str] = field(default_factory=list)
    #: systems screened (done) with no reference compound on their hull: the elements and the predictions alone
    no_reference: list[str] = field(default_factory=list)
    #: the sources the hulls of the sweep's systems stood on, screened or skipped as stored (their
    #: provenance; not in :meth:`to_json`'s summary)
    known_sources: list[str] = field(default_factory=list)
    #: the sources asked for, as the store read them (None: every source; not in :meth:`to_json`'s summary)
    sources: list[str] | None = None

    def add(self, outcome: SystemOutcome) -> None:
        """Count one finished system."""
        if outcome.status == "done":
            self.systems_done += 1
            self.candidates += outcome.n_candidates
            self.likely += outcome.n_likely
            if outcome.no_reference:
                self.no_reference.append(outcome.system)
            self.known_sources = sorted(set(self.known_sources) | set(outcome.known_sources))
        else:
            self.systems_failed += 1
            self.failures.append({"system": outcome.system, "error": outcome.error})

    def no_reference_note(self) -> str:
        """One line naming the systems screened with no reference compound (``""`` when none)."""
        if not self.no_reference:
            return ""
        names = ", ".join(self.no_reference[:5]) + (", ..." if len(self.no_reference) > 5 else "")
        return (f"{len(self.no_reference):,} system(s) screened with no reference compound on the hull (the elements "
                f"and the predictions alone): {names}; a rerun screens them again once the store holds reference "
                f"entries of them (fh-screen ingest PATH)")

    def to_json(self) -> dict[str, Any]:
        """``systems_done``, ``systems_skipped``, ``systems_failed``, ``candidates``, ``seconds`` and the rest."""
        data = dataclasses.asdict(self)
        data["seconds"] = round(self.seconds, 3)
        del data["known_sources"], data["sources"]  # the summary's provenance (fh_screen.exports.sweep_provenance)
        return data


def _open_store(store_file: Path | None) -> FhScreenStore:
    """The sweep's store: the file given or the configured one, its indexes made once here
    (each screen opens and closes it twice; the index checks are not repeated)."""
    from fh_screen.store import FhScreenStore

    store = FhScreenStore.embedded(Path(store_file).expanduser()) if store_file is not None \
        else FhScreenStore.from_settings()
    store.connect().close()
    store.ensure_indexes = False
    return store


def _hold_open(store: FhScreenStore):
    """A read-only connection held on an embedded store's file for the sweep (None for other stores).

    Each screen opens and closes the store; the last connection to close an SQLite file in WAL
    mode checkpoints it (~6 ms). One connection held open makes every other close cheap; SQLite
    still checkpoints on its own as the log grows (every 1,000 pages).
    """
    import sqlite3

    from fh_screen.store import SQLiteStore

    collection = store._screens
    if not isinstance(collection, SQLiteStore):
        return None
    try:
        return sqlite3.connect(f"file:{collection.path}?mode=ro", uri=True, check_same_thread=False)
    except sqlite3.Error:  # pragma: no cover - only a speed-up
        return None


def _options_dict(options: ScreenOptions) -> dict[str, Any]:
    return dataclasses.asdict(options)


def stored_systems(store: FhScreenStore, predictor: Predictor, options: ScreenOptions,
                   keep_top: int | None = BULK_KEEP_TOP, sources: Sequence[str] | None = None) -> set[str]:
    """Systems with a stored screen of ``predictor`` (name, version, weights) and exactly ``options``.

    A screen counts whatever wrote it (``fh-screen SYSTEM``, a job, a sweep) when it kept at
    least ``keep_top`` candidates (``keep_top`` None: only a screen that kept all of them) and
    its hull counted the same reference sources (``sources``, parsed, in any order; None: a screen
    over every source, whose document's ``sources`` is null). A screen whose hull had no reference
    compound (``n_reference`` 0) counts only while the store still holds none of its system
    (a store without a reference collection: it counts).
    """
    return set(stored_screens(store, predictor, options, keep_top, sources))


def stored_screens(store: FhScreenStore, predictor: Predictor, options: ScreenOptions,
                   keep_top: int | None = BULK_KEEP_TOP,
                   sources: Sequence[str] | None = None) -> dict[str, frozenset[str]]:
    """:func:`stored_systems`, each with the sources its stored screen's hull stood on (the
    document's ``hull_sources``; for a document made before they were recorded, its ``sources``
    and the sources of the known rows it kept)."""
    wanted = _options_dict(options)
    criteria = {"model_name": predictor.name, "model_version": predictor.version}
    done: dict[str, frozenset[str]] = {}
    unanchored: dict[str, frozenset[str]] = {}
    with store:
        if sources is not None and store._reference is not None:  # OQMD reads as oqmd unless entries are stored under it
            from fh_screen.store.query import resolve_sources

            sources = resolve_sources(sources, lambda: store.reference.distinct("source"))
        wanted_sources = None if sources is None else sorted(sources)
        properties = ["run_id", "chemsys", "options", "weights_sha256", "keep_top", "sources", "n_reference",
                      "hull_sources"]
        for doc in store.screens.query(criteria=criteria, properties=properties):
            if doc.get("weights_sha256", "") != predictor.weights_sha256 or doc.get("options") != wanted:
                continue
            stored_sources = doc.get("sources")
            if (None if stored_sources is None else sorted(stored_sources)) != wanted_sources:
                continue
            kept = doc.get("keep_top")
            if kept is not None and (keep_top is None or kept < keep_top):
                continue
            hull_sources = _hull_sources(store, doc)
            found = done if doc.get("n_reference", 1) else unanchored
            found[doc["chemsys"]] = found.get(doc["chemsys"], frozenset()) | hull_sources
        for system in set(unanchored) & set(done):
            del unanchored[system]
        if unanchored and store._reference is not None and store.n_reference():
            from fh_screen.chem.candidates import MAX_SYSTEM_SIZE
            from fh_screen.store.query import criteria_for, source_criteria

            compounds = range(2, MAX_SYSTEM_SIZE + 1)  # as the hull reads them: compounds, outliers left out
            chosen = {} if sources is None else source_criteria(sources)
            arrived = {s for s in unanchored if store.reference.count(
                {**criteria_for(chemsys=s, nelements=compounds), **chosen, "passed_outlier_filter": True})}
            for system in arrived:  # reference compounds arrived since: screened again
                del unanchored[system]
    return {**unanchored, **done}


def _hull_sources(store: FhScreenStore, doc: dict[str, Any]) -> frozenset[str]:
    """The sources a stored screen's hull stood on: its ``hull_sources``, or for an older document
    its ``sources`` with the ``known_source`` of the known rows it kept."""
    if doc.get("hull_sources") is not None:
        return frozenset(str(s) for s in doc["hull_sources"])
    older = store.screens.query_one({"run_id": doc.get("run_id")}, properties=["candidates"]) or {}
    kept = {row.get("known_source") for row in older.get("candidates") or [] if isinstance(row, dict)}
    return frozenset(doc.get("sources") or []) | {s for s in kept if isinstance(s, str)}


def _store_failure(exc: BaseException, where: str) -> SweepStoreError:
    """One line saying what is wrong with the store (before the sweep: nothing of it was saved, no resume hint)."""
    from fh_screen.service import ScreenServiceError
    from fh_screen.store import StoreFileError

    if isinstance(exc, (ScreenServiceError, StoreFileError)):  # already one line naming the store
        return SweepStoreError(one_line(exc))
    return SweepStoreError(f"cannot use store {where}: {one_line(exc)}")


def plan_sweep(systems: Sequence[str], options: ScreenOptions = ScreenOptions(),
               sweep: SweepOptions = SweepOptions(), predictor: Predictor | None = None) -> SweepPlan:
    """Split ``systems`` into those to screen and those already stored (unless ``sweep.redo``).

    The options' limits are checked first (:func:`check_screen_options`), then the model is
    loaded and the store opened (an embedded file filled on first use, :func:`~fh_screen.store.bootstrap.fill_store_file`).
    A store that cannot be opened or read raises :class:`SweepStoreError`: one line saying what is
    wrong with it.
    """
    from fh_screen.models.predictor import check_model_reference, load_predictor
    from fh_screen.service import ScreenServiceError
    from fh_screen.store import StoreFileError

    check_screen_options(options)
    if predictor is None:
        check_model_reference(sweep.model)
        predictor = load_predictor(sweep.model)
    label = f"{predictor.name}@{predictor.version}"
    where = str(sweep.store_file) if sweep.store_file is not None else "the configured store"
    try:
        if sweep.store_file is not None:
            from fh_screen.store.bootstrap import fill_store_file

            fill_store_file(sweep.store_file)
        store = _open_store(sweep.store_file)
        where = store.name
        notes = _absent_sources_notes(store, sweep.sources) or _empty_store_notes(store)
        sources = _resolved_sources(store, sweep.sources)
        if sweep.redo:
            return SweepPlan(list(systems), [], label, predictor.weights_sha256, notes, sources)
        done = stored_screens(store, predictor, options, sweep.keep_top, sources)
    except (ScreenServiceError, StoreFileError) as exc:
        raise _store_failure(exc, where) from None
    except FhScreenError:
        raise
    except Exception as exc:  # noqa: BLE001 - a store that cannot be read is one line
        raise _store_failure(exc, where) from None
    pending = [s for s in systems if s not in done]
    skipped = [s for s in systems if s in done]
    skipped_sources = tuple(sorted(set().union(*(done[s] for s in skipped))))
    return SweepPlan(pending, skipped, label, predictor.weights_sha256, notes, sources, skipped_sources)


def _resolved_sources(store: FhScreenStore, sources: Sequence[str] | None) -> tuple[str, ...] | None:
    """``sources`` as the store reads them (:func:`~fh_screen.store.query.resolve_sources`; None: every source)."""
    if sources is None or store._reference is None:
        return None if sources is None else tuple(sources)
    from fh_screen.store.query import resolve_sources

    with store:
        return tuple(resolve_sources(sources, lambda: store.reference.distinct("source")))


def _empty_store_notes(store: FhScreenStore) -> list[str]:
    """The screen's note when the store holds no reference entry at all (reference data off, nothing ingested)."""
    from fh_screen.service import NO_REFERENCE_NOTE

    with store:
        return [] if store.n_reference() else [NO_REFERENCE_NOTE]


def _absent_sources_notes(store: FhScreenStore, sources: Sequence[str] | None) -> list[str]:
    """One line naming the requested sources the store holds no reference entry of (a typo), else none."""
    from fh_screen.store.query import absent_sources_note

    if sources is None:
        return []
    with store:
        note = absent_sources_note(sources, set(), lambda: store.reference.distinct("source"), "the store")
    return [note] if note else []


def screen_system(system: str, predictor: Predictor, store: FhScreenStore, options: ScreenOptions,
                  keep_top: int | None = BULK_KEEP_TOP, save_predictions: bool = True,
                  sources: Sequence[str] | None = None) -> SystemOutcome:
    """Screen one system with the one service (:func:`fh_screen.service.run_screen`) and save it.

    Bad input for this system (refused for size, ...) is a ``failed`` outcome; a store that
    fails is a ``store-error`` outcome (the sweep stops). A screen with no reference compound on
    its hull is saved with a note in its ``problems`` and its outcome says so (``no_reference``).
    """
    from fh_screen.service import ScreenServiceError, run_screen
    from fh_screen.store import StoreFileError

    started, cpu = time.perf_counter(), time.process_time()
    try:
        result, phases, saved = run_screen(system, predictor, options=options, store=store, save=True, origin=ORIGIN,
                                           keep_top=keep_top, save_predictions=save_predictions, sources=sources)
    except (ScreenServiceError, StoreFileError) as exc:
        return SystemOutcome(system, "store-error", error=one_line(exc), seconds=time.perf_counter() - started)
    except FhScreenError as exc:
        return SystemOutcome(system, "failed", error=one_line(exc), seconds=time.perf_counter() - started)
    except Exception as exc:  # noqa: BLE001 - one system's failure must not end a sweep of thousands
        logger.debug("screen of %s failed", system, exc_info=True)
        return SystemOutcome(system, "failed", error=one_line(exc, with_type=True),
                             seconds=time.perf_counter() - started)
    table = result.table
    new = ~table["is_known"].to_numpy(bool)
    likely = int((new & (table["p_stable"].fillna(0.0).to_numpy(float) >= LIKELY_P)).sum()) \
        if "p_stable" in table else 0
    return SystemOutcome(system, "done", int(result.n_candidates), likely, saved.run_id if saved else None,
                         seconds=time.perf_counter() - started, cpu_seconds=time.process_time() - cpu,
                         no_reference="" if phases.n_compounds else phases.note,  # the service's note says why
                         known_sources=tuple(result.known_sources()))


# -- workers -----------------------------------------------------------------------------------


def sweep_predictor(predictor: Predictor) -> Predictor:
    """The predictor a sweep screens with: a slow model remembers its predictions by composition.

    Systems of one sweep share subsystems (each binary of N elements lies in N − 2 of their
    ternaries), so the slow model's predictions of their candidates are made once per sweep
    (:class:`~fh_screen.models.prediction_memo.MemoizedPredictor`); a fast one predicts faster
    than the memory looks up.
    """
    from fh_screen.models.prediction_memo import MemoizedPredictor

    return MemoizedPredictor(predictor) if predictor.is_slow else predictor


@dataclass(frozen=True)
class _Work:
    """What a worker needs (picklable, hashable): the model, the store, the options."""

    model: str | None
    store_file: str | None
    options: ScreenOptions
    keep_top: int | None
    weights_sha256: str
    threads: int | None
    parent_pid: int = 0
    save_predictions: bool = True
    sources: tuple[str, ...] | None = None


@lru_cache(maxsize=2)
def _context(work: _Work) -> tuple[Predictor, FhScreenStore, Any]:
    """The model and the store of a worker process: loaded once per process."""
    from fh_screen.models.predictor import load_predictor

    if work.threads:
        import torch

        torch.set_num_threads(work.threads)  # a worker process of ours: its own setting for good
    predictor = load_predictor(work.model)
    if predictor.weights_sha256 != work.weights_sha256:
        raise SweepStoreError(f"model {work.model or predictor.name!r} changed while the sweep started; rerun it")
    store = _open_store(Path(work.store_file) if work.store_file else None)
    return sweep_predictor(predictor), store, _hold_open(store)  # cached: the connection is held for the worker's life


def _init_worker(work: _Work) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops the pool, no worker tracebacks
    _die_with_parent()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import warnings

    warnings.simplefilter("ignore")
    _context(work)


def _die_with_parent() -> None:
    """Linux: the kernel kills this worker when the sweep's process dies (kill -9), so an orphan
    never writes a system that a resumed sweep is screening again."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - other libc: the getppid check below remains
        logger.debug("PR_SET_PDEATHSIG unavailable", exc_info=True)


def _screen_in_worker(args: tuple[_Work, str]) -> SystemOutcome:
    work, system = args
    if work.parent_pid and os.getppid() != work.parent_pid:  # orphaned: the sweep is gone, write nothing
        os._exit(1)
    try:
        predictor, store, _ = _context(work)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
        return SystemOutcome(system, "store-error", error=one_line(exc))
    return screen_system(system, predictor, store, work.options, work.keep_top, work.save_predictions, work.sources)


def _outcomes(pending: list[str], work: _Work, processes: int, chunk_size: int | None) -> Iterator[SystemOutcome]:
    if processes <= 1 or len(pending) <= 1:
        from fh_screen.models.predictor import load_predictor

        from fh_screen.models.torch_threads import torch_threads

        predictor = sweep_predictor(load_predictor(work.model))  # loaded by the plan already: the process's cache
        store = _open_store(Path(work.store_file) if work.store_file else None)
        held = _hold_open(store)
        try:
            for system in pending:
                with torch_threads(work.threads):  # the caller's thread count is back between systems
                    outcome = screen_system(system, predictor, store, work.options, work.keep_top,
                                            work.save_predictions, work.sources)
                yield outcome
        finally:
            if held is not None:
                held.close()
        return
    import multiprocessing

    processes = min(processes, len(pending))
    chunk = chunk_size or max(1, min(8, len(pending) // (processes * 16)))
    context = multiprocessing.get_context("spawn")
    pool = context.Pool(processes, initializer=_init_worker, initargs=(work,))
    try:
        yield from pool.imap_unordered(_screen_in_worker, [(work, s) for s in pending], chunksize=chunk)
        pool.close()
    finally:
        pool.terminate()
        pool.join()


def _saved_since(store_file: Path | str | None, plan: SweepPlan, since: str) -> int | None:
    """The systems of ``plan`` a sweep saved since run id ``since``, counted in its store (None: it cannot be read).

    Workers save a system before the sweep hears of it, and a stopped sweep never hears of
    some: the store is what counts.
    """
    pending = set(plan.pending)
    try:
        store = _open_store(Path(store_file) if store_file else None)
        with store:
            docs = store.screens.query(criteria={"run_id": {"$gte": since}, "origin": ORIGIN,
                                                 "weights_sha256": plan.weights_sha256},
                                       properties=["chemsys"])
            return len({doc["chemsys"] for doc in docs if doc.get("chemsys") in pending})
    except Exception:  # noqa: BLE001 - the count is a courtesy: the caller falls back on the outcomes heard
        logger.debug("cannot count the saved systems", exc_info=True)
        return None


def run_sweep(
    systems: Sequence[str],
    options: ScreenOptions = ScreenOptions(),
    sweep: SweepOptions = SweepOptions(),
    *,
    on_plan: Callable[[SweepPlan], None] | None = None,
    on_outcome: Callable[[SystemOutcome], None] | None = None,
) -> SweepReport:
    """Screen every system of ``systems`` not yet stored with this model and these options.

    Parameters
    ----------
    systems
        Canonical systems (:mod:`fh_screen.sweep.systems`).
    options
        The screen options of every system (part of what makes a stored screen count as done).
    sweep
        Model, store, processes, documents' ``keep_top``, ``redo``, the hull's ``sources``.
    on_plan, on_outcome
        Called once with the plan, then with each system's outcome as it finishes (progress).

    Returns
    -------
    SweepReport
        Raises :class:`SweepStoreError` (one line) when the store fails mid-sweep, and
        :class:`SweepInterrupted` (a ``KeyboardInterrupt``) on Ctrl-C; in both cases every saved
        system stays saved, and the count they give is the store's.
    """
    started = time.perf_counter()
    plan = plan_sweep(systems, options, sweep)
    report = SweepReport(model=plan.model, systems_total=len(systems), systems_skipped=len(plan.skipped),
                         processes=sweep.processes, notes=list(plan.notes), known_sources=list(plan.skipped_sources),
                         sources=None if plan.sources is None else sorted(plan.sources))
    if on_plan is not None:
        on_plan(plan)
    work = _Work(sweep.model, str(sweep.store_file) if sweep.store_file else None, options, sweep.keep_top,
                 plan.weights_sha256, sweep.threads, os.getpid(), sweep.save_predictions, plan.sources)
    from fh_screen.store import new_run_id

    since = new_run_id()  # the run ids of the screens this sweep saves sort after it
    outcomes = _outcomes(plan.pending, work, sweep.processes, sweep.chunk_size)
    failed: SystemOutcome | None = None
    try:
        for outcome in outcomes:
            if outcome.status == "store-error":
                failed = outcome
                break
            report.add(outcome)
            if on_outcome is not None:
                on_outcome(outcome)
    except KeyboardInterrupt:
        outcomes.close()  # the workers stop before the store is counted
        raise SweepInterrupted(_saved_since(sweep.store_file, plan, since)) from None
    finally:
        outcomes.close()  # stops the workers now, whatever ended the loop (Ctrl-C, a store error)
    if failed is not None:
        report.seconds = time.perf_counter() - started
        saved = _saved_since(sweep.store_file, plan, since)
        raise SweepStoreError(f"sweep stopped at {failed.system} after "
                              f"{report.systems_done if saved is None else saved:,} saved systems: {failed.error}; "
                              "what was saved stays stored: rerun the same command to resume")
    if report.no_reference:
        report.notes.append(report.no_reference_note())
    report.seconds = time.perf_counter() - started
    logger.info("sweep: %d done, %d skipped, %d failed in %.1f s", report.systems_done, report.systems_skipped,
                report.systems_failed, report.seconds)
    return report
