"""The ready-to-run recipes in workflows/ and examples/, and the JobStore the jobflow way (issue 9 point 6).

The laptop recipe runs for real through CHGNet; ``~/.jobflow.yaml`` pointing at fh-screen's
embedded store is tested in a fresh interpreter with a temporary HOME.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from jobflow import run_locally
from pymatgen.core import Composition
from jobs_fixtures import fh_settings, reference_store  # noqa: F401 - fixtures
from pymatgen.io.vasp import Incar, Poscar

from fh_screen.jobs import HandoffDocument, PrescreenDocument, StructuresDocument, local_job_store, read_output
from fh_screen.store import FhScreenStore

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / "workflows"


def _recipe(name: str):
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", WORKFLOWS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_laptop_recipe_runs_through_chgnet_and_outputs_are_read_back_from_the_store(tmp_path, fh_settings):
    pytest.importorskip("chgnet")
    pytest.importorskip("pyxtal")
    laptop = _recipe("laptop_chgnet")
    flow = laptop.build("Li-Fe-O", top_n=2, max_atoms=6, n_structures=2, max_sites=8, relax_steps=3,
                        reference_store=reference_store(tmp_path / "ref.sqlite", "Li-Fe-O"))
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
    assert 1 <= len(prescreen.selected_formulas) <= 2  # top_n=2 of the screen's best new candidates
    assert all(c.dhf_pred_ev_per_atom < 0 and not c.is_known for c in prescreen.selected)
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
    # the prescreen was saved to the (configured) fh-screen store like a CLI screen
    with FhScreenStore.from_settings() as fh_store:
        assert fh_store.get_screen(prescreen.run_id).selected_formulas == prescreen.selected_formulas


def test_closed_loop_recipe_brings_chgnet_results_back_rescreens_and_finetunes(tmp_path, fh_settings, oqmd_dir, oqmd_slice_csv, monkeypatch):
    """Issue 19 point 5: screen → CHGNet → results back (source chgnet) → re-screen knows them → fine-tune."""
    pytest.importorskip("chgnet")
    monkeypatch.chdir(tmp_path)  # element-reference relaxes write ASE files into the working folder
    loop = _recipe("closed_loop_chgnet")
    fh_store = tmp_path / "fh.sqlite"
    reference_store(fh_store, "Li-P")  # real OQMD phases of Li-P: Li3P is not among them
    flow = loop.build("Li-P", top_n=2, max_atoms=6, n_structures=1, max_sites=8, relax_steps=300, model="paper-ensemble",
                      fh_store=str(fh_store), finetune_options={"replay_rows": 300, "epochs": 2, "val_rows": 300},
                      model_name="paper-ensemble-loop", model_output=str(tmp_path / "model"),
                      train_path=str(oqmd_slice_csv), val_path=str(oqmd_dir / "val.csv"), force=True)
    store = local_job_store(tmp_path / "jobs.sqlite")
    responses = run_locally(flow, store=store, log=False, create_folders=True, root_dir=str(tmp_path))
    failed = [job.name for job in [*flow.jobs[0].jobs, *flow.jobs[1:]] if job.uuid not in responses]
    assert not failed, failed
    with store:
        first = read_output(store, flow.jobs[0].jobs[0].uuid)
        results = read_output(store, flow.jobs[1].uuid)
        rescreen = read_output(store, flow.jobs[3].uuid)
        finetuned = read_output(store, flow.jobs[4].uuid)
    assert "Li3P" in first.selected_formulas
    assert results["states"].get("successful", 0) >= 1 and "Li3P" in results["formulas"]
    from fh_screen.store import SQLiteStore

    with FhScreenStore(reference=SQLiteStore(fh_store, "reference", key="formula", read_only=True), ensure_indexes=False) as fh:
        computed = {d["formula"]: d["dhf_ev_per_atom"] for d in fh.reference_docs(chemsys="Li-P", source="chgnet")}
    row = next(c for c in rescreen.candidates if c.formula == "Li3P")
    assert row.is_known and row.known_source == "chgnet" and row.known_dhf_ev_per_atom == pytest.approx(computed["Li3P"])
    assert "Li3P" not in rescreen.selected_formulas  # computed: not proposed again
    # both screens are saved in the same fh-screen store file the results went into
    with FhScreenStore(screens=SQLiteStore(fh_store, "screens", key="run_id", read_only=True), ensure_indexes=False) as fh:
        assert fh.get_screen(first.run_id).selected_formulas == first.selected_formulas
        assert fh.get_screen(rescreen.run_id).selected_formulas == rescreen.selected_formulas
    lines = loop.loop_lines(first, rescreen, results, finetuned)
    assert any(line.strip().startswith("Li3P") and "(chgnet)" in line for line in lines)
    assert finetuned.n_entries == len(computed) and finetuned.entries == "store source chgnet (Li-P)"
    assert finetuned.new_entries_mae_after < finetuned.new_entries_mae_before
    from fh_screen.models.predictor import Predictor

    assert Predictor.from_name(finetuned.model_path).name == "paper-ensemble-loop"


def test_closed_loop_on_a_laptop_without_oqmd_data_runs_to_the_rescreen_and_says_it_skipped_finetuning(
        tmp_path, fh_settings, monkeypatch, capsys):
    """The issue's command on a machine with only the package: no train.csv/val.csv to replay, so the loop
    runs to the re-screen, says why it did not fine-tune, and exits 0 (it used to refuse to start)."""
    pytest.importorskip("chgnet")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FH_SCREEN_OQMD_DIR", raising=False)
    loop = _recipe("closed_loop_chgnet")
    assert "FH_SCREEN_OQMD_DIR" in loop.finetune_data_note()
    fh_store = tmp_path / "fh.sqlite"
    reference_store(fh_store, "Li-P")
    FhScreenStore.embedded(fh_store).connect().close()
    loop.main(["Li-P", "--top-n", "1", "--max-atoms", "6", "--structures", "1", "--max-sites", "8", "--steps", "50",
               "--model", "paper", "--fh-store", str(fh_store), "--store", str(tmp_path / "jobs.sqlite")])
    out = capsys.readouterr().out
    assert out.startswith("fine-tuning skipped: it replays train.csv and checks val.csv"), out
    assert "first screen picked: Li3P" in out and "re-screen picks:" in out and "fine-tuned" not in out
    assert "Li3P" in out.split("re-screen picks:")[0].split("results back:")[1] and "(chgnet)" in out
    monkeypatch.setenv("FH_SCREEN_OQMD_DIR", str(tmp_path))
    assert loop.finetune_data_note() is None


def test_closed_loop_recipe_fills_a_new_fh_store_with_the_shipped_reference_and_leaves_an_existing_one(tmp_path, fh_settings):
    """A new ``--fh-store`` file is filled like the configured store on first use; a user's own store is kept as it is."""
    from fh_screen.store import SQLiteStore

    loop = _recipe("closed_loop_chgnet")
    fresh = tmp_path / "new" / "fh.sqlite"
    fresh.parent.mkdir()
    loop.build("Li-Fe-O", top_n=1, fh_store=str(fresh), finetune=False)
    with FhScreenStore(reference=SQLiteStore(fresh, "reference", key="formula", read_only=True),
                       ensure_indexes=False) as fh:
        shipped = fh.reference_frame(chemsys="Li-Fe-O")
    assert len(shipped) > 10 and set(shipped["source"]) == {"oqmd"}
    assert {"Fe2O3", "Li2O"} <= set(shipped["formula"])
    with FhScreenStore.embedded(fresh, read_only=True) as whole:  # a whole store, as `fh-screen --store` opens it
        assert whole.n_reference() == len(whole.reference_frame()) > len(shipped)
    own = tmp_path / "own.sqlite"
    reference_store(own, "Li-P")  # a store of the user's own: nothing is added to it
    with FhScreenStore(reference=SQLiteStore(own, "reference", key="formula", read_only=True), ensure_indexes=False) as fh:
        before = len(fh.reference_frame())
    loop.build("Li-P", top_n=1, fh_store=str(own), finetune=False)
    with FhScreenStore(reference=SQLiteStore(own, "reference", key="formula", read_only=True), ensure_indexes=False) as fh:
        assert len(fh.reference_frame()) == before
        assert fh.reference_frame(chemsys="Li-Fe-O").empty


