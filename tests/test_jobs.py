"""Prescreen jobs and makers: real screens run through jobflow with real stores.

Covers issue 9 points 1 (makers are jobs: schema, data routing, powerups, validation at make),
2 (the job runs screen()), 3 (the job's output is the screens document) and 4 (no silent
degradation of the reference).
"""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch
from jobflow import Flow, Job, run_locally
from jobs_fixtures import fh_settings, memory_job_store, reference_store  # noqa: F401 - fixtures
from maggma.stores import MemoryStore
from pymatgen.core import Composition

from fh_screen import Predictor
from fh_screen.chem.candidates import ChemsysError
from fh_screen.jobs import (
    DATA_KEYS,
    PRESCREEN_SCREEN_DEFAULTS,
    HandoffDocument,
    HandoffMaker,
    PrescreenError,
    PrescreenMaker,
    PrescreenToDFTMaker,
    ScreenDoc,
    StructureMaker,
    StructuresDocument,
    read_output,
    select_candidates,
)
from fh_screen.screening import ScreenOptions, screen
from fh_screen.store import FhScreenStore, SQLiteStore
from fh_screen.store.stores import ScreenExistsError

torch.set_num_threads(1)

SMALL = {"max_atoms": 6, "charge_neutral": False}


def _no_save(**kwargs) -> PrescreenMaker:
    return PrescreenMaker(save_screen=False, **kwargs)


# -- 1. every maker's job is its decorated make -------------------------------------------------


def test_every_maker_job_carries_its_maker_schema_and_data_routing():
    cases = [
        (_no_save(use_reference=False), ("O-Li",), ScreenDoc),
        (StructureMaker(), (["LiF"],), StructuresDocument),
        (HandoffMaker(dft_maker=None), (StructuresDocument(),), HandoffDocument),
    ]
    for maker, args, schema in cases:
        made = maker.make(*args)
        assert isinstance(made, Job) and isinstance(made.maker, type(maker))
        assert made.function.__func__ is type(maker).make  # the job *is* the maker's make
        assert made.output_schema is schema
        assert made._kwargs == {"data": list(DATA_KEYS)}
    prescreen = _no_save(use_reference=False).make("O-Li-Fe")
    assert prescreen.function_args == ("Fe-Li-O",) and prescreen.name == "fh-screen prescreen Fe-Li-O"


def test_update_maker_kwargs_reaches_the_prescreen_and_structure_jobs_and_changes_the_run(fh_settings, tmp_path):
    from atomate2.forcefields.jobs import ForceFieldRelaxMaker

    from fh_screen.jobs import chgnet_prerelax_maker

    flow = PrescreenToDFTMaker(
        prescreen_maker=_no_save(use_reference=False, top_n=3, screen_options={"max_atoms": 4, "charge_neutral": True}),
        structure_maker=StructureMaker(n_structures=3, max_sites=8),
        handoff_maker=HandoffMaker(dft_maker=None, prerelax_maker=chgnet_prerelax_maker(steps=500, fmax_ev_per_angstrom=1e-6)),
    ).make("Li-O")
    flow.update_maker_kwargs({"top_n": 1}, class_filter=PrescreenMaker)
    flow.update_maker_kwargs({"n_structures": 1, "max_sites": 6}, class_filter=StructureMaker)
    flow.update_maker_kwargs({"_set": {"screen_options->max_atoms": 3}}, class_filter=PrescreenMaker, dict_mod=True)
    flow.update_maker_kwargs({"steps": 3}, class_filter=ForceFieldRelaxMaker)  # nested in the handoff maker
    prescreen, structures, handoff = flow.jobs
    assert prescreen.maker.top_n == 1 and prescreen.maker.screen_options.max_atoms == 3
    assert prescreen.maker.screen_options.charge_neutral  # dict_mod changed one option, kept the others
    assert (structures.maker.n_structures, structures.maker.max_sites) == (1, 6)
    assert handoff.maker.prerelax_maker.steps == 3
    # a typo in an update fails at once, with one line
    with pytest.raises(PrescreenError, match="max_atom'.*did you mean 'max_atoms'"):
        flow.update_maker_kwargs({"_set": {"screen_options->max_atom": 3}}, class_filter=PrescreenMaker, dict_mod=True)

    # run it: the updated fields, not the original ones, are used (CHGNet relaxes one small cell)
    store = memory_job_store()
    run_locally(flow, store=store, log=False, ensure_success=True, create_folders=True, root_dir=str(tmp_path))
    doc = read_output(store, prescreen.uuid)
    made = read_output(store, structures.uuid)
    assert doc.options["max_atoms"] == 3 and doc.selection["top_n"] == 1
    assert len(doc.selected_formulas) == 1
    assert max(Composition(c.formula).num_atoms for c in doc.candidates) <= 3
    assert {s.formula for s in made.structures} == set(doc.selected_formulas)
    assert len(made.structures) == 1 and made.structures[0].n_sites <= 6
    relaxes = list(store.query({"name": {"$regex": "^CHGNet pre-relax"}}, properties=["output.output.n_steps"]))
    assert len(relaxes) == 1 and 0 < relaxes[0]["output"]["output"]["n_steps"] <= 5  # 3 steps, not 500
    handoff_doc = read_output(store, handoff.uuid)
    assert isinstance(handoff_doc, HandoffDocument) and handoff_doc.formulas == doc.selected_formulas


