"""OQMD loaders on real rows: the shared CSV, OQMD's dump table and OPTIMADE/REST JSON."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fh_screen.data import (
    REJECTION_REASONS, CleaningReport, DataError, clean, kfold_indices, load_oqmd, load_oqmd_csv, split_frame,
)


def test_shared_csv_drops_exactly_the_documented_outliers(oqmd_dir):
    frame, report = load_oqmd_csv(oqmd_dir / "val.csv")
    assert report.n_raw == 51255
    assert report.rejected["outlier"] == 13  # the data README: 13 rows of val outside ±5 eV/atom
    assert report.n_kept == len(frame) == 51255 - 13
    assert frame["dhf_ev_per_atom"].between(-20, 5).all()


def test_sodium_nitride_formula_is_not_read_as_missing(tmp_path):
    path = tmp_path / "nan.csv"
    path.write_text("formula,target\nNaN,-0.1\nNa3N1,-0.2\n")
    frame, report = load_oqmd_csv(path)
    assert report.rejected["missing_value"] == 0
    assert frame["formula"].tolist() == ["NaN", "Na3N"]


def test_outliers_kept_and_flagged_on_request(oqmd_dir):
    frame, report = load_oqmd_csv(oqmd_dir / "val.csv", drop_outliers=False)
    assert len(frame) == 51255
    assert (~frame["passed_outlier_filter"]).sum() == report.rejected["outlier"] == 13
    # the summary says what happened to them: kept, not dropped
    assert report.summary().endswith(f"; 13 {REJECTION_REASONS['outlier']} kept, flagged")
    assert "outliers" not in report.summary().split(" dropped")[0]
    _, dropped = load_oqmd_csv(oqmd_dir / "val.csv")
    assert f"13 {REJECTION_REASONS['outlier']}" in dropped.summary().split(" dropped")[0]
    assert "kept, flagged" not in dropped.summary()


def test_lowest_value_per_composition_is_kept(oqmd_slice_csv, tmp_path):
    raw = pd.read_csv(oqmd_slice_csv, keep_default_na=False, na_values=[""]).head(50)
    # The same compositions written differently (unreduced) and with a higher energy.
    doubled = raw.assign(formula=raw["formula"].map(lambda f: f"({f})2"), target=raw["target"] + 0.5)
    path = tmp_path / "dups.csv"
    pd.concat([doubled, raw]).to_csv(path, index=False)
    frame, report = load_oqmd_csv(path)
    assert report.rejected["duplicate"] == 50
    np.testing.assert_allclose(np.sort(frame["dhf_ev_per_atom"]), np.sort(raw["target"]))


def test_oqmd_dump_table_and_json_give_the_same_tidy_table(oqmd_slice_csv, tmp_path):
    raw = pd.read_csv(oqmd_slice_csv, keep_default_na=False, na_values=[""]).head(300)
    reference, _ = load_oqmd_csv(oqmd_slice_csv)
    reference = reference[reference["formula"].isin(set(clean(raw.rename(columns={"target": "dhf_ev_per_atom"}).assign(source_id=None))[0]["formula"]))]

    dump = tmp_path / "formationenergy.txt"
    pd.DataFrame({"entry_id": range(len(raw)), "composition": raw["formula"], "delta_e": raw["target"]}).to_csv(dump, sep="\t", index=False)
    from_dump, _ = load_oqmd(dump)

    optimade = tmp_path / "optimade.json"
    optimade.write_text(json.dumps({"data": [
        {"id": f"oqmd-{i}", "type": "structures", "attributes": {"chemical_formula_reduced": f, "_oqmd_delta_e": t}}
        for i, (f, t) in enumerate(zip(raw["formula"], raw["target"]))
    ], "meta": {"api_version": "1.1.0"}}))
    from_optimade, _ = load_oqmd(optimade)

    for frame in (from_dump, from_optimade):
        merged = frame.merge(reference, on="formula", suffixes=("", "_ref"))
        assert len(merged) == len(reference) == len(frame)
        np.testing.assert_allclose(merged["dhf_ev_per_atom"], merged["dhf_ev_per_atom_ref"])
    assert from_optimade["source_id"].str.startswith("oqmd-").all()


def test_the_package_s_own_column_name_reads_like_the_shared_one(oqmd_slice_csv, tmp_path):
    """A table written as ``formula,dhf_ev_per_atom`` (what ``known=`` frames and the exports use)
    loads to the same tidy table as the shared ``formula,target`` file."""
    raw = pd.read_csv(oqmd_slice_csv, keep_default_na=False, na_values=[""])
    own = tmp_path / "own.csv"
    raw.rename(columns={"target": "dhf_ev_per_atom"}).to_csv(own, index=False)
    expected, _ = load_oqmd_csv(oqmd_slice_csv)
    frame, _ = load_oqmd(own)
    pd.testing.assert_frame_equal(frame.reset_index(drop=True), expected.reset_index(drop=True))


@pytest.mark.parametrize(
    ("content", "suffix", "fragment"),
    [
        ("a,b\n1,2\n", ".csv", "unrecognised format"),
        ("{not json", ".json", "not valid JSON"),
        ('{"errors": []}', ".json", "not an OPTIMADE response"),
    ],
)
def test_bad_files_give_one_line_errors(tmp_path, content, suffix, fragment):
    path = tmp_path / f"bad{suffix}"
    path.write_text(content)
    with pytest.raises(DataError, match=fragment) as excinfo:
        load_oqmd(path)
    assert "\n" not in str(excinfo.value)


def test_a_file_cut_off_in_a_number_s_decimals_is_refused_and_a_whole_last_line_without_line_end_is_read(
        oqmd_slice_csv, tmp_path):
    """A copy stopped mid-write (``LiFeO2,-1.`` of ``LiFeO2,-1.7``) must not be read as a whole, other value; a
    complete last line without a line break is whole. Every door reads files this way (ingest, predict, finetune,
    the campaign). A line cut anywhere else is a row set aside and counted (a missing or non-numeric value)."""
    from fh_screen.data import read_csv_any

    text = oqmd_slice_csv.read_text().rstrip("\n")
    head, last = text.rsplit("\n", 1)
    formula = last.split(",")[0]
    whole = tmp_path / "whole.csv"
    whole.write_text(text)  # no line end after the last line, which is whole
    expected, _ = load_oqmd_csv(oqmd_slice_csv)
    frame, _ = load_oqmd_csv(whole)
    pd.testing.assert_frame_equal(frame.reset_index(drop=True), expected.reset_index(drop=True))
    for cut_at in ("-1.", "12."):
        cut = tmp_path / "cut.csv"
        cut.write_text(f"{head}\n{formula},{cut_at}")
        with pytest.raises(DataError, match="looks cut off") as excinfo:
            read_csv_any(cut)
        assert "\n" not in str(excinfo.value) and "cut.csv" in str(excinfo.value)
        with pytest.raises(DataError, match="looks cut off"):
            load_oqmd_csv(cut)
    for cut_at in ("", "-1.7e"):  # read, the last row set aside and counted
        cut = tmp_path / "set-aside.csv"
        cut.write_text(f"{head}\n{formula},{cut_at}")
        frame, report = load_oqmd_csv(cut)
        _, whole_report = load_oqmd_csv(whole)
        assert sum(report.rejected.values()) == sum(whole_report.rejected.values()) + 1  # the cut row, counted
        assert report.n_kept == whole_report.n_kept - 1
    # a tab-separated dump cut the same way, and a UTF-8 file cut inside a character, are refused too
    dump = tmp_path / "dump.tsv"
    dump.write_text("composition\tdelta_e\nLiFeO2\t-1.7\nFe2O3\t-1.")
    with pytest.raises(DataError, match="looks cut off"):
        load_oqmd(dump)
    broken = tmp_path / "broken.csv"
    broken.write_bytes("formula,target\nCuSO4·5H2O,-1.0\nNa".encode() + "·".encode()[:1])
    with pytest.raises(DataError, match="ends inside a UTF-8 character"):
        read_csv_any(broken)


@pytest.mark.parametrize("content", [
    'formula,target,note\nLi2O,-2.0,a\nFe2O3,-1.5,"line 1\nline 2"',  # a quoted last field with a line break
    "formula,target,\nLi2O,-2.0,\nFe2O3,-1.5,",  # a spreadsheet's trailing separator on every line
    "formula,target\r\nLi2O,-2.0\r\nFe2O3,-1.5",  # CRLF
])
def test_whole_files_without_a_final_line_end_are_read(tmp_path, content):
    path = tmp_path / "whole.csv"
    path.write_text(content, newline="")
    frame, _ = load_oqmd_csv(path)
    assert sorted(frame["formula"]) == ["Fe2O3", "Li2O"]


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match="not found: .*nothing.csv"):
        load_oqmd(tmp_path / "nothing.csv")


def test_splits_are_reproducible_and_partition(oqmd_slice_csv):
    frame, _ = load_oqmd_csv(oqmd_slice_csv)
    a = split_frame(frame, (0.8, 0.2), seed=3)
    b = split_frame(frame, (0.8, 0.2), seed=3)
    c = split_frame(frame, (0.8, 0.2), seed=4)
    assert a[0]["formula"].tolist() == b[0]["formula"].tolist()
    assert a[0]["formula"].tolist() != c[0]["formula"].tolist()
    assert sorted(a[0]["formula"].tolist() + a[1]["formula"].tolist()) == sorted(frame["formula"])
    folds = kfold_indices(len(frame), 5, seed=0)
    tests = np.concatenate([t for _, t in folds])
    assert sorted(tests) == list(range(len(frame)))
    assert all(len(np.intersect1d(tr, te)) == 0 for tr, te in folds)


@pytest.fixture
def real_rows(oqmd_train_raw):
    """300 real OQMD rows with a free-text column (for encodings and embedded line breaks)."""
    rows = oqmd_train_raw.sample(n=300, random_state=7).reset_index(drop=True)
    rows["note"] = ["température" if i % 3 else "ok" for i in range(len(rows))]
    return rows


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-32", "cp1252", "latin-1"])
def test_any_text_encoding_reads_the_same_table(real_rows, tmp_path, encoding):
    reference, _ = load_oqmd(_written(real_rows, tmp_path / "utf8.csv", "utf-8"))
    frame, report = load_oqmd(_written(real_rows, tmp_path / f"{encoding}.csv", encoding))
    pd.testing.assert_frame_equal(frame, reference)
    assert report.n_raw == len(real_rows)


def _written(rows: pd.DataFrame, path, encoding: str, **kwargs):
    path.write_bytes(rows.to_csv(index=False, **kwargs).encode(encoding))
    return path


@pytest.mark.parametrize("line_break", ["\r", "\r\n", "\r ", "\n\r"])
def test_line_breaks_inside_quoted_fields_are_read(real_rows, tmp_path, line_break):
    reference, _ = load_oqmd(_written(real_rows, tmp_path / "plain.csv", "utf-8"))
    rows = real_rows.copy()
    rows["note"] = [f"a{line_break}b" for _ in range(len(rows))]
    for terminator in ("\n", "\r\n"):
        frame, report = load_oqmd(_written(rows, tmp_path / "breaks.csv", "utf-8", lineterminator=terminator))
        pd.testing.assert_frame_equal(frame, reference)


def test_bad_values_and_nul_bytes_are_rejected_rows_not_errors(real_rows, tmp_path):
    rows = real_rows[["formula", "target"]].astype({"target": object}).copy()
    bad_targets = {0: "NaN", 1: "inf", 2: "-inf", 3: "abc", 4: "1e400"}
    for i, value in bad_targets.items():
        rows.loc[i, "target"] = value
    rows.loc[5, "formula"] = rows.loc[5, "formula"] + "\x00Xx"
    rows.loc[6, "formula"] = "Fe1e400O"
    frame, report = load_oqmd(_written(rows, tmp_path / "bad.csv", "utf-8"))
    assert report.rejected["bad_value"] == len(bad_targets) and report.rejected["bad_formula"] == 2
    assert np.isfinite(frame["dhf_ev_per_atom"]).all()
    assert not frame["formula"].str.contains("\x00").any()
    assert report.n_kept + sum(report.rejected.values()) == report.n_raw
    assert set(report.examples) == {"bad_value", "bad_formula"} and len(report.examples["bad_value"]) == 5
    assert "5 non-numeric or infinite values" in report.summary() and "2 bad formulas" in report.summary()


def test_cleaning_report_counts_every_known_reason_and_only_those():
    report = CleaningReport(n_raw=3, rejected={"outlier": 1})
    assert list(report.rejected) == list(REJECTION_REASONS) and report.rejected["duplicate"] == 0
    report.reject("bad_formula", 2, [f"X{i}: bad" for i in range(9)])
    assert report.rejected["bad_formula"] == 2 and len(report.examples["bad_formula"]) == 5
    with pytest.raises(ValueError, match="unknown rejection reason"):
        report.reject("typo", 1)
    with pytest.raises(ValueError, match="unknown rejection reason"):
        CleaningReport(rejected={"n_outliers": 1})


def test_hydrates_are_stored_under_their_full_composition(tmp_path):
    from pymatgen.core import Composition

    path = tmp_path / "hydrates.csv"
    path.write_text("formula,target\nCuSO4.5H2O,-1.2\nNa2CO3·10H2O,-1.3\n", encoding="utf-8")
    frame, _ = load_oqmd(path)
    assert frame["formula"].tolist() == [
        Composition("CuSO4(H2O)5").reduced_formula, Composition("Na2CO3(H2O)10").reduced_formula,
    ]
