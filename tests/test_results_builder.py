"""Results come back: real CHGNet relaxes and VASP-shaped task documents in a JobStore become reference entries."""

from __future__ import annotations

import copy

import pytest
from jobs_fixtures import in_a_scratch_folder  # noqa: F401 - autouse: relax files out of the checkout
from pymatgen.core import Lattice, Structure
from pymatgen.entries.compatibility import MaterialsProject2020Compatibility
from pymatgen.entries.computed_entries import ComputedEntry

from fh_screen.store import ReferenceEntryDoc, SQLiteStore
from fh_screen.store.results_builder import (
    ElementReferenceDoc,
    ResultError,
    ResultsBuilder,
    force_field_element_references,
    force_field_source,
)


def _build(jobs, results, reference, elements, **options) -> None:
    """Run a ResultsBuilder the way ``fh-screen``/``mrun`` does (maggma's serial runner closes the stores), then
    reopen the stores. Not ``Builder.run()``: it sets the root logger to DEBUG and adds a handler for the rest of
    the process."""
    from maggma.cli.serial import serial

    serial(ResultsBuilder(jobs, results, reference, elements, **options), no_bars=True)
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
        force_field_name = "MLFF.CHGNet"

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
    # provenance on the entry itself: its method and the result it stands for (structure, energy)
    assert entries["chgnet"]["functional"] == "MLFF.CHGNet" and entries["chgnet"]["result_id"] == lower["result_id"]
    assert entries["oqmd"]["functional"] is None


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
    fe, o2 = _fe_and_o2()
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
    assert summary["duplicates"] == {}
    # run again: nothing new comes back
    again = ResultsBackMaker(store_path=str(store_path)).make()
    assert run_locally(again, store=job_store, log=False)[again.uuid][1].output["n_results"] == 0
    # a second LiF relax: both results kept, the job's output names them (lowest first), the lowest is the entry
    second = chgnet_prerelax_maker(steps=60).make(_rocksalt(3.9))
    back = ResultsBackMaker(store_path=str(store_path)).make(second.output)
    summary = run_locally(Flow([second, back]), store=job_store, log=False, ensure_success=True)[back.uuid][1].output
    jobs = summary["duplicates"]["LiF|chgnet"]
    assert sorted(jobs) == sorted([relax.uuid, second.uuid])
    entry = next(iter(reference.query({"formula": "LiF", "source": "chgnet"})))
    assert entry["source_id"] == jobs[0]


# --------------------------------------------------------------------------- audit checks


def _copy_store(finished, tmp_path):
    """A copy of the finished job documents the test may add to."""
    job_store = SQLiteStore(tmp_path / "jobs.sqlite", "jobs", key="uuid")
    job_store.connect()
    job_store.update(list(finished.docs_store.query({})), key="uuid")
    return job_store


def _variant(template: dict, uuid: str, *, energy=None, forcefield_name=None) -> dict:
    doc = copy.deepcopy(template)
    doc["uuid"] = uuid
    if energy is not None:
        doc["output"]["output"]["energy"] = energy
    if forcefield_name is not None:
        doc["output"]["forcefield_name"] = forcefield_name
    return doc


def test_force_field_source_names_each_force_field():
    from atomate2.forcefields import MLFF

    assert [force_field_source(n) for n in ("MLFF.CHGNet", "MLFF.MACE", "MLFF.M3GNet")] == ["chgnet", "mace", "m3gnet"]
    assert force_field_source(MLFF.CHGNet) == "chgnet" and force_field_source("CHGNet") == "chgnet"
    assert force_field_source("MLFF.MACE_MP_0") == force_field_source(MLFF.MACE_MP_0) == "mace-mp-0"
    assert force_field_source(None) == "force-field"


def test_a_mace_task_is_recorded_as_mace_against_mace_references_only(chgnet_run, tmp_path):
    finished, element_store, _, uuids = chgnet_run
    job_store = _copy_store(finished, tmp_path)
    template = next(iter(job_store.query({"uuid": uuids[0]})))
    job_store.update([_variant(template, "mace-lif", forcefield_name="MLFF.MACE"),
                      _variant(template, "m3gnet-lif", forcefield_name="MLFF.M3GNet")], key="uuid")
    reference, results, elements = _stores(tmp_path)
    elements.update(list(element_store.query({})), key="reference_id")  # CHGNet's Li and F only
    _build(job_store, results, reference, elements)
    docs = {d["job_uuid"]: d for d in results.query({})}
    for uuid, source in (("mace-lif", "mace"), ("m3gnet-lif", "m3gnet")):
        doc = docs[uuid]
        assert doc["source"] == source and doc["result_id"].startswith(f"{source}|")
        assert doc["state"] == "no_reference" and doc["dhf_ev_per_atom"] is None
        assert f"no {source} reference for F, Li" in doc["message"] and "\n" not in doc["message"]
    assert {d["source"] for d in reference.query({"formula": "LiF"})} == {"oqmd", "chgnet"}
    assert next(iter(reference.query({"formula": "LiF", "source": "chgnet"})))["source_id"] in uuids[:2]
    # MACE's own references arrive: the MACE result is built against them, never against CHGNet's
    mace = {"Li": -1.9, "F": -1.4}
    elements.update([ElementReferenceDoc(reference_id=f"{e}|mace", element=e, source="mace",
                                         energy_per_atom_ev=v).model_dump() for e, v in mace.items()], key="reference_id")
    _build(job_store, results, reference, elements)
    doc = next(iter(results.query({"job_uuid": "mace-lif"})))
    n = len(doc["structure"]["sites"])
    assert doc["state"] == "successful" and doc["element_references_ev_per_atom"] == mace
    assert doc["dhf_ev_per_atom"] == pytest.approx((doc["energy_ev"] - n / 2 * (mace["Li"] + mace["F"])) / n)
    assert next(iter(reference.query({"formula": "LiF", "source": "mace"})))["source_id"] == "mace-lif"
    assert next(iter(results.query({"job_uuid": "m3gnet-lif"})))["state"] == "no_reference"


