"""THE screen service: what the CLI, ``fh_screen.screen()`` and the prescreen job all call.

One rule for each of the three things that used to differ between the doors:

* **known phases**: the caller's ``known`` table when given; otherwise the reference entries of
  the configured store (:meth:`FhScreenStore.from_settings`: embedded or MongoDB, filled with the
  OQMD table shipped with the package on first use), or of the store passed in;
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

from fh_screen.errors import FhScreenError, one_line
from fh_screen.screening import ScreenOptions

if TYPE_CHECKING:
    import pandas as pd

    from fh_screen.models.predictor import Predictor
    from fh_screen.screening import ScreenResult
    from fh_screen.settings import FhScreenSettings
    from fh_screen.store import FhScreenStore, ScreenDoc

logger = logging.getLogger(__name__)

__all__ = ["KnownPhases", "SavedScreen", "ScreenServiceError", "known_phases", "run_screen", "save_screen", "screen"]

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
    """

    frame: pd.DataFrame | None
    where: str
    n_store_entries: int = -1
    note: str = ""

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
    from fh_screen.store.query import absent_sources_note, parse_sources

    label = "-".join(system)
    if store is None:
        settings = _settings(settings)
        if read_only and not settings.mongo_uri and not settings.store_path.exists():
            if not settings.reference_data:
                return KnownPhases(None, "nothing", 0, NO_REFERENCE_NOTE)
            from fh_screen.store.bootstrap import TABLE_FILE, packaged_reference_frame, reference_metadata

            frame = packaged_reference_frame(label)  # the shipped table is OQMD's
            if sources is not None:
                frame = frame if "oqmd" in parse_sources(sources) else frame.iloc[0:0]
            return KnownPhases(frame, f"shipped {TABLE_FILE}", int(reference_metadata()["n_compositions"]),
                               absent_sources_note(sources, _sources_of(frame), lambda: ["oqmd"],
                                                   f"the shipped {TABLE_FILE}"))
        store = FhScreenStore.from_settings(settings, read_only=read_only)
    try:
        with store:
            n_entries = store.n_reference()
            frame = store.reference_frame(chemsys=label, source=sources) if n_entries else None
            where = store.name
            note = NO_REFERENCE_NOTE if n_entries == 0 else absent_sources_note(
                sources, _sources_of(frame), lambda: store.reference.distinct("source"), "the store")
    except FhScreenError:
        raise
    except Exception as exc:  # noqa: BLE001 - a store that cannot be read is one line, naming it
        raise ScreenServiceError(f"cannot read reference entries for {label} from {store.name}: "
                                 f"{one_line(exc)}") from None
    phases = KnownPhases(frame if frame is not None and len(frame) else None, where, n_entries, note)
    if sources is not None and n_entries and phases.n_compounds == 0 and not note:
        note = (f"no reference compound of source {', '.join(parse_sources(sources))} in {label}: "
                f"the hull is built from the elements and the predictions alone")
        phases = KnownPhases(phases.frame, where, n_entries, note)
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
        A loaded model (None: ``model``, loaded once per process, after the known phases are read).
    known
        The caller's known phases (``formula``, ``dhf_ev_per_atom``); None: the store's.
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
    from fh_screen.models.predictor import load_predictor
    from fh_screen.screening import check_size
    from fh_screen.screening import screen as rank

    step = progress or (lambda label: None)
    options.validate()
    system = parse_chemsys(system)
    check_size(system, options)  # before loading anything heavy
    if predictor is None:
        _check_model(model)  # a wrong name fails before the store is read or the model loaded
    label = "-".join(system)
    if sources is not None:
        from fh_screen.store.query import parse_sources

        sources = parse_sources(sources)  # a bad value fails here, whichever known phases the screen uses
    if known is not None:
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
    result = rank(system, predictor=predictor, known=phases.frame, options=options, progress=progress)
    if phases.note:
        result.warnings.append(phases.note)
    saved = None
    if save and not read_only:
        n_own = int(result.table["refined"].sum()) if "refined" in result.table else result.n_candidates
        step(f"saving {n_own:,} predictions of {predictor.name} to the store" if save_predictions
             else "saving the screen to the store")
        where = None if known is not None and store is None else (
            f"{phases.where} ({phases.n_compounds} compounds)" if phases.frame is not None else None)
        saved = save_screen(result, options, predictor if save_predictions else None, store=store, origin=origin,
                            reference=where if known is None else "the caller", keep_top=keep_top,
                            sources=sources if known is None and use_reference else None)
    return result, phases, saved


def _caller_phases(known: pd.DataFrame, sources: Sequence[str] | None) -> KnownPhases:
    """The caller's known phases, restricted to ``sources`` by their ``source`` column when they have one."""
    import pandas as pd

    if sources is None:
        return KnownPhases(known, "the caller")
    if not isinstance(known, pd.DataFrame) or "source" not in known.columns:
        return KnownPhases(known, "the caller", note=(
            f"sources {', '.join(sources)} not applied: the known phases given have no 'source' column "
            "(every row counts)"))
    kept = known[known["source"].astype(str).str.strip().str.lower().isin(sources)]
    if len(kept):
        return KnownPhases(kept, "the caller")
    return KnownPhases(None, "the caller", note=(
        f"no known phase of source {', '.join(sources)} among the rows given: the hull is built from the elements "
        "and the predictions alone"))


def _check_model(model: str | None) -> None:
    """Raise the one-line ``ModelError`` for a shipped-model name or checkpoint path that does not exist."""
    from pathlib import Path

    from fh_screen.models.checkpoint import ModelError
    from fh_screen.models.predictor import shipped_model_path

    if model is None:
        return
    candidate = Path(model)
    if candidate.suffix == ".pt" or candidate.exists():
        if not candidate.expanduser().is_file():
            raise ModelError(f"model file not found: {candidate}")
        return
    shipped_model_path(str(model))


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
        A loaded :class:`~fh_screen.models.predictor.Predictor` (None: the default model, cached).
    known
        Known phases (``formula``, ``dhf_ev_per_atom``); None: the configured store's reference
        entries, filled with the OQMD table shipped with the package on first use, as the CLI.
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
    result, _, _ = run_screen(system, predictor, known, options, store=store, save=save, progress=progress,
                              sources=sources)
    return result