def test_closed_loop_rerun_writes_the_next_free_model_name_and_a_taken_name_fails_in_one_line(tmp_path, fh_settings, capsys,
                                                                                             oqmd_dir):
    """A rerun of the loop (its fine-tuned model already written) must work: it writes <model>-ft-2, -3, ...
    beside the earlier models; a --name that holds a model stops before anything runs, in one line."""
    import shutil

    from fh_screen.jobs.finetune import FinetuneMaker, default_output_dir
    from fh_screen.models.predictor import shipped_model_path

    loop = _recipe("closed_loop_chgnet")
    reference = reference_store(tmp_path / "ref.sqlite", "Li-P")
    first_name = loop.build("Li-P", top_n=1, model="paper-ensemble", reference_store=reference).jobs[4].maker.model_name
    assert first_name == "paper-ensemble-ft"  # nothing written yet: the usual name
    earlier = default_output_dir("paper-ensemble-ft")  # what the first run wrote (a real checkpoint)
    earlier.mkdir(parents=True)
    shutil.copy(shipped_model_path("paper-ensemble"), earlier / "model.pt")
    learn = loop.build("Li-P", top_n=1, model="paper-ensemble", reference_store=reference).jobs[4]
    assert isinstance(learn.maker, FinetuneMaker) and learn.maker.model_name == "paper-ensemble-ft-2"
    assert learn.maker.output_dir is None  # default_output_dir("paper-ensemble-ft-2"): beside the first
    (default_output_dir("paper-ensemble-ft-2")).mkdir()
    shutil.copy(earlier / "model.pt", default_output_dir("paper-ensemble-ft-2") / "model.pt")
    assert loop.finetuned_model_name("paper-ensemble")[0] == "paper-ensemble-ft-3"
    name, note = loop.finetuned_model_name("paper-ensemble")
    assert note.startswith("paper-ensemble-ft already holds a model") and "paper-ensemble-ft-3" in note
    assert loop.finetuned_model_name("paper-ensemble", model_name="mine") == ("mine", None)
    # a name asked for that is taken: one line, exit 2, before any job ran
    with pytest.raises(SystemExit) as stopped:
        loop.main(["Li-P", "--model", "paper-ensemble", "--name", "paper-ensemble-ft", "--store", str(tmp_path / "jobs.sqlite")])
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "already holds a model" in err and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "jobs.sqlite").exists()


