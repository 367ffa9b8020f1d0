"""PredictionBuilder under maggma's runners (serial, multiprocessing) and the store CLI commands."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pandas as pd
import pytest
from maggma.cli.multiprocessing import multi
from maggma.cli.serial import serial
from store_fixtures import isolated_settings, train_slice_csv  # noqa: F401 - fixtures
from typer.testing import CliRunner

from fh_screen.data import load_oqmd_csv
from fh_screen.store import FhScreenStore
from fh_screen.store.builders import PredictionBuilder
from fh_screen.store.ingest import ingest_frame


@pytest.fixture
def store_500(tmp_path, train_slice_csv):  # noqa: F811
    tidy = load_oqmd_csv(train_slice_csv)[0].head(500)
    store = FhScreenStore.embedded(tmp_path / "b.sqlite").connect()
    ingest_frame(store.reference, tidy)
    store.close()
    return store, tidy


def _check_predictions(store, tidy):
    from fh_screen.models.predictor import Predictor

    predictor = Predictor.from_name(None, threads=1)
    with store:
        docs = {d["formula"]: d for d in store.prediction_docs()}
    assert set(docs) == set(tidy["formula"])
    sample = sorted(docs)[:50]
    expected = predictor.predict_formulas(sample).dhf_ev_per_atom
    assert np.allclose([docs[f]["dhf_pred_ev_per_atom"] for f in sample], expected, atol=1e-5)
    assert {docs[f]["model_weights_sha256"] for f in sample} == {predictor.weights_sha256}
    # (formula, model) -> ΔH_f, σ: no run id, no screen fields
    assert not {"run_id", "e_above_hull_pred_ev_per_atom"} & set(docs[sample[0]])


def test_builder_serial_is_incremental(store_500):
    store, tidy = store_500
    builder = PredictionBuilder(store.reference, store.predictions, batch_size=200)
    serial(builder, no_bars=True)
    _check_predictions(store, tidy)
    again = PredictionBuilder(store.reference, store.predictions, batch_size=200)
    again.connect()
    assert list(again.get_items()) == []
    with store:
        store.reference.update({"formula": "LiFePO4", "elements": ["Fe", "Li", "O", "P"], "chemsys": "Fe-Li-O-P",
                                "nelements": 4, "dhf_ev_per_atom": -2.0, "passed_outlier_filter": True})
    again.connect()
    items = list(again.get_items())
    assert [item["formulas"] for item in items] == [["LiFePO4"]]


def test_builder_multiprocessing(store_500):
    store, tidy = store_500
    builder = PredictionBuilder(store.reference, store.predictions, batch_size=100, chunk_size=2)
    asyncio.run(multi(builder, num_processes=2, no_bars=True))
    _check_predictions(store, tidy)


def test_cli_ingest_query_predict(tmp_path, train_slice_csv, isolated_settings):  # noqa: F811
    from fh_screen.cli import build_app

    app = build_app()
    runner = CliRunner()
    result = runner.invoke(app, ["query", "--chemsys", "Li-O"])
    assert result.exit_code == 2 and "fh-screen ingest" in result.output
    result = runner.invoke(app, ["ingest", str(train_slice_csv)])
    assert result.exit_code == 0, result.output
    tidy, _ = load_oqmd_csv(train_slice_csv)
    assert f"inserted {len(tidy)}, updated 0, unchanged 0" in result.output
    result = runner.invoke(app, ["ingest", str(train_slice_csv)])
    assert f"inserted 0, updated 0, unchanged {len(tidy)}" in result.output
    assert (isolated_settings / "fh_screen.sqlite").is_file()

    out = tmp_path / "ref.json"
    result = runner.invoke(app, ["query", "--chemsys", "Ta-Te-Zr", "--kind", "reference", "--json", str(out)])
    assert result.exit_code == 0, result.output
    docs = json.loads(out.read_text())
    assert docs and all(set(d["elements"]) <= {"Ta", "Te", "Zr"} for d in docs)
    assert {"formula", "dhf_ev_per_atom", "elements", "chemsys", "nelements"} <= set(docs[0])

    with FhScreenStore.from_settings() as store:
        from fh_screen.models.predictor import Predictor

        predictor = Predictor.from_name(None, threads=1)
        formulas = [d["formula"] for d in docs]
        frame = pd.DataFrame({"formula": formulas, "dhf_pred_ev_per_atom": predictor.predict_formulas(formulas).dhf_ev_per_atom})
        store.save_predictions(frame, predictor)
    csv_path = tmp_path / "both.csv"
    result = runner.invoke(app, ["query", "-c", "Zr-Te-Ta", "--csv", str(csv_path)])
    assert result.exit_code == 0, result.output
    both = pd.read_csv(csv_path)
    assert len(both) == len(docs)
    assert np.allclose(both["dhf_error_ev_per_atom"], both["dhf_pred_ev_per_atom"] - both["dhf_ev_per_atom"])
    result = runner.invoke(app, ["query", "-c", "Zr-Te-Ta", "--limit", "3"])
    assert result.exit_code == 0 and "pred − DFT" in result.output
    result = runner.invoke(app, ["query", "--chemsys", "Li-Qq"])
    assert result.exit_code == 2 and "unknown element 'Qq'" in result.output  # the screen's chemsys parser
    result = runner.invoke(app, ["query", "--chemsys", "Li,O"])
    assert result.exit_code == 2 and "malformed chemical system" in result.output
    result = runner.invoke(app, ["query", "--min-dhf", "1", "--max-dhf", "0"])
    assert result.exit_code == 2 and "empty" in result.output
    result = runner.invoke(app, ["ingest", str(tmp_path / "missing.csv")])
    assert result.exit_code == 2 and "not found" in result.output


def test_cli_corrupt_store_is_one_line_error(tmp_path, isolated_settings):  # noqa: F811
    from fh_screen.cli import build_app

    isolated_settings.mkdir(parents=True)
    bad = isolated_settings / "fh_screen.sqlite"
    bad.write_bytes(b"not sqlite" * 500)
    result = CliRunner().invoke(build_app(), ["query", "--chemsys", "Li-O"])
    assert result.exit_code == 2
    assert str(bad) in result.output and "Traceback" not in result.output


def test_predict_store_refuses_a_store_that_is_not_there_as_query_does(tmp_path, store_500, isolated_settings):  # noqa: F811
    """`predict-store --store typo.sqlite` used to create an empty store and say "0 new predictions" (exit 0)
    where query, runs and results say "no store at ...": it is refused the same way, and nothing is created."""
    from fh_screen.cli import build_app

    runner = CliRunner()
    typo = tmp_path / "typo.sqlite"
    for command in ("predict-store", "query"):
        result = runner.invoke(build_app(), [command, "--store", str(typo)])
        assert result.exit_code == 2 and result.output.count("\n") == 1, (command, result.output)
        assert result.output.startswith(f"error: no store at {typo}: run `fh-screen ingest FILE --store {typo}` first")
    configured = runner.invoke(build_app(), ["predict-store"])  # the configured store, none yet (reference_data off)
    assert configured.exit_code == 2 and "no store at" in configured.output and "Traceback" not in configured.output
    assert not typo.exists() and not isolated_settings.exists()
    store, tidy = store_500
    made = runner.invoke(build_app(), ["predict-store", "--store", str(tmp_path / "b.sqlite")])
    assert made.exit_code == 0 and f"{len(tidy):,} new predictions" in made.output, made.output
