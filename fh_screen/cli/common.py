"""Shared CLI helpers: one-line errors with exit code 2, rich consoles, safe output files."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NoReturn, TypeVar

from fh_screen.errors import FhScreenError, one_line
from fh_screen import io

F = TypeVar("F", bound=Callable)

__all__ = [
    "STDOUT", "OutputError", "atomic_write", "check_output_path", "check_outputs", "console", "error_console", "fail",
    "is_stdout", "one_line_errors", "print_error", "screen_options_from_flags", "status_console", "write_csv",
    "write_json_file", "write_text_output",
]

#: The command-line flag of each screen option the screen, bulk and evaluate commands take.
SCREEN_OPTION_FLAGS = {
    "max_atoms": "--max-atoms", "max_per_element": "--max-per-element", "max_candidates": "--max-candidates",
    "e_hull_tolerance_ev_per_atom": "--tolerance", "select_p_min": "--select-p-min", "dft_budget": "--dft-budget",
    "refine_top": "--refine-top", "prefilter_model": "--prefilter",
}

#: An output path of ``-`` (``--json -``, ``--csv -``) writes the data to stdout; status lines then go to stderr.
STDOUT = "-"


class OutputError(FhScreenError):
    """An output file that cannot be written (missing or read-only folder, a folder, a full disk)."""


def console():
    """A rich console on stdout (160 columns when piped, so tables are not cut to 80); a reader that
    closes the pipe ends the command as :func:`stdout_closed` says."""
    import sys

    return _console_class()(width=None if sys.stdout.isatty() else 160)


def error_console():
    """A rich console on stderr."""
    return _console_class()(stderr=True)


def _console_class():
    """rich's ``Console`` whose closed pipe ends the command quietly with :data:`STDOUT_CLOSED_EXIT_CODE`
    (rich's own exits with 1)."""
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            stdout_closed()

    return _Console



def print_error(message: str, *, first_line: bool = True) -> None:
    """Print ``error: message`` on one line to stderr (``first_line=False``: every line joined)."""
    from rich.markup import escape

    error_console().print(f"[bold red]error:[/] {escape(one_line(message, first_line=first_line))}", highlight=False,
                          soft_wrap=True)


def fail(message: str, code: int = 2):
    """Print ``error: message`` on one line to stderr and exit with ``code``."""
    import typer

    print_error(message)
    raise typer.Exit(code)


def check_output_path(path: str | Path) -> Path:
    """``path`` if a file can be written there, else :class:`OutputError` with a one-line reason.

    Checked up front, before any work: the folder exists, is a folder and is writable, and
    ``path`` is not itself a folder.
    """
    path = Path(path)
    folder = path.parent
    if "\x00" in str(path):
        raise OutputError(f"output path contains a NUL byte: {str(path)!r}")
    if str(path) in ("", ".") or path.name in ("", ".", ".."):
        raise OutputError(f"not a file name: {path}")
    if path.is_dir():
        raise OutputError(f"output is a folder, not a file: {path}")
    if not folder.exists():
        raise OutputError(f"output folder does not exist: {folder}")
    if not folder.is_dir():
        raise OutputError(f"not a folder: {folder}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"output folder is not writable: {folder}")
    if path.exists() and not path.is_file():
        raise OutputError(f"output exists and is not a regular file: {path} (outputs are written whole and "
                          f"renamed into place; '-' prints on stdout)")
    return path


def is_stdout(path: str | Path | None) -> bool:
    """Whether an output option names stdout (``-``)."""
    return path is not None and str(path) == STDOUT


def check_outputs(*paths: str | Path | None, provenance_of: Sequence[str | Path | None] = (),
                  inputs: Mapping[str, str | Path | None] | None = None) -> None:
    """:func:`check_output_path` for every output given (``None``: not asked for), before any work.

    ``-`` is stdout and needs no check; at most one output may be ``-``, and no two name one file.
    ``provenance_of``: the outputs that get ``<file>.provenance.json`` beside them, checked as
    outputs too (a folder there, or another output of that name). ``inputs``: files the command reads or
    keeps, by what they are (``{"the store file": path}``): an output naming one is refused, as it
    would overwrite it (a store replaced by a JSON summary).
    """
    given = [path for path in paths if path is not None]
    if sum(is_stdout(path) for path in given) > 1:
        raise OutputError("only one output can be '-' (stdout)")
    files = [Path(path).expanduser() for path in given if not is_stdout(path)]
    beside = [Path(path).expanduser() for path in provenance_of if path is not None and not is_stdout(path)]
    if beside:
        from fh_screen.exports import provenance_path

        files += [provenance_path(path) for path in beside]
    for path in files:
        check_output_path(path)
    resolved = [path.resolve() for path in files]
    for i, path in enumerate(resolved):
        if path in resolved[:i]:
            raise OutputError(f"two outputs name the same file: {files[i]}")
    for what, source in (inputs or {}).items():
        if source is None or is_stdout(source):
            continue
        kept = Path(source).expanduser().resolve()
        for path, full in zip(files, resolved):
            if full == kept:
                raise OutputError(f"output {path} is {what}: it would be overwritten (choose another path)")


def store_file_in_use(store_file: str | Path | None) -> Path | None:
    """The embedded store file a command reads or writes: ``store_file`` (``--store``), else the configured
    one; None when the configured store is MongoDB (no file an output could overwrite)."""
    if store_file is not None:
        return Path(store_file)
    from fh_screen.settings import FhScreenSettings

    settings = FhScreenSettings()
    return None if settings.mongo_uri else Path(settings.store_path)


class OutputBatch:
    """Output files written as one set: each on a hidden temporary file beside it, all renamed into
    place when the ``with`` block ends without an error; an error (a full disk on the third file,
    Ctrl-C) removes every temporary file and leaves each output as it was, so a table never stands
    beside the provenance of another run. An output of ``-`` is printed on stdout at once.
    """

    def __init__(self) -> None:
        self._staged: list[tuple[Path, Path]] = []

    def __enter__(self) -> OutputBatch:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        try:
            if exc_type is None:
                for temporary, path in self._staged:
                    try:
                        os.replace(temporary, path)
                    except OSError as error:
                        raise OutputError(f"cannot write {path}: {error.strerror or error}") from None
        finally:
            for temporary, _ in self._staged:
                temporary.unlink(missing_ok=True)
            self._staged.clear()

    def text(self, text: str, path: str | Path) -> None:
        """``text`` (UTF-8) to ``path``, or on stdout for ``-``."""
        if is_stdout(path):
            import sys

            sys.stdout.write(text)
            sys.stdout.flush()
            return
        self._stage(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))

    def json(self, payload, path: str | Path) -> None:
        """``payload`` as strict JSON (:func:`fh_screen.io.json_text`)."""
        self.text(io.json_text(payload), path)

    def csv(self, frame, path: str | Path, **to_csv_kwargs) -> None:
        """``frame`` as CSV, as :func:`write_csv` writes it."""
        options = _csv_options(frame, to_csv_kwargs)
        if is_stdout(path):
            import sys

            frame.to_csv(sys.stdout, **options)
            sys.stdout.flush()
            return
        self._stage(path, lambda temporary: frame.to_csv(temporary, **options))

    def _stage(self, path: str | Path, write: Callable[[Path], object]) -> None:
        path = check_output_path(Path(path).expanduser())
        try:
            temporary = io.temporary_beside(path)  # named as atomic_write names it (.tmp: no compression inferred)
            self._staged.append((temporary, path))
            write(temporary)
        except OSError as error:
            raise OutputError(f"cannot write {path}: {error.strerror or error}") from None


def screen_options_from_flags(**fields):
    """:class:`~fh_screen.screening.ScreenOptions` from a command's flags, checked as a screen checks them
    (limits, the enumeration's bounds) before anything heavy loads; a refused value fails in one line
    that names the flag (``--max-candidates must be a positive integer, got 0``), not the Python field."""
    from fh_screen.chem.candidates import count_candidates
    from fh_screen.screening import ScreenOptions

    try:
        options = ScreenOptions(**fields)
        count_candidates(2, options.max_atoms, options.max_per_element)
    except FhScreenError as exc:
        fail(_in_flag_words(one_line(exc, first_line=True)))
    return options


def _in_flag_words(message: str) -> str:
    """A screen option's message with the option's Python name replaced by its flag."""
    for field, flag in SCREEN_OPTION_FLAGS.items():
        for prefix in (f"screen option {field}: ", f"{field}: ", f"{field} "):
            if message.startswith(prefix):
                rest = message[len(prefix):].replace(", or 0 or None", ", or 0").replace(" or None", "")
                return f"{flag}: {rest}" if prefix.endswith(": ") else f"{flag} {rest}"
    return message


def status_console(*outputs: str | Path | None):
    """The console for status lines ("wrote …", notes): stderr when one of ``outputs`` is stdout, else stdout."""
    return error_console() if any(is_stdout(path) for path in outputs) else console()


def write_text_output(text: str, path: str | Path) -> None:
    """``text`` printed on stdout when ``path`` is ``-``, else written to ``path`` through :func:`atomic_write`."""
    if is_stdout(path):
        import sys

        sys.stdout.write(text)
        sys.stdout.flush()
        return
    atomic_write(Path(path).expanduser(), lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """Write ``path`` through ``write(tmp)`` on a hidden temporary file renamed into place.

    The temporary file sits beside ``path`` and is removed whatever happens (full disk, an
    exception, Ctrl-C), so a failed write leaves neither a partial file nor ``.tmp`` debris.
    Raises :class:`OutputError` (one line) for an unusable path or a failed write.
    """
    path = check_output_path(path)
    try:
        io.atomic_write(path, write)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None


def write_json_file(payload, path: str | Path) -> None:
    """``payload`` as strict JSON (:func:`fh_screen.io.json_text`) through :func:`write_text_output` (``-``: stdout)."""
    write_text_output(io.json_text(payload), path)


def write_csv(frame, path: str | Path, **to_csv_kwargs) -> None:
    """``frame.to_csv`` through :func:`atomic_write` (``-``: on stdout), quoting text cells when any holds a CR.

    Python's csv writer quotes a field holding ``\n`` but not one holding a lone ``\r``, which
    readers then take for a line break; such tables are written with every text cell quoted.
    """
    options = _csv_options(frame, to_csv_kwargs)
    if is_stdout(path):
        import sys

        frame.to_csv(sys.stdout, **options)
        sys.stdout.flush()
        return
    atomic_write(Path(path).expanduser(), lambda tmp: frame.to_csv(tmp, **options))


def _csv_options(frame, to_csv_kwargs: dict) -> dict:
    """``to_csv`` options: no index, and every text cell quoted when any holds a lone CR."""
    import csv

    options = {"index": False, **to_csv_kwargs}
    text_columns = frame.select_dtypes(include=["object", "string"]).columns
    if any(frame[c].map(lambda v: isinstance(v, str) and "\r" in v).any() for c in text_columns):
        options.setdefault("quoting", csv.QUOTE_NONNUMERIC)
    return options


#: exit code of a command whose standard output was closed by its reader (128 + SIGPIPE, as a shell
#: reports ``yes | head``)
STDOUT_CLOSED_EXIT_CODE = 141


def silence_stdout() -> None:
    """Point standard output at the null device once its reader has gone, so that what is still
    buffered does not fail again when the interpreter flushes at exit."""
    import os
    import sys

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # pragma: no cover - a stdout without a file descriptor
        pass


def stdout_closed() -> NoReturn:
    """End the command quietly because its reader closed standard output (``fh-screen ... | head``):
    no message (the reader wanted no more), exit code :data:`STDOUT_CLOSED_EXIT_CODE`."""
    import typer

    silence_stdout()
    raise typer.Exit(STDOUT_CLOSED_EXIT_CODE)


def one_line_errors(function: F) -> F:
    """Turn fh-screen's user-facing errors (and OS errors) into one line and exit code 2.

    Library warnings (torch, pymatgen, pandas) are silenced for the command: the CLI reports
    through its own messages and the ``fh_screen`` loggers.
    """

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        import warnings

        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return function(*args, **kwargs)
            except FhScreenError as exc:
                fail(one_line(exc, first_line=True))
            except BrokenPipeError:  # the reader went away (| head): stop quietly, as Unix tools do
                stdout_closed()
            except OSError as exc:
                where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
                fail(f"{exc.strerror or exc}{where}")

    return wrapper  # type: ignore[return-value]
