"""THE screen service: what the CLI, ``fh_screen.screen()`` and the prescreen job all call.

One rule for each of the three things that used to differ between the doors:

* **known phases**: the caller's ``known`` table when given (read as ``fh-screen ingest`` reads a
  table, :func:`read_known`); otherwise the reference entries of the configured store
  (:meth:`FhScreenStore.from_settings`: embedded or MongoDB, filled with the OQMD table shipped
  with the package on first use; ``read_only``, as ``--no-store`` and ``screen(save=False)``:
  the shipped table is read directly where no store exists yet), or of the store passed in;
* **saving**: ``save=True`` writes the screen document (``screens``, a new run id,
  :meth:`ScreenDoc.from_result`) and the model's own predictions (``predictions``, when the store
  has that collection) to the same store; nothing is written otherwise;
* **errors**: one-line :class:`~fh_screen.errors.FhScreenError` subclasses
  (:class:`ScreenServiceError` for a store that cannot be read or written, ``ChemsysError`` /
  ``ScreenError`` for bad input, ``MongoUnreachableError`` for a server that does not answer).

The pure ranking core stays :func:`fh_screen.screening.core.screen` (known phases are its argument);
this module sits above it and the store::

    from fh_screen import screen
    screen("Li-Fe-P-O").table          # ranked against the 74 known phases of the store
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pathlib import PurePath

from fh_screen.errors import FhScreenError, one_line
from fh_screen.screening import ScreenError, ScreenOptions

if TYPE_CHECKING:
    import pandas as pd

    from fh_screen.models.predictor import Predictor
    from fh_screen.screening import ScreenResult
    from fh_screen.settings import FhScreenSettings
    from fh_screen.store import FhScreenStore, ScreenDoc

logger = logging.getLogger(__name__)

__all__ = [
    "KnownPhases", "SavedScreen", "ScreenServiceError", "known_phases", "read_known", "run_screen", "save_screen", "screen",
]

#: Note shown when the store holds no reference entry at all (reference_data off, nothing ingested).
NO_REFERENCE_NOTE = (
    "no reference entries in the store: the hull is built from the elements and the predictions alone; "
    "run `fh-screen ingest PATH` to anchor it on DFT values (the store is filled from the OQMD table shipped "
    "with fh-screen unless reference_data is off: FH_SCREEN_REFERENCE_DATA)"
)


#: ``keep_top`` left to the document's default (:data:`fh_screen.store.documents.DEFAULT_KEEP_TOP`, 1000
#: rows), without importing the store at import time.
DOCUMENT_DEFAULT = "default"


class ScreenServiceError(FhScreenError):
    """The store behind a screen cannot be read or written; one line naming it."""


@dataclass(frozen=True)
class KnownPhases:
    """The known phases of a screen and where they came from.

    Attributes
    ----------
    frame
        ``formula``, ``dhf_ev_per_atom`` (and the store's other columns) of the system and its
        subsystems; None when there are none.
    where
        Where they came from (a store's name, ``"the caller"``, or the shipped table).
    n_store_entries
        Reference entries of the whole store (0: an empty store; -1: not a store).
    note
        A line for the user when the hull has no DFT anchor, else ``""``.
    sources
        The sources the entries were restricted to, as the store read them (``OQMD`` is ``oqmd``
        unless entries are stored under it: :func:`~fh_screen.store.query.resolve_sources`); None: all.
    """

    frame: pd.DataFrame | None
    where: str
    n_store_entries: int = -1
    note: str = ""
    sources: list[str] | None = None

    @property
    def n_compounds(self) -> int:
        """Known compositions of two or more elements."""
        from fh_screen.store.documents import elements_of

        if self.frame is None or len(self.frame) == 0:
            return 0
        return int(sum(len(elements_of(str(f))) >= 2 for f in self.frame["formula"]))


@dataclass(frozen=True)
class SavedScreen:
    """What :func:`save_screen` wrote: the run id, predictions written, the store's name."""

    run_id: str
    n_predictions: int
    where: str


def _settings(settings: FhScreenSettings | None) -> FhScreenSettings:
    if settings is not None:
        return settings
    from fh_screen.settings import FhScreenSettings

    return FhScreenSettings()


def known_phases(
    system: Sequence[str],
    *,
    store: FhScreenStore | None = None,
    settings: FhScreenSettings | None = None,
    read_only: bool = False,
    sources: str | Sequence[str] | None = None,
) -> KnownPhases:
    """Reference entries of ``system`` and its subsystems for the hull.

    Parameters
    ----------
    system
        Parsed chemical system (element symbols).
    store
        A store with a reference collection; None: the configured one (filled on first use).
    settings
        Settings to read the configured store from (None: ``~/.fh_screen.yaml``, ``FH_SCREEN_*``).
    read_only
        Do not create an embedded store file that does not exist yet: the shipped table is read
        directly instead (``fh-screen --no-store`` on a fresh machine).
    sources
        Only reference entries of these sources count (``"oqmd,chgnet"`` or a list; None: all);
        a composition computed by several takes its lowest value.

    Returns
    -------
    KnownPhases
        Raises :class:`ScreenServiceError` (one line) when the store cannot be read.
    """
    from fh_screen.store import FhScreenStore
    from fh_screen.store.query import absent_sources_note, parse_sources, resolve_sources

    label = "-".join(system)
    sources = None if sources is None else parse_sources(sources)
    if store is None:
        settings = _settings(settings)
        if read_only and not settings.mongo_uri and not settings.store_path.exists():
            if not settings.reference_data:
                return KnownPhases(None, "nothing", 0, NO_REFERENCE_NOTE, sources)
            from fh_screen.store.bootstrap import TABLE_FILE, packaged_reference_frame, reference_metadata

            frame = packaged_reference_frame(label)  # the shipped table is OQMD's
            if sources is not None:
                sources = resolve_sources(sources, lambda: ["oqmd"])
                frame = frame if "oqmd" in sources else frame.iloc[0:0]
            return KnownPhases(frame, f"shipped {TABLE_FILE}", int(reference_metadata()["n_compositions"]),
                               absent_sources_note(sources, _sources_of(frame), lambda: ["oqmd"],
                                                   f"the shipped {TABLE_FILE}"), sources)
        data_dir = settings.store_path.parent
        if not settings.mongo_uri and data_dir.exists() and not data_dir.is_dir():
            raise ScreenServiceError(f"data folder {data_dir} is a file, not a folder: set FH_SCREEN_DATA_DIR (or "
                                     f"data_dir in ~/.fh_screen.yaml) to a folder, or screen without a store "
                                     f"(fh-screen SYSTEM --no-store, screen(save=False))")
        store = FhScreenStore.from_settings(settings, read_only=read_only)
    try:
        with store:
            n_entries = store.n_reference()
            if sources is not None and n_entries:  # OQMD reads as oqmd unless entries are stored under it
                sources = resolve_sources(sources, lambda: store.reference.distinct("source"))
            frame = store.reference_frame(chemsys=label, source=sources) if n_entries else None
            where = store.reference_name  # the collection the known phases came from
            note = NO_REFERENCE_NOTE if n_entries == 0 else absent_sources_note(
                sources, _sources_of(frame), lambda: store.reference.distinct("source"), "the store")
    except FhScreenError:
        raise
    except Exception as exc:  # noqa: BLE001 - a store that cannot be read is one line, naming it
        raise ScreenServiceError(f"cannot read reference entries for {label} from {store.name}: "
                                 f"{one_line(exc)}") from None
    phases = KnownPhases(frame if frame is not None and len(frame) else None, where, n_entries, note, sources)
    if n_entries and phases.n_compounds == 0 and not note:  # a store with entries, none of this system
        of = f" of source {', '.join(sources)}" if sources is not None else ""
        note = f"no reference compound{of} in {label}: the hull is built from the elements and the predictions alone"
        phases = KnownPhases(phases.frame, where, n_entries, note, sources)
    return phases


def _sources_of(frame: pd.DataFrame | None) -> set[str]:
    """The sources of a reference frame's entries (none for an empty frame or one without the column)."""
    return set(frame["source"]) if frame is not None and len(frame) and "source" in frame else set()


def save_screen(
    result: ScreenResult,
    options: ScreenOptions,
    predictor: Predictor | None,
    *,
    store: FhScreenStore | None = None,
    doc: ScreenDoc | None = None,
    origin: str = "python",
    reference: str | None = None,
    keep_top: int | str | None = DOCUMENT_DEFAULT,
    sources: str | Sequence[str] | None = None,
) -> SavedScreen:
    """Write a screen (``screens``) and its model's own predictions (``predictions``) to one store.

    Parameters
    ----------
    result, options
        The screen and the options it ran with.
    predictor
        The model that predicted it (its rows are stored under its ``name@version`` and weights
        hash; the prefilter's rows of a cascade are not). None: predictions are not stored.
    store
        None: the configured store. A store without a predictions collection stores the screen only.
    doc
        The document to write (default :meth:`ScreenDoc.from_result`); its run id becomes
        ``result.run_id``.
    origin, reference
        Written into the document (``cli``, ``job``, ``python``, ``bulk``; where the known phases came from).
    keep_top
        Ranked candidates the document keeps (None: all; default 1000; the bulk sweep keeps fewer).
    sources
        The reference sources the hull was restricted to (None: all), recorded in the document.
    """
    from fh_screen.store import FhScreenStore, ScreenDoc
    from fh_screen.store.query import parse_sources

    if doc is None:
        kept = {} if keep_top == DOCUMENT_DEFAULT else {"keep_top": keep_top}
        doc = ScreenDoc.from_result(result, options, origin=origin, reference=reference, **kept,
                                    sources=None if sources is None else parse_sources(sources))
    store = FhScreenStore.from_settings() if store is None else store
    n_saved = 0
    try:
        with store:
            if predictor is not None and store._predictions is not None:
                n_saved = store.save_predictions(result.table, predictor, formulas_reduced=True)
            store.save_screen(doc)
            where = store.name
    except FhScreenError:
        raise
    except Exception as exc:  # noqa: BLE001 - one line naming the store
        raise ScreenServiceError(f"cannot save screen {doc.run_id} to {store.name}: "
                                 f"{one_line(exc)}") from None
    result.run_id = doc.run_id
    return SavedScreen(doc.run_id, n_saved, where)


def run_screen(
    system: str | Sequence[str],
    predictor: Predictor | None = None,
    known: pd.DataFrame | None = None,
    options: ScreenOptions = ScreenOptions(),
    *,
    store: FhScreenStore | None = None,
    settings: FhScreenSettings | None = None,
    use_reference: bool = True,
    require_reference: bool = False,
    read_only: bool = False,
    save: bool = False,
    origin: str = "python",
    model: str | None = None,
    progress: Callable[[str], None] | None = None,
    sources: str | Sequence[str] | None = None,
    keep_top: int | str | None = DOCUMENT_DEFAULT,
    save_predictions: bool = True,
) -> tuple[ScreenResult, KnownPhases, SavedScreen | None]:
    """Screen ``system``: known phases by the one rule, the ranking core, then saving by the one rule.

    Parameters
    ----------
    system
        Chemical system (``"Li-Fe-P-O"`` or element symbols).
    predictor
        A loaded model, or a model name or checkpoint path (as ``model``); None: ``model``, loaded
        once per process, after the known phases are read.
    known
        The caller's known phases (``formula``, ``dhf_ev_per_atom``), read by :func:`read_known`
        (a refused table is one line, rows set aside are one line of ``warnings``); None: the store's.
    options
        :class:`~fh_screen.screening.ScreenOptions`.
    store, settings
        The store to read known phases from and save to (None: the configured one).
    use_reference
        False screens without known phases (hull of the elements and the predictions).
    require_reference
        Raise :class:`ScreenServiceError` when the store knows no compound of the system
        (the prescreen job: a silent fallback on a worker costs a campaign of DFT).
    read_only
        Do not create a store that does not exist yet (and never save).
    save
        Write the screen and its predictions (:func:`save_screen`).
    origin
        ``cli``, ``job`` or ``python``: written into the saved document.
    model
        Shipped model name or checkpoint path used when ``predictor`` is None (None: the default).
    progress
        Called with a short label before each stage.
    sources
        Reference sources that count for the hull (None: all), see :func:`known_phases`.
    keep_top
        Ranked candidates the saved document keeps (:func:`save_screen`).
    save_predictions
        With ``save``: also store the model's predictions (False: the screen document only, as
        :func:`save_screen` with no predictor; a sweep of many systems may leave them out).

    Returns
    -------
    tuple
        The :class:`~fh_screen.screening.ScreenResult`, the :class:`KnownPhases` used and what
        was saved (None when nothing was).
    """
    from fh_screen.chem.candidates import parse_chemsys
    from fh_screen.models.predictor import check_model_reference, load_predictor
    import pandas as pd

    from fh_screen.screening import check_size
    from fh_screen.screening import screen as rank
    from fh_screen.screening.core import NO_KNOWN_COMPOUND

    for name, value in (("save", save), ("read_only", read_only)):
        if not isinstance(value, bool):  # "no" would read as on and save a run
            raise ScreenError(f"{name} must be True or False, got {value!r}")
    if progress is not None and not callable(progress):
        raise ScreenError(f"progress must be a function of a stage's label, got {type(progress).__name__}")
    if store is not None:
        from fh_screen.store import FhScreenStore

        if not isinstance(store, FhScreenStore):
            raise ScreenError(f"store must be an FhScreenStore (FhScreenStore.embedded(path) for a file), "
                              f"got {type(store).__name__}")
    step = progress or (lambda label: None)
    if not isinstance(options, ScreenOptions):
        raise ScreenError(f"options must be ScreenOptions (ScreenOptions.from_mapping for a dict), got {type(options).__name__}")
    options.validate()
    system = parse_chemsys(system)
    check_size(system, options)  # before loading anything heavy
    if isinstance(predictor, (str, PurePath)):  # a model name or checkpoint path: loaded as ``model`` is
        predictor, model = None, str(predictor)
    elif predictor is not None and not hasattr(predictor, "predict_counts"):
        raise ScreenError(f"predictor must be a Predictor, a shipped model name or a checkpoint path, "
                          f"got {type(predictor).__name__}")
    if predictor is None:
        check_model_reference(model)  # a wrong name fails before the store is read or the model loaded
    given, set_aside = known is not None, ""
    if given:
        known, set_aside = read_known(known, system)  # a table that is not one of ΔH_f fails before anything loads
    label = "-".join(system)
    if sources is not None:
        from fh_screen.store.query import parse_sources

        sources = parse_sources(sources)  # a bad value fails here, whichever known phases the screen uses
    if given:  # the caller's table, even when no row of it is usable (never silently the store's)
        phases = _caller_phases(known, sources)
    elif not use_reference:
        phases = KnownPhases(None, "none (use_reference=False)")
    else:
        step("reading known phases from the store")
        phases = known_phases(system, store=store, settings=settings, read_only=read_only, sources=sources)
        if require_reference and phases.n_compounds == 0:
            raise ScreenServiceError(
                f"no reference entries for {label} in {phases.where}: ingest DFT values (fh-screen ingest PATH), "
                f"pass a reference store, or screen without known phases explicitly (use_reference=False)"
            )
    if predictor is None:  # after the store: an unreachable server fails before seconds of loading
        step("loading the model")
        predictor = load_predictor(model)
    frame = phases.frame
    if given and frame is None:  # the caller's table holds nothing of the system: the screen says so
        frame = pd.DataFrame({"formula": pd.Series([], dtype=str), "dhf_ev_per_atom": pd.Series([], dtype=float)})
    result = rank(system, predictor=predictor, known=frame, options=options, progress=progress)
    if not given:  # the store's own note names where it looked (or use_reference=False was asked for)
        result.warnings = [w for w in result.warnings if not w.startswith(NO_KNOWN_COMPOUND)]
    for note in (set_aside, phases.note):
        if note:
            result.warnings.append(note)
    saved = None
    if save and not read_only:
        n_own = int(result.table["refined"].sum()) if "refined" in result.table else result.n_candidates
        step(f"saving {n_own:,} predictions of {predictor.name} to the store" if save_predictions
             else "saving the screen to the store")
        where = None if given and store is None else (
            f"{phases.where} ({phases.n_compounds} compounds)" if phases.frame is not None else None)
        saved = save_screen(result, options, predictor if save_predictions else None, store=store, origin=origin,
                            reference=where if not given else "the caller", keep_top=keep_top,
                            sources=phases.sources if not given and use_reference else None)
    return result, phases, saved


#: How :func:`read_known` names the caller's table in its messages.
KNOWN_LABEL = "known phases given"


def read_known(known: pd.DataFrame, system: Sequence[str] | None = None) -> tuple[pd.DataFrame | None, str]:
    """The caller's known phases read as ``fh-screen ingest`` reads a table: ``(rows kept, note)``.

    ``known`` is a DataFrame with ``formula`` and ``dhf_ev_per_atom`` (other columns, such as
    ``source``, are kept). Rows are cleaned by :func:`fh_screen.data.clean` and checked by
    :func:`fh_screen.data.check_rows`: a formula naming an element that does not exist, or a pure
    element whose ΔH_f is not 0, refuses the whole table (one-line :class:`ScreenError`); rows
    with a missing, non-numeric or infinite value, an unparsable formula or a value outside
    :data:`fh_screen.data.OUTLIER_RANGE_EV_PER_ATOM` are set aside and counted in ``note`` (one
    line, ``""`` when none), which the screen adds to its ``warnings``. Formulas are reduced; a
    composition given twice keeps its lowest value per ``source`` (the hull takes the lowest).
    Rows of elements outside the screened system are valid and simply not used: with ``system``
    they are left out before the rows are read (a whole OQMD table costs a vectorised pass, not a
    parse of every row), and only the system's rows, and rows naming a symbol that is no element
    (a typo), are read and counted.
    """
    import numpy as np
    import pandas as pd

    from fh_screen.data import OUTLIER_RANGE_EV_PER_ATOM, REJECTION_REASONS, DataError, check_rows, clean

    if not isinstance(known, pd.DataFrame):
        raise ScreenError(f"known must be a pandas DataFrame with columns formula and dhf_ev_per_atom, "
                          f"got {type(known).__name__}")
    if len(known) == 0:
        return None, ""
    missing = [c for c in ("formula", "dhf_ev_per_atom") if c not in known.columns]
    if missing:
        raise ScreenError(f"known entries need columns formula and dhf_ev_per_atom (missing {', '.join(missing)})")
    rows = known.reset_index(drop=True)
    n_given = len(rows)
    if system is not None:
        rows = rows[_may_be_of(rows["formula"], system)]
        if not len(rows):
            return None, ""
    # clean() keeps one row per composition: per source as spelled (``oqmd`` beside a legacy ``OQMD``), so that
    # ``sources`` still finds each one's value
    groups = (rows["source"].astype(str) if "source" in rows.columns
              else pd.Series("", index=rows.index))
    kept, rejected, n_outliers, examples = [], dict.fromkeys(REJECTION_REASONS, 0), 0, []
    for _, part in rows.groupby(groups, sort=False):
        frame = pd.DataFrame({"formula": part["formula"], "dhf_ev_per_atom": part["dhf_ev_per_atom"],
                              "source_id": part.index})
        table, report = clean(frame, drop_outliers=False)
        try:
            check_rows(table, report, KNOWN_LABEL, "nothing was screened")
        except DataError as exc:
            raise ScreenError(one_line(exc)) from None
        inside = table[table["passed_outlier_filter"]]
        original = rows.loc[inside["source_id"].to_numpy()].copy()
        original["formula"] = inside["formula"].to_numpy()
        original["dhf_ev_per_atom"] = inside["dhf_ev_per_atom"].to_numpy(dtype=float)
        kept.append(original)
        for reason, n in report.rejected.items():
            rejected[reason] += n
        examples += [e for reason in ("bad_formula", "bad_value") for e in report.examples.get(reason, [])]
    frame = pd.concat(kept).sort_index() if kept else None
    low, high = OUTLIER_RANGE_EV_PER_ATOM
    set_aside = {reason: n for reason, n in rejected.items() if n and reason != "duplicate"}
    note = ""
    if set_aside:
        n = sum(set_aside.values())
        why = ", ".join(f"{count} {REJECTION_REASONS[reason]}" for reason, count in set_aside.items())
        quoted = f" (e.g. {'; '.join(examples[:3])})" if examples else ""
        rule = (f"; ΔH_f must be a finite number of eV/atom between {low:g} and {high:g}"
                if set_aside.keys() & {"outlier", "bad_value"} else "")  # a missing formula breaks no value rule
        note = f"{n} of {n_given} rows of the {KNOWN_LABEL} set aside: {why}{quoted}{rule}"
    if frame is None or not len(frame):
        return None, note
    frame["dhf_ev_per_atom"] = np.asarray(frame["dhf_ev_per_atom"], dtype=float)
    return frame.reset_index(drop=True), note


def _may_be_of(formulas: pd.Series, system: Sequence[str]) -> pd.Series:
    """Rows whose every element-like symbol is of ``system`` or is no element at all (a typo to report),
    and rows without a formula (None, NaN, ``pd.NA``: missing values to count, not ``"None"`` read as nobelium)."""
    from fh_screen.chem.formula import ALL_ELEMENT_SYMBOLS

    foreign = set(ALL_ELEMENT_SYMBOLS) - set(system)
    symbols = formulas.astype(str).str.findall(r"[A-Z][a-z]?")
    return symbols.map(lambda found: foreign.isdisjoint(found)) | formulas.isna()


def _caller_phases(known: pd.DataFrame, sources: Sequence[str] | None) -> KnownPhases:
    """The caller's known phases, restricted to ``sources`` by their ``source`` column when they have one,
    by the store's rule (:func:`~fh_screen.store.query.selected_sources`: ``oqmd`` takes ``oqmd`` alone,
    ``OQMD`` the other spellings of it, ``mylab`` any spelling of itself), so a table read from a store
    gives the hull the store gives."""
    import pandas as pd

    from fh_screen.store.query import selected_sources

    if known is None or sources is None:
        return KnownPhases(known, "the caller")
    if not isinstance(known, pd.DataFrame) or "source" not in known.columns:
        return KnownPhases(known, "the caller", note=(
            f"sources {', '.join(sources)} not applied: the known phases given have no 'source' column "
            "(every row counts)"))
    stored = known["source"].astype(str)
    kept = known[stored.isin(selected_sources(sources, stored.unique()))]
    if len(kept):
        return KnownPhases(kept, "the caller")
    return KnownPhases(None, "the caller", note=(
        f"no known phase of source {', '.join(sources)} among the rows given: the hull is built from the elements "
        "and the predictions alone"))


def screen(
    system: str | Sequence[str],
    predictor: Predictor | None = None,
    known: pd.DataFrame | None = None,
    options: ScreenOptions = ScreenOptions(),
    *,
    save: bool = False,
    store: FhScreenStore | None = None,
    progress: Callable[[str], None] | None = None,
    sources: str | Sequence[str] | None = None,
) -> ScreenResult:
    """Rank every candidate composition of ``system`` against the known phases (the public ``fh_screen.screen``).

    Parameters
    ----------
    system
        Chemical system, e.g. ``"Li-Fe-P-O"``.
    predictor
        A loaded :class:`~fh_screen.models.predictor.Predictor`, or a shipped model name or
        checkpoint path (``"paper"``, ``"model.pt"``: loaded once per process, as ``--model``);
        None: the default model. A wrong name is the CLI's one-line ``ModelError``.
    known
        Known phases: a DataFrame with ``formula`` and ``dhf_ev_per_atom`` (eV/atom), read as
        ``fh-screen ingest`` reads a table (:func:`read_known`): an unknown element or a pure
        element with ΔH_f ≠ 0 refuses it in one line, unusable rows (missing, non-numeric or
        infinite values, unparsable formulas, outliers) are set aside and counted in one line of
        ``warnings``. None: the configured store's reference entries, as the CLI. With
        ``save=False`` nothing is written, as ``fh-screen SYSTEM --no-store``: a store that exists
        is read, and on a machine without one the OQMD table shipped with the package is read
        directly (no store file is made); with ``save=True`` the store is made and filled with
        that table on first use, as ``fh-screen SYSTEM``.
    options
        :class:`~fh_screen.screening.ScreenOptions`.
    save
        Also write the screen and its predictions to the store (as the CLI does by default).
    store
        Read from (and save to) this :class:`~fh_screen.store.FhScreenStore` instead of the configured one.
    progress
        Called with a short label before each stage.
    sources
        Only reference entries of these sources count for the hull (``"oqmd,chgnet"`` or a list;
        None: every source in the store), as ``fh-screen SYSTEM --sources``. With ``known``, its
        rows of those sources (by its ``source`` column; without one every row counts, and
        ``warnings`` says so). A source the store has no entry of is named in ``warnings``.

    Returns
    -------
    ScreenResult
        Its ``table`` holds ``formula``, ``is_known``, ``p_stable``, ``selected``,
        ``e_above_hull_pred_ev_per_atom`` and the other columns of ``docs/screening.md``.
    """
    result, _, _ = run_screen(system, predictor, known, options, store=store, save=save, read_only=not save,
                              progress=progress, sources=sources)
    return result
