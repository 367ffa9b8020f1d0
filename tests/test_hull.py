"""The vectorised hull equals pymatgen's PhaseDiagram on a real OQMD system."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from pymatgen.analysis.phase_diagram import PDEntry
from pymatgen.core import Composition
from scipy.stats import norm

from fh_screen.data import shared_data_dir
from fh_screen.chem.candidates import enumerate_counts, formulas_from_counts, parse_chemsys
from fh_screen.chem.hull import build_hull, format_decomposition, format_decompositions, hull_energies, probability_within, pymatgen_phase_diagram
from fh_screen.models.predictor import Predictor
from fh_screen.screening import known_counts


@pytest.fixture(scope="module")
def oqmd() -> pd.DataFrame:
    path = shared_data_dir() / "train.csv"
    if not path.is_file():
        pytest.skip(f"OQMD training data not found at {path} (set up /work/shared/data/oqmd)")
    return pd.read_csv(path).rename(columns={"target": "dhf_ev_per_atom"})


def system_slice(frame: pd.DataFrame, chemsys: str) -> pd.DataFrame:
    elements = set(chemsys.split("-"))
    keep = [set(re.findall(r"[A-Z][a-z]?", f)) <= elements for f in frame["formula"]]
    return frame[keep]


@pytest.mark.parametrize("chemsys, max_atoms", [("Li-Fe-O", 10), ("Al-Ni-O", 10), ("Li-Fe-P-O", 6)])
def test_vectorised_e_above_hull_and_decomposition_equal_pymatgen(oqmd, chemsys, max_atoms):
    system = parse_chemsys(chemsys)
    known_rows, known_dhf = known_counts(system_slice(oqmd, chemsys), system)
    assert len(known_rows) > 5
    counts = enumerate_counts(len(system), max_atoms)
    energies = Predictor.from_name("paper").predict_counts(counts, system).dhf_ev_per_atom.astype(float)
    fractions = counts / counts.sum(axis=1, keepdims=True)
    known_fractions = known_rows / known_rows.sum(axis=1, keepdims=True)
    hull = build_hull(system, np.concatenate([known_fractions, fractions]), np.concatenate([known_dhf, energies]))
    e_hull, facet = hull.e_above_hull(fractions, energies)
    decomposition = hull.decomposition(fractions, facet)

    formulas = formulas_from_counts(counts, system)
    known_formulas = formulas_from_counts(known_rows, system)
    names = list(system) + known_formulas + formulas
    reference = pymatgen_phase_diagram(system, known_formulas + formulas, np.concatenate([known_dhf, energies]))
    for i, formula in enumerate(formulas):
        composition = Composition(formula)
        entry = PDEntry(composition, energies[i] * composition.num_atoms)
        decomp, e_ref = reference.get_decomp_and_e_above_hull(entry, allow_negative=True)
        assert e_hull[i] == pytest.approx(e_ref, abs=1e-6), formula
        if e_ref > 1e-6:  # an unstable candidate: same phases, same amounts
            ours = {Composition(names[j]).reduced_formula: w for j, w in decomposition[i]}
            theirs = {e.composition.reduced_formula: w for e, w in decomp.items()}
            assert ours.keys() == theirs.keys(), formula
            for key in ours:
                assert ours[key] == pytest.approx(theirs[key], abs=1e-6)
    stable_ours = {names[j] for j in hull.vertices}
    stable_ref = {e.composition.reduced_formula for e in reference.stable_entries}
    assert {Composition(n).reduced_formula for n in stable_ours} == stable_ref


def test_hull_of_elements_only_gives_energy_itself():
    system = ("Fe", "O")
    fractions = np.array([[0.5, 0.5], [0.25, 0.75]])
    energies = np.array([0.3, 0.1])  # positive: nothing below the elements
    hull = build_hull(system, fractions, energies)
    e_hull, facet = hull.e_above_hull(fractions, energies)
    assert e_hull.tolist() == pytest.approx([0.3, 0.1])
    parts = hull.decomposition(fractions, facet)
    assert sorted(j for j, _ in parts[1]) == [0, 1]  # Fe + O
    assert sum(w for _, w in parts[1]) == pytest.approx(1.0)


def test_probability_within_tolerance_is_the_normal_cdf():
    e = np.array([0.0, 0.05, 0.2, 0.1])
    std = np.array([0.1, 0.02, 0.05, 0.0])
    p = probability_within(e, std, 0.05)
    assert p[:3] == pytest.approx(norm.cdf((0.05 - e[:3]) / std[:3]))
    assert p[3] == 0.0
    assert probability_within(np.array([0.0]), np.array([0.0]), 0.05)[0] == 1.0


@pytest.mark.parametrize("chemsys, max_atoms", [("Li-Fe-P-O", 8), ("Li-Mn-Fe-P-O", 6)])
def test_bounded_hull_energies_equal_pymatgen_by_every_route(oqmd, chemsys, max_atoms):
    """Grouping by subsystem, qhull per subsystem and one linear programme per query agree with pymatgen."""
    system = parse_chemsys(chemsys)
    known_rows, known_dhf = known_counts(system_slice(oqmd, chemsys), system)
    known_fractions = known_rows / known_rows.sum(axis=1, keepdims=True)
    counts = enumerate_counts(len(system), max_atoms)
    fractions = counts / counts.sum(axis=1, keepdims=True)
    known_formulas = formulas_from_counts(known_rows, system)
    reference = pymatgen_phase_diagram(system, known_formulas, known_dhf)
    expected = np.array([reference.get_hull_energy_per_atom(Composition(f)) for f in formulas_from_counts(counts, system)])
    names = list(system) + known_formulas
    for limit in (len(system), 3, 2):  # one qhull; qhull per subsystem + programmes; programmes only
        result = hull_energies(system, known_fractions, known_dhf, fractions, qhull_max_elements=limit)
        assert result.energy_ev_per_atom == pytest.approx(expected, abs=1e-7), limit
        for x, parts, energy in zip(fractions, result.parts, result.energy_ev_per_atom):
            assert sum(w for _, w in parts) == pytest.approx(1.0, abs=1e-6)
            mix = sum(w * np.concatenate([np.eye(len(system)), known_fractions])[i] for i, w in parts)
            assert mix == pytest.approx(x, abs=1e-6)
            assert sum(w * np.concatenate([np.zeros(len(system)), known_dhf])[i] for i, w in parts) == pytest.approx(energy, abs=1e-7)
        assert {names[i] for parts in result.parts for i, _ in parts} <= {e.name for e in reference.stable_entries}


@pytest.mark.parametrize("chemsys, max_atoms", [("Li-Fe-O", 12), ("Li-Fe-P-O", 8)])
def test_vectorised_decomposition_equals_the_per_row_reference(oqmd, chemsys, max_atoms):
    """The screen's array decomposition and its strings equal Hull.decomposition row by row."""
    system = parse_chemsys(chemsys)
    known_rows, known_dhf = known_counts(system_slice(oqmd, chemsys), system)
    counts = enumerate_counts(len(system), max_atoms)
    fractions = counts / counts.sum(axis=1, keepdims=True)
    hull = build_hull(system, known_rows / known_rows.sum(axis=1, keepdims=True), known_dhf)
    _, facet = hull.hull_energy(fractions)
    reference = hull.decomposition(fractions, facet)
    indices, weights = hull.decomposition_arrays(fractions, facet)
    assert [[(i, w) for i, w in zip(r_i, r_w) if i >= 0] for r_i, r_w in zip(indices.tolist(), weights.tolist())] == reference
    names = list(system) + formulas_from_counts(known_rows, system)
    result = hull_energies(system, known_rows / known_rows.sum(axis=1, keepdims=True), known_dhf, fractions)
    assert result.parts == reference
    assert result.formatted(names) == [format_decomposition(parts, names) for parts in reference]
    assert sum(" + " in text for text in result.formatted(names)) > len(counts) // 2  # real mixtures, not a trivial pass


