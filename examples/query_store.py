"""Ingest a slice of OQMD, predict it with a maggma Builder, compare DFT with predictions, save a screen.

    python examples/query_store.py            # uses a temporary store, touches nothing in ~/.fh_screen

The same calls work on the configured store (``FhScreenStore.from_settings()``: the embedded
file under ~/.fh_screen, or MongoDB when FH_SCREEN_MONGO_URI is set).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from maggma.cli.serial import serial

from fh_screen.store.bootstrap import packaged_reference_frame
from fh_screen.store import FhScreenStore
from fh_screen.store.builders import PredictionBuilder
from fh_screen.store.ingest import ingest_frame


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = FhScreenStore.embedded(Path(tmp) / "example.sqlite")
        with store:
            # the OQMD table shipped with the package; an OQMD dump of your own goes through
            # fh_screen.data.load_oqmd(path) the same way
            tidy = packaged_reference_frame("Li-Fe-P-O").assign(source_id=None, passed_outlier_filter=True)
            report = ingest_frame(store.reference, tidy[["formula", "dhf_ev_per_atom", "source_id", "passed_outlier_filter"]])
            print("ingest:", report.summary())
            # every entry whose elements are a subset of Li, Fe, O (what a phase diagram needs)
            print(store.reference_frame(chemsys="Li-Fe-O")[["formula", "dhf_ev_per_atom"]].head(10))

        # bulk prediction with maggma's own runner; re-running predicts only new entries
        serial(PredictionBuilder(store.reference, store.predictions), no_bars=True)

        with store:
            both = store.compare_frame(chemsys="Li-Fe-O")
            print(both[["formula", "dhf_ev_per_atom", "dhf_pred_ev_per_atom", "dhf_error_ev_per_atom"]].head(10))
            print("mean |error| (eV/atom):", both["dhf_error_ev_per_atom"].abs().mean().round(3))

        # the third collection: one document per screen, under a new run id (what `fh-screen runs` lists)
        from fh_screen.screening import ScreenOptions, screen
        from fh_screen.store import ScreenDoc

        with store:
            options = ScreenOptions(max_atoms=8)
            result = screen("Li-Fe-O", known=store.reference_frame(chemsys="Li-Fe-O"), options=options)
            run_id = store.save_screen(ScreenDoc.from_result(result, options))
            for row in store.screen_summaries():
                print(row["run_id"], row["chemsys"], row["n_candidates"], "candidates,", row["n_reference"], "known")
            print("best:", [c.formula for c in store.get_screen(run_id).candidates[:5]])


if __name__ == "__main__":
    main()
