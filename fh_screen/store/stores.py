"""FhScreenStore: fh-screen's three collections, queried together.

* ``reference`` — OQMD (DFT) entries (:class:`~fh_screen.store.documents.ReferenceEntryDoc`);
* ``predictions`` — (formula, model identity) → ΔH_f, σ (:class:`~fh_screen.store.documents.PredictionDoc`);
* ``screens`` — one :class:`~fh_screen.store.documents.ScreenDoc` per run id, written by the CLI
  and by the prescreen job alike; a run id is never written twice.

Each collection is a maggma Store: the embedded :class:`~fh_screen.store.backend.SQLiteStore`
by default, ``MongoStore`` when a MongoDB URI is configured, or any Store passed in.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from maggma.core import Store

from fh_screen.errors import FhScreenError, check_count
from fh_screen.store.backend import SQLiteStore, StoreFileError
from fh_screen.store.bootstrap import SHIPPED_SOURCE
from fh_screen.store.documents import (
    RESULT_SOURCES,
    PredictionDoc,
    ScreenDoc,
    chemsys_of,
    elements_of,
    new_run_id,
    prediction_id,
    utcnow,
)
from fh_screen.store.query import (
    QueryError,
    check_model_filter,
    criteria_for,
    model_criteria,
    selected_sources,
    source_name,
    source_spelling,
)

if TYPE_CHECKING:
    import pandas as pd

    from fh_screen.settings import FhScreenSettings

logger = logging.getLogger(__name__)

__all__ = [
    "COMPARE_COLUMNS",
    "FhScreenStore",
    "PREDICTION_COLUMNS",
    "PREDICTION_INDEXES",
    "REFERENCE_COLUMNS",
    "REFERENCE_INDEXES",
    "SCREEN_INDEXES",
    "ScreenExistsError",
    "ScreenNotFoundError",
    "SourceOwnedError",
    "check_removable_source",
    "new_run_id",
]

REFERENCE_INDEXES = ("formula", "chemsys", "elements", "nelements", "dhf_ev_per_atom", "last_updated")
PREDICTION_INDEXES = (
    "prediction_id", "formula", "chemsys", "elements", "nelements", "dhf_pred_ev_per_atom",
    "model_weights_sha256", "last_updated",
)
SCREEN_INDEXES = ("run_id", "chemsys", "model_name", "created_at")
REFERENCE_COLUMNS = [
    "formula", "dhf_ev_per_atom", "elements", "chemsys", "nelements", "source", "source_id",
    "source_version", "source_file", "functional", "result_id", "passed_outlier_filter", "last_updated",
]
PREDICTION_COLUMNS = list(PredictionDoc.model_fields)
COMPARE_COLUMNS = [
    "formula", "elements", "chemsys", "nelements", "dhf_ev_per_atom", "source", "dhf_pred_ev_per_atom",
    "dhf_error_ev_per_atom", "dhf_std_ev_per_atom", "model_name", "model_version",
]
_SUMMARY_FIELDS = ["run_id", "created_at", "chemsys", "origin", "model_name", "model_version", "n_candidates",
                   "n_reference", "selected_formulas", "reference"]
_SAVE_BATCH = 10000


class SourceOwnedError(FhScreenError):
    """A change by hand to a source that the results builder owns; the message is one line."""


def check_removable_source(source: str) -> str:
    """``source`` as :meth:`FhScreenStore.remove_source` matches it, if its entries may be removed by hand;
    :class:`SourceOwnedError` (one line) for the shipped OQMD table
    (:data:`~fh_screen.store.bootstrap.SHIPPED_SOURCE`) and for a source of results brought back from
    atomate2 (:data:`~fh_screen.store.documents.RESULT_SOURCES`).

    The name is read by :func:`~fh_screen.store.query.source_spelling` (stripped, lower case; a bad
    name is one line) and returned in that form, except another spelling of an owned name (``OQMD``,
    ``ChgNet``): entries ingested under it before names were read in lower case sit beside the owned
    ones, so that spelling (stripped) is returned, to remove those entries and never the owned ones.
    """
    name = source_spelling(source)
    error = _owned_source_error(name)  # None for another spelling (OQMD): the entries ingested under it
    if error is not None:
        raise error
    return name


def _owned_source_error(source: str) -> SourceOwnedError | None:
    """Why the entries of ``source`` (as stored: lower case) are not removed by hand; None when they may be."""
    if source == SHIPPED_SOURCE:
        return SourceOwnedError(
            f"source {source!r} holds the OQMD reference table shipped with fh-screen, which every screen's hull "
            f"is anchored on: it is not removed by hand; leave it out of a screen with --sources (e.g. --sources "
            f"my-dft, sources='my-dft'), or start from an empty store (reference_data: false)")
    if source in RESULT_SOURCES:
        return SourceOwnedError(
            f"source {source!r} holds the results brought back from atomate2 (fh-screen results): its entries "
            f"follow those results and are not removed by hand; leave it out of a screen with --sources "
            f"(e.g. --sources oqmd, sources='oqmd')")
    return None


class ScreenExistsError(FhScreenError):
    """A screen with this run id is already stored (screens are never overwritten)."""


class ScreenNotFoundError(FhScreenError):
    """No screen with the asked run id."""


class FhScreenStore:
    """Reference entries, predictions and screens in three maggma Stores.

    >>> with FhScreenStore.from_settings() as store:
    ...     frame = store.reference_frame(chemsys="Li-Fe-O")
    ...     runs = store.screen_summaries(chemsys="Li-Fe-O")

    Any collection may be None for a store used for one job only (``FhScreenStore(reference=my_store)``
    to read reference entries, ``FhScreenStore(screens=my_store)`` to write screens); using a
    missing one raises one line.
    """

    def __init__(self, reference: Store | None = None, predictions: Store | None = None,
                 screens: Store | None = None, ensure_indexes: bool = True):
        self._reference = reference
        self._predictions = predictions
        self._screens = screens
        self.ensure_indexes = ensure_indexes
        self.display_name: str | None = None

    @property
    def reference(self) -> Store:
        """The reference (DFT) collection."""
        return self._collection("reference")

    @property
    def predictions(self) -> Store:
        """The predictions collection."""
        return self._collection("predictions")

    @property
    def screens(self) -> Store:
        """The screens collection (one document per run id)."""
        return self._collection("screens")

    def _collection(self, which: str) -> Store:
        store = getattr(self, f"_{which}")
        if store is None:
            raise FhScreenError(f"store {self.name} was opened without a {which} collection")
        return store

    def _stores(self) -> list[tuple[Store, tuple[str, ...]]]:
        pairs = [(self._reference, REFERENCE_INDEXES), (self._predictions, PREDICTION_INDEXES),
                 (self._screens, SCREEN_INDEXES)]
        return [(store, fields) for store, fields in pairs if store is not None]

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def embedded(
        cls, path: str | Path, read_only: bool = False, busy_timeout_s: float = 60.0,
        reference_collection: str = "reference", predictions_collection: str = "predictions",
        screens_collection: str = "screens",
    ) -> FhScreenStore:
        """The three collections in one SQLite file (created if needed unless ``read_only``)."""
        common = {"read_only": read_only, "busy_timeout_s": busy_timeout_s}
        return cls(
            SQLiteStore(path, reference_collection, key="formula", **common),
            SQLiteStore(path, predictions_collection, key="prediction_id", **common),
            SQLiteStore(path, screens_collection, key="run_id", **common),
            ensure_indexes=not read_only,
        )

    @classmethod
    def from_settings(cls, settings: FhScreenSettings | None = None, read_only: bool = False) -> FhScreenStore:
        """The configured store: MongoDB when ``mongo_uri`` is set, else the embedded file.

        Settings come from ``~/.fh_screen.yaml`` and ``FH_SCREEN_*`` variables
        (:class:`~fh_screen.settings.FhScreenSettings`).
        """
        if settings is None:
            from fh_screen.settings import FhScreenSettings

            settings = FhScreenSettings()
        if settings.mongo_uri:
            from fh_screen.store.mongo import mongo_collections, mongo_label

            reference, predictions, screens, written = mongo_collections(settings)  # filled on first use
            store = cls(reference, predictions, screens, ensure_indexes=not read_only)
            store.display_name = mongo_label(settings)
            if written and read_only:  # a read-only open still gets the indexes of a collection it just filled
                cls(reference=reference, screens=screens).connect().close()
            return store
        from fh_screen.store.bootstrap import bootstrap_from_settings

        # first use: the OQMD reference table shipped with the package
        written = (result := bootstrap_from_settings(settings)) is not None and result.action != "current"

        def embedded(read_only: bool) -> FhScreenStore:
            return cls.embedded(
                settings.store_path, read_only=read_only, busy_timeout_s=settings.busy_timeout_s,
                reference_collection=settings.reference_collection,
                predictions_collection=settings.predictions_collection,
                screens_collection=settings.screens_collection,
            )

        if written:  # every collection and its query indexes, so that a read-only store opens and is fast
            embedded(False).connect().close()
        return embedded(read_only)

    @property
    def name(self) -> str:
        """Where the data lives (for messages; a MongoDB password is masked)."""
        if getattr(self, "display_name", None):
            return self.display_name
        return " + ".join(_label(store) for store, _ in self._stores()) or "no collections"

    @property
    def reference_name(self) -> str:
        """Where the reference entries live (``sqlite://<file>/reference``; a MongoDB password masked)."""
        return _label(self.reference)

    def connect(self, force_reset: bool = False) -> FhScreenStore:
        """Connect every collection and make sure the query indexes exist.

        A read-only store file holding some of its collections but not all (its making, the
        first-use fill, was stopped) raises :class:`~fh_screen.store.StoreFileError` saying how to
        complete it.
        """
        for store, fields in self._stores():
            try:
                store.connect(force_reset=force_reset)
            except StoreFileError:
                self._unfinished_file()
                raise
            if not self.ensure_indexes:
                continue
            for field in fields:
                if field == "elements" and isinstance(store, SQLiteStore):
                    continue  # array field: SQLite answers element questions through chemsys
                store.ensure_index(field)
        return self

    def _unfinished_file(self) -> None:
        """Raise :class:`StoreFileError` when this read-only embedded store's file holds some of the
        collections but not all: a first use stopped before it had made them (Ctrl-C, kill, power);
        the commands that fill a store on first use complete it."""
        files = [store for store, _ in self._stores() if isinstance(store, SQLiteStore) and store.read_only]
        if not files or len({store.path for store in files}) != 1:
            return
        try:
            present = [store.collection_exists() for store in files]
        except StoreFileError:
            return
        if any(present) and not all(present):
            path = files[0].path
            raise StoreFileError(f"store file {path} was not completely made (its first use was stopped before it "
                                 f"finished): run `fh-screen SYSTEM --store {path}` or `fh-screen bulk ... --store "
                                 f"{path}` once to complete it")

    def close(self) -> None:
        """Close every collection."""
        for store, _ in self._stores():
            try:
                store.close()
            except Exception:  # noqa: BLE001 - closing an unconnected store is harmless
                logger.debug("closing %s failed", store.name, exc_info=True)

    def __enter__(self) -> FhScreenStore:
        return self.connect()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- counts ----------------------------------------------------------------------------

    def n_reference(self, **filters) -> int:
        """Number of reference entries (optionally matching :func:`criteria_for` filters)."""
        return self.reference.count(criteria_for(**filters) or None)

    def n_predictions(self, **filters) -> int:
        """Number of stored predictions (optionally matching filters on the predicted ΔH_f)."""
        return self.predictions.count(_prediction_criteria(**filters) or None)

    # -- reading ---------------------------------------------------------------------------

    def reference_docs(
        self,
        formula=None, chemsys=None, nelements=None,
        min_dhf_ev_per_atom: float | None = None, max_dhf_ev_per_atom: float | None = None,
        include_outliers: bool = False, limit: int = 0, source=None,
    ) -> list[dict]:
        """Reference documents matching the filters (see :func:`~fh_screen.store.query.criteria_for`).

        ``source``: only entries of these sources (``"oqmd,chgnet"`` or a list); all when None.
        """
        limit = _check_limit(limit)
        criteria = criteria_for(formula, chemsys, nelements, min_dhf_ev_per_atom, max_dhf_ev_per_atom, source=source,
                                sources_present=lambda: self.reference.distinct("source"))
        if not include_outliers:
            criteria["passed_outlier_filter"] = True
        docs = self.reference.query(criteria=criteria, properties=REFERENCE_COLUMNS, limit=limit)
        return [_strip_id(d) for d in docs]

    def reference_frame(self, chemsys=None, **filters) -> pd.DataFrame:
        """Reference entries as a DataFrame (columns :data:`REFERENCE_COLUMNS`; empty if none).

        ``chemsys="Li-Fe-O"`` returns every entry whose elements are a subset of Li, Fe, O.
        """
        return _frame(self.reference_docs(chemsys=chemsys, **filters), REFERENCE_COLUMNS)

    def prediction_docs(
        self,
        formula=None, chemsys=None, nelements=None,
        min_dhf_ev_per_atom: float | None = None, max_dhf_ev_per_atom: float | None = None,
        model_name: str | None = None, limit: int = 0,
    ) -> list[dict]:
        """Prediction documents matching the filters (the ΔH_f range applies to the prediction).

        ``model_name`` is a model name, or ``name@version`` for one version of it; one that is neither
        a shipped or user model nor stored here is refused (:meth:`check_model_filter`).
        """
        limit = _check_limit(limit)
        self.check_model_filter(model_name)
        criteria = _prediction_criteria(
            formula=formula, chemsys=chemsys, nelements=nelements,
            min_dhf_ev_per_atom=min_dhf_ev_per_atom, max_dhf_ev_per_atom=max_dhf_ev_per_atom,
        )
        criteria.update(model_criteria(model_name))
        docs = self.predictions.query(criteria=criteria, properties=PREDICTION_COLUMNS, limit=limit)
        return [_strip_id(d) for d in docs]

    def predictions_frame(self, **filters) -> pd.DataFrame:
        """Predictions as a DataFrame (columns :data:`PREDICTION_COLUMNS`; empty if none)."""
        return _frame(self.prediction_docs(**filters), PREDICTION_COLUMNS)

    def compare_frame(
        self,
        formula=None, chemsys=None, nelements=None,
        min_dhf_ev_per_atom: float | None = None, max_dhf_ev_per_atom: float | None = None,
        model_name: str | None = None, include_outliers: bool = False, limit: int = 0,
    ) -> pd.DataFrame:
        """DFT and predicted ΔH_f side by side, one row per formula, reference source (and model).

        ``dhf_error_ev_per_atom`` is prediction − DFT where both exist; a row is kept when its DFT
        or predicted value lies in the ΔH_f range. Rows are sorted by size, system, formula, source and
        model, whatever order the store returned them in (the same on every backend).
        """
        import pandas as pd

        limit = _check_limit(limit)
        # the range is checked as the other queries check it (an empty or non-finite range is one line)
        bounds = criteria_for(min_dhf_ev_per_atom=min_dhf_ev_per_atom,
                              max_dhf_ev_per_atom=max_dhf_ev_per_atom).get("dhf_ev_per_atom", {})
        min_dhf_ev_per_atom, max_dhf_ev_per_atom = bounds.get("$gte"), bounds.get("$lte")
        where = {"formula": formula, "chemsys": chemsys, "nelements": nelements}
        reference = self.reference_frame(include_outliers=include_outliers, **where)
        predicted = self.predictions_frame(model_name=model_name, **where)
        merged = pd.merge(
            reference[["formula", "elements", "chemsys", "nelements", "dhf_ev_per_atom", "source"]],
            predicted[[c for c in PREDICTION_COLUMNS if c not in ("prediction_id", "last_updated", "out_of_domain")]],
            on="formula", how="outer", suffixes=("", "_pred"),
        )
        for column in ("elements", "chemsys", "nelements"):
            merged[column] = merged[column].where(merged[column].notna(), merged[f"{column}_pred"])
        merged["nelements"] = [None if pd.isna(n) else int(n) for n in merged["nelements"]]
        merged["dhf_error_ev_per_atom"] = merged["dhf_pred_ev_per_atom"] - merged["dhf_ev_per_atom"]
        keep = pd.Series(True, index=merged.index)
        if min_dhf_ev_per_atom is not None or max_dhf_ev_per_atom is not None:
            low = -float("inf") if min_dhf_ev_per_atom is None else min_dhf_ev_per_atom
            high = float("inf") if max_dhf_ev_per_atom is None else max_dhf_ev_per_atom
            keep = merged["dhf_ev_per_atom"].between(low, high) | merged["dhf_pred_ev_per_atom"].between(low, high)
        merged = merged[keep][COMPARE_COLUMNS]
        # every column a row differs by: the store's own order (MongoDB's index order, SQLite's insertion order) never shows
        merged = merged.sort_values(["nelements", "chemsys", "formula", "source", "model_name", "model_version"],
                                    kind="stable").reset_index(drop=True)
        return merged.head(limit) if limit else merged

    # -- writing ---------------------------------------------------------------------------

    def save_predictions(self, frame: pd.DataFrame, predictor, *, formulas_reduced: bool = False) -> int:
        """Store predictions of ``predictor`` for the rows of ``frame``; returns how many were written.

        ``frame`` has ``formula`` and ``dhf_pred_ev_per_atom`` and optionally
        ``dhf_std_ev_per_atom`` and ``out_of_domain``; any other column (a screen's energies above
        the hull, ranks, ...) is ignored: those belong to the screen's document. Formulas are
        reduced unless ``formulas_reduced`` says they already are (a screen's table is); a
        prediction of the same formula by the same model replaces the earlier one (same value).
        """
        missing = [c for c in ("formula", "dhf_pred_ev_per_atom") if c not in frame.columns]
        if missing:
            raise FhScreenError(f"predictions frame lacks column(s) {', '.join(missing)}")
        docs = prediction_docs_from_frame(frame, predictor, formulas_reduced=formulas_reduced)
        for start in range(0, len(docs), _SAVE_BATCH):
            self.predictions.update(docs[start:start + _SAVE_BATCH], key="prediction_id")
        logger.info("saved %d predictions of %s@%s", len(docs), predictor.name, predictor.version)
        return len(docs)

    def remove_source(self, source: str) -> int:
        """Remove every reference entry of ``source``; returns how many were removed.

        ``source`` is read by :func:`~fh_screen.store.query.source_name` (``My-DFT`` removes ``my-dft``),
        and the entries stored under any spelling of it before names were read in lower case go too
        (``MyLab`` with ``mylab``). Raises :class:`SourceOwnedError` for the shipped OQMD table
        (``oqmd``: the first-use fill owns it) and for a source of results brought back from atomate2
        (:data:`~fh_screen.store.documents.RESULT_SOURCES`): its entries follow the results
        collection, and removing them alone would leave results that no rerun brings back. Another
        spelling of those names (``OQMD``) removes only the entries ingested under such a spelling,
        beside the owned ones, before ingest refused it; with none, it is refused the same way. What is
        removed is what ``--sources NAME`` selects (:func:`~fh_screen.store.query.selected_sources`).
        """
        name = check_removable_source(source)
        canonical = source_name(name)
        names = sorted(set(selected_sources([name], self.reference.distinct("source"))) | {canonical})  # --sources NAME's
        if name != canonical:  # another spelling of an owned source: its legacy entries, never the owned ones
            names.remove(canonical)
            if not names:
                raise _owned_source_error(canonical)
        criteria = {"source": names[0] if len(names) == 1 else {"$in": names}}
        n = self.reference.count(criteria)
        if n:
            self.reference.remove_docs(criteria)
        logger.info("removed %d reference entries of source %s", n, ", ".join(names))
        return n

    # -- screens ---------------------------------------------------------------------------

    def save_screen(self, doc: ScreenDoc | dict) -> str:
        """Write one screen to ``screens``; returns its run id.

        Raises :class:`ScreenExistsError` when that run id is stored already: a screen is never
        overwritten (every run gets a new id from :func:`~fh_screen.store.documents.new_run_id`).
        """
        doc = doc if isinstance(doc, ScreenDoc) else ScreenDoc.model_validate(_without_monty_keys(doc))
        if self.screens.count({"run_id": doc.run_id}):
            raise ScreenExistsError(f"screen {doc.run_id} is already in {_label(self.screens)}; screens are never overwritten")
        self.screens.update([doc.model_dump(mode="python")], key="run_id")
        logger.info("saved screen %s of %s (%d candidates) to %s", doc.run_id, doc.chemsys, len(doc.candidates),
                    _label(self.screens))
        return doc.run_id

    def screen_summaries(self, chemsys: str | None = None, model_name: str | None = None,
                         limit: int = 0) -> list[dict]:
        """Stored screens, newest first (run ids begin with their UTC time), without their candidate lists (``fh-screen runs``).

        ``chemsys`` matches the screened system exactly (elements in any order); ``model_name`` is
        a model name, or ``name@version`` for one version of it.
        """
        criteria: dict = {}
        if chemsys:
            from fh_screen.chem.candidates import parse_chemsys
            from fh_screen.chem.formula import ALL_ELEMENT_SYMBOLS

            criteria["chemsys"] = "-".join(parse_chemsys(chemsys, ALL_ELEMENT_SYMBOLS))
        criteria.update(model_criteria(model_name))
        docs = self.screens.query(criteria=criteria, properties=_SUMMARY_FIELDS,
                                  sort={"run_id": -1}, limit=limit)
        return [_strip_id(d) for d in docs]

    def top_candidates(self, top: int = 100, min_p: float = 0.0, model: str | None = None,
                       chemsys: str | None = None) -> list[dict]:
        """The best new candidates over every stored screen (:func:`~fh_screen.store.query.top_candidates`).

        >>> with FhScreenStore.from_settings() as store:
        ...     rows = store.top_candidates(top=100, min_p=0.5)   # system, formula, p_stable, model, ...
        """
        from fh_screen.store.query import top_candidates

        self.check_model_filter(model)
        return top_candidates(self.screens, top=top, min_p=min_p, model=model, chemsys=chemsys)

    def check_model_filter(self, model: str | None) -> None:
        """Refuse (one-line ``ModelError``) a model filter naming neither a shipped or user model nor
        one whose predictions or screens this store holds (:func:`~fh_screen.store.query.check_model_filter`)."""
        check_model_filter(model, [store for store in (self._predictions, self._screens) if store is not None])

    def get_screen(self, run_id: str) -> ScreenDoc:
        """The screen stored under ``run_id``; :class:`ScreenNotFoundError` (one line) if none."""
        doc = self.screens.query_one({"run_id": run_id})
        if doc is None:
            near = _nearest_run_ids(run_id, self.screens.distinct("run_id"))
            hint = f"did you mean {' or '.join(near)}? " if near else ""
            raise ScreenNotFoundError(f"no screen with run id {run_id!r} in {_label(self.screens)} ({hint}list them: "
                                      f"fh-screen runs)")
        return ScreenDoc.model_validate(_without_monty_keys(_strip_id(doc)))


def _nearest_run_ids(run_id: object, stored, n: int = 3) -> list[str]:
    """The stored run ids that ``run_id`` most likely means: those it begins or ends (a run id cut short),
    else the closest spellings (a typo), newest first."""
    import difflib

    text = str(run_id).strip()
    ids = sorted({str(i) for i in stored if i}, reverse=True)
    if not text or not ids:
        return []
    cut = [i for i in ids if i.startswith(text) or i.endswith(text)]
    if cut:
        return cut[:n]
    return difflib.get_close_matches(text, ids, n=n, cutoff=0.8)


def _check_limit(limit) -> int:
    """``limit`` if it is a whole number of rows, 0 meaning all; else :class:`QueryError` (one line), as
    ``query --limit`` refuses it (a negative limit read as its size, or all rows but the last, before)."""
    return check_count(limit, "limit", QueryError, zero_means_all=True)


def _label(store: Store) -> str:
    """A collection's name for messages, with any MongoDB password masked."""
    from fh_screen.store.mongo import mask_uri

    return mask_uri(store.name)


def _without_monty_keys(doc: dict) -> dict:
    return {k: v for k, v in dict(doc).items() if not str(k).startswith("@")}


def prediction_docs_from_frame(frame: pd.DataFrame, predictor, *, formulas_reduced: bool = False) -> list[dict]:
    """PredictionDoc dictionaries for the rows of a predictions frame (NaN predictions skipped).

    A screen's rows that ``predictor`` did not predict itself (``refined`` False: the fast
    prefilter's values) are left out, so no value is ever stored under another model's identity.
    """
    import math

    from fh_screen.chem.formula import reduced_formula

    if "refined" in frame.columns:
        frame = frame[frame["refined"].to_numpy(bool)]
    now = utcnow()
    cache: dict[str, str] = {}
    optional = {
        name: frame[name].tolist() if name in frame.columns else [None] * len(frame)
        for name in ("dhf_std_ev_per_atom", "out_of_domain")
    }
    docs, n_skipped = [], 0
    for i, (formula, value) in enumerate(zip(frame["formula"].tolist(), frame["dhf_pred_ev_per_atom"].tolist())):
        if value is None or not math.isfinite(float(value)):
            n_skipped += 1
            continue
        if formula not in cache:
            cache[formula] = str(formula) if formulas_reduced else reduced_formula(str(formula))
        reduced = cache[formula]
        elements = elements_of(reduced)
        std, ood = (optional[name][i] for name in optional)
        # every field is converted to its type just here, so pydantic's validation (~30 µs a
        # document, a third of a sweep's saving) is skipped; tests check the documents validate
        docs.append(PredictionDoc.model_construct(
            prediction_id=prediction_id(reduced, predictor.name, predictor.version, predictor.weights_sha256),
            formula=reduced, elements=list(elements), chemsys=chemsys_of(elements), nelements=len(elements),
            dhf_pred_ev_per_atom=float(value),
            dhf_std_ev_per_atom=_finite_or_none(std),
            out_of_domain=bool(ood) if ood is not None and ood == ood else False,
            model_name=predictor.name, model_version=predictor.version,
            model_weights_sha256=predictor.weights_sha256, last_updated=now,
        ).model_dump())
    if n_skipped:
        logger.warning("skipped %d rows without a finite prediction", n_skipped)
    return docs


def _finite_or_none(value) -> float | None:
    import math

    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _prediction_criteria(min_dhf_ev_per_atom=None, max_dhf_ev_per_atom=None, **filters) -> dict:
    return criteria_for(
        **filters, min_dhf_ev_per_atom=min_dhf_ev_per_atom, max_dhf_ev_per_atom=max_dhf_ev_per_atom,
        dhf_field="dhf_pred_ev_per_atom",
    )


def _strip_id(doc: dict) -> dict:
    doc.pop("_id", None)
    return doc


def _frame(docs: list[dict], columns: list[str]) -> pd.DataFrame:
    import pandas as pd

    frame = pd.DataFrame(docs)
    for column in columns:
        if column not in frame.columns:
            frame[column] = None
    return frame[columns + [c for c in frame.columns if c not in columns]]