def test_formatted_fractions_match_python_formatting_at_rounding_ties():
    """Fractions on (or within float error of) a thousandths tie print as f'{w:.3f}' does."""
    names = ["Li", "O", "Li2O"]
    ties = [0.0005, 0.0015, 0.1235, 0.2225, 0.4995, 0.9995, 0.3335, 1 / 3, 2 / 3, 0.5, 1.0, 1e-7]
    fractions = np.array([[w, 1 - w] for w in ties])
    indices = np.tile(np.array([[2, 0]]), (len(ties), 1))
    expected = [f"{w:.3f} Li2O + {1 - w:.3f} Li" for w in ties]
    assert format_decompositions(indices, fractions, names) == expected
    assert format_decompositions(np.array([[1, -1]]), np.array([[1.0, 0.0]]), names) == ["1.000 O"]


def test_lower_hull_energy_equals_the_hull_energy_on_a_hull_of_thousands_of_facets():
    """The binned path (only the facets whose boxes reach a row's bin) gives every row the
    energy the full plane scan gives; a hull of predicted candidates of Li-Fe-P-O, as the
    P(stable) feature builds it, has thousands of facets."""
    from fh_screen.chem.hull import lower_hull_energies

    system = ("Fe", "Li", "O", "P")
    counts = enumerate_counts(4, max_atoms=24)
    fractions = counts / counts.sum(axis=1, keepdims=True)
    rng = np.random.default_rng(0)
    # a smooth energy surface with noise: most points sit on or near the lower hull
    energies = -2.0 * (1 - (fractions ** 2).sum(axis=1)) + 0.05 * rng.standard_normal(len(fractions))
    single = (counts > 0).sum(axis=1) == 1
    points, point_energies = fractions[~single], energies[~single]
    hull = build_hull(system, points, point_energies)
    assert len(hull.planes) * len(fractions) > 8_000_000  # the binned path runs
    full, _ = hull.hull_energy(fractions)
    binned = hull.lower_hull_energy(fractions)
    np.testing.assert_allclose(binned, full, rtol=0, atol=1e-12)
    np.testing.assert_allclose(lower_hull_energies(system, points, point_energies, fractions),
                               hull_energies(system, points, point_energies, fractions).energy_ev_per_atom, rtol=0, atol=1e-12)


