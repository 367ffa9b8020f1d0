"""The one exception family fh-screen raises for bad input, and the one one-line formatter."""

from __future__ import annotations

import re

__all__ = ["FhScreenError", "TrainingError", "one_line"]


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
