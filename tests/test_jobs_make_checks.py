"""A bad input to a Maker is refused in one line at ``make()``, and again when a powerup updates it.

The audit's cases: a powerup (``update_maker_kwargs``) that set a bad value or a typo was
accepted (``PrescreenMaker``) or refused with a bare ``TypeError``; powerups did not reach the
jobs of a ``BulkScreenMaker`` flow; ``make()`` raised ``AttributeError``/``TypeError`` (or
accepted and failed at run time) for a bad name, stage, input, switch or store file.
"""

from __future__ import annotations

import pytest
from jobflow import run_locally
from jobs_fixtures import fh_settings, memory_job_store  # noqa: F401 - fixtures
from pymatgen.core import Composition, Lattice, Structure

from fh_screen.errors import FhScreenError
from fh_screen.jobs import (
    HandoffMaker,
    PrescreenError,
    PrescreenMaker,
    PrescreenToDFTMaker,
    StructureMaker,
)
from fh_screen.jobs.bulk import BulkScreenMaker
from fh_screen.screening import ScreenOptions


def _one_line(info) -> str:
    message = str(info.value)
    assert message and "\n" not in message, message
    return message


# ---- a powerup re-validates every field (M2) ------------------------------------------------


@pytest.mark.parametrize("update, words", [
    ({"top_n": -1}, "top_n must be a non-negative integer"),
    ({"model": "papr"}, "no model named 'papr'"),
    ({"keep_top": "x"}, "keep_top must be a non-negative integer"),
    ({"reference_store": "x.sqlite"}, "reference_store must be a maggma Store"),
    ({"use_reference": "no"}, "use_reference must be True or False"),
    ({"name": 3}, "name must be a text"),
    ({"top_N": 2}, "PrescreenMaker has no field 'top_N' \\(did you mean 'top_n'\\?\\)"),
])
def test_a_powerup_on_a_prescreen_job_revalidates_every_field_in_one_line(update, words):
    job = PrescreenMaker(model="paper", screen_options={"max_atoms": 6}).make("Li-O")
    with pytest.raises(FhScreenError, match=words) as info:
        job.update_maker_kwargs(update)
    _one_line(info)
    assert job.maker.top_n == 5 and job.maker.model == "paper"  # the job is left as it was
    if "top_N" in update:
        assert isinstance(info.value, PrescreenError)
    job.update_maker_kwargs({"top_n": 2})  # a good update still goes through
    assert job.maker.top_n == 2


def test_a_powerup_typo_on_the_other_stages_is_one_line_not_a_type_error():
    flow = PrescreenToDFTMaker(prescreen_maker=PrescreenMaker(model="paper", screen_options={"max_atoms": 6}),
                               handoff_maker=HandoffMaker(dft_maker=None)).make("Li-O")
    for update, cls, words in [({"n_structure": 2}, StructureMaker, "no field 'n_structure' \\(did you mean "
                                                                        "'n_structures'\\?\\)"),
                               ({"use_random": "no"}, StructureMaker, "use_random must be True or False"),
                               ({"structures_per_formla": 2}, HandoffMaker, "no field 'structures_per_formla'"),
                               ({"name": None}, HandoffMaker, "name must be a text")]:
        with pytest.raises(FhScreenError, match=words) as info:
            flow.update_maker_kwargs(update, class_filter=cls)
        _one_line(info)


# ---- powerups reach the batch jobs of a bulk flow (M3) --------------------------------------


def test_a_powerup_reaches_every_batch_job_of_a_bulk_flow_and_revalidates_it():
    from fh_screen.jobs.bulk import BulkBatchMaker

    flow = BulkScreenMaker(model="paper", screen_options={"max_atoms": 6}, keep_top=100,
                           batch_size=1).make(["Li-O", "Fe-O"])
    assert [j.name for j in flow.jobs] == ["bulk screen 1", "bulk screen 2"]
    assert all(isinstance(j.maker, BulkBatchMaker) for j in flow.jobs)
    flow.update_maker_kwargs({"keep_top": 5}, class_filter=BulkScreenMaker)
    assert [j.maker.keep_top for j in flow.jobs] == [5, 5]
    flow.update_maker_kwargs({"_set": {"screen_options->charge_neutral": True}}, class_filter=BulkBatchMaker,
                             dict_mod=True)
    assert [j.maker.screen_options for j in flow.jobs] == [{"max_atoms": 6, "charge_neutral": True}] * 2
    for update, words in [({"keep_top_typo": 5}, "no field 'keep_top_typo' \\(did you mean 'keep_top'\\?\\)"),
                          ({"keep_top": -1}, "keep_top must be a positive integer"),
                          ({"model": "papr"}, "no model named 'papr'"),
                          ({"screen_options": {"max_atom": 8}}, "unknown screen option 'max_atom'"),
                          ({"store_file": "/dev/null"}, "store_file /dev/null is not a file")]:
        with pytest.raises(FhScreenError, match=words) as info:
            flow.update_maker_kwargs(update, class_filter=BulkScreenMaker)
        _one_line(info)
    assert [j.maker.keep_top for j in flow.jobs] == [5, 5]


