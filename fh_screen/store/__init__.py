"""fh-screen's maggma stores: OQMD reference entries, predictions and screens (three collections).

Owns the embedded SQLite store (:mod:`~fh_screen.store.backend`), the pydantic documents, ingest,
the shipped reference table (:mod:`~fh_screen.store.bootstrap`), builders and queries.
Sits above the pure screen: its :class:`~fh_screen.store.documents.ScreenDoc` knows the screen's
result and options. May import :mod:`fh_screen.screening`, :mod:`fh_screen.models` (the
prediction builder), :mod:`fh_screen.chem`, :mod:`fh_screen.data`, :mod:`fh_screen.settings`,
:mod:`fh_screen.errors`, :mod:`fh_screen.run_ids` and :mod:`fh_screen.version`; never
``service``, ``study``, ``jobs``, ``cli`` or ``plotting``.

>>> from fh_screen.store import FhScreenStore
>>> with FhScreenStore.from_settings() as store:
...     frame = store.reference_frame(chemsys="Li-Fe-P-O")
"""

from fh_screen.store.backend import SQLiteStore, StoreFileError
from fh_screen.store.documents import (
    Candidate,
    PredictionDoc,
    Problem,
    ReferenceEntryDoc,
    ScreenDoc,
    chemsys_of,
    elements_of,
    new_run_id,
    subsystems,
)
from fh_screen.store.query import QueryError, criteria_for
from fh_screen.store.stores import FhScreenStore, ScreenExistsError, ScreenNotFoundError, SourceOwnedError

__all__ = [
    "Candidate",
    "FhScreenStore",
    "PredictionDoc",
    "Problem",
    "QueryError",
    "ReferenceEntryDoc",
    "SQLiteStore",
    "ScreenDoc",
    "ScreenExistsError",
    "ScreenNotFoundError",
    "SourceOwnedError",
    "StoreFileError",
    "chemsys_of",
    "criteria_for",
    "elements_of",
    "new_run_id",
    "subsystems",
]
