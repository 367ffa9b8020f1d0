"""Bad input at the CLI's doors: one line, exit 2, nothing written; model identity of a user-trained model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from store_fixtures import fresh_machine
from typer.testing import CliRunner

from fh_screen.cli import build_app

runner = CliRunner()


@pytest.fixture
def settings_env(tmp_path, monkeypatch) -> Path:
    return fresh_machine(tmp_path, monkeypatch, reference_data=False)


def _one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error")]
    assert len(errors) == 1, result.output
    return errors[0]


def test_query_limit_below_zero_is_refused(settings_env):
    line = _one_error_line(runner.invoke(build_app(), ["query", "--limit", "-1"]))
    assert "--limit" in line and "-1" in line


def test_train_on_too_few_rows_is_one_line_and_writes_nothing(settings_env, oqmd_train_raw, tmp_path):
    small = tmp_path / "ten.csv"
    oqmd_train_raw.head(10).to_csv(small, index=False)
    out = tmp_path / "model"
    line = _one_error_line(runner.invoke(build_app(), ["train", str(small), "--output", str(out), "--epochs", "1"]))
    assert "10 usable rows" in line and "at least 100" in line
    assert not out.exists()


def test_a_user_trained_model_has_its_own_name_version_and_card(settings_env, oqmd_train_raw, tmp_path):
    from fh_screen.models.predictor import Predictor
    from fh_screen.store import FhScreenStore

    data = tmp_path / "rows.csv"
    oqmd_train_raw.sample(n=600, random_state=3).to_csv(data, index=False)
    line = _one_error_line(runner.invoke(build_app(), ["train", str(data), "--output", str(tmp_path / "x"), "--name", "paper"]))
    assert "shipped" in line
    out = tmp_path / "my-model"
    result = runner.invoke(build_app(), ["train", str(data), "--output", str(out), "--epochs", "2", "--patience", "1"])
    assert result.exit_code == 0, result.output
    model = Predictor.from_file(out / "model.pt")
    assert model.name == "my-model" and re.fullmatch(r"\d{8}-[0-9a-f]{8}", model.version)
    assert model.version.endswith(model.weights_sha256[:8])
    card = json.loads((out / "model_card.json").read_text())
    assert card["name"] == "my-model" and card["version"] == model.version
    assert card["identity_sha256"] == model.weights_sha256
    assert card["data"]["train_file"] == "rows.csv" and len(card["data"]["train_sha256"]) == 64

    # a screen with it stores its predictions under its own identity, beside the shipped model's
    for chosen in (str(out / "model.pt"), "paper"):
        result = runner.invoke(build_app(), ["screen", "Li-O", "--max-atoms", "4", "--model", chosen, "--top", "0",
                                             "--dft-budget", "2"])
        assert result.exit_code == 0, result.output
    with FhScreenStore.from_settings() as store:
        stored = store.predictions_frame(formula="Li2O")
        runs = store.screen_summaries(chemsys="Li-O")
    assert sorted(stored["model_name"]) == ["my-model", "paper"]
    assert set(stored["model_version"]) == {model.version, Predictor.from_name("paper").version}
    assert model.weights_sha256 in set(stored["model_weights_sha256"])
    assert {r["model_name"] for r in runs} == {"my-model", "paper"}

    result = runner.invoke(build_app(), ["runs"])
    assert result.exit_code == 0 and "selected: the run's short list" in result.output
    paper_run = next(r for r in runs if r["model_name"] == "paper")
    assert len(paper_run["selected_formulas"]) == 2  # the screen's own short list (the --dft-budget 2 best), not empty
    assert paper_run["selected_formulas"][0] in result.output


def test_screen_footer_explains_selected_and_refined(settings_env):
    result = runner.invoke(build_app(), ["screen", "Li-O", "--max-atoms", "4", "--model", "paper", "--top", "3", "--no-store"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "selected: the short list" in text and "refined: predicted by the screen's own model" in text


def test_runs_and_query_take_a_model_as_exports_name_it_and_say_which_models_a_store_holds(settings_env, tmp_path):
    store = str(tmp_path / "s.sqlite")
    saved = runner.invoke(build_app(), ["screen", "Li-O", "--model", "paper", "--max-atoms", "4", "--store", store])
    assert saved.exit_code == 0, saved.output
    run_id = saved.output.split("saved run ")[1].split()[0]
    listed = runner.invoke(build_app(), ["runs", "--model", "paper@1", "--store", store, "--json", "-"])
    assert [row["run_id"] for row in json.loads(listed.stdout)] == [run_id]
    for model in ("paper@9", "nosuch"):
        none = runner.invoke(build_app(), ["runs", "--model", model, "--chemsys", "Li-O", "--store", store])
        assert none.exit_code == 0
        assert none.output.strip() == f"no saved screens of Li-O by model {model} (the store holds screens of paper@1)"
    predicted = runner.invoke(build_app(), ["query", "--formula", "Li2O2", "--kind", "predicted", "--model", "paper@1",
                                            "--store", store, "--json", "-"])
    assert [(row["model_name"], row["model_version"]) for row in json.loads(predicted.stdout)] == [("paper", "1")]
    table = runner.invoke(build_app(), ["query", "--formula", "Li2O2", "--kind", "predicted", "--store", store],
                          env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "│ paper@1 " in table.output  # the table names it as --model takes it
    (tmp_path / "li2o.csv").write_text("formula,dhf_ev_per_atom\nLi2O,-1.98\n")
    assert runner.invoke(build_app(), ["ingest", str(tmp_path / "li2o.csv"), "--source", "mine", "--store", store]).exit_code == 0
    both = runner.invoke(build_app(), ["query", "--chemsys", "Li-O", "--store", store], env={"COLUMNS": "200"})
    rows = [line for line in both.output.splitlines() if "Li2O2" in line or "│ Li2O " in line]
    assert both.exit_code == 0 and len(rows) == 2 and "│ mine " in both.output
    assert not any("nan" in line for line in rows)  # a prediction-only row has no source: an empty cell


def test_the_screen_table_shows_p_stable_for_a_model_without_sigma_too(settings_env):
    """`paper` (one network, no σ) ranks by P(stable) like every model; its table used to hide the column."""
    from fh_screen import screen
    from fh_screen.screening import ScreenOptions

    result = runner.invoke(build_app(), ["screen", "Li-O", "--model", "paper", "--max-atoms", "4", "--no-store",
                                         "--top", "3"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    header, rows = result.output.split("┡")[0], result.output.split("┡")[1].split("└")[0].splitlines()[1:]
    assert "P(stable)" in header and "σ" not in header
    table = screen("Li-O", predictor="paper", options=ScreenOptions(max_atoms=4), save=False).table
    shown = [float(line.split("│")[5]) for line in rows]
    assert shown == [round(p, 2) for p in table["p_stable"].head(3)]


def test_runs_and_results_on_a_new_machine_answer_as_an_unused_mongodb_does(settings_env, tmp_path, monkeypatch):
    """Before anything is saved, ``runs`` and ``results`` say there is nothing yet and exit 0, on the embedded
    store (no file yet) as on a MongoDB database never used (it exited 2 with "no store at" on the embedded
    store). A ``--store`` path that does not exist is still refused (most likely a typo), and writes nothing."""
    import time

    import mongomock_ng
    from mongomock_ng.mongo_client import MongoClient

    from fh_screen.settings import FhScreenSettings

    def answers() -> dict:
        out = {}
        for command in ("runs", "results"):
            table = runner.invoke(build_app(), [command])
            listing = runner.invoke(build_app(), [command, "--json", "-"])
            assert table.exit_code == 0 and listing.exit_code == 0, table.output + listing.output
            assert "Traceback" not in table.output
            out[command] = (json.loads(listing.stdout), "yet" in table.output)
        return out

    embedded = answers()
    assert embedded == {"runs": ([], True), "results": ([], True)}
    assert not FhScreenSettings().store_path.exists()  # reading made no store
    run = runner.invoke(build_app(), ["query", "--run", "20260101-abc"])
    assert run.exit_code == 2 and "no screen has been saved yet" in run.output and len(run.output.splitlines()) == 1
    for command in ("runs", "results"):
        typo = runner.invoke(build_app(), [command, "--store", str(tmp_path / "typo.sqlite")])
        assert typo.exit_code == 2 and "no store at" in typo.output and not (tmp_path / "typo.sqlite").exists()

    monkeypatch.setattr(MongoClient, "close", lambda self: None)  # mongomock's close empties the whole server
    monkeypatch.setenv("FH_SCREEN_MONGO_URI", "mongodb://localhost:27017")
    monkeypatch.setenv("FH_SCREEN_MONGO_DATABASE", f"fh_unused_{time.time_ns()}")
    with mongomock_ng.patch(servers=(("localhost", 27017),)):
        assert answers() == embedded


def test_train_refuses_an_unusable_output_or_val_file_before_any_training(settings_env, oqmd_train_raw, tmp_path,
                                                                          monkeypatch):
    """``--output`` naming a file, or a folder under a file, and an unreadable ``--val`` failed only after
    every epoch had run (``File exists``, ``Not a directory``), the training lost."""
    import fh_screen.models.train as training
    from fh_screen.errors import FhScreenError

    data, taken, empty = tmp_path / "rows.csv", tmp_path / "notes.txt", tmp_path / "empty.csv"
    oqmd_train_raw.sample(n=300, random_state=3).to_csv(data, index=False)
    taken.write_text("mine")
    empty.write_text("")
    before = sorted(p.name for p in tmp_path.iterdir())
    for output, expected in ((taken, f"--output: model folder {taken} is a file, not a folder"),
                             (taken / "m", f"--output: model folder {taken / 'm'} cannot be made: {taken} is a file")):
        for recipe in ([], ["--recipe", "attention*1@1"]):
            result = runner.invoke(build_app(), ["train", str(data), "--output", str(output), "--epochs", "1", *recipe])
            line = _one_error_line(result)
            assert line.startswith(f"error: {expected}") and "epoch" not in result.output, result.output
    result = runner.invoke(build_app(), ["train", str(data), "--output", str(tmp_path / "m"), "--epochs", "1",
                                         "--val", str(empty)])
    assert str(empty) in _one_error_line(result) and "epoch" not in result.output, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before and taken.read_text() == "mine"

    def trained(*args, **kwargs):
        raise AssertionError("a member trained before the inputs were checked")

    monkeypatch.setattr(training, "fit", trained)
    monkeypatch.setattr(training, "prepare_attention_data", trained)
    with pytest.raises(FhScreenError, match="unrecognised format"):
        training.train_model(data, empty)
    with pytest.raises(FhScreenError, match="is a file, not a folder"):
        training.run_attention_training(data, taken, recipe="attention*1@1")
    with pytest.raises(FhScreenError, match="unrecognised format"):
        training.run_attention_training(data, tmp_path / "m", recipe="attention*1@1", val_path=empty)


@pytest.mark.parametrize(("args", "give"), [
    (["campaign", "--systems", "2"], "give --oracle FILE and --known FILE"),
    (["campaign", "--systems", "2", "--oracle", "oracle.csv"], "give --known FILE"),
    (["evaluate", "--study", "stability", "--model", "paper"], "give --train FILE and --val FILE"),
    (["evaluate", "--study", "claims", "--val", "val.csv"], "give --train FILE"),
    (["evaluate", "--study", "cv", "--train", "train.csv"], "give --val FILE"),
])
def test_a_new_user_without_the_oqmd_folder_is_told_which_files_to_give(settings_env, monkeypatch, tmp_path, args, give):
    """A machine without FH_SCREEN_OQMD_DIR was told 'no OQMD data folder: pass one' (pass what, where?)."""
    monkeypatch.delenv("FH_SCREEN_OQMD_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    extra = ["--json", "c.json"] if args[0] == "campaign" else ["--output-dir", "out"]
    line = _one_error_line(runner.invoke(build_app(), [*args, *extra]))
    assert line == (f"error: no OQMD data folder: {give}, or set FH_SCREEN_OQMD_DIR (or oqmd_dir in ~/.fh_screen.yaml) "
                    f"to the folder holding train.csv and val.csv")
    assert not (tmp_path / "c.json").exists() and not (tmp_path / "out").exists()


def test_train_refuses_a_folder_holding_the_users_own_files_and_trains_again_into_its_own(settings_env, oqmd_train_raw,
                                                                                         tmp_path):
    """``train -o FOLDER`` replaced a user's own README.md (and wrote a model among their files);
    a folder of an earlier training is trained into again."""
    import fh_screen.models.train as training
    from fh_screen.errors import FhScreenError

    data = tmp_path / "rows.csv"
    oqmd_train_raw.sample(n=300, random_state=3).to_csv(data, index=False)
    project = tmp_path / "project"
    project.mkdir()
    (project / "README.md").write_text("my notes")
    result = runner.invoke(build_app(), ["train", str(data), "--output", str(project), "--epochs", "1"])
    line = _one_error_line(result)
    assert line.startswith(f"error: --output: model folder {project} holds files a training did not write (README.md)")
    assert "epoch" not in result.output and sorted(p.name for p in project.iterdir()) == ["README.md"]
    assert (project / "README.md").read_text() == "my notes"
    with pytest.raises(FhScreenError, match=r"holds files a training did not write \(README.md\)"):
        training.run_attention_training(data, project, recipe="attention*1@1")
    (project / "README.md").unlink()
    (project / "results.csv").write_text("x")
    with pytest.raises(FhScreenError, match=r"\(results.csv\)"):
        training.check_model_folder(project)

    model = tmp_path / "model"
    for _ in range(2):  # a new folder, then the same folder again: an earlier training's files are its own
        result = runner.invoke(build_app(), ["train", str(data), "--output", str(model), "--epochs", "1"])
        assert result.exit_code == 0, result.output
    assert {"model.pt", "model_card.json", "README.md"} <= {p.name for p in model.iterdir()}
