"""What a wheel of fh-screen holds: every shipped data file, and under 30 MB compressed."""

from __future__ import annotations

import fnmatch
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fh_screen"
WHEEL_LIMIT_BYTES = 30 * 1024 * 1024


def _package_data_globs() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return config["tool"]["setuptools"]["package-data"]["fh_screen"]


def _shipped_data_files() -> list[Path]:
    """The non-code files the package needs at run time (models, reference tables, indexes)."""
    folders = [PACKAGE / "reference_data", *(p for p in (PACKAGE / "pretrained").iterdir() if p.is_dir())]
    return sorted(p for folder in folders for p in folder.iterdir()
                  if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts)


def _in_wheel(path: Path, globs: list[str]) -> bool:
    relative = path.relative_to(PACKAGE).as_posix()
    return any(fnmatch.fnmatch(relative, pattern) for pattern in globs)


def test_every_shipped_data_file_is_declared_as_package_data():
    globs = _package_data_globs()
    missing = [str(p.relative_to(ROOT)) for p in _shipped_data_files() if not _in_wheel(p, globs)]
    assert not missing, f"not in pyproject's package-data, so absent from a wheel: {missing}"


def test_the_wheel_contents_compress_below_30_mb(tmp_path):
    """Deflate every file a wheel would hold (code + package data), as the wheel format does."""
    globs = _package_data_globs()
    files = [p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts]
    files += [p for p in PACKAGE.rglob("*") if p.is_file() and _in_wheel(p, globs)]
    archive = tmp_path / "contents.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(set(files)):
            zf.write(path, path.relative_to(ROOT).as_posix())
    size = archive.stat().st_size
    assert size < WHEEL_LIMIT_BYTES, f"wheel contents {size / 2**20:.1f} MB, limit 30 MB"
    if size < 1024 * 1024:
        pytest.fail("the archive lacks the shipped models")  # the test must see the weights to mean anything
