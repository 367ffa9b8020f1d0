"""Fine-tuning reads its new entries as ``fh-screen ingest`` does, and every door checks its inputs alike.

Real data: the replay and val files are slices of the shared OQMD train.csv and val.csv; the
base model is the shipped ``paper`` (fast). Each test here failed before the fix it names.
"""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from fh_screen.cli import build_app
from fh_screen.errors import FhScreenError
from fh_screen.jobs.finetune import FinetuneDocument, FinetuneMaker
from fh_screen.models.finetune import FinetuneError

torch.set_num_threads(1)
runner = CliRunner()
QUICK = ["--epochs", "1", "--replay-rows", "64"]
#: The audit's table: an unknown element, a good row, a NaN, a pure element, an outlier.
MIXED = "formula,target\nXx2O,-1\nNaCl,-2.0\nLiF,nan\nLi,0.5\nKBr,-50\n"
#: The same without the refusals: a good row, a NaN, a pure element at 0, an outlier, a duplicate.
SET_ASIDE = "formula,target\nNaCl,-2.0\nLiF,nan\nLi,0\nKBr,-50\nNaCl,-1.5\n"
REASONS = {"higher-energy duplicates": 1, "outliers outside (-20, 5) eV/atom": 1,
           "non-numeric or infinite values": 1, "pure elements": 1}


@pytest.fixture(scope="module")
def files(oqmd_dir, tmp_path_factory):
    """tr.csv (3,000 real train rows), va.csv (500 real val rows) and the audit's tables."""
    folder = tmp_path_factory.mktemp("finetune_inputs")
    pd.read_csv(oqmd_dir / "train.csv", nrows=3000).to_csv(folder / "tr.csv", index=False)
    pd.read_csv(oqmd_dir / "val.csv", nrows=500).to_csv(folder / "va.csv", index=False)
    (folder / "mixed.csv").write_text(MIXED)
    (folder / "set_aside.csv").write_text(SET_ASIDE)
    (folder / "header.csv").write_text("formula,target\n")
    return folder


def _run(args):
    result = runner.invoke(build_app(), ["finetune", *map(str, args)])
    return result, result.output


def _one_line_error(result, text: str, expected: str) -> None:
    assert result.exit_code == 2, text
    errors = [line for line in text.strip().splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0] and "Traceback" not in text, text


def test_an_unknown_element_refuses_the_file_like_ingest(files, tmp_path):
    result, text = _run([files / "mixed.csv", "--model", "paper", "--train", files / "tr.csv", "--val", files / "va.csv",
                         "--output", tmp_path / "out", *QUICK])
    _one_line_error(result, text, "mixed.csv: unknown element symbol 'Xx' in formula 'Xx2O'")
    assert not (tmp_path / "out").exists()
    ingest = CliRunner().invoke(build_app(), ["ingest", str(files / "mixed.csv"), "--source", "t",
                                              "--store", str(tmp_path / "copy.sqlite")])
    assert ingest.exit_code == 2 and "unknown element symbol 'Xx' in formula 'Xx2O'" in ingest.output
    # a pure element with a ΔH_f other than 0 refuses it too, as ingest does
    total = tmp_path / "total.csv"
    total.write_text(MIXED.replace("Xx2O,-1\n", ""))
    result, text = _run([total, "--model", "paper", "--train", files / "tr.csv", "--val", files / "va.csv",
                         "--output", tmp_path / "out", *QUICK])
    _one_line_error(result, text, "pure element Li has ΔH_f 0.5 eV/atom")
    with pytest.raises(FinetuneError, match="unknown element symbol 'Xx'"):
        FinetuneMaker(model="paper", train_path=str(files / "tr.csv"), val_path=str(files / "va.csv"),
                      output_dir=str(tmp_path / "job")).make(None, entries=[{"formula": "Xx2O", "dhf_ev_per_atom": -1.0},
                                                                              {"formula": "NaCl", "dhf_ev_per_atom": -2.0}])


