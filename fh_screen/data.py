"""OQMD formation-enthalpy data: loaders for three formats, cleaning and reproducible splits.

Every loader ends in the same tidy table (:data:`TIDY_COLUMNS`): one row per reduced
composition, the lowest ΔH_f of that composition, outliers outside (−20, 5) eV/atom dropped.

Formats:

* the shared CSV (``formula``, ``target``) prepared for the ElemNet/CrabNet benchmarks;
* OQMD's own dataset dump exported as a table (``composition``/``name`` and ``delta_e``,
  optionally ``entry_id``), CSV or whitespace/tab separated;
* OPTIMADE JSON responses from OQMD (``data[].attributes`` with ``chemical_formula_reduced``
  and ``_oqmd_delta_e``).
"""

from __future__ import annotations

from fh_screen.errors import FhScreenError, one_line

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from fh_screen.chem.formula import ALL_ELEMENT_SYMBOLS, DEFAULT_ELEMENTS, fraction_matrix

logger = logging.getLogger(__name__)

__all__ = [
    "DataError",
    "OqmdSet",
    "in_range",
    "load_set",
    "make_set",
    "subsystem_rows",
    "CleaningReport",
    "OUTLIER_RANGE_EV_PER_ATOM",
    "MIN_TRAIN_ROWS",
    "REJECTION_REASONS",
    "TIDY_COLUMNS",
    "PURE_ELEMENT_TOLERANCE_EV_PER_ATOM",
    "check_rows",
    "check_trainable",
    "clean",
    "file_sha256",
    "kfold_indices",
    "load_oqmd",
    "load_oqmd_csv",
    "load_oqmd_dump",
    "load_optimade_json",
    "read_csv_any",
    "read_text",
    "shared_data_dir",
    "split_frame",
]

#: ElemNet's preprocessing window: values outside it are unconverged DFT results.
OUTLIER_RANGE_EV_PER_ATOM: tuple[float, float] = (-20.0, 5.0)

#: Columns of the tidy table every loader returns.
TIDY_COLUMNS = ["formula", "dhf_ev_per_atom", "source_id", "passed_outlier_filter"]


class DataError(FhScreenError):
    """A data file that is missing, unreadable or has the wrong columns; one-line message."""


#: Why :func:`clean` sets a row aside (key), with the words its summary uses, in summary order.
REJECTION_REASONS: dict[str, str] = {
    "duplicate": "higher-energy duplicates",
    "outlier": "outliers outside ({:g}, {:g}) eV/atom".format(*OUTLIER_RANGE_EV_PER_ATOM),
    "bad_formula": "bad formulas",
    "bad_value": "non-numeric or infinite values",
    "missing_value": "missing values",
}

#: Fewest usable rows a training file must hold: the seeded early-stopping split (5 %) needs a
#: few rows of its own, and a model of fewer compositions predicts nothing useful.
MIN_TRAIN_ROWS = 100


def check_trainable(frame, path) -> None:
    """Raise :class:`DataError` (one line) when ``frame`` has fewer than :data:`MIN_TRAIN_ROWS` rows."""
    if len(frame) < MIN_TRAIN_ROWS:
        raise DataError(
            f"{path} has {len(frame)} usable rows; training needs at least {MIN_TRAIN_ROWS} "
            f"(a held-out early-stopping split is carved from them)"
        )


#: How many rejected rows :class:`CleaningReport` quotes per reason.
N_EXAMPLES = 5


