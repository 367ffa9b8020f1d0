"""One persistence model (issue 9 point 3): predictions carry nothing screen-specific, every screen
(CLI or job) is one document in ``screens`` under a new run id, listed by ``fh-screen runs`` and
shown by ``fh-screen query --run``."""

from __future__ import annotations

import json

import pytest
from jobflow import run_locally
from jobs_fixtures import fh_settings, memory_job_store, reference_store  # noqa: F401 - fixtures
from typer.testing import CliRunner

from fh_screen.models.predictor import Predictor
from fh_screen.screening import ScreenOptions, screen
from fh_screen.store import FhScreenStore
from fh_screen.store import ScreenDoc, ScreenNotFoundError
from fh_screen.store.documents import RUN_ID_PATTERN, new_run_id
from fh_screen.store.stores import prediction_docs_from_frame


def test_screen_formulas_are_already_pymatgen_reduced_and_predictions_carry_no_screen_fields(tmp_path):
    predictor = Predictor.from_name("paper")
    result = screen("Li-Fe-P-O", predictor=predictor, options=ScreenOptions(max_atoms=10))
    fast = prediction_docs_from_frame(result.table, predictor, formulas_reduced=True)
    reference = prediction_docs_from_frame(result.table, predictor, formulas_reduced=False)
    assert [d["formula"] for d in fast] == [d["formula"] for d in reference]
    assert [d["chemsys"] for d in fast] == [d["chemsys"] for d in reference]
    assert not {"e_above_hull_pred_ev_per_atom", "run_id", "rank"} & set(fast[0])
    # built without pydantic's validation, every document is what validation gives
    from fh_screen.store.documents import PredictionDoc

    assert all(PredictionDoc.model_validate(d).model_dump() == d for d in fast)
    assert {type(d["dhf_pred_ev_per_atom"]) for d in fast} == {float} and {type(d["out_of_domain"]) for d in fast} == {bool}
    store = FhScreenStore.embedded(tmp_path / "store.sqlite")
    with store:
        assert store.save_predictions(result.table, predictor, formulas_reduced=True) == len(result.table)
        assert store.n_predictions() == len(result.table)
        saved = store.predictions_frame(chemsys="Fe-O")
    expected = {d["formula"] for d in reference if set(d["elements"]) <= {"Fe", "O"}}
    assert expected and set(saved["formula"]) == expected


def test_run_ids_have_one_format_and_sort_by_time():
    ids = [new_run_id() for _ in range(50)]
    assert all(RUN_ID_PATTERN.fullmatch(i) for i in ids) and len(set(ids)) == 50


def test_cli_screens_are_saved_listed_and_shown_and_never_overwritten(tmp_path, fh_settings):
    from fh_screen.cli import build_app

    app, runner = build_app(), CliRunner()
    result = runner.invoke(app, ["runs"])
    assert result.exit_code == 0 and "no saved screens yet" in result.output  # nothing saved yet, as on MongoDB
    ids = []
    for _ in range(2):
        result = runner.invoke(app, ["screen", "Li-O", "--max-atoms", "4", "--top", "2"])
        assert result.exit_code == 0, result.output
        run_id = result.output.split("fh-screen query --run ")[-1].split()[0]
        assert RUN_ID_PATTERN.fullmatch(run_id) and f"run {run_id}" in result.output  # the printed id is stored
        ids.append(run_id)
    assert ids[0] != ids[1]
    with FhScreenStore.from_settings() as store:
        docs = [store.get_screen(i) for i in ids]
        n_predictions = store.n_predictions()
    assert [d.origin for d in docs] == ["cli", "cli"] and docs[0].chemsys == "Li-O"
    assert docs[0].options == {**ScreenOptions().__dict__, "max_atoms": 4}
    assert n_predictions == docs[0].n_candidates  # the second run updated the same (formula, model) rows

    listing = tmp_path / "runs.json"
    result = runner.invoke(app, ["runs", "--chemsys", "O-Li", "--json", str(listing)])
    assert result.exit_code == 0, result.output
    assert [r["run_id"] for r in json.loads(listing.read_text())] == ids[::-1]  # newest first
    result = runner.invoke(app, ["runs"])
    assert result.exit_code == 0 and ids[0] in result.output and ids[1] in result.output

    shown = tmp_path / "screen.json"
    result = runner.invoke(app, ["query", "--run", ids[0], "--json", str(shown)])
    assert result.exit_code == 0, result.output
    assert ScreenDoc.model_validate_json(shown.read_text()) == docs[0]
    result = runner.invoke(app, ["query", "--run", ids[0], "--limit", "3"])
    assert result.exit_code == 0 and docs[0].candidates[0].formula in result.output and "max_atoms=4" in result.output
    result = runner.invoke(app, ["query", "--run", "20200101T000000-deadbeef"])
    assert result.exit_code == 2 and "no screen with run id" in result.output and "Traceback" not in result.output


