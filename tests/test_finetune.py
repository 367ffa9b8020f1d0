"""The model learns (issue 19 point 3): fine-tuning on new entries with replay, refusal of a val regression, bad input.

Real data throughout: the new entries are 30 rows of val.csv (they play the user's calculations
and are set aside from the val check), the replay comes from the 5,000-row train.csv slice, the
check from 600 other val rows. The fully connected ``paper`` model (shipped) is the fast base; a
small attention ensemble built here runs the attention path (the default model's architecture;
its own timing is measured in docs/finetune.md).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from fh_screen.cli import build_app
from fh_screen.models.checkpoint import load_checkpoint
from fh_screen.models.finetune import FinetuneError, FinetuneOptions, entries_table, finetune, write_finetuned_model
from fh_screen.models.predictor import Predictor

torch.set_num_threads(1)
runner = CliRunner()
#: Small and quick: the defaults' shape at a tenth of the size.
QUICK = ["--replay-rows", "400", "--epochs", "3"]


@pytest.fixture(scope="module")
def files(oqmd_dir, oqmd_slice_csv, tmp_path_factory):
    """new.csv (30 real val rows, formula,dhf_ev_per_atom), val.csv slice (600 other rows), the train slice."""
    folder = tmp_path_factory.mktemp("finetune")
    val = pd.read_csv(oqmd_dir / "val.csv")
    new = val.iloc[:30].rename(columns={"target": "dhf_ev_per_atom"})
    new.to_csv(folder / "new.csv", index=False)
    val.iloc[1000:1600].to_csv(folder / "val.csv", index=False)
    return {"new": folder / "new.csv", "val": folder / "val.csv", "train": oqmd_slice_csv, "new_frame": new}


def _run(args):
    result = runner.invoke(build_app(), ["finetune", *args])
    return result, result.output


def test_finetune_learns_the_new_entries_and_the_card_reports_it(files, tmp_path):
    out = tmp_path / "paper-mine"
    result, text = _run([str(files["new"]), "--model", "paper", "--name", "paper-mine", "--train", str(files["train"]),
                         "--val", str(files["val"]), "--output", str(out), *QUICK])
    assert result.exit_code == 0, text
    card = json.loads((out / "model_card.json").read_text())
    metrics = card["finetune"]["metrics"]
    before, after = metrics["new_entries_before"]["mae_ev_per_atom"], metrics["new_entries_after"]["mae_ev_per_atom"]
    assert metrics["new_entries_before"]["n"] == 30 and after < 0.7 * before  # it learned them
    val_before = metrics["val_before"]["val_abs_dhf_lt_5"]["mae_ev_per_atom"]
    val_after = metrics["val_after"]["val_abs_dhf_lt_5"]["mae_ev_per_atom"]
    assert metrics["val_regression_ev_per_atom"] == pytest.approx(val_after - val_before) and val_after - val_before <= 0.002
    assert card["finetune"]["data"]["n_val"] == 600 and card["finetune"]["data"]["n_replay"] == 400
    assert card["finetune"]["base"] == "paper@1" and card["base_card"]["data"]["train_file"] == "train.csv"
    readme = (out / "README.md").read_text()
    assert f"{before:.4f} | {after:.4f}" in readme and f"{val_before:.4f} | {val_after:.4f}" in readme
    # a new identity: its own name and a dated version, never the shipped model's
    model = Predictor.from_name(out / "model.pt")
    assert model.name == "paper-mine" and re.fullmatch(r"\d{8}-" + model.weights_sha256[:8], model.version)
    assert card["version"] == model.version and f"paper-mine@{model.version}" in text
    predicted = model.predict_formulas(files["new_frame"]["formula"].tolist()).dhf_ev_per_atom
    assert np.mean(np.abs(predicted - files["new_frame"]["dhf_ev_per_atom"])) == pytest.approx(after, abs=1e-4)
    assert f"{before:.4f} → {after:.4f}" in text


def test_a_val_regression_is_refused_unless_forced(files, tmp_path):
    out = tmp_path / "reckless"
    reckless = [str(files["new"]), "--model", "paper", "--name", "reckless", "--train", str(files["train"]), "--val",
                str(files["val"]), "--output", str(out), "--learning-rate", "0.01", "--replay-rows", "0", "--epochs", "8"]
    result, text = _run(reckless)
    assert result.exit_code == 2, text
    errors = [line for line in text.splitlines() if line.startswith("error:")]  # progress lines come before it
    assert len(errors) == 1 and errors[0].startswith("error: refused: val MAE rose by") and text.strip().endswith(errors[0])
    assert not out.exists()  # nothing written
    forced, text = _run([*reckless, "--force"])
    assert forced.exit_code == 0, text
    card = json.loads((out / "model_card.json").read_text())
    assert card["finetune"]["forced"] is True and card["finetune"]["metrics"]["val_regression_ev_per_atom"] > 0.002
    assert "forced" in (out / "README.md").read_text()


def test_bad_input_is_one_line(files, tmp_path, monkeypatch):
    monkeypatch.setenv("FH_SCREEN_DATA_DIR", str(tmp_path / "data"))
    empty = tmp_path / "empty.csv"
    empty.write_text("formula,dhf_ev_per_atom\n")
    elements = tmp_path / "elements.csv"
    elements.write_text("formula,dhf_ev_per_atom\nFe,0.0\nO2,0.0\n")
    outlier = tmp_path / "outlier.csv"
    outlier.write_text("formula,dhf_ev_per_atom\nLiF,-30\nFe,0.0\n")
    store = tmp_path / "store.sqlite"
    from fh_screen.store import FhScreenStore, ReferenceEntryDoc

    with FhScreenStore.embedded(store) as fh_store:
        fh_store.reference.update([ReferenceEntryDoc.from_formula("LiF", -3.2).model_dump()], key=["formula", "source"])
    cases = {
        "not found": [str(tmp_path / "absent.csv")],
        "no usable new entries": [str(empty)],
        "two or more elements": [str(elements)],
        "set aside: 1 outliers outside (-20, 5) eV/atom, 1 pure elements": [str(outlier)],
        "no model named 'no-such-model'": [str(files["new"]), "--model", "no-such-model"],
        "one of them": [],
        "no reference entries of source 'chgnet'": ["--source", "chgnet", "--store", str(store)],
        "no store at": ["--source", "chgnet", "--store", str(tmp_path / "absent.sqlite")],
        "shipped with fh-screen": [str(files["new"]), "--model", "paper", "--name", "paper-ensemble"],
        "train file not found": [str(files["new"]), "--model", "paper", "--train", str(tmp_path / "no_train.csv")],
        "is a file: the new model needs a folder": [str(files["new"]), "--model", "paper", "--output", str(empty)],
    }
    for expected, args in cases.items():
        result, text = _run([*args, "--val", str(files["val"])] if args and "--train" not in args else args)
        assert result.exit_code == 2, (expected, text)
        assert text.startswith("error:") and expected in text and len(text.strip().splitlines()) == 1, (expected, text)
    with pytest.raises(FinetuneError, match="same"):
        finetune(Predictor.from_name("paper").checkpoint, entries_table(files["new"]), files["val"], files["val"])


def _tiny_attention(train_csv) -> "Checkpoint":  # noqa: F821
    """A one-member attention ensemble (the default model's architecture, small) trained briefly on the slice."""
    from fh_screen.models.train import prepare_attention_data
    from fh_screen.models.attention import AttentionSpec
    from fh_screen.models.checkpoint import Checkpoint
    from fh_screen.models.attention import AttentionTrainConfig
    from fh_screen.models.fit import train_attention_network

    spec = AttentionSpec(d_model=32, n_layers=1, n_heads=2, d_ff=64, d_head_hidden=32)
    data = prepare_attention_data(train_csv, max_rows=1500, seed=0)
    trained = train_attention_network(data.fit_indices, data.fit_fractions, data.fit_y_ev_per_atom, data.holdout_indices,
                                      data.holdout_fractions, data.holdout_y_ev_per_atom, spec,
                                      AttentionTrainConfig(epochs=2, batch_size=128, learning_rate=3e-3))
    from fh_screen.chem.formula import DEFAULT_ELEMENTS

    return Checkpoint(name="tiny-attention", version="1", spec=spec, elements=list(DEFAULT_ELEMENTS),
                      target_mean_ev_per_atom=trained.target_mean_ev_per_atom,
                      target_std_ev_per_atom=trained.target_std_ev_per_atom, member_state_dicts=[trained.state_dict],
                      metadata={"sigma_scale": 1.3, "member_weighting": "inverse_variance"})


def test_an_attention_model_finetunes_and_keeps_its_sigma_scale(files, tmp_path):
    base = _tiny_attention(files["train"])
    result = finetune(base, entries_table(files["new"]), files["train"], files["val"],
                      FinetuneOptions(replay_rows=300, epochs=3, learning_rate=1e-3, val_rows=200))
    metrics = result.report["metrics"]
    assert metrics["new_entries_after"]["mae_ev_per_atom"] < metrics["new_entries_before"]["mae_ev_per_atom"]
    assert result.report["data"]["n_val"] == 200
    written = write_finetuned_model(result, tmp_path / "tiny-ft")
    loaded = load_checkpoint(written / "model.pt")
    assert loaded.name == "tiny-attention-ft" and loaded.sigma_scale == 1.3
    assert loaded.metadata["member_weighting"] == "inverse_variance" and loaded.identity() != base.identity()
    mean, sigma = Predictor(loaded).predict_matrix(np.eye(94, dtype=np.float32)[[2, 7]] * 0.5 + np.eye(94, dtype=np.float32)[[7, 2]] * 0.5)
    assert np.isfinite(mean).all() and (sigma > 0).all()


def test_finetune_maker_learns_from_the_store_entries_of_a_source(files, tmp_path):
    """A flow ends with the FinetuneMaker: it reads the store's chgnet entries and writes the new model."""
    from jobflow import run_locally

    from fh_screen.jobs.finetune import FinetuneDocument, FinetuneMaker
    from fh_screen.jobs.jobstore import local_job_store
    from fh_screen.store import FhScreenStore, ReferenceEntryDoc

    store = tmp_path / "fh.sqlite"
    new = entries_table(files["new"])
    with FhScreenStore.embedded(store) as fh_store:  # the 30 "computed" entries as CHGNet results, one OQMD entry beside
        fh_store.reference.update([ReferenceEntryDoc.from_formula(f, v, source="chgnet").model_dump()
                                   for f, v in zip(new["formula"], new["dhf_ev_per_atom"])]
                                  + [ReferenceEntryDoc.from_formula("LiF", -3.2).model_dump()], key=["formula", "source"])
    maker = FinetuneMaker(model="paper", model_name="paper-loop", store_path=str(store), output_dir=str(tmp_path / "paper-loop"),
                          train_path=str(files["train"]), val_path=str(files["val"]),
                          options={"replay_rows": 400, "epochs": 3})
    job = maker.make()
    responses = run_locally(job, store=local_job_store(tmp_path / "jobs.sqlite"), log=False, ensure_success=True)
    doc = responses[job.uuid][1].output
    doc = FinetuneDocument(**doc) if isinstance(doc, dict) else doc
    assert doc.n_entries == 30 and doc.entries == "store source chgnet" and doc.model_name == "paper-loop"
    assert doc.new_entries_mae_after < doc.new_entries_mae_before and doc.val_mae_after - doc.val_mae_before <= 0.002
    assert Predictor.from_name(doc.model_path).version == doc.model_version
    with pytest.raises(FinetuneError, match="epoch"):
        FinetuneMaker(options={"epoch": 3}).make()
    with pytest.raises(FinetuneError, match="shipped"):
        FinetuneMaker(model_name="attention-ensemble").make()
