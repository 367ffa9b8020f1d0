"""The prescreen job: a chemical system in, its :class:`~fh_screen.store.documents.ScreenDoc` out.

The job runs the same stages as ``fh-screen SYSTEM`` and ``fh_screen.screen()``, through the one
screen service (:mod:`fh_screen.service`): the chemical-system parser, the known phases of the
store (filled with the shipped OQMD table on first use), the ranking core,
:meth:`ScreenDoc.from_result` and the one saving rule (screen and predictions). Then
:meth:`ScreenDoc.select` picks the candidates handed on: unknown compositions (unless
``select_known``) of at least two elements, energy above the hull ≤ ``e_hull_max_ev_per_atom``
(when given), best ``top_n``.

No silent degradation: reference entries that cannot be read, or none for the system, fail the
job with one line (:class:`PrescreenError`) unless the maker says ``use_reference=False``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from maggma.core import Store

from fh_screen.errors import FhScreenError, one_line
from fh_screen.jobs.base import CheckedMaker, fh_screen_job
from fh_screen.screening import DEFAULT_SELECT_P_MIN, ScreenError, ScreenOptions
from fh_screen.store.documents import DEFAULT_KEEP_TOP, ScreenDoc

logger = logging.getLogger(__name__)

__all__ = [
    "PRESCREEN_SCREEN_DEFAULTS",
    "PrescreenError",
    "PrescreenMaker",
    "PrescreenOptionsError",
    "read_reference",
    "screen_options_from",
    "select_candidates",
]

#: Where the prescreen's screen options differ from ``ScreenOptions()`` (= the CLI's defaults):
#: its selection goes to DFT, so compositions are kept small (≤ 12 atoms per formula unit, which
#: fits the structure stage's 24-site cells) and charge balanced, and it spends a DFT budget: the
#: ``PRESCREEN_DFT_BUDGET`` candidates of highest P(stable) are ``selected``. ``max_atoms`` and
#: ``charge_neutral`` apply when ``screen_options`` is not given; the budget also applies to given
#: options (``ScreenOptions`` or a mapping, the same rule for both) that leave the selection rule
#: at its defaults (``dft_budget=None``, ``select_p_min`` = 0.3): a job hands DFT a short list,
#: never an empty one because no candidate reached the threshold. Options that set ``dft_budget``,
#: or a ``select_p_min`` other than 0.3, select as they say.
PRESCREEN_DFT_BUDGET = 5
PRESCREEN_SCREEN_DEFAULTS: dict[str, Any] = {"max_atoms": 12, "charge_neutral": True, "dft_budget": PRESCREEN_DFT_BUDGET}


class PrescreenError(FhScreenError):
    """A prescreen that cannot run as configured (options, reference data, store); one line."""


class PrescreenOptionsError(PrescreenError, ScreenError):
    """Screen options (or an enumeration size) a prescreen refuses: the message ``screen()`` gives, one line.

    Both a :class:`PrescreenError` and a :class:`~fh_screen.screening.ScreenError`, so
    ``except ScreenError`` catches the same bad option in ``screen()``, the CLI and the Maker.
    """


def screen_options_from(value: ScreenOptions | Mapping[str, Any] | None) -> ScreenOptions:
    """The prescreen's :class:`~fh_screen.screening.options.ScreenOptions` from options, a mapping of them, or None.

    None gives :data:`PRESCREEN_SCREEN_DEFAULTS`; options or a mapping are taken as given (unnamed
    options at the ``ScreenOptions()`` defaults), except that options leaving the selection rule
    at its defaults (``dft_budget=None``, ``select_p_min`` = 0.3) get :data:`PRESCREEN_DFT_BUDGET`:
    ``ScreenOptions(max_atoms=8)`` and ``{"max_atoms": 8}`` give the same options. Validation is the options model's own
    (``extra="forbid"``, strict types, limits); its one-line error becomes a
    :class:`PrescreenOptionsError` (a :class:`PrescreenError` and a ``ScreenError``) with the same message.
    """
    if value is None:
        value = dict(PRESCREEN_SCREEN_DEFAULTS)
    elif isinstance(value, ScreenOptions):
        value = dataclasses.asdict(value)
    elif not isinstance(value, Mapping):
        raise PrescreenError(f"screen_options must be ScreenOptions or a dict, got {type(value).__name__}")
    try:
        options = ScreenOptions.from_mapping(value)
    except FhScreenError as exc:
        raise PrescreenOptionsError(one_line(exc)) from None
    if options.dft_budget is None and options.select_p_min == DEFAULT_SELECT_P_MIN:
        options = dataclasses.replace(options, dft_budget=PRESCREEN_DFT_BUDGET)  # a rule of values: idempotent
    return options


def select_candidates(
    doc: ScreenDoc | dict, top_n: int | None = 5, e_hull_max_ev_per_atom: float | None = None,
    select_known: bool = False,
) -> ScreenDoc:
    """A copy of ``doc`` whose ``selected`` holds the candidates to hand on (see :meth:`ScreenDoc.select`)."""
    if not isinstance(doc, ScreenDoc):
        doc = ScreenDoc.model_validate({k: v for k, v in dict(doc).items() if not str(k).startswith("@")})
    return doc.select(top_n, e_hull_max_ev_per_atom, select_known)


def read_reference(system: Sequence[str], reference_store: Store | None = None,
                   sources: str | Sequence[str] | None = None):
    """Known phases of ``system`` for the hull: ``(DataFrame, where they came from, note)``.

    The screen service's rule (:func:`fh_screen.service.known_phases`): ``reference_store``, a
    maggma Store of reference documents, or None for the configured store (``~/.fh_screen.yaml``,
    ``FH_SCREEN_*``) on the machine running the job, filled with the shipped OQMD table on first
    use; ``sources`` keeps the entries of those sources only (None: all). ``note`` names a
    requested source the store has no entry of (else ``""``). Raises :class:`PrescreenError`
    (one line) when the entries cannot be read or the store has no compound of the system.
    """
    phases = _reference_phases(system, reference_store, sources)
    return phases.frame, f"{phases.where} ({phases.n_compounds} compounds)", phases.note


def _reference_phases(system: Sequence[str], reference_store: Store | None, sources: str | Sequence[str] | None):
    """:func:`read_reference`'s known phases (a :class:`~fh_screen.service.KnownPhases`, with the sources as
    the store read them); :class:`PrescreenError` (one line) as there."""
    from fh_screen.service import known_phases
    from fh_screen.store import FhScreenStore

    label = "-".join(system)
    try:
        store = None if reference_store is None else FhScreenStore(reference=reference_store, ensure_indexes=False)
        phases = known_phases(system, store=store, sources=sources)
    except Exception as exc:  # noqa: BLE001 - any failure to read is fatal here, in one line
        raise PrescreenError(f"cannot read reference entries for {label}: {one_line(exc)}") from None
    if phases.n_compounds == 0:
        of_sources = f" of source {', '.join(phases.sources)}" if phases.sources is not None else ""
        why = f" ({phases.note})" if phases.note else ""  # a misspelt source: named, with the sources the store holds
        raise PrescreenError(
            f"no reference entries{of_sources} for {label} in {phases.where}{why}: ingest OQMD (fh-screen ingest PATH), "
            f"give PrescreenMaker(reference_store=...), or set use_reference=False to build the hull from predictions alone"
        )
    return phases


@dataclass
class PrescreenMaker(CheckedMaker):
    """Maker of the prescreen job: a chemical system in, a :class:`ScreenDoc` out.

    Parameters
    ----------
    name
        Job name (the job is named ``"<name> <system>"``).
    model
        Shipped model name or checkpoint path (None: the default model, as the CLI); checked when
        the job is made (a wrong name fails at ``make()`` with the CLI's one-line ``ModelError``).
    screen_options
        :class:`~fh_screen.screening.options.ScreenOptions` or a dict of them (converted and
        validated: a typo fails at once); either form is taken as given, unnamed options at the
        ``ScreenOptions()`` defaults, and both get ``dft_budget=5`` unless they set ``dft_budget``
        or a ``select_p_min`` other than 0.3 (:func:`screen_options_from`). Not given:
        ``ScreenOptions()`` with :data:`PRESCREEN_SCREEN_DEFAULTS` (``max_atoms=12``,
        ``charge_neutral=True``, ``dft_budget=5``).
    top_n, e_hull_max_ev_per_atom, select_known
        Selection of the candidates handed on (:meth:`ScreenDoc.select`).
    keep_top
        How many ranked candidates the document keeps (None: all), as the CLI's screens.
    use_reference
        False screens without known phases (hull of the elements and the predictions): it must
        be said explicitly, otherwise missing reference entries fail the job.
    sources
        Reference sources that count for the hull (``"oqmd,chgnet"`` or a list; None: every source
        in the store), as ``fh-screen SYSTEM --sources``. A source the store has no entry of is
        noted in the document's ``problems``.
    reference_store
        maggma Store of the reference entries; it is serialised with the job, so a worker opens
        the same database (a MongoStore, an SQLiteStore on a shared file). None: the store
        configured where the job runs. An OQMD-style file: ``fh-screen ingest FILE --store
        ref.sqlite`` once, then ``SQLiteStore("ref.sqlite", "reference", key="formula")``. A
        ``MemoryStore`` works in-process only (serialising it gives an empty one).
    save_screen
        Write the document to the ``screens`` collection (as the CLI does unless ``--no-store``).
    screens_store
        maggma Store of the screens (key ``run_id``); None: the configured store's ``screens``.
    """

    error: ClassVar[type[Exception]] = PrescreenError  # a powerup's bad field or typo: one line of it

    name: str = "fh-screen prescreen"
    model: str | None = None
    screen_options: ScreenOptions = field(default_factory=lambda: ScreenOptions(**PRESCREEN_SCREEN_DEFAULTS))
    top_n: int | None = 5
    e_hull_max_ev_per_atom: float | None = None
    select_known: bool = False
    keep_top: int | None = DEFAULT_KEEP_TOP
    use_reference: bool = True
    sources: str | list[str] | None = None
    reference_store: Store | None = None
    save_screen: bool = True
    screens_store: Store | None = None

    def __post_init__(self) -> None:
        self.screen_options = screen_options_from(self.screen_options)

    def as_dict(self) -> dict[str, Any]:
        """Serialised maker; ``screen_options`` as a plain dict, re-validated when loaded.

        So ``update_maker_kwargs`` (plain or ``dict_mod``) and a worker loading the job both go
        through :func:`screen_options_from` and :meth:`_check` (``from_dict``): a typo or a bad
        value fails there, in one line.
        """
        data = super().as_dict()
        data["screen_options"] = dataclasses.asdict(screen_options_from(self.screen_options))
        return data

    def _check(self) -> None:
        """Validate every field; one-line :class:`PrescreenError`."""
        if not isinstance(self.name, str):
            raise PrescreenError(f"name must be a text, got {self.name!r}")
        self.screen_options = screen_options_from(self.screen_options)
        for name in ("top_n", "keep_top"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise PrescreenError(f"{name} must be a non-negative integer or None, got {value!r}")
        cut = self.e_hull_max_ev_per_atom
        if cut is not None and (isinstance(cut, bool) or not isinstance(cut, (int, float)) or not math.isfinite(cut)):
            raise PrescreenError(f"e_hull_max_ev_per_atom must be a finite number or None, got {cut!r}")
        for name in ("use_reference", "save_screen", "select_known"):
            if not isinstance(getattr(self, name), bool):
                raise PrescreenError(f"{name} must be True or False, got {getattr(self, name)!r}")
        for name in ("reference_store", "screens_store"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Store):
                raise PrescreenError(f"{name} must be a maggma Store or None, got {type(value).__name__}")
        if self.sources is not None:
            from fh_screen.store.query import parse_sources

            try:
                parse_sources(self.sources)
            except FhScreenError as exc:
                raise PrescreenError(one_line(exc)) from None
        if self.model is not None and not isinstance(self.model, str):
            raise PrescreenError(f"model must be a model name or checkpoint path, got {self.model!r}")
        from fh_screen.models.predictor import check_model_reference

        check_model_reference(self.model)  # the CLI's and screen()'s one-line ModelError: a wrong name fails at make()

    def check_make(self, chemsys: str | Sequence[str]):
        """The checks :meth:`make` runs when the job is made: fields, the system, the enumeration size.

        Returns ``(maker, args, kwargs)`` for the job: the maker renamed after the system, and the
        system as one label.

        A system that is another job's output (an ``OutputReference``) is checked when the job runs.
        """
        from jobflow import OutputReference

        from fh_screen.chem.candidates import parse_chemsys
        from fh_screen.screening import check_size

        self._check()
        if isinstance(chemsys, OutputReference):
            return self, (chemsys,), {}
        system = parse_chemsys(chemsys)
        try:
            check_size(system, self.screen_options)
        except FhScreenError as exc:
            raise PrescreenOptionsError(one_line(exc)) from None
        label = "-".join(system)
        maker = self if self.name.endswith(f" {label}") else dataclasses.replace(self, name=f"{self.name} {label}")
        return maker, (label,), {}

    @fh_screen_job(output_schema=ScreenDoc, check=check_make)
    def make(self, chemsys: str) -> ScreenDoc:
        """Prescreen job for ``chemsys`` (e.g. ``"Li-Fe-P-O"``).

        Bad fields, a malformed system or an enumeration above ``max_candidates`` raise here,
        in one line; the job's output is the :class:`ScreenDoc` it also saves to ``screens``.
        """
        return self.prescreen(chemsys)

    def prescreen(self, chemsys: str | Sequence[str]) -> ScreenDoc:
        """Run the prescreen now, without jobflow (the body of the job): the screen service's rules."""
        from fh_screen.chem.candidates import parse_chemsys
        from fh_screen.models.predictor import load_predictor
        from fh_screen.service import run_screen, save_screen

        self._check()
        system = parse_chemsys(chemsys)
        known, source, note, sources = (None, None, "", None)
        if self.use_reference:
            phases = _reference_phases(system, self.reference_store, self.sources)
            known, source, note = phases.frame, f"{phases.where} ({phases.n_compounds} compounds)", phases.note
            sources = phases.sources  # as the store read them (OQMD is oqmd unless entries are stored under it)
        predictor = load_predictor(self.model)
        result, _, _ = run_screen(system, predictor, known, self.screen_options, use_reference=self.use_reference)
        if note:
            result.warnings.append(note)
        doc = ScreenDoc.from_result(result, self.screen_options, origin="job", keep_top=self.keep_top,
                                    reference=source, sources=sources)
        doc = doc.select(self.top_n, self.e_hull_max_ev_per_atom, self.select_known)
        if self.save_screen:
            from fh_screen.store import FhScreenStore

            try:
                store = None if self.screens_store is None else FhScreenStore(screens=self.screens_store)
                save_screen(result, self.screen_options, predictor, store=store, doc=doc)
            except Exception as exc:  # noqa: BLE001 - a screen that cannot be saved fails the job, in one line
                raise PrescreenError(f"cannot save screen {doc.run_id}: {one_line(exc)}") from None
        return doc
