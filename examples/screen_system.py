"""Screen Li-Fe-O in Python: known OQMD phases + predictions → ranked candidates and a hull plot.

    python examples/screen_system.py [OUTPUT_DIR]

The known phases are the OQMD entries shipped with the package (no store, no download); the
plot is written to OUTPUT_DIR (default: a new temporary folder, never the checkout).
"""

import sys
import tempfile
from pathlib import Path

from fh_screen.screening import ScreenOptions, screen
from fh_screen.plotting import plot_screen
from fh_screen.store.bootstrap import packaged_reference_frame

output = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="fh_screen_example_"))
known = packaged_reference_frame("Li-Fe-O")
result = screen("Li-Fe-O", known=known, options=ScreenOptions(max_atoms=20))
print(result.table.head(15).to_string(index=False))
print(f"{result.n_candidates} candidates ({len(known)} known), model {result.model_name}@{result.model_version}, run {result.run_id}")
print(plot_screen(result, output / "li_fe_o_hull.png", top=10))
