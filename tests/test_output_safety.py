"""Outputs never overwrite what a command reads or keeps, and a table is written together with its provenance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from store_fixtures import fresh_machine
from typer.testing import CliRunner

from fh_screen.cli import build_app

runner = CliRunner()


@pytest.fixture
def store_with_a_screen(tmp_path, monkeypatch) -> Path:
    """A small store file (no shipped table) holding one saved Li-O screen by the paper model."""
    fresh_machine(tmp_path, monkeypatch, reference_data=False)
    store = tmp_path / "s.sqlite"
    made = runner.invoke(build_app(), ["screen", "Li-O", "--max-atoms", "4", "--model", "paper", "--store", str(store)])
    assert made.exit_code == 0, made.output
    return store


def _run_id(store: Path) -> str:
    listing = runner.invoke(build_app(), ["runs", "--store", str(store), "--json", "-"])
    return json.loads(listing.stdout)[0]["run_id"]


def test_no_export_overwrites_the_store_or_the_systems_file(store_with_a_screen, tmp_path):
    """Every export path that names the store file (or bulk's systems file) is refused in one line before any work,
    and the file is left as it was (a bulk summary replaced a 130 MB store with 259 bytes of JSON, exit 0)."""
    store = store_with_a_screen
    before = store.read_bytes()
    s = str(store)
    run_id = _run_id(store)
    systems = tmp_path / "systems.txt"
    systems.write_text("Li-O\n")
    cases = [
        ["screen", "Li-O", "--max-atoms", "4", "--model", "paper", "--store", s, "--json", s],
        ["screen", "Li-O", "--max-atoms", "4", "--model", "paper", "--store", s, "--no-store", "--csv", s],
        ["bulk", "--elements", "Li,O", "--nelements", "2", "--max-atoms", "4", "--model", "paper", "--store", s, "--json", s],
        ["query", "--store", s, "--chemsys", "Li-O", "--csv", s],
        ["query", "--store", s, "--top", "5", "--json", s],
        ["query", "--store", s, "--run", run_id, "--json", s],
        ["runs", "--store", s, "--json", s],
        ["results", "--store", s, "--json", s],
    ]
    for args in cases:
        result = runner.invoke(build_app(), args)
        assert result.exit_code == 2, (args, result.output)
        assert result.output == f"error: output {s} is the store file: it would be overwritten (choose another path)\n", args
    assert store.read_bytes() == before
    kept = runner.invoke(build_app(), ["bulk", "--systems-file", str(systems), "--max-atoms", "4", "--model", "paper",
                                       "--store", s, "--json", str(systems)])
    assert kept.exit_code == 2 and "is the systems file" in kept.output and systems.read_text() == "Li-O\n"


def test_the_configured_store_is_kept_too(tmp_path, monkeypatch):
    """Without --store the configured store file is what an output must not name."""
    data = fresh_machine(tmp_path, monkeypatch, reference_data=False)
    made = runner.invoke(build_app(), ["screen", "Li-O", "--max-atoms", "4", "--model", "paper"])
    assert made.exit_code == 0, made.output
    from fh_screen.settings import FhScreenSettings

    configured = FhScreenSettings().store_path
    assert configured.is_file() and str(configured).startswith(str(data))
    before = configured.read_bytes()
    result = runner.invoke(build_app(), ["screen", "Li-O", "--max-atoms", "4", "--model", "paper", "--json", str(configured)])
    assert result.exit_code == 2 and "is the store file" in result.output
    assert configured.read_bytes() == before


def test_a_provenance_file_is_checked_as_an_output_before_any_work(store_with_a_screen, tmp_path):
    """``--csv a.csv --json a.csv.provenance.json`` wrote the table and then its provenance over the JSON; a folder
    where a provenance file goes failed only once the work was done (a whole sweep)."""
    s = str(store_with_a_screen)
    csv = tmp_path / "a.csv"
    clash = runner.invoke(build_app(), ["screen", "Li-O", "--max-atoms", "4", "--model", "paper", "--store", s,
                                        "--no-store", "--csv", str(csv), "--json", str(tmp_path / "a.csv.provenance.json")])
    assert clash.exit_code == 2 and "two outputs name the same file" in clash.output and not csv.exists()
    (tmp_path / "sweep.json.provenance.json").mkdir()
    folder = runner.invoke(build_app(), ["bulk", "--elements", "Li,Na,O", "--nelements", "2", "--max-atoms", "4",
                                         "--model", "paper", "--store", s, "--json", str(tmp_path / "sweep.json")])
    assert folder.exit_code == 2 and "output is a folder, not a file" in folder.output
    assert "screened" not in folder.output  # refused before the sweep


def test_a_table_and_its_provenance_are_written_together_or_not_at_all(store_with_a_screen, tmp_path, monkeypatch):
    """A full disk on the CSV left the new JSON beside the provenance of an earlier run (another model, another run
    id); now every file of one export is renamed into place only when all were written."""
    import pandas as pd

    s = str(store_with_a_screen)
    out = tmp_path / "out"
    out.mkdir()
    args = ["screen", "Li-O", "--max-atoms", "4", "--store", s, "--no-store", "--json", str(out / "a.json")]
    first = runner.invoke(build_app(), [*args, "--model", "paper"])
    assert first.exit_code == 0, first.output
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(files) == {"a.json", "a.json.provenance.json"}

    def full_disk(self, *a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", full_disk)
    second = runner.invoke(build_app(), [*args, "--model", "paper-ensemble", "--csv", str(out / "b.csv")])
    assert second.exit_code == 2 and f"cannot write {out / 'b.csv'}: No space left on device" in second.output
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files  # no new JSON, no temporary file left
