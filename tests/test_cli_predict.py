"""`fh-screen predict` on the shipped model: table, CSV round trip, bad input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fh_screen.cli import build_app
from fh_screen.predictor import Predictor, available_models


@pytest.fixture(scope="module")
def runner():
    return CliRunner()


def invoke(runner, *args):
    return runner.invoke(build_app(), list(args))


def test_shipped_models_load_offline():
    assert {"paper", "paper-ensemble", "wide"} <= set(available_models())
    predictor = Predictor.from_name()
    assert predictor.has_uncertainty
    assert Predictor.from_name("paper").checkpoint.spec.architecture == "128x2+64x2+32x1+1x1"


def test_python_predict_returns_ev_per_atom_array():
    from fh_screen import predict

    values = predict(["LiFePO4", "Fe2O3"])
    assert isinstance(values, np.ndarray) and values.shape == (2,)
    assert np.all(values < 0)  # both are strongly bound oxides in OQMD (about −2.6 and −1.7 eV/atom)


def test_python_predict_names_the_bad_formula():
    from fh_screen import predict
    from fh_screen.composition import FormulaError

    with pytest.raises(FormulaError, match="'Xx'"):
        predict(["LiFePO4", "Xx2O"])


def test_predict_prints_a_table(runner):
    result = invoke(runner, "predict", "LiFePO4", "Fe2O3")
    assert result.exit_code == 0, result.output
    assert "LiFePO4" in result.output and "Fe2O3" in result.output and "eV/atom" in result.output


def test_csv_round_trip_keeps_columns_and_bad_rows(runner, tmp_path, oqmd_train_raw):
    sample = oqmd_train_raw.head(200)
    frame = pd.DataFrame({"id": range(203), "formula": [*sample["formula"], "Xx2O", "", "Og"], "note": "x"})
    source, target = tmp_path / "in.csv", tmp_path / "out.csv"
    frame.to_csv(source, index=False)
    result = invoke(runner, "predict", "--input", str(source), "--output", str(target))
    assert result.exit_code == 0, result.output
    out = pd.read_csv(target, keep_default_na=False, na_values=[""])
    assert list(out.columns[:3]) == ["id", "formula", "note"]
    assert {"dhf_pred_ev_per_atom", "dhf_std_ev_per_atom", "error"} <= set(out.columns)
    assert len(out) == 203
    assert out["error"].iloc[:200].isna().all()  # empty cell: no error
    assert "unknown element symbol 'Xx'" in out["error"].iloc[200]
    assert "empty formula" in out["error"].iloc[201]
    assert "outside the model's element set" in out["error"].iloc[202]
    assert out["dhf_pred_ev_per_atom"].iloc[200:].isna().all()
    expected = Predictor.from_name().predict_formulas(sample["formula"].tolist()).dhf_ev_per_atom
    np.testing.assert_allclose(out["dhf_pred_ev_per_atom"].iloc[:200], expected, rtol=1e-6)
    # A rough sanity check of the shipped model on these real training rows.
    assert np.mean(np.abs(out["dhf_pred_ev_per_atom"].iloc[:200] - sample["target"])) < 0.3


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["predict", "--input", "missing.csv"], "input file not found"),
        (["predict", "Xx2O", "--model", "nope"], "no shipped model named 'nope'"),
        (["predict"], "give formulas"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(runner, args, fragment):
    result = invoke(runner, *args)
    assert result.exit_code == 2
    assert fragment in result.output
    assert "Traceback" not in result.output


def test_bad_formula_on_the_command_line_is_shown_and_exits_2(runner):
    result = invoke(runner, "predict", "LiFePO4", "Xx2O")
    assert result.exit_code == 2
    assert "LiFePO4" in result.output and "unknown element symbol 'Xx'" in result.output
    assert "Traceback" not in result.output


def test_csv_without_formula_column(runner, tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("composition\nLiFePO4\n")
    result = invoke(runner, "predict", "--input", str(source))
    assert result.exit_code == 2 and "no 'formula' column" in result.output


def test_incompatible_model_file_is_one_line(runner, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"junk")
    result = invoke(runner, "predict", "LiFePO4", "--model", str(bad))
    assert result.exit_code == 2 and "cannot read model file" in result.output


def test_console_script_runs():
    completed = subprocess.run([sys.executable, "-m", "fh_screen.cli", "predict", "NaCl"], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert "NaCl" in completed.stdout


def test_public_names_are_functions_even_after_submodule_imports():
    import fh_screen.predictor  # noqa: F401 - importing submodules must not shadow the functions
    import fh_screen.screening  # noqa: F401
    from fh_screen import Predictor, predict, screen

    assert callable(predict) and callable(screen) and isinstance(Predictor, type)
