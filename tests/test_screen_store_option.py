"""`fh-screen SYSTEM --store FILE`: the same store file every other command takes, filled on first use."""

from __future__ import annotations

import json
import os

from typer.testing import CliRunner

from fh_screen.cli import build_app
from fh_screen.store import FhScreenStore

runner = CliRunner()


def test_screen_store_option_fills_saves_and_reads_like_the_configured_store(tmp_path, monkeypatch):
    monkeypatch.setenv("FH_SCREEN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FH_SCREEN_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("FH_SCREEN_REFERENCE_DATA", "true")  # the suite turns the shipped table off by default
    own = tmp_path / "own.sqlite"
    result = runner.invoke(build_app(), ["screen", "Li-Fe-O", "--model", "paper", "--max-atoms", "6", "--store", str(own),
                                         "--json", "-"])
    assert result.exit_code == 0, result.output
    rows = {r["formula"]: r for r in json.loads(result.stdout)}
    assert rows["Fe2O3"]["is_known"] and rows["Fe2O3"]["known_source"] == "oqmd"  # the shipped table, on first use
    run_id = result.stderr.split("saved run ")[1].split()[0]
    assert f"fh-screen query --run {run_id} --store {own}" in " ".join(result.stderr.split())
    assert not (tmp_path / "data").exists()  # the configured store was not touched
    with FhScreenStore.embedded(own, read_only=True) as store:
        assert store.get_screen(run_id).chemsys == "Fe-Li-O" and store.n_reference() > 1000
    listed = runner.invoke(build_app(), ["runs", "--store", str(own), "--json", "-"])
    assert [r["run_id"] for r in json.loads(listed.stdout)] == [run_id]
    # --no-store reads the file as it is and writes nothing; a missing file or a folder is one line
    again = runner.invoke(build_app(), ["screen", "Li-Fe-O", "--model", "paper", "--max-atoms", "6", "--store", str(own),
                                        "--no-store", "--json", "-"])
    assert again.exit_code == 0 and {r["formula"] for r in json.loads(again.stdout)} == set(rows)
    for bad, message in ((tmp_path / "absent.sqlite", "does not exist"), (tmp_path, "is a folder")):
        refused = runner.invoke(build_app(), ["screen", "Li-O", "--model", "paper", "--store", str(bad), "--no-store"])
        assert refused.exit_code == 2 and message in refused.output and "Traceback" not in refused.output
