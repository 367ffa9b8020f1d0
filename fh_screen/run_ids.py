"""Run ids of screens: one format everywhere (CLI, ``screen()``, jobs, the ``screens`` collection)."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

__all__ = ["new_run_id"]


def new_run_id() -> str:
    """A sortable, unique run id: ``20260126T021500123-1a2b3c4d`` (UTC time to the ms, random suffix)."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}"[:-3] + f"-{uuid.uuid4().hex[:8]}"
