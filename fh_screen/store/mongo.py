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
    "FhMongoStore", "MongoStoreError", "MongoUnreachableError", "check_reachable", "mask_uri", "mongo_collection",
    "mongo_collections", "mongo_label", "mongo_reference_exists",
]

logger = logging.getLogger(__name__)

_SCHEME = re.compile(r"^(?P<scheme>[a-z][a-z0-9+.-]*://)", re.IGNORECASE)


class MongoUnreachableError(FhScreenError):
    """The MongoDB server does not answer (wrong host, port, credentials, or it is down)."""


class MongoStoreError(FhScreenError):
    """A MongoDB read or write that failed (a user without the right, a duplicate key, a server gone
    mid-command); one line naming the collection, password masked: what :class:`~fh_screen.store.backend.StoreFileError`
    is to the embedded store."""


def mask_uri(uri: str) -> str:
    """``uri`` with its password replaced by ``***`` (``mongodb://me:***@host/db``).

    The user information ends at the last ``@`` (as pymongo reads it), so a password holding an
    unescaped ``@`` or ``/`` is masked whole too.
    """
    text = str(uri)
    match = _SCHEME.match(text)
    if match is None or "@" not in text[match.end():]:
        return text
    userinfo, _, rest = text[match.end():].rpartition("@")
    user, colon, _ = userinfo.partition(":")
    if "/" in user:  # an '@' after the host (in the path or options), not user information
        return text
    return f"{match['scheme']}{user}:***@{rest}" if colon else f"{match['scheme']}{user}@{rest}"


def _host_of(uri: str) -> str:
    rest = mask_uri(uri)
    match = _SCHEME.match(rest)
    rest = rest[match.end():] if match else rest
    if "***@" in rest:
        rest = rest.split("***@", 1)[1]
    elif "@" in rest.split("/", 1)[0]:
        rest = rest.split("@", 1)[1]
    return rest.split("/", 1)[0].split("?", 1)[0] or "localhost"


def _reason(exc: BaseException) -> str:
    """pymongo's message in one line, without its topology description and the documents of a write error."""
    details = getattr(exc, "details", None)
    if isinstance(details, dict) and details.get("writeErrors"):  # BulkWriteError: the first write's own reason
        text = str(details["writeErrors"][0].get("errmsg") or exc)
    else:
        text = str(exc)
    for cut in (", Timeout:", ", Topology Description:", ", full error:"):
        text = text.split(cut)[0]
    return " ".join(text.split()) or type(exc).__name__


class FhMongoStore(MongoStore):
    """maggma's ``MongoStore``, whose client is ``pymongo.MongoClient`` looked up when it connects, and
    whose failures are one line.

    maggma binds ``MongoClient`` when it is imported; looking it up at connect time lets
    ``mongomock_ng.patch`` (the tests) reach every store made afterwards. A pymongo error of a read
    or a write (a read-only user, a duplicate key, a server gone mid-command) is raised as
    :class:`MongoStoreError` naming the collection, as the embedded store raises
    :class:`~fh_screen.store.backend.StoreFileError`; :attr:`name` carries no password. All else is maggma's.
    """

    @property
    def name(self) -> str:
        """``mongodb://host/database/collection``: where the collection lives, without credentials
        (maggma's ``MongoStore.name`` is the whole URI, password included)."""
        scheme = _SCHEME.match(str(self.uri or ""))
        prefix = scheme["scheme"].lower() if scheme else "mongodb://"
        host = _host_of(self.uri) if self.uri else f"{self.host}:{self.port}"
        return f"{prefix}{host}/{self.database}/{self.collection_name}"

    def connect(self, force_reset: bool = False) -> None:
        """Connect to the collection (a new client when not connected or ``force_reset``)."""
        if self._coll is None or force_reset:
            import pymongo

            client = pymongo.MongoClient(self.uri, **self.mongoclient_kwargs)
            self._coll = client[self.database][self.collection_name]

    def _failure(self, doing: str, exc: BaseException) -> MongoStoreError:
        return MongoStoreError(f"cannot {doing} {self.name}: {_reason(exc)}")

    def query(self, *args, **kwargs):
        """maggma's ``query``; a pymongo error is :class:`MongoStoreError` (one line)."""
        from pymongo.errors import PyMongoError

        try:
            yield from super().query(*args, **kwargs)
        except PyMongoError as exc:
            raise self._failure("read", exc) from None

    def groupby(self, *args, **kwargs):
        """maggma's ``groupby``; a pymongo error is :class:`MongoStoreError` (one line)."""
        from pymongo.errors import PyMongoError

        try:
            yield from super().groupby(*args, **kwargs)
        except PyMongoError as exc:
            raise self._failure("read", exc) from None

    def count(self, *args, **kwargs) -> int:
        """maggma's ``count``; a pymongo error is :class:`MongoStoreError` (one line)."""
        return self._guarded("read", super().count, *args, **kwargs)

    def distinct(self, *args, **kwargs) -> list:
        """maggma's ``distinct``; a pymongo error is :class:`MongoStoreError` (one line)."""
        return self._guarded("read", super().distinct, *args, **kwargs)

    def update(self, *args, **kwargs) -> None:
        """maggma's ``update`` (one unordered bulk write); a pymongo error is :class:`MongoStoreError` (one line)."""
        return self._guarded("write to", super().update, *args, **kwargs)

    def remove_docs(self, *args, **kwargs) -> None:
        """maggma's ``remove_docs``; a pymongo error is :class:`MongoStoreError` (one line)."""
        return self._guarded("write to", super().remove_docs, *args, **kwargs)

    def ensure_index(self, *args, **kwargs) -> bool:
        """maggma's ``ensure_index``; a pymongo error is :class:`MongoStoreError` (one line)."""
        return self._guarded("index", super().ensure_index, *args, **kwargs)

    def _guarded(self, doing: str, method, *args, **kwargs):
        from pymongo.errors import PyMongoError

        try:
            return method(*args, **kwargs)
        except PyMongoError as exc:
            raise self._failure(doing, exc) from None


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
    except (PyMongoError, ValueError) as exc:  # ValueError: a URI pymongo cannot read (a port that is no number)
        if store._coll is not None:  # the client's monitor threads would outlive the error
            store.close()
        raise MongoUnreachableError(
            f"cannot reach MongoDB at {_host_of(uri)} ({mask_uri(uri)}): {_reason(exc)}"
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
