"""SQLiteStore: an embedded, file-backed maggma ``Store`` with real indexes.

maggma's embedded choices do not meet fh-screen's numbers: ``MontyStore`` (montydb) scans in
Python with no indexes and ``JSONStore`` rewrites its whole file on every update. This store keeps
one table per collection in an SQLite file (stdlib :mod:`sqlite3`):

* each document is stored as JSON (datetimes round-trip as naive UTC, as MongoDB returns them);
* :meth:`SQLiteStore.ensure_index` creates SQLite expression indexes on ``json_extract`` of a field,
  so equality, ``$in`` and range criteria on indexed fields are answered from the index;
* Mongo-style criteria are evaluated **exactly** by mongomock-ng's matcher
  (``mongomock_ng.filtering.filter_applies``, the one maggma's ``MemoryStore`` uses) after SQL has
  narrowed the candidate rows; rows that SQL already matched exactly (scalar values of the right
  type) skip the Python matcher. That function is public in name but not documented, so
  ``pyproject.toml`` pins the mongomock-ng versions this is tested with;
* every :meth:`~SQLiteStore.update` / :meth:`~SQLiteStore.remove_docs` call is one ``BEGIN
  IMMEDIATE`` transaction: a batch is written entirely or not at all, a killed process leaves the
  file readable (write-ahead log), and concurrent writers wait for each other (``busy_timeout``);
* an unreadable or corrupt file raises :class:`StoreFileError`, one line naming the file.

Sorting is done by SQLite: null/missing < numbers < strings as in MongoDB; arrays and embedded
documents sort by their JSON text (MongoDB compares them element-wise).
"""

from __future__ import annotations

import errno
import json
import math
import os
import sqlite3
from collections.abc import Iterator
from datetime import date, datetime, timezone
from enum import Enum
from functools import lru_cache
from itertools import groupby
from pathlib import Path
from typing import Any

from maggma.core import Sort, Store, StoreError
from pydash import get, has, set_

from fh_screen.errors import FhScreenError, one_line

__all__ = ["SQLiteStore", "StoreFileError"]

_PAGE_ROWS = 2000
_TABLE_META = "fh_screen_store_meta"
_FORMAT_VERSION = 1
_NUMBER_TYPES = frozenset({"integer", "real"})
_MAX_SQL_INT = 2**63 - 1


class StoreUsageError(StoreError):
    """maggma's :class:`~maggma.core.StoreError` with a plain one-line message (maggma's own
    ``StoreError`` passes itself as its first argument, so its text reads ``(StoreError(...), '...')``)."""

    def __init__(self, message: str) -> None:
        Exception.__init__(self, message)


class StoreFileError(FhScreenError):
    """A store file that cannot be opened, read or written; the message names the file."""


# --------------------------------------------------------------------------------------------
# JSON encoding: datetimes and non-finite floats round-trip; everything else is sanitized like
# maggma's MongoStore does (numpy, MSONable, pydantic, enums, paths).


def _utc_naive(value: datetime) -> datetime:
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


@lru_cache(maxsize=256)
def _datetime_text(value: datetime) -> str:
    # Cached: a batch of documents usually shares one last_updated time stamp.
    return _utc_naive(value).isoformat(timespec="microseconds")


def _default(obj: Any) -> Any:
    if isinstance(obj, datetime):
        return {"$date": _datetime_text(obj)}
    if isinstance(obj, date):
        return {"$date": _datetime_text(datetime(obj.year, obj.month, obj.day))}
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=str)
    if hasattr(obj, "model_dump"):  # pydantic
        return obj.model_dump()
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return obj.tolist()
    from monty.json import jsanitize

    return jsanitize(obj, strict=False, allow_bson=False, recursive_msonable=True)


