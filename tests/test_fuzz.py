"""Property-based fuzzing (hypothesis) of formulas, chemical systems, CSV files and CLI options.

Properties, for the Python API and the ``fh-screen`` command line alike:

* no traceback: an exception is either a one-line :class:`~fh_screen.errors.FhScreenError` (API)
  or exit code 2 with one ``error:`` line (CLI); the CLI exits 0 or 2, nothing else;
* every output row is either a finite prediction or a non-empty error, never both, never neither;
* a command that fails leaves nothing behind (no output file, no ``.tmp`` debris, no store file);
* the grammar, its pymatgen reference path and the vectorised fast path agree on every input.

The default run is bounded (derandomised, about 30 s on a laptop core). A longer, randomised
run multiplies every example budget::

    FH_SCREEN_FUZZ_SCALE=50 python -m pytest tests/test_fuzz.py -q
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from fh_screen.cli import build_app
from fh_screen.chem.formula import ALL_ELEMENT_SYMBOLS, DEFAULT_ELEMENTS, FormulaError, fraction_matrix, parse_amounts, parse_formula
from fh_screen.errors import FhScreenError

SCALE = max(1, int(os.environ.get("FH_SCREEN_FUZZ_SCALE", "1")))
RANDOMISED = SCALE > 1


def budget(n: int):
    """Hypothesis settings with ``n`` × :data:`SCALE` examples (deterministic unless scaled)."""
    return settings(
        max_examples=n * SCALE, deadline=None, derandomize=not RANDOMISED, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


# ----------------------------------------------------------------------------------------------
# Strategies
# ----------------------------------------------------------------------------------------------

SYMBOLS = st.one_of(st.sampled_from(ALL_ELEMENT_SYMBOLS), st.sampled_from(["Xx", "D", "Q", "Uuo", "e", "Fee"]))
TRICKY_NUMBERS = ["1e400", "1e-400", "-1", "0.0", "0", "00", "9" * 40, "0.0000001", ".5", "5.", "1.5.5", "１", "1_0", "+2"]
NUMBERS = st.one_of(
    st.just(""),
    st.integers(0, 20).map(str),
    st.integers(0, 10**8).map(str),
    st.decimals(min_value=0, max_value=1000, places=3, allow_nan=False, allow_infinity=False).map(str),
    st.sampled_from(TRICKY_NUMBERS),
)
TRICKY_CHARS = "\x00\r\n\t ()[]{}.·•-+e0123456789abcXYZé\u200b\ufeff\u00a0@*/,;\"'"


@st.composite
def grammar_formulas(draw) -> str:
    """Formulas built from the grammar's pieces, most valid, some with a bad amount or symbol."""

    def group(depth: int) -> str:
        parts = []
        for _ in range(draw(st.integers(1, 3))):
            if depth < 2 and draw(st.integers(0, 5)) == 0:
                opening, closing = draw(st.sampled_from(["()", "[]", "{}"]))
                parts.append(f"{opening}{group(depth + 1)}{closing}{draw(NUMBERS)}")
            else:
                parts.append(draw(SYMBOLS) + draw(NUMBERS))
        return "".join(parts)

    text = group(0)
    for _ in range(draw(st.integers(0, 2))):
        separator = draw(st.sampled_from(["·", ".", " · ", "•"]))
        text += separator + draw(st.sampled_from(["", "1", "2", "5", "0.5", "10"])) + draw(
            st.one_of(st.sampled_from(["H2O", "NH3", "(H2O)"]), st.just(group(1)))
        )
    return text


@st.composite
def mutated_formulas(draw) -> str:
    """A grammar formula with a few tricky characters inserted or replaced."""
    text = list(draw(grammar_formulas()))
    for _ in range(draw(st.integers(1, 3))):
        position = draw(st.integers(0, len(text)))
        char = draw(st.sampled_from(TRICKY_CHARS))
        if draw(st.booleans()) and position < len(text):
            text[position] = char
        else:
            text.insert(position, char)
    return "".join(text)


FORMULA_TEXT = st.one_of(grammar_formulas(), mutated_formulas(), st.text(max_size=30))
NON_STRINGS = st.one_of(
    st.binary(max_size=8), st.integers(), st.floats(), st.none(), st.lists(st.text(max_size=4), max_size=2)
)
ANY_FORMULA = st.one_of(FORMULA_TEXT, FORMULA_TEXT, FORMULA_TEXT, NON_STRINGS)


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def predictor():
    from fh_screen.models.predictor import Predictor

    return Predictor.from_name("paper")


