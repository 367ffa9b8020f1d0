"""A stored screen exports exactly as the screen did: the same columns, order and values."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest
from typer.testing import CliRunner

from fh_screen.cli import build_app

runner = CliRunner()


@pytest.fixture
def settings_home(tmp_path, monkeypatch):
    monkeypatch.setenv("FH_SCREEN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FH_SCREEN_CONFIG_FILE", os.devnull)
    return tmp_path


def test_query_run_csv_equals_the_screen_s_own_csv(settings_home):
    """`fh-screen SYSTEM --csv` and `fh-screen query --run ID --csv`: one table, the `model` of each row included."""
    screened = runner.invoke(build_app(), ["screen", "Li-Fe-O", "--max-atoms", "8", "--refine-top", "20",
                                           "--csv", str(settings_home / "screen.csv")])
    assert screened.exit_code == 0, screened.output
    run_id = screened.output.split("saved run ")[1].split()[0]
    stored = runner.invoke(build_app(), ["query", "--run", run_id, "--csv", str(settings_home / "stored.csv")])
    assert stored.exit_code == 0, stored.output
    own = pd.read_csv(settings_home / "screen.csv")
    again = pd.read_csv(settings_home / "stored.csv")
    assert list(again.columns) == list(own.columns) and list(own.columns)[-1] == "model"
    assert len(again) == len(own)  # a small system: the document keeps every candidate
    pd.testing.assert_frame_equal(again, own)
    assert set(own["model"]) == {f"attention-ensemble@{own['model'][own['refined']].iloc[0].split('@')[1]}",
                                 own["model"][~own["refined"]].iloc[0]}
    # both files carry the same provenance beside them: the run, the model and its weights, the options
    first, second = (json.loads((settings_home / f"{name}.csv.provenance.json").read_text()) for name in ("screen", "stored"))
    for key in ("run_id", "chemsys", "model", "model_weights_sha256", "prefilter", "stability_model",
                "stability_head_model", "options", "n_candidates", "known_sources", "notes"):
        assert first[key] == second[key], key
    assert first.get("attribution") == second.get("attribution")
    assert first["run_id"] == run_id and first["options"]["refine_top"] == 20
    assert first["prefilter"].startswith("paper@") and first["stability_model"].startswith("stability@")
    assert first["stability_head_model"].startswith("stability@") and first["notes"]  # e.g. where known phases come from
    # the stored document as JSON carries the same provenance beside it
    as_json = runner.invoke(build_app(), ["query", "--run", run_id, "--json", str(settings_home / "stored.json")])
    assert as_json.exit_code == 0 and "its provenance beside it" in as_json.output, as_json.output
    assert json.loads((settings_home / "stored.json.provenance.json").read_text()) == second
    assert json.loads((settings_home / "stored.json").read_text())["stability_model"] == first["stability_model"]
    # --run shows the screen as saved: a filter beside it is refused, not ignored
    filtered = runner.invoke(build_app(), ["query", "--run", run_id, "--model", "paper"])
    assert filtered.exit_code == 2 and "--run shows one stored screen as it was saved" in filtered.output


def test_two_outputs_naming_one_file_are_refused_before_any_work(settings_home):
    same = settings_home / "same.out"
    result = runner.invoke(build_app(), ["screen", "Li-O", "--max-atoms", "4", "--no-store", "--json", str(same),
                                         "--csv", str(settings_home / "." / "same.out")])
    assert result.exit_code == 2 and "two outputs name the same file" in result.output and not same.exists()
