"""The Python API's door agrees with the CLI's and the Maker's: options, models, the caller's known table, the store.

Real data throughout: the OQMD table shipped with the package, real stores on disk, jobflow run
locally with a memory JobStore.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from jobflow import run_locally
from jobs_fixtures import fh_settings, memory_job_store, reference_store  # noqa: F401 - fixtures
from store_fixtures import fresh_machine
from typer.testing import CliRunner

from fh_screen import screen
from fh_screen.errors import FhScreenError
from fh_screen.jobs import PrescreenError, PrescreenMaker, read_output
from fh_screen.jobs.prescreen import PRESCREEN_DFT_BUDGET, PrescreenOptionsError
from fh_screen.models.checkpoint import ModelError
from fh_screen.models.predictor import load_predictor
from fh_screen.screening import ScreenError, ScreenOptions
from fh_screen.service import ScreenServiceError


def _one_line(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text and "Traceback" not in text and "pydantic.dev" not in text
    return text


# -- 1. the prescreen's options: a mapping and ScreenOptions are the same options ---------------------


def test_prescreen_options_are_the_same_given_as_options_or_as_a_mapping(tmp_path):
    reference = reference_store(tmp_path / "ref.sqlite", "Li-Fe-O")
    docs = [PrescreenMaker(model="paper", screen_options=given, save_screen=False, top_n=None,
                           reference_store=reference).prescreen("Li-Fe-O")
            for given in ({"max_atoms": 8}, ScreenOptions(max_atoms=8))]
    assert docs[0].options == docs[1].options == dataclasses.asdict(ScreenOptions(max_atoms=8, dft_budget=PRESCREEN_DFT_BUDGET))
    assert docs[0].selected_formulas == docs[1].selected_formulas and 0 < len(docs[1].selected) <= PRESCREEN_DFT_BUDGET
    # options that choose their selection keep it, in either form
    for given in ({"max_atoms": 8, "select_p_min": 0.5}, ScreenOptions(max_atoms=8, select_p_min=0.5)):
        assert PrescreenMaker(screen_options=given).screen_options.dft_budget is None
    for given in ({"max_atoms": 8, "dft_budget": 2}, ScreenOptions(max_atoms=8, dft_budget=2)):
        assert PrescreenMaker(screen_options=given).screen_options.dft_budget == 2


# -- 2. model names ----------------------------------------------------------------------------------------


def test_a_bad_model_name_fails_at_make_with_the_cli_s_line(fh_settings):
    with pytest.raises(ModelError) as made:
        PrescreenMaker(model="nope").make("Li-O")
    with pytest.raises(ModelError) as api:
        screen("Li-O", predictor="nope")
    assert _one_line(made.value) == _one_line(api.value) and "no model named 'nope'" in str(api.value)
    for empty in ("", "  "):
        with pytest.raises(ModelError, match="empty model name") as info:
            screen("Li-O", predictor=empty)
        _one_line(info.value)
        with pytest.raises(ModelError, match="empty model name"):
            PrescreenMaker(model=empty).make("Li-O")
    from fh_screen.cli import build_app

    result = CliRunner().invoke(build_app(), ["screen", "Li-O", "--model", "", "--no-store"])
    assert result.exit_code == 2 and "empty model name" in result.output and "Traceback" not in result.output
    with pytest.raises(ScreenError, match="predictor must be a Predictor"):
        screen("Li-O", predictor=42)


def test_a_model_name_is_accepted_as_the_predictor(fh_settings):
    by_name = screen("Li-O", predictor="paper", options=ScreenOptions(max_atoms=6))
    loaded = screen("Li-O", predictor=load_predictor("paper"), options=ScreenOptions(max_atoms=6))
    assert by_name.model_name == "paper"
    pd.testing.assert_frame_equal(by_name.table, loaded.table)


# -- 3. the caller's known table is read as ingest reads a table ---------------------------------------


def test_the_callers_known_table_refuses_what_ingest_refuses_and_counts_what_it_sets_aside():
    from fh_screen.store.bootstrap import packaged_reference_frame

    predictor = load_predictor("paper")
    options = ScreenOptions(max_atoms=6)
    real = packaged_reference_frame("Li-O")[["formula", "dhf_ev_per_atom"]]
    clean = screen("Li-O", predictor=predictor, known=real, options=options)
    assert clean.warnings == [] and clean.n_known > 0
    bad_rows = pd.DataFrame({"formula": ["abc", "LiO7", "Li5O3", "Li3O7", "Fe2O3", "Li", "O"],
                             "dhf_ev_per_atom": [-1.0, np.nan, -np.inf, -1e9, -1.7, 0.0, "x"]})
    noisy = screen("Li-O", predictor=predictor, known=pd.concat([real, bad_rows], ignore_index=True), options=options)
    assert len(noisy.warnings) == 1
    warning = _one_line(noisy.warnings[0])
    assert warning.startswith(f"5 of {len(real) + 7} rows of the known phases given set aside")
    assert "1 outliers" in warning and "1 bad formulas" in warning and "2 non-numeric or infinite" in warning
    pd.testing.assert_frame_equal(noisy.table, clean.table)  # Fe2O3 (not in Li-O) and the elements at 0: ignored
    for refused, words in ((pd.DataFrame({"formula": ["Li2O", "Li2Xx"], "dhf_ev_per_atom": [-2.0, -1.0]}), "Xx"),
                           (pd.DataFrame({"formula": ["Li2O", "Li"], "dhf_ev_per_atom": [-2.0, 0.5]}), "pure element Li")):
        with pytest.raises(ScreenError, match=words) as info:
            screen("Li-O", predictor=predictor, known=refused, options=options)
        _one_line(info.value)
    with pytest.raises(ScreenError, match="known must be a pandas DataFrame") as info:
        screen("Li-O", predictor=predictor, known=[{"formula": "Li2O", "dhf_ev_per_atom": -2.0}])
    _one_line(info.value)
    # a table none of whose rows is usable is still the caller's: never silently the store's
    empty = screen("Li-O", predictor=predictor, known=pd.DataFrame({"formula": ["Li2O"], "dhf_ev_per_atom": [np.nan]}),
                   options=options)
    assert empty.n_known == 0 and len(empty.warnings) == 2
    assert empty.warnings[0] == ("no known compound of Li-O in the known phases given: the hull is the pure elements "
                                 "alone and every composition counts as new")
    # the core screen without known phases says so, and how to give them (the audit: NaCl new, P(stable) 0.11)
    from fh_screen.screening import screen as core_screen

    bare = core_screen("Li-O", predictor=predictor, options=options)
    assert bare.n_known == 0 and bare.warnings == [
        "no known compound of Li-O (known=None): the hull is the pure elements alone and every composition counts as "
        "new; pass known=DataFrame(formula, dhf_ev_per_atom), or screen with fh_screen.screen, which reads the known "
        "phases from the store"]


@pytest.mark.parametrize("truth", [True, False, np.True_], ids=["True", "False", "numpy-True"])
def test_a_truth_value_in_the_known_table_is_set_aside_not_read_as_one_or_zero(truth):
    """True/False in the ΔH_f column became 1.0/0.0 eV/atom (every known row at +1.0, no warning); a file's
    "True" is set aside as not a number, and so is a table's, whether the column is bool or mixed."""
    from fh_screen.store.bootstrap import packaged_reference_frame

    real = packaged_reference_frame("Li-O")[["formula", "dhf_ev_per_atom"]]
    mixed = real.astype({"dhf_ev_per_atom": object})
    mixed.loc[mixed.index[0], "dhf_ev_per_atom"] = truth
    options = ScreenOptions(max_atoms=6)
    result = screen("Li-O", predictor=load_predictor("paper"), known=mixed, options=options)
    assert _one_line(result.warnings[0]).startswith(f"1 of {len(real)} rows of the known phases given set aside: "
                                                    "1 non-numeric or infinite values")
    all_bool = real.assign(dhf_ev_per_atom=True)
    every = screen("Li-O", predictor=load_predictor("paper"), known=all_bool, options=options)
    assert every.n_known == 0 and f"{len(real)} non-numeric or infinite values" in every.warnings[1]


