"""Seeds, row counts, worker processes, time caps and learning rates follow one rule at every door:
a seed is 0 .. 2**32 - 1, a count is 1 or more, a rate or a time cap a finite number above 0.
A bad value is one line naming the option and the value (exit code 2), never a traceback, and
the library's configs refuse it too. Real data: a small slice of the shared OQMD files."""

from __future__ import annotations

import math

import pytest
from typer.testing import CliRunner

from fh_screen.errors import FhScreenError, TrainingError

HUGE = "99999999999999999999"
MAX_SEED = 2**32 - 1


def _invoke(*args: str):
    from fh_screen.cli import build_app

    return CliRunner().invoke(build_app(), list(args))


def _one_line(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], result.output
    assert "Traceback" not in result.output


@pytest.fixture(scope="module")
def rows_csv(oqmd_train_raw, tmp_path_factory):
    """400 real rows of train.csv in the shared format."""
    path = tmp_path_factory.mktemp("rows") / "rows.csv"
    oqmd_train_raw.sample(n=400, random_state=3).to_csv(path, index=False)
    return path


@pytest.mark.parametrize(("option", "value", "fragment"), [
    ("--max-rows", "-1", "--max-rows must be 1 or more, got -1"),
    ("--max-rows", "0", "--max-rows must be 1 or more, got 0"),
    ("--seed", "-1", "--seed must be a whole number from 0 to 4294967295"),
    ("--seed", HUGE, f"got {HUGE}"),
    ("--learning-rate", "inf", "--learning-rate must be a finite number above 0, got inf"),
    ("--learning-rate", "0", "--learning-rate must be a finite number above 0, got 0"),
    ("--max-minutes", "nan", "--max-minutes must be a finite number above 0, got nan"),
    ("--max-minutes", "-1", "--max-minutes must be a finite number above 0, got -1"),
    ("--max-minutes", "0", "--max-minutes must be a finite number above 0, got 0"),
    ("--max-minutes", "inf", "--max-minutes must be a finite number above 0, got inf"),
])
def test_train_refuses_a_bad_number_in_one_line_before_training(rows_csv, tmp_path, option, value, fragment):
    result = _invoke("train", str(rows_csv), "-o", str(tmp_path / "m"), "--epochs", "1", option, value)
    _one_line(result, fragment)
    assert not (tmp_path / "m").exists()


def test_train_with_a_recipe_refuses_a_bad_seed_too(rows_csv, tmp_path):
    _one_line(_invoke("train", str(rows_csv), "-o", str(tmp_path / "m"), "--recipe", "attention*1", "--seed", "-1"),
              "--seed must be a whole number from 0 to 4294967295")


@pytest.mark.parametrize(("option", "value", "fragment"), [
    ("--seed", "-1", "--seed must be a whole number from 0 to 4294967295"),
    ("--seed", HUGE, f"got {HUGE}"),
    ("--max-minutes", "nan", "--max-minutes must be a finite number above 0, got nan"),
    ("--max-minutes", "inf", "--max-minutes must be a finite number above 0, got inf"),
])
def test_evaluate_refuses_a_bad_seed_or_time_cap_in_one_line(oqmd_dir, tmp_path, option, value, fragment):
    result = _invoke("evaluate", "--study", "cv", "--folds", "2", "--max-rows", "40", "--epochs", "1",
                     "-o", str(tmp_path / "out"), option, value)
    _one_line(result, fragment)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("study", ["stability", "claims"])
def test_evaluate_stability_and_claims_refuse_a_bad_seed(oqmd_dir, tmp_path, study):
    _one_line(_invoke("evaluate", "--study", study, "--seed", HUGE, "-o", str(tmp_path / "out")), "--seed must be")