def _finite(obj: Any) -> Any:
    """Replace NaN and infinities by extended-JSON markers (SQLite's JSON rejects bare NaN)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"$numberDouble": "NaN" if math.isnan(obj) else ("Infinity" if obj > 0 else "-Infinity")}
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _encode(doc: Any) -> str:
    try:
        return json.dumps(doc, default=_default, allow_nan=False, separators=(",", ":"))
    except ValueError:
        plain = json.loads(json.dumps(doc, default=_default, separators=(",", ":")))
        return json.dumps(_finite(plain), allow_nan=False, separators=(",", ":"))


def _hook(obj: dict) -> Any:
    if len(obj) == 1:
        if "$date" in obj:
            return datetime.fromisoformat(obj["$date"])
        if "$numberDouble" in obj:
            return float(obj["$numberDouble"].replace("Infinity", "inf"))
    return obj


def _decode(text: str) -> dict:
    return json.loads(text, object_hook=_hook)


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _json_path(field: str) -> str | None:
    """SQLite JSON path of a (dotted) field, or None for names it cannot express safely."""
    parts = field.split(".")
    if not field or any(not p or '"' in p or "\\" in p or p.startswith("$") or p.isdigit() for p in parts):
        return None
    return "$." + ".".join(f'"{p}"' for p in parts)


def _sortable(value: Any) -> Any:
    """A key that orders any JSON value (for Python-side grouping)."""
    return json.dumps(value, sort_keys=True, default=_default)


# --------------------------------------------------------------------------------------------
# Criteria → SQL narrowing


class _Narrowing:
    """A WHERE clause selecting a superset of the documents matching Mongo criteria.

    ``exact`` is True when every criterion was translated; a row is then a match if, in
    addition, each field listed in ``type_checks`` has one of the allowed JSON types (a scalar of
    the type the criterion compares with), which the store checks from the selected columns.
    """

    def __init__(self, store: SQLiteStore, criteria: dict | None):
        self.store = store
        self.params: list[Any] = []
        self.type_paths: list[str] = []
        self.type_checks: list[frozenset[str]] = []
        self.exact = True
        clauses = self._translate(criteria or {}, top=True)
        self.where = " AND ".join(clauses) if clauses else "1"

    def _translate(self, criteria: dict, top: bool) -> list[str]:
        clauses = []
        for field, condition in criteria.items():
            if field == "$and" and isinstance(condition, list):
                for sub in condition:
                    if isinstance(sub, dict):
                        clauses.extend(self._translate(sub, top=top))
                    else:
                        self.exact = False
                continue
            if field.startswith("$") or "." in field or field == "_id":
                self.exact = False
                continue
            path = _json_path(field)
            if path is None:
                self.exact = False
                continue
            clause = self._field_clause(field, path, condition)
            if clause:
                clauses.append(clause)
        return clauses

    def _scalar_types(self, value: Any) -> frozenset[str] | None:
        if isinstance(value, bool):
            return frozenset({"true", "false"})
        if isinstance(value, int):
            return _NUMBER_TYPES if abs(value) <= _MAX_SQL_INT else None
        if isinstance(value, float):
            return _NUMBER_TYPES if math.isfinite(value) else None
        if isinstance(value, str):
            return frozenset({"text"})
        return None

    def _field_clause(self, field: str, path: str, condition: Any) -> str | None:
        is_key = field == self.store.key
        value_sql = "key" if is_key else f"json_extract(doc, '{path}')"
        is_lu = field == self.store.last_updated_field
        if isinstance(condition, dict) and condition and all(k.startswith("$") for k in condition):
            operators = condition
        elif isinstance(condition, dict):
            self.exact = False
            return None
        else:
            operators = {"$eq": condition}
        parts, types = [], None
        for op, value in operators.items():
            sql_op = {"$eq": "=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}.get(op)
            if is_lu and isinstance(value, datetime) and sql_op:
                parts.append(f"lu {sql_op} ?")
                self.params.append(_datetime_text(value))
                self.exact = False  # an isoformat string in lu compares too; let the matcher decide
                continue
            if sql_op:
                scalar_types = self._scalar_types(value)
                if scalar_types is None or (is_key and isinstance(value, bool)):
                    self.exact = False
                    continue
                parts.append(f"{value_sql} {sql_op} ?")
                self.params.append(value)
            elif op == "$in" and isinstance(value, (list, tuple)):
                kinds = [self._scalar_types(v) for v in value]
                if any(k is None for k in kinds) or (is_key and any(isinstance(v, bool) for v in value)):
                    self.exact = False
                    continue
                scalar_types = frozenset().union(*kinds)
                parts.append(f"{value_sql} IN (SELECT value FROM json_each(?))")
                self.params.append(json.dumps(list(value)))
            else:
                self.exact = False
                continue
            types = scalar_types if types is None else (types & scalar_types)
        if not parts:
            return None
        if is_key:  # the key column holds the (scalar) key itself: SQL matches exactly
            return f"({' AND '.join(parts)})"
        if types is not None:
            self.type_paths.append(path)
            self.type_checks.append(types)
        # Arrays match element-wise in MongoDB: keep them as candidates for the matcher.
        return f"(({' AND '.join(parts)}) OR json_type(doc, '{path}') = 'array')"

    def type_columns(self) -> str:
        return "".join(f", json_type(doc, '{p}')" for p in self.type_paths)

    def row_is_exact(self, types: tuple) -> bool:
        return self.exact and all(t in allowed for t, allowed in zip(types, self.type_checks))


# --------------------------------------------------------------------------------------------


def _on_read_only_media(path: Path) -> bool:
    """Whether the folder of ``path`` cannot be written (a read-only mount, or no permission)."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return True
    except (OSError, AttributeError):  # AttributeError: no statvfs (Windows)
        pass
    return not os.access(folder, os.W_OK)