# -- 4. options are checked when made, with one line, the same in every door ------------------------------


@pytest.mark.parametrize("missing", [None, np.nan, pd.NA], ids=["None", "nan", "NA"])
def test_a_known_row_without_a_formula_is_counted_as_set_aside(missing):
    """A row whose formula is None was read as "None" (nobelium, outside the system) and dropped uncounted."""
    from fh_screen.store.bootstrap import packaged_reference_frame

    real = packaged_reference_frame("Li-O")[["formula", "dhf_ev_per_atom"]]
    given = pd.concat([real, pd.DataFrame({"formula": [missing], "dhf_ev_per_atom": [-1.0]})], ignore_index=True)
    result = screen("Li-O", predictor=load_predictor("paper"), known=given, options=ScreenOptions(max_atoms=6))
    assert len(result.warnings) == 1, result.warnings
    assert _one_line(result.warnings[0]).startswith(f"1 of {len(real) + 1} rows of the known phases given set aside: "
                                                    f"1 missing values")
    assert result.n_known == screen("Li-O", predictor=load_predictor("paper"), known=real,
                                    options=ScreenOptions(max_atoms=6)).n_known


@pytest.mark.parametrize("options, words", [
    ({"max_atom": 6}, "unknown screen option 'max_atom' (did you mean 'max_atoms'?)"),
    ({"max_atoms": "abc"}, "screen option max_atoms"),
    ({"select_p_min": 2}, "select_p_min must be a probability"),
    ({"dft_budget": 0}, "dft_budget must be a positive integer"),
    ({"max_atoms": 0}, "max_atoms must be an integer from 2 to 200"),
    ({"max_atoms": 1000}, "max_atoms must be an integer from 2 to 200"),
])
def test_a_bad_option_is_one_screen_error_in_every_door(options, words):
    with pytest.raises(ScreenError) as made:
        ScreenOptions(**options)
    with pytest.raises(ScreenError) as mapped:
        ScreenOptions.from_mapping(options)
    with pytest.raises(PrescreenError) as job:
        PrescreenMaker(screen_options=options)
    assert isinstance(job.value, (ScreenError, PrescreenOptionsError))
    assert words in _one_line(made.value) and _one_line(made.value) == _one_line(mapped.value) == _one_line(job.value)


