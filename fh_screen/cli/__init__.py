"""The ``fh-screen`` command line (typer + rich).

Each command group lives in its own module and imports heavy libraries inside the command
function, so ``fh-screen --help`` stays fast. ``fh-screen Li-Fe-P-O`` is short for
``fh-screen screen Li-Fe-P-O``.

The top layer: may import everything (``study``, ``plotting``, ``jobs``, ``store``, ``screening``,
``models``, ``chem``, ``data``); nothing in fh-screen imports ``cli``.
"""

from __future__ import annotations

import contextlib
import sys

__all__ = ["build_app", "ended_by_sigterm_as_exit", "main"]

COMMAND_MODULES = ("predict", "train", "finetune", "study", "store", "screen", "runs", "campaign", "bulk", "results")


def build_app():
    """The typer application with every command group registered."""
    import importlib

    import typer

    app = typer.Typer(
        name="fh-screen",
        help=(
            "Predict formation enthalpies from composition and screen chemical systems for DFT.\n\n"
            "Shorthand: [bold]fh-screen Li-Fe-P-O[/bold] is [bold]fh-screen screen Li-Fe-P-O[/bold]: every candidate "
            "composition of the system ranked by predicted stability against the known OQMD phases."
        ),
        rich_markup_mode="rich",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"fh_screen.cli.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"fh_screen.cli.{module_name}":
                raise
            continue
        module.register(app)
    return app


def _command_names(app) -> set[str]:
    names = {c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands}
    names |= {g.name for g in app.registered_groups if g.name}
    return names


def _click_exception_class() -> type[Exception]:
    """The base class of click's usage and file errors, from the copy of click typer uses."""
    try:  # typer >= 0.24 carries its own copy of click
        from typer._click.exceptions import ClickException
    except ImportError:
        from click.exceptions import ClickException
    return ClickException


@contextlib.contextmanager
def ended_by_sigterm_as_exit():
    """While the command runs, SIGTERM (``kill``, a batch system's time limit) ends it as Ctrl-C does:
    an exception, so that temporary files are removed and open transactions rolled back (Python's
    default ends the process at once and leaves them), exit code 143 (128 + SIGTERM). The earlier
    handler is put back afterwards; outside the main thread nothing changes."""
    import os
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    command = os.getpid()

    def terminate(signum, frame):
        if os.getpid() != command:  # a worker forked by the command (bulk -p N): ended at once, as by default
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stdout_is_null_device() -> bool:
    """Whether standard output is the null device (``os.devnull``)."""
    import os

    try:
        stdout, null = os.fstat(sys.stdout.fileno()), os.stat(os.devnull)
    except (OSError, ValueError):  # a stdout without a file descriptor (captured in a test)
        return False
    return (stdout.st_dev, stdout.st_ino) == (null.st_dev, null.st_ino)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script.

    A usage error (an unknown command or option, a missing or bad value) is one line
    ``error: ...`` on stderr and exit code 2, like the commands' own errors; help, ``fh-screen``
    alone (help, exit code 2), Ctrl-C and every command's exit code are typer's.
    """
    with ended_by_sigterm_as_exit():
        _run(argv)


def _run(argv: list[str] | None) -> None:
    import typer

    from fh_screen.cli.common import print_error

    argv = list(sys.argv[1:] if argv is None else argv)
    app = build_app()
    stdout_was_null_device = _stdout_is_null_device()
    if argv and not argv[0].startswith("-") and argv[0] not in _command_names(app):
        argv.insert(0, "screen")
    try:
        # not standalone: click's errors come here instead of its multi-line box; an exit
        # (typer.Exit, --help) comes back as its code, a finished command as its None
        code = app(args=argv, prog_name="fh-screen", standalone_mode=False)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's flush at exit
    except BrokenPipeError:  # the reader went away (| head): quietly, as Unix tools end
        from fh_screen.cli.common import STDOUT_CLOSED_EXIT_CODE, silence_stdout

        silence_stdout()
        code = STDOUT_CLOSED_EXIT_CODE
    except SystemExit as exc:
        # typer prints help and its own messages through a plain rich console, which ends a closed
        # pipe with exit code 1 after pointing stdout at the null device (fh-screen --help | head)
        if exc.code != 1 or stdout_was_null_device or not _stdout_is_null_device():
            raise
        from fh_screen.cli.common import STDOUT_CLOSED_EXIT_CODE

        code = STDOUT_CLOSED_EXIT_CODE
    except _click_exception_class() as exc:
        if type(exc).__name__ != "NoArgsIsHelpError":  # no arguments: the help is printed already
            print_error(exc.format_message(), first_line=False)
        code = exc.exit_code
    except typer.Abort:
        from typer import rich_utils

        rich_utils.rich_abort_error()
        code = 1
    sys.exit(code if isinstance(code, int) else 0)
