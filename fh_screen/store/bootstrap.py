"""Fill the embedded store from the OQMD reference table shipped with fh-screen, once.

The package carries ``fh_screen/reference_data/oqmd_reference.csv.gz``: the lowest OQMD
formation enthalpy per reduced composition (built by ``scripts/build_reference_table.py``; OQMD,
CC-BY 4.0, see ``ATTRIBUTION.md`` there). On first use of the embedded store its entries are
written to the reference collection (one line on stderr), and a stamp (the table's sha256) is kept
in the ``fh_screen_meta`` collection of the same file, so later runs do nothing and a newer package
with a newer table updates the entries it wrote before. Entries written by ``fh-screen ingest``
(any other ``source_file``) are never overwritten by the shipped table.

The table anchors the convex hull of a screen on known DFT phases. It is not training data.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fh_screen.errors import FhScreenError

if TYPE_CHECKING:
    import pandas as pd
    from maggma.core import Store

    from fh_screen.settings import FhScreenSettings

__all__ = [
    "BootstrapResult",
    "METADATA_FILE",
    "META_COLLECTION",
    "TABLE_FILE",
    "bootstrap_from_settings",
    "fill_store_file",
    "SHIPPED_SOURCE",
    "ensure_reference_data",
    "fill_reference",
    "load_reference_table",
    "packaged_reference_frame",
    "reference_metadata",
]

#: The shipped table and its metadata, inside ``fh_screen/reference_data/``.
TABLE_FILE = "oqmd_reference.csv.gz"
METADATA_FILE = "oqmd_reference.json"

#: Collection (SQLite table) of the embedded store file that holds the stamp.
META_COLLECTION = "fh_screen_meta"
_STAMP_KEY = "reference_data"
#: ``source`` of the shipped entries (a user's own values carry another source and sit beside them).
SHIPPED_SOURCE = "oqmd"
_BATCH = 20000

logger = logging.getLogger(__name__)


class _CurrentStderr(logging.StreamHandler):
    """A handler writing to whatever ``sys.stderr`` is when a record is emitted (never a closed stream)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _progress_logger() -> logging.Logger:
    """The logger of the one first-use line: goes to stderr even when logging is not configured.

    Only this package's own ``fh_screen.store.bootstrap.progress`` logger gets a handler (it does
    not propagate); the host's loggers and logging configuration are left alone.
    """
    progress = logging.getLogger(f"{__name__}.progress")
    if not progress.handlers:
        handler = _CurrentStderr(sys.stderr)
        handler.setFormatter(logging.Formatter("fh-screen: %(message)s"))
        progress.addHandler(handler)
        progress.setLevel(logging.INFO)
        progress.propagate = False
    return progress


@dataclass(frozen=True)
class BootstrapResult:
    """What :func:`ensure_reference_data` did.

    Attributes
    ----------
    action
        ``"current"`` (the stamp matched, nothing written), ``"filled"`` (an empty store was
        filled) or ``"updated"`` (entries of an older shipped table were brought up to date).
    n_written
        Reference entries written.
    seconds
        Wall time of the call.
    """

    action: str
    n_written: int
    seconds: float


def _data_file(name: str) -> Path:
    return Path(str(resources.files("fh_screen") / "reference_data" / name))


@lru_cache(maxsize=1)
def reference_metadata() -> dict[str, Any]:
    """Metadata of the shipped table: counts, source sha256s and ``table_sha256`` (the stamp).

    Returns
    -------
    dict
        The contents of ``oqmd_reference.json``.
    """
    path = _data_file(METADATA_FILE)
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise FhScreenError(f"shipped reference data is unreadable: {path}: {exc}") from None


@lru_cache(maxsize=1)
def _raw_table() -> pd.DataFrame:
    """``formula``, ``dhf_ev_per_atom`` as shipped (read once per process)."""
    import pandas as pd

    path = _data_file(TABLE_FILE)
    try:
        return pd.read_csv(path, keep_default_na=False, na_values=[""], dtype={"formula": str})
    except (OSError, ValueError) as exc:
        raise FhScreenError(f"shipped reference data is unreadable: {path}: {exc}") from None


def _with_systems(table: pd.DataFrame) -> pd.DataFrame:
    from fh_screen.store.documents import chemsys_of, elements_of

    table = table.copy()
    elements = [elements_of(f) for f in table["formula"]]
    table["chemsys"] = [chemsys_of(e) for e in elements]
    table["nelements"] = [len(e) for e in elements]
    return table


@lru_cache(maxsize=1)
def _cached_table() -> pd.DataFrame:
    return _with_systems(_raw_table())


