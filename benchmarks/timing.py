"""The one timing helper of the benchmark scripts (they run with this folder on ``sys.path``)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_seconds(function: Callable[[], object], repeats: int) -> float:
    """Median wall time in seconds of ``repeats`` calls of ``function``."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def median_cpu_seconds(function: Callable[[], object], repeats: int) -> float:
    """Median CPU time (this process, every thread) in seconds of ``repeats`` calls of ``function``.

    On a machine shared with other work the CPU time of a call stays close to its cost on an
    idle machine, while its wall time grows with the load.
    """
    times = []
    for _ in range(repeats):
        started = time.process_time()
        function()
        times.append(time.process_time() - started)
    return statistics.median(times)
