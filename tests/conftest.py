"""Shared fixtures: real OQMD slices from ../shared/data (skip with a reason when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The tests know the checkout layout (the package does not): the shared OQMD data lies beside it.
os.environ.setdefault("FH_SCREEN_OQMD_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data" / "oqmd"))
# Tests start from empty stores; tests/test_bootstrap.py turns the first-use fill back on.
os.environ.setdefault("FH_SCREEN_REFERENCE_DATA", "false")

from fh_screen.data import shared_data_dir


@pytest.fixture(scope="session")
def oqmd_dir() -> Path:
    """The shared OQMD folder; tests needing it skip when it is absent."""
    directory = shared_data_dir()
    if not (directory / "train.csv").is_file():
        pytest.skip(f"shared OQMD data not found at {directory} (set FH_SCREEN_OQMD_DIR)")
    return directory


@pytest.fixture(scope="session")
def oqmd_train_raw(oqmd_dir):
    """The raw shared training CSV as read by pandas (formula, target)."""
    import pandas as pd

    return pd.read_csv(oqmd_dir / "train.csv", keep_default_na=False, na_values=[""])


@pytest.fixture(scope="session")
def oqmd_slice_csv(oqmd_train_raw, tmp_path_factory) -> Path:
    """A 5,000-row real slice of train.csv written in the shared format."""
    path = tmp_path_factory.mktemp("oqmd") / "slice.csv"
    oqmd_train_raw.sample(n=5000, random_state=1).to_csv(path, index=False)
    return path


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder and a function that makes it truly read-only (even for root); skips if none can be made.

    A non-root user gets a folder without write permission; root (who writes through permissions)
    gets a tmpfs mounted there and remounted read-only, as a read-only share would be.
    """
    import subprocess

    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        yield folder, lambda: folder.chmod(0o555)
        folder.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("a read-only folder needs a non-root user, or root allowed to mount a tmpfs")

    def make_read_only() -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True, capture_output=True)

    try:
        yield folder, make_read_only
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