def load_reference_table() -> pd.DataFrame:
    """The shipped OQMD reference table.

    Returns
    -------
    pandas.DataFrame
        ``formula`` (pymatgen reduced), ``dhf_ev_per_atom``, ``chemsys``, ``nelements``; one row
        per composition. A copy: changing it does not change later calls.
    """
    return _cached_table().copy()


def packaged_reference_frame(chemsys: str) -> pd.DataFrame:
    """Shipped entries of a chemical system and all its subsystems, without any store.

    Parameters
    ----------
    chemsys
        Elements joined by ``-`` in any order, e.g. ``Li-Fe-O``.

    Returns
    -------
    pandas.DataFrame
        The matching rows of :func:`load_reference_table` plus ``elements``, ``source`` and
        ``passed_outlier_filter``, shaped like :meth:`FhScreenStore.reference_frame
        <fh_screen.store.stores.FhScreenStore.reference_frame>`.
    """
    from fh_screen.store.documents import subsystems

    systems = set(subsystems(chemsys))
    symbols = "|".join(sorted(max(systems, key=len).split("-"), key=len, reverse=True))
    raw = _raw_table()
    # A cheap text filter first (formulas made of the system's symbols only), then the exact test.
    candidates = _with_systems(raw[raw["formula"].str.fullmatch(rf"(?:(?:{symbols})\d*|\(|\)\d*)+")])
    frame = candidates[candidates["chemsys"].isin(systems)].copy()
    frame["elements"] = [c.split("-") for c in frame["chemsys"]]
    frame["source"] = SHIPPED_SOURCE
    frame["source_file"] = TABLE_FILE
    frame["passed_outlier_filter"] = True
    return frame.reset_index(drop=True)


def _docs(table: pd.DataFrame, rows, now) -> list[dict]:
    formulas, values, chemsys, nelements = (
        table[c].tolist() for c in ("formula", "dhf_ev_per_atom", "chemsys", "nelements")
    )
    return [
        {
            "formula": formulas[i], "elements": chemsys[i].split("-"), "chemsys": chemsys[i],
            "nelements": int(nelements[i]), "dhf_ev_per_atom": float(values[i]), "source": SHIPPED_SOURCE,
            "source_id": None, "source_version": None, "source_file": TABLE_FILE,
            "passed_outlier_filter": True, "last_updated": now,
        }
        for i in rows
    ]


def ensure_reference_data(
    path: str | Path,
    *,
    collection: str = "reference",
    busy_timeout_s: float = 60.0,
    progress: Callable[[int, int], None] | None = None,
) -> BootstrapResult:
    """Make sure the embedded store at ``path`` holds the shipped OQMD reference entries.

    Parameters
    ----------
    path
        The embedded store file (created if needed).
    collection
        Name of the reference collection in that file.
    busy_timeout_s
        How long to wait for another writer.
    progress
        Called as ``progress(n_written, n_total)`` after each batch.

    Returns
    -------
    BootstrapResult
        What was done; ``"current"`` costs one small query.
    """
    from fh_screen.store.backend import SQLiteStore

    meta = SQLiteStore(path, META_COLLECTION, key="key", busy_timeout_s=busy_timeout_s)
    reference = SQLiteStore(path, collection, key="formula", busy_timeout_s=busy_timeout_s)
    return fill_reference(reference, meta, where=str(Path(path).expanduser()), progress=progress)


