"""Results come back: real CHGNet relaxes and VASP-shaped task documents in a JobStore become reference entries."""

from __future__ import annotations

import copy

import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.entries.compatibility import MaterialsProject2020Compatibility
from pymatgen.entries.computed_entries import ComputedEntry

from fh_screen.store import ReferenceEntryDoc, SQLiteStore
from fh_screen.store.results_builder import ElementReferenceDoc, ResultsBuilder, force_field_element_references


@pytest.fixture(autouse=True, scope="module")
def _in_a_scratch_folder(tmp_path_factory):
    """atomate2's relax writes final_atoms_object.xyz into the working folder: keep it out of the checkout."""
    import os

    here = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(here)


def _build(jobs, results, reference, elements) -> None:
    """Run a ResultsBuilder the way ``fh-screen``/``mrun`` does (maggma's serial runner closes the stores), then
    reopen the stores. Not ``Builder.run()``: it sets the root logger to DEBUG and adds a handler for the rest of
    the process."""
    from maggma.cli.serial import serial

    serial(ResultsBuilder(jobs, results, reference, elements), no_bars=True)
    for store in (jobs, results, reference, elements):
        store.connect()


def _stores(tmp_path):
    reference = SQLiteStore(tmp_path / "fh.sqlite", "reference", key="formula")
    results = SQLiteStore(tmp_path / "fh.sqlite", "results", key="result_id")
    elements = SQLiteStore(tmp_path / "fh.sqlite", "element_references", key="reference_id")
    for store in (reference, results, elements):
        store.connect()
    reference.update([ReferenceEntryDoc.from_formula("LiF", -3.2).model_dump()], key=["formula", "source"])
    return reference, results, elements


def _rocksalt(a: float, species=("Li", "F")) -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), list(species), [[0, 0, 0], [0.5, 0.5, 0.5]])


@pytest.fixture(scope="module")
def chgnet_run(tmp_path_factory):
    """Two CHGNet relaxes of LiF (two starting cells) and one cut short, in one JobStore; Li and F references."""
    pytest.importorskip("chgnet")
    from jobflow import Flow, run_locally

    from fh_screen.jobs import chgnet_prerelax_maker

    from fh_screen.jobs.jobstore import local_job_store

    folder = tmp_path_factory.mktemp("chgnet")
    maker = chgnet_prerelax_maker(steps=60)
    elements = SQLiteStore(folder / "cache.sqlite", "element_references", key="reference_id")
    elements.connect()
    references = force_field_element_references(["Li", "F"], maker, elements)
    jobs = [maker.make(_rocksalt(4.0)), maker.make(_rocksalt(4.3)),
            chgnet_prerelax_maker(steps=1, fmax_ev_per_angstrom=1e-6).make(_rocksalt(4.6))]
    job_store = local_job_store(folder / "jobflow.sqlite")
    run_locally(Flow(jobs), store=job_store, log=False)
    job_store.connect()
    return job_store, elements, references, [j.uuid for j in jobs]


def test_force_field_references_are_cached_per_element(chgnet_run):
    _, elements, references, _ = chgnet_run
    assert set(references) == {"Li", "F"} and all(v < 0 for v in references.values())

    class Refuses:
        def make(self, structure):
            raise AssertionError("a cached element was computed again")

    assert force_field_element_references(["F", "Li"], Refuses(), elements) == references
    docs = {d["element"]: d for d in elements.query({})}
    assert docs["Li"]["package_version"] and docs["Li"]["structure"]