def test_rows_set_aside_are_noted_and_recorded(files, tmp_path):
    out = tmp_path / "out"
    result, text = _run([files / "set_aside.csv", "--model", "paper", "--train", files / "tr.csv", "--val",
                         files / "va.csv", "--output", out, *QUICK])
    assert result.exit_code == 0, text
    notes = [line for line in text.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "4 of 5 rows of set_aside.csv set aside" in notes[0] and "learning from 1" in notes[0]
    for reason, n in REASONS.items():
        assert f"{n} {reason}" in notes[0]
    data = json.loads((out / "model_card.json").read_text())["finetune"]["data"]
    assert data["n_entries"] == 1 and data["n_entries_rows"] == 5 and data["entries_set_aside"] == REASONS
    assert "4 of the 5 rows read were set aside" in (out / "README.md").read_text()
    # the same from the Python API
    from fh_screen.models.finetune import read_entries

    new = read_entries(files / "set_aside.csv")
    assert new.table["formula"].tolist() == ["NaCl"] and new.set_aside == REASONS and new.n_rows == 5


def test_the_job_records_the_rows_set_aside(files, tmp_path):
    from jobflow import run_locally

    from fh_screen.jobs.jobstore import local_job_store

    records = [{"formula": "NaCl", "dhf_ev_per_atom": -2.0}, {"formula": "LiF", "dhf_ev_per_atom": None},
               {"formula": "Li", "dhf_ev_per_atom": 0.0}, {"formula": "KBr", "dhf_ev_per_atom": -50.0},
               {"formula": "NaCl", "dhf_ev_per_atom": -1.5}]
    job = FinetuneMaker(model="paper", train_path=str(files / "tr.csv"), val_path=str(files / "va.csv"),
                        output_dir=str(tmp_path / "job"), options={"epochs": 1, "replay_rows": 64}).make(None, entries=records)
    doc = run_locally(job, store=local_job_store(tmp_path / "jobs.sqlite"), log=False,
                      ensure_success=True)[job.uuid][1].output
    doc = FinetuneDocument(**doc) if isinstance(doc, dict) else doc
    assert doc.n_entries == 1 and doc.n_entries_rows == 5
    assert doc.entries_set_aside == {"higher-energy duplicates": 1, "outliers outside (-20, 5) eV/atom": 1,
                                     "missing values": 1, "pure elements": 1}


def test_an_empty_name_is_refused_by_the_cli_as_by_the_maker(files, tmp_path):
    result, text = _run([files / "set_aside.csv", "--model", "paper", "--name", "", "--train", files / "tr.csv",
                         "--val", files / "va.csv", "--output", tmp_path / "out", *QUICK])
    message = "model name must be 1-64 letters, digits or ._+- characters, got ''"
    _one_line_error(result, text, message)
    assert not (tmp_path / "out").exists()
    with pytest.raises(FinetuneError, match=message.replace("+", r"\+").replace(".", r"\.")):
        FinetuneMaker(model_name="").make()


@pytest.mark.parametrize(("flag", "value", "shown"), [
    ("--learning-rate", "0", "0<x<=0.01"), ("--learning-rate", "0.05", "0<x<=0.01"),
    ("--new-share", "1", "0<x<1"), ("--new-share", "0", "0<x<1"), ("--epochs", "201", None),
    ("--replay-rows", "-1", None), ("--val-rows", "0", None), ("--threads", "0", None),
    ("--max-val-regression", "-0.1", None), ("--max-val-regression", "nan", None),
])
def test_option_bounds_are_the_options_and_name_the_flag(files, flag, value, shown):
    """Refused by the CLI with the flag's name (never a FinetuneOptions field name); the open bounds say so."""
    result, text = _run([files / "set_aside.csv", "--model", "paper", flag, value])
    assert result.exit_code == 2, text
    field = flag.removeprefix("--").replace("-", "_")
    assert flag in text and f"option {field}" not in text and "max_val_regression" not in text, text
    if shown is not None:
        assert shown in text.replace(" ", ""), text


def test_option_bounds_accept_what_the_options_accept(files, tmp_path):
    """The edges FinetuneOptions accepts pass the CLI (0.01 was refused by nothing, 0.995 was refused by typer)."""
    from fh_screen.models.finetune import FinetuneOptions

    FinetuneOptions(learning_rate=0.01, new_share=0.995)
    result, text = _run([files / "set_aside.csv", "--model", "paper", "--train", files / "tr.csv", "--val", files / "va.csv",
                         "--output", tmp_path / "out", "--learning-rate", "0.01", "--new-share", "0.995",
                         "--epochs", "1", "--replay-rows", "16", "--force"])
    assert result.exit_code == 0, text
    help_text = runner.invoke(build_app(), ["finetune", "--help"]).output
    assert "0<x<=0.01" in help_text and "0<x<1" in help_text


def test_the_maker_checks_at_make_what_the_cli_checks(files, tmp_path):
    """Every check that needs no upstream data fails at make(), in the CLI's words."""
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "model.pt").write_bytes(b"x")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    good = {"model": "paper", "train_path": str(files / "tr.csv"), "val_path": str(files / "va.csv"),
            "output_dir": str(tmp_path / "new")}
    cases = {
        "no model named 'nosuch'": ({"model": "nosuch"}, ["--model", "nosuch"]),
        "no source named in ''": ({"source": ""}, ["--source", ""]),
        "sources must be source names": ({"source": 5}, None),
        "unknown element 'Xx' in chemical system 'Li-Xx'": ({"chemsys": "Li-Xx"}, ["--source", "chgnet", "--chemsys", "Li-Xx"]),
        "train file not found": ({"train_path": str(tmp_path / "none.csv")}, ["--train", tmp_path / "none.csv"]),
        "the replay file and the val file are the same": ({"val_path": str(files / "tr.csv")}, ["--val", files / "tr.csv"]),
        "is a file: the new model needs a folder": ({"output_dir": str(a_file)}, ["--output", a_file]),
        "already holds a model": ({"output_dir": str(taken)}, ["--output", taken]),
        "no store at": ({"store_path": str(tmp_path / "none.sqlite")},
                        ["--source", "chgnet", "--store", tmp_path / "none.sqlite"]),
    }
    cli_base = {"--model": "paper", "--train": files / "tr.csv", "--val": files / "va.csv", "--output": tmp_path / "new"}
    for expected, (fields, cli) in cases.items():
        with pytest.raises(FhScreenError, match=expected):
            FinetuneMaker(**{**good, **fields}).make()
        if cli is None:
            continue
        args = dict(cli_base)
        args.update(dict(zip(cli[::2], cli[1::2])))
        entries = [] if "--source" in args else [files / "set_aside.csv"]
        result, text = _run([*entries, *[x for kv in args.items() for x in kv]])
        _one_line_error(result, text, expected)
    assert not (tmp_path / "new").exists()
    # a store another job of the flow writes first may be missing at make()
    from fh_screen.jobs.results import ResultsBackMaker

    back = ResultsBackMaker(store_path=str(tmp_path / "later.sqlite")).make()
    FinetuneMaker(**good, store_path=str(tmp_path / "later.sqlite")).make(back.output)


