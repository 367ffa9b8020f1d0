"""Prescreen jobs and makers: real screens run through jobflow with real stores."""

from __future__ import annotations

import pytest
import torch
from jobflow import Flow, JobStore, run_locally
from maggma.stores import MemoryStore

from fh_screen.candidates import ChemsysError
from fh_screen.jobs import PrescreenDocument, PrescreenMaker, read_output, select_candidates
from fh_screen.jobs.prescreen import enumerate_job, predict_job, rank_job, run_prescreen, select_job
from fh_screen import Predictor
from fh_screen.screening import ScreenOptions, screen

torch.set_num_threads(1)

SMALL = {"max_atoms": 6, "charge_neutral": False}


def _store() -> JobStore:
    return JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})


def test_prescreen_maker_defaults_build_a_job():
    job = PrescreenMaker().make("O-Li-Fe")
    assert job.function_args[0] == "Fe-Li-O"
    assert job.output_schema is PrescreenDocument
    assert job.name == "fh-screen prescreen Fe-Li-O"


def test_bad_chemsys_fails_at_make_with_one_line():
    with pytest.raises(ChemsysError) as info:
        PrescreenMaker().make("Li-Qx-O")
    assert "\n" not in str(info.value) and "Qx" in str(info.value)


def test_prescreen_job_output_in_store_matches_screen():
    maker = PrescreenMaker(top_n=3, reference=None, screen_options=SMALL)
    job = maker.make("Li-O")
    store = _store()
    run_locally(job, store=store, log=False, ensure_success=True)
    doc = read_output(store, job.uuid)
    assert isinstance(doc, PrescreenDocument)
    predictor = Predictor.from_name(None)
    assert (doc.model_name, doc.model_version, doc.weights_sha256) == (
        predictor.name, predictor.version, predictor.weights_sha256)
    assert doc.run_id and doc.chemsys == "Li-O"
    reference = screen("Li-O", predictor=predictor, options=ScreenOptions(**SMALL))
    assert [c.formula for c in doc.candidates] == list(reference.table["formula"])
    assert [c.rank for c in doc.candidates] == list(range(1, len(doc.candidates) + 1))
    assert doc.selected_formulas == [c.formula for c in doc.candidates if not c.is_known][:3]
    # the stored document is queryable as plain JSON too
    raw = store.query_one({"uuid": job.uuid})
    assert raw["output"]["selected_formulas"] == doc.selected_formulas


def test_selection_by_count_and_e_hull_cutoff():
    doc = run_prescreen("Li-Fe-O", reference=None, screen_options=SMALL, top_n=None)
    assert len(doc.selected) == len(doc.candidates) == doc.n_candidates
    cut = select_candidates(doc, top_n=None, e_hull_max_ev_per_atom=0.1)
    assert cut.selected and all(c.e_above_hull_pred_ev_per_atom <= 0.1 for c in cut.selected)
    assert len(cut.selected) == sum(c.e_above_hull_pred_ev_per_atom <= 0.1 for c in doc.candidates)
    both = select_candidates(doc, top_n=2, e_hull_max_ev_per_atom=0.1)
    assert both.selected == cut.selected[:2]
    assert both.selection == {"top_n": 2, "e_hull_max_ev_per_atom": 0.1, "include_known": False}


def test_known_compositions_are_excluded_unless_asked(oqmd_train_raw, tmp_path):
    path = tmp_path / "known.csv"
    rows = oqmd_train_raw[oqmd_train_raw["formula"].isin(["Li2O1", "Li1O2"])]
    assert len(rows) == 2
    rows.to_csv(path, index=False)
    doc = run_prescreen("Li-O", reference=str(path), screen_options=SMALL, top_n=None)
    known = {c.formula: c.known_dhf_ev_per_atom for c in doc.candidates if c.is_known}
    assert set(known) == {"Li2O", "LiO2"}
    assert known["Li2O"] == pytest.approx(float(rows.loc[rows["formula"] == "Li2O1", "target"].iloc[0]))
    assert not set(known) & set(doc.selected_formulas)
    with_known = select_candidates(doc, top_n=None, include_known=True)
    assert set(known) <= set(with_known.selected_formulas)


def test_nothing_selected_and_screen_errors_are_reported_not_raised():
    empty = run_prescreen("Li-O", reference=None, screen_options=SMALL, e_hull_max_ev_per_atom=-1.0)
    assert empty.candidates and not empty.selected
    assert any("no candidate passed" in p.message for p in empty.problems)
    too_big = run_prescreen("Li-Fe-O", reference=None, screen_options={"max_atoms": 20, "max_candidates": 10})
    assert not too_big.candidates and not too_big.selected
    assert any("above the limit" in p.message for p in too_big.problems)


def test_small_jobs_chain_and_agree_with_screen():
    enumerated = enumerate_job("Li-O", max_atoms=6)
    predicted = predict_job(enumerated.output["formulas"])
    ranked = rank_job(predicted.output, "Li-O", top_n=None)
    reselected = select_job(ranked.output, top_n=2)
    store = _store()
    run_locally(Flow([enumerated, predicted, ranked, reselected]), store=store, log=False, ensure_success=True)
    doc = read_output(store, ranked.uuid)
    reference = screen("Li-O", options=ScreenOptions(**SMALL)).table
    assert [c.formula for c in doc.candidates] == list(reference["formula"])
    assert [c.e_above_hull_pred_ev_per_atom for c in doc.candidates] == pytest.approx(
        list(reference["e_above_hull_pred_ev_per_atom"]), abs=1e-5)
    assert read_output(store, reselected.uuid).selected_formulas == [c.formula for c in doc.candidates][:2]
