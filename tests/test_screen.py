"""Screening a chemical system on a real OQMD slice: ranking, hull recovery, options, bad input."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from pymatgen.analysis.phase_diagram import PDEntry
from pymatgen.core import Composition

from fh_screen.data import shared_data_dir
from fh_screen.chem.candidates import ChemsysError, count_candidates
from fh_screen.errors import FhScreenError
from fh_screen.chem.hull import pymatgen_phase_diagram
from fh_screen.models.predictor import Predictor
from fh_screen.screening.probability import DEFAULT_PREFILTER_MODEL
from fh_screen.screening import MAX_HULL_PROGRAMMES, RESULT_COLUMNS, ScreenError, ScreenOptions, candidates_by_size, check_size, hull_programmes, screen

TRAIN_POOL = frozenset({"Li", "Fe", "O", "Ni", "Al", "Co", "Mn", "Mg", "Na", "Ti", "Cr", "Cu", "Zn", "P"})


@pytest.fixture(scope="session")
def oqmd() -> pd.DataFrame:
    path = shared_data_dir() / "train.csv"
    if not path.is_file():
        pytest.skip(f"OQMD training data not found at {path} (set up /work/shared/data/oqmd)")
    frame = pd.read_csv(path).rename(columns={"target": "dhf_ev_per_atom"})
    frame["elements"] = [frozenset(re.findall(r"[A-Z][a-z]?", f)) for f in frame["formula"]]
    return frame


def system_slice(frame: pd.DataFrame, chemsys: str) -> pd.DataFrame:
    elements = frozenset(chemsys.split("-"))
    return frame[[e <= elements for e in frame["elements"]]][["formula", "dhf_ev_per_atom"]]


@pytest.fixture(scope="session")
def slice_model(oqmd, tmp_path_factory) -> Predictor:
    """A 2-member ensemble trained in seconds on the OQMD compounds of 14 elements (real data)."""
    import torch

    from fh_screen.chem.formula import DEFAULT_ELEMENTS, fraction_matrix
    from fh_screen.models.checkpoint import Checkpoint, save_checkpoint
    from fh_screen.models.mlp import NetworkSpec
    from fh_screen.models.fit import TrainConfig, train_network

    torch.set_num_threads(1)
    rows = oqmd[np.array([e <= TRAIN_POOL for e in oqmd["elements"]]) & (oqmd["dhf_ev_per_atom"].abs() < 5).to_numpy()]
    x = fraction_matrix(rows["formula"].tolist()).matrix
    y = rows["dhf_ev_per_atom"].to_numpy()
    spec = NetworkSpec("64x2+32x2+16x1+1x1", dropout=0.0, dropout_after=(), n_inputs=len(DEFAULT_ELEMENTS))
    members = [
        train_network(x, y, x, y, spec, TrainConfig(epochs=60, batch_size=256, learning_rate=3e-3, seed=seed, early_stopping_patience=100))
        for seed in (0, 1)
    ]
    checkpoint = Checkpoint(
        name="oqmd-slice", spec=spec, elements=list(DEFAULT_ELEMENTS),
        target_mean_ev_per_atom=members[0].target_mean_ev_per_atom,
        target_std_ev_per_atom=members[0].target_std_ev_per_atom,
        member_state_dicts=[m.state_dict for m in members], elements_in_training=sorted(TRAIN_POOL),
    )
    return Predictor.from_file(save_checkpoint(checkpoint, tmp_path_factory.mktemp("model") / "slice.pt"))


@pytest.fixture(scope="session")
def li_fe_o(oqmd, slice_model):
    known = system_slice(oqmd, "Li-Fe-O")
    return known, screen("Li-Fe-O", predictor=slice_model, known=known)


def test_ternary_screen_reports_known_phases_at_their_dft_values(li_fe_o):
    known, result = li_fe_o
    system = result.chemsys
    compounds = known[[len(re.findall(r"[A-Z][a-z]?", f)) > 1 for f in known["formula"]]]
    dft = pymatgen_phase_diagram(system, compounds["formula"].tolist(), compounds["dhf_ev_per_atom"].tolist())
    stable = sorted({e.composition.reduced_formula for e in dft.stable_entries if len(e.composition) > 1})
    assert {"Li2O", "Fe2O3", "Fe3O4", "LiFeO2"} <= set(stable)
    table = result.table.set_index("formula")
    # a known ground state is on the hull of the known phases, whatever its prediction
    assert (table.loc[stable, "e_above_hull_pred_ev_per_atom"] == 0).all()
    # every known composition: DFT value and its E_hull from the DFT hull, the prediction beside it
    rows = table[table["is_known"]]
    for formula, row in rows.iterrows():
        lowest = known.loc[known["formula"].map(lambda f: Composition(f).reduced_formula) == formula, "dhf_ev_per_atom"].min()
        assert row["known_dhf_ev_per_atom"] == pytest.approx(lowest) and row["dhf_ev_per_atom"] == pytest.approx(lowest)
        entry = PDEntry(Composition(formula), lowest * Composition(formula).num_atoms)
        assert row["e_above_hull_pred_ev_per_atom"] == pytest.approx(dft.get_e_above_hull(entry, allow_negative=True), abs=1e-6)
    assert rows["dhf_pred_ev_per_atom"].notna().all()
    assert bool(table.loc["Fe2O3", "is_known"]) and not bool(table.loc["Li9O5", "is_known"])


def test_new_candidates_are_placed_against_the_known_hull_only(li_fe_o):
    known, result = li_fe_o
    compounds = known[[len(re.findall(r"[A-Z][a-z]?", f)) > 1 for f in known["formula"]]]
    dft = pymatgen_phase_diagram(result.chemsys, compounds["formula"].tolist(), compounds["dhf_ev_per_atom"].tolist())
    new = result.table[~result.table["is_known"]]
    sample = new.iloc[:: max(1, len(new) // 60)]
    for row in sample.itertuples(index=False):
        hull = dft.get_hull_energy_per_atom(Composition(row.formula))
        assert row.e_above_hull_pred_ev_per_atom == pytest.approx(row.dhf_pred_ev_per_atom - hull, abs=1e-6)
    # below the known hull is negative, not a wall of ties at 0
    assert (new["e_above_hull_pred_ev_per_atom"] < 0).sum() > 3
    assert (new["e_above_hull_pred_ev_per_atom"] == 0).sum() == 0


def test_ranked_table_columns_order_and_rule(li_fe_o):
    _, result = li_fe_o
    table = result.table
    assert list(table.columns) == RESULT_COLUMNS + ["dhf_std_ev_per_atom", "p_stable", "is_known", "dhf_ev_per_atom",
                                                    "charge_balanced", "stability_score", "selected", "refined"]
    assert table["refined"].all() and result.prefilter is None  # a fully connected model predicts every row
    assert table["rank"].tolist() == list(range(1, len(table) + 1))
    # new candidates first, by P(stable), best first; then the known phases
    new = ~table["is_known"].to_numpy(bool)
    assert new[: int(new.sum())].all()
    p = table["p_stable"].to_numpy()
    assert (np.diff(p[new]) <= 0).all()
    assert ((table["p_stable"] >= 0) & (table["p_stable"] <= 1)).all()
    assert table["known_dhf_ev_per_atom"].isna().sum() == (~table["is_known"]).sum()
    # the short list: new, P(stable) >= select_p_min, predicted ΔH_f < 0, within the E_hull window
    options = ScreenOptions()
    window = options.select_e_hull_max_ev_per_atom
    selected = table[table["selected"]]
    assert not selected["is_known"].any() and (selected["p_stable"] >= options.select_p_min).all()
    assert (selected["dhf_pred_ev_per_atom"] < 0).all() and (selected["e_above_hull_pred_ev_per_atom"] <= window).all()
    left_out = table[~table["selected"] & ~table["is_known"]]
    assert ((left_out["p_stable"] < options.select_p_min) | (left_out["dhf_pred_ev_per_atom"] >= 0)
            | (left_out["e_above_hull_pred_ev_per_atom"] > window)).all()
    # fewer claims than rows predicted below the known hull
    assert len(selected) < int((new & (table["e_above_hull_pred_ev_per_atom"] < 0)).sum())
    assert result.n_candidates == len(table) >= count_candidates(3)
    assert result.model_name == "oqmd-slice" and len(result.weights_sha256) == 64
    assert re.fullmatch(r"\d{8}T\d{9}-[0-9a-f]{8}", result.run_id)  # the one run-id format of CLI, jobs and store
    # the pymatgen phase diagram holds the known phases and the new ones predicted below their hull
    stable = {e.name for e in result.phase_diagram.stable_entries}
    known_ground_states = table[table["is_known"] & (table["e_above_hull_pred_ev_per_atom"] == 0)]["formula"]
    below = set(table[~table["is_known"] & (table["e_above_hull_pred_ev_per_atom"] < 0)]["formula"])
    assert stable <= set(known_ground_states) | below | set(result.chemsys)


def test_decomposition_names_known_phases_on_the_hull(li_fe_o):
    known, result = li_fe_o
    compounds = known[[len(re.findall(r"[A-Z][a-z]?", f)) > 1 for f in known["formula"]]]
    dft = pymatgen_phase_diagram(result.chemsys, compounds["formula"].tolist(), compounds["dhf_ev_per_atom"].tolist())
    stable = {e.composition.reduced_formula for e in dft.stable_entries}
    row = result.table[~result.table["is_known"] & (result.table["e_above_hull_pred_ev_per_atom"] > 0.05)].iloc[0]
    parts = [p.split(" ", 1) for p in row["decomposition"].split(" + ")]
    assert math.isclose(sum(float(w) for w, _ in parts), 1.0, abs_tol=2e-3)
    assert {name for _, name in parts} <= stable


def test_records_are_json_ready_with_null_for_unknown(li_fe_o):
    _, result = li_fe_o
    records = result.records()
    text = json.dumps(records, allow_nan=False)
    back = json.loads(text)
    assert set(RESULT_COLUMNS) <= set(back[0])
    assert any(r["known_dhf_ev_per_atom"] is None for r in back)
    assert any(isinstance(r["known_dhf_ev_per_atom"], float) for r in back)


def test_fresh_machine_without_known_entries_still_screens():
    predictor = Predictor.from_name("paper")
    result = screen("Fe-O", predictor=predictor, known=None, options=ScreenOptions(max_atoms=8))
    assert result.n_known == 0 and result.n_candidates == count_candidates(2, 8)
    assert result.table["known_dhf_ev_per_atom"].isna().all() and not result.table["is_known"].any()
    # with nothing known the hull is the elements': E_hull is the prediction itself
    table = result.table
    assert table["e_above_hull_pred_ev_per_atom"].to_numpy() == pytest.approx(table["dhf_pred_ev_per_atom"].to_numpy(), abs=1e-9)
    assert len(result.phase_diagram.stable_entries) >= 2


def test_exclude_known_and_charge_neutral(oqmd):
    predictor = Predictor.from_name("paper")
    known = system_slice(oqmd, "Li-Fe-O")
    options = ScreenOptions(max_atoms=10, include_known=False, charge_neutral=True)
    result = screen("Li-Fe-O", predictor=predictor, known=known, options=options)
    formulas = set(result.table["formula"])
    assert not result.table["is_known"].any()
    assert "Fe2O3" not in formulas and "LiFeO2" not in formulas  # known, excluded
    assert "LiO" not in formulas and "Li3O" not in formulas  # cannot balance
    full = screen("Li-Fe-O", predictor=predictor, known=known, options=ScreenOptions(max_atoms=10))
    assert {"Fe2O3", "LiFeO2", "Li5FeO4"} <= set(full.table["formula"])
    # known compositions beyond max_atoms are still listed when included
    assert full.table["is_known"].sum() == len(full.table[full.table["known_dhf_ev_per_atom"].notna()])


def test_many_element_system_finishes_or_is_refused_with_a_bound():
    """Ten elements at 6 atoms: every candidate has at most 6 elements, so qhull per subsystem, bounded."""
    system = "H-Li-Be-B-C-N-O-F-Na-Mg"
    n = check_size(system.split("-"), ScreenOptions(max_atoms=6))
    assert n == count_candidates(10, 6) and hull_programmes(10, 6) == 0
    # more atoms: candidates with 7+ elements need a linear programme each; too many are refused
    options = ScreenOptions(max_atoms=14, max_candidates=10**8)
    assert hull_programmes(10, 14) > MAX_HULL_PROGRAMMES
    with pytest.raises(ScreenError, match=r"linear programme.*: use max_atoms=(\d+) \(--max-atoms \1\) or force=True \(--force\)$") as info:
        check_size(system.split("-"), options)
    suggested = int(re.search(r"--max-atoms (\d+)", str(info.value)).group(1))
    assert hull_programmes(10, suggested) <= MAX_HULL_PROGRAMMES < hull_programmes(10, suggested + 1)
    # candidates by number of elements add up to the exact count
    assert sum(candidates_by_size(10, 9)) == count_candidates(10, 9)


def test_enumeration_above_the_limit_is_refused_unless_forced():
    predictor = Predictor.from_name("paper")
    with pytest.raises(ScreenError, match=r"use max_atoms=(\d+) \(--max-atoms \1\) or force=True \(--force\)$"):
        screen("Li-Fe-O", predictor=predictor, options=ScreenOptions(max_atoms=20, max_candidates=500))
    result = screen("Li-Fe-O", predictor=predictor, options=ScreenOptions(max_atoms=20, max_candidates=500, force=True))
    assert result.n_candidates == count_candidates(3, 20)


@pytest.mark.parametrize(
    "chemsys, options, error",
    [
        ("Li-Xx-O", {}, ChemsysError),
        ("Li", {}, ChemsysError),
        ("Li-Li-O", {}, ChemsysError),
        ("Li-Am-O", {}, ChemsysError),
        ("Li,O", {}, ChemsysError),
        ("Li-O", {"max_atoms": 0}, ScreenError),  # the options refuse it when made, as every door does
        ("Li-O", {"max_atoms": 10_000}, ScreenError),
        ("Li-O", {"max_candidates": 0}, ScreenError),
        ("Li-O", {"e_hull_tolerance_ev_per_atom": -1.0}, ScreenError),
    ],
)
def test_bad_input_raises_one_line_errors(chemsys, options, error):
    with pytest.raises(error) as info:
        screen(chemsys, predictor=Predictor.from_name("paper"), options=ScreenOptions(**options))
    assert isinstance(info.value, FhScreenError) and "\n" not in str(info.value)


def test_known_frame_without_columns_is_refused():
    with pytest.raises(ScreenError, match="dhf_ev_per_atom"):
        screen("Li-O", predictor=Predictor.from_name("paper"), known=pd.DataFrame({"formula": ["Li2O"]}))


def test_charge_balance_is_bounded_and_equal_to_the_direct_test():
    """Ten elements with 518,400 oxidation-state combinations: grouped by the elements present, same answer."""
    import time

    from fh_screen.chem.oxidation import _oxidation_table, charge_neutral_mask
    from fh_screen.chem.candidates import enumerate_counts
    from fh_screen.chem.oxidation import MAX_STATE_COMBINATIONS, charge_balanced

    small = ("Fe", "Li", "O", "P")
    counts = enumerate_counts(4, 10)
    assert (charge_balanced(counts, small) == charge_neutral_mask(counts, small)).all()
    many = ("Cl", "Br", "I", "S", "Se", "Te", "N", "P", "As", "Mn")
    assert math.prod(len(states) for states in _oxidation_table(many)) > MAX_STATE_COMBINATIONS
    counts = enumerate_counts(10, 4)
    started = time.perf_counter()
    grouped = charge_balanced(counts, many)
    assert time.perf_counter() - started < 30
    sample = counts[(counts > 0).sum(axis=1) <= 3][::7]
    for row in sample[:40]:
        present = [j for j in range(10) if row[j]]
        sub = tuple(many[j] for j in present)
        assert grouped[np.flatnonzero((counts == row).all(axis=1))[0]] == charge_neutral_mask(row[present][None, :], sub)[0]


def test_a_slow_model_refines_the_prefilter_s_best_and_heads_the_table(oqmd):
    """The attention default predicts the known phases and the fast prefilter's best; the top is the same."""
    li_fe_o_known = system_slice(oqmd, "Li-Fe-O")
    model = Predictor.from_name("attention-ensemble")
    options = ScreenOptions(max_atoms=12, refine_top=150)
    cascade = screen("Li-Fe-O", predictor=model, known=li_fe_o_known, options=options)
    full = screen("Li-Fe-O", predictor=model, known=li_fe_o_known, options=ScreenOptions(max_atoms=12, refine_top=None))
    table = cascade.table
    n_known = int(table["is_known"].sum())
    assert cascade.prefilter.startswith(f"{DEFAULT_PREFILTER_MODEL}@") and full.prefilter is None
    prefilter = model.companion(DEFAULT_PREFILTER_MODEL)  # loaded by the first screen, kept for the next
    assert model.companion(DEFAULT_PREFILTER_MODEL) is prefilter and cascade.prefilter == f"{prefilter.name}@{prefilter.version}"
    # the known ones, the prefilter's best 150 and the best 150 by P(stable) (which overlap)
    assert n_known + 150 < table["refined"].sum() <= n_known + 300 and table["is_known"][table["refined"]].sum() == n_known
    assert table[~table["is_known"]]["refined"].head(150).all()
    # refined rows carry the model's own predictions, exactly as a full screen gives them
    both = table[table["refined"]].merge(full.table, on="formula", suffixes=("", "_full"))
    np.testing.assert_allclose(both["dhf_pred_ev_per_atom"], both["dhf_pred_ev_per_atom_full"], atol=1e-9)
    # every row has P(stable), prefilter rows included
    assert table["p_stable"].notna().all()
    with pytest.raises(ScreenError, match="refine_top"):
        screen("Li-O", predictor=model, options=ScreenOptions(refine_top=-1))
    # 0 means what --refine-top 0 means in every command: the model on every candidate
    assert ScreenOptions(refine_top=0) == ScreenOptions(refine_top=None)
    every = screen("Li-Fe-O", predictor=model, known=li_fe_o_known, options=ScreenOptions(max_atoms=12, refine_top=0))
    assert every.prefilter is None and every.table["refined"].all()


