"""What a screen enumerates and how it judges stability: :class:`ScreenOptions` and its limits."""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from typing import Any

from pydantic import ConfigDict, ValidationError, field_validator
from pydantic.dataclasses import dataclass

from fh_screen.chem.candidates import DEFAULT_MAX_ATOMS, MAX_ATOMS_LIMIT
from fh_screen.defaults import DEFAULT_SELECT_P_MIN
from fh_screen.errors import FhScreenError
from fh_screen.screening.probability import DEFAULT_PREFILTER_MODEL, DEFAULT_REFINE_TOP

__all__ = ["DEFAULT_MAX_CANDIDATES", "DEFAULT_SELECT_P_MIN", "NO_STABILITY_MODEL", "ScreenError", "ScreenOptions"]

#: Largest enumeration a screen runs without ``force``: a senary system at the default 20
#: atoms (221,155 candidates) still fits, a septenary one (~865,000) needs ``--force`` or a
#: smaller ``max_atoms``. Enumeration + prediction + hull of 250k candidates take seconds.
DEFAULT_MAX_CANDIDATES = 250_000


#: ``stability_model`` spelling for "no classifier": ``p_stable`` is the σ-only ``P(E_hull < window)``
#: (how ``scripts/build_stability_model.py`` screens the examples it fits a classifier on)
NO_STABILITY_MODEL = "none"


class ScreenError(FhScreenError):
    """A screen that cannot run as asked (limits, options); the message is one line."""


