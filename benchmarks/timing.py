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


def alternating_median_seconds(functions: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall time in seconds of each function, the calls alternating (one of each per round,
    in the order given), so that a change of load on a shared machine falls on all of them alike."""
    times: dict[str, list[float]] = {label: [] for label in functions}
    for _ in range(repeats):
        for label, function in functions.items():
            started = time.perf_counter()
            function()
            times[label].append(time.perf_counter() - started)
    return {label: statistics.median(values) for label, values in times.items()}
