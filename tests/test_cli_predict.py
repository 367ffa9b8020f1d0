"""`fh-screen predict` on the shipped model: table, CSV round trip, bad input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fh_screen.cli import build_app
from fh_screen.models.predictor import Predictor, available_models


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
    from fh_screen.chem.formula import FormulaError

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
    # every row is written; the 3 that could not be predicted give exit 2 and one line, as in the table
    assert result.exit_code == 2, result.output
    assert result.output.strip().endswith(f"error: 3 of 203 formulas could not be predicted (see the error column of {target})")
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


def test_a_file_predicted_again_by_a_model_without_sigma_keeps_no_earlier_sigma(runner, tmp_path, oqmd_train_raw):
    """The σ column of an earlier model's predictions must not stand beside another model's values."""
    source, first, second = tmp_path / "in.csv", tmp_path / "first.csv", tmp_path / "second.csv"
    pd.DataFrame({"formula": oqmd_train_raw["formula"].head(5), "id": range(5)}).to_csv(source, index=False)
    assert invoke(runner, "predict", "--input", str(source), "--output", str(first)).exit_code == 0
    assert pd.read_csv(first)["dhf_std_ev_per_atom"].notna().all()  # the default ensemble gives σ
    result = invoke(runner, "predict", "--input", str(first), "--output", str(second), "--model", "paper")
    assert result.exit_code == 0, result.output
    out = pd.read_csv(second)
    assert set(out["model"]) == {"paper@1"} and out["dhf_std_ev_per_atom"].isna().all()
    expected = Predictor.from_name("paper").predict_formulas(out["formula"].tolist()).dhf_ev_per_atom
    np.testing.assert_allclose(out["dhf_pred_ev_per_atom"], expected, rtol=1e-6)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["predict", "--input", "missing.csv"], "input file not found"),
        (["predict", "Xx2O", "--model", "nope"], "no model named 'nope'"),
        (["predict", "LiO2", "--model", "paper@99"], "model 'paper' is version 1, not '99'"),
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


def test_the_exit_code_is_the_same_for_every_output_form(runner, tmp_path):
    """`predict Xx2O NaCl` exited 2 with the table but 0 with --output - or --output FILE (and with --input): a
    formula that cannot be predicted now gives exit 2 and one error line in every form, after every row is out."""
    source = tmp_path / "in.csv"
    source.write_text("formula\nXx2O\nNaCl\n")
    target = tmp_path / "o.csv"
    forms = {"table": ["Xx2O", "NaCl"], "stdout": ["Xx2O", "NaCl", "--output", "-"],
             "file": ["Xx2O", "NaCl", "--output", str(target)], "input table": ["--input", str(source)],
             "input stdout": ["--input", str(source), "--output", "-"],
             "input file": ["--input", str(source), "--output", str(target)]}
    for form, args in forms.items():
        target.unlink(missing_ok=True)
        result = invoke(runner, "predict", "--model", "paper", *args)
        assert result.exit_code == 2, (form, result.output)
        assert result.output.strip().splitlines()[-1] == "error: unknown element symbol 'Xx' in formula 'Xx2O'", form
        assert "Traceback" not in result.output
        if "file" in form:  # the good row is written all the same
            out = pd.read_csv(target, keep_default_na=False, na_values=[""])
            assert out["formula"].tolist() == ["Xx2O", "NaCl"] and np.isfinite(out["dhf_pred_ev_per_atom"][1])
            assert "unknown element symbol 'Xx'" in out["error"][0] and pd.isna(out["error"][1])
        elif "stdout" in form:
            assert "NaCl,-" in result.stdout and result.stdout.startswith("formula,")
    for args in (["NaCl"], ["NaCl", "--output", "-"], ["NaCl", "--output", str(target)]):
        assert invoke(runner, "predict", "--model", "paper", *args).exit_code == 0


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


def test_a_model_folder_holding_model_pt_is_a_model_in_every_door(runner, tmp_path):
    """train and finetune write <folder>/model.pt: --model <folder> used to say 'model file not found: <folder>'."""
    import shutil

    from fh_screen.models.checkpoint import ModelError
    from fh_screen.models.predictor import check_model_reference, load_predictor, predict

    folder = tmp_path / "mine"
    shutil.copytree(Predictor.from_name("paper").path.parent, folder)
    expected = predict(["LiFePO4"], model="paper")[0]
    result = invoke(runner, "predict", "LiFePO4", "--model", str(folder), "--output", "-")
    assert result.exit_code == 0, result.output
    assert pd.read_csv(__import__("io").StringIO(result.output))["dhf_pred_ev_per_atom"].iloc[0] == pytest.approx(expected, abs=1e-3)
    check_model_reference(folder)
    assert Predictor.from_name(folder).path == folder / "model.pt"
    assert load_predictor(str(folder)).weights_sha256 == Predictor.from_name("paper").weights_sha256
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke(runner, "predict", "LiFePO4", "--model", str(empty))
    assert result.exit_code == 2 and result.output.strip() == f"error: model folder {empty} holds no model.pt: give a " \
                                                              f"model file, or the folder train or finetune wrote"
    for door in (check_model_reference, Predictor.from_name, load_predictor):
        with pytest.raises(ModelError, match="holds no model.pt"):
            door(empty)


def test_console_script_runs():
    completed = subprocess.run([sys.executable, "-m", "fh_screen.cli", "predict", "NaCl"], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert "NaCl" in completed.stdout


def test_a_reader_that_closes_the_pipe_ends_the_command_quietly(tmp_path, oqmd_train_raw):
    """``fh-screen predict --output - | head -1``: no ``error: Broken pipe`` and no traceback, exit code 141
    (128 + SIGPIPE, what a shell reports for ``yes | head``), as Unix tools end."""
    source = tmp_path / "in.csv"
    oqmd_train_raw[["formula"]].head(5000).to_csv(source, index=False)  # about 4× a pipe's 64 KiB buffer as CSV
    process = subprocess.Popen([sys.executable, "-m", "fh_screen.cli", "predict", "--input", str(source), "--output",
                                "-", "--model", "paper"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = process.stdout.readline()
    process.stdout.close()  # the reader is gone
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141, stderr
    assert first.startswith(b"formula,") and stderr == "", stderr
    # a table on the terminal's stdout (rich) ends the same way when its reader is already gone
    table = subprocess.Popen([sys.executable, "-m", "fh_screen.cli", "predict", "--input", str(source), "--model", "paper"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    table.stdout.close()
    stderr = table.stderr.read().decode()
    assert table.wait(timeout=120) == 141 and stderr == "", stderr


def test_help_to_a_closed_pipe_ends_quietly_and_help_to_the_null_device_succeeds():
    """typer prints help through its own rich console, which exits 1 on a closed pipe
    (``fh-screen --help | true``); fh-screen ends it as every other closed pipe: 141, nothing on stderr."""
    process = subprocess.Popen([sys.executable, "-m", "fh_screen.cli", "--help"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141 and stderr == "", stderr
    to_null = subprocess.run([sys.executable, "-m", "fh_screen.cli", "screen", "--help"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, timeout=120)
    assert to_null.returncode == 0 and to_null.stderr == "", to_null.stderr


def test_public_names_are_functions_even_after_submodule_imports():
    import fh_screen.models.predictor  # noqa: F401 - importing submodules must not shadow the functions
    import fh_screen.screening  # noqa: F401
    from fh_screen import Predictor, predict, screen

    assert callable(predict) and callable(screen) and isinstance(Predictor, type)


@pytest.mark.parametrize(
    ("formula", "fragment"),
    [("Fe1e400", "exponent"), ("Fe1e400O", "exponent"), ("Fe" + "9" * 30 + "O", "above the 1,000,000 limit"),
     ("Fe0O", "zero amount"), ("Fe0.0000001O", "below the 1e-06 resolution"), ("Fe.5O", "ambiguous '.'")],
)
def test_formerly_silent_formulas_are_error_rows_and_exit_2(runner, formula, fragment):
    result = invoke(runner, "predict", "--model", "paper", formula)
    assert result.exit_code == 2 and fragment in result.output and "nan" not in result.output.lower()


def test_hydrate_is_predicted_as_its_full_composition(runner):
    from fh_screen.models.predictor import Predictor

    predictor = Predictor.from_name("paper")
    dotted, explicit = predictor.predict_formulas(["CuSO4.5H2O", "CuSO4(H2O)5"]).dhf_ev_per_atom
    assert dotted == explicit and np.isfinite(dotted)


def test_nul_and_line_breaks_in_csv_fields(runner, tmp_path, oqmd_train_raw):
    formulas = oqmd_train_raw["formula"].head(3).tolist()
    source, target = tmp_path / "in.csv", tmp_path / "out.csv"
    source.write_bytes(
        b"formula,note\r\n" + f'{formulas[0]}\x00Xx,"a\rb"\r\n{formulas[1]},"c\r\nd"\r\n{formulas[2]},"e\r f"\r\n'.encode()
    )
    result = invoke(runner, "predict", "--model", "paper", "--input", str(source), "--output", str(target))
    assert result.exit_code == 2 and "control character U+0000" in result.output, result.output  # row 1 has an error
    from fh_screen.data import read_csv_any

    out = read_csv_any(target, dtype={"error": str})
    assert len(out) == 3 and out["note"].tolist() == ["a\rb", "c\r\nd", "e\r f"]
    assert "control character U+0000" in out["error"][0] and np.isnan(out["dhf_pred_ev_per_atom"][0])
    assert out["error"][1:].isna().all() and np.isfinite(out["dhf_pred_ev_per_atom"][1:]).all()


@pytest.mark.parametrize("encoding", ["utf-16", "cp1252"])
def test_csv_in_other_encodings(runner, tmp_path, oqmd_train_raw, encoding):
    sample = oqmd_train_raw.head(20).assign(note="émigré")
    source = tmp_path / "in.csv"
    source.write_bytes(sample.to_csv(index=False).encode(encoding))
    result = invoke(runner, "predict", "--model", "paper", "--input", str(source), "--output", str(tmp_path / "o.csv"))
    assert result.exit_code == 0, result.output
    out = pd.read_csv(tmp_path / "o.csv")
    assert out["note"].eq("émigré").all() and out["error"].isna().all()


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize(
    ("make_target", "fragment"),
    [
        (lambda d: d / "missing" / "out.csv", "output folder does not exist"),
        (lambda d: d, "output is a folder"),
        (lambda d: d / "file.txt" / "out.csv", "not a folder"),
    ],
)
def test_unwritable_outputs_are_refused_up_front(runner, tmp_path, make_target, fragment):
    (tmp_path / "file.txt").write_text("x")
    before = _listing(tmp_path)
    result = invoke(runner, "predict", "--model", "paper", "LiFePO4", "--output", str(make_target(tmp_path)))
    assert result.exit_code == 2 and fragment in result.output and "Traceback" not in result.output
    assert result.output.count("\n") == 1
    assert _listing(tmp_path) == before


def test_read_only_folder_is_refused(runner, read_only_folder):
    folder, make_read_only = read_only_folder
    make_read_only()
    result = invoke(runner, "predict", "--model", "paper", "LiFePO4", "--output", str(folder / "out.csv"))
    assert result.exit_code == 2 and "not writable" in result.output
    assert _listing(folder) == []


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), PermissionError(13, "Permission denied")])
def test_failed_write_leaves_nothing_behind(runner, tmp_path, monkeypatch, error):
    """A disk that fills (or a permission lost) mid-write: one line, exit 2, no partial file or .tmp."""
    real_to_csv = pd.DataFrame.to_csv

    def half_then_fail(self, path, *args, **kwargs):
        real_to_csv(self.head(1), path, *args, **kwargs)
        raise error

    monkeypatch.setattr(pd.DataFrame, "to_csv", half_then_fail)
    result = invoke(runner, "predict", "--model", "paper", "LiFePO4", "Fe2O3", "--output", str(tmp_path / "out.csv"))
    assert result.exit_code == 2 and error.strerror in result.output and "Traceback" not in result.output
    assert _listing(tmp_path) == []


def test_library_warnings_do_not_reach_the_cli(runner, tmp_path):
    import torch

    evil = tmp_path / "evil.pt"
    torch.save({"payload": object()}, evil)
    result = invoke(runner, "predict", "LiFePO4", "--model", str(evil))
    assert result.exit_code == 2
    assert "Warning" not in result.output and "weights_only=False" not in result.output
    assert result.output.count("error:") == 1


def test_cli_silences_warnings_and_never_relays_weights_only_advice(runner, monkeypatch):
    """Whatever a library warns or advises, the CLI prints one line without unsafe advice."""
    import warnings

    from fh_screen.errors import FhScreenError
    from fh_screen.models.predictor import Predictor

    def noisy(name=None):
        warnings.warn("You are using `torch.load` with `weights_only=False`", UserWarning)
        raise FhScreenError("cannot load model x.pt: Weights only load failed. Re-running `torch.load` with "
                            "`weights_only` set to `False` will likely succeed; or use weights_only=False here.")

    monkeypatch.setattr(Predictor, "from_name", staticmethod(noisy))
    result = invoke(runner, "predict", "LiFePO4")
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "UserWarning" not in result.output and "weights_only=False" not in result.output
    assert "False" not in result.output and "cannot load model x.pt" in result.output


def test_help_loads_none_of_the_heavy_libraries():
    """``fh-screen --help`` (and a command's help) builds every command with its defaults but imports neither
    pandas, numpy, torch nor pymatgen (BENCHMARKS.md says so; the screen's defaults pulled in pandas through
    fh_screen.screening, and fh_screen.io numpy)."""
    probe = ("import sys; from fh_screen.cli import main\n"
             "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
             "print(sorted(m for m in ('pandas', 'numpy', 'torch', 'pymatgen') if m in sys.modules), file=sys.stderr)")
    for args in (["--help"], ["screen", "--help"], ["bulk", "--help"]):
        completed = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=120)
        assert completed.stderr.strip().splitlines()[-1] == "[]", (args, completed.stderr)
        assert "Usage" in completed.stdout


def test_sigterm_ends_a_command_as_ctrl_c_does_leaving_no_temporary_file(tmp_path):
    """``kill`` (SIGTERM) during a write left the hidden ``.tmp`` file (Python's default ends the process at once);
    under the CLI's handler it is an exit (143) that removes it, as Ctrl-C does."""
    import signal

    target = tmp_path / "out.csv"
    script = (
        "import time\n"
        "from fh_screen import io\n"
        "from fh_screen.cli import ended_by_sigterm_as_exit\n"
        "def slow(tmp):\n"
        "    tmp.write_text('partial')\n"
        "    print('writing', flush=True)\n"
        "    time.sleep(60)\n"
        "with ended_by_sigterm_as_exit():\n"
        f"    io.atomic_write({str(target)!r}, slow)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "writing"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # the temporary file is there
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 143, process.stderr.read()
    assert list(tmp_path.iterdir()) == []  # neither the temporary file nor a partial output


def test_an_output_naming_the_input_file_is_refused_and_the_input_kept(runner, tmp_path, oqmd_train_raw):
    """``--output`` naming the ``--input`` file replaced the user's table with the predictions (it ran)."""
    source = tmp_path / "in.csv"
    oqmd_train_raw.head(5)[["formula"]].assign(note="mine").to_csv(source, index=False)
    before = source.read_bytes()
    for output in (source, tmp_path / "." / "in.csv"):
        result = invoke(runner, "predict", "--model", "paper", "--input", str(source), "--output", str(output))
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert result.output.count("\n") == 1 and result.output.startswith("error: output ")
        assert "is the --input file" in result.output, result.output
        assert source.read_bytes() == before
        assert _listing(tmp_path) == ["in.csv"]


@pytest.mark.parametrize("formulas", [123, None, 1.5])
def test_python_predict_refuses_what_is_no_formula_or_sequence_in_one_line(formulas):
    """``predict(123)`` and ``predict(None)`` raised a bare TypeError ('int' object is not iterable)."""
    from fh_screen import predict
    from fh_screen.chem.formula import FormulaError

    message = f"formulas must be a formula string or a sequence of them, got {type(formulas).__name__}"
    for door in (predict, Predictor.from_name("paper").predict_formulas):
        with pytest.raises(FormulaError, match=f"^{message}$"):
            door(formulas)
    with pytest.raises(FormulaError, match="^formula must be a string, got bytes$"):  # one formula, not its bytes
        predict(b"Fe2O3")
