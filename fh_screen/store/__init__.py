"""fh-screen's maggma stores: OQMD reference entries and predictions side by side.

>>> from fh_screen.store import FhScreenStore
>>> with FhScreenStore.from_settings() as store:
...     frame = store.reference_frame(chemsys="Li-Fe-P-O")
"""

from fh_screen.store.backend import SQLiteStore, StoreFileError
from fh_screen.store.documents import PredictionDoc, ReferenceEntryDoc, chemsys_of, elements_of, subsystems
from fh_screen.store.query import QueryError, criteria_for
from fh_screen.store.stores import FhScreenStore, new_run_id

__all__ = [
    "FhScreenStore",
    "PredictionDoc",
    "QueryError",
    "ReferenceEntryDoc",
    "SQLiteStore",
    "StoreFileError",
    "chemsys_of",
    "criteria_for",
    "elements_of",
    "new_run_id",
    "subsystems",
]
