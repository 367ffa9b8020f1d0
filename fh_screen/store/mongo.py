"""fh-screen's three collections on a MongoDB server, through maggma's ``MongoStore``.

:func:`mongo_collections` builds the reference, predictions and screens collections named in the
settings (``FH_SCREEN_MONGO_URI``, ``mongo_database``, ``*_collection``), checks that the server
answers within ``mongo_timeout_s`` (one line naming the host, password masked, otherwise), and
fills the reference collection with the OQMD table shipped with the package on first use (bulk
writes with a progress line; :func:`fh_screen.store.bootstrap.fill_reference`, the same code as
the embedded store). Tests run this very code against mongomock (``mongomock_ng.patch``).
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from fh_screen.errors import FhScreenError

from maggma.stores import MongoStore

if TYPE_CHECKING:
    from fh_screen.settings import FhScreenSettings

__all__ = [
    "FhMongoStore", "MongoUnreachableError", "check_reachable", "mask_uri", "mongo_collection", "mongo_collections",
    "mongo_label", "mongo_reference_exists",
]

logger = logging.getLogger(__name__)

_CREDENTIALS = re.compile(r"^(?P<scheme>[a-z+]+://)(?P<user>[^:@/]*)(?::[^@/]*)?@")


class MongoUnreachableError(FhScreenError):
    """The MongoDB server does not answer (wrong host, port, credentials, or it is down)."""


def mask_uri(uri: str) -> str:
    """``uri`` with its password replaced by ``***`` (``mongodb://me:***@host/db``)."""
    return _CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@" if m["user"] else m["scheme"], str(uri))


def _host_of(uri: str) -> str:
    rest = mask_uri(uri).split("://", 1)[-1]
    rest = rest.split("@", 1)[-1]
    return rest.split("/", 1)[0].split("?", 1)[0] or "localhost"


class FhMongoStore(MongoStore):
    """maggma's ``MongoStore``, whose client is ``pymongo.MongoClient`` looked up when it connects.

    maggma binds ``MongoClient`` when it is imported; looking it up at connect time lets
    ``mongomock_ng.patch`` (the tests) reach every store made afterwards. All else is maggma's.
    """

    def connect(self, force_reset: bool = False) -> None:
        """Connect to the collection (a new client when not connected or ``force_reset``)."""
        if self._coll is None or force_reset:
            import pymongo

            client = pymongo.MongoClient(self.uri, **self.mongoclient_kwargs)
            self._coll = client[self.database][self.collection_name]


def mongo_collection(settings: FhScreenSettings, collection: str, key: str) -> MongoStore:
    """A maggma ``MongoStore`` on ``collection`` of the configured database, with a bounded server wait."""
    timeout_ms = int(settings.mongo_timeout_s * 1000)
    return FhMongoStore.from_uri(
        settings.mongo_uri, collection_name=collection, database=settings.mongo_database, key=key,
        mongoclient_kwargs={"serverSelectionTimeoutMS": timeout_ms, "connectTimeoutMS": timeout_ms},
    )


def check_reachable(store: MongoStore, uri: str) -> None:
    """Connect ``store`` and ask the server for one round trip; :class:`MongoUnreachableError` if it fails.

    The message is one line naming the host (the URI with its password masked) and pymongo's reason.
    """
    from pymongo.errors import PyMongoError

    try:
        store.connect()
        store._collection.database.command("ping")
    except PyMongoError as exc:
        reason = " ".join(str(exc).split(", Timeout:")[0].split(", Topology Description:")[0].split())
        if store._coll is not None:  # the client's monitor threads would outlive the error
            store.close()
        raise MongoUnreachableError(
            f"cannot reach MongoDB at {_host_of(uri)} ({mask_uri(uri)}): {reason or type(exc).__name__}"
        ) from None


def mongo_reference_exists(settings: FhScreenSettings) -> bool:
    """Whether the configured database holds the reference collection (a store once used), without
    creating it; :class:`MongoUnreachableError` (one line) when the server does not answer."""
    reference = mongo_collection(settings, settings.reference_collection, "formula")
    check_reachable(reference, settings.mongo_uri)
    try:
        return settings.reference_collection in reference._collection.database.list_collection_names()
    finally:
        reference.close()


def mongo_label(settings: FhScreenSettings) -> str:
    """``MongoDB host/database`` of the configured server, for messages (no credentials)."""
    return f"MongoDB {_host_of(settings.mongo_uri)}/{settings.mongo_database}"


def mongo_collections(settings: FhScreenSettings) -> tuple[MongoStore, MongoStore, MongoStore, bool]:
    """The configured server's reference, predictions and screens collections, reference filled on first use.

    Parameters
    ----------
    settings
        ``mongo_uri`` (required), ``mongo_database``, the three collection names,
        ``mongo_timeout_s`` and ``reference_data`` (False: do not fill the reference collection).

    Returns
    -------
    tuple
        The three (unconnected) ``MongoStore``s and whether the reference collection was just
        written (its indexes are then made by the caller). Raises :class:`MongoUnreachableError`
        (one line) when the server does not answer within ``mongo_timeout_s``.
    """
    from fh_screen.store.bootstrap import META_COLLECTION, fill_reference

    uri = settings.mongo_uri
    reference = mongo_collection(settings, settings.reference_collection, "formula")
    check_reachable(reference, uri)
    written = False
    if settings.reference_data:
        meta = mongo_collection(settings, META_COLLECTION, "key")
        where = f"{mongo_label(settings)}.{settings.reference_collection}"

        def progress(done: int, total: int) -> None:
            if total > 20000:
                logger.info("reference entries written: %s of %s", f"{done:,}", f"{total:,}")

        written = fill_reference(reference, meta, where=where, progress=progress).action != "current"
    return (
        mongo_collection(settings, settings.reference_collection, "formula"),
        mongo_collection(settings, settings.predictions_collection, "prediction_id"),
        mongo_collection(settings, settings.screens_collection, "run_id"),
        written,
    )
