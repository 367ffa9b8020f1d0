"""A new user's audit of ``fh-screen ingest``, ``query``, ``runs`` and ``predict-store``: each test failed
before the fix it names. Real data: slices of the shared OQMD train.csv (``train_slice_csv``)."""

from __future__ import annotations

import gzip
import json

import pandas as pd
import pytest
from store_fixtures import train_slice_csv  # noqa: F401 - fixtures
from typer.testing import CliRunner

from fh_screen.cli import build_app
from fh_screen.data import DataError, clean, load_oqmd
from fh_screen.store import FhScreenStore, ScreenDoc, ScreenNotFoundError
from fh_screen.store.ingest import ingest_file, ingest_path
from fh_screen.store.query import QueryError

runner = CliRunner()


def _invoke(*args):
    result = runner.invoke(build_app(), [str(a) for a in args])
    return result, result.output


def _one_line_error(result, text: str, expected: str) -> None:
    assert result.exit_code == 2, text
    errors = [line for line in text.strip().splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0] and "Traceback" not in text, text


@pytest.fixture
def rows(train_slice_csv):  # noqa: F811
    """200 real rows of train.csv (formula, target), all inside the outlier window."""
    frame = pd.read_csv(train_slice_csv, keep_default_na=False, na_values=[""]).head(200)
    assert frame["target"].between(-20, 5).all()
    return frame


def _value(store, formula, source="user"):
    return store.reference.query_one({"formula": formula, "source": source})["dhf_ev_per_atom"]


# --- an outlier beside a usable value of the same composition ----------------------------------------------------

def test_an_outlier_duplicate_no_longer_wipes_out_the_usable_value_of_its_composition(rows, tmp_path):
    """A file holding NaCl -2.0 and an unconverged NaCl -25 stored nothing for NaCl: the lowest row (the
    outlier) won the duplicate check and was then dropped as an outlier; with --keep-outliers the -25 was
    stored instead of the -2.0. The usable value now wins, and the outlier row is counted as one."""
    from fh_screen.chem.formula import reduced_formula

    formula, value = reduced_formula(rows.loc[0, "formula"]), float(rows.loc[0, "target"])
    with_outlier = pd.concat([rows, pd.DataFrame({"formula": [rows.loc[0, "formula"]], "target": [-25.0]})])
    path = tmp_path / "with_outlier.csv"
    with_outlier.to_csv(path, index=False)

    table, report = load_oqmd(path)
    assert table.set_index("formula").loc[formula, "dhf_ev_per_atom"] == pytest.approx(value)
    assert report.rejected["outlier"] == 1 and report.rejected["duplicate"] == 0 and report.n_kept == len(rows)

    for keep in (False, True):
        with FhScreenStore.embedded(tmp_path / f"s{keep}.sqlite") as store:
            got = ingest_file(store.reference, path, keep_outliers=keep)
            assert _value(store, formula) == pytest.approx(value), keep
            assert got.inserted == len(rows) and got.n_rejected == 1, got.summary()
    result, text = _invoke("ingest", path, "--store", tmp_path / "cli.sqlite")
    assert result.exit_code == 0 and f"inserted {len(rows)}, " in text and "1 outliers" in text, text
    with FhScreenStore.embedded(tmp_path / "cli.sqlite") as store:
        assert _value(store, formula) == pytest.approx(value)


def test_outliers_of_a_composition_without_a_usable_value_are_kept_flagged_once():
    frame = pd.DataFrame({"formula": ["NaCl", "KBr", "KBr", "LiF"], "dhf_ev_per_atom": [-25.0, -30.0, -31.0, -3.0],
                          "source_id": None})
    table, report = clean(frame, drop_outliers=False)
    assert dict(zip(table["formula"], table["dhf_ev_per_atom"])) == {"NaCl": -25.0, "KBr": -31.0, "LiF": -3.0}
    assert report.rejected["outlier"] == 3 and report.outliers_flagged == 2 and report.rejected["duplicate"] == 0
    assert report.summary().endswith("1 outliers outside (-20, 5) eV/atom, 0 bad formulas, 0 non-numeric or infinite "
                                     "values, 0 missing values dropped; 2 outliers outside (-20, 5) eV/atom kept, flagged")