def test_screen_options_are_typed_and_validated_when_the_job_is_made():
    with pytest.raises(PrescreenError) as info:
        PrescreenMaker(screen_options={"max_atom": 6})
    assert "did you mean 'max_atoms'" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(PrescreenError, match="max_atoms"):
        PrescreenMaker(screen_options={"max_atoms": "6"})
    with pytest.raises(PrescreenError, match="charge_neutral"):
        PrescreenMaker(screen_options={"charge_neutral": 1})
    maker = PrescreenMaker()
    maker.screen_options = {"max_atoms": 6, "chrge_neutral": True}  # set after construction: caught at make()
    with pytest.raises(PrescreenError, match="chrge_neutral"):
        maker.make("Li-O")
    maker = PrescreenMaker(top_n=-1)
    with pytest.raises(PrescreenError, match="top_n"):
        maker.make("Li-O")
    with pytest.raises(PrescreenError, match="reference_store must be a maggma Store"):
        PrescreenMaker(reference_store="train.csv").make("Li-O")
    with pytest.raises(ChemsysError) as info:
        PrescreenMaker().make("Li-Qx-O")
    assert "\n" not in str(info.value) and "Qx" in str(info.value)
    # the size limit is checked at make(), before any worker runs
    with pytest.raises(PrescreenError, match="above the limit"):
        PrescreenMaker(screen_options={"max_atoms": 20, "max_candidates": 10}).make("Li-Fe-O")
    # options and a mapping of them are the same options (the DFT budget for both)
    assert (PrescreenMaker(screen_options=ScreenOptions(max_atoms=5)).screen_options
            == PrescreenMaker(screen_options={"max_atoms": 5}).screen_options == ScreenOptions(max_atoms=5, dft_budget=5))


def test_maker_and_cli_defaults_agree_except_where_documented():
    from fh_screen.cli.screen import screen_command

    cli = {name: p.default.default for name, p in inspect.signature(screen_command).parameters.items()
           if hasattr(p.default, "default")}
    base = ScreenOptions()
    # the CLI's options are ScreenOptions' defaults
    assert (cli["max_atoms"], cli["max_per_element"], cli["charge_neutral"], not cli["exclude_known"],
            cli["max_candidates"], cli["force"], cli["tolerance"], cli["model"]) == (
        base.max_atoms, base.max_per_element, base.charge_neutral, base.include_known, base.max_candidates,
        base.force, base.e_hull_tolerance_ev_per_atom, PrescreenMaker().model)
    maker = PrescreenMaker().screen_options
    differing = {f.name for f in dataclasses.fields(ScreenOptions) if getattr(maker, f.name) != getattr(base, f.name)}
    assert differing == set(PRESCREEN_SCREEN_DEFAULTS)


def test_a_default_prescreen_screens_with_the_makers_own_defaults(tmp_path):
    """PRESCREEN_SCREEN_DEFAULTS act: at most 12 atoms, charge-balanced new candidates only, recorded in the document."""
    import numpy as np

    from fh_screen.chem.oxidation import charge_neutral_mask

    reference = reference_store(tmp_path / "ref.sqlite", "Li-Fe-O")
    screens = SQLiteStore(tmp_path / "screens.sqlite", "screens", key="run_id")
    job = PrescreenMaker(reference_store=reference, screens_store=screens, keep_top=None).make("Li-Fe-O")
    store = memory_job_store()
    run_locally(job, store=store, log=False, ensure_success=True)
    doc = read_output(store, job.uuid)
    assert {name: doc.options[name] for name in PRESCREEN_SCREEN_DEFAULTS} == PRESCREEN_SCREEN_DEFAULTS
    new = [c for c in doc.candidates if not c.is_known]
    counts = np.array([[int(Composition(c.formula)[e]) for e in ("Fe", "Li", "O")] for c in new])
    assert len(new) > 5 and counts.sum(axis=1).max() <= PRESCREEN_SCREEN_DEFAULTS["max_atoms"]
    assert charge_neutral_mask(counts, ("Fe", "Li", "O")).all()
    # the same system under ScreenOptions() (the CLI's defaults) has uncharged and larger candidates
    wide = screen("Li-Fe-O", known=None, options=ScreenOptions(refine_top=None), predictor=Predictor.from_name("paper"))
    assert len(wide.table) > len(new)