@dataclass(frozen=True, config=ConfigDict(extra="forbid", strict=True))
class ScreenOptions:
    """What to enumerate and how to judge stability: the one options model of the CLI, ``screen()`` and the Makers.

    A pydantic dataclass (``extra="forbid"``, strict types) whose constructor checks everything
    when the options are made and raises a one-line :class:`ScreenError`: an unknown option (with
    the closest known name), a value of the wrong type (``max_atoms="6"``, ``charge_neutral=1``)
    or a limit :meth:`validate` refuses (``max_atoms=0``, ``select_p_min=2``, ``dft_budget=0``).
    :meth:`from_mapping` makes options from a dict (a Maker's field, a powerup's update) with the
    same checks and messages.

    ``max_atoms``: largest formula unit (default 20, see :data:`fh_screen.chem.candidates.DEFAULT_MAX_ATOMS`);
    ``max_per_element``: most atoms of one element (default ``max_atoms - 1``);
    ``charge_neutral``: keep only enumerated compositions that can be charge balanced
    (known compositions are always kept); ``include_known``: list known compositions too
    (they always shape the hull); ``max_candidates``: refuse larger enumerations unless
    ``force``; ``e_hull_tolerance_ev_per_atom``: the window of the σ-only ``P(E_hull < window)``
    that ``p_stable`` falls back to without a classifier (0.05 eV/atom); the shipped classifier
    does not use it (its ``p_stable`` is P(on or below the known hull), ``docs/claims.md``);
    ``select_e_hull_max_ev_per_atom``: the E_hull window a ``selected`` candidate must lie in
    (0.2 eV/atom keeps 92 % of the hidden stable compounds of the rediscovery test and drops
    41 % of the candidates, ``docs/evaluation.md``); ``select_p_min``: ``selected`` are the new
    candidates with ``p_stable`` at least this (the short list), or with ``dft_budget = N`` the
    ``N`` of highest ``p_stable`` (the most expected discoveries for ``N`` calculations);
    ``stability_model``: path of a P(stable) classifier JSON (None: the shipped one,
    :mod:`fh_screen.screening.stability`; ``"none"``: no classifier, the σ-only fallback below;
    a path that is not a classifier file is refused). Charge neutrality is off by default: as a
    filter it drops 32 % of the stable compounds; the ranking's prior weighs it instead.
    ``refine_top``/``prefilter_model``: with a slow model (the attention ensemble), every new
    candidate is first scored with the fast ``prefilter_model`` and only the best ``refine_top``
    of them (and every known composition) are predicted by the model itself (``refined`` is
    True), then the best ``refine_top`` by ``p_stable`` and every ``selected`` row as well, until
    that head is all refined; the rest keep the prefilter's predictions; every row gets
    ``p_stable``. None (or 0, as ``--refine-top 0``) runs the model on every candidate.
    """

    max_atoms: int = DEFAULT_MAX_ATOMS
    max_per_element: int | None = None
    charge_neutral: bool = False
    include_known: bool = True
    max_candidates: int = DEFAULT_MAX_CANDIDATES
    force: bool = False
    e_hull_tolerance_ev_per_atom: float = 0.05
    select_e_hull_max_ev_per_atom: float = 0.2
    refine_top: int | None = DEFAULT_REFINE_TOP
    prefilter_model: str = DEFAULT_PREFILTER_MODEL
    select_p_min: float = DEFAULT_SELECT_P_MIN
    dft_budget: int | None = None
    stability_model: str | None = None

    @field_validator("refine_top")
    @classmethod
    def _zero_refines_every_candidate(cls, value: int | None) -> int | None:
        """``0`` means what ``--refine-top 0`` means in every command: the model on every candidate (None)."""
        return None if value == 0 else value

    @field_validator("stability_model")
    @classmethod
    def _absolute_stability_model(cls, value: str | None) -> str | None:
        """A classifier path made absolute where the options are made (``~`` and a relative path read from
        the working directory there), so a job running in its own folder opens the same file."""
        if value is None or value == NO_STABILITY_MODEL:
            return value
        from pathlib import Path

        return str(Path(value).expanduser().absolute())

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ScreenOptions:
        """Options from a mapping of them (keys starting with ``@`` are serialisation tags and ignored).

        Raises :class:`ScreenError` with one line, as the constructor: an unknown name (with the
        closest known one), or the first value of the wrong type, or a limit :meth:`validate` refuses.
        """
        if not isinstance(data, Mapping):
            raise ScreenError(f"screen options must be a mapping of option names to values, got {type(data).__name__}")
        return cls(**{str(k): v for k, v in data.items() if not str(k).startswith("@")})

    def validate(self) -> None:
        """Raise :class:`ScreenError` (one line) for absurd limits; the constructor runs it."""
        atoms = self.max_atoms
        if isinstance(atoms, bool) or not isinstance(atoms, int) or not 2 <= atoms <= MAX_ATOMS_LIMIT:
            raise ScreenError(f"max_atoms must be an integer from 2 to {MAX_ATOMS_LIMIT}, got {atoms!r}")
        per = self.max_per_element
        if per is not None and (isinstance(per, bool) or not isinstance(per, int) or per < 1):
            raise ScreenError(f"max_per_element must be a positive integer, got {per!r}")
        if isinstance(self.max_candidates, bool) or int(self.max_candidates) != self.max_candidates or self.max_candidates < 1:
            raise ScreenError(f"max_candidates must be a positive integer, got {self.max_candidates!r}")
        tol = self.e_hull_tolerance_ev_per_atom
        if not isinstance(tol, (int, float)) or not math.isfinite(tol) or not 0 <= tol <= 1:
            raise ScreenError(f"e_hull_tolerance_ev_per_atom must be between 0 and 1 eV/atom, got {tol!r}")
        window = self.select_e_hull_max_ev_per_atom
        if not isinstance(window, (int, float)) or not math.isfinite(window) or window < 0:
            raise ScreenError(f"select_e_hull_max_ev_per_atom must be a finite number >= 0 eV/atom, got {window!r}")
        p_min = self.select_p_min
        if isinstance(p_min, bool) or not isinstance(p_min, (int, float)) or not math.isfinite(p_min) or not 0 <= p_min <= 1:
            raise ScreenError(f"select_p_min must be a probability between 0 and 1, got {p_min!r}")
        budget = self.dft_budget
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
            raise ScreenError(f"dft_budget must be a positive integer (calculations) or None, got {budget!r}")
        top = self.refine_top
        if top is not None and (isinstance(top, bool) or not isinstance(top, int) or top < 1):
            raise ScreenError(f"refine_top must be a positive integer, or 0 or None (the model on every candidate), got {top!r}")
        if self.prefilter_model != DEFAULT_PREFILTER_MODEL:  # a typo must fail here, not only when the cascade runs
            from fh_screen.models.predictor import check_model_reference

            try:
                check_model_reference(self.prefilter_model)
            except FhScreenError as exc:
                raise ScreenError(f"prefilter_model: {exc}") from None
        if self.stability_model is not None and self.stability_model != NO_STABILITY_MODEL:
            from fh_screen.screening.stability import read_stability_model

            try:  # a typo must not quietly swap the classifier for the σ-only fallback
                read_stability_model(self.stability_model)
            except ValueError as exc:
                raise ScreenError(f"stability_model: {exc}") from None


def _option_error(exc: ValidationError) -> ScreenError:
    """The first problem of a pydantic ``ValidationError`` of :class:`ScreenOptions`, as one line."""
    error = exc.errors()[0]
    name = ".".join(str(part) for part in error.get("loc", ())) or "?"
    known = list(ScreenOptions.__dataclass_fields__)
    if error.get("type") == "unexpected_keyword_argument" or (name not in known and name != "?"):
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return ScreenError(f"unknown screen option {name!r}{hint}; known: {', '.join(known)}")
    message = " ".join(str(error.get("msg", "bad value")).split())
    return ScreenError(f"screen option {name}: {message} (got {error.get('input')!r})")


def _checked_init(init):
    """Wrap pydantic's ``__init__``: a wrong name or type and an absurd limit are one-line :class:`ScreenError`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        try:
            init(self, *args, **kwargs)
        except ValidationError as exc:
            raise _option_error(exc) from None
        self.validate()

    __init__.__doc__ = init.__doc__
    __init__.__wrapped__ = init
    return __init__


# pydantic's own errors are multi-line with a URL; every door (the CLI, ``screen()``, the Makers,
# ``from_mapping``) reports a bad option in one line, so the constructor itself does
ScreenOptions.__init__ = _checked_init(ScreenOptions.__init__)