@pytest.mark.parametrize("given, words", [
    ("missing.json", "no P(stable) classifier at"),
    ("folder", "it is a folder"),
    ("not-json.json", "not a P(stable) classifier file"),
    ("other.json", "missing field 'feature_names'"),
])
def test_a_stability_model_that_is_no_classifier_is_refused_not_swapped_for_the_fallback(tmp_path, given, words):
    """A typo in ``stability_model`` used to screen quietly with the σ-only fallback (another P(stable), another
    short list); ``"none"`` asks for that fallback by name."""
    (tmp_path / "folder").mkdir()
    (tmp_path / "not-json.json").write_text("{not json")
    (tmp_path / "other.json").write_text('{"bad": 1}')
    options = {"stability_model": str(tmp_path / given)}
    with pytest.raises(ScreenError) as made:
        ScreenOptions(**options)
    with pytest.raises(PrescreenError) as job:
        PrescreenMaker(screen_options=options)
    assert words in _one_line(made.value) and str(tmp_path / given) in _one_line(made.value)
    assert _one_line(made.value) == _one_line(job.value)


def test_the_fallback_by_name_and_the_shipped_classifier_by_its_path_screen_as_documented():
    from fh_screen.screening.stability import STABILITY_MODEL_PATH

    shipped = screen("Li-O", predictor="paper", save=False)
    by_path = screen("Li-O", predictor="paper", save=False, options=ScreenOptions(stability_model=str(STABILITY_MODEL_PATH)))
    fallback = screen("Li-O", predictor="paper", save=False, options=ScreenOptions(stability_model="none"))
    assert by_path.table["p_stable"].tolist() == shipped.table["p_stable"].tolist()
    assert shipped.stability_model is not None and fallback.stability_model is None
    new = ~fallback.table["is_known"]  # paper has no σ: the σ-only fallback has no probability to give
    assert fallback.table.loc[new, "p_stable"].isna().all() and shipped.table.loc[new, "p_stable"].notna().all()


