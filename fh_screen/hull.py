"""Convex hull of formation enthalpies: energy above hull and decomposition, vectorised.

The hull of a system is built once, the way pymatgen's :class:`PhaseDiagram` builds it (qhull on
``[fractions of elements 2..k, ΔH_f]`` of the lowest entry per composition with ΔH_f < 0, the
elements at 0 eV/atom and one point far above the centroid; facets touching that point or
degenerate are dropped). Every remaining facet is a lower facet, and because the lower hull is a
convex function of composition it equals the **maximum of its facet planes** at every
composition. So ``e_above_hull = E - max_f plane_f(x)`` is one matrix product per block of
candidates, and the arg-max facet gives the decomposition by barycentric coordinates.

pymatgen's ``PhaseDiagram.get_decomp_and_e_above_hull`` is the reference path; ``tests/test_hull.py``
checks that both agree on every candidate of a real OQMD system.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Hull", "build_hull", "format_decomposition", "probability_within", "pymatgen_phase_diagram"]

#: Entries with ΔH_f above this cannot be on the hull (pymatgen's ``formation_energy_tol``).
_FORMATION_TOL = 1e-11
#: Barycentric weights below this are not part of a decomposition.
_WEIGHT_TOL = 1e-8
#: Rows per block in the candidates x facets product (bounds memory to ~64 MB of float64).
_BLOCK_ELEMENTS = 8_000_000


@dataclass(frozen=True)
class Hull:
    """The lower convex hull of a system in (fractions, ΔH_f) space.

    ``fractions`` (n, k) and ``energies_ev_per_atom`` (n,) are the points it was built from
    (elements first); ``facets`` (m, k) index into them; ``planes`` (m, k) give each facet's
    ΔH_f as ``[x_2..x_k, 1] @ plane``; ``vertex_inverse`` (m, k, k) maps fractions to barycentric
    weights on the facet's vertices.
    """

    chemsys: tuple[str, ...]
    fractions: np.ndarray
    energies_ev_per_atom: np.ndarray
    facets: np.ndarray
    planes: np.ndarray
    vertex_inverse: np.ndarray

    @property
    def vertices(self) -> np.ndarray:
        """Indices of the points that are hull vertices (the stable phases), sorted."""
        return np.unique(self.facets)

    def hull_energy(self, fractions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ΔH_f of the hull (eV/atom) at each row of ``fractions`` and the facet it lies on."""
        fractions = np.asarray(fractions, dtype=np.float64)
        augmented = np.concatenate([fractions[:, 1:], np.ones((len(fractions), 1))], axis=1)
        energy = np.empty(len(fractions))
        facet = np.empty(len(fractions), dtype=np.int64)
        block = max(1, _BLOCK_ELEMENTS // max(1, len(self.planes)))
        for start in range(0, len(fractions), block):
            values = augmented[start : start + block] @ self.planes.T
            facet[start : start + block] = values.argmax(axis=1)
            energy[start : start + block] = values.max(axis=1)
        return energy, facet

    def e_above_hull(self, fractions: np.ndarray, energies_ev_per_atom: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Energy above the hull (eV/atom, clipped at 0 within 1e-9) and the facet of each row."""
        hull, facet = self.hull_energy(fractions)
        e = np.asarray(energies_ev_per_atom, dtype=np.float64) - hull
        e[np.abs(e) < 1e-9] = 0.0
        return e, facet

    def decomposition(self, fractions: np.ndarray, facet: np.ndarray) -> list[list[tuple[int, float]]]:
        """Hull points (indices) and atom fractions each row decomposes into, largest first."""
        fractions = np.asarray(fractions, dtype=np.float64)
        weights = np.einsum("nij,nj->ni", self.vertex_inverse[facet], fractions)
        vertices = self.facets[facet]
        out = []
        for w_row, v_row in zip(weights.tolist(), vertices.tolist()):
            parts = sorted(((v, w) for v, w in zip(v_row, w_row) if w > _WEIGHT_TOL), key=lambda p: -p[1])
            out.append(parts)
        return out


def build_hull(chemsys: Sequence[str], fractions: np.ndarray, energies_ev_per_atom: np.ndarray) -> Hull:
    """Lower hull of points (fractions over ``chemsys``, ΔH_f); the elements are added at 0.

    ``fractions`` rows sum to 1. Returns a :class:`Hull` whose points are the ``k`` elements
    followed by the given rows (indices shift by ``k``).
    """
    from scipy.spatial import ConvexHull

    chemsys = tuple(chemsys)
    k = len(chemsys)
    fractions = np.concatenate([np.eye(k), np.asarray(fractions, dtype=np.float64).reshape(-1, k)])
    energies = np.concatenate([np.zeros(k), np.asarray(energies_ev_per_atom, dtype=np.float64)])
    use = np.flatnonzero(np.isfinite(energies) & (energies < -_FORMATION_TOL))
    use = np.concatenate([np.arange(k), use[use >= k]])
    data = np.concatenate([fractions[use][:, 1:], energies[use][:, None]], axis=1)
    extra = np.full(k, 1.0 / k)
    extra[-1] = np.max(data) + 1
    data = np.concatenate([data, extra[None, :]])
    hull = ConvexHull(data, qhull_options="Qt i")
    simplices = hull.simplices
    simplices = simplices[(simplices != len(data) - 1).all(axis=1)]
    matrices = data[simplices].copy()  # (m, k, k): rows [x_2..x_k, E]
    matrices[:, :, -1] = 1.0
    determinants = np.linalg.det(matrices)
    good = np.abs(determinants) > 1e-14
    simplices, matrices = simplices[good], matrices[good]
    # plane: E = [x_2..x_k, 1] @ p  =>  matrices @ p = E_vertices
    planes = np.linalg.solve(matrices, data[simplices][:, :, -1][..., None])[..., 0]
    facets = use[simplices]
    vertex_fractions = fractions[facets]  # (m, k vertices, k elements)
    vertex_inverse = np.linalg.inv(np.transpose(vertex_fractions, (0, 2, 1)))
    return Hull(chemsys, fractions, energies, facets, planes, vertex_inverse)


def format_decomposition(parts: list[tuple[int, float]], names: Sequence[str]) -> str:
    """``0.500 Li2O + 0.500 FePO4`` (atom fractions) from :meth:`Hull.decomposition` output."""
    return " + ".join(f"{w:.3f} {names[i]}" for i, w in parts)


def probability_within(e_above_hull_ev_per_atom: np.ndarray, std_ev_per_atom: np.ndarray, tolerance_ev_per_atom: float) -> np.ndarray:
    """P(true energy above hull <= tolerance) for a normal error of ``std`` on the prediction.

    The hull is held fixed (the candidate's own error only), so this is
    ``Φ((tolerance - e_above_hull) / σ)``; σ = 0 gives 0 or 1.
    """
    from scipy.special import ndtr

    e = np.asarray(e_above_hull_ev_per_atom, dtype=np.float64)
    std = np.asarray(std_ev_per_atom, dtype=np.float64)
    margin = tolerance_ev_per_atom - e
    with np.errstate(divide="ignore", invalid="ignore"):
        p = ndtr(margin / std)
    return np.where(std > 0, p, (margin >= 0).astype(float))


def pymatgen_phase_diagram(chemsys: Sequence[str], formulas: Sequence[str], energies_ev_per_atom: Sequence[float], attributes: Sequence[str] | None = None):
    """pymatgen :class:`PhaseDiagram` of entries given as formulas and ΔH_f, elements at 0.

    The reference path (and the object handed to ``PDPlotter``). ``attributes`` (e.g.
    ``"known"``/``"predicted"``) are stored on each :class:`PDEntry`.
    """
    from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
    from pymatgen.core import Composition, Element

    entries = [PDEntry(Composition(symbol), 0.0, name=symbol, attribute="element") for symbol in chemsys]
    attributes = list(attributes) if attributes is not None else [None] * len(formulas)
    for formula, energy, attribute in zip(formulas, energies_ev_per_atom, attributes):
        composition = Composition(formula)
        entries.append(PDEntry(composition, float(energy) * composition.num_atoms, name=formula, attribute=attribute))
    return PhaseDiagram(entries, elements=[Element(s) for s in chemsys])