def fill_reference(
    reference: Store,
    meta: Store,
    *,
    where: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> BootstrapResult:
    """Write the shipped OQMD table into any reference Store (embedded or MongoDB) once.

    Parameters
    ----------
    reference
        The reference collection (key ``formula``; entries unique per ``(formula, source)``).
    meta
        A small collection (key ``key``) that keeps the stamp: the table's sha256.
    where
        Name of the store for the one progress line (password-free).
    progress
        Called as ``progress(n_written, n_total)`` after each batch.

    Returns
    -------
    BootstrapResult
        What was done; ``"current"`` (the stamp matched) costs one small query.

    Notes
    -----
    The shipped entries have ``source`` ``"oqmd"`` and ``source_file`` :data:`TABLE_FILE`; a store
    filled from an older table gets the entries that changed. Entries of any other source (a
    user's DFT, CHGNet, a full OQMD release ingested with its own source name) sit beside them and
    are never touched; the hull uses the lowest value per composition.
    """
    from fh_screen.store.documents import utcnow

    started = time.perf_counter()
    stamp = reference_metadata()["table_sha256"]
    meta.connect()
    try:
        stamp_key = f"{_STAMP_KEY}:{reference.collection_name}" if hasattr(reference, "collection_name") else _STAMP_KEY
        found = next(iter(meta.query({"key": stamp_key}, properties=["table_sha256"])), None)
        if found and found.get("table_sha256") == stamp:
            return BootstrapResult("current", 0, time.perf_counter() - started)
        reference.connect()
        try:
            table = _cached_table()
            n_before = reference.count()
            if n_before == 0:
                rows = list(range(len(table)))
            else:
                held = {
                    d["formula"]: d for d in reference.query(
                        {"source": SHIPPED_SOURCE}, properties=["formula", "source_file", "dhf_ev_per_atom"])
                }
                rows = [
                    i for i, (formula, value) in enumerate(zip(table["formula"].tolist(), table["dhf_ev_per_atom"].tolist()))
                    if formula not in held
                    or (held[formula].get("source_file") == TABLE_FILE and held[formula].get("dhf_ev_per_atom") != value)
                ]
            name = where or getattr(reference, "collection_name", "the reference collection")
            if rows:
                _progress_logger().info(
                    "%s %s with %s OQMD reference entries shipped with the package (%s)",
                    "first use: filling" if n_before == 0 else "updating", name, f"{len(rows):,}",
                    "once" if n_before == 0 else "once for this package version",
                )
            now = utcnow()
            # an empty collection takes the fast path on the store key; otherwise (formula, source) is the key
            key = "formula" if n_before == 0 else ["formula", "source"]
            for start in range(0, len(rows), _BATCH):
                reference.update(_docs(table, rows[start:start + _BATCH], now), key=key)
                if progress is not None:
                    progress(min(start + _BATCH, len(rows)), len(rows))
        finally:
            reference.close()
        meta.update({"key": stamp_key, "table_sha256": stamp, "n_compositions": int(len(table)), "written": now})
        seconds = time.perf_counter() - started
        logger.info("wrote %d reference entries to %s in %.1f s", len(rows), name, seconds)
        return BootstrapResult("filled" if n_before == 0 else "updated", len(rows), seconds)
    finally:
        meta.close()


def fill_store_file(store_file: str | Path, settings: FhScreenSettings | None = None) -> None:
    """Fill an embedded store file with the OQMD table shipped with fh-screen on first use, as the configured store.

    Done when the file is new, holds no reference entry, or was filled before (then it is kept
    current, :func:`~fh_screen.store.bootstrap.ensure_reference_data`); a file holding only
    entries of its own (``fh-screen ingest FILE --store ...``) is left as it is. Nothing happens
    with ``reference_data: false`` (``FH_SCREEN_REFERENCE_DATA=false``). Raises
    :class:`~fh_screen.store.StoreFileError` (one line) for a file that is not a store.
    ``settings``: None reads ``~/.fh_screen.yaml`` and ``FH_SCREEN_*``, as the configured store.
    """
    from fh_screen.settings import FhScreenSettings
    from fh_screen.store.backend import SQLiteStore

    settings = settings if settings is not None else FhScreenSettings()
    if not settings.reference_data:
        return
    path = Path(store_file).expanduser()
    reference = SQLiteStore(path, "reference", key="formula", read_only=True)
    stamped = SQLiteStore(path, META_COLLECTION, key="key", read_only=True).collection_exists()
    if reference.collection_exists() and not stamped:
        with reference:  # (entries of the shipped table and no stamp: a fill under way elsewhere, completed here)
            if reference.count() and not reference.count({"source_file": TABLE_FILE}):
                return  # the user's own entries only: never mixed with the shipped table unasked
    ensure_reference_data(path, busy_timeout_s=settings.busy_timeout_s)


def bootstrap_from_settings(settings: FhScreenSettings, on_filled: Callable[[], object] | None = None) -> BootstrapResult | None:
    """Fill the configured embedded store from the shipped table if it needs it.

    Parameters
    ----------
    settings
        Where the store lives; nothing happens with MongoDB (``mongo_uri``) or with
        ``reference_data: false`` (``FH_SCREEN_REFERENCE_DATA=false``).
    on_filled
        Called after the table was written (not when it was current), inside the same error
        handling: :meth:`~fh_screen.store.stores.FhScreenStore.from_settings` creates both
        collections and their indexes there (this module does not import the stores).

    Returns
    -------
    BootstrapResult or None
        None when skipped, or when the store file cannot be written (logged; the store is
        then used as it is).
    """
    if settings.mongo_uri or not settings.reference_data:
        return None
    try:
        result = ensure_reference_data(
            settings.store_path, collection=settings.reference_collection, busy_timeout_s=settings.busy_timeout_s,
        )
        if result.action != "current" and on_filled is not None:
            on_filled()
        return result
    except (OSError, sqlite3.Error) as exc:
        logger.warning("could not fill %s with the shipped reference data: %s", settings.store_path, exc)
        return None