def test_closed_loop_skips_the_finetuning_when_no_new_successful_entry_came_back(tmp_path, fh_settings, oqmd_slice_csv,
                                                                                  oqmd_dir):
    """A rerun with nothing new fine-tuned again (paper-ft-2 identical to paper-ft): the loop now stops that job
    when the results back brought no new successful entry, and says so."""
    from jobflow import Flow

    from fh_screen.jobs.finetune import FinetuneMaker

    loop = _recipe("closed_loop_chgnet")
    nothing = {"states": {}, "formulas": [], "n_results": 0}
    failed_only = {"states": {"failed": 2}, "formulas": [], "n_results": 2}
    assert loop.finetune_skip_note(nothing) == ("fine-tuning skipped: the results brought back no new successful entry "
                                                "(nothing new), so the model has nothing new to learn")
    assert "(2 failed)" in loop.finetune_skip_note(failed_only)
    assert loop.finetune_skip_note({"states": {"successful": 1}, "formulas": ["Li3P"], "n_results": 1}) is None
    # the flow: the fine-tuning (still jobs[4]) runs after the job that decides (jobs[5]), on its output
    flow = loop.build("Li-P", top_n=1, model="paper", reference_store=reference_store(tmp_path / "ref.sqlite", "Li-P"))
    learn, decide = flow.jobs[4], flow.jobs[5]
    assert isinstance(learn.maker, FinetuneMaker) and {r.uuid for r in learn.input_references} == {decide.uuid}
    assert {r.uuid for r in decide.input_references} == {flow.jobs[1].uuid, flow.jobs[3].uuid}
    # nothing new back: the fine-tuning job is stopped, not failed, and writes nothing
    for results in (nothing, failed_only):
        gate = loop.when_new_entries(results)
        job = FinetuneMaker(model="paper", model_name="paper-again", store_path=str(tmp_path / "later.sqlite"),
                            output_dir=str(tmp_path / "again"), train_path=str(oqmd_slice_csv),
                            val_path=str(oqmd_dir / "val.csv")).make(gate.output)
        responses = run_locally(Flow([gate, job]), store=local_job_store(tmp_path / "jobs.sqlite"), log=False)
        assert gate.uuid in responses and job.uuid not in responses
        assert responses[gate.uuid][1].output == {"finetune": False, "note": loop.finetune_skip_note(results)}
        assert responses[gate.uuid][1].stop_children and not (tmp_path / "again").exists()
    new = loop.when_new_entries({"states": {"successful": 1}, "formulas": ["Li3P"], "n_results": 1})
    response = run_locally(new, store=local_job_store(tmp_path / "jobs.sqlite"), log=False)[new.uuid][1]
    assert response.output == {"finetune": True, "note": None} and not response.stop_children


def test_closed_loop_with_nothing_new_back_skips_the_finetuning_and_says_so(tmp_path, fh_settings, capsys, monkeypatch,
                                                                            oqmd_dir):
    """The script end to end where nothing new comes back (Li-O: OQMD knows every small charge-balanced
    candidate, so nothing is relaxed): it used to fine-tune anyway (and, with no chgnet entry at all, stop
    the loop there); now it stops the fine-tuning, says so in its last line, and exits 0."""
    monkeypatch.chdir(tmp_path)
    loop = _recipe("closed_loop_chgnet")
    fh_store = tmp_path / "fh.sqlite"
    reference_store(fh_store, "Li-O")
    FhScreenStore.embedded(fh_store).connect().close()
    loop.main(["Li-O", "--top-n", "1", "--max-atoms", "4", "--model", "paper", "--fh-store", str(fh_store),
               "--store", str(tmp_path / "jobs.sqlite"), "--workdir", str(tmp_path / "runs")])
    out = capsys.readouterr().out
    assert "first screen picked: nothing" in out and "results back: {}" in out, out
    assert out.strip().splitlines()[-1] == ("fine-tuning skipped: the results brought back no new successful entry "
                                            "(nothing new), so the model has nothing new to learn"), out
    assert "fine-tuned" not in out and "the loop stopped" not in out
    assert not (fh_settings / "models").exists()  # no paper-ft written


