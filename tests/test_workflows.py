"""The ready-to-run recipes in workflows/: the laptop recipe runs for real through CHGNet."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from jobflow import run_locally
from pymatgen.core import Composition
from pymatgen.io.vasp import Incar, Poscar

from fh_screen.jobs import HandoffDocument, PrescreenDocument, StructuresDocument, local_job_store, read_output

torch.set_num_threads(1)

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"


def _recipe(name: str):
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", WORKFLOWS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_laptop_recipe_runs_through_chgnet_and_outputs_are_read_back_from_the_store(tmp_path):
    pytest.importorskip("chgnet")
    pytest.importorskip("pyxtal")
    laptop = _recipe("laptop_chgnet")
    flow = laptop.build("Li-Fe-O", top_n=2, max_atoms=4, n_structures=2, max_sites=8, relax_steps=3, reference=None)
    store_file = tmp_path / "jobs.sqlite"
    run_locally(flow, store=local_job_store(store_file), log=False, create_folders=True, root_dir=str(tmp_path))

    # a fresh store object on the same file: what was written is on disk
    store = local_job_store(store_file)
    with store:
        prescreen = read_output(store, flow.jobs[0].uuid)
        structures = read_output(store, flow.jobs[1].uuid)
        handoff = read_output(store, flow.output.uuid)
        relaxes = list(store.query({"name": {"$regex": "^CHGNet pre-relax"}}, properties=["name", "output"]))
    assert isinstance(prescreen, PrescreenDocument) and isinstance(structures, StructuresDocument)
    assert isinstance(handoff, HandoffDocument)
    assert len(prescreen.selected_formulas) == 2
    assert {s.formula for s in structures.structures} == set(prescreen.selected_formulas)
    assert len(relaxes) == len(structures.structures)
    assert [e.formula for e in handoff.entries] == prescreen.selected_formulas
    for entry in handoff.entries:
        assert entry.prerelaxed and entry.energy_ev_per_atom < 0
        assert entry.structure.composition.reduced_formula == entry.formula
        per_atom = [r["output"]["output"]["energy"] / len(r["output"]["structure"]["sites"])
                    for r in relaxes if r["name"].startswith(f"CHGNet pre-relax {entry.formula} #")]
        assert entry.energy_ev_per_atom == pytest.approx(min(per_atom))
    assert not [p for p in handoff.problems if p.stage in ("structures", "prerelax")]


def test_bulk_recipe_screens_several_systems(tmp_path):
    bulk = _recipe("bulk_screen")
    flow = bulk.build(["Li-O", "Na-Cl"], top_n=1, max_atoms=4, reference=None)
    store = local_job_store(tmp_path / "bulk.sqlite")
    run_locally(flow, store=store, log=False, ensure_success=True)
    with store:
        docs = [read_output(store, job.uuid) for job in flow.jobs]
    assert [d.chemsys for d in docs] == ["Li-O", "Cl-Na"]
    assert all(len(d.selected_formulas) == 1 for d in docs)
    assert docs[1].selected_formulas == ["NaCl"]  # the only charge-neutral Na-Cl composition
    with store:
        names = [d["name"] for d in store.query({"name": {"$regex": "^fh-screen prescreen"}}, properties=["name"])]
    assert sorted(names) == ["fh-screen prescreen Cl-Na", "fh-screen prescreen Li-O"]


def test_vasp_recipe_writes_inputs_for_a_candidate(tmp_path):
    vasp = _recipe("screen_chgnet_vasp")
    flow = vasp.build("Li-Fe-O", top_n=2)
    assert [j.name.split(" ")[0] for j in flow.jobs] == ["fh-screen", "candidate", "fh-screen"]
    from fh_screen.jobs.structures import structures_for_composition

    candidate = structures_for_composition("LiFeO2", n_structures=1, max_sites=8)[0]
    written = vasp.write_vasp_inputs(candidate.structure, tmp_path)
    assert [p.name for p in written] == ["01_relax_1", "02_relax_2"]
    for folder in written:
        assert Incar.from_file(folder / "INCAR")["ISIF"] == 3
        assert Poscar.from_file(folder / "POSCAR").structure.composition.reduced_composition == Composition("LiFeO2")
        assert (folder / "POTCAR.spec").is_file() and (folder / "KPOINTS").is_file()
