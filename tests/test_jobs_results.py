"""Results come back where every door reads them (embedded store and MongoDB), and a relax that ends
as another composition than the one its job was asked for is rejected in the real handoff flow."""

from __future__ import annotations

import json
import time

import pytest
from jobs_fixtures import in_a_scratch_folder  # noqa: F401 - autouse: relax files out of the checkout
import torch
from jobflow import Flow, run_locally
from pymatgen.core import Lattice, Structure

from fh_screen.jobs import (
    HandoffMaker,
    PrescreenMaker,
    StructureCandidate,
    StructuresDocument,
    chgnet_prerelax_maker,
    default_dft_maker,
    local_job_store,
)
from fh_screen.jobs.results import ResultsBackMaker
from fh_screen.store import FhScreenStore, SQLiteStore
from fh_screen.store.results_builder import force_field_model
from store_fixtures import fresh_machine

torch.set_num_threads(1)

RELAX_STEPS = 60


@pytest.fixture(scope="module")
def lif_references() -> list[dict]:
    """CHGNet element references of Li and F, relaxed once with the maker the tests' relaxes use."""
    pytest.importorskip("chgnet")
    from maggma.stores import MemoryStore

    from fh_screen.store.results_builder import force_field_element_references

    cache = MemoryStore()
    cache.connect()
    force_field_element_references(["Li", "F"], chgnet_prerelax_maker(steps=RELAX_STEPS), cache)
    return [{k: v for k, v in d.items() if k != "_id"} for d in cache.query({})]


@pytest.fixture
def mongo_server(monkeypatch):
    """An in-memory MongoDB at localhost:27017 for every pymongo client made while it lives (as tests/test_store_backends.py)."""
    import mongomock_ng
    from mongomock_ng.mongo_client import MongoClient

    monkeypatch.setattr(MongoClient, "close", lambda self: None)  # mongomock's close empties the whole server
    with mongomock_ng.patch(servers=(("localhost", 27017),)):
        yield "mongodb://localhost:27017"


@pytest.fixture(params=["embedded", "embedded-named", "mongodb"])
def backend(request, tmp_path, monkeypatch):
    """The configured store (no --store, no store_path anywhere) on each backend; yields its name.

    ``embedded-named``: the embedded store with the collections renamed in the settings.
    """
    fresh_machine(tmp_path, monkeypatch, reference_data=False)
    if request.param == "embedded-named":
        monkeypatch.setenv("FH_SCREEN_REFERENCE_COLLECTION", "reference_lab")
    if request.param == "mongodb":
        request.getfixturevalue("mongo_server")
        monkeypatch.setenv("FH_SCREEN_MONGO_URI", "mongodb://localhost:27017")
        monkeypatch.setenv("FH_SCREEN_MONGO_DATABASE", f"fh_results_{time.time_ns()}")
    return request.param


def _configured_element_references(backend: str):
    """Where the configured store keeps the force-field element references, opened independently of fh_screen.jobs.results."""
    from fh_screen.settings import FhScreenSettings

    settings = FhScreenSettings()
    if backend == "mongodb":
        from fh_screen.store.mongo import mongo_collection

        return mongo_collection(settings, "element_references", "reference_id")
    settings.store_path.parent.mkdir(parents=True, exist_ok=True)
    return SQLiteStore(settings.store_path, "element_references", key="reference_id")


def _rocksalt(a: float, species=("Li", "F")) -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), list(species),
                                     [[0, 0, 0], [0.5, 0.5, 0.5]]).get_primitive_structure()


def _candidate(formula: str, structure: Structure) -> StructureCandidate:
    return StructureCandidate(formula=formula, structure=structure, source="prototype", n_sites=len(structure))


