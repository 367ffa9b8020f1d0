"""A screen's table saved to a real on-disk store: the fast (already reduced) path equals pymatgen's."""

from __future__ import annotations

from fh_screen.predictor import Predictor
from fh_screen.screening import ScreenOptions, screen
from fh_screen.store import FhScreenStore
from fh_screen.store.stores import prediction_docs_from_frame


def test_screen_formulas_are_already_pymatgen_reduced(tmp_path):
    predictor = Predictor.from_name("paper")
    result = screen("Li-Fe-P-O", predictor=predictor, options=ScreenOptions(max_atoms=10))
    fast = prediction_docs_from_frame(result.table, predictor, "run", formulas_reduced=True)
    reference = prediction_docs_from_frame(result.table, predictor, "run", formulas_reduced=False)
    assert [d["formula"] for d in fast] == [d["formula"] for d in reference]
    assert [d["chemsys"] for d in fast] == [d["chemsys"] for d in reference]
    store = FhScreenStore.embedded(tmp_path / "store.sqlite")
    with store:
        run_id = store.save_predictions(result.table, predictor, result.run_id, formulas_reduced=True)
        assert store.n_predictions() == len(result.table)
        saved = store.predictions_frame(chemsys="Fe-O")
    assert run_id == result.run_id
    expected = {d["formula"] for d in reference if set(d["elements"]) <= {"Fe", "O"}}
    assert expected and set(saved["formula"]) == expected
