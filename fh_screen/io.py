"""Files written whole or not at all, and strict JSON: the one io helper of fh-screen.

Every file fh-screen writes (screen tables, run documents, model cards, figures, checkpoints,
evaluation JSON) goes through :func:`atomic_write`: the content is written to a hidden temporary
file beside the target and renamed into place, so a failed write (full disk, an exception,
Ctrl-C) leaves neither a partial file nor ``.tmp`` debris. Imports nothing of fh-screen.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "atomic_write_text", "json_text", "read_json", "save_figure", "temporary_beside", "write_json"]


def atomic_write(path: str | Path, write: Callable[[Path], object], *, keep_suffix: bool = False) -> Path:
    """Write ``path`` through ``write(tmp)`` on a hidden temporary file renamed into place.

    The temporary file ends in ``.tmp`` (so that pandas infers no compression from it), or in
    ``path``'s own suffix with ``keep_suffix`` (for writers that take the format from it: matplotlib,
    ``np.savez``); it is removed whatever happens. ``OSError`` propagates.
    """
    path = Path(path)
    tmp = temporary_beside(path, keep_suffix=keep_suffix)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
    return path


def temporary_beside(path: str | Path, *, keep_suffix: bool = False) -> Path:
    """Create and return an empty hidden temporary file beside ``path`` (the umask's permissions),
    named as :func:`atomic_write` names it; the caller renames it into place or removes it."""
    path = Path(path)
    token = f"{os.getpid()}.{secrets.token_hex(4)}"
    tmp = path.with_name(f".{path.stem}.{token}.tmp{path.suffix}" if keep_suffix else f".{path.name}.{token}.tmp")
    with open(tmp, "x", encoding="utf-8"):
        pass
    return tmp


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def save_figure(figure, path: str | Path, **savefig_kwargs) -> Path:
    """Save a matplotlib ``figure`` to ``path`` atomically (the format from ``path``'s suffix)."""
    return atomic_write(path, lambda tmp: figure.savefig(tmp, **savefig_kwargs), keep_suffix=True)


def _finite(value):
    """``value`` with NaN/inf floats replaced by ``None`` (strict JSON)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    np = _loaded_numpy()
    if (isinstance(value, float) or (np is not None and isinstance(value, np.floating))) and not math.isfinite(float(value)):
        return None
    return value


def _loaded_numpy():
    """numpy if something has imported it, else None (then no value can be a numpy scalar): the
    command line's help writes no JSON and need not load it."""
    return sys.modules.get("numpy")


def _json_default(value):
    np = _loaded_numpy()
    if np is not None and isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def json_text(payload: Any, indent: int | None = 1) -> str:
    """Strict JSON of ``payload`` (NaN/inf become null, numpy scalars plain numbers), newline-terminated."""
    return json.dumps(_finite(payload), indent=indent, allow_nan=False, default=_json_default) + "\n"


def write_json(payload: dict, path: str | Path) -> Path:
    """Write ``payload`` as indented strict JSON atomically, creating the folder (no half-written file on failure)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, json_text(payload))


def read_json(path: str | Path) -> Any:
    """The JSON document in ``path``."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
