"""Build the OQMD reference table shipped with fh-screen (``fh_screen/reference_data/``).

The table holds the lowest ΔH_f per reduced composition of the shared OQMD files
``train.csv`` + ``val.csv`` after fh-screen's cleaning (:func:`fh_screen.data.load_oqmd`:
formulas reduced with pymatgen, lowest value per composition, values outside (−20, 5) eV/atom
dropped). It anchors the convex hull of a screen on known DFT phases; it is never used to train
a model (models are trained on ``train.csv`` only).

Writes ``oqmd_reference.csv.gz`` (columns ``formula``, ``dhf_ev_per_atom``; gzip without a time
stamp, so the same input gives the same bytes) and ``oqmd_reference.json`` (counts, source file
sha256s, the table's own sha256, which is the version stamp of an embedded store filled from it)::

    python scripts/build_reference_table.py [--data-dir FOLDER]   # default: oqmd_dir setting, else ../shared/data/oqmd
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import logging
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from fh_screen.data import DataError, file_sha256, load_oqmd, shared_data_dir
from fh_screen.store.bootstrap import METADATA_FILE, TABLE_FILE

OUT_DIR = Path(__file__).resolve().parents[1] / "fh_screen" / "reference_data"
SOURCE_FILES = ("train.csv", "val.csv")


def build(data_dir: Path, out_dir: Path) -> dict:
    """Write the table and its metadata; return the metadata."""
    frames, sources = [], []
    for name in SOURCE_FILES:
        path = data_dir / name
        frame, report = load_oqmd(path)
        frames.append(frame[["formula", "dhf_ev_per_atom"]])
        sources.append({"file": name, "sha256": file_sha256(path), "rows": report.n_raw, "kept": report.n_kept,
                        "outliers_dropped": report.rejected["outlier"]})
        logging.info("%s: %s", name, report.summary())
    table = pd.concat(frames, ignore_index=True).sort_values(["dhf_ev_per_atom"], kind="stable")
    table = table.drop_duplicates("formula", keep="first").sort_values("formula").reset_index(drop=True)
    text = table.to_csv(index=False, float_format="%.12g", lineterminator="\n").encode()
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=9, mtime=0, filename="") as handle:
        handle.write(text)
    payload = buffer.getvalue()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / TABLE_FILE).write_bytes(payload)
    metadata = {
        "description": "Lowest OQMD formation enthalpy per reduced composition (eV/atom), train.csv + val.csv, "
                       "outliers outside (-20, 5) eV/atom dropped",
        "source": "OQMD (https://oqmd.org), CC-BY 4.0",
        "sources": sources,
        "n_compositions": int(len(table)),
        "table_sha256": hashlib.sha256(payload).hexdigest(),
        "built": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "command": "python scripts/build_reference_table.py",
    }
    (out_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=1) + "\n")
    return metadata


def _default_data_dir() -> Path:
    """The configured OQMD folder, else ``../shared/data/oqmd`` beside this checkout (a script may know it)."""
    try:
        return shared_data_dir()
    except DataError:
        return Path(__file__).resolve().parents[2] / "shared" / "data" / "oqmd"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="Folder with train.csv and val.csv.")
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    metadata = build(args.data_dir or _default_data_dir(), args.out_dir)
    size = (args.out_dir / TABLE_FILE).stat().st_size
    print(f"{metadata['n_compositions']} compositions, {size / 1e6:.2f} MB, sha256 {metadata['table_sha256'][:16]}")


if __name__ == "__main__":
    main()