def _read_only_uri(path: Path) -> str:
    """The URI that opens ``path`` for reading.

    A store is kept in WAL mode, and reading a WAL file needs its ``-shm`` index beside it, which
    SQLite cannot create in a read-only folder. There nobody can write the file either, so it is
    opened as immutable. A ``-wal`` left there with changes not yet in the file (a writer that did
    not close) would be ignored that way, so that case is refused.
    """
    if not _on_read_only_media(path):
        return f"file:{path}?mode=ro"
    wal = path.with_name(path.name + "-wal")
    if wal.is_file() and wal.stat().st_size > 0:
        raise StoreFileError(f"store file {path} is in a read-only folder with changes not yet written into it "
                             f"({wal.name}): open it once where it can be written, or copy the folder")
    return f"file:{path}?mode=ro&immutable=1"


class SQLiteStore(Store):
    """A maggma Store keeping one collection in a table of an SQLite file."""

    def __init__(
        self,
        database_path: str | Path,
        collection_name: str = "docs",
        key: str = "task_id",
        busy_timeout_s: float = 60.0,
        read_only: bool = False,
        **kwargs,
    ):
        """Describe the store; nothing is opened until :meth:`connect`.

        Parameters
        ----------
        database_path
            SQLite file (created with its folder unless ``read_only``).
        collection_name
            Table holding this collection; several collections share a file.
        key
            Main key; documents are upserted on it (unique).
        busy_timeout_s
            How long a writer waits for another process's transaction.
        read_only
            Open the file read-only (it must exist).
        **kwargs
            Passed to :class:`maggma.core.Store` (``last_updated_field``, ``validator``, ...).
        """
        self.database_path = str(database_path)
        self.collection_name = collection_name
        self.busy_timeout_s = busy_timeout_s
        self.read_only = read_only
        self.kwargs = kwargs
        self._conn: sqlite3.Connection | None = None
        super().__init__(key=key, **kwargs)

    # -- connection ------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """``sqlite://<file>/<collection>``."""
        return f"sqlite://{self.database_path}/{self.collection_name}"

    @property
    def path(self) -> Path:
        """The SQLite file."""
        return Path(self.database_path).expanduser()

    @property
    def _table(self) -> str:
        return _quote(self.collection_name)

    @property
    def _collection(self) -> sqlite3.Connection:
        """The open :class:`sqlite3.Connection` (maggma's handle to the backend)."""
        if self._conn is None:
            raise StoreUsageError(f"store {self.name} is not connected: use it inside `with store:` "
                                  f"(or call store.connect() first)")
        return self._conn

    def _error(self, exc: BaseException) -> StoreFileError:
        if not self.read_only and _on_read_only_media(self.path):
            if not self.path.is_file():
                return StoreFileError(f"store file {self.path} cannot be created: its folder is read-only")
            return StoreFileError(f"store file {self.path} cannot be written: its folder is read-only "
                                  f"(it can still be read: queries, and screens that do not save: --no-store, save=False)")
        return StoreFileError(f"store file {self.path} cannot be used: {one_line(exc, first_line=True)}")

    def collection_exists(self) -> bool:
        """Whether the file exists and holds this collection (read only: nothing is created).

        Raises :class:`StoreFileError` (one line) for a file that is not an SQLite database.
        """
        from contextlib import closing

        if not self.path.is_file():
            return False
        try:
            with closing(sqlite3.connect(_read_only_uri(self.path), uri=True, timeout=self.busy_timeout_s)) as conn:
                tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        return self.collection_name in tables

    def connect(self, force_reset: bool = False) -> None:
        """Open the file (creating it and its folder if needed) and the collection's table."""
        if self._conn is not None and not force_reset:
            return
        self.close()
        path = self.path
        if path.is_dir():
            raise StoreFileError(f"store file {path} is a folder, not an SQLite file")
        new_file = not self.read_only and not path.exists()
        try:
            if self.read_only:
                if not path.is_file():
                    raise StoreFileError(f"store file {path} does not exist")
                conn = sqlite3.connect(
                    _read_only_uri(path), uri=True, timeout=self.busy_timeout_s,
                    isolation_level=None, check_same_thread=False,
                )
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                if _on_read_only_media(path):  # SQLite would open it for reading and fail at the first write
                    raise self._error(PermissionError("read-only folder"))
                conn = sqlite3.connect(
                    path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False
                )
        except OSError as exc:
            self._remove_if_never_made(new_file, exc)
            raise StoreFileError(f"store file {path} cannot be created: {exc.strerror or exc}") from None
        except sqlite3.Error as exc:
            self._remove_if_never_made(new_file, exc)
            raise self._error(exc) from None
        try:
            self._conn = conn
            self._setup()
        except sqlite3.Error as exc:
            self._conn = None
            conn.close()
            self._remove_if_never_made(new_file, exc)
            raise self._error(exc) from None
        except StoreFileError:
            self._conn = None
            conn.close()
            raise

    def _remove_if_never_made(self, new_file: bool, exc: BaseException) -> None:
        """Remove the empty file this connection created when a full disk stopped it from making the store.

        Only a file that was not there before, still holds 0 bytes and failed for lack of space: a
        locked or busy file may be one another process is making at this moment.
        """
        full = "full" in str(exc).lower() or getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
        if not new_file or not full:
            return
        for path in (self.path, *(self.path.with_name(self.path.name + suffix) for suffix in ("-wal", "-shm"))):
            try:
                if path.is_file() and path.stat().st_size == 0:
                    path.unlink()
            except OSError:  # pragma: no cover - a leftover empty file is all that remains
                pass

    def _setup(self) -> None:
        conn = self._collection
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
        # Reading the schema fails here, on a file that is not an SQLite database.
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if self.read_only:
            if self.collection_name not in tables:
                raise StoreFileError(f"store file {self.path} has no collection {self.collection_name!r}")
            self._check_meta()
            return
        if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        if self.collection_name not in tables or _TABLE_META not in tables:
            with self._write():
                conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {_quote(_TABLE_META)} "
                    "(collection TEXT PRIMARY KEY, key_field TEXT NOT NULL, format INTEGER NOT NULL)"
                )
                conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {self._table} "
                    "(id INTEGER PRIMARY KEY, key, lu TEXT, doc TEXT NOT NULL)"
                )
                # Not UNIQUE: as in MongoDB, update(key=[...]) may store several documents per key.
                conn.execute(
                    f"CREATE INDEX IF NOT EXISTS {_quote('key_' + self.collection_name)} ON {self._table} (key)"
                )
                conn.execute(
                    f"CREATE INDEX IF NOT EXISTS {_quote('lu_' + self.collection_name)} ON {self._table} (lu)"
                )
                conn.execute(
                    f"INSERT OR IGNORE INTO {_quote(_TABLE_META)} VALUES (?, ?, ?)",
                    (self.collection_name, self.key, _FORMAT_VERSION),
                )
        self._check_meta()

    def _check_meta(self) -> None:
        row = self._collection.execute(
            f"SELECT key_field, format FROM {_quote(_TABLE_META)} WHERE collection = ?", (self.collection_name,)
        ).fetchone()
        if row is None:
            raise StoreFileError(f"store file {self.path}: table {self.collection_name!r} is not an fh-screen collection")
        if row[0] != self.key:
            raise StoreFileError(
                f"store file {self.path}: collection {self.collection_name!r} is keyed on {row[0]!r}, not {self.key!r}"
            )
        if row[1] > _FORMAT_VERSION:
            raise StoreFileError(f"store file {self.path} was written by a newer fh-screen (format {row[1]})")

    def close(self) -> None:
        """Close the connection (a no-op when not connected)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def check(self) -> str:
        """Run SQLite's ``quick_check`` over the file; :class:`StoreFileError` if it is damaged."""
        try:
            result = self._collection.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        if result != "ok":
            raise StoreFileError(f"store file {self.path} is damaged: {result}")
        return result

    class _Transaction:
        def __init__(self, store: SQLiteStore):
            self.store = store

        def __enter__(self):
            self.store._collection.execute("BEGIN IMMEDIATE")
            return self.store._collection

        def __exit__(self, exc_type, exc, tb):
            conn = self.store._collection
            if exc_type is None:
                conn.execute("COMMIT")
            elif conn.in_transaction:
                conn.execute("ROLLBACK")
            return False

    def _write(self) -> SQLiteStore._Transaction:
        if self.read_only:
            raise StoreFileError(f"store file {self.path} is open read-only")
        return SQLiteStore._Transaction(self)

    def _run(self, function, *args, **kwargs):
        try:
            return function(*args, **kwargs)
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    # -- reading ---------------------------------------------------------------------------

    def _order_by(self, sort: dict | None) -> str:
        if not sort:
            return "id"
        terms = []
        for field, direction in sort.items():
            value = direction.value if isinstance(direction, Sort) else int(direction)
            word = "DESC" if value < 0 else "ASC"
            if field == self.last_updated_field:
                terms.append(f"lu {word}")
                continue
            path = _json_path(field)
            if path is None:
                raise StoreUsageError(f"cannot sort on field {field!r}")
            terms.append(f"json_extract(doc, '{path}') {word}")
        return ", ".join(terms + ["id"])

    def _matching_rows(
        self, criteria: dict | None, sort: dict | None = None, columns: str = "doc"
    ) -> Iterator[tuple[int, dict]]:
        """(id, document) of every match, in ``sort`` order (document order by default)."""
        from mongomock_ng.filtering import filter_applies

        narrowing = _Narrowing(self, criteria)
        conn = self._collection
        type_columns = narrowing.type_columns()
        base = f"SELECT id, doc{type_columns} FROM {self._table} WHERE ({narrowing.where})"

        def rows():
            if sort:
                yield from conn.execute(f"{base} ORDER BY {self._order_by(sort)}", narrowing.params).fetchall()
                return
            last_id = -1
            while True:
                page = conn.execute(
                    f"{base} AND id > ? ORDER BY id LIMIT {_PAGE_ROWS}", [*narrowing.params, last_id]
                ).fetchall()
                yield from page
                if len(page) < _PAGE_ROWS:
                    return
                last_id = page[-1][0]

        for row in rows():
            doc = _decode(row[1])
            if criteria and not narrowing.row_is_exact(row[2:]) and not filter_applies(criteria, doc):
                continue
            yield row[0], doc

    def query(
        self,
        criteria: dict | None = None,
        properties: dict | list | None = None,
        sort: dict[str, Sort | int] | None = None,
        skip: int = 0,
        limit: int = 0,
        hint: dict | None = None,
        **kwargs,
    ) -> Iterator[dict]:
        """Documents matching Mongo ``criteria``, projected on ``properties``, sorted, skip/limit."""
        self._collection  # noqa: B018 - raise StoreError when not connected
        projection = _projection(properties)
        generator = self._matching_rows(criteria, sort)
        n_yielded = n_seen = 0
        try:
            for _, doc in _guarded(self, generator):
                n_seen += 1
                if n_seen <= skip:
                    continue
                yield projection(doc)
                n_yielded += 1
                if limit and n_yielded >= limit:
                    return
        finally:
            generator.close()

    def count(self, criteria: dict | None = None, hint: dict | None = None) -> int:
        """Number of documents matching ``criteria``."""
        if not criteria:
            return self._run(lambda: self._collection.execute(f"SELECT COUNT(*) FROM {self._table}").fetchone()[0])
        return sum(1 for _ in _guarded(self, self._matching_rows(criteria)))

    def distinct(self, field: str, criteria: dict | None = None, all_exist: bool = False) -> list:
        """Distinct values of ``field`` (array values are flattened, as in MongoDB)."""
        path = _json_path(field)
        if not criteria and field == self.key:
            # several documents may share a key value (updates on other key fields): distinct, as maggma's stores
            return [r[0] for r in self._run(
                lambda: self._collection.execute(
                    f"SELECT key FROM {self._table} WHERE key IS NOT NULL GROUP BY key ORDER BY MIN(id)"
                ).fetchall()
            )]
        if not criteria and path is not None and "." not in field:
            rows = self._run(
                lambda: self._collection.execute(
                    f"SELECT DISTINCT json_extract(doc, '{path}'), json_type(doc, '{path}') FROM {self._table} "
                    f"WHERE json_type(doc, '{path}') IS NOT NULL"
                ).fetchall()
            )
            values = []
            for value, kind in rows:
                if kind in ("array", "object"):
                    value = json.loads(value, object_hook=_hook)
                elif kind in ("true", "false"):
                    value = kind == "true"
                values.append(value)
        else:
            values = [get(doc, field) for _, doc in _guarded(self, self._matching_rows(criteria)) if has(doc, field)]
        out, seen = [], set()
        for value in values:
            for item in value if isinstance(value, list) else [value]:
                marker = _sortable(item)
                if marker not in seen:
                    seen.add(marker)
                    out.append(item)
        return out

    def groupby(
        self,
        keys: list[str] | str,
        criteria: dict | None = None,
        properties: dict | list | None = None,
        sort: dict[str, Sort | int] | None = None,
        skip: int = 0,
        limit: int = 0,
    ) -> Iterator[tuple[dict, list[dict]]]:
        """Group matching documents by the values of ``keys`` (as maggma's MemoryStore does)."""
        keys = keys if isinstance(keys, list) else [keys]
        if properties is None:
            properties = []
        if isinstance(properties, dict):
            properties = list(properties.keys())
        data = [
            doc
            for doc in self.query(criteria=criteria, properties=(keys + properties) if properties else None)
            if all(has(doc, k) for k in keys)
        ]

        def grouping_key(doc):
            return tuple(_sortable(get(doc, k)) for k in keys)

        for _, group in groupby(sorted(data, key=grouping_key), key=grouping_key):
            group = list(group)
            key_doc: dict = {}
            for k in keys:
                set_(key_doc, k, get(group[0], k))
            yield key_doc, group

    @property
    def last_updated(self) -> datetime:
        """Most recent ``last_updated_field`` value, as maggma's stores answer it.

        ``datetime.min`` for an empty store or one whose documents hold the field as None;
        :class:`~maggma.core.StoreError` when the first document in MongoDB's order holds no such
        field at all (maggma's ``Store.last_updated`` raises the same).
        """
        row = self._run(
            lambda: self._collection.execute(
                f"SELECT doc FROM {self._table} WHERE lu IS NOT NULL ORDER BY lu DESC LIMIT 1"
            ).fetchone()
        )
        if row is None:
            first = self._run(lambda: self._collection.execute(f"SELECT doc FROM {self._table} ORDER BY id LIMIT 1").fetchone())
            if first is not None and not has(_decode(first[0]), self.last_updated_field):
                raise StoreError(
                    f"No field '{self.last_updated_field}' in store document. Please ensure Store.last_updated_field "
                    "is a datetime field in your store that represents the time of last update to each document."
                )
            return datetime.min
        return self._lu_func[0](get(_decode(row[0]), self.last_updated_field))

    # -- writing ---------------------------------------------------------------------------

    def ensure_index(self, key: str, unique: bool = False) -> bool:
        """Create an SQLite expression index on ``key`` (True when it exists or was created)."""
        if key in (self.key, self.last_updated_field) and not (unique and key != self.key):
            return True  # the key and lu columns have their own indexes
        path = _json_path(key)
        if path is None:
            return False
        name = f"ix_{self.collection_name}_{key}"
        try:
            with self._write() as conn:
                conn.execute(
                    f"CREATE {'UNIQUE ' if unique else ''}INDEX IF NOT EXISTS {_quote(name)} "
                    f"ON {self._table} (json_extract(doc, '{path}'))"
                )
                # Only array values need this one (they match element-wise): a partial index.
                conn.execute(
                    f"CREATE INDEX IF NOT EXISTS {_quote(name + '__arrays')} ON {self._table} "
                    f"(json_type(doc, '{path}')) WHERE json_type(doc, '{path}') = 'array'"
                )
        except sqlite3.IntegrityError:
            return False
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        return True

    def indexes(self) -> list[str]:
        """Names of the indexes of this collection."""
        rows = self._run(
            lambda: self._collection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?", (self.collection_name,)
            ).fetchall()
        )
        return [r[0] for r in rows]

    def _lu_text(self, doc: dict) -> str | None:
        value = _get(doc, self.last_updated_field)
        if isinstance(value, datetime):
            return _datetime_text(value)
        if isinstance(value, str):
            return value
        return None

    def update(self, docs: list[dict] | dict, key: list | str | None = None) -> None:
        """Upsert ``docs`` on ``key`` (default the store key), all in one transaction."""
        if not isinstance(docs, list):
            docs = [docs]
        key = key or self.key
        keys = key if isinstance(key, list) else [key]
        rows = []
        for doc in docs:
            if hasattr(doc, "model_dump"):
                doc = doc.model_dump()
            if self.validator:
                if not self.validator.is_valid(doc):
                    if self.validator.strict:
                        raise ValueError(self.validator.validation_errors(doc))
                    self.logger.error(self.validator.validation_errors(doc))
                    continue
            search = {k: doc[k] for k in keys}  # KeyError for a document without its key, as MongoStore
            if "_id" in doc:
                doc = {k: v for k, v in doc.items() if k != "_id"}
            key_value = _get(doc, self.key)
            if key_value is not None and (isinstance(key_value, bool) or not isinstance(key_value, (str, int, float))):
                raise StoreUsageError(f"{self.name}: key {self.key!r} must be a string or number, got {key_value!r}")
            rows.append((search, key_value, self._lu_text(doc), _encode(doc)))
        if not rows:
            return
        try:
            with self._write() as conn:
                if keys == [self.key]:
                    self._upsert_on_store_key(conn, rows)
                    return
                if self.key in keys and all(_plain_key(search[self.key]) for search, *_ in rows):
                    self._upsert_within_store_key(conn, rows)
                    return
                for search, key_value, lu, text in rows:
                    match = next(self._matching_rows(search), None)
                    if match is None:
                        conn.execute(f"INSERT INTO {self._table} (key, lu, doc) VALUES (?, ?, ?)", (key_value, lu, text))
                    else:
                        conn.execute(
                            f"UPDATE {self._table} SET key = ?, lu = ?, doc = ? WHERE id = ?",
                            (key_value, lu, text, match[0]),
                        )
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    def _upsert_within_store_key(self, conn: sqlite3.Connection, rows: list[tuple]) -> None:
        """Upsert on several key fields that include the store key (e.g. ``formula`` + ``source``).

        The documents sharing each store-key value are read in one indexed query per 50,000 keys;
        the other key fields are matched by mongomock's matcher (as ``MemoryStore``), the first
        match in document order is replaced, as MongoDB's ``replace_one`` does.
        """
        from mongomock_ng.filtering import filter_applies

        wanted = list({search[self.key]: None for search, *_ in rows})
        held: dict[Any, list[list]] = {}
        for start in range(0, len(wanted), 50000):
            for row_id, key_value, text in conn.execute(
                f"SELECT id, key, doc FROM {self._table} WHERE key IN (SELECT value FROM json_each(?)) ORDER BY id",
                (json.dumps(wanted[start:start + 50000]),),
            ).fetchall():
                held.setdefault(key_value, []).append([row_id, _decode(text)])
        for search, key_value, lu, text in rows:
            same_key = held.setdefault(search[self.key], [])
            match = next((entry for entry in same_key if filter_applies(search, entry[1])), None)
            if match is None:
                cursor = conn.execute(f"INSERT INTO {self._table} (key, lu, doc) VALUES (?, ?, ?)", (key_value, lu, text))
                held.setdefault(key_value, []).append([cursor.lastrowid, _decode(text)])
            else:
                conn.execute(f"UPDATE {self._table} SET key = ?, lu = ?, doc = ? WHERE id = ?", (key_value, lu, text, match[0]))
                match[1] = _decode(text)

    def _upsert_on_store_key(self, conn: sqlite3.Connection, rows: list[tuple]) -> None:
        """Replace the document with the same key, or insert; a later duplicate in ``rows`` wins."""
        latest: dict[Any, tuple] = {}
        for _, key_value, lu, text in rows:
            latest[key_value] = (lu, text)
        keys = [k for k in latest if k is not None]
        existing: dict[Any, int] = {}
        for start in range(0, len(keys), 50000):
            existing.update(conn.execute(
                f"SELECT key, MIN(id) FROM {self._table} WHERE key IN (SELECT value FROM json_each(?)) GROUP BY key",
                (json.dumps(keys[start:start + 50000]),),
            ).fetchall())
        if None in latest:
            row = conn.execute(f"SELECT id FROM {self._table} WHERE key IS NULL ORDER BY id LIMIT 1").fetchone()
            if row is not None:
                existing[None] = row[0]
        conn.executemany(
            f"UPDATE {self._table} SET lu = ?, doc = ? WHERE id = ?",
            [(lu, text, existing[k]) for k, (lu, text) in latest.items() if k in existing],
        )
        conn.executemany(
            f"INSERT INTO {self._table} (key, lu, doc) VALUES (?, ?, ?)",
            [(k, lu, text) for k, (lu, text) in latest.items() if k not in existing],
        )

    def remove_docs(self, criteria: dict) -> None:
        """Delete every document matching ``criteria`` (one transaction)."""
        try:
            with self._write() as conn:
                ids = [row_id for row_id, _ in self._matching_rows(criteria)]
                for start in range(0, len(ids), 10000):
                    conn.execute(
                        f"DELETE FROM {self._table} WHERE id IN (SELECT value FROM json_each(?))",
                        (json.dumps(ids[start:start + 10000]),),
                    )
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    # -- identity --------------------------------------------------------------------------

    def __hash__(self) -> int:
        return hash((str(self.path), self.collection_name, self.last_updated_field))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SQLiteStore):
            return False
        return (str(self.path), self.collection_name, self.last_updated_field) == (
            str(other.path), other.collection_name, other.last_updated_field
        )


