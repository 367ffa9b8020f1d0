"""Screen Li-Fe-O in Python: known OQMD phases + predictions → ranked candidates and a hull plot.

    python examples/screen_system.py [TRAIN_CSV]

Uses the shared OQMD training file (or TRAIN_CSV) for the known phases; with none, the hull is
built from the elements and the predictions alone.
"""

import re
import sys
from pathlib import Path

import pandas as pd

from fh_screen.data import shared_data_dir
from fh_screen.screening import ScreenOptions, plot_screen, screen

path = Path(sys.argv[1]) if len(sys.argv) > 1 else shared_data_dir() / "train.csv"
known = None
if path.is_file():
    frame = pd.read_csv(path).rename(columns={"target": "dhf_ev_per_atom"})
    known = frame[frame["formula"].str.fullmatch(r"(?:(?:Li|Fe|O)\d*)+")]

result = screen("Li-Fe-O", known=known, options=ScreenOptions(max_atoms=20))
print(result.table.head(15).to_string(index=False))
print(f"{result.n_candidates} candidates, model {result.model_name}@{result.model_version}, run {result.run_id}")
print(plot_screen(result, "li_fe_o_hull.png", top=10))