def test_chgnet_results_come_back_as_reference_entries(chgnet_run, tmp_path):
    job_store, element_store, references, uuids = chgnet_run
    reference, results, elements = _stores(tmp_path)
    elements.update(list(element_store.query({})), key="reference_id")
    _build(job_store, results, reference, elements)
    docs = {d["job_uuid"]: d for d in results.query({})}
    assert set(docs) == set(uuids)
    good, other, short = (docs[u] for u in uuids)
    assert short["state"] == "unconverged" and short["dhf_ev_per_atom"] is None
    for doc in (good, other):
        assert doc["state"] == "successful" and doc["formula"] == "LiF" and doc["functional"] == "MLFF.CHGNet"
        n = len(doc["structure"]["sites"])
        expected = (doc["energy_ev"] - n / 2 * references["Li"] - n / 2 * references["F"]) / n
        assert doc["dhf_ev_per_atom"] == pytest.approx(expected)
        assert -4.5 < doc["dhf_ev_per_atom"] < -2.0  # OQMD: about -3.2 eV/atom
    entries = {d["source"]: d for d in reference.query({"formula": "LiF"})}
    assert set(entries) == {"oqmd", "chgnet"}  # the computed entry sits beside the OQMD one
    assert entries["oqmd"]["dhf_ev_per_atom"] == -3.2
    lower = min((good, other), key=lambda d: d["dhf_ev_per_atom"])
    assert entries["chgnet"]["dhf_ev_per_atom"] == pytest.approx(lower["dhf_ev_per_atom"])
    assert entries["chgnet"]["source_id"] == lower["job_uuid"] and entries["chgnet"]["source_version"]


def test_rerun_adds_only_what_is_new_and_bad_input_is_recorded(chgnet_run, tmp_path):
    finished, element_store, _, uuids = chgnet_run
    job_store = SQLiteStore(tmp_path / "jobs.sqlite", "jobs", key="uuid")  # a copy the test may add to
    job_store.connect()
    job_store.update(list(finished.docs_store.query({})), key="uuid")
    reference, results, elements = _stores(tmp_path)
    elements.update(list(element_store.query({})), key="reference_id")
    _build(job_store, results, reference, elements)
    stamps = {d["result_id"]: d["last_updated"] for d in results.query({})}
    _build(job_store, results, reference, elements)
    assert {d["result_id"]: d["last_updated"] for d in results.query({})} == stamps  # nothing rebuilt

    template = next(iter(job_store.query({"uuid": uuids[0]})))
    no_energy = copy.deepcopy(template)
    no_energy.update(uuid="no-energy")
    no_energy["output"]["output"]["energy"] = None
    mismatch = copy.deepcopy(template)
    mismatch.update(uuid="mismatch", metadata={"fh_screen_formula": "LiCl"})
    sodium = copy.deepcopy(template)
    sodium["uuid"] = "sodium"
    structure = Structure.from_dict(sodium["output"]["structure"])
    structure.replace_species({"Li": "Na"})
    sodium["output"]["structure"] = structure.as_dict()
    job_store.update([no_energy, mismatch, sodium], key="uuid")
    _build(job_store, results, reference, elements)
    docs = {d["job_uuid"]: d for d in results.query({})}
    assert docs["no-energy"]["state"] == "rejected" and "energy" in docs["no-energy"]["message"]
    assert docs["mismatch"]["state"] == "rejected" and "LiCl" in docs["mismatch"]["message"]
    assert docs["sodium"]["state"] == "no_reference" and "Na" in docs["sodium"]["message"]
    assert all(docs[u]["dhf_ev_per_atom"] is None for u in ("no-energy", "mismatch", "sodium"))
    assert {d["result_id"]: d["last_updated"] for d in results.query({"result_id": {"$in": list(stamps)}})} == stamps
    assert not list(reference.query({"formula": "NaF"}))
    # the Na reference arrives: the next run builds the waiting result, and only it
    elements.update([ElementReferenceDoc(reference_id="Na|chgnet", element="Na", source="chgnet",
                                         energy_per_atom_ev=-1.3).model_dump()], key="reference_id")
    _build(job_store, results, reference, elements)
    naf = next(iter(results.query({"job_uuid": "sodium"})))
    assert naf["state"] == "successful" and naf["dhf_ev_per_atom"] is not None
    assert next(iter(reference.query({"formula": "NaF", "source": "chgnet"})))["source_id"] == "sodium"


def _vasp_job(uuid: str, structure: Structure, energy_ev: float, hubbard: dict | None, run_type: str | None = None) -> dict:
    run_type = run_type or ("GGA+U" if hubbard else "GGA")
    entry = ComputedEntry(structure.composition, energy_ev, parameters={
        "run_type": run_type, "is_hubbard": bool(hubbard), "hubbards": hubbard or {},
        "potcar_spec": [], "potcar_symbols": []})
    return {"uuid": uuid, "index": 1, "name": "relax 2", "metadata": {}, "output": {
        "@module": "emmet.core.tasks", "@class": "TaskDoc", "calcs_reversed": [], "vasp_version": "6.4.2",
        "run_type": run_type, "state": "successful", "structure": structure.as_dict(),
        "output": {"energy": energy_ev, "structure": structure.as_dict()}, "entry": entry.as_dict()}}


