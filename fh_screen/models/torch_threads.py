"""Run torch on a chosen number of threads without changing the host's setting for good.

``torch.set_num_threads`` is process-wide: a library that calls it as a side effect changes every
later torch computation of its host. fh-screen sets threads only inside :func:`torch_threads`
(or a function decorated with :func:`restores_torch_threads`), which puts the host's value back.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

__all__ = ["restores_torch_threads", "torch_threads"]

F = TypeVar("F", bound=Callable)


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Within the block torch uses ``n`` threads (None: leave it); the host's count is restored after."""
    if not n:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def restores_torch_threads(function: F) -> F:
    """Decorate a function that sets torch's threads: the caller's count is put back when it returns."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        import torch

        previous = torch.get_num_threads()
        try:
            return function(*args, **kwargs)
        finally:
            torch.set_num_threads(previous)

    return wrapper  # type: ignore[return-value]
