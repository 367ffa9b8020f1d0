"""``fh-screen screen`` / ``fh-screen Li-Fe-O`` end to end, with a real store on disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

from fh_screen.cli import build_app
from fh_screen.data import shared_data_dir
from fh_screen.screening.probability import DEFAULT_REFINE_TOP
from fh_screen.screening import RESULT_COLUMNS

runner = CliRunner()


@pytest.fixture()
def data_dir(tmp_path, monkeypatch):
    path = tmp_path / "fh_data"
    monkeypatch.setenv("FH_SCREEN_DATA_DIR", str(path))
    monkeypatch.setenv("FH_SCREEN_CONFIG_FILE", os.devnull)
    return path


@pytest.fixture(scope="module")
def li_fe_o_csv(tmp_path_factory):
    """The Li-Fe-O entries of the shared OQMD training file, as a small CSV in its format."""
    path = shared_data_dir() / "train.csv"
    if not path.is_file():
        pytest.skip(f"OQMD training data not found at {path}")
    frame = pd.read_csv(path)
    keep = frame["formula"].str.fullmatch(r"(?:(?:Li|Fe|O)\d*)+")
    out = tmp_path_factory.mktemp("oqmd") / "li_fe_o.csv"
    frame[keep].to_csv(out, index=False)
    return out


def invoke(*args):
    return runner.invoke(build_app(), list(args))


def test_screen_with_store_writes_exact_json_and_csv_and_saves(data_dir, li_fe_o_csv, tmp_path):
    from fh_screen.store import FhScreenStore
    from fh_screen.store.ingest import ingest_file

    with FhScreenStore.from_settings() as store:
        ingest_file(store.reference, li_fe_o_csv)
        n_reference = store.n_reference()
    assert n_reference > 10
    json_path, csv_path = tmp_path / "out.json", tmp_path / "out.csv"
    result = invoke("screen", "Li-Fe-O", "--max-atoms", "10", "--top", "5", "--json", str(json_path), "--csv", str(csv_path))
    assert result.exit_code == 0, result.output
    assert "Fe-Li-O" in result.output and "ingest" not in result.output
    assert "shipped OQMD table" not in result.output  # the caveat is the shipped table's; these are the user's
    records = json.loads(json_path.read_text())
    columns = list(records[0])
    # every column of the ranked table, plus the model of each row
    assert set(RESULT_COLUMNS) | {"dhf_std_ev_per_atom", "p_stable", "is_known", "stability_score", "selected",
                                  "refined", "charge_balanced", "dhf_ev_per_atom", "model"} <= set(columns)
    assert all(list(r) == columns for r in records)
    models = {r["model"] for r in records}
    assert len(models) == 2  # cascade: the default's own rows and the prefilter's, marked apart
    assert all(r["model"].startswith("attention-ensemble@") for r in records if r["refined"])
    assert all(r["model"].startswith("paper@") for r in records if not r["refined"])
    assert [r["rank"] for r in records] == list(range(1, len(records) + 1))
    by_formula = {r["formula"]: r for r in records}
    assert isinstance(by_formula["Fe2O3"]["known_dhf_ev_per_atom"], float)  # DFT value from the store
    assert any(r["known_dhf_ev_per_atom"] is None for r in records)
    csv = pd.read_csv(csv_path)
    assert list(csv.columns) == columns and len(csv) == len(records)
    # each file's provenance beside it (the rows stay bare rows): the run, the model, the options, the known sources
    run_id = result.output.split("saved run ")[1].split()[0]
    for path in (json_path, csv_path):
        provenance = json.loads((tmp_path / f"{path.name}.provenance.json").read_text())
        assert provenance["run_id"] == run_id and provenance["chemsys"] == "Fe-Li-O"
        assert provenance["model"].startswith("attention-ensemble@") and provenance["prefilter"].startswith("paper@")
        assert provenance["options"]["max_atoms"] == 10 and provenance["known_sources"] == ["user"]
        assert "attribution" not in provenance  # the user's entries; OQMD's is owed for the shipped table only
    assert list(csv["model"]) == [r["model"] for r in records]
    n_known = sum(r["known_dhf_ev_per_atom"] is not None for r in records)
    assert len(records) - n_known > DEFAULT_REFINE_TOP  # so the default runs as a cascade here
    with FhScreenStore.from_settings() as store:
        # only the default's own predictions (known phases, the prefilter's best and the P(stable)
        # head: the refined rows) are stored as its
        n_refined = sum(r["refined"] for r in records)
        assert n_refined > n_known + DEFAULT_REFINE_TOP and store.n_predictions() == n_refined


def test_fresh_machine_prints_ingest_hint_and_no_store_writes_nothing(data_dir):
    result = invoke("screen", "Fe-O", "--max-atoms", "6", "--no-store")
    assert result.exit_code == 0, result.output
    assert "fh-screen ingest PATH" in result.output
    assert not data_dir.exists()
    # the run id is shown, and said not to be stored (fh-screen query --run would not find it)
    assert "(not saved: --no-store)" in result.output and "saved run" not in result.output


def test_an_export_s_provenance_says_whether_its_run_was_saved(tmp_path, data_dir):
    import json

    for saved in (False, True):
        path = tmp_path / f"{saved}.csv"
        args = ["screen", "Li-O", "--max-atoms", "4", "--model", "paper", "--csv", str(path)]
        result = invoke(*args, *([] if saved else ["--no-store"]))
        assert result.exit_code == 0, result.output
        assert json.loads((tmp_path / f"{saved}.csv.provenance.json").read_text())["saved"] is saved


@pytest.mark.parametrize("system", ["Li-Fe-O", "Li-O"])
def test_plot_draws_a_png(data_dir, tmp_path, system):
    png = tmp_path / "pd.png"
    result = invoke("screen", system, "--max-atoms", "6", "--no-store", "--plot", str(png), "--top", "3")
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["Li-Xx-O"], "unknown element 'Xx'"),
        (["Li"], "at least two elements"),
        (["Li-Li-O"], "duplicate element"),
        (["Li-Am-O"], "outside the model"),
        (["Li--O"], "malformed"),
        (["Li,O"], "malformed"),
        (["Li-O", "--max-atoms", "0"], "--max-atoms must be an integer from 2 to 200, got 0"),
        (["Li-O", "--max-atoms", "100000"], "--max-atoms"),
        (["Li-O", "--max-per-element", "-3"], "--max-per-element must be a positive integer, got -3"),
        (["Li-O", "--max-candidates", "0"], "--max-candidates must be a positive integer, got 0"),
        (["Li-O", "--tolerance", "5"], "--tolerance must be between 0 and 1 eV/atom"),
        (["Li-O", "--select-p-min", "2"], "--select-p-min must be a probability"),
        (["Li-O", "--dft-budget", "0"], "--dft-budget must be a positive integer (calculations), got 0"),
        (["Li-O", "--top", "-1"], "--top"),
        (["Li-Fe-P-O-Mn-Co-Ni"], "--force"),
        (["Li-Fe-P-O-Mn", "--max-atoms", "4", "--plot", "x.png"], "binary, ternary and quaternary"),
        (["Li-Fe-O", "--plot", "x.pdf"], ".png"),
        (["Li-O", "--json", "/no/such/folder/x.json"], "output folder does not exist"),
        (["Li-O", "--model", "no-such-model"], "no model named"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(data_dir, args, fragment):
    result = invoke("screen", *args, "--no-store")
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], result.output


def test_console_script_routes_a_bare_system_to_screen(tmp_path):
    env = dict(os.environ, FH_SCREEN_DATA_DIR=str(tmp_path / "d"), FH_SCREEN_CONFIG_FILE=os.devnull)
    code = "from fh_screen.cli import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", code, "Li-O", "--max-atoms", "6", "--top", "3", "--no-store"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "Li-O: top 3 of" in done.stdout
    bad = subprocess.run([sys.executable, "-c", code, "Li-Xx-O"], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "Xx" in bad.stderr