# -- 2 + 3. the job runs screen() and returns the screens document ---------------------------------


def test_prescreen_job_runs_screen_and_its_output_is_the_stored_screens_document(tmp_path):
    reference = reference_store(tmp_path / "ref.sqlite", "Li-O")
    screens = SQLiteStore(tmp_path / "screens.sqlite", "screens", key="run_id")
    maker = PrescreenMaker(top_n=3, reference_store=reference, screens_store=screens, screen_options=SMALL)
    job = maker.make("Li-O")
    store = memory_job_store()
    run_locally(job, store=store, log=False, ensure_success=True)
    doc = read_output(store, job.uuid)
    assert isinstance(doc, ScreenDoc) and doc.origin == "job"

    predictor = Predictor.from_name(None)
    assert (doc.model_name, doc.model_version, doc.weights_sha256) == (
        predictor.name, predictor.version, predictor.weights_sha256)
    with FhScreenStore(reference=reference) as ref:
        known = ref.reference_frame(chemsys="Li-O")
    expected = screen("Li-O", predictor=predictor, known=known, options=ScreenOptions(**SMALL))
    assert [c.formula for c in doc.candidates] == list(expected.table["formula"])
    assert [c.e_above_hull_pred_ev_per_atom for c in doc.candidates] == pytest.approx(
        list(expected.table["e_above_hull_pred_ev_per_atom"]), abs=1e-9)
    assert doc.n_reference == expected.n_known > 0 and {c.formula for c in doc.candidates if c.is_known} >= {"Li2O"}
    assert doc.selected_formulas == [c.formula for c in doc.candidates if not c.is_known][:3]
    # the prescreen spends its DFT budget: a mapping without one gets PRESCREEN_DFT_BUDGET
    assert doc.options == dataclasses.asdict(ScreenOptions(**SMALL, dft_budget=5))

    # the same document is in the screens collection, under the same run id
    with FhScreenStore(screens=screens) as saved:
        stored = saved.get_screen(doc.run_id)
    assert stored.model_dump(exclude={"created_at"}) == doc.model_dump(exclude={"created_at"})
    # the ranked list went to the JobStore's data store; the small fields stay queryable
    raw = store.query_one({"uuid": job.uuid})
    assert raw["output"]["selected_formulas"] == doc.selected_formulas
    assert raw["output"]["candidates"]["store"] == "data"


def test_a_new_prescreen_never_overwrites_an_earlier_one(tmp_path):
    reference = reference_store(tmp_path / "ref.sqlite", "Li-O")
    screens = SQLiteStore(tmp_path / "screens.sqlite", "screens", key="run_id")
    maker = PrescreenMaker(top_n=1, reference_store=reference, screens_store=screens, screen_options=SMALL)
    store = memory_job_store()
    first, second = maker.make("Li-O"), maker.update_kwargs({"top_n": 2}).make("Li-O")
    run_locally(Flow([first, second]), store=store, log=False, ensure_success=True)
    docs = [read_output(store, j.uuid) for j in (first, second)]
    with FhScreenStore(screens=screens) as saved:
        rows = saved.screen_summaries(chemsys="O-Li")
        assert [r["run_id"] for r in rows] == sorted((d.run_id for d in docs), reverse=True)
        assert [len(saved.get_screen(d.run_id).selected_formulas) for d in docs] == [1, 2]
        with pytest.raises(ScreenExistsError):
            saved.save_screen(docs[0])


def test_selection_by_count_and_e_hull_cutoff():
    doc = _no_save(use_reference=False, screen_options=SMALL, top_n=None).prescreen("Li-Fe-O")
    # the screen's own rule (as the CLI's "selected"): new, predicted ΔH_f < 0, not far above the hull
    assert len(doc.selected) == sum(c.selected and len(Composition(c.formula).elements) >= 2 for c in doc.candidates)
    assert doc.selected and all(c.dhf_pred_ev_per_atom < 0 for c in doc.selected)
    assert any(c.dhf_pred_ev_per_atom >= 0 for c in doc.candidates if not c.is_known)  # there were some to leave out
    cut = select_candidates(doc, top_n=None, e_hull_max_ev_per_atom=0.1)
    assert cut.selected and all(c.e_above_hull_pred_ev_per_atom <= 0.1 for c in cut.selected)
    both = select_candidates(doc.model_dump(), top_n=2, e_hull_max_ev_per_atom=0.1)
    assert both.selected == cut.selected[:2]
    assert both.selection == {"top_n": 2, "e_hull_max_ev_per_atom": 0.1, "select_known": False}
    empty = doc.select(e_hull_max_ev_per_atom=-50.0)
    assert not empty.selected and any("no candidate passed" in p.message for p in empty.problems)


