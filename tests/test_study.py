"""The seed-study reproduction on tiny real OQMD slices: CV bookkeeping, data size, files written."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fh_screen.io import write_json
from fh_screen.study import seed_study as st
from fh_screen.models.mlp import PRESETS
from fh_screen.models.fit import TrainConfig
from fh_screen.models.metrics import error_metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def slice_data(oqmd_slice_csv):
    """2,000 real training compositions (cleaned, featurised)."""
    return st.load_study_data([oqmd_slice_csv], max_rows=2000, seed=0)


@pytest.fixture(scope="module")
def val_slice(oqmd_dir):
    """1,000 real compositions of val.csv: the fixed test set."""
    return st.load_study_data([oqmd_dir / "val.csv"], max_rows=1000, seed=0)


@pytest.fixture(scope="module")
def cv_result(slice_data):
    return st.cross_validate(slice_data, PRESETS["paper"], TrainConfig(epochs=3), n_folds=3, seed=0)


def test_load_study_data_unions_files_without_duplicates(oqmd_slice_csv, oqmd_dir):
    data = st.load_study_data([oqmd_slice_csv, oqmd_slice_csv])
    once = st.load_study_data([oqmd_slice_csv])
    assert len(data) == len(once)  # a composition in both files is kept once
    assert len(set(data.formulas)) == len(data)
    assert np.allclose(data.x.sum(axis=1), 1.0, atol=1e-5)
    assert ((data.y_ev_per_atom > -20) & (data.y_ev_per_atom < 5)).all()
    assert [s["sha256"] for s in data.sources] == [st.file_sha256(oqmd_slice_csv)] * 2


def test_cv_folds_partition_rows_and_every_row_predicted_once(cv_result, slice_data):
    n = len(slice_data)
    together = np.concatenate(cv_result.test_indices)
    assert len(together) == n and np.array_equal(np.sort(together), np.arange(n))  # disjoint and complete
    assert np.isfinite(cv_result.oof_prediction_ev_per_atom).all()
    for fold, rows in zip(cv_result.folds, cv_result.test_indices):
        # the early-stopping holdout is 5% of the other folds, never the test fold
        assert fold.n_fit + fold.n_early_stopping == n - len(rows)
        assert fold.n_early_stopping == round(0.05 * (n - len(rows)))
        assert len(fold.history) == 3
        expected = error_metrics(slice_data.y_ev_per_atom[rows], cv_result.oof_prediction_ev_per_atom[rows])
        assert fold.metrics == pytest.approx(expected)


def test_cv_summary_is_consistent_with_folds(cv_result):
    summary = cv_result.summary()
    maes = [f.metrics["mae_ev_per_atom"] for f in cv_result.folds]
    assert summary["n_folds"] == 3
    assert summary["fold_mae_mean_ev_per_atom"] == pytest.approx(np.mean(maes))
    assert summary["fold_mae_std_ev_per_atom"] == pytest.approx(np.std(maes, ddof=1))
    pooled = summary["pooled_out_of_fold"]
    assert pooled["n"] == summary["n_rows"]
    assert summary["fraction_of_errors_below_ev_per_atom"]["0.080"] <= summary["fraction_of_errors_below_ev_per_atom"]["0.180"]
    assert summary["error_percentiles_ev_per_atom"]["80"] == pytest.approx(pooled["p80_ae_ev_per_atom"])


def test_cv_json_and_figure_written(cv_result, slice_data, tmp_path):
    import time

    payload = {**cv_result.summary(), "folds": [f.summary() for f in cv_result.folds],
               "provenance": st.provenance(TrainConfig(epochs=3), slice_data.sources, time.perf_counter())}
    json_path = write_json(payload, tmp_path / "study" / "cv.json")
    png_path = st.write_cv_figure(cv_result, tmp_path / "figures" / "cv.png")
    loaded = json.loads(json_path.read_text())
    for key in ("fold_mae_mean_ev_per_atom", "fold_mae_std_ev_per_atom", "pooled_out_of_fold", "folds", "provenance"):
        assert key in loaded
    assert {"command", "machine", "seconds", "data", "training_config"} <= set(loaded["provenance"])
    assert loaded["provenance"]["data"][0]["sha256"] == slice_data.sources[0]["sha256"]
    assert png_path.read_bytes()[:8] == PNG_MAGIC and png_path.stat().st_size > 5000


def test_cross_validate_rejects_bad_fold_counts(slice_data):
    with pytest.raises(st.StudyError, match="at least 2 folds"):
        st.cross_validate(slice_data, n_folds=1)
    with pytest.raises(st.StudyError, match="too few"):
        st.cross_validate(slice_data.subset(np.arange(5)), n_folds=3)


def test_bigger_training_set_gives_lower_mae_on_fixed_test_set(slice_data, val_slice, tmp_path):
    runs = st.data_size_study(slice_data, val_slice, [200, None], PRESETS["paper"], TrainConfig(epochs=6), seed=0)
    small, full = runs
    assert small.n_fit + small.n_early_stopping == 200
    assert full.n_fit + full.n_early_stopping == len(slice_data)
    assert full.metrics["n"] == small.metrics["n"] == len(val_slice)
    mean_predictor = np.abs(val_slice.y_ev_per_atom - slice_data.y_ev_per_atom.mean()).mean()
    assert full.metrics["mae_ev_per_atom"] < small.metrics["mae_ev_per_atom"]
    assert full.metrics["mae_ev_per_atom"] < 0.8 * mean_predictor
    png = st.write_size_figure(runs, tmp_path / "size.png")
    assert png.read_bytes()[:8] == PNG_MAGIC


def _pixels(path):
    """The decoded image of a PNG file (rows, columns, channels)."""
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_MAGIC
    return matplotlib.image.imread(path)


def test_architecture_and_overfit_studies(slice_data, val_slice, tmp_path):
    runs = st.architecture_study(slice_data, val_slice, ["fig2-32", "fig2-128"], TrainConfig(epochs=2))
    assert [r.spec.architecture for r in runs] == ["32x2+16x2+8x1+1x1", "128x2+64x2+32x1+1x1"]
    assert runs[0].summary()["n_parameters"] < runs[1].summary()["n_parameters"]
    with pytest.raises(st.StudyError, match="unknown preset"):
        st.architecture_study(slice_data, val_slice, ["nope"])
    # early stopping disabled: patience 1 would stop a noisy run early, the overfit study must not
    run = st.overfit_study(slice_data.subset(np.arange(500)), val_slice, config=TrainConfig(epochs=5, early_stopping_patience=1))
    assert len(run.history) == 5 and run.stopped_reason == "reached 5 epochs"
    assert {r.learning_rate for r in run.history} == {TrainConfig().learning_rate}  # LR schedule off too
    assert run.spec.architecture == "256x2+128x2+64x2+32x1+1x1"
    both = _pixels(st.write_architecture_figure(runs, tmp_path / "a.png"))
    one = _pixels(st.write_architecture_figure(runs[:1], tmp_path / "a1.png"))
    assert both.ndim == 3 and both.std() > 0  # a drawn figure, not a blank canvas
    assert one.shape != both.shape or not np.array_equal(one, both)  # it draws the runs it is given
    assert st.write_loss_curves_figure(run, tmp_path / "o.png").read_bytes()[:8] == PNG_MAGIC


def test_cli_evaluate_cv_writes_json_and_png(oqmd_slice_csv, tmp_path):
    from typer.testing import CliRunner

    from fh_screen.cli import build_app

    result = CliRunner().invoke(build_app(), [
        "evaluate", "--study", "cv", "--train", str(oqmd_slice_csv), "--val", str(oqmd_slice_csv), "--folds", "2",
        "--max-rows", "400", "--epochs", "2", "--output-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    payload = json.loads((tmp_path / "study" / "cv.json").read_text())
    assert payload["n_folds"] == 2 and payload["n_rows"] == 400
    assert payload["provenance"]["caps"]["epochs_per_run"] == 2
    assert (tmp_path / "figures" / "cv.png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize(("args", "message"), [
    (["--study", "nope"], "unknown study 'nope' (choose from cv, size, arch, overfit, all, stability or claims)"),
    (["--folds", "1"], "--folds must be at least 2"),
    (["--study", "size", "--sizes", "5000,abc"], "bad training-set size"),
    (["--study", "arch", "--presets", "fig2-32,big"], "unknown preset"),
    (["--train", "/nonexistent/train.csv"], "not found"),
])
def test_cli_evaluate_bad_input_is_one_line_error(args, message, tmp_path):
    from typer.testing import CliRunner

    from fh_screen.cli import build_app

    result = CliRunner().invoke(build_app(), ["evaluate", *args, "--output-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "study").exists()


def test_write_json_is_strict_and_atomic(tmp_path):
    path = write_json({"mae": float("nan"), "values": [np.float32(1.5), np.int64(3)]}, tmp_path / "s" / "m.json")
    assert json.loads(path.read_text()) == {"mae": None, "values": [1.5, 3]}
    with pytest.raises(TypeError):
        write_json({"bad": object()}, tmp_path / "s" / "bad.json")
    assert not (tmp_path / "s" / "bad.json").exists()


def test_cli_evaluate_stability_writes_json_and_png(oqmd_dir, tmp_path):
    """The screen-like evaluation of a shipped model on a few real systems (quick run)."""
    from typer.testing import CliRunner

    from fh_screen.cli import build_app

    result = CliRunner().invoke(build_app(), [
        "evaluate", "--study", "stability", "--model", "paper", "--systems", "4", "--hull-systems", "40",
        "--output-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    payload = json.loads((tmp_path / "evaluation" / "paper.json").read_text())
    assert payload["model"] == "paper" and payload["command"].startswith("fh-screen evaluate --study stability")
    assert 0 < payload["accuracy"]["mae_abs_lt_5_ev_per_atom"] <= payload["accuracy"]["p90_ae_ev_per_atom"]
    assert payload["hull_classification"]["n_systems"] == 40 and payload["hull_classification"]["n"] >= 40
    rediscovery = payload["rediscovery"]
    assert rediscovery["n_systems"] == 4 and rediscovery["n_hidden"] >= 4
    for rule in rediscovery["rules"].values():
        assert 0 <= rule["recall_at_10"] <= rule["recall_at_50"] <= 1
    assert payload["calibration"]["coverage_90"] is None  # a single network has no σ
    assert (tmp_path / "evaluation" / "paper.png").read_bytes()[:8] == PNG_MAGIC
    assert "recall@10" in result.output


def test_cli_evaluate_stability_bad_model_is_one_line_error(tmp_path):
    from typer.testing import CliRunner

    from fh_screen.cli import build_app

    result = CliRunner().invoke(build_app(), ["evaluate", "--study", "stability", "--model", "no-such-model",
                                              "--output-dir", str(tmp_path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert not (tmp_path / "evaluation").exists()


def test_cli_evaluate_stability_refuses_a_value_that_is_no_number_in_one_line(oqmd_train_raw, tmp_path):
    """A text ΔH_f in --val ended the stability study with a ValueError traceback (exit code 1)."""
    from typer.testing import CliRunner

    from fh_screen.cli import build_app

    train, val = tmp_path / "train.csv", tmp_path / "val.csv"
    oqmd_train_raw.head(2000).to_csv(train, index=False)
    table = oqmd_train_raw.iloc[2000:2500].reset_index(drop=True)
    table.assign(target=table["target"].astype(object).where(table.index != 3, "n/a")).to_csv(val, index=False)
    result = CliRunner().invoke(build_app(), ["evaluate", "--study", "stability", "--model", "paper", "--systems", "2",
                                              "--hull-systems", "2", "--train", str(train), "--val", str(val),
                                              "--output-dir", str(tmp_path / "out")])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert result.output.splitlines()[-1] == (f"error: {val}: line 5: target 'n/a' is not a finite number (ΔH_f in "
                                              f"eV/atom; 1 such rows)")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("study", ["cv", "stability", "claims"])
def test_cli_evaluate_refuses_an_output_dir_it_cannot_write_before_the_study_runs(oqmd_slice_csv, tmp_path, study):
    """An --output-dir that is a file (or holds a file where the study's folder goes) failed only when writing,
    after every run of the study, with a bare 'Not a directory' naming no option."""
    from typer.testing import CliRunner

    from fh_screen.cli import build_app

    taken, holder = tmp_path / "notes.txt", tmp_path / "results"
    taken.write_text("mine")
    holder.mkdir()
    sub = "study" if study == "cv" else "evaluation"
    (holder / sub).write_text("mine")
    quick = (["--folds", "2", "--max-rows", "40", "--epochs", "1"] if study == "cv"
             else ["--model", "paper", "--systems", "2", "--hull-systems", "2"])
    for output, culprit in ((taken, taken), (taken / "deeper", taken), (holder, holder / sub)):
        result = CliRunner().invoke(build_app(), ["evaluate", "--study", study, "--train", str(oqmd_slice_csv), "--val",
                                                  str(oqmd_slice_csv), *quick, "--output-dir", str(output)])
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert result.output.splitlines() == [f"error: --output-dir {output}: {culprit} is a file, not a folder"]
    assert taken.read_text() == "mine" and sorted(p.name for p in holder.iterdir()) == [sub]


@pytest.mark.parametrize(("args", "line"), [
    (["--prefilter", "no-such-model"], "error: --prefilter: no model named 'no-such-model' (shipped: "),
    (["--model", "no-such-model"], "error: --model: no model named 'no-such-model' (shipped: "),
])
def test_cli_evaluate_names_the_model_option_at_fault_before_reading_data(tmp_path, args, line):
    """--prefilter was reported as 'prefilter_model: ...' (the API's field), after the data files were read."""
    from typer.testing import CliRunner

    from fh_screen.cli import build_app

    for study in ("stability", "claims"):
        result = CliRunner().invoke(build_app(), ["evaluate", "--study", study, *args, "--train", str(tmp_path / "no.csv"),
                                                  "--output-dir", str(tmp_path / "out")])
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert len(result.output.splitlines()) == 1 and result.output.startswith(line), result.output
    assert list(tmp_path.iterdir()) == []
