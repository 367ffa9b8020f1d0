"""Builder of the shipped analogue index (``fh_screen/reference_data/analogue_index.npz``).

The index hashes the distinct compositions of the OQMD training file alone
(:class:`fh_screen.screening.analogues.AnalogueIndex`); the screen counts a candidate's chemical
analogues in it. Rebuild it with ``python -m fh_screen.study.analogue_table ../shared/data/oqmd/train.csv``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from fh_screen.screening.analogues import ANALOGUE_INDEX_PATH, AnalogueIndex

logger = logging.getLogger(__name__)

__all__ = ["build_analogue_index"]


def build_analogue_index(train_path: str | Path) -> AnalogueIndex:
    """Index of the compositions of an OQMD table (``formula`` column), with the file's checksum."""
    from fh_screen.data import file_sha256, load_oqmd

    frame, _ = load_oqmd(train_path)
    return AnalogueIndex.from_formulas(frame["formula"].astype(str), source=Path(train_path).name,
                                       source_sha256=file_sha256(train_path))


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m fh_screen.study.analogue_table TRAIN_CSV [-o PATH]``: rebuild the shipped index."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("train", type=Path)
    parser.add_argument("-o", "--output", type=Path, default=ANALOGUE_INDEX_PATH)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    index = build_analogue_index(args.train)
    index.save(args.output)
    logger.info("wrote %s (%d compositions, %d group patterns)", args.output, index.metadata["n_compositions"],
                len(index.pattern_hashes))


if __name__ == "__main__":
    main()