def test_bulk_recipe_screens_several_systems(tmp_path, fh_settings):
    bulk = _recipe("bulk_screen")
    flow = bulk.build(["Li-O", "Na-Cl"], top_n=1, max_atoms=4, use_reference=False)
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
    with FhScreenStore.from_settings() as fh_store:
        assert {r["run_id"] for r in fh_store.screen_summaries()} == {d.run_id for d in docs}


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


_JOBFLOW_SCRIPT = textwrap.dedent("""
    import json, sys
    import torch
    torch.set_num_threads(1)
    from jobflow import SETTINGS, run_locally
    from fh_screen.jobs import PrescreenMaker, StructureMaker, read_output
    from fh_screen.store import SQLiteStore

    reference = SQLiteStore(sys.argv[1], "reference", key="formula")
    prescreen = PrescreenMaker(top_n=1, reference_store=reference, screen_options={"max_atoms": 4})
    job = prescreen.make("Li-O")
    structures = StructureMaker(n_structures=1, max_sites=6).make(job.output.selected_formulas)
    from jobflow import Flow
    run_locally(Flow([job, structures]), log=False, ensure_success=True)     # no store=: JOB_STORE
    store = SETTINGS.JOB_STORE
    with store:
        doc = read_output(store, job.uuid)
        made = read_output(store, structures.uuid)
    print(json.dumps({"store": type(store.docs_store).__name__, "path": str(store.docs_store.path),
                      "data": sorted(store.additional_stores), "run_id": doc.run_id,
                      "selected": doc.selected_formulas, "structures": [s.formula for s in made.structures]}))
""")


def test_jobflow_yaml_job_store_on_the_embedded_store_needs_no_store_argument(tmp_path):
    """~/.jobflow.yaml JOB_STORE = fh-screen's SQLite store: run_locally(flow) alone writes there."""
    from fh_screen.jobs import jobflow_yaml
    from fh_screen.store import SQLiteStore

    home = tmp_path / "home"
    home.mkdir()
    (home / ".jobflow.yaml").write_text(jobflow_yaml("~/jobs/jobflow.sqlite"))
    reference_store(tmp_path / "ref.sqlite", "Li-O")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FH_SCREEN_", "JOBFLOW_"))}
    env.update(HOME=str(home), FH_SCREEN_REFERENCE_DATA="false", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", _JOBFLOW_SCRIPT, str(tmp_path / "ref.sqlite")], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    db = home / "jobs" / "jobflow.sqlite"
    assert out["store"] == "SQLiteStore" and out["path"] == str(db) and out["data"] == ["data"]
    assert len(out["selected"]) == 1 and out["structures"] == out["selected"]
    # what run_locally wrote is on disk, in the file named by ~/.jobflow.yaml: a fresh store reads it
    store = local_job_store(db)
    with store:
        docs = list(store.query({"name": {"$regex": "^fh-screen prescreen"}}, properties=["uuid"]))
        doc = read_output(store, docs[0]["uuid"])
    assert doc.run_id == out["run_id"] and doc.candidates  # the candidates came back from the data store
    data = SQLiteStore(db, "data", key="blob_uuid")
    with data:
        assert data.count() >= 1
    # and the screen went to the worker's configured fh-screen store (HOME/.fh_screen), as the CLI's do
    with FhScreenStore.embedded(home / ".fh_screen" / "fh_screen.sqlite", read_only=True) as fh_store:
        assert fh_store.get_screen(out["run_id"]).selected_formulas == out["selected"]


def test_examples_run_on_the_new_api(tmp_path, fh_settings, monkeypatch):
    """The short example scripts a new user copies (those without DFT or CHGNet)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["x"])
    reference_store(fh_settings / "fh_screen.sqlite", "Li-O")  # the configured store knows Li-O's phases
    spec = importlib.util.spec_from_file_location("example_predict", ROOT / "examples" / "predict_formulas.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ranked, selected = module.main(["Li2O", "Li2O2", "LiO2"])
    assert {c.formula for c in ranked} == {"Li2O", "Li2O2", "LiO2"}
    assert [c.rank for c in ranked] == sorted(c.rank for c in ranked) and len(selected) == 2
    spec = importlib.util.spec_from_file_location("example_insert", ROOT / "examples" / "insert_prescreen.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    flows = module.main("Li-Fe-O")
    assert all(f.jobs[0].maker.top_n == 2 for f in flows)
