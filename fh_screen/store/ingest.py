"""Ingest DFT files (OQMD style) into the reference collection under a source name, idempotently, in atomic batches.

Entries are unique per (formula, ``source``): a user's values (default source ``user``) sit
beside the shipped OQMD entries (source ``oqmd``, which only the first-use fill writes: an ingest
under that name is refused), the hull uses the lowest value of a composition, and
``FhScreenStore.remove_source`` (``fh-screen ingest --remove-source NAME``) takes a source out
again. A source name is stored as :func:`~fh_screen.store.query.source_name` reads it (stripped,
lower case), as every query and screen selects it.

Files are read with :func:`fh_screen.data.load_oqmd` (the shared CSV, OQMD dump tables and
OPTIMADE JSON, each plain or gzipped), which reduces formulas and keeps the lowest ΔH_f per
composition (a value inside the outlier window before any outlier); the files of a folder keep one
row per composition between them by the same rule, so a re-run of a folder changes nothing. Each batch of
entries is compared with what the store holds: new formulas are inserted, changed values replace
the stored ones (and are reported), identical ones are left untouched. A batch is one store
update, so an interrupted ingest leaves whole batches behind and a re-run completes it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from maggma.core import Store

from fh_screen.data import OUTLIER_RANGE_EV_PER_ATOM, REJECTION_REASONS, DataError, check_rows, load_oqmd
from fh_screen.store.bootstrap import SHIPPED_SOURCE
from fh_screen.store.documents import RESULT_SOURCES, ReferenceEntryDoc, chemsys_of, elements_of, utcnow
from fh_screen.store.query import source_name

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_SOURCE", "INGEST_SUFFIXES", "IngestReport", "check_source", "ingest_file", "ingest_frame", "ingest_path",
    "ingestable_files",
]

#: ``source`` of ingested values unless named: they sit beside the shipped OQMD entries (``oqmd``).
DEFAULT_SOURCE = "user"

#: Files picked up when ``ingest`` is given a folder (each also gzip-compressed: ``.csv.gz``).
INGEST_SUFFIXES = (".csv", ".json", ".tsv", ".txt")

_FOLDER_ENDINGS = INGEST_SUFFIXES + tuple(suffix + ".gz" for suffix in INGEST_SUFFIXES)

#: Values closer than this (eV/atom) count as unchanged.
TOLERANCE_EV_PER_ATOM = 1e-9

_COMPARED = ("dhf_ev_per_atom", "source", "source_id", "source_version", "passed_outlier_filter")


@dataclass
class IngestReport:
    """What an ingest did: counts, rejection reasons and a few of the replaced values."""

    files: list[str] = field(default_factory=list)
    n_rows: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    updated_examples: list[tuple[str, float, float]] = field(default_factory=list)

    @property
    def n_rejected(self) -> int:
        """Rows not stored, all reasons together."""
        return sum(self.rejected.values())

    def summary(self) -> str:
        """One line: inserted, updated, unchanged, rejected with reasons."""
        reasons = ", ".join(f"{n} {reason}" for reason, n in self.rejected.items() if n)
        return (
            f"inserted {self.inserted}, updated {self.updated}, unchanged {self.unchanged}, "
            f"rejected {self.n_rejected}" + (f" ({reasons})" if reasons else "")
        )

    def merge(self, other: IngestReport) -> IngestReport:
        """Add another report's counts to this one (for a folder of files)."""
        self.files += other.files
        self.n_rows += other.n_rows
        self.inserted += other.inserted
        self.updated += other.updated
        self.unchanged += other.unchanged
        for reason, n in other.rejected.items():
            self.rejected[reason] = self.rejected.get(reason, 0) + n
        self.updated_examples += other.updated_examples[: max(0, 10 - len(self.updated_examples))]
        return self