@dataclass
class CleaningReport:
    """What :func:`clean` did to a raw table: rows read, rows kept and rows set aside per reason.

    Attributes
    ----------
    n_raw
        Rows read.
    n_kept
        Rows kept.
    rejected
        Rows failing each check, keyed by every reason of :data:`REJECTION_REASONS` (in its
        order). Outliers are counted even when ``clean(drop_outliers=False)`` keeps them flagged.
    outliers_kept
        True when the outliers stayed in the table, flagged (``clean(drop_outliers=False)``).
    outliers_flagged
        Outlier rows kept in the table, flagged (``clean(drop_outliers=False)``): those of a composition
        without a value inside the window; an outlier beside such a value is set aside with the others.
    examples
        The first few rejected rows (formula, or formula and value) of the reasons that quote
        them, ``bad_formula`` and ``bad_value``.
    """

    n_raw: int = 0
    n_kept: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    outliers_kept: bool = False
    outliers_flagged: int = 0

    def __post_init__(self) -> None:
        unknown = (set(self.rejected) | set(self.examples)) - set(REJECTION_REASONS)
        if unknown:
            raise DataError(f"unknown rejection reason(s) {sorted(unknown)}; known: {list(REJECTION_REASONS)}")
        self.rejected = {reason: int(self.rejected.get(reason, 0)) for reason in REJECTION_REASONS}

    def reject(self, reason: str, count: int, examples: list[str] | None = None) -> None:
        """Count ``count`` rows set aside for ``reason`` and keep up to :data:`N_EXAMPLES` of them.

        Parameters
        ----------
        reason
            A key of :data:`REJECTION_REASONS`.
        count
            Rows set aside.
        examples
            Those rows, quoted (only the first few are kept).
        """
        if reason not in REJECTION_REASONS:
            raise DataError(f"unknown rejection reason {reason!r}; known: {list(REJECTION_REASONS)}")
        self.rejected[reason] += int(count)
        if examples:
            quoted = self.examples.setdefault(reason, [])
            quoted += examples[: max(0, N_EXAMPLES - len(quoted))]

    def summary(self) -> str:
        """One line for logs and the CLI."""
        dropped = dict(self.rejected)
        if self.outliers_kept:
            dropped["outlier"] -= self.outliers_flagged
            if not dropped["outlier"]:
                del dropped["outlier"]
        reasons = ", ".join(f"{n} {REJECTION_REASONS[reason]}" for reason, n in dropped.items())
        line = f"{self.n_kept} compositions kept of {self.n_raw} rows: {reasons} dropped"
        if self.outliers_kept:
            line += f"; {self.outliers_flagged} {REJECTION_REASONS['outlier']} kept, flagged"
        return line


#: A pure element's ΔH_f must be 0 within this (eV/atom), in a table of ΔH_f (``fh-screen ingest``, ``finetune``).
PURE_ELEMENT_TOLERANCE_EV_PER_ATOM = 1e-6


def check_rows(frame: pd.DataFrame, cleaning: CleaningReport, label: str | Path,
               consequence: str = "nothing was ingested") -> None:
    """Refuse a whole table whose rows say it is not a table of ΔH_f (one-line :class:`DataError`).

    ``frame`` and ``cleaning`` come from :func:`clean` (``drop_outliers=False``).
    Refused: a formula naming an element that does not exist (a typo, not a row to set aside),
    and a pure element whose formation enthalpy is not 0 eV/atom (0 by definition: such a file
    holds total energies or another reference). ``label`` names the table, ``consequence`` ends
    the message. The one check of ``fh-screen ingest`` (:mod:`fh_screen.store.ingest`) and
    ``fh-screen finetune`` (:func:`fh_screen.models.finetune.read_entries`).
    """
    from fh_screen.chem.formula import parse_amounts

    for example in cleaning.examples.get("bad_formula", []):
        if "unknown element" in example:
            raise DataError(f"{label}: {example}; {consequence}")
    pure = [(f, v) for f, v in zip(frame["formula"].tolist(), frame["dhf_ev_per_atom"].tolist())
            if len(parse_amounts(f)) == 1 and abs(float(v)) > PURE_ELEMENT_TOLERANCE_EV_PER_ATOM]
    if pure:
        formula, value = pure[0]
        raise DataError(
            f"{label}: pure element {formula} has ΔH_f {value:g} eV/atom ({len(pure)} such rows); an element's formation "
            f"enthalpy is 0 by definition (is this a file of total energies?); {consequence}"
        )