# --- a folder whose files hold the same composition ----------------------------------------------------------------

def test_a_folder_keeps_each_compositions_lowest_value_and_a_rerun_changes_nothing(rows, tmp_path):
    """A folder whose a.csv and b.csv both held a composition stored b.csv's value (the last file read, even
    when higher) and every re-run of the folder flipped it back and forth ("updated 2"): not idempotent."""
    from fh_screen.chem.formula import reduced_formula

    folder = tmp_path / "folder"
    folder.mkdir()
    a, b = rows.head(120).copy(), rows.iloc[100:].copy()  # rows 100-119 in both files
    b.loc[b.index[:20], "target"] = b["target"].iloc[:20] + 0.5  # b's values of them are higher
    a.to_csv(folder / "a.csv", index=False)
    b.to_csv(folder / "b.csv", index=False)
    shared = {reduced_formula(f): float(v) for f, v in zip(a["formula"].iloc[100:], a["target"].iloc[100:])}

    args = ["ingest", folder, "--store", tmp_path / "s.sqlite", "--source", "mine"]
    first, text = _invoke(*args)
    assert first.exit_code == 0 and "inserted 200, updated 0, unchanged 0, rejected 20 (20 higher-energy " \
        "duplicates)" in text, text
    again, text = _invoke(*args)
    assert again.exit_code == 0 and "inserted 0, updated 0, unchanged 200" in text and "updated " not in \
        text.replace("updated 0", ""), text
    with FhScreenStore.embedded(tmp_path / "s.sqlite") as store:
        assert all(_value(store, f, "mine") == pytest.approx(v) for f, v in shared.items())
        report = ingest_path(store.reference, folder, source="mine")  # the Python door agrees
        assert (report.inserted, report.updated, report.unchanged) == (0, 0, 200)


# --- gzip, and an empty file -------------------------------------------------------------------------------------

def test_gzip_files_are_read_and_an_empty_or_cut_off_one_is_one_line(rows, tmp_path):
    """A .csv.gz was refused as "unrecognised format" (its bytes read as Latin-1 text), a .json.gz read as CSV,
    and a folder skipped them; an empty file was "unrecognised format" too."""
    folder = tmp_path / "gz"
    folder.mkdir()
    (folder / "a.csv.gz").write_bytes(gzip.compress(rows.head(50).to_csv(index=False).encode()))
    optimade = {"data": [{"id": f"oqmd-{i}", "attributes": {"chemical_formula_reduced": f, "_oqmd_delta_e": v}}
                         for i, (f, v) in enumerate(zip(rows["formula"].iloc[50:80], rows["target"].iloc[50:80]))]}
    (folder / "b.json.gz").write_bytes(gzip.compress(json.dumps(optimade).encode()))
    table, _ = load_oqmd(folder / "a.csv.gz")
    assert len(table) == 50
    table, _ = load_oqmd(folder / "b.json.gz")
    assert len(table) == 30 and table["source_id"].str.startswith("oqmd-").all()

    result, text = _invoke("ingest", folder, "--store", tmp_path / "s.sqlite")
    assert result.exit_code == 0 and "inserted 80, updated 0" in text, text

    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes((folder / "a.csv.gz").read_bytes()[:40])
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    for path, expected in ((cut, "a damaged or cut-off gzip file"), (empty, "the file is empty, not even a header line")):
        result, text = _invoke("ingest", path, "--store", tmp_path / "t.sqlite")
        _one_line_error(result, text, expected)
        with pytest.raises(DataError, match=expected):
            load_oqmd(path)
    assert not (tmp_path / "t.sqlite").exists()


# --- the Python API checks what the CLI checks ---------------------------------------------------------------------

