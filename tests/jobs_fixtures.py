"""Fixtures shared by the jobflow tests: isolated settings, real reference entries in an SQLite store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from jobflow import JobStore
from maggma.stores import MemoryStore

from fh_screen.store import ReferenceEntryDoc, SQLiteStore


@pytest.fixture
def fh_settings(tmp_path, monkeypatch) -> Path:
    """FH_SCREEN_* pointing at a fresh data dir, no config file, no MongoDB, no shipped-table fill."""
    data_dir = tmp_path / "fh_data"
    monkeypatch.setenv("FH_SCREEN_DATA_DIR", str(data_dir))
    monkeypatch.setenv("FH_SCREEN_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("FH_SCREEN_REFERENCE_DATA", "false")
    monkeypatch.delenv("FH_SCREEN_MONGO_URI", raising=False)
    return data_dir


def reference_store(path: Path, *systems: str) -> SQLiteStore:
    """An SQLite reference collection holding the shipped OQMD entries (real DFT values) of ``systems``."""
    from fh_screen.store.bootstrap import packaged_reference_frame

    store = SQLiteStore(path, "reference", key="formula")
    store.connect()
    for system in systems:
        frame = packaged_reference_frame(system)
        store.update([ReferenceEntryDoc.from_formula(f, v).model_dump()
                      for f, v in zip(frame["formula"], frame["dhf_ev_per_atom"])], key="formula")
    store.close()
    return store


def memory_job_store() -> JobStore:
    """An in-memory JobStore with the ``data`` store fh-screen jobs route large outputs to."""
    return JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})


@pytest.fixture(autouse=True, scope="module")
def in_a_scratch_folder(tmp_path_factory):
    """(autouse where imported) atomate2's relax writes final_atoms_object.xyz into the working folder: keep it out of the checkout."""
    import os

    here = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(here)
