"""The one exception family fh-screen raises for bad input; each message is a single line."""

from __future__ import annotations

__all__ = ["FhScreenError"]


class FhScreenError(ValueError):
    """Base class of every user-facing error (bad formula, system, file, model or store)."""