def test_a_relative_stability_model_path_is_the_file_where_the_options_were_made(tmp_path, monkeypatch):
    """``sub/model.json`` or ``~/model.json`` is read where the options are made; a screen run from another folder
    (a job in its own folder) opens the same file instead of failing there."""
    import shutil

    from fh_screen.screening.stability import STABILITY_MODEL_PATH

    (tmp_path / "sub").mkdir()
    shutil.copy(STABILITY_MODEL_PATH, tmp_path / "sub" / "model.json")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "sub"))
    relative = ScreenOptions(stability_model="sub/model.json")
    home = ScreenOptions.from_mapping({"stability_model": "~/model.json"})
    assert relative.stability_model == home.stability_model == str(tmp_path / "sub" / "model.json")
    elsewhere = tmp_path / "job"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    shipped = screen("Li-O", predictor="paper", save=False)
    moved = screen("Li-O", predictor="paper", save=False, options=relative)
    assert moved.table["p_stable"].tolist() == shipped.table["p_stable"].tolist()


def test_a_size_limit_is_the_same_error_in_screen_and_in_the_maker():
    options = {"max_atoms": 20, "max_candidates": 10}
    with pytest.raises(ScreenError) as api:
        screen("Li-Fe-O", predictor="paper", options=ScreenOptions(**options))
    with pytest.raises(ScreenError) as job:
        PrescreenMaker(screen_options=options).make("Li-Fe-O")
    assert isinstance(job.value, PrescreenError) and isinstance(api.value, FhScreenError)
    assert _one_line(api.value) == _one_line(job.value)


# -- 5. screen(save=False) is --no-store: nothing is created on a fresh machine ---------------------------


def test_screen_without_save_creates_no_store_and_reads_the_shipped_table(tmp_path, monkeypatch):
    data_dir = fresh_machine(tmp_path, monkeypatch, reference_data=True)
    result = screen("Li-O", predictor="paper", options=ScreenOptions(max_atoms=6))
    assert result.n_known > 0 and not (data_dir / "fh_screen.sqlite").exists()
    from fh_screen.cli import build_app

    cli = CliRunner().invoke(build_app(), ["screen", "Li-O", "-m", "paper", "--max-atoms", "6", "--no-store",
                                           "--json", str(tmp_path / "cli.json")])
    assert cli.exit_code == 0, cli.output
    assert list(pd.read_json(tmp_path / "cli.json")["formula"]) == list(result.table["formula"])
    assert not (data_dir / "fh_screen.sqlite").exists()


def test_an_unusable_data_folder_is_one_line_and_save_false_still_screens(tmp_path, monkeypatch):
    fresh_machine(tmp_path, monkeypatch, reference_data=True)
    not_a_folder = tmp_path / "data_is_a_file"
    not_a_folder.write_text("x")
    monkeypatch.setenv("FH_SCREEN_DATA_DIR", str(not_a_folder))
    assert screen("Li-O", predictor="paper", options=ScreenOptions(max_atoms=6)).n_known > 0
    with pytest.raises(ScreenServiceError, match="is a file, not a folder") as info:
        screen("Li-O", predictor="paper", options=ScreenOptions(max_atoms=6), save=True)
    assert str(not_a_folder) in _one_line(info.value)