def test_element_references_of_another_force_field_are_never_chgnets(chgnet_run, tmp_path):
    import importlib.util

    from atomate2.forcefields.jobs import ForceFieldRelaxMaker

    if importlib.util.find_spec("mace") is not None:
        pytest.skip("MACE is installed here: its references could be computed")
    _, element_store, _, _ = chgnet_run
    elements = SQLiteStore(tmp_path / "cache.sqlite", "element_references", key="reference_id")
    elements.connect()
    elements.update(list(element_store.query({})), key="reference_id")  # CHGNet's Li and F
    with pytest.warns(UserWarning):
        mace = ForceFieldRelaxMaker(force_field_name="MACE", steps=5)
    with pytest.raises(ResultError, match=r"no mace reference for Li") as caught:
        force_field_element_references(["Li"], mace, elements)
    assert "\n" not in str(caught.value)
    with pytest.raises(ResultError, match="mace"):
        force_field_element_references(["Li"], mace, elements, source="chgnet")
    assert not list(elements.query({"source": "mace"}))
    assert {d["reference_id"] for d in elements.query({})} == {"Li|chgnet", "F|chgnet"}


def _fe_and_o2() -> tuple[Structure, Structure]:
    """bcc Fe and an O2 molecule in a box: the pure-element VASP tasks of the Fe-O tests."""
    fe = Structure(Lattice.cubic(2.83), ["Fe", "Fe"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    o2 = Structure(Lattice.cubic(10), ["O", "O"], [[0, 0, 0], [1.21, 0, 0]], coords_are_cartesian=True)
    return fe, o2


def _fe_o_jobs(tmp_path, *feo_energies_ev_per_atom: tuple[str, float]) -> SQLiteStore:
    """A JobStore-like collection: VASP tasks of bcc Fe, O2 and rocksalt FeO cells (GGA+U) of these energies."""
    fe, o2 = _fe_and_o2()
    jobs = SQLiteStore(tmp_path / "jobs.sqlite", "jobs", key="uuid")
    jobs.connect()
    jobs.update([_vasp_job("fe", fe, -8.3 * 2, None), _vasp_job("o2", o2, -4.9 * 2, None)]
                + [_vasp_job(uuid, _rocksalt(4.3, ("Fe", "O")), energy * 8, {"Fe": 5.3, "O": 0.0})
                   for uuid, energy in feo_energies_ev_per_atom], key="uuid")
    return jobs


def test_vasp_element_references_are_pinned_until_refreshed(tmp_path):
    reference, results, elements = _stores(tmp_path)
    fe, _ = _fe_and_o2()
    jobs = _fe_o_jobs(tmp_path, ("feo", -13.0))
    _build(jobs, results, reference, elements)
    pins = {d["element"]: d for d in elements.query({"source": "atomate2-vasp"})}
    assert {e: d["job_uuid"] for e, d in pins.items()} == {"Fe": "fe", "O": "o2"}
    assert pins["Fe"]["reference_id"] == "Fe|atomate2-vasp" and pins["Fe"]["package_version"] == "6.4.2"
    assert pins["Fe"]["structure"] and pins["Fe"]["functional"] == "GGA"
    first = next(iter(results.query({"job_uuid": "feo"})))
    assert first["element_reference_jobs"] == {"Fe": "fe", "O": "o2"}
    # a lower Fe arrives with a new FeO: the new result uses the pinned Fe, as the first did
    jobs.update([_vasp_job("fe-low", fe, -8.6 * 2, None),
                 _vasp_job("feo-2", _rocksalt(4.4, ("Fe", "O")), -13.1 * 8, {"Fe": 5.3, "O": 0.0})], key="uuid")
    _build(jobs, results, reference, elements)
    out = {d["job_uuid"]: d for d in results.query({})}
    assert out["feo-2"]["state"] == "successful"
    assert out["feo-2"]["element_references_ev_per_atom"] == first["element_references_ev_per_atom"]
    assert out["feo-2"]["element_reference_jobs"]["Fe"] == "fe"
    assert next(iter(elements.query({"reference_id": "Fe|atomate2-vasp"})))["job_uuid"] == "fe"
    assert out["feo"]["last_updated"] == first["last_updated"]  # not rebuilt
    # a deliberate refresh re-pins Fe and rebuilds every VASP result and the entry against it
    _build(jobs, results, reference, elements, refresh_vasp_references=True)
    assert next(iter(elements.query({"reference_id": "Fe|atomate2-vasp"})))["job_uuid"] == "fe-low"
    out = {d["job_uuid"]: d for d in results.query({})}
    assert {out[u]["element_reference_jobs"]["Fe"] for u in ("feo", "feo-2")} == {"fe-low"}
    assert out["feo"]["dhf_ev_per_atom"] > first["dhf_ev_per_atom"]  # a lower Fe raises the enthalpy
    entry = next(iter(reference.query({"formula": "FeO", "source": "atomate2-vasp"})))
    assert entry["dhf_ev_per_atom"] == pytest.approx(min(out[u]["dhf_ev_per_atom"] for u in ("feo", "feo-2")))


def test_non_finite_and_implausible_energies_are_rejected(chgnet_run, tmp_path):
    from fh_screen.data import OUTLIER_RANGE_EV_PER_ATOM

    finished, element_store, references, uuids = chgnet_run
    job_store = _copy_store(finished, tmp_path)
    template = next(iter(job_store.query({"uuid": uuids[0]})))
    n = len(template["output"]["structure"]["sites"])
    low, high = OUTLIER_RANGE_EV_PER_ATOM
    mu = (references["Li"] + references["F"]) / 2
    job_store.update([_variant(template, "nan", energy=float("nan")), _variant(template, "inf", energy=float("-inf")),
                      _variant(template, "too-low", energy=(mu + low - 1.0) * n),
                      _variant(template, "too-high", energy=(mu + high + 1.0) * n)], key="uuid")
    reference, results, elements = _stores(tmp_path)
    elements.update(list(element_store.query({})), key="reference_id")
    _build(job_store, results, reference, elements)
    docs = {d["job_uuid"]: d for d in results.query({})}
    for uuid in ("nan", "inf"):
        assert docs[uuid]["state"] == "rejected" and "not a finite number" in docs[uuid]["message"]
    for uuid in ("too-low", "too-high"):
        assert docs[uuid]["state"] == "rejected" and "plausible window" in docs[uuid]["message"]
    for uuid in ("nan", "inf", "too-low", "too-high"):
        assert docs[uuid]["dhf_ev_per_atom"] is None and "\n" not in docs[uuid]["message"]
    entry = next(iter(reference.query({"formula": "LiF", "source": "chgnet"})))
    assert entry["source_id"] in uuids[:2] and low < entry["dhf_ev_per_atom"] < high


def test_implausible_vasp_result_makes_no_entry_and_a_nan_element_no_reference(tmp_path):
    reference, results, elements = _stores(tmp_path)
    fe, _ = _fe_and_o2()
    jobs = _fe_o_jobs(tmp_path, ("feo", -60.0))
    jobs.update([_vasp_job("fe-nan", fe, float("nan"), None)], key="uuid")
    _build(jobs, results, reference, elements)
    out = {d["job_uuid"]: d for d in results.query({})}
    assert out["fe-nan"]["state"] == "rejected" and "finite" in out["fe-nan"]["message"]
    assert out["feo"]["state"] == "rejected" and "plausible window" in out["feo"]["message"]
    assert out["feo"]["dhf_ev_per_atom"] is None
    assert not list(reference.query({"formula": "FeO"}))
    assert next(iter(elements.query({"reference_id": "Fe|atomate2-vasp"})))["job_uuid"] == "fe"


def test_unconverged_chgnet_relax_is_unconverged_not_failed(tmp_path):
    pytest.importorskip("chgnet")
    from jobflow import run_locally

    from fh_screen.jobs import chgnet_prerelax_maker
    from fh_screen.jobs.jobstore import local_job_store

    structure = _rocksalt(4.1)
    structure.perturb(0.15, min_distance=0.05)
    job = chgnet_prerelax_maker(steps=3, fmax_ev_per_angstrom=1e-4).make(structure)
    job_store = local_job_store(tmp_path / "jobflow.sqlite")
    run_locally(job, store=job_store, log=False)
    job_store.connect()
    output = next(iter(job_store.query({"uuid": job.uuid})))["output"]
    assert output["state"] == "failed" and output["is_force_converged"] is False  # how atomate2 records it
    reference, results, elements = _stores(tmp_path)
    _build(job_store, results, reference, elements)
    doc = next(iter(results.query({"job_uuid": job.uuid})))
    assert doc["state"] == "unconverged" and "forces not converged" in doc["message"]
    assert doc["dhf_ev_per_atom"] is None and doc["energy_ev"] is None


def test_fh_screen_results_lists_every_calculation_with_its_state_and_reason(tmp_path):
    """`fh-screen results`: the rejected and the successful side by side, filtered, as JSON; bad input is one line."""
    import json

    from typer.testing import CliRunner

    from fh_screen.cli import build_app

    reference, results, elements = _stores(tmp_path)
    jobs = _fe_o_jobs(tmp_path, ("feo", -13.0), ("feo-bad", -60.0))
    _build(jobs, results, reference, elements)
    store = str(tmp_path / "fh.sqlite")
    runner = CliRunner()
    table = runner.invoke(build_app(), ["results", "--store", store])
    assert table.exit_code == 0, table.output
    flat = " ".join(table.output.split())
    assert "1 rejected" in flat and "successful" in flat and "plausible window" in flat
    rejected = runner.invoke(build_app(), ["results", "--store", store, "--state", "rejected", "--json", "-"])
    rows = json.loads(rejected.stdout)
    assert [r["job_uuid"] for r in rows] == ["feo-bad"] and rows[0]["dhf_ev_per_atom"] is None
    fe_o = json.loads(runner.invoke(build_app(), ["results", "--store", store, "--formula", "FeO", "--json", "-"]).stdout)
    by_job = {r["job_uuid"]: r for r in fe_o}
    assert set(by_job) == {"feo", "feo-bad"} and by_job["feo"]["state"] == "successful"
    assert by_job["feo"]["dhf_ev_per_atom"] == pytest.approx(
        next(iter(reference.query({"formula": "FeO", "source": "atomate2-vasp"})))["dhf_ev_per_atom"])
    # a store nothing has come back into yet: an empty answer, not an error
    from fh_screen.store import FhScreenStore

    FhScreenStore.embedded(tmp_path / "fresh.sqlite").connect().close()
    fresh = runner.invoke(build_app(), ["results", "--store", str(tmp_path / "fresh.sqlite")])
    assert fresh.exit_code == 0 and "nothing has come back" in fresh.output
    fresh_json = runner.invoke(build_app(), ["results", "--store", str(tmp_path / "fresh.sqlite"), "--json", "-"])
    assert fresh_json.exit_code == 0 and json.loads(fresh_json.stdout) == []
    # states and sources are read in any case; a source with no result at all gets one note
    upper = runner.invoke(build_app(), ["results", "--store", store, "--state", "SUCCESSFUL", "--source", "ATOMATE2-VASP", "-f", "FeO",
                                        "--json", "-"])
    assert upper.exit_code == 0 and [r["job_uuid"] for r in json.loads(upper.stdout)] == ["feo"]
    typo = runner.invoke(build_app(), ["results", "--store", store, "--source", "chgent"])
    assert typo.exit_code == 0 and "no matching results" in typo.output
    assert "source chgent: no result in the store (it holds atomate2-vasp)" in " ".join(typo.output.split())
    # JSON on stdout stays parseable when a CSV is written beside it: the status line goes to stderr
    both = runner.invoke(build_app(), ["results", "--store", store, "--json", "-", "--csv", str(tmp_path / "r.csv")])
    assert both.exit_code == 0 and len(json.loads(both.stdout)) == 4 and "wrote 4 rows" in both.stderr
    junk = tmp_path / "junk.sqlite"
    junk.write_text("not a database\n")
    for args, message in ((["--state", "done"], "--state must be one of"),
                          (["--chemsys", "Fe-Xx"], "Xx"),
                          (["--store", str(tmp_path / "absent.sqlite")], "no store at"),
                          (["--store", str(junk)], "cannot be used: file is not a database"),
                          (["--json", "-", "--csv", "-"], "only one output can be '-'")):
        bad = runner.invoke(build_app(), ["results", "--store", store, *args] if "--store" not in args
                            else ["results", *args])
        assert bad.exit_code == 2 and message in bad.output and "Traceback" not in bad.output, bad.output
        assert len(bad.output.strip().splitlines()) == 1


# --------------------------------------------------------------------------- review fixes


def test_a_chgnet_single_point_is_converged_not_stopped_at_its_step_limit(chgnet_run, tmp_path):
    """atomate2's ForceFieldStaticMaker (steps=1, one step used) is force-converged: a successful result."""
    pytest.importorskip("chgnet")
    from atomate2.forcefields.jobs import ForceFieldStaticMaker
    from jobflow import run_locally

    from fh_screen.jobs.jobstore import local_job_store

    _, element_store, _, _ = chgnet_run
    job = ForceFieldStaticMaker(force_field_name="CHGNet").make(_rocksalt(4.05))
    job_store = local_job_store(tmp_path / "jobflow.sqlite")
    run_locally(job, store=job_store, log=False, ensure_success=True)
    job_store.connect()
    output = next(iter(job_store.query({"uuid": job.uuid})))["output"]
    assert output["is_force_converged"] is True and output["input"]["steps"] == 1 and output["output"]["n_steps"] == 1
    reference, results, elements = _stores(tmp_path)
    elements.update(list(element_store.query({})), key="reference_id")
    _build(job_store, results, reference, elements)
    doc = next(iter(results.query({"job_uuid": job.uuid})))
    assert doc["state"] == "successful", doc["message"]
    assert doc["message"] is None and -4.5 < doc["dhf_ev_per_atom"] < -2.0


def test_a_gga_fe_oxide_is_rejected_with_pymatgens_reason(tmp_path):
    """MP2020 needs GGA+U for Fe oxides: the result says so (the missing U), in one line."""
    reference, results, elements = _stores(tmp_path)
    jobs = _fe_o_jobs(tmp_path)
    jobs.update([_vasp_job("feo-gga", _rocksalt(4.3, ("Fe", "O")), -13.0 * 8, None)], key="uuid")
    _build(jobs, results, reference, elements)
    doc = next(iter(results.query({"job_uuid": "feo-gga"})))
    assert doc["state"] == "rejected" and doc["dhf_ev_per_atom"] is None
    assert doc["message"].startswith("MaterialsProject2020Compatibility rejects it: ")
    assert "U value" in doc["message"] and "Fe" in doc["message"] and "5.3" in doc["message"]
    assert "\n" not in doc["message"] and "{" not in doc["message"]


def test_pure_elements_are_not_duplicates_and_a_lower_one_is_a_warning(tmp_path, caplog):
    """Two Fe tasks are not duplicate entries (the lowest is the pinned reference); a lower Fe arriving
    later does not re-pin silently: a WARNING and a note name the element, energies, jobs and the refresh."""
    import logging

    from fh_screen.jobs.results import bring_results_back

    fe, _ = _fe_and_o2()
    jobs = _fe_o_jobs(tmp_path, ("feo", -13.0), ("feo-2", -12.9))
    jobs.update([_vasp_job("fe-high", fe, -8.2 * 2, None)], key="uuid")
    store_path = tmp_path / "fh.sqlite"
    first = bring_results_back(jobs, store_path)
    assert first["duplicates"] == {"FeO|atomate2-vasp": ["feo", "feo-2"]}  # no "Fe|atomate2-vasp"
    assert first["notes"] == [] and first["states"] == {"successful": 5}

    jobs.update([_vasp_job("fe-low", fe, -8.6 * 2, None)], key="uuid")
    with caplog.at_level(logging.WARNING):
        second = bring_results_back(jobs, store_path)
    compat = MaterialsProject2020Compatibility(check_potcar=False)
    per_atom = {u: compat.process_entries([ComputedEntry.from_dict(d["output"]["entry"])])[0].energy_per_atom
                for u in ("fe", "fe-low") for d in jobs.query({"uuid": u})}
    assert second["duplicates"] == {} and second["states"] == {"successful": 1}
    [note] = second["notes"]
    for word in ("Fe", "fe-low", "job fe ", f"{per_atom['fe-low']:.4f}", f"{per_atom['fe']:.4f}",
                 "refresh_vasp_references=True"):
        assert word in note, word
    assert "\n" not in note
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "refresh_vasp_references=True" in r.getMessage()]
    assert [r.getMessage() for r in warned] == [note]
    pinned = SQLiteStore(store_path, "element_references", key="reference_id")
    with pinned:
        assert next(iter(pinned.query({"reference_id": "Fe|atomate2-vasp"})))["job_uuid"] == "fe"  # still pinned


def test_force_field_references_start_from_the_elements_real_ground_state_types():
    """A metal lattice cannot reach black P, A7 As or trigonal Te; with CHGNet they lie 0.13-0.29 eV/atom below
    the best of bcc/fcc/hcp/diamond, and every compound of the element came out that much too stable per atom."""
    from fh_screen.store.results_builder import GROUND_STATE_TYPES, element_prototypes, ground_state_prototypes

    #: experimental nearest-neighbour (bond) distances, Å
    bonds = {"P": 2.22, "As": 2.52, "Sb": 2.91, "Bi": 3.07, "Se": 2.37, "Te": 2.83, "S": 2.05, "C": 1.42,
             "Br": 2.29, "I": 2.72}
    assert set(bonds) == set(GROUND_STATE_TYPES)
    for element, bond in bonds.items():
        (structure,) = ground_state_prototypes(element)
        assert structure.get_space_group_info(symprec=0.1)[1] == GROUND_STATE_TYPES[element][0]
        nearest = min(n.nn_distance for n in structure.get_neighbors(structure[0], 4.0))
        assert abs(nearest - bond) / bond < 0.1, (element, nearest)
        assert any(s == structure for s in element_prototypes(element))  # relaxed beside the metal lattices
    assert ground_state_prototypes("Fe") == [] and len(element_prototypes("Fe")) == 3


def test_a_pure_element_force_field_result_below_the_cached_reference_is_a_warning(chgnet_run, tmp_path, caplog):
    """A CHGNet relax of an element that comes back below its cached prototype reference (its energy set 0.05
    eV/atom lower here) is named, as a lower VASP element is: results keep the reference they were built with."""
    import logging

    finished, element_store, references, uuids = chgnet_run
    job_store = SQLiteStore(tmp_path / "jobs.sqlite", "jobs", key="uuid")
    job_store.connect()
    template = next(iter(finished.docs_store.query({"uuid": uuids[0]})))
    lithium = copy.deepcopy(template)
    lithium["uuid"] = "lithium"
    lithium["metadata"] = {}
    bcc = Structure(Lattice.cubic(3.44), ["Li", "Li"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    lithium["output"]["structure"] = lithium["output"]["output"]["structure"] = bcc.as_dict()
    lithium["output"]["output"]["energy"] = 2 * (references["Li"] - 0.05)
    job_store.update([lithium], key="uuid")
    reference, results, elements = _stores(tmp_path)
    elements.update(list(element_store.query({})), key="reference_id")
    builder = ResultsBuilder(job_store, results, reference, elements)
    builder.connect()
    with caplog.at_level(logging.WARNING):
        for item in builder.get_items():
            builder.update_targets([builder.process_item(item)])
    [note] = builder.notes
    assert note.startswith(f"Li (chgnet): job lithium at {references['Li'] - 0.05:.4f} eV/atom is lower than the "
                           f"cached reference ({references['Li']:.4f} eV/atom") and "\n" not in note
    assert any(r.getMessage() == note for r in caplog.records if r.levelno == logging.WARNING)
    assert not list(reference.query({"formula": "Li"}))  # a pure element is never an entry


def test_force_field_references_can_be_relaxed_again_and_every_result_rebuilt_against_them(chgnet_run, tmp_path):
    """A store whose cached Li reference is stale (cached before the ground-state prototypes, or wrong):
    refresh_force_field_references relaxes it again and rebuilds each CHGNet result and its entry."""
    from fh_screen.jobs import chgnet_prerelax_maker
    from fh_screen.jobs.results import ResultsBackError, ResultsBackMaker, bring_results_back
    from fh_screen.store.results_builder import ElementReferenceDoc

    finished, _, references, uuids = chgnet_run
    job_store = SQLiteStore(tmp_path / "jobs.sqlite", "jobs", key="uuid")
    job_store.connect()
    job_store.update(list(finished.docs_store.query({"uuid": {"$in": uuids[:2]}})), key="uuid")
    store_path = tmp_path / "fh.sqlite"
    reference, results, elements = _stores(tmp_path)
    stale = {"Li": references["Li"] + 0.3, "F": references["F"]}
    elements.update([ElementReferenceDoc(reference_id=f"{e}|chgnet", element=e, source="chgnet",
                                         energy_per_atom_ev=v).model_dump() for e, v in stale.items()], key="reference_id")
    for store in (reference, results, elements):
        store.close()
    first = bring_results_back(job_store, store_path)
    assert first["states"] == {"successful": 2}

    def lif(store_references):
        with SQLiteStore(store_path, "results", key="result_id") as store:
            docs = sorted(store.query({"formula": "LiF"}), key=lambda d: d["job_uuid"])
        return [(d["energy_per_atom_ev"] - (store_references["Li"] + store_references["F"]) / 2) for d in docs], docs

    expected_stale, docs = lif(stale)
    assert [d["dhf_ev_per_atom"] for d in docs] == pytest.approx(expected_stale)
    with pytest.raises(ResultsBackError, match="needs the force_field_maker"):
        bring_results_back(job_store, store_path, refresh_force_field_references=True)
    with pytest.raises(ResultsBackError, match="needs the force_field_maker"):
        ResultsBackMaker(store_path=str(store_path), refresh_force_field_references=True).make(job_store=job_store)
    again = bring_results_back(job_store, store_path, chgnet_prerelax_maker(steps=60), refresh_force_field_references=True)
    assert again["states"] == {"successful": 2}  # both rebuilt, their ΔH_f changed by 0.15 eV/atom
    expected, docs = lif(references)
    assert [d["dhf_ev_per_atom"] for d in docs] == pytest.approx(expected, abs=1e-6)
    assert [round(a - b, 6) for a, b in zip(expected_stale, expected)] == [-0.15, -0.15]
    with SQLiteStore(store_path, "reference", key="formula") as store:
        entry = next(iter(store.query({"formula": "LiF", "source": "chgnet"})))
    assert entry["dhf_ev_per_atom"] == pytest.approx(min(expected), abs=1e-6)


def test_force_field_model_names_the_model_each_maker_loads():
    """atomate2's task document holds the package version only; the model comes from the maker's calculator kwargs."""
    pytest.importorskip("chgnet")
    from atomate2.forcefields.jobs import ForceFieldRelaxMaker
    from chgnet.model import CHGNet

    from fh_screen.store.results_builder import force_field_model

    loaded = CHGNet.load(verbose=False)  # what atomate2's CHGNet calculator loads without a model
    assert force_field_model(ForceFieldRelaxMaker(force_field_name="CHGNet")) == f"CHGNet {loaded.version}"
    assert force_field_model(ForceFieldRelaxMaker(force_field_name="CHGNet", calculator_kwargs={"model": loaded})) \
        == f"CHGNet {loaded.version}"
    assert force_field_model(ForceFieldRelaxMaker(
        force_field_name="CHGNet", calculator_kwargs={"model": "/models/finetuned.pt"})) == "CHGNet /models/finetuned.pt"
    assert force_field_model(object()) is None


def test_a_result_of_another_model_than_the_cached_references_waits_for_its_own(chgnet_run, tmp_path):
    """Review 12: the model a relax loaded (job metadata, set by the handoff) is on the result and on the
    references; one model's energy is never referenced to another model's elements: the result waits
    (no_reference, one line) until references of its model are cached, then it is built."""
    from fh_screen.store.results_builder import FORCE_FIELD_MODEL_METADATA_KEY, force_field_model
    from fh_screen.jobs import chgnet_prerelax_maker

    finished, element_store, references, uuids = chgnet_run
    model = force_field_model(chgnet_prerelax_maker())
    assert {d["force_field_model"] for d in element_store.query({})} == {model}
    job_store = _copy_store(finished, tmp_path)
    template = next(iter(job_store.query({"uuid": uuids[0]})))
    same, older = _variant(template, "same-model"), _variant(template, "older-model")
    same["metadata"] = {FORCE_FIELD_MODEL_METADATA_KEY: model}
    older["metadata"] = {FORCE_FIELD_MODEL_METADATA_KEY: "CHGNet 0.2.0"}
    job_store.update([same, older], key="uuid")
    reference, results, elements = _stores(tmp_path)
    elements.update(list(element_store.query({})), key="reference_id")
    _build(job_store, results, reference, elements)
    docs = {d["job_uuid"]: d for d in results.query({})}
    assert docs["same-model"]["state"] == "successful" and docs["same-model"]["force_field_model"] == model
    assert docs[uuids[0]]["state"] == "successful" and docs[uuids[0]]["force_field_model"] is None  # not recorded
    wrong = docs["older-model"]
    assert wrong["state"] == "no_reference" and wrong["dhf_ev_per_atom"] is None and wrong["energy_ev"] is not None
    assert wrong["message"] == (f"computed with CHGNet 0.2.0, but the cached chgnet references of F, Li are {model}: "
                                "relax them again with a maker of CHGNet 0.2.0 "
                                "(bring_results_back(..., refresh_force_field_references=True))")
    assert next(iter(reference.query({"formula": "LiF", "source": "chgnet"})))["source_id"] != "older-model"
    # references of that model arrive: the waiting result is built against them
    older_refs = {"Li": references["Li"] + 0.1, "F": references["F"] - 0.1}
    elements.update([ElementReferenceDoc(reference_id=f"{e}|chgnet", element=e, source="chgnet", energy_per_atom_ev=v,
                                         force_field_model="CHGNet 0.2.0").model_dump()
                     for e, v in older_refs.items()], key="reference_id")
    _build(job_store, results, reference, elements)
    rebuilt = next(iter(results.query({"job_uuid": "older-model"})))
    assert rebuilt["state"] == "successful" and rebuilt["element_references_ev_per_atom"] == older_refs


def test_a_lower_pure_element_relax_in_the_job_store_becomes_the_reference_when_references_are_relaxed(
        chgnet_run, tmp_path):
    """A CHGNet relax of Li in the JobStore 0.05 eV/atom below the best prototype: a note while the cached reference
    stands; relaxing the references again takes the lower one, and LiF's ΔH_f moves by half of that (x_Li = 1/2)."""
    from fh_screen.jobs import chgnet_prerelax_maker
    from fh_screen.jobs.results import bring_results_back

    finished, element_store, references, uuids = chgnet_run
    job_store = SQLiteStore(tmp_path / "jobs.sqlite", "jobs", key="uuid")
    job_store.connect()
    job_store.update(list(finished.docs_store.query({"uuid": uuids[0]})), key="uuid")
    lithium = copy.deepcopy(next(iter(job_store.query({"uuid": uuids[0]}))))
    lithium.update(uuid="lithium", metadata={})
    bcc = Structure(Lattice.cubic(3.44), ["Li", "Li"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    lithium["output"]["structure"] = lithium["output"]["output"]["structure"] = bcc.as_dict()
    lithium["output"]["output"]["energy"] = 2 * (references["Li"] - 0.05)
    job_store.update([lithium], key="uuid")
    store_path = tmp_path / "fh.sqlite"
    reference, results, elements = _stores(tmp_path)
    elements.update(list(element_store.query({})), key="reference_id")
    for store in (reference, results, elements):
        store.close()

    def lif_and_li_reference():
        with SQLiteStore(store_path, "results", key="result_id") as store:
            lif = next(iter(store.query({"job_uuid": uuids[0]})))["dhf_ev_per_atom"]
        with SQLiteStore(store_path, "element_references", key="reference_id") as store:
            li = next(iter(store.query({"reference_id": "Li|chgnet"})))
        return lif, li

    first = bring_results_back(job_store, store_path)
    [note] = first["notes"]
    assert note.startswith("Li (chgnet): job lithium") and note.endswith("(refresh_force_field_references=True takes "
                                                                        "the lower one)")
    before, li = lif_and_li_reference()
    assert li["job_uuid"] != "lithium" and li["energy_per_atom_ev"] == pytest.approx(references["Li"])
    again = bring_results_back(job_store, store_path, chgnet_prerelax_maker(steps=60), refresh_force_field_references=True)
    after, li = lif_and_li_reference()
    assert li["job_uuid"] == "lithium" and li["energy_per_atom_ev"] == pytest.approx(references["Li"] - 0.05, abs=1e-6)
    assert li["force_field_model"] == f"CHGNet {li['force_field_model'].split()[-1]}" and li["structure"]
    assert after - before == pytest.approx(0.025, abs=2e-3)  # the prototypes relax again to within 2 meV/atom
    assert again["notes"] == [] and again["states"] == {"successful": 2}  # LiF, and Li itself: now 0, not -0.05


# --------------------------------------------------------------------------- audit of 2026-12-07


def test_one_malformed_job_is_rejected_alone_and_odd_energies_or_species_are_not_energies(chgnet_run, tmp_path):
    """A job whose formula metadata is not a formula, an energy that is True or a text, and a structure with a
    dummy species are each one rejected result with its reason; the good jobs beside them are built (a bad
    metadata formula stopped the whole build with a TypeError, in every door, at every rerun; True was 1 eV)."""
    from pymatgen.core import Structure

    finished, element_store, _, uuids = chgnet_run
    job_store = _copy_store(finished, tmp_path)
    template = next(iter(job_store.query({"uuid": uuids[0]})))
    odd = []
    for uuid, formula in (("meta-int", 5), ("meta-bad", "Li((F"), ("meta-lower", "lif"), ("meta-dummy", "LiX")):
        doc = _variant(template, uuid)
        doc["metadata"] = {**(doc.get("metadata") or {}), "fh_screen_formula": formula}
        odd.append(doc)
    odd += [_variant(template, "energy-true", energy=True), _variant(template, "energy-text", energy="-10.3")]
    dummy = _variant(template, "dummy")
    structure = Structure.from_dict(dummy["output"]["structure"])
    structure.replace(0, "X0+")
    dummy["output"]["structure"] = structure.as_dict()
    job_store.update(odd + [dummy], key="uuid")
    reference, results, elements = _stores(tmp_path)
    elements.update(list(element_store.query({})), key="reference_id")
    _build(job_store, results, reference, elements)
    docs = {d["job_uuid"]: d for d in results.query({})}
    for uuid in ("meta-int", "meta-bad", "meta-lower", "meta-dummy"):
        assert docs[uuid]["state"] == "rejected" and "is not a formula" in docs[uuid]["message"], docs[uuid]
    for uuid in ("energy-true", "energy-text"):
        assert docs[uuid]["state"] == "rejected" and "not a finite number" in docs[uuid]["message"], docs[uuid]
    assert docs["dummy"]["state"] == "rejected" and docs["dummy"]["message"] == "structure holds dummy species X0+"
    assert all(docs[u]["state"] == "successful" for u in uuids[:2])  # the good relaxes beside them
    assert next(iter(reference.query({"formula": "LiF", "source": "chgnet"})))["source_id"] in uuids[:2]


def test_a_vasp_entry_that_disagrees_with_its_structure_is_rejected(tmp_path):
    """The energy comes from the task's entry and is divided by its structure's atoms: an entry of another
    composition (NiO on an FeO structure) or of another cell size became a wrong FeO entry; now rejected."""
    reference, results, elements = _stores(tmp_path)
    jobs = _fe_o_jobs(tmp_path, ("feo", -13.0))
    feo = _rocksalt(4.3, ("Fe", "O"))  # 8 atoms
    other = _vasp_job("nio-entry", feo, -13.0 * 8, {"Fe": 5.3, "O": 0.0})
    nio = feo.copy()
    nio.replace_species({"Fe": "Ni"})
    other["output"]["entry"] = ComputedEntry(nio.composition, -13.0 * 8, parameters=other["output"]["entry"]["parameters"]).as_dict()
    small = _vasp_job("small-entry", feo, -13.0 * 2, {"Fe": 5.3, "O": 0.0})
    small["output"]["entry"] = ComputedEntry("FeO", -13.0 * 2, parameters=small["output"]["entry"]["parameters"]).as_dict()
    jobs.update([other, small], key="uuid")
    _build(jobs, results, reference, elements)
    out = {d["job_uuid"]: d for d in results.query({})}
    assert out["nio-entry"]["state"] == "rejected" and out["nio-entry"]["message"] == "the task's entry is Ni4O4 (NiO), its structure FeO"
    assert out["small-entry"]["state"] == "rejected" and "entry is for 2 atoms (Fe1O1), its structure has 8" in out["small-entry"]["message"]
    assert out["feo"]["state"] == "successful"
    entry = next(iter(reference.query({"formula": "FeO", "source": "atomate2-vasp"})))
    assert entry["source_id"] == "feo"


def test_refreshing_force_field_references_never_loses_the_cache(chgnet_run, tmp_path):
    """A refresh relaxed only the elements of the JobStore at hand after deleting every cached one: a JobStore
    without the earlier tasks emptied the cache, and a relax that failed left it empty too. Now every cached
    element is relaxed again into a scratch store, and the cache changes only when every relax succeeded."""
    from fh_screen.jobs import chgnet_prerelax_maker
    from fh_screen.jobs.jobstore import local_job_store
    from fh_screen.jobs.results import bring_results_back
    from fh_screen.store.results_builder import ResultError

    finished, element_store, references, uuids = chgnet_run
    job_store = _copy_store(finished, tmp_path)
    store_path = tmp_path / "fh.sqlite"
    reference, results, elements = _stores(tmp_path)
    elements.update(list(element_store.query({})), key="reference_id")
    for store in (reference, results, elements):
        store.close()
    assert bring_results_back(job_store, store_path)["states"]["successful"] == 2

    def cached() -> dict:
        with SQLiteStore(store_path, "element_references", key="reference_id") as store:
            return {d["element"]: d["energy_per_atom_ev"] for d in store.query({"source": "chgnet"})}

    before = cached()
    assert set(before) == {"Li", "F"}
    failing = chgnet_prerelax_maker(steps=5)
    failing.calculator_kwargs = {**(failing.calculator_kwargs or {}), "model": str(tmp_path / "no-such-model.pt")}
    with pytest.raises(ResultError, match="every prototype relax failed"):
        bring_results_back(job_store, store_path, failing, refresh_force_field_references=True)
    assert cached() == before
    empty = local_job_store(tmp_path / "other-jobs.sqlite")  # a JobStore without the LiF relaxes
    again = bring_results_back(empty, store_path, chgnet_prerelax_maker(steps=3), refresh_force_field_references=True)
    after = cached()
    assert set(after) == {"Li", "F"} and after != before  # both relaxed again (3 steps: other energies)
    assert again["states"] == {"successful": 2}  # the LiF results rebuilt against them, not left without
    with SQLiteStore(store_path, "results", key="result_id") as store:
        lif = [d for d in store.query({"formula": "LiF"}) if d["state"] == "successful"]
    assert [d["element_references_ev_per_atom"] for d in lif] == [after, after]


def test_every_door_refuses_what_the_results_job_cannot_use_before_it_runs(chgnet_run, tmp_path):
    """bring_results_back took any truthy switch ("no") as a refresh where the Maker refused it; the Maker took a
    file that is no store, /dev/null and a Flow in place of its output; refresh_vasp_references, which the
    builder's note asks for, existed in the builder alone."""
    from jobflow import Flow

    from fh_screen.jobs import chgnet_prerelax_maker
    from fh_screen.jobs.results import ResultsBackError, ResultsBackMaker, bring_results_back

    finished, _, _, uuids = chgnet_run
    job_store = _copy_store(finished, tmp_path)
    with pytest.raises(ResultsBackError, match="refresh_force_field_references must be True or False, got 'no'"):
        bring_results_back(job_store, tmp_path / "a.sqlite", chgnet_prerelax_maker(steps=5), refresh_force_field_references="no")
    with pytest.raises(ResultsBackError, match="refresh_vasp_references must be True or False, got 1"):
        ResultsBackMaker(refresh_vasp_references=1).make()
    assert not (tmp_path / "a.sqlite").exists()
    text = tmp_path / "notes.txt"
    text.write_text("my notes\n")
    for path, message in ((text, "is not an fh-screen store"), ("/dev/null", "is not a file")):
        with pytest.raises(ResultsBackError, match=message):
            ResultsBackMaker(store_path=str(path)).make()
        with pytest.raises(ResultsBackError, match=message):
            bring_results_back(job_store, path)
    assert text.read_text() == "my notes\n"
    flow = Flow([chgnet_prerelax_maker(steps=5).make(_rocksalt(4.0))])
    with pytest.raises(ResultsBackError, match=r"takes the output of the calculations \(flow.output\), not the Flow"):
        ResultsBackMaker().make(flow)
    ResultsBackMaker().make(flow.output)  # what the docs show

    # the VASP re-pin the builder's note asks for, through bring_results_back and the Maker
    jobs = _fe_o_jobs(tmp_path, ("feo", -13.0))
    fe, _ = _fe_and_o2()
    store_path = tmp_path / "vasp.sqlite"
    bring_results_back(jobs, store_path)
    jobs.update([_vasp_job("fe-low", fe, -8.6 * 2, None)], key="uuid")
    noted = bring_results_back(jobs, store_path)
    assert any("refresh_vasp_references=True" in note for note in noted["notes"])
    repinned = bring_results_back(jobs, store_path, refresh_vasp_references=True)
    assert repinned["states"] == {"successful": 3} and repinned["notes"] == []  # FeO, Fe and fe-low against the new pin
    with SQLiteStore(store_path, "element_references", key="reference_id") as store:
        assert next(iter(store.query({"reference_id": "Fe|atomate2-vasp"})))["job_uuid"] == "fe-low"
    assert ResultsBackMaker(store_path=str(store_path), refresh_vasp_references=True).make().function_args[-1] is True


def test_a_write_that_fails_between_results_and_entries_is_completed_by_the_next_run(tmp_path, monkeypatch):
    """The results were written before the reference entries: when the entries' write failed (a full disk, a
    MongoDB user without rights on one collection), the next run found the results done and never made the entries."""
    from fh_screen.store import StoreFileError

    reference, results, elements = _stores(tmp_path)
    jobs = _fe_o_jobs(tmp_path, ("feo", -13.0))
    real = SQLiteStore.update

    def full_disk_on_entries(self, docs, key=None):
        if self.collection_name == "reference":
            raise StoreFileError(f"store file {self.path} cannot be used: database or disk is full")
        return real(self, docs, key=key)

    monkeypatch.setattr(SQLiteStore, "update", full_disk_on_entries)
    with pytest.raises(StoreFileError, match="disk is full"):
        _build(jobs, results, reference, elements)
    monkeypatch.setattr(SQLiteStore, "update", real)
    for store in (jobs, results, reference, elements):
        store.connect()
    _build(jobs, results, reference, elements)
    feo = next(iter(results.query({"job_uuid": "feo"})))
    entry = next(iter(reference.query({"formula": "FeO", "source": "atomate2-vasp"})), None)
    assert entry is not None and entry["result_id"] == feo["result_id"]
    assert entry["dhf_ev_per_atom"] == pytest.approx(feo["dhf_ev_per_atom"])