def test_vasp_results_mix_gga_and_gga_u_through_mp2020(tmp_path):
    reference, results, elements = _stores(tmp_path)
    fe = Structure(Lattice.cubic(2.83), ["Fe", "Fe"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    o2 = Structure(Lattice.cubic(10), ["O", "O"], [[0, 0, 0], [1.21, 0, 0]], coords_are_cartesian=True)
    feo = _rocksalt(4.3, ("Fe", "O"))
    docs = [_vasp_job("fe", fe, -8.3 * 2, None), _vasp_job("o2", o2, -4.9 * 2, None),
            _vasp_job("feo", feo, -13.0 * 8, {"Fe": 5.3, "O": 0.0}),
            _vasp_job("feo-scan", feo, -20.0 * 8, None, run_type="r2SCAN")]
    jobs = SQLiteStore(tmp_path / "jobs.sqlite", "jobs", key="uuid")
    jobs.connect()
    jobs.update(docs, key="uuid")
    _build(jobs, results, reference, elements)
    out = {d["job_uuid"]: d for d in results.query({})}
    compat = MaterialsProject2020Compatibility(check_potcar=False)
    corrected = {}
    for doc in docs[:3]:
        entry = ComputedEntry.from_dict(doc["output"]["entry"])
        corrected[doc["uuid"]] = compat.process_entries([entry], verbose=False)[0].energy_per_atom
    expected = corrected["feo"] - (corrected["fe"] + corrected["o2"]) / 2
    assert out["feo"]["state"] == "successful" and out["feo"]["functional"] == "GGA+U"
    assert out["feo"]["dhf_ev_per_atom"] == pytest.approx(expected)
    assert out["feo"]["energy_per_atom_ev"] != pytest.approx(-13.0)  # the +U correction was applied
    # an r2SCAN result does not mix with GGA(+U): recorded as rejected, never an energy
    assert out["feo-scan"]["state"] == "rejected" and "Compatibility" in out["feo-scan"]["message"]
    assert out["feo-scan"]["dhf_ev_per_atom"] is None
    assert not list(reference.query({"formula": {"$in": ["Fe", "O2", "O"]}}))  # elements are references, not entries
    entry = next(iter(reference.query({"formula": "FeO", "source": "atomate2-vasp"})))
    assert entry["dhf_ev_per_atom"] == pytest.approx(expected) and entry["source_version"] == "6.4.2"


def test_results_back_job_ends_a_flow_and_fills_the_store(chgnet_run, tmp_path):
    from jobflow import Flow, run_locally

    from fh_screen.jobs import chgnet_prerelax_maker
    from fh_screen.jobs.jobstore import local_job_store
    from fh_screen.jobs.results import ResultsBackMaker

    _, element_store, _, _ = chgnet_run
    store_path = tmp_path / "fh.sqlite"
    elements = SQLiteStore(store_path, "element_references", key="reference_id")
    elements.connect()
    elements.update(list(element_store.query({})), key="reference_id")  # the cached Li and F references
    elements.close()
    relax = chgnet_prerelax_maker(steps=60).make(_rocksalt(4.1))
    back = ResultsBackMaker(store_path=str(store_path)).make(relax.output)
    job_store = local_job_store(tmp_path / "jobflow.sqlite")
    responses = run_locally(Flow([relax, back]), store=job_store, log=False, ensure_success=True)
    summary = responses[back.uuid][1].output
    assert summary["states"] == {"successful": 1} and summary["formulas"] == ["LiF"]
    reference = SQLiteStore(store_path, "reference", key="formula")
    reference.connect()
    entry = next(iter(reference.query({"formula": "LiF"})))
    assert entry["source"] == "chgnet" and entry["source_id"] == relax.uuid
    # run again: nothing new comes back
    again = ResultsBackMaker(store_path=str(store_path)).make()
    assert run_locally(again, store=job_store, log=False)[again.uuid][1].output["n_results"] == 0
