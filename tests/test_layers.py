"""The layers of docs/architecture.md hold: each package imports only what its table row allows.

Every import counts, lazy ones inside functions included (read from the source, nothing runs).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fh_screen"

#: docs/architecture.md, "may import" (and each package's __init__ docstring)
ALLOWED: dict[str, set[str]] = {
    "errors": set(), "version": set(), "run_ids": set(), "io": set(), "defaults": set(),
    "settings": {"errors"},
    "chem": {"errors"},
    "data": {"chem", "errors", "settings"},
    "models": {"chem", "data", "io", "errors", "settings"},
    "screening": {"models", "chem", "errors", "run_ids", "defaults"},
    "store": {"screening", "models", "chem", "data", "settings", "errors", "run_ids", "version"},
    "exports": {"screening", "version"},
    "plotting": {"screening", "errors", "io"},
    "service": {"store", "screening", "models", "chem", "data", "settings", "errors"},
    "study": {"store", "screening", "models", "chem", "data", "io", "errors"},
    "sweep": {"service", "store", "screening", "models", "chem", "errors"},
    "jobs": {"sweep", "service", "store", "screening", "models", "chem", "data", "settings", "errors", "version"},
}
OUTER = {"study", "cli", "jobs", "plotting"}
CORE = {"chem", "models", "screening", "store"}


def _part(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def _imported_parts(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "fh_screen" and len(parts) > 1 and ((PACKAGE / parts[1]).is_dir() or (PACKAGE / f"{parts[1]}.py").is_file()):
                found.add(parts[1])
    return found


def test_every_package_imports_only_the_layers_below_it():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        part = _part(path)
        if part in ALLOWED:
            extra = _imported_parts(path) - ALLOWED[part] - {part}
            wrong += [f"{path.relative_to(PACKAGE)} imports fh_screen.{name}" for name in sorted(extra)]
    assert not wrong, "\n".join(wrong)


def test_the_core_never_imports_the_outer_rings():
    for path in PACKAGE.rglob("*.py"):
        if _part(path) in CORE:
            assert not (_imported_parts(path) & OUTER), path