def shared_data_dir(path: str | Path | None = None, *, instead: str = "pass one") -> Path:
    """The folder of the OQMD CSVs (``train.csv``, ``val.csv``).

    Parameters
    ----------
    path
        The folder; when not given, the ``oqmd_dir`` setting (``FH_SCREEN_OQMD_DIR`` or
        ``oqmd_dir:`` in ``~/.fh_screen.yaml``).
    instead
        What the caller's user can give instead of a configured folder, for the error
        (a command: ``"give --known FILE"``).

    Raises
    ------
    DataError
        When no folder is given or configured (the package assumes no checkout layout).
    """
    if path is not None:
        return Path(path).expanduser()
    from fh_screen.settings import FhScreenSettings

    configured = FhScreenSettings().oqmd_dir
    if configured is None:
        raise DataError(
            f"no OQMD data folder: {instead}, or set FH_SCREEN_OQMD_DIR (or oqmd_dir in ~/.fh_screen.yaml) "
            "to the folder holding train.csv and val.csv"
        )
    return Path(configured).expanduser()


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file (recorded in model cards)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    if not path.is_file():
        raise DataError(f"not a file: {path}")
    return path


#: Encodings tried, in order, for a file without a byte-order mark (latin-1 decodes anything).
TEXT_ENCODINGS: tuple[str, ...] = ("utf-8", "cp1252", "latin-1")

_BOMS = (
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)


def read_text(path: str | Path) -> str:
    """The text of a data file in whatever encoding it is written.

    A gzip-compressed file (``train.csv.gz``, whatever its name) is decompressed first. A
    byte-order mark picks UTF-8/16/32; BOM-less UTF-16 is recognised by its NUL bytes;
    otherwise UTF-8, then Windows-1252, then Latin-1 (which decodes any byte). Raises
    :class:`DataError` for a file that cannot be read.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    if raw.startswith(GZIP_MAGIC):
        raw = _gunzip(raw, path)
    for bom, encoding in _BOMS:
        if raw.startswith(bom):
            return _decode(raw, (encoding,), path)
    if len(raw) >= 2 and raw.count(b"\x00") * 3 > len(raw):  # UTF-16 without a BOM
        return _decode(raw, ("utf-16-le" if raw[1:2] == b"\x00" else "utf-16-be",), path)
    return _decode(raw, TEXT_ENCODINGS, path)


#: The first bytes of a gzip file.
GZIP_MAGIC = b"\x1f\x8b"


def _gunzip(raw: bytes, path: Path) -> bytes:
    """The decompressed bytes of a gzip file; :class:`DataError` (one line) for a damaged or cut-off one."""
    import gzip
    import zlib

    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read {path}: a damaged or cut-off gzip file ({one_line(exc, first_line=True)})") from None


def data_suffix(path: str | Path) -> str:
    """A data file's suffix in lower case, under a ``.gz`` (``.json`` for ``x.json.gz``)."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


def _decode(raw: bytes, encodings: tuple[str, ...], path: Path) -> str:
    for encoding in encodings:
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError as exc:
            if encoding == "utf-8" and exc.reason == "unexpected end of data" and _decodes(raw[:exc.start], "utf-8"):
                raise DataError(f"{path} looks cut off: it ends inside a UTF-8 character (a copy stopped "
                                f"mid-write); complete the file") from None
            continue
    raise DataError(f"cannot read {path}: not text in {', '.join(encodings)}")


def _decodes(raw: bytes, encoding: str) -> bool:
    try:
        raw.decode(encoding)
    except UnicodeDecodeError:
        return False
    return True


