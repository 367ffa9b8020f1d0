"""Fixtures for the store tests: a real OQMD slice, an isolated settings environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SLICE_ROWS = 2000


@pytest.fixture
def isolated_settings(tmp_path, monkeypatch) -> Path:
    """FH_SCREEN_* pointing at a fresh tmp data dir and a config file that does not exist."""
    data_dir = tmp_path / "data_dir"
    monkeypatch.setenv("FH_SCREEN_DATA_DIR", str(data_dir))
    monkeypatch.setenv("FH_SCREEN_CONFIG_FILE", os.devnull)
    monkeypatch.delenv("FH_SCREEN_MONGO_URI", raising=False)
    return data_dir


def fresh_machine(tmp_path: Path, monkeypatch, reference_data: bool) -> Path:
    """A new user's machine: empty HOME and data dir, no config file, no MongoDB; the first-use
    fill of the shipped OQMD table on or off. Returns the data dir."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FH_SCREEN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FH_SCREEN_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("FH_SCREEN_REFERENCE_DATA", "true" if reference_data else "false")
    monkeypatch.delenv("FH_SCREEN_MONGO_URI", raising=False)
    return tmp_path / "data"


@pytest.fixture(scope="session")
def train_slice_csv(oqmd_dir, tmp_path_factory) -> Path:
    """The first 2,000 rows of the shared train.csv, in the shared format."""
    path = tmp_path_factory.mktemp("store_slice") / "train_slice.csv"
    with open(oqmd_dir / "train.csv") as source, open(path, "w") as target:
        for i, line in enumerate(source):
            if i > SLICE_ROWS:
                break
            target.write(line)
    return path