def test_empty_entries_give_the_cli_message(files, tmp_path):
    result, text = _run([files / "header.csv", "--model", "paper", "--train", files / "tr.csv", "--val", files / "va.csv",
                         "--output", tmp_path / "out"])
    _one_line_error(result, text, "no usable new entries in header.csv")
    assert "0 rows, set aside: no rows" in text
    maker = FinetuneMaker(model="paper", train_path=str(files / "tr.csv"), val_path=str(files / "va.csv"),
                          output_dir=str(tmp_path / "out"))
    with pytest.raises(FinetuneError, match=r"^no usable new entries in 0 entries given to the job .*: 0 rows, set aside: no rows$"):
        maker.make(None, entries=[])
    with pytest.raises(FinetuneError, match="entries must be a list"):
        maker.make(None, entries="NaCl")


def _paper_run(files, out, **kwargs):
    """run_finetune (the Python API) of the shipped ``paper`` model on the set-aside table, tiny; the epochs it ran."""
    from fh_screen.models.finetune import FinetuneOptions, read_entries, run_finetune
    from fh_screen.models.predictor import Predictor

    epochs = []
    run_finetune(Predictor.from_name("paper").checkpoint, read_entries(files / "set_aside.csv"), files / "tr.csv",
                 files / "va.csv", out, FinetuneOptions(epochs=1, replay_rows=16), force=True,
                 on_epoch=lambda *a: epochs.append(a), **kwargs)
    return epochs


def test_an_output_folder_that_is_not_empty_is_refused_by_every_door_and_left_as_it_was(files, tmp_path):
    """Audit 4: -o FOLDER holding the user's README.md replaced it with the model's (model_card.json too)."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "README.md").write_text("my notes\n")
    (mine / "model_card.json").write_text("{}")
    message = f"{mine} is not empty: the new model needs a new or empty folder"
    result, text = _run([files / "set_aside.csv", "--model", "paper", "--train", files / "tr.csv", "--val",
                         files / "va.csv", "--output", mine, *QUICK])
    _one_line_error(result, text, message)
    with pytest.raises(FinetuneError, match=re.escape(message)):
        FinetuneMaker(model="paper", train_path=str(files / "tr.csv"), val_path=str(files / "va.csv"),
                      output_dir=str(mine)).make()
    with pytest.raises(FinetuneError, match=re.escape(message)):
        _paper_run(files, mine)
    assert sorted(p.name for p in mine.iterdir()) == ["README.md", "model_card.json"]
    assert (mine / "README.md").read_text() == "my notes\n" and (mine / "model_card.json").read_text() == "{}"
    # an empty folder is still a good place for the model
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _paper_run(files, empty) and (empty / "model.pt").is_file()


def test_an_output_folder_that_cannot_be_written_is_refused_before_training_by_every_door(files, tmp_path):
    """Audit 7: -o /proc/aud or -o FILE/sub trained first, then failed (No such file or directory / Not a directory)."""
    import os

    a_file = tmp_path / "good.csv"
    a_file.write_text("x\n")
    places = {a_file / "sub": f"cannot write the new model into {a_file / 'sub'}: {a_file} is not a folder"}
    if os.path.isdir("/proc/self"):  # a place where no folder can be made, even by root
        places["/proc/aud"] = "cannot write the new model into /proc/aud: "
    maker = {"model": "paper", "train_path": str(files / "tr.csv"), "val_path": str(files / "va.csv")}
    for place, message in places.items():
        result, text = _run([files / "set_aside.csv", *maker_args(maker), "--output", place, *QUICK])
        _one_line_error(result, text, message)
        assert "fine-tuned" not in text  # refused before any member trained
        with pytest.raises(FinetuneError, match=re.escape(message)):
            FinetuneMaker(**maker, output_dir=str(place)).make()
        with pytest.raises(FinetuneError, match=re.escape(message)):
            _paper_run(files, place)
    assert a_file.read_text() == "x\n" and not os.path.exists("/proc/aud")
    # the probe of a good place leaves nothing behind
    FinetuneMaker(**maker, output_dir=str(tmp_path / "new" / "model")).make()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.csv"]


def maker_args(maker: dict) -> list:
    """The CLI flags of a FinetuneMaker's model, train and val fields."""
    return ["--model", maker["model"], "--train", maker["train_path"], "--val", maker["val_path"]]