def read_csv_any(path: str | Path, **kwargs) -> pd.DataFrame:
    """``pd.read_csv`` of any text encoding, with CR/LF and NUL bytes inside fields kept.

    Empty cells are missing; the text ``NaN`` (sodium nitride) is kept. Files holding a CR that
    is not part of a CRLF, or a NUL, are parsed by pandas' Python engine (its C tokenizer
    mis-reads them); a NUL then stays in its field, where the formula grammar rejects it. Raises :class:`DataError` (one line).
    """
    import csv
    import io

    path = Path(path)
    text = read_text(path)
    _refuse_cut_off(text, path)
    options = {"keep_default_na": False, "na_values": [""], **kwargs}
    lone_cr = text.count("\r") != text.count("\r\n")  # CRLF line ends alone suit the C tokenizer
    if (lone_cr or "\x00" in text) and options.get("engine") != "python":
        options["engine"] = "python"
    try:
        return pd.read_csv(io.StringIO(text, newline=""), **options)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, csv.Error, ValueError) as exc:
        raise DataError(f"cannot read {path}: {one_line(exc, first_line=True)}") from None


def _refuse_cut_off(text: str, path: Path) -> None:
    """Raise :class:`DataError` when the file looks cut off (a copy or download stopped mid-write): its
    last line has no line end and stops in a number's decimals (``-1.`` of ``-1.7``), which would be
    read as a whole, other value. A last line cut anywhere else reads as a row the readers set aside
    and count (a missing or non-numeric value), or fails to parse; a whole last line reads as it is."""
    import re

    if not text or text.endswith(("\n", "\r")):
        return
    end = max(text.rfind("\n"), text.rfind("\r"))
    if end < 0:  # one line: a header alone
        return
    last = text[end + 1:]  # only the last line is read: a large file is not split
    if re.search(r"(?:^|[,;\t |])[-+]?\d+\.$", last):
        shown = last if len(last) <= 60 else "..." + last[-57:]
        raise DataError(f"{path} looks cut off: its last line {shown!r} has no line end and stops in a number's "
                        f"decimals; complete the file (end it with a line break if that value is whole)")


def _first_line(text: str) -> str:
    import re

    return re.split(r"\r\n|\r|\n", text.lstrip("\ufeff"), maxsplit=1)[0]


def _read_table(path: Path, **kwargs) -> pd.DataFrame:
    # keep_default_na=False: the formula "NaN" (sodium nitride) must stay a formula.
    return read_csv_any(path, **kwargs)


#: Accepted names of the ΔH_f column (eV/atom) of a ``formula`` CSV, first match wins.
VALUE_COLUMNS = ("target", "dhf_ev_per_atom")


def _require(frame: pd.DataFrame, columns: list[str], path: Path) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path} lacks column(s) {', '.join(missing)} (has {', '.join(map(str, frame.columns))})"
        )


def load_oqmd_csv(path: str | Path, *, drop_outliers: bool = True,
                  keep_written: bool = False) -> tuple[pd.DataFrame, CleaningReport]:
    """Load a CSV of ``formula`` and ΔH_f in eV/atom into the tidy table.

    The value column is ``target`` (the shared OQMD files) or ``dhf_ev_per_atom`` (the package's
    own tables: ``known=`` frames, ``fh-screen query --csv`` and screen exports).
    """
    path = _check_file(path)
    raw = _read_table(path)
    value_column = next((c for c in VALUE_COLUMNS if c in raw.columns), VALUE_COLUMNS[0])
    _require(raw, ["formula", value_column], path)
    frame = pd.DataFrame({"formula": raw["formula"], "dhf_ev_per_atom": raw[value_column]})
    frame["source_id"] = None
    return clean(frame, drop_outliers=drop_outliers, keep_written=keep_written)