def test_the_updated_batch_job_runs_with_the_updated_fields(fh_settings, tmp_path):  # noqa: F811
    from fh_screen.store import FhScreenStore

    path = tmp_path / "sweep.sqlite"
    flow = BulkScreenMaker(model="paper", screen_options={"max_atoms": 6}, keep_top=100,
                           store_file=str(path)).make(["Li-O"])
    flow.update_maker_kwargs({"keep_top": 3}, class_filter=BulkScreenMaker)
    outputs = run_locally(flow, store=memory_job_store(), log=False, ensure_success=True)
    assert outputs[flow.jobs[0].uuid][1].output.systems_done == 1
    with FhScreenStore.embedded(path) as store:
        (doc,) = store.screens.query(properties=["keep_top", "candidates"])
    assert doc["keep_top"] == 3 and len(doc["candidates"]) == 3


# ---- make-time checks (L3/L4) ---------------------------------------------------------------


@pytest.mark.parametrize("call, words", [
    (lambda: PrescreenMaker(name=3).make("Li-O"), "name must be a text"),
    (lambda: PrescreenToDFTMaker(prescreen_maker="x").make("Li-O"), "prescreen_maker must be a PrescreenMaker"),
    (lambda: PrescreenToDFTMaker(structure_maker=None).make("Li-O"), "structure_maker must be a StructureMaker"),
    (lambda: PrescreenToDFTMaker(handoff_maker=3).make("Li-O"), "handoff_maker must be a HandoffMaker"),
    (lambda: BulkScreenMaker().make(None), "systems must be a chemical system"),
    (lambda: StructureMaker().make(3), "takes a list of formulas"),
    (lambda: StructureMaker().make([3]), "a formula is a text"),
    (lambda: HandoffMaker(dft_maker=None).make(None), "HandoffMaker.make takes a StructuresDocument"),
    (lambda: HandoffMaker(dft_maker=None).make(["LiF"]), "HandoffMaker.make takes structures"),
    (lambda: HandoffMaker(dft_maker=None).make({"structures": 3}), "not a StructuresDocument"),
    (lambda: StructureMaker(use_prototypes="no"), "use_prototypes must be True or False"),
    (lambda: StructureMaker(use_random=1), "use_random must be True or False"),
], ids=["prescreen-name", "prescreen-stage", "structure-stage", "handoff-stage", "bulk-none", "structures-int",
        "structures-int-in-list", "handoff-none", "handoff-formulas", "handoff-bad-dict", "switch-text", "switch-int"])
def test_bad_names_stages_and_inputs_are_refused_at_make_in_one_line(call, words):
    with pytest.raises(FhScreenError, match=words) as info:
        call()
    _one_line(info)


def test_references_and_structures_are_still_taken_at_make():
    structure = Structure(Lattice.cubic(4.0), ["Li", "F"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    made = StructureMaker().make(["LiF"])
    handoff = HandoffMaker(dft_maker=None)
    assert handoff.make(made.output).function_args[0] is made.output
    assert handoff.make([structure]).function_args[0] == [structure]


def test_a_composition_is_recorded_as_its_reduced_formula():
    job = StructureMaker(n_structures=1, use_random=False).make([Composition("LiF"), "NaCl"])
    assert job.function_args[0] == ["LiF", "NaCl"]
    doc = job.maker.make.original(job.maker, *job.function_args, **job.function_kwargs)
    assert doc.formulas == ["LiF", "NaCl"] and {s.formula for s in doc.structures} <= {"LiF", "NaCl"}


@pytest.mark.parametrize("store_file, words", [
    (3, "store_file must be the path of an embedded store file"),
    ("/tmp", "store_file /tmp is a folder"),
    ("/dev/null", "store_file /dev/null is not a file"),
])
def test_a_bulk_store_file_that_cannot_be_a_store_fails_at_make(store_file, words):
    with pytest.raises(FhScreenError, match=words) as info:
        BulkScreenMaker(store_file=store_file).make(["Li-O"])
    _one_line(info)


def test_a_new_bulk_store_file_is_taken_at_make(tmp_path):
    path = tmp_path / "new" / "sweep.sqlite"
    flow = BulkScreenMaker(store_file=path).make(["Li-O"])
    assert flow.jobs[0].maker.store_file == str(path) and not path.exists() and not path.parent.exists()


def test_bulk_screen_options_may_be_screen_options_as_for_the_prescreen():
    options = ScreenOptions(max_atoms=6, charge_neutral=True)
    flow = BulkScreenMaker(screen_options=options).make(["Li-O"])
    assert ScreenOptions.from_mapping(flow.jobs[0].maker.screen_options) == options
    with pytest.raises(FhScreenError, match="screen_options must be ScreenOptions or a mapping") as info:
        BulkScreenMaker(screen_options=[options]).make(["Li-O"])
    assert len(_one_line(info)) < 120