def test_an_entry_outside_the_models_elements_is_refused_at_make_in_the_words_it_was_written(files, tmp_path):
    """Audit 8: the Maker took OgF at make() and failed when the job ran; the CLI quoted the reduced FOg."""
    og = tmp_path / "og.csv"
    og.write_text("formula,dhf_ev_per_atom\nOgF,-1.0\nNaCl,-2.0\n")
    message = "new entry outside the model's elements (H–Pu): OgF: element 'Og' in formula 'OgF'"
    result, text = _run([og, "--model", "paper", "--train", files / "tr.csv", "--val", files / "va.csv",
                         "--output", tmp_path / "out", *QUICK])
    _one_line_error(result, text, message)
    assert "FOg" not in text and not (tmp_path / "out").exists()
    with pytest.raises(FinetuneError, match=re.escape(message)):
        FinetuneMaker(model="paper", train_path=str(files / "tr.csv"), val_path=str(files / "va.csv"),
                      output_dir=str(tmp_path / "job")).make(None, entries=[{"formula": "OgF", "dhf_ev_per_atom": -1.0},
                                                                              {"formula": "NaCl", "dhf_ev_per_atom": -2.0}])
    assert not (tmp_path / "job").exists()


def test_a_name_a_user_model_already_has_is_refused_by_every_door(files, tmp_path, monkeypatch):
    """Audit 9: --name aud-ft -o other was accepted beside the user's model aud-ft; --model aud-ft@NEW then failed."""
    import shutil

    from fh_screen.models.predictor import Predictor, shipped_model_path

    models = tmp_path / "models"
    (models / "aud-ft").mkdir(parents=True)
    shutil.copy(shipped_model_path("paper"), models / "aud-ft" / "model.pt")
    monkeypatch.setenv("FH_SCREEN_MODEL_DIR", str(models))
    assert Predictor.from_name("aud-ft").name == "paper"  # found by name
    message = f"a model named 'aud-ft' is already in {models}"
    other = tmp_path / "other"
    result, text = _run([files / "set_aside.csv", "--model", "paper", "--name", "aud-ft", "--train", files / "tr.csv",
                         "--val", files / "va.csv", "--output", other, *QUICK])
    _one_line_error(result, text, message)
    with pytest.raises(FinetuneError, match=re.escape(message)):
        FinetuneMaker(model="paper", model_name="aud-ft", train_path=str(files / "tr.csv"), val_path=str(files / "va.csv"),
                      output_dir=str(other)).make()
    with pytest.raises(FinetuneError, match=re.escape(message)):
        _paper_run(files, other, name="aud-ft")
    assert not other.exists() and sorted(p.name for p in models.iterdir()) == ["aud-ft"]


def test_an_infinite_val_regression_limit_is_refused_by_every_door(files, tmp_path):
    """Audit 10: --max-val-regression inf (and the options' inf) let any regression through without --force."""
    from pydantic import ValidationError

    from fh_screen.models.finetune import FinetuneOptions

    for value in ("inf", "Infinity"):
        result, text = _run([files / "set_aside.csv", "--model", "paper", "--train", files / "tr.csv", "--val",
                             files / "va.csv", "--output", tmp_path / "out", "--max-val-regression", value, *QUICK])
        _one_line_error(result, text, "option --max-val-regression: Input should be a finite number")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValidationError, match="finite"):
        FinetuneOptions(max_val_regression_ev_per_atom=float("inf"))
    with pytest.raises(FinetuneError, match="finetune option max_val_regression_ev_per_atom: Input should be a finite number"):
        FinetuneMaker(model="paper", options={"max_val_regression_ev_per_atom": float("inf")}).make()
    assert FinetuneOptions(max_val_regression_ev_per_atom=0).max_val_regression_ev_per_atom == 0