def test_the_hull_built_face_by_face_equals_one_qhull_of_every_point():
    """Most points of a large system lie on its walls (a subsystem); the hull built face by face
    from each face's own points and the vertices below it gives every query the energy of one
    qhull of every point, in every face, down to an element whose own point lies below 0."""
    from fh_screen.chem.hull import FACE_BY_FACE_MIN_POINTS, face_by_face_hull_energies, lower_hull_energies

    system = ("Co", "Fe", "Li", "O", "P")
    counts = enumerate_counts(5, max_atoms=14)
    fractions = counts / counts.sum(axis=1, keepdims=True)
    rng = np.random.default_rng(1)
    energies = -1.5 * (1 - (fractions ** 2).sum(axis=1)) + 0.05 * rng.standard_normal(len(fractions))
    walls = (counts == 0).any(axis=1)
    assert walls.mean() > 0.5 and len(fractions) > FACE_BY_FACE_MIN_POINTS  # the face-by-face path runs
    fractions = np.concatenate([fractions, np.eye(5)])  # the elements as points, one of them below 0
    energies = np.concatenate([energies, [0.0, 0.0, -0.02, 0.0, 0.0]])
    one_qhull = hull_energies(system, fractions, energies, fractions).energy_ev_per_atom
    by_face = face_by_face_hull_energies(system, fractions, energies, fractions)
    np.testing.assert_allclose(by_face, one_qhull, rtol=0, atol=1e-12)
    np.testing.assert_allclose(lower_hull_energies(system, fractions, energies, fractions), one_qhull, rtol=0, atol=1e-12)
    # a face with no point below 0 stands at 0; a query off every point gets the hull between them
    empty = face_by_face_hull_energies(system, fractions[:0], energies[:0], fractions[:50])
    np.testing.assert_array_equal(empty, np.zeros(50))