@pytest.fixture(scope="module", autouse=True)
def isolated_environment(tmp_path_factory):
    """FH_SCREEN_* pointing at an empty data dir, for every CLI call of this module."""
    root = tmp_path_factory.mktemp("fuzz_env")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FH_SCREEN_DATA_DIR", str(root / "data"))
        patch.setenv("FH_SCREEN_CONFIG_FILE", os.devnull)
        patch.setenv("FH_SCREEN_REFERENCE_DATA", "false")
        patch.delenv("FH_SCREEN_MONGO_URI", raising=False)
        yield root


def invoke(*args: str):
    """Run the CLI in-process; assert exit 0 or 2 and no traceback; return the result."""
    result = CliRunner().invoke(build_app(), list(args))
    output = result.output
    assert "Traceback" not in output, output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"fh-screen {' '.join(map(repr, args))} raised {result.exception!r}") from result.exception
    assert result.exit_code in (0, 2), (result.exit_code, output)
    if result.exit_code == 2:
        assert output.strip(), "exit 2 without a message"
    return result


def assert_rows_finite_xor_error(predictions: np.ndarray, errors) -> None:
    """Every row: a finite value and no error, or a non-empty one-line error and no value."""
    for value, error in zip(predictions, errors):
        has_error = isinstance(error, str) and error != ""
        if has_error:
            assert "\n" not in error
            assert not np.isfinite(value), (value, error)
        else:
            assert error is None or error == "" or (isinstance(error, float) and math.isnan(error))
            assert np.isfinite(value), (value, error)