def ingestable_files(path: str | Path, *, keep_outliers: bool = False) -> list[Path]:
    """``path`` itself, or the data files of a folder (sorted), each read and validated.

    Every file is loaded and checked here, before any store is opened or written: a file that
    cannot be read, has the wrong columns or holds no usable row (every row an outlier outside
    (−20, 5) eV/atom counts as none unless ``keep_outliers``) raises :class:`DataError`, so a
    refused input never creates or touches a store. :func:`ingest_file` reuses these loads.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(_FOLDER_ENDINGS))
        if not files:
            raise DataError(f"no data files ({', '.join(INGEST_SUFFIXES)}, or the same .gz) in folder {path}")
    else:
        files = [path]
    _VALIDATED.clear()
    loaded = []
    for file in files:
        frame, cleaning = _load_checked(file)
        _check_storable(frame, file, keep_outliers)
        loaded.append((file, frame, cleaning))
    if len(loaded) > 1:
        _keep_one_row_per_composition(loaded)
    for file, frame, cleaning in loaded:
        _VALIDATED[_file_key(file)] = frame, cleaning
    return files


def _keep_one_row_per_composition(loaded: list[tuple]) -> None:
    """Across the files of a folder, keep each composition in the one file holding its best value, as
    :func:`~fh_screen.data.clean` does within a file (a value inside the outlier window first, then the
    lowest, then the first file); the other files' rows of it are set aside and counted (higher-energy
    duplicates, or outliers), so the stored value does not depend on the order of the files and a re-run
    of the folder changes nothing."""
    import pandas as pd

    rows = pd.concat([pd.DataFrame({"formula": frame["formula"], "outlier": ~frame["passed_outlier_filter"].astype(bool),
                                    "value": frame["dhf_ev_per_atom"].astype(float), "file": i, "row": range(len(frame))})
                      for i, (_, frame, _) in enumerate(loaded)], ignore_index=True)
    best = rows.sort_values(["outlier", "value", "file", "row"], kind="stable").drop_duplicates("formula")
    for i, (file, frame, cleaning) in enumerate(loaded):
        won = set(best.loc[best["file"] == i, "row"])
        keep = [j in won for j in range(len(frame))]
        lost = frame[[not k for k in keep]]
        if lost.empty:
            continue
        passed = lost["passed_outlier_filter"].astype(bool)
        cleaning.reject("duplicate", int(passed.sum()))  # an outlier row is counted as one already
        cleaning.outliers_flagged -= int((~passed).sum()) if cleaning.outliers_kept else 0
        cleaning.n_kept -= len(lost)
        loaded[i] = (file, frame[keep].reset_index(drop=True), cleaning)


#: Loads done by :func:`ingestable_files`, keyed by file identity, consumed by :func:`ingest_file`.
_VALIDATED: dict[tuple, tuple] = {}


def _file_key(path: Path) -> tuple:
    stat = path.stat()
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def _load_checked(path: Path):
    """The tidy table (outliers kept and flagged) and cleaning report.

    Raises :class:`DataError` (one line) when nothing is usable, when a formula names an element
    that does not exist, or when a pure element has a formation enthalpy other than 0 eV/atom
    (0 by definition: such a file holds total energies or another reference, not ΔH_f).
    """
    frame, cleaning = load_oqmd(path, drop_outliers=False)
    check_rows(frame, cleaning, path)
    if frame.empty:
        raise DataError(f"no usable rows in {path}: {cleaning.summary()}")
    return frame, cleaning


def _check_storable(frame, path: Path, keep_outliers: bool) -> None:
    """Raise :class:`DataError` (one line) when every usable row of ``frame`` is an outlier and
    ``keep_outliers`` is off: nothing would be stored, most likely a file in other units (meV/atom)."""
    if keep_outliers or frame["passed_outlier_filter"].any():
        return
    low, high = OUTLIER_RANGE_EV_PER_ATOM
    examples = "; ".join(f"{f} {v:g}" for f, v in zip(frame["formula"].head(3), frame["dhf_ev_per_atom"].head(3)))
    raise DataError(f"nothing ingested from {path}: its {len(frame)} usable row(s) are all outliers outside ({low:g}, "
                    f"{high:g}) eV/atom (e.g. {examples}); ΔH_f must be in eV/atom (is this file in meV/atom or "
                    f"kJ/mol?), or store them flagged with --keep-outliers (keep_outliers=True)")


def check_source(source: str) -> str:
    """``source`` as stored (:func:`~fh_screen.store.query.source_name`: stripped, lower case), else
    :class:`~fh_screen.store.query.SourceNameError` (one line)."""
    return source_name(source)


def check_ingest_source(source: str) -> str:
    """``source`` as stored, if values may be ingested under it: a usable name (:func:`check_source`) that neither
    the shipped OQMD table (:data:`~fh_screen.store.bootstrap.SHIPPED_SOURCE`, ``oqmd``) nor the results
    brought back from atomate2 (:data:`~fh_screen.store.documents.RESULT_SOURCES`) own; else
    :class:`DataError` (one line)."""
    source = check_source(source)
    if source == SHIPPED_SOURCE:
        raise DataError(f"source {source!r} holds the OQMD reference table shipped with fh-screen (filled on first "
                        f"use): ingested values would replace its entries; ingest yours under another name, e.g. "
                        f"'oqmd-1.6' or 'my-oqmd'")
    if source in RESULT_SOURCES:
        raise DataError(f"source {source!r} holds the results brought back from atomate2 (fh-screen results): each "
                        f"entry is the lowest of its results, and ingested values would replace them or be replaced; "
                        f"ingest yours under another name, e.g. 'my-{source}'")
    return source


def ingest_path(
    store: Store, path: str | Path, progress: Callable[[int, int], None] | None = None, **kwargs
) -> IngestReport:
    """Ingest one file or every data file of a folder; see :func:`ingest_file`.

    Every file is validated before the first write (see :func:`ingestable_files`).
    """
    report = IngestReport()
    for file in ingestable_files(path, keep_outliers=bool(kwargs.get("keep_outliers", False))):
        report.merge(ingest_file(store, file, progress=progress, **kwargs))
    return report


def ingest_file(
    store: Store,
    path: str | Path,
    *,
    source: str = DEFAULT_SOURCE,
    source_version: str | None = None,
    keep_outliers: bool = False,
    batch_size: int = 5000,
    progress: Callable[[int, int], None] | None = None,
) -> IngestReport:
    """Load an OQMD-style file and upsert its entries into the reference ``store`` (key (formula, ``source``)).

    The whole file is read and validated before the store is queried or written. Rows with a
    bad formula, a missing value or a non-numeric or infinite ΔH_f are rejected and counted.
    Outliers outside (−20, 5) eV/atom are rejected unless ``keep_outliers``, in which case they
    are stored with ``passed_outlier_filter=False``. ``progress(n_done, n_total)`` is called
    after each batch. Raises :class:`DataError` for a file with no usable row, or whose every
    usable row is an outlier (without ``keep_outliers``: a file in other units, nothing to store).
    """
    path = Path(path)
    loaded = _VALIDATED.pop(_file_key(path), None) if path.is_file() else None
    if loaded is None:
        frame, cleaning = _load_checked(path)
        _check_storable(frame, path, keep_outliers)
    else:  # checked by ingestable_files (a folder's file may have lost every row to another file)
        frame, cleaning = loaded
    if not keep_outliers:
        frame = frame[frame["passed_outlier_filter"]].reset_index(drop=True)
    report = IngestReport(files=[str(path)], n_rows=cleaning.n_raw)
    # kept outliers are stored (flagged), not rejected
    report.rejected = {
        REJECTION_REASONS[reason]: n - cleaning.outliers_flagged if keep_outliers and reason == "outlier" else n
        for reason, n in cleaning.rejected.items()
    }
    for reason, examples in cleaning.examples.items():
        logger.warning("%s: %s, e.g. %s", path, REJECTION_REASONS[reason], "; ".join(examples[:3]))
    ingest_frame(
        store, frame, report, source=source, source_version=source_version, source_file=path.name,
        batch_size=batch_size, progress=progress,
    )
    logger.info("%s: %s", path, report.summary())
    return report


def ingest_frame(
    store: Store,
    frame,
    report: IngestReport | None = None,
    *,
    source: str = DEFAULT_SOURCE,
    source_version: str | None = None,
    source_file: str | None = None,
    batch_size: int = 5000,
    progress: Callable[[int, int], None] | None = None,
) -> IngestReport:
    """Upsert a tidy table (:data:`fh_screen.data.TIDY_COLUMNS`) into the reference ``store``.

    ``source`` is stored as :func:`check_source` reads it (stripped, lower case). Raises a one-line
    :class:`~fh_screen.errors.FhScreenError` for a ``source`` that cannot be ingested (:func:`check_ingest_source`).
    """
    source = check_ingest_source(source)
    report = report if report is not None else IngestReport(n_rows=len(frame))
    formulas = frame["formula"].tolist()
    values = frame["dhf_ev_per_atom"].astype(float).tolist()
    source_ids = frame["source_id"].tolist() if "source_id" in frame.columns else [None] * len(frame)
    passed = frame["passed_outlier_filter"].tolist() if "passed_outlier_filter" in frame.columns else [True] * len(frame)
    n_total = len(formulas)
    for start in range(0, n_total, batch_size):
        stop = min(start + batch_size, n_total)
        batch = formulas[start:stop]
        existing = {
            doc["formula"]: doc
            for doc in store.query(criteria={"formula": {"$in": batch}, "source": source},
                                   properties=["formula", *_COMPARED])
        }
        now = utcnow()
        writes = []
        for i in range(start, stop):
            formula = formulas[i]
            new = {
                "dhf_ev_per_atom": values[i], "source": source, "source_id": _text_or_none(source_ids[i]),
                "source_version": source_version, "passed_outlier_filter": bool(passed[i]),
            }
            old = existing.get(formula)
            if old is None:
                report.inserted += 1
            elif _same(old, new):
                report.unchanged += 1
                continue
            else:
                report.updated += 1
                if len(report.updated_examples) < 10:
                    report.updated_examples.append((formula, old.get("dhf_ev_per_atom"), values[i]))
            elements = elements_of(formula)
            writes.append(ReferenceEntryDoc.model_validate({
                "formula": formula, "elements": list(elements), "chemsys": chemsys_of(elements),
                "nelements": len(elements), **new, "source_file": source_file, "last_updated": now,
            }).model_dump())
        if writes:
            # unique per (formula, source): another source's value of the formula (the shipped OQMD
            # entry, a user's DFT) stays beside this one; the hull uses the lowest
            store.update(writes, key=["formula", "source"])
        if progress is not None:
            progress(stop, n_total)
    return report


def _text_or_none(value) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


def _same(old: dict, new: dict) -> bool:
    for name in _COMPARED:
        a, b = old.get(name), new.get(name)
        if name == "dhf_ev_per_atom":
            if a is None or abs(float(a) - float(b)) > TOLERANCE_EV_PER_ATOM:
                return False
        elif a != b:
            return False
    return True