@pytest.mark.parametrize("max_count", [20, 10**9])  # packed keys, and rows too large to pack
def test_row_matching_equals_numpy_whole_row_unique(max_count):
    """_unique_rows/_match (packed int64 keys) agree with np.unique over whole rows."""
    from fh_screen.screening.core import _match, _unique_rows

    rng = np.random.default_rng(7)
    rows = rng.integers(0, max_count + 1, size=(3000, 4))
    rows[:500] = rows[500:1000]  # duplicates
    assert np.array_equal(_unique_rows(rows), np.unique(rows, axis=0))
    table = np.unique(rows[::3], axis=0)
    queries = np.unique(np.concatenate([rows[1::3], rng.integers(0, max_count + 1, size=(200, 4))]), axis=0)
    found = _match(queries, table)
    for query, index in zip(queries, found):
        hits = np.flatnonzero((table == query).all(axis=1))
        assert index == (hits[0] if len(hits) else -1)
    assert (found >= 0).any() and (found < 0).any()


def test_table_order_equals_pandas_multi_key_sort(shuffled_screen_table):
    """The screen's lexsort order is pandas' four-key sort, ties and NaNs included."""
    from fh_screen.screening import table_order

    table = shuffled_screen_table
    expected = table.sort_values(["is_known", "p_stable", "stability_score", "e_above_hull_pred_ev_per_atom", "formula"],
                                 ascending=[True, False, False, True, True], kind="mergesort").index.to_numpy()
    np.testing.assert_array_equal(table.index.to_numpy()[table_order(table)], expected)