def files_in(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


# ----------------------------------------------------------------------------------------------
# Formulas: the grammar, the reference path, the fast path, the predict API
# ----------------------------------------------------------------------------------------------


@budget(300)
@given(st.lists(ANY_FORMULA, max_size=12))
def test_fast_path_rows_are_fractions_or_one_line_errors(formulas):
    features = fraction_matrix(formulas, dtype=np.float64)
    for row, formula in enumerate(formulas):
        error = features.errors[row]
        vector = features.matrix[row]
        try:
            amounts = parse_amounts(formula, features.elements)
        except FormulaError as exc:
            assert error == str(exc) and error and "\n" not in error
            assert not vector.any()
            continue
        assert error is None
        assert np.all(np.isfinite(vector)) and np.all(vector >= 0) and vector.sum() == pytest.approx(1.0, abs=1e-12)
        total = sum(amounts.values())
        for symbol, amount in amounts.items():
            assert vector[features.elements.index(symbol)] == pytest.approx(amount / total, rel=1e-12)


@budget(300)
@given(st.one_of(grammar_formulas(), mutated_formulas()))
def test_grammar_and_pymatgen_reference_agree(formula):
    try:
        amounts = parse_amounts(formula, ALL_ELEMENT_SYMBOLS)
    except FormulaError as exc:
        with pytest.raises(FormulaError) as reference_error:
            parse_formula(formula, ALL_ELEMENT_SYMBOLS)
        assert str(reference_error.value) == str(exc)
        return
    assert all(math.isfinite(a) and a > 0 for a in amounts.values())
    composition = parse_formula(formula, ALL_ELEMENT_SYMBOLS)
    reference = {str(element): amount for element, amount in composition.items()}
    assert reference.keys() == amounts.keys()
    for symbol, amount in amounts.items():
        assert reference[symbol] == pytest.approx(amount, rel=1e-9)


@budget(150)
@given(st.lists(ANY_FORMULA, min_size=1, max_size=10))
def test_predict_api_gives_a_finite_value_or_an_error_per_row(predictor, formulas):
    result = predictor.predict_formulas(formulas)
    assert len(result.errors) == len(formulas) == len(result.dhf_ev_per_atom)
    assert_rows_finite_xor_error(result.dhf_ev_per_atom, result.errors)


@budget(100)
@given(ANY_FORMULA)
def test_predict_function_raises_one_line_or_returns_finite(formula):
    from fh_screen import predict

    try:
        values = predict([formula], model="paper")
    except FhScreenError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert np.isfinite(values).all()


# ----------------------------------------------------------------------------------------------
# The predict command: formulas on the command line, CSV files, option values
# ----------------------------------------------------------------------------------------------

CLI_FORMULA = FORMULA_TEXT.filter(lambda s: "\x00" not in s)  # argv cannot hold a NUL byte


@budget(40)
@given(st.lists(CLI_FORMULA, min_size=1, max_size=5))
def test_predict_command_exits_0_or_2_and_marks_every_bad_formula(formulas):
    result = invoke("predict", "--model", "paper", "--", *formulas)
    any_bad = any(_is_bad(f) for f in formulas)
    assert result.exit_code == (2 if any_bad else 0), result.output


def _is_bad(formula: str) -> bool:
    """Whether the shipped models (elements H–Pu) refuse ``formula``."""
    try:
        parse_amounts(formula, DEFAULT_ELEMENTS)
    except FormulaError:
        return True
    return False


ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-32", "cp1252", "latin-1"]
CELL_TEXT = st.one_of(st.text(alphabet=st.sampled_from(TRICKY_CHARS + "abc,\"\r\n"), max_size=8), st.text(max_size=8))


@st.composite
def csv_files(draw) -> bytes:
    """A CSV (usually with a ``formula`` column) in some encoding, or random bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=200))
    n = draw(st.integers(0, 6))
    columns = {"formula": draw(st.lists(FORMULA_TEXT, min_size=n, max_size=n))}
    if draw(st.booleans()):
        columns["target"] = draw(st.lists(st.one_of(
            st.floats(allow_nan=True, allow_infinity=True).map(repr), st.sampled_from(["", "abc", "1e400", "NaN"]),
            st.floats(-5, 5).map(str)), min_size=n, max_size=n))
    if draw(st.booleans()):
        columns["note"] = draw(st.lists(CELL_TEXT, min_size=n, max_size=n))
    if draw(st.integers(0, 7)) == 0:
        columns = {draw(st.sampled_from(["Formula", "name", "x"])): values for values in columns.values()}
    text = pd.DataFrame(columns).to_csv(index=False, lineterminator=draw(st.sampled_from(["\n", "\r\n", "\r"])))
    encoding = draw(st.sampled_from(ENCODINGS))
    return text.encode(encoding, errors="replace") if encoding in ("cp1252", "latin-1") else text.encode(encoding, "surrogatepass")


@budget(40)
@given(csv_files())
def test_predict_csv_command_keeps_every_row_and_leaves_nothing_on_failure(content):
    from fh_screen.data import DataError, read_csv_any

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        source = folder / "in.csv"
        source.write_bytes(content)
        result = invoke("predict", "--model", "paper", "--input", str(source), "--output", str(folder / "out.csv"))
        if result.exit_code == 2 and files_in(folder) == {"in.csv"}:
            return  # a refused file: nothing written
        assert files_in(folder) == {"in.csv", "out.csv"}, result.output
        try:
            expected = read_csv_any(source, dtype={"formula": str})
        except DataError:  # pragma: no cover - the command read it, so must we
            raise
        out = read_csv_any(folder / "out.csv", dtype={"formula": str, "error": str})
        assert len(out) == len(expected)
        errors = out["error"].fillna("").tolist()
        assert_rows_finite_xor_error(out["dhf_pred_ev_per_atom"].to_numpy(dtype=float), errors)
        assert result.exit_code == (2 if any(errors) else 0), result.output  # exit 2 iff a row could not be predicted


@budget(40)
@given(csv_files(), st.booleans())
def test_ingest_rejects_rows_or_refuses_the_file_and_never_creates_a_store_for_it(content, keep_outliers):
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        source = folder / "in.csv"
        source.write_bytes(content)
        store = folder / "store.sqlite"
        args = ["ingest", str(source), "--store", str(store)] + (["--keep-outliers"] if keep_outliers else [])
        result = invoke(*args)
        if result.exit_code == 2:
            assert files_in(folder) == {"in.csv"}, result.output
        else:
            assert "inserted" in result.output


@budget(40)
@given(csv_files())
def test_loaders_return_finite_values_or_a_one_line_data_error(content):
    from fh_screen.data import DataError, load_oqmd

    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "in.csv"
        source.write_bytes(content)
        try:
            frame, report = load_oqmd(source)
        except DataError as exc:
            assert str(exc) and "\n" not in str(exc)
            return
        assert np.isfinite(frame["dhf_ev_per_atom"].to_numpy(dtype=float)).all()
        assert report.n_kept == len(frame)


OUTPUT_NAMES = st.one_of(
    st.sampled_from(["out.csv", "sub", "missing/out.csv", "sub/out.csv", ".", "..", "file.txt/out.csv"]),
    st.text(alphabet=st.sampled_from("abc._- é/"), min_size=1, max_size=12).filter(
        lambda s: not s.startswith("/") and ".." not in s.split("/")),
)  # relative names only: every output lands in the test's own folder


@budget(40)
@given(OUTPUT_NAMES, st.sampled_from(["paper", "paper-ensemble", "nope", "", "evil.pt", "sub", "file.txt"]))
def test_output_and_model_options_fail_in_one_line_and_leave_no_debris(name, model):
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        (folder / "sub").mkdir()
        (folder / "file.txt").write_text("x")
        (folder / "evil.pt").write_bytes(b"\x80\x04not a checkpoint")
        before = {p.relative_to(folder) for p in folder.rglob("*")}
        cwd = os.getcwd()
        os.chdir(folder)
        try:
            result = invoke("predict", "Fe2O3", "--model", model, "--output", name)
        finally:
            os.chdir(cwd)
        after = {p.relative_to(folder) for p in folder.rglob("*")}
        assert not any(p.name.endswith(".tmp") for p in after), after
        if result.exit_code == 2:
            assert after == before, result.output
            assert result.output.count("error:") == 1
            assert "weights_only=False" not in result.output
        else:
            assert len(after - before) >= 1


# ----------------------------------------------------------------------------------------------
# Chemical systems
# ----------------------------------------------------------------------------------------------

SYSTEM_TEXT = st.one_of(
    st.lists(st.sampled_from(ALL_ELEMENT_SYMBOLS[:94]), min_size=1, max_size=4).map("-".join),
    st.tuples(st.lists(SYMBOLS, max_size=4), st.sampled_from(["-", "--", " ", ",", "-Li-"])).map(lambda t: t[1].join(t[0])),
    st.text(alphabet=st.sampled_from("LiFeOXx-- ,\x00"), max_size=12),
)


@budget(200)
@given(SYSTEM_TEXT)
def test_chemical_system_parser_returns_elements_or_one_line_error(text):
    from fh_screen.chem.candidates import parse_chemsys

    try:
        system = parse_chemsys(text)
    except FhScreenError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert system and all(s in ALL_ELEMENT_SYMBOLS for s in system) and len(set(system)) == len(system)


@pytest.mark.slow
@budget(20)
@given(
    st.lists(st.sampled_from(["Li", "Fe", "O", "Na", "Cl", "He", "Og", "Xx"]), min_size=1, max_size=3).map("-".join),
    st.integers(-2, 5), st.integers(-3, 30),
)
def test_screen_command_exits_0_or_2(system, max_atoms, top):
    invoke("screen", system, "--max-atoms", str(max_atoms), "--top", str(top), "--no-store", "--model", "paper")


@pytest.fixture(scope="module")
def small_store(oqmd_train_raw, tmp_path_factory):
    """A store holding 300 real OQMD rows (for the query options)."""
    from fh_screen.store import FhScreenStore
    from fh_screen.store.ingest import ingest_file

    folder = tmp_path_factory.mktemp("fuzz_store")
    source = folder / "rows.csv"
    oqmd_train_raw.sample(n=300, random_state=3).to_csv(source, index=False)
    with FhScreenStore.embedded(folder / "store.sqlite") as store:
        ingest_file(store.reference, source)
    return folder / "store.sqlite"


NUMBER_TEXT = st.one_of(st.floats().map(repr), st.integers(-10, 10).map(str), st.sampled_from(["nan", "inf", "-inf", "1e400", "x", ""]))


@budget(40)
@given(
    st.one_of(st.none(), SYSTEM_TEXT), st.one_of(st.none(), st.integers(-3, 120).map(str), st.just("x")),
    st.one_of(st.none(), NUMBER_TEXT), st.one_of(st.none(), NUMBER_TEXT),
    st.sampled_from(["reference", "predicted", "both", "nope"]), st.integers(-5, 60),
    st.one_of(st.none(), CLI_FORMULA), st.sampled_from([None, "out.json", "sub", "missing/o.json"]),
)
def test_query_options_exit_0_or_2_and_leave_no_debris(small_store, chemsys, nelements, low, high, kind, limit, formula, json_name):
    args = ["query", "--store", str(small_store), "--kind", kind, "--limit", str(limit)]
    for flag, value in (("--chemsys", chemsys), ("--nelements", nelements), ("--min-dhf", low), ("--max-dhf", high), ("--formula", formula)):
        if value is not None:
            args += [flag, value]
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        (folder / "sub").mkdir()
        if json_name is not None:
            args += ["--json", str(folder / json_name)]
        result = invoke(*args)
        names = {p.name for p in folder.rglob("*")}
        assert not any(n.endswith(".tmp") for n in names)
        if result.exit_code == 2:
            assert names == {"sub"}, result.output
