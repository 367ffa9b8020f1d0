"""The one exception family fh-screen raises for bad input, the one one-line formatter, and the one rule
for numeric options every door shares (seeds, counts, worker processes, finite positive numbers)."""

from __future__ import annotations

import math
import numbers
import re
from typing import Any

__all__ = [
    "MAX_PROCESSES", "MAX_SEED", "FhScreenError", "TrainingError", "check_count", "check_positive", "check_processes",
    "check_seed", "one_line",
]


class FhScreenError(ValueError):
    """Base class of every user-facing error (bad formula, system, file, model or store)."""


_UNSAFE_ADVICE = re.compile(r"weights_only`?\s*(?:=|set to)\s*`?False", re.IGNORECASE)
_REFUSED_CHECKPOINT = "refused: the file is not a plain-tensor checkpoint"


def one_line(error: BaseException | str, *, first_line: bool = False, with_type: bool = False) -> str:
    """``error`` (an exception or its message) as one line, for a terminal, a log or a document.

    Parameters
    ----------
    error
        The exception or message.
    first_line
        Keep only the first line (the CLI); otherwise every line is joined with single spaces
        (the jobs, whose problems keep the whole message).
    with_type
        Prefix the exception's class name (``ValueError: ...``).

    Sentences advising ``weights_only=False`` (torch's advice on an unsafe checkpoint) are
    dropped: fh-screen never loads one that way. An empty message becomes the class name.
    """
    text = error if isinstance(error, str) else str(error)
    if first_line:
        text = (text.strip().splitlines() or [""])[0]
    line = " ".join(text.split())
    if _UNSAFE_ADVICE.search(line):
        sentences = re.split(r"(?<=[.;])\s+", line)
        line = " ".join(s for s in sentences if not _UNSAFE_ADVICE.search(s)).strip() or _REFUSED_CHECKPOINT
    name = type(error).__name__ if isinstance(error, BaseException) else ""
    line = line or name
    return f"{name}: {line}" if with_type and name else line


class TrainingError(FhScreenError):
    """A training recipe, configuration or saved training state that cannot be used; one line."""


# --- the one rule for numeric options: each check returns the value or raises ``error`` (a
# FhScreenError subclass) in one line naming the option as the caller calls it (``--seed`` on the
# CLI, ``seed`` in a config) and the value given

#: the largest seed (numpy's legacy generators, which pandas' sampling uses, take 0 .. 2**32 - 1)
MAX_SEED = 2**32 - 1

#: the most worker processes a command starts
MAX_PROCESSES = 256


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_seed(value: Any, label: str = "seed", error: type[FhScreenError] = FhScreenError) -> int:
    """``value`` if it is a whole number from 0 to :data:`MAX_SEED` (2**32 - 1)."""
    if not _is_int(value) or not 0 <= int(value) <= MAX_SEED:
        raise error(f"{label} must be a whole number from 0 to {MAX_SEED} (2**32 - 1), got {value!r}")
    return int(value)


def check_count(value: Any, label: str, error: type[FhScreenError] = FhScreenError, *, minimum: int = 1,
                zero_means_all: bool = False) -> int:
    """``value`` if it is a whole number of ``minimum`` or more (``zero_means_all``: 0 or more, 0 meaning every one)."""
    low = 0 if zero_means_all else minimum
    if not _is_int(value) or int(value) < low:
        raise error(f"{label} must be {'0 (all)' if zero_means_all else low} or more, got {value!r}")
    return int(value)


def check_processes(value: Any, label: str = "--processes", error: type[FhScreenError] = FhScreenError) -> int:
    """``value`` if it is a whole number of worker processes from 1 to :data:`MAX_PROCESSES`."""
    value = check_count(value, label, error)
    if value > MAX_PROCESSES:
        raise error(f"{label} must be {MAX_PROCESSES} or fewer, got {value!r}")
    return value


def check_positive(value: Any, label: str, error: type[FhScreenError] = FhScreenError) -> float:
    """``value`` if it is a finite number above 0 (not NaN, not infinite)."""
    number = float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else math.nan
    if not math.isfinite(number) or number <= 0:
        raise error(f"{label} must be a finite number above 0, got {value!r}")
    return number