@pytest.fixture
def store_file(rows, tmp_path):
    path = tmp_path / "s.sqlite"
    csv = tmp_path / "rows.csv"
    rows.to_csv(csv, index=False)
    with FhScreenStore.embedded(path) as store:
        ingest_file(store.reference, csv)
    return path


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"min_dhf_ev_per_atom": 1, "max_dhf_ev_per_atom": 0}, "empty ΔH_f range"),
        ({"min_dhf_ev_per_atom": float("nan")}, "must be a finite number"),
        ({"max_dhf_ev_per_atom": "abc"}, "must be a finite number"),
        ({"limit": -1}, "limit must be 0 (all) or more, got -1"),
    ],
)
def test_every_query_door_refuses_a_bad_range_or_limit_as_query_does(store_file, filters, expected):
    """compare_frame (what `fh-screen query` shows by default) returned no row for an empty or NaN ΔH_f range
    and raised a TypeError for text; a negative limit gave 1 row (reference_frame) or all rows but the last
    (compare_frame), where `query --limit -1` is refused."""
    with FhScreenStore.embedded(store_file, read_only=True) as store:
        for method in (store.reference_frame, store.predictions_frame, store.compare_frame):
            with pytest.raises(QueryError) as info:
                method(**filters)
            assert expected in str(info.value) and "\n" not in str(info.value), method.__name__


def test_compare_frame_agrees_with_the_cli_on_a_range(store_file):
    with FhScreenStore.embedded(store_file, read_only=True) as store:
        api = store.compare_frame(min_dhf_ev_per_atom=-1, max_dhf_ev_per_atom=-0.5)
        reference = store.reference_frame(min_dhf_ev_per_atom=-1, max_dhf_ev_per_atom=-0.5)
    result, text = _invoke("query", "--min-dhf", "-1", "--max-dhf", "-0.5", "--store", store_file, "--json", "-")
    assert result.exit_code == 0, text
    cli = json.loads(text)
    assert len(api) == len(reference) == len(cli) > 0
    assert sorted(r["dhf_ev_per_atom"] for r in cli) == sorted(api["dhf_ev_per_atom"]) == \
        sorted(reference["dhf_ev_per_atom"])


# --- query options that were silently ignored -----------------------------------------------------------------------

@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--kind", "predicted", "--source", "user"], "predictions have no source"),
        (["--top", "5", "--kind", "reference"], "--top/--min-p ranks stored screens"),
        (["--top", "5", "--include-outliers"], "--top/--min-p ranks stored screens"),
        (["--min-p", "0.5", "--kind", "predicted"], "--top/--min-p ranks stored screens"),
    ],
)
def test_query_refuses_options_it_would_ignore(store_file, args, expected):
    """`query --kind predicted --source user` printed reference rows (exit 0), and --top ignored --kind and
    --include-outliers, though its own error says it combines only with --chemsys, --model, --json and --csv."""
    result, text = _invoke("query", *args, "--store", store_file)
    _one_line_error(result, text, expected)


# --- a mistyped run id ------------------------------------------------------------------------------------------------

def test_a_mistyped_or_cut_run_id_names_the_stored_one_it_most_likely_means(tmp_path):
    path = tmp_path / "s.sqlite"
    docs = [ScreenDoc(chemsys="Li-O", model_name="paper", model_version="1"),
            ScreenDoc(chemsys="Fe-O", model_name="paper", model_version="1")]
    with FhScreenStore.embedded(path) as store:
        for doc in docs:
            store.save_screen(doc)
    run_id = docs[0].run_id
    typo = run_id[:-1] + ("0" if run_id[-1] != "0" else "1")
    for given in (typo, run_id[:-3], run_id.split("-")[-1]):
        with FhScreenStore.embedded(path, read_only=True) as store, pytest.raises(ScreenNotFoundError) as info:
            store.get_screen(given)
        assert f"did you mean {run_id}" in str(info.value), str(info.value)
        result, text = _invoke("query", "--run", given, "--store", path)
        _one_line_error(result, text, f"did you mean {run_id}")
    result, text = _invoke("query", "--run", "nothing-like-it", "--store", path)
    _one_line_error(result, text, "no screen with run id 'nothing-like-it'")
    assert "did you mean" not in text


# --- predict-store names the model, not a run nobody can show -----------------------------------------------------------

def test_predict_store_names_the_model_not_a_run_id_query_cannot_show(store_file):
    """`predict-store` ended "200 new predictions (run 2026...-abcd)": no screen has that id, and
    `query --run` it was "no screen with run id"."""
    result, text = _invoke("predict-store", "--model", "paper", "--store", store_file)
    assert result.exit_code == 0, text
    assert text.strip().endswith("200 new predictions by paper@1; the store holds 200") and "(run " not in text, text
