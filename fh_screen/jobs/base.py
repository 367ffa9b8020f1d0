"""The one decorator of fh-screen's jobs (atomate2's ``forcefield_job`` / ``vasp_job`` pattern).

Every fh-screen Maker decorates its ``make`` with :func:`fh_screen_job`, so that

* the job *is* the maker's ``make`` (``job.maker`` is the maker): ``flow.update_maker_kwargs``
  with ``name_filter``/``class_filter`` reaches it, nested makers included;
* the output schema is fixed per maker (``job.output_schema``) and applied by jobflow;
* large outputs are routed to the JobStore's ``data`` additional store (:data:`DATA_KEYS`), as
  atomate2 routes trajectories and volumetric data: a JobStore used for fh-screen flows needs a
  ``data`` store (``fh_screen.jobs.local_job_store`` and the ``~/.jobflow.yaml`` shown in
  ``docs/jobs.md`` have one);
* checks run when the job is made, and only those named where ``make`` is decorated:
  ``@fh_screen_job(output_schema=..., check=Maker.check_make)`` calls ``check(maker, *args,
  **kwargs)``, which returns ``(maker, args, kwargs)``: it validates the maker's fields and the
  arguments (a typo in the screen options, a malformed chemical system, an enumeration above the
  limit fail at ``make()`` with one line) and may return a renamed copy of the maker (the
  prescreen job is named after its system). Nothing is looked up by name;
* a powerup re-validates: ``update_maker_kwargs`` rebuilds each maker it reaches with
  ``from_dict``, and a :class:`CheckedMaker` refuses there, in one line, a field it does not have
  (a typo) and every bad value its ``_check`` refuses (:func:`refuse_unknown_fields`).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from jobflow import Job, Maker, job
from pydantic import BaseModel

from fh_screen.errors import FhScreenError

__all__ = ["DATA_KEYS", "CheckedMaker", "fh_screen_job", "refuse_unknown_fields"]

#: Output keys stored in the JobStore's ``data`` store: the full ranked candidate list of a
#: prescreen and the DFT outputs gathered by a handoff in ``replace`` mode.
DATA_KEYS: tuple[str, ...] = ("candidates", "dft_output")


def refuse_unknown_fields(cls: type, data: Mapping[str, Any], error: type[Exception]) -> None:
    """Refuse, with one ``error`` line, a key of ``data`` (a serialised maker) that is not a field of ``cls``.

    Keys starting with ``@`` (monty's ``@module``, ``@class``, ...) are not fields and pass.
    """
    known = [f.name for f in dataclasses.fields(cls) if f.init]
    for key in data:
        if str(key).startswith("@") or key in known:
            continue
        close = difflib.get_close_matches(str(key), known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise error(f"{cls.__name__} has no field {key!r}{hint}; fields: {', '.join(known)}")


class CheckedMaker(Maker):
    """A Maker whose ``from_dict`` re-validates: what a powerup (``update_maker_kwargs``) or a load makes.

    jobflow's powerups rebuild every maker they reach from its ``as_dict()`` with the update applied
    (``Maker.update_kwargs``, plain or ``dict_mod``). This ``from_dict`` refuses a key that is not
    a field (the subclass's ``error`` class, one line, instead of the constructor's ``TypeError``),
    then runs the subclass's ``_check()``, so a bad value fails where the update is made, not when
    the job runs. Subclasses are dataclasses with ``error`` (the module's one-line error class) and
    a ``_check()`` method.
    """

    error: ClassVar[type[Exception]] = FhScreenError

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        """The maker of ``d`` (its ``as_dict()``, possibly updated), checked: one line for a bad field."""
        refuse_unknown_fields(cls, d, cls.error)
        maker = super().from_dict(d)
        maker._check()
        return maker

    def _check(self) -> None:  # pragma: no cover - every subclass defines its own
        """Validate every field (one ``error`` line)."""


def fh_screen_job(
    method: Callable | None = None, *, output_schema: type[BaseModel] | None = None,
    check: Callable[..., tuple[Any, tuple, dict]] | None = None,
) -> Callable[..., Job] | Callable[[Callable], Callable[..., Job]]:
    """Decorate the ``make`` method of an fh-screen Maker (or a helper job function).

    Parameters
    ----------
    method
        A ``Maker.make`` method (or a plain function); implied by the decorator.
    output_schema
        Pydantic model of the job's output (jobflow validates the output against it).
    check
        Run when the job is made, with the maker and the arguments of ``make``; returns
        ``(maker, args, kwargs)`` for the job (raise to refuse, in one line).

    Returns
    -------
    callable
        The decorated ``make``: calling it returns a :class:`jobflow.Job` whose function is the
        maker's bound ``make``.

    Examples
    --------
    >>> @dataclass
    ... class MyMaker(Maker):
    ...     name: str = "mine"
    ...
    ...     @fh_screen_job(output_schema=MyDocument)
    ...     def make(self, chemsys: str) -> MyDocument:
    ...         ...
    """

    def decorator(func: Callable) -> Callable[..., Job]:
        factory = job(func, output_schema=output_schema, data=list(DATA_KEYS))

        @functools.wraps(func)
        def make_job(*args: Any, **kwargs: Any) -> Job:
            if check is not None and args and isinstance(args[0], Maker):
                maker, rest, kwargs = check(*args, **kwargs)
                args = (maker, *rest)
            return factory(*args, **kwargs)

        # jobflow recognises a maker's bound method, and runs the undecorated body, through this
        make_job.original = func
        return make_job

    if method is None:
        return decorator
    return decorator(method)