def load_oqmd_dump(path: str | Path, *, drop_outliers: bool = True,
                   keep_written: bool = False) -> tuple[pd.DataFrame, CleaningReport]:
    """Load an OQMD dataset dump exported as a table (``composition`` or ``name``, ``delta_e``).

    OQMD's ``formationenergy`` table export has ``composition_id`` / ``name`` / ``delta_e`` /
    ``entry_id`` columns; CSV, tab or whitespace separated files are accepted.
    """
    path = _check_file(path)
    header = _first_line(read_text(path))
    sep = "," if "," in header else ("\t" if "\t" in header else r"\s+")
    raw = _read_table(path, sep=sep, engine="python" if sep == r"\s+" else "c")
    formula_column = next((c for c in ("composition", "composition_id", "name", "formula") if c in raw.columns), None)
    if formula_column is None:
        raise DataError(f"{path} has no composition column (composition, composition_id, name or formula)")
    _require(raw, ["delta_e"], path)
    frame = pd.DataFrame({
        "formula": raw[formula_column].astype(str),
        "dhf_ev_per_atom": pd.to_numeric(raw["delta_e"], errors="coerce"),
    })
    id_column = next((c for c in ("entry_id", "id", "calculation_id") if c in raw.columns), None)
    frame["source_id"] = raw[id_column].astype(str) if id_column else None
    return clean(frame, drop_outliers=drop_outliers, keep_written=keep_written)


