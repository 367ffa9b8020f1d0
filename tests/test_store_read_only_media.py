"""A store on a read-only share: every reader works, a writer is refused in one line naming why."""

from __future__ import annotations

import shutil
import sqlite3

import pytest
from typer.testing import CliRunner

from fh_screen.cli import build_app
from fh_screen.store.backend import SQLiteStore, StoreFileError

runner = CliRunner()


def _cli(*args: str):
    return runner.invoke(build_app(), list(args))


def test_a_store_in_a_read_only_folder_is_read_by_every_reader_and_refused_to_writers(
        read_only_folder, oqmd_slice_csv):
    folder, make_read_only = read_only_folder
    path = folder / "group.db"
    assert _cli("ingest", str(oqmd_slice_csv), "--source", "oqmd-slice", "--store", str(path)).exit_code == 0
    saved = _cli("screen", "Li-O", "--model", "paper", "--max-atoms", "4", "--store", str(path))
    assert saved.exit_code == 0, saved.output
    run_id = saved.output.split("saved run ")[1].split()[0]
    make_read_only()

    runs = _cli("runs", "--store", str(path))
    assert runs.exit_code == 0 and run_id in runs.output, runs.output
    shown = _cli("query", "--run", run_id, "--csv", "-", "--store", str(path))
    assert shown.exit_code == 0 and shown.output.startswith("rank,formula,"), shown.output
    assert _cli("query", "--chemsys", "Li-O", "--store", str(path)).exit_code == 0
    no_store = _cli("screen", "Li-O", "--model", "paper", "--max-atoms", "4", "--store", str(path), "--no-store")
    assert no_store.exit_code == 0, no_store.output
    assert _n_known(no_store.output) == _n_known(saved.output)  # the same known phases as before

    refused = _cli("screen", "Li-O", "--model", "paper", "--max-atoms", "4", "--store", str(path))
    assert refused.exit_code != 0
    assert refused.output.strip() == (f"error: store file {path} cannot be written: its folder is read-only "
                                      "(it can still be read: queries, and screens that do not save: --no-store, save=False)")
    new = _cli("ingest", str(oqmd_slice_csv), "--store", str(folder / "new.db"))
    assert new.exit_code != 0
    assert new.output.strip() == f"error: store file {folder / 'new.db'} cannot be created: its folder is read-only"
    assert sorted(p.name for p in folder.iterdir()) == ["group.db"]


def test_changes_left_in_a_wal_on_a_read_only_share_are_refused_not_ignored(read_only_folder, tmp_path):
    """A copy taken while a writer had the file open: reading it as immutable would miss those rows."""
    folder, make_read_only = read_only_folder
    source = tmp_path / "live.db"
    writer = SQLiteStore(source, "reference", key="formula")
    writer.connect()
    writer.update([{"formula": "Li2O", "dhf_ev_per_atom": -2.0}])
    wal = source.with_name("live.db-wal")
    assert wal.stat().st_size > 0  # the row is in the WAL, not yet in the file
    shutil.copy(source, folder / "group.db")
    shutil.copy(wal, folder / "group.db-wal")
    writer.close()
    make_read_only()

    reader = SQLiteStore(folder / "group.db", "reference", key="formula", read_only=True)
    with pytest.raises(StoreFileError, match=r"read-only folder with changes not yet written into it \(group.db-wal\)"):
        reader.connect()
    with pytest.raises(sqlite3.Error):  # what SQLite itself says there, which the check above replaces
        sqlite3.connect(f"file:{folder / 'group.db'}?mode=ro", uri=True).execute("SELECT 1 FROM reference").fetchall()


def _n_known(output: str) -> int:
    return int(output.split(" known phases in the hull")[0].split(";")[-1].strip().replace(",", ""))