@pytest.mark.parametrize(("value", "fragment"), [
    ("0", "--processes must be 1 or more, got 0"), ("-1", "--processes must be 1 or more, got -1"),
    ("300", "--processes must be 256 or fewer, got 300"), (HUGE, f"--processes must be 256 or fewer, got {HUGE}"),
])
@pytest.mark.parametrize("command", ["predict-store", "bulk"])
def test_predict_store_and_bulk_refuse_the_same_process_counts_in_the_same_words(tmp_path, command, value, fragment):
    store = tmp_path / "s.sqlite"
    args = ["--store", str(store), "--model", "paper", "--processes", value]
    if command == "bulk":
        args = ["--elements", "Li,O", "--nelements", "2", *args]
    _one_line(_invoke(command, *args), fragment)
    assert not store.exists()


def test_campaign_and_finetune_refuse_a_seed_outside_the_range(oqmd_dir, tmp_path):
    _one_line(_invoke("campaign", "--seed", HUGE, "--json", str(tmp_path / "c.json")), "--seed", HUGE)
    _one_line(_invoke("campaign", "--seed", "-1", "--json", str(tmp_path / "c.json")), "--seed", "-1")
    table = tmp_path / "new.csv"
    table.write_text("formula,dhf_ev_per_atom\nLiO2,-1.0\n")
    _one_line(_invoke("finetune", str(table), "--seed", HUGE), "option --seed", HUGE)
    _one_line(_invoke("finetune", str(table), "--seed", "-1"), "option --seed", "-1")


def test_the_library_configs_and_loaders_refuse_the_same_values(rows_csv):
    from fh_screen.data import kfold_indices, load_oqmd, split_frame
    from fh_screen.models.attention import AttentionTrainConfig
    from fh_screen.models.fit import TrainConfig
    from fh_screen.models.train import carve_training_file, train_model
    from fh_screen.study.seed_study import load_study_data

    for bad in ({"learning_rate": math.inf}, {"learning_rate": 0.0}, {"max_minutes": math.nan}, {"max_minutes": 0},
                {"max_minutes": -1.0}, {"seed": -1}, {"epochs": 0}, {"batch_size": 0}):
        with pytest.raises(TrainingError, match=f"^{next(iter(bad))} must be"):
            TrainConfig(**bad)
    for bad in ({"learning_rate": math.nan}, {"seed": -1}, {"epochs": 0}):
        with pytest.raises(TrainingError, match=f"^{next(iter(bad))} must be"):
            AttentionTrainConfig(**bad)
    TrainConfig(seed=MAX_SEED + 3)  # a member's seed adds its number: the config takes it; the doors refuse above MAX_SEED
    with pytest.raises(TrainingError, match="max_rows must be 1 or more, got -1"):
        carve_training_file(rows_csv, max_rows=-1)
    with pytest.raises(TrainingError, match="seed must be a whole number from 0 to 4294967295"):
        train_model(rows_csv, config=TrainConfig(epochs=1, seed=MAX_SEED + 1))
    frame, _ = load_oqmd(rows_csv)
    for call in (lambda: split_frame(frame, (0.5, 0.5), seed=-1), lambda: kfold_indices(10, 2, seed=10**20),
                 lambda: load_study_data([rows_csv], seed=-1), lambda: load_study_data([rows_csv], max_rows=0)):
        with pytest.raises(FhScreenError, match="must be"):
            call()


def test_the_checks_take_numpy_numbers_and_refuse_bools_and_text():
    import numpy as np

    from fh_screen.errors import check_count, check_positive, check_processes, check_seed

    assert check_seed(np.int64(7)) == 7 and check_seed(MAX_SEED) == MAX_SEED
    assert check_count(np.int32(3), "rows") == 3 and check_count(0, "--limit", zero_means_all=True) == 0
    assert check_positive(np.float64(0.5), "rate") == 0.5 and check_processes(256) == 256
    for call in (lambda: check_seed(True), lambda: check_seed(1.0), lambda: check_count("3", "rows"),
                 lambda: check_positive("1", "rate"), lambda: check_positive(True, "rate"),
                 lambda: check_count(-1, "--limit", zero_means_all=True)):
        with pytest.raises(FhScreenError):
            call()