def load_optimade_json(paths: str | Path | list[str | Path], *, drop_outliers: bool = True,
                       keep_written: bool = False) -> tuple[pd.DataFrame, CleaningReport]:
    """Load one or more OPTIMADE ``/structures`` JSON responses from OQMD (or its REST API).

    Uses ``attributes.chemical_formula_reduced`` and ``attributes._oqmd_delta_e`` (eV/atom), the
    entry ``id`` becoming ``source_id``; OQMD's ``oqmdapi/formationenergy`` responses (flat
    ``name``, ``delta_e``, ``entry_id``) are read too.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    rows = []
    for path in map(_check_file, paths):
        try:
            payload = json.loads(read_text(path))
        except (json.JSONDecodeError, RecursionError) as exc:
            raise DataError(f"cannot read {path}: not valid JSON ({one_line(exc, first_line=True)})") from None
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, list):
            raise DataError(f"{path} is not an OPTIMADE response (no 'data' list)")
        for entry in data:
            # OPTIMADE puts fields under "attributes"; OQMD's own REST API (oqmdapi) returns them flat.
            attributes = entry.get("attributes", entry) if isinstance(entry, dict) else {}
            formula = (attributes.get("chemical_formula_reduced") or attributes.get("chemical_formula_descriptive")
                       or attributes.get("name") or attributes.get("composition"))
            value = attributes.get("_oqmd_delta_e", attributes.get("delta_e"))
            source_id = entry.get("id", attributes.get("entry_id")) if isinstance(entry, dict) else None
            rows.append({"formula": formula, "dhf_ev_per_atom": value, "source_id": None if source_id is None else str(source_id)})
    frame = pd.DataFrame(rows, columns=["formula", "dhf_ev_per_atom", "source_id"])
    frame["dhf_ev_per_atom"] = pd.to_numeric(frame["dhf_ev_per_atom"], errors="coerce")
    return clean(frame, drop_outliers=drop_outliers, keep_written=keep_written)


def load_oqmd(path: str | Path, *, drop_outliers: bool = True,
              keep_written: bool = False) -> tuple[pd.DataFrame, CleaningReport]:
    """Load any supported OQMD file, choosing the loader from its suffix and columns (``keep_written``: :func:`clean`)."""
    path = _check_file(path)
    if data_suffix(path) == ".json":
        return load_optimade_json(path, drop_outliers=drop_outliers, keep_written=keep_written)
    header = _first_line(read_text(path)).strip()
    if not header:
        raise DataError(f"{path}: unrecognised format: the file is empty, not even a header line (expected "
                        "formula,target or formula,dhf_ev_per_atom or composition,delta_e columns, or OPTIMADE JSON)")
    columns = {c.strip() for c in header.replace("\t", ",").replace(" ", ",").split(",")}
    if "formula" in columns and columns & set(VALUE_COLUMNS):
        return load_oqmd_csv(path, drop_outliers=drop_outliers, keep_written=keep_written)
    if "delta_e" in columns:
        return load_oqmd_dump(path, drop_outliers=drop_outliers, keep_written=keep_written)
    raise DataError(
        f"{path}: unrecognised format (expected formula,target or formula,dhf_ev_per_atom or composition,delta_e "
        "columns, or OPTIMADE JSON)"
    )


def _truth_values(column: pd.Series) -> np.ndarray:
    """Which cells are True/False: pandas reads them as 1.0/0.0, and no ΔH_f is written so (a file's
    ``True`` is text, set aside as not a number; a table handed to ``screen(known=...)`` may hold bools)."""
    if pd.api.types.is_bool_dtype(column.dtype):
        return np.ones(len(column), dtype=bool)
    if column.dtype != object:
        return np.zeros(len(column), dtype=bool)
    return column.map(lambda value: isinstance(value, (bool, np.bool_))).to_numpy(dtype=bool)


def clean(frame: pd.DataFrame, *, drop_outliers: bool = True,
          keep_written: bool = False) -> tuple[pd.DataFrame, CleaningReport]:
    """Reduce formulas, keep the lowest ΔH_f per composition, drop outliers; report counts.

    A composition's value inside the outlier window wins over its outliers, however low they are;
    every outlier row counts as an outlier, the other rows set aside as higher-energy duplicates.

    ``frame`` has ``formula``, ``dhf_ev_per_atom`` and ``source_id``. With
    ``drop_outliers=False`` outliers are kept and marked ``passed_outlier_filter=False``. With
    ``keep_written`` a last column ``written_formula`` holds each kept row's formula as the input
    wrote it (``OgF`` for the reduced ``FOg``), for messages that quote the user's own words.
    """
    report = CleaningReport(n_raw=len(frame))
    frame = frame.copy()
    missing = frame["formula"].isna() | frame["dhf_ev_per_atom"].isna()
    report.reject("missing_value", missing.sum())
    frame = frame[~missing]

    values = pd.to_numeric(frame["dhf_ev_per_atom"], errors="coerce").astype(float)
    bad_value = ~np.isfinite(values.to_numpy()) | _truth_values(frame["dhf_ev_per_atom"])
    report.reject("bad_value", bad_value.sum(), [
        f"{formula!s:.40}: {value!r:.40}" for formula, value in
        zip(frame["formula"][bad_value][:N_EXAMPLES], frame["dhf_ev_per_atom"][bad_value][:N_EXAMPLES])
    ])
    frame = frame[~bad_value].copy()
    frame["dhf_ev_per_atom"] = values[~bad_value]

    features = fraction_matrix([f if isinstance(f, str) else str(f) for f in frame["formula"]], ALL_ELEMENT_SYMBOLS)
    valid = features.valid
    report.reject("bad_formula", (~valid).sum(), [e for e in features.errors if e][:N_EXAMPLES])
    frame = frame[valid].copy()
    if keep_written:
        frame["written_formula"] = frame["formula"].astype(str)
    frame["formula"] = canonical_formulas(frame["formula"].astype(str))

    low, high = OUTLIER_RANGE_EV_PER_ATOM
    frame["passed_outlier_filter"] = ((frame["dhf_ev_per_atom"] > low) & (frame["dhf_ev_per_atom"] < high)).to_numpy()
    # every outlier row is counted as one; of a composition's rows, a value inside the window wins over
    # an outlier (an unconverged -25 must not wipe out a converged -2.0), then the lowest value
    report.reject("outlier", int((~frame["passed_outlier_filter"]).sum()))
    frame = frame.assign(_outlier=~frame["passed_outlier_filter"]).sort_values(
        ["_outlier", "dhf_ev_per_atom"], kind="stable").drop(columns="_outlier")
    first = ~frame["formula"].duplicated(keep="first")
    report.reject("duplicate", int((~first & frame["passed_outlier_filter"]).sum()))
    frame = frame[first]
    inside = frame["passed_outlier_filter"]
    report.outliers_kept = not drop_outliers
    report.outliers_flagged = 0 if drop_outliers else int((~inside).sum())
    if drop_outliers:
        frame = frame[inside]
    frame = frame.sort_index()[TIDY_COLUMNS + (["written_formula"] if keep_written else [])].reset_index(drop=True)
    report.n_kept = len(frame)
    logger.info(report.summary())
    return frame, report


def canonical_formulas(formulas) -> list[str]:
    """pymatgen reduced formulas (``LiFePO4`` for ``Li1Fe1P1O4``), cached per distinct string.

    Amounts come from the formula grammar (:func:`fh_screen.chem.formula.parse_amounts`), so
    ``CuSO4·5H2O`` becomes ``CuH10SO9``; raises :class:`~fh_screen.chem.formula.FormulaError`
    for a formula the grammar rejects.
    """
    from fh_screen.chem.formula import reduced_formula

    cache: dict[str, str] = {}
    out = []
    for formula in formulas:
        if formula not in cache:
            cache[formula] = reduced_formula(formula)
        out.append(cache[formula])
    return out


def split_frame(frame: pd.DataFrame, fractions: tuple[float, ...], seed: int = 0) -> list[pd.DataFrame]:
    """Random split of ``frame`` into parts of the given fractions (reproducible from ``seed``, 0 to 2**32 - 1)."""
    from fh_screen.errors import check_seed

    check_seed(seed, "seed", DataError)
    if not np.isclose(sum(fractions), 1.0):
        raise DataError(f"split fractions must sum to 1, got {fractions}")
    order = np.random.default_rng(seed).permutation(len(frame))
    bounds = np.round(np.cumsum((0.0, *fractions)) * len(frame)).astype(int)
    return [frame.iloc[np.sort(order[a:b])].reset_index(drop=True) for a, b in zip(bounds[:-1], bounds[1:])]


def kfold_indices(n_rows: int, n_folds: int = 10, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) index arrays of a shuffled k-fold split, reproducible from ``seed`` (0 to 2**32 - 1)."""
    from fh_screen.errors import check_seed

    check_seed(seed, "seed", DataError)
    order = np.random.default_rng(seed).permutation(n_rows)
    folds = np.array_split(order, n_folds)
    return [
        (np.sort(np.concatenate(folds[:k] + folds[k + 1:])), np.sort(folds[k]))
        for k in range(n_folds)
    ]