@pytest.fixture
def shuffled_screen_table():
    """A real Li-Fe-O screen table, shuffled, with ties in score and NaNs planted."""
    result = screen("Li-Fe-O", predictor=Predictor.from_name("paper-ensemble"), options=ScreenOptions(max_atoms=10))
    table = result.table.sample(frac=1.0, random_state=3).reset_index(drop=True)
    table.loc[:40, "stability_score"] = table.loc[0, "stability_score"]  # a block of exact ties: e_hull then formula decide
    table.loc[41:45, "stability_score"] = np.nan
    table.loc[46:48, "e_above_hull_pred_ev_per_atom"] = np.nan
    table.loc[:60, "p_stable"] = table.loc[0, "p_stable"]  # ties in P(stable): the score decides
    table.loc[61:64, "p_stable"] = np.nan
    return table


def test_numpy_blas_runs_on_one_thread_during_a_screen_and_is_restored_after(oqmd):
    """OpenBLAS threads that spin after numpy's products would take torch's cores mid-screen."""
    from threadpoolctl import threadpool_info

    def blas_threads() -> list[int]:
        return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

    before = blas_threads()
    seen = []
    screen("Li-Fe-O", predictor=Predictor.from_name("paper"), known=system_slice(oqmd, "Li-Fe-O"),
           options=ScreenOptions(max_atoms=8), progress=lambda label: seen.append(blas_threads()))
    assert seen and all(threads and set(threads) == {1} for threads in seen)
    assert blas_threads() == before