def test_cli_and_job_write_the_same_document(tmp_path, fh_settings):
    """A prescreen job's output, a job's saved screen and a CLI screen: one schema, one collection."""
    from fh_screen.cli import build_app
    from fh_screen.jobs import PrescreenMaker, read_output

    reference_store(fh_settings / "fh_screen.sqlite", "Li-O")  # the configured store knows Li-O
    job = PrescreenMaker(top_n=2, screen_options={"max_atoms": 4, "charge_neutral": True}).make("Li-O")
    jobs = memory_job_store()
    run_locally(job, store=jobs, log=False, ensure_success=True)
    output = read_output(jobs, job.uuid)
    # the job spends its DFT budget of 5 (PRESCREEN_DFT_BUDGET); the CLI asks for the same budget
    result = CliRunner().invoke(build_app(), ["screen", "Li-O", "--max-atoms", "4", "--charge-neutral", "--top", "0",
                                              "--dft-budget", "5"])
    assert result.exit_code == 0, result.output
    with FhScreenStore.from_settings() as store:
        rows = store.screen_summaries(chemsys="Li-O")
        by_origin = {r["origin"]: store.get_screen(r["run_id"]) for r in rows}
    assert set(by_origin) == {"cli", "job"}
    assert by_origin["job"] == output  # the job's output is the stored document
    cli, saved = by_origin["cli"], by_origin["job"]
    assert set(cli.model_dump()) == set(saved.model_dump())
    assert cli.options == saved.options and cli.n_reference == saved.n_reference > 0
    assert [c.formula for c in cli.candidates] == [c.formula for c in saved.candidates]
    assert saved.selection["top_n"] == 2 and not cli.selection  # only the job selects


def test_a_screens_document_is_never_overwritten_and_a_missing_one_is_one_line(tmp_path):
    from fh_screen.store.stores import ScreenExistsError

    store = FhScreenStore.embedded(tmp_path / "s.sqlite")
    doc = ScreenDoc(chemsys="Li-O", model_name="m", model_version="1")
    with store:
        assert store.save_screen(doc) == doc.run_id
        with pytest.raises(ScreenExistsError):
            store.save_screen(doc.model_dump())
        with pytest.raises(ScreenNotFoundError) as info:
            store.get_screen("nope")
    assert "\n" not in str(info.value)


def test_a_cascaded_screen_stores_only_the_model_s_own_predictions(tmp_path, oqmd_dir):
    """Rows the fast prefilter predicted are never saved under the slow model's identity."""
    from fh_screen.models.predictor import Predictor
    from fh_screen.screening import ScreenOptions, screen
    from fh_screen.store import FhScreenStore

    model = Predictor.from_name("attention-ensemble")
    result = screen("Li-Fe-O", predictor=model, options=ScreenOptions(max_atoms=10, refine_top=40))
    refined = result.table[result.table["refined"]]
    assert result.prefilter and 0 < len(refined) < len(result.table)
    with FhScreenStore.embedded(tmp_path / "s.sqlite") as store:
        n_saved = store.save_predictions(result.table, model, formulas_reduced=True)
        stored = store.predictions_frame()
    assert n_saved == len(refined) == len(stored)
    assert set(stored["formula"]) == set(refined["formula"])
    by_formula = dict(zip(refined["formula"], refined["dhf_pred_ev_per_atom"]))
    assert all(abs(by_formula[f] - v) < 1e-6 for f, v in zip(stored["formula"], stored["dhf_pred_ev_per_atom"]))


def test_keep_top_trims_the_stored_list_but_never_what_a_selection_hands_on(tmp_path, fh_settings):
    """A prescreen with keep_top=3 handed one candidate to DFT where the same screen without it handed five: the
    document kept only the best three rows and select() chose among them. The short list and the known
    compositions are now kept beyond keep_top; the rest is trimmed as before."""
    from fh_screen.jobs import PrescreenMaker, read_output

    reference_store(fh_settings / "fh_screen.sqlite", "Li-Fe-O")
    outputs = {}
    for keep_top in (None, 3):
        job = PrescreenMaker(model="paper", save_screen=False, screen_options={"max_atoms": 6},
                             keep_top=keep_top).make("Li-Fe-O")
        jobs = memory_job_store()
        run_locally(job, store=jobs, log=False, ensure_success=True)
        outputs[keep_top] = read_output(jobs, job.uuid)
    full, trimmed = outputs[None], outputs[3]
    assert len(full.selected) >= 2 and not trimmed.problems
    assert [c.formula for c in trimmed.selected] == [c.formula for c in full.selected]
    assert [c.formula for c in trimmed.candidates[:3]] == [c.formula for c in full.candidates[:3]]
    extra = [c.formula for c in trimmed.candidates[3:]]
    assert extra == [c.formula for c in full.candidates[3:] if c.selected or c.is_known]
    assert any(c.is_known for c in trimmed.candidates[3:]) and len(trimmed.candidates) < len(full.candidates)
