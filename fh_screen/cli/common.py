"""Shared CLI helpers: one-line errors with exit code 2, rich consoles."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

__all__ = ["console", "error_console", "fail", "one_line_errors"]


def console():
    """A rich console on stdout (160 columns when piped, so tables are not cut to 80)."""
    import sys

    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 160)


def error_console():
    """A rich console on stderr."""
    from rich.console import Console

    return Console(stderr=True)


def fail(message: str, code: int = 2):
    """Print ``error: message`` on one line to stderr and exit with ``code``."""
    import typer

    error_console().print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def one_line_errors(function: F) -> F:
    """Turn fh-screen's user-facing errors (and missing files) into one line and exit code 2."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        from fh_screen.errors import FhScreenError

        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        try:
            return function(*args, **kwargs)
        except FhScreenError as exc:
            fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
            fail(f"{exc.strerror or exc}: {exc.filename}")

    return wrapper  # type: ignore[return-value]