# -- 4. no silent degradation ----------------------------------------------------------------------


def test_missing_or_unreadable_reference_fails_the_job_with_one_line(tmp_path, fh_settings):
    empty = SQLiteStore(tmp_path / "empty.sqlite", "reference", key="formula")
    with pytest.raises(PrescreenError) as info:
        _no_save(reference_store=empty, screen_options=SMALL).prescreen("Li-O")
    assert "no reference entries for Li-O" in str(info.value) and "use_reference=False" in str(info.value)
    assert "\n" not in str(info.value)
    # only entries of another system: still none for this one
    other = reference_store(tmp_path / "other.sqlite", "Na-Cl")
    with pytest.raises(PrescreenError, match="no reference entries for Li-O"):
        _no_save(reference_store=other, screen_options=SMALL).prescreen("Li-O")
    # a misspelt source: the line names it and the sources the store holds, as the CLI's note does
    mine = reference_store(tmp_path / "mine.sqlite", "Li-O")
    with pytest.raises(PrescreenError) as info:
        _no_save(reference_store=mine, screen_options=SMALL, sources="oqdm").prescreen("Li-O")
    assert "no reference entries of source oqdm for Li-O" in str(info.value)
    assert "source oqdm: no reference entry in the store (it holds oqmd)" in str(info.value) and "\n" not in str(info.value)
    corrupt = tmp_path / "corrupt.sqlite"
    corrupt.write_bytes(b"not an sqlite file" * 100)
    with pytest.raises(PrescreenError) as info:
        _no_save(reference_store=SQLiteStore(corrupt, "reference", key="formula"), screen_options=SMALL).prescreen("Li-O")
    assert "cannot read reference entries for Li-O" in str(info.value) and str(corrupt) in str(info.value)
    # the default: the configured store (here empty) -> the job fails, nothing is stored as success
    job = _no_save(screen_options=SMALL).make("Li-O")
    store = memory_job_store()
    run_locally(job, store=store, log=False)
    assert store.query_one({"uuid": job.uuid}) is None
    # said explicitly: no reference wanted
    doc = _no_save(use_reference=False, screen_options=SMALL).prescreen("Li-O")
    assert doc.reference is None and doc.n_reference == 0 and doc.candidates


def test_reference_store_travels_with_the_job_so_a_worker_opens_the_same_database(tmp_path, fh_settings):
    from monty.json import MontyDecoder

    reference = reference_store(tmp_path / "shared_ref.sqlite", "Li-O")
    maker = PrescreenMaker(top_n=2, reference_store=reference, screen_options=SMALL)
    job = maker.make("Li-O")
    # what a FireWorks / jobflow-remote worker gets: the serialised job
    worker_job = MontyDecoder().process_decoded(job.as_dict())
    assert isinstance(worker_job.maker.reference_store, SQLiteStore)
    assert worker_job.maker.reference_store.database_path == str(tmp_path / "shared_ref.sqlite")
    store = memory_job_store()
    run_locally(worker_job, store=store, log=False, ensure_success=True)
    doc = read_output(store, job.uuid)
    assert doc.n_reference > 0 and str(tmp_path / "shared_ref.sqlite") in doc.reference
    # save_screen defaults to the configured store: the worker's screens collection has it
    with FhScreenStore.from_settings() as configured:
        assert configured.get_screen(doc.run_id).selected_formulas == doc.selected_formulas


def test_memory_reference_store_is_accepted(tmp_path):
    from fh_screen.store.bootstrap import packaged_reference_frame
    from fh_screen.store import ReferenceEntryDoc

    memory = MemoryStore("ref", key="formula")
    memory.connect()
    frame = packaged_reference_frame("Li-O")
    memory.update([ReferenceEntryDoc.from_formula(f, v).model_dump()
                   for f, v in zip(frame["formula"], frame["dhf_ev_per_atom"])], key="formula")
    doc = _no_save(reference_store=memory, screen_options=SMALL).prescreen("Li-O")
    assert doc.n_reference == len(frame[frame["nelements"] >= 2])