def test_results_back_reach_every_door_of_the_configured_store(backend, lif_references, tmp_path):
    """A CHGNet result brought back with no store_path: the configured store's screens, queries and fine-tuning see it."""
    from fh_screen.jobs.finetune import store_entries
    from fh_screen.settings import FhScreenSettings

    elements = _configured_element_references(backend)  # cached: no element relax in this test
    elements.connect()
    elements.update(lif_references, key="reference_id")
    elements.close()
    # before anything comes back every backend says so with the same words (MongoDB said "no matching results")
    from typer.testing import CliRunner

    from fh_screen.cli import build_app

    before = CliRunner().invoke(build_app(), ["results"])
    assert before.exit_code == 0 and "yet: nothing has come back" in " ".join(before.output.split()), before.output
    relax = chgnet_prerelax_maker(steps=RELAX_STEPS).make(_rocksalt(4.05))
    back = ResultsBackMaker(force_field_maker=chgnet_prerelax_maker(steps=RELAX_STEPS)).make(relax.output)
    job_store = local_job_store(tmp_path / "jobs.sqlite")
    responses = run_locally(Flow([relax, back]), store=job_store, log=False, ensure_success=True)
    summary = responses[back.uuid][1].output
    assert summary["states"] == {"successful": 1} and summary["formulas"] == ["LiF"]

    with FhScreenStore.from_settings(read_only=True) as fh:
        entry = next(iter(fh.reference_docs(chemsys="Li-F", source="chgnet")))
        where = fh.name
    assert entry["formula"] == "LiF" and entry["source_id"] == relax.uuid and entry["dhf_ev_per_atom"] < -2
    assert summary["store"] == (where if backend == "mongodb" else str(FhScreenSettings().store_path))
    # a screen (the closed loop's re-screen) ranks against it, as a known phase of source chgnet
    screen = PrescreenMaker(model="paper", screen_options={"max_atoms": 4}, top_n=1).make("Li-F")
    doc = run_locally(screen, store=local_job_store(tmp_path / "screen.sqlite"), log=False,
                      ensure_success=True)[screen.uuid][1].output
    lif = next(c for c in doc.candidates if c.formula == "LiF")
    assert lif.is_known and lif.known_source == "chgnet"
    assert lif.known_dhf_ev_per_atom == pytest.approx(entry["dhf_ev_per_atom"])
    assert "LiF" not in doc.selected_formulas
    # `fh-screen finetune --source chgnet` / FinetuneMaker read the same entry
    entries = store_entries("chgnet", chemsys="Li-F")
    assert entries.set_index("formula")["dhf_ev_per_atom"].to_dict() == pytest.approx({"LiF": entry["dhf_ev_per_atom"]})
    # `fh-screen results` lists the calculation from the same store, on either backend
    from typer.testing import CliRunner

    from fh_screen.cli import build_app

    listed = CliRunner().invoke(build_app(), ["results", "--source", "chgnet", "--json", "-"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert [(r["formula"], r["state"], r["job_uuid"]) for r in rows] == [("LiF", "successful", relax.uuid)]
    assert rows[0]["dhf_ev_per_atom"] == pytest.approx(entry["dhf_ev_per_atom"])
    if backend == "mongodb":  # nothing went into an embedded file on the side
        assert not FhScreenSettings().store_path.exists()


def _run_handoff_and_bring_back(tmp_path, lif_references, maker: HandoffMaker, structures: StructuresDocument):
    """Run the handoff and a ResultsBackMaker after it (into an embedded file), as the closed loop does."""
    fh_file = tmp_path / "fh.sqlite"
    elements = SQLiteStore(fh_file, "element_references", key="reference_id")
    elements.connect()
    elements.update(lif_references, key="reference_id")
    elements.close()
    handoff = maker.make(structures)
    back = ResultsBackMaker(store_path=str(fh_file)).make(handoff.output)
    job_store = local_job_store(tmp_path / "jobs.sqlite")
    responses = run_locally(Flow([handoff, back]), store=job_store, log=False, ensure_success=True)
    with job_store:
        job_docs = list(job_store.query({"name": {"$regex": "^CHGNet pre-relax"}}, properties=["uuid", "name", "metadata"]))
    results = SQLiteStore(fh_file, "results", key="result_id", read_only=True)
    reference = SQLiteStore(fh_file, "reference", key="formula", read_only=True)
    with results, reference:
        return (responses[back.uuid][1].output, job_docs, {d["job_name"]: d for d in results.query({})},
                list(reference.query({"source": "chgnet"})))


@pytest.mark.parametrize("route", ["prerelax", "dft"])
def test_a_relax_that_is_not_the_composition_asked_for_is_rejected_in_the_handoff_flow(route, lif_references, tmp_path):
    """The handoff records each job's composition (job metadata ``fh_screen_formula``); the builder
    rejects a result whose structure is another one: here a LiF cell a structure stage labelled NaF.

    ``prerelax``: the handoff's force-field relaxes; ``dft``: the jobs its ``dft_maker`` makes (a
    CHGNet relax stands in for VASP; ``detour`` so that the results job waits for them).
    """
    structures = StructuresDocument(structures=[_candidate("LiF", _rocksalt(4.05)), _candidate("NaF", _rocksalt(4.1))])
    relax = chgnet_prerelax_maker(steps=RELAX_STEPS)
    maker = (HandoffMaker(dft_maker=None, prerelax_maker=relax) if route == "prerelax"
             else HandoffMaker(dft_maker=relax, mode="detour"))
    summary, job_docs, results, chgnet_entries = _run_handoff_and_bring_back(tmp_path, lif_references, maker, structures)

    assert len(job_docs) == 2  # the formula asked for survives into the JobStore, where the builder reads it
    for doc in job_docs:
        asked = "LiF" if " LiF" in doc["name"] else "NaF"
        assert doc["metadata"]["fh_screen_formula"] == asked
        assert doc["metadata"]["fh_screen_force_field_model"] == force_field_model(relax)  # the model, for the builder
    assert summary["states"] == {"successful": 1, "rejected": 1} and summary["formulas"] == ["LiF"]
    good = next(d for name, d in results.items() if " LiF" in name)
    wrong = next(d for name, d in results.items() if " NaF" in name)
    assert good["state"] == "successful" and good["expected_formula"] == "LiF"
    assert good["force_field_model"] == force_field_model(relax) and good["force_field_model"].startswith("CHGNet ")
    assert wrong["state"] == "rejected" and wrong["dhf_ev_per_atom"] is None
    assert wrong["message"] == "structure is LiF, the job was asked for NaF"
    assert [(e["formula"], e["source_id"]) for e in chgnet_entries] == [("LiF", good["job_uuid"])]


def test_dft_flows_of_the_handoff_carry_the_formula_in_every_job():
    """atomate2's VASP DoubleRelaxMaker (a flow of two jobs): each job records its composition, jobs made at run time too."""
    from jobflow import JobStore
    from maggma.stores import MemoryStore

    structures = StructuresDocument(structures=[_candidate("LiF", _rocksalt(4.05)),
                                                _candidate("NaCl", _rocksalt(5.6, ("Na", "Cl")))])
    handoff = HandoffMaker(dft_maker=default_dft_maker()).make(structures)
    store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
    store.connect()
    response = handoff.run(store=store)  # runs the handoff job only: the DFT flows are added, not run
    for entry, flow in zip(response.output.entries, response.addition.jobs):
        assert [job.metadata["fh_screen_formula"] for job in flow.jobs] == [entry.formula] * 2
        assert all({"update": {"fh_screen_formula": entry.formula}}.items() <= u.items()
                   for job in flow.jobs for u in job.metadata_updates)


def test_results_back_refuses_bad_input_in_one_line_at_make_and_at_call(tmp_path):
    """A store path, maker or JobStore that cannot be used fails at make() / the call, one line, nothing written."""
    from fh_screen.errors import FhScreenError
    from fh_screen.jobs.results import ResultsBackError, bring_results_back

    cases = {
        "store_path must be the path of an embedded store file, got 5": {"store_path": 5},
        "cannot write the store /proc/x/y.sqlite": {"store_path": "/proc/x/y.sqlite"},
        "is a folder": {"store_path": str(tmp_path)},
        "force_field_maker must be an atomate2 force-field relax maker": {"force_field_maker": "chgnet"},
    }
    for expected, fields in cases.items():
        with pytest.raises(ResultsBackError, match=expected) as caught:
            ResultsBackMaker(**fields).make()
        assert isinstance(caught.value, FhScreenError) and "\n" not in str(caught.value)
        assert "source=" not in str(caught.value)
    with pytest.raises(ResultsBackError, match="job_store must be a jobflow JobStore or a maggma Store, got str"):
        ResultsBackMaker().make(job_store="not a store")
    with pytest.raises(ResultsBackError, match="job_store must be a jobflow JobStore or a maggma Store, got str"):
        bring_results_back("not a store", store_path=tmp_path / "fh.sqlite")
    job_store = local_job_store(tmp_path / "jobs.sqlite")
    for expected, fields in cases.items():
        with pytest.raises(ResultsBackError, match=expected):
            bring_results_back(job_store, **fields)
    assert not (tmp_path / "fh.sqlite").exists()
    # a store file in folders not made yet is fine, and make() leaves nothing behind
    ResultsBackMaker(store_path=str(tmp_path / "new" / "sub" / "fh.sqlite")).make()
    assert not (tmp_path / "new").exists() and not list(tmp_path.glob(".fh-screen-check-*"))


def test_a_new_store_file_the_results_go_into_holds_the_shipped_reference_as_every_door_fills_it(tmp_path, monkeypatch):
    """ResultsBackMaker(store_path=NEW) used to make a store of the results alone: a screen of it then saw
    one known phase and no note. A new file is now filled with the shipped table first, as `--store` does."""
    import pandas as pd

    from fh_screen.jobs.results import bring_results_back
    from fh_screen.store import bootstrap
    from jobs_fixtures import memory_job_store

    fresh_machine(tmp_path, monkeypatch, reference_data=True)
    full = bootstrap.load_reference_table()
    table = pd.concat([full[full["formula"].isin(["Li2O", "LiF", "FeO", "Fe2O3"])], full.sample(n=200, random_state=0)])
    monkeypatch.setattr(bootstrap, "_cached_table", lambda: table.reset_index(drop=True))
    path = tmp_path / "new" / "fh.sqlite"
    summary = bring_results_back(memory_job_store(), str(path))
    assert summary["states"] == {} and summary["store"] == str(path)
    with FhScreenStore.embedded(path, read_only=True) as store:
        shipped = store.reference_frame(chemsys="Fe-O")
    assert {"FeO", "Fe2O3"} <= set(shipped["formula"]) and set(shipped["source"]) == {"oqmd"}


def test_results_waiting_for_a_reference_are_counted_when_it_arrives(lif_references, tmp_path):
    """A no_reference result that becomes successful on a later run is in that run's summary (it was
    counted as nothing new: only result ids not seen before were)."""
    from fh_screen.jobs.results import bring_results_back

    relax = chgnet_prerelax_maker(steps=RELAX_STEPS).make(_rocksalt(4.05))
    job_store = local_job_store(tmp_path / "jobs.sqlite")
    run_locally(relax, store=job_store, log=False, ensure_success=True)
    store_path = tmp_path / "fh.sqlite"
    waiting = bring_results_back(job_store, store_path)  # no CHGNet Li/F references cached yet
    assert waiting["states"] == {"no_reference": 1} and waiting["formulas"] == []
    assert bring_results_back(job_store, store_path)["n_results"] == 0  # rebuilt, but nothing changed
    elements = SQLiteStore(store_path, "element_references", key="reference_id")
    with elements:
        elements.update(lif_references, key="reference_id")
    arrived = bring_results_back(job_store, store_path)
    assert arrived["states"] == {"successful": 1} and arrived["n_results"] == 1 and arrived["formulas"] == ["LiF"]
    assert arrived["duplicates"] == {}
    results = SQLiteStore(store_path, "results", key="result_id", read_only=True)
    with results:
        assert [d["state"] for d in results.query({"job_uuid": relax.uuid})] == ["successful"]
    assert bring_results_back(job_store, store_path)["states"] == {}


def test_r2_is_undefined_for_one_sample_or_constant_targets_and_the_card_json_stays_valid(tmp_path):
    """R² of one sample or of targets without variance is NaN (was 1 - residual: a meaningless number);
    the model card's writer turns it into null, valid JSON."""
    import math

    import numpy as np

    from fh_screen.io import read_json, write_json
    from fh_screen.models.metrics import error_metrics

    one = error_metrics(np.array([-1.0]), np.array([-0.5]))
    flat = error_metrics(np.array([-1.0, -1.0, -1.0]), np.array([-0.9, -1.1, -1.0]))
    assert math.isnan(one["r2"]) and math.isnan(flat["r2"])
    assert one["n"] == 1 and one["mae_ev_per_atom"] == pytest.approx(0.5)
    assert error_metrics(np.array([-1.0, -2.0]), np.array([-1.1, -1.9]))["r2"] == pytest.approx(0.96)
    card = read_json(write_json({"metrics": {"new_entries": one, "val_all_rows": flat}}, tmp_path / "model_card.json"))
    assert card["metrics"]["new_entries"]["r2"] is None and card["metrics"]["val_all_rows"]["r2"] is None
    assert f"{one['r2']:.4f}" == "nan"  # the cards' markdown tables format it without error