# --- OQMD files as arrays (evaluation, the prior, the claims) -------------------------------------

@dataclass
class OqmdSet:
    """One OQMD file as arrays: formulas, ΔH_f (eV/atom), fractions over DEFAULT_ELEMENTS, element sets."""

    formulas: list[str]
    dhf_ev_per_atom: np.ndarray
    fractions: np.ndarray
    systems: list[tuple[int, ...]]
    n_atoms: np.ndarray

    def __len__(self) -> int:
        return len(self.formulas)

    def index(self) -> dict[tuple[int, ...], np.ndarray]:
        """Rows of each element set (sorted element indices), for subsystem lookups."""
        groups: dict[tuple[int, ...], list[int]] = {}
        for row, system in enumerate(self.systems):
            groups.setdefault(system, []).append(row)
        return {key: np.array(rows, dtype=np.int64) for key, rows in groups.items()}


def load_set(path: str | Path, *, refused: str | None = None) -> OqmdSet:
    """Read a shared OQMD CSV (``formula,target``); unparsable formulas and empty cells are dropped with a log line.

    A value that is not a finite number (a text, ``inf``) or a column of true/false values raises
    :class:`DataError` naming the line.

    With ``refused`` (what a refusal means, e.g. ``"the campaign did not start"``) the table is
    first checked as ``ingest`` and ``finetune`` check theirs (:func:`check_rows`, via :func:`make_set`).
    """
    frame = read_csv_any(path)  # any encoding; a file cut off mid-write is refused
    _require(frame, ["formula", "target"], Path(path))
    frame = frame[frame["formula"].notna() & frame["target"].notna()]
    values = _finite_targets(frame["target"], Path(path), refused)
    return make_set(frame["formula"].astype(str).tolist(), values, label=str(path), refused=refused)