def test_a_prescreen_job_with_options_runs_and_selects_as_with_a_mapping(tmp_path):
    reference = reference_store(tmp_path / "ref.sqlite", "Li-O")
    job = PrescreenMaker(model="paper", screen_options=ScreenOptions(max_atoms=6), top_n=None, save_screen=False,
                         reference_store=reference).make("Li-O")
    store = memory_job_store()
    run_locally(job, store=store, log=False, ensure_success=True)
    doc = read_output(store, job.uuid)
    assert doc.options["dft_budget"] == PRESCREEN_DFT_BUDGET and 0 < len(doc.selected) <= PRESCREEN_DFT_BUDGET
    same = PrescreenMaker(model="paper", screen_options={"max_atoms": 6}, top_n=None, save_screen=False,
                          reference_store=reference).prescreen("Li-O")
    assert same.selected_formulas == doc.selected_formulas and same.options == doc.options


def test_the_jobs_docs_list_every_prescreen_default():
    from pathlib import Path

    from fh_screen.jobs import PRESCREEN_SCREEN_DEFAULTS

    text = (Path(__file__).resolve().parents[1] / "docs" / "jobs.md").read_text()
    section = text.split("### Defaults: the CLI and the Maker")[1].split("\n## ")[0]
    rows = {line.split("|")[1].strip().strip("`") for line in section.splitlines() if line.startswith("| `")}
    assert set(PRESCREEN_SCREEN_DEFAULTS) <= rows


def test_a_system_that_is_no_text_nor_symbols_is_one_line_in_every_door(fh_settings):
    """The audit: screen(None), screen(123) and PrescreenMaker().make(None) raised a bare TypeError."""
    from fh_screen.chem.candidates import ChemsysError
    from fh_screen.screening import screen as core_screen

    expected = "a chemical system is a text such as 'Li-Fe-P-O' or a sequence of element symbols, got "
    for given in (None, 123, b"Li-O"):
        for door in (screen, core_screen, PrescreenMaker(model="paper").make):
            with pytest.raises(ChemsysError) as caught:
                door(given)
            assert _one_line(caught.value) == expected + type(given).__name__
    with pytest.raises(ScreenError) as caught:
        core_screen("Li-O", options={"max_atoms": 4})
    assert _one_line(caught.value) == "options must be ScreenOptions (ScreenOptions.from_mapping for a dict), got dict"


def test_the_package_exports_its_options_and_says_it_is_typed():
    """``from fh_screen import ScreenOptions`` (the options of ``screen``); ``py.typed`` ships as package data (PEP 561)."""
    import tomllib
    from importlib.resources import files
    from pathlib import Path

    import fh_screen
    from fh_screen import ScreenOptions as exported

    assert exported is ScreenOptions and "ScreenOptions" in fh_screen.__all__
    assert files("fh_screen").joinpath("py.typed").is_file()
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert "py.typed" in pyproject["tool"]["setuptools"]["package-data"]["fh_screen"]


def test_screen_refuses_switches_and_objects_it_cannot_use_in_one_line(tmp_path, monkeypatch):
    """save="no" saved a run (any truthy value counted); progress=3, store="x.sqlite" and a prefilter_model typo
    failed deep inside (TypeError, AttributeError) or only once the cascade ran; a folder in the working directory
    named like a shipped model hid it; predict() took no loaded Predictor."""
    from fh_screen import predict
    from fh_screen.models.predictor import Predictor

    for kwargs, words in (({"save": "no"}, "save must be True or False, got 'no'"),
                          ({"progress": 3}, "progress must be a function"),
                          ({"store": "x.sqlite"}, "store must be an FhScreenStore")):
        with pytest.raises(ScreenError, match=words) as info:
            screen("Li-O", predictor="paper", options=ScreenOptions(max_atoms=4), **kwargs)
        _one_line(info.value)
    for name, words in (("nope", "prefilter_model: no model named 'nope'"), ("", "prefilter_model: empty model name"),
                        ("paper@99", "prefilter_model: model 'paper' is version 1, not '99'")):
        with pytest.raises(ScreenError, match=words):
            ScreenOptions(prefilter_model=name)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "paper").mkdir()  # a folder that holds no model is not the model named paper
    assert load_predictor("paper").name == "paper" and Predictor.from_name("paper").name == "paper"
    loaded = Predictor.from_name("paper")
    assert predict(["NaCl"], model=loaded) == pytest.approx(predict(["NaCl"], model="paper"))