def _plain_key(value: Any) -> bool:
    """True for a key value the key column holds as is: a string or a finite number (not a bool)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, (str, int))


def _get(doc: dict, field: str) -> Any:
    """``doc[field]`` (dotted paths allowed), None when absent."""
    if "." not in field:
        return doc.get(field)
    return get(doc, field)


def _guarded(store: SQLiteStore, iterator: Iterator) -> Iterator:
    """Iterate, turning SQLite errors (a corrupt file) into a one-line StoreFileError."""
    try:
        yield from iterator
    except sqlite3.Error as exc:
        raise store._error(exc) from None


def _projection(properties: dict | list | None):
    """A function applying a Mongo projection to a document (``_id`` does not exist here).

    Dotted fields project into embedded documents and into each document of an array, and the fields
    come back in the document's order (not the projection's), as in MongoDB (tested against
    mongomock's projection through maggma's ``MemoryStore``).
    """
    if not properties:
        return lambda doc: doc
    if isinstance(properties, (list, tuple)):
        properties = {p: 1 for p in properties}
    fields = {k: v for k, v in properties.items() if k != "_id"}
    if not fields:
        return lambda doc: doc
    flags = {bool(v) for v in fields.values()}
    if len(flags) > 1:
        raise StoreUsageError("cannot mix including and excluding fields in a projection")
    tree: dict = {}
    for field in fields:
        node = tree
        *parents, leaf = field.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if child is True:
                break
            node = child
        else:
            node[leaf] = True
    if flags.pop():
        return lambda doc: _project_include(doc, tree)
    return lambda doc: _project_exclude(doc, tree)


def _project_include(doc: dict, tree: dict) -> dict:
    out = {}
    for name, value in doc.items():  # in the document's order, as MongoDB returns the fields
        sub = tree.get(name)
        if sub is None:
            continue
        if sub is True:
            out[name] = value
        elif isinstance(value, dict):
            out[name] = _project_include(value, sub)
        elif isinstance(value, list):
            out[name] = [_project_include(v, sub) for v in value if isinstance(v, dict)]
    return out


def _project_exclude(doc: dict, tree: dict) -> dict:
    out = {}
    for name, value in doc.items():
        sub = tree.get(name)
        if sub is True:
            continue
        if sub is None:
            out[name] = value
        elif isinstance(value, dict):
            out[name] = _project_exclude(value, sub)
        elif isinstance(value, list):
            out[name] = [_project_exclude(v, sub) if isinstance(v, dict) else v for v in value]
        else:
            out[name] = value
    return out