def _finite_targets(column: pd.Series, path: Path, refused: str | None) -> np.ndarray:
    """``column`` (ΔH_f, eV/atom) as floats; :class:`DataError` naming the first line whose value is not
    a finite number (a text, ``inf``), or a column of true/false values."""
    end = f"; {refused}" if refused else ""
    if pd.api.types.is_bool_dtype(column):
        raise DataError(f"{path}: column target holds true/false values, not ΔH_f in eV/atom{end}")
    values = pd.to_numeric(column, errors="coerce").to_numpy(np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        line = int(column.index[bad[0]]) + 2  # the header is line 1
        value = column.iloc[bad[0]]
        shown = repr(value) if isinstance(value, str) else str(value)
        raise DataError(f"{path}: line {line}: target {shown} is not a finite number (ΔH_f in "
                        f"eV/atom; {len(bad)} such rows){end}")
    return values


def make_set(formulas: Sequence[str], dhf_ev_per_atom: Sequence[float], label: str = "entries", *,
             refused: str | None = None) -> OqmdSet:
    """:class:`OqmdSet` of formulas and ΔH_f values (eV/atom); unparsable formulas are dropped.

    With ``refused`` (the end of the message, e.g. ``"the campaign did not start"``) a table that
    :func:`check_rows` refuses raises its one-line :class:`DataError`: a formula naming an element
    that does not exist, or a pure element whose ΔH_f is not 0.
    """
    formulas = list(formulas)
    values = np.asarray(dhf_ev_per_atom, dtype=np.float64)
    features = fraction_matrix(formulas, DEFAULT_ELEMENTS, dtype=np.float64)
    valid = np.array([e is None for e in features.errors], dtype=bool)
    if refused is not None:
        report = CleaningReport(n_raw=len(formulas))
        report.reject("bad_formula", int((~valid).sum()), [e for e in features.errors if e][:N_EXAMPLES])
        pure = np.flatnonzero(valid & ((features.matrix > 0).sum(axis=1) == 1))  # what check_rows reads as pure
        check_rows(pd.DataFrame({"formula": [formulas[i] for i in pure], "dhf_ev_per_atom": values[pure]}),
                   report, label, refused)
    if not valid.all():
        logger.info("%s: %d unparsable rows dropped", label, int((~valid).sum()))
    fractions = features.matrix[valid]
    formulas = [f for f, ok in zip(formulas, valid) if ok]
    if not formulas:  # a header-only file, or nothing parsable: an empty set, not a reduceat over nothing
        return OqmdSet([], values[valid], fractions, [], np.zeros(0))
    nonzero = fractions > 0
    rows, columns = np.nonzero(nonzero)
    splits = np.cumsum(nonzero.sum(axis=1))[:-1]
    systems = [tuple(c.tolist()) for c in np.split(columns, splits)]
    # atoms per reduced formula unit: smallest integer multiple of the fractions (<= 200 atoms)
    entries = fractions[rows, columns]
    starts = np.concatenate([[0], splits]).astype(np.int64)
    n_atoms = np.full(len(fractions), np.inf)
    for scale in range(1, 201):
        scaled = entries * scale
        whole = np.logical_and.reduceat(np.abs(scaled - np.round(scaled)) < 1e-6, starts) & ~np.isfinite(n_atoms)
        n_atoms[whole] = scale
    return OqmdSet(formulas, values[valid], fractions, systems, n_atoms)


def subsystem_rows(index: dict[tuple[int, ...], np.ndarray], system: tuple[int, ...]) -> np.ndarray:
    """Rows whose element set is a subset of ``system`` (two or more elements)."""
    parts = [index[sub] for size in range(1, len(system) + 1) for sub in combinations(system, size) if sub in index]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def in_range(values: np.ndarray) -> np.ndarray:
    low, high = OUTLIER_RANGE_EV_PER_ATOM
    return np.isfinite(values) & (values > low) & (values < high)
