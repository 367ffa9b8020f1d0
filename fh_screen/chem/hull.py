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

from fh_screen.chem.formula import DEFAULT_ELEMENTS

__all__ = [
    "FACE_BY_FACE_MIN_POINTS",
    "QHULL_MAX_ELEMENTS",
    "STABLE_TOLERANCE_EV_PER_ATOM",
    "Hull",
    "HullEnergies",
    "build_hull",
    "e_above_hull",
    "lower_hull_energies",
    "face_by_face_hull_energies",
    "format_decomposition",
    "format_decompositions",
    "hull_energies",
    "probability_within",
    "pymatgen_phase_diagram",
]

#: Entries with ΔH_f above this cannot be on the hull (pymatgen's ``formation_energy_tol``).
_FORMATION_TOL = 1e-11
#: Barycentric weights below this are not part of a decomposition.
_WEIGHT_TOL = 1e-8
#: Rows per block in the candidates x facets product (bounds memory to ~64 MB of float64).
_BLOCK_ELEMENTS = 8_000_000
#: Largest (sub)system that :func:`hull_energies` hands to qhull. Beyond it the number of facets
#: (and qhull's time) can explode, so each query point gets a linear programme (HiGHS) instead,
#: whose cost is bounded by the number of points. Measured by ``benchmarks/bench_hull.py``.
QHULL_MAX_ELEMENTS = 6


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
            best = values.argmax(axis=1)
            facet[start : start + block] = best
            energy[start : start + block] = values[np.arange(len(best)), best]  # the max, without a second pass
        return energy, facet

    def lower_hull_energy(self, fractions: np.ndarray, cells: int = 12, axes: int = 3) -> np.ndarray:
        """ΔH_f of the hull (eV/atom) at each row of ``fractions``, without the facet: large hulls fast.

        Every facet plane lies on or below the lower hull, and the facet that holds a row lies on
        it there, so the hull's energy is the largest plane value over any set of facets that
        includes the holding one. A row can only lie in a facet whose bounding box holds it:
        rows and facets are binned (``cells`` per axis) on the ``axes`` composition axes that
        spread the rows most, and each row meets only the facets whose boxes reach its bin. The
        same energies as :meth:`hull_energy` (to float rounding); on the senary Li-Fe-P-O-Mn-Co
        hull of predictions (18,525 facets) a row meets ~40 % of them.
        """
        fractions = np.asarray(fractions, dtype=np.float64)
        n, k = fractions.shape
        if k < 3 or len(self.planes) * n <= _BLOCK_ELEMENTS:
            return self.hull_energy(fractions)[0]
        augmented = np.concatenate([fractions[:, 1:], np.ones((n, 1))], axis=1)
        corners = self.fractions[self.facets]  # (facets, vertices, elements)
        chosen = np.argsort(-fractions.var(axis=0), kind="stable")[: min(axes, k)]

        def bin_of(values: np.ndarray) -> np.ndarray:
            return np.clip(np.floor(values * cells).astype(np.int64), 0, cells - 1)

        tolerance = 1e-9  # a row on a facet's edge may round just outside its box
        low = bin_of(corners.min(axis=1)[:, chosen] - tolerance)
        high = bin_of(corners.max(axis=1)[:, chosen] + tolerance)
        row_bins = bin_of(fractions[:, chosen])
        row_key = row_bins @ (cells ** np.arange(len(chosen)))
        order = np.argsort(row_key, kind="stable")
        _, starts = np.unique(row_key[order], return_index=True)
        stops = np.append(starts[1:], n)
        energy = np.empty(n)
        for start, stop in zip(starts.tolist(), stops.tolist()):
            rows = order[start:stop]
            here = row_bins[rows[0]]
            near = np.flatnonzero(((low <= here) & (high >= here)).all(axis=1))
            planes = self.planes[near] if len(near) else self.planes
            block = max(1, _BLOCK_ELEMENTS // max(1, len(planes)))
            for first in range(0, len(rows), block):
                part = rows[first:first + block]
                energy[part] = (augmented[part] @ planes.T).max(axis=1)
        return energy

    def e_above_hull(self, fractions: np.ndarray, energies_ev_per_atom: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Energy above the hull (eV/atom, clipped at 0 within 1e-9) and the facet of each row."""
        hull, facet = self.hull_energy(fractions)
        e = np.asarray(energies_ev_per_atom, dtype=np.float64) - hull
        e[np.abs(e) < 1e-9] = 0.0
        return e, facet

    def decomposition(self, fractions: np.ndarray, facet: np.ndarray) -> list[list[tuple[int, float]]]:
        """Hull points (indices) and atom fractions each row decomposes into, largest first.

        The reference for :meth:`decomposition_arrays`, which the screen uses.
        """
        fractions = np.asarray(fractions, dtype=np.float64)
        weights = np.einsum("nij,nj->ni", self.vertex_inverse[facet], fractions)
        vertices = self.facets[facet]
        out = []
        for w_row, v_row in zip(weights.tolist(), vertices.tolist()):
            parts = sorted(((v, w) for v, w in zip(v_row, w_row) if w > _WEIGHT_TOL), key=lambda p: -p[1])
            out.append(parts)
        return out

    def decomposition_arrays(self, fractions: np.ndarray, facet: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`decomposition` as two (n, k) arrays: point indices (-1 pads) and atom fractions.

        Each row is ordered largest fraction first; vectorised (no Python loop over rows).
        """
        fractions = np.asarray(fractions, dtype=np.float64)
        weights = np.einsum("nij,nj->ni", self.vertex_inverse[facet], fractions)
        vertices = self.facets[facet]
        keep = weights > _WEIGHT_TOL
        order = np.argsort(np.where(keep, -weights, np.inf), axis=1, kind="stable")
        weights = np.take_along_axis(np.where(keep, weights, 0.0), order, axis=1)
        indices = np.take_along_axis(np.where(keep, vertices, -1), order, axis=1)
        return indices, weights


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


@dataclass(frozen=True)
class HullEnergies:
    """ΔH_f of the lower hull at query compositions and the hull points each one lies on.

    ``energy_ev_per_atom`` (n,) is the hull's ΔH_f at each query. ``part_indices`` and
    ``part_fractions`` (n, m) give each query's ``(point index, atom fraction)`` pairs, largest
    first (index -1 pads), with indices into the points given to :func:`hull_energies` after the
    ``k`` elements (``0..k-1`` are the elements); :attr:`parts` lists them per query.
    """

    energy_ev_per_atom: np.ndarray
    part_indices: np.ndarray
    part_fractions: np.ndarray

    @property
    def parts(self) -> list[list[tuple[int, float]]]:
        """``(point index, atom fraction)`` pairs of each query, largest first."""
        return [[(i, w) for i, w in zip(row_i, row_w) if i >= 0]
                for row_i, row_w in zip(self.part_indices.tolist(), self.part_fractions.tolist())]

    def formatted(self, names: Sequence[str]) -> list[str]:
        """``0.500 Li2O + 0.500 FePO4`` for each query; ``names`` has one entry per point index."""
        return format_decompositions(self.part_indices, self.part_fractions, names)


def hull_energies(
    chemsys: Sequence[str],
    fractions: np.ndarray,
    energies_ev_per_atom: np.ndarray,
    query_fractions: np.ndarray,
    *,
    qhull_max_elements: int = QHULL_MAX_ELEMENTS,
) -> HullEnergies:
    """Hull ΔH_f (eV/atom) at each query composition, with bounded cost in any dimension.

    The hull is that of the elements (0 eV/atom) and the points ``(fractions, energies)``. A
    query whose composition spans the elements ``S`` only sees points made of elements of ``S``
    (weights are non-negative), so queries are grouped by the set of elements they contain and
    each group gets the hull of its own subsystem: qhull (:func:`build_hull`, then a matrix
    product) when ``|S| <= qhull_max_elements``, one linear programme per query otherwise
    (minimise ``Σ λ_i E_i`` subject to ``Σ λ_i x_i = x``, ``λ >= 0``; HiGHS). A system with
    at most ``qhull_max_elements`` elements is one qhull call, as before.
    """
    chemsys = tuple(chemsys)
    k = len(chemsys)
    fractions = np.asarray(fractions, dtype=np.float64).reshape(-1, k)
    energies = np.asarray(energies_ev_per_atom, dtype=np.float64).reshape(-1)
    query = np.asarray(query_fractions, dtype=np.float64).reshape(-1, k)
    if k <= qhull_max_elements:
        hull = build_hull(chemsys, fractions, energies)
        energy, facet = hull.hull_energy(query)
        return HullEnergies(energy, *hull.decomposition_arrays(query, facet))

    all_fractions = np.concatenate([np.eye(k), fractions])
    all_energies = np.concatenate([np.zeros(k), energies])
    useful = np.isfinite(all_energies) & (all_energies < -_FORMATION_TOL)
    useful[:k] = True
    weights = 1 << np.arange(k, dtype=np.int64)
    point_mask = (all_fractions > 0) @ weights
    query_mask = (query > 0) @ weights
    energy = np.full(len(query), np.nan)
    parts: list[list[tuple[int, float]]] = [[] for _ in range(len(query))]
    for mask in np.unique(query_mask):
        rows = np.flatnonzero(query_mask == mask)
        columns = np.flatnonzero((int(mask) >> np.arange(k)) & 1)
        inside = np.flatnonzero(useful & ((point_mask & ~mask) == 0))
        sub_fractions = all_fractions[np.ix_(inside, columns)]
        sub_energies = all_energies[inside]
        sub_query = query[np.ix_(rows, columns)]
        if len(columns) <= qhull_max_elements:
            # the subsystem's elements are among ``inside``: pass the others as points
            is_element = np.zeros(len(inside), dtype=bool)
            is_element[: len(columns)] = True  # elements come first (indices < k, sorted)
            sub = build_hull(tuple(chemsys[j] for j in columns), sub_fractions[~is_element], sub_energies[~is_element])
            values, facet = sub.hull_energy(sub_query)
            local = np.concatenate([inside[is_element], inside[~is_element]])
            for row, row_parts in zip(rows, sub.decomposition(sub_query, facet)):
                parts[row] = [(int(local[i]), w) for i, w in row_parts]
            energy[rows] = values
        else:
            for row, x in zip(rows, sub_query):
                value, row_parts = _hull_energy_lp(sub_fractions, sub_energies, x)
                energy[row] = value
                parts[row] = [(int(inside[i]), w) for i, w in row_parts]
    width = max((len(p) for p in parts), default=0)
    indices = np.full((len(query), width), -1, dtype=np.int64)
    weights = np.zeros((len(query), width))
    for row, row_parts in enumerate(parts):
        for j, (i, w) in enumerate(row_parts):
            indices[row, j], weights[row, j] = i, w
    return HullEnergies(energy, indices, weights)


def lower_hull_energies(
    chemsys: Sequence[str],
    fractions: np.ndarray,
    energies_ev_per_atom: np.ndarray,
    query_fractions: np.ndarray,
    *,
    qhull_max_elements: int = QHULL_MAX_ELEMENTS,
) -> np.ndarray:
    """The hull ΔH_f of :func:`hull_energies` alone (no decompositions): faster on large hulls.

    Beyond :data:`FACE_BY_FACE_MIN_POINTS` points the hull is built face by face
    (:func:`face_by_face_hull_energies`): the same energies, to float rounding.
    """
    chemsys = tuple(chemsys)
    k = len(chemsys)
    if k > qhull_max_elements:
        return hull_energies(chemsys, fractions, energies_ev_per_atom, query_fractions,
                             qhull_max_elements=qhull_max_elements).energy_ev_per_atom
    fractions = np.asarray(fractions, dtype=np.float64).reshape(-1, k)
    energies = np.asarray(energies_ev_per_atom, dtype=np.float64).reshape(-1)
    query = np.asarray(query_fractions, dtype=np.float64).reshape(-1, k)
    if len(fractions) > FACE_BY_FACE_MIN_POINTS:
        return face_by_face_hull_energies(chemsys, fractions, energies, query)
    return build_hull(chemsys, fractions, energies).lower_hull_energy(query)


#: Points above which :func:`lower_hull_energies` builds the hull face by face (below it, one
#: qhull of every point is fast).
FACE_BY_FACE_MIN_POINTS = 5_000


def face_by_face_hull_energies(chemsys: Sequence[str], fractions: np.ndarray, energies_ev_per_atom: np.ndarray,
                               query_fractions: np.ndarray) -> np.ndarray:
    """Hull ΔH_f (eV/atom) at each query composition, one face of the composition simplex at a time.

    The lower hull restricted to a face (a subsystem) is the hull of the points in that face, so
    a point without every element is a vertex only if it is a vertex of its own subsystem's
    hull, and a query in a face needs only that face's hull. The faces are built smallest first,
    each from its own points and the vertices of the faces below it, and each answers its own
    queries. Points on the walls are most of a large system's (on the senary Li-Fe-P-O-Mn-Co,
    about 157,000 of the 195,000 predicted below the known hull; some 1,200 are vertices) and
    make one qhull of all of them slow.
    """
    chemsys = tuple(chemsys)
    k = len(chemsys)
    fractions = np.asarray(fractions, dtype=np.float64).reshape(-1, k)
    energies = np.asarray(energies_ev_per_atom, dtype=np.float64).reshape(-1)
    query = np.asarray(query_fractions, dtype=np.float64).reshape(-1, k)
    bits = 1 << np.arange(k, dtype=np.int64)
    useful = np.flatnonzero(np.isfinite(energies) & (energies < -_FORMATION_TOL))
    support = (fractions[useful] > 0) @ bits
    query_support = (query > 0) @ bits
    energy = np.zeros(len(query))
    vertices: dict[int, np.ndarray] = {}
    faces = {int(m) for m in np.unique(support)} | {int(m) for m in np.unique(query_support)}
    for mask in sorted(faces, key=lambda m: (bin(m).count("1"), m)):
        below = [v for face, v in vertices.items() if face & ~mask == 0]
        points = np.unique(np.concatenate([useful[support == mask], *below])) if below else useful[support == mask]
        columns = np.flatnonzero((mask >> np.arange(k)) & 1)
        rows = np.flatnonzero(query_support == mask)
        if len(columns) < 2:  # an element: its own point if one lies below 0
            vertices[mask] = points
            energy[rows] = min(0.0, float(energies[points].min())) if len(points) else 0.0
            continue
        hull = build_hull(tuple(chemsys[j] for j in columns), fractions[np.ix_(points, columns)], energies[points])
        on_hull = np.unique(hull.facets)
        vertices[mask] = points[on_hull[on_hull >= len(columns)] - len(columns)]
        if len(rows):
            energy[rows] = hull.lower_hull_energy(query[np.ix_(rows, columns)])
    return energy


def _hull_energy_lp(fractions: np.ndarray, energies_ev_per_atom: np.ndarray, x: np.ndarray) -> tuple[float, list[tuple[int, float]]]:
    """Lowest ``Σ λ_i E_i`` with ``Σ λ_i x_i = x``, ``λ >= 0`` (HiGHS): hull ΔH_f and its phases."""
    from scipy.optimize import linprog

    result = linprog(energies_ev_per_atom, A_eq=fractions.T, b_eq=x, bounds=(0, None), method="highs")
    if result.status != 0:  # cannot happen with the elements among the points; keep one line
        raise RuntimeError(f"hull linear programme failed: {result.message}")
    weights = result.x
    parts = sorted(((i, float(w)) for i, w in enumerate(weights) if w > _WEIGHT_TOL), key=lambda p: -p[1])
    return float(result.fun), parts


def format_decomposition(parts: list[tuple[int, float]], names: Sequence[str]) -> str:
    """``0.500 Li2O + 0.500 FePO4`` (atom fractions) from :meth:`Hull.decomposition` output."""
    return " + ".join(f"{w:.3f} {names[i]}" for i, w in parts)


def format_decompositions(indices: np.ndarray, fractions: np.ndarray, names: Sequence[str]) -> list[str]:
    """:func:`format_decomposition` of every row of :meth:`Hull.decomposition_arrays` output.

    Built with NumPy string operations, one column of parts at a time: each fraction is rounded
    to thousandths by ``rint`` and looked up in a table of the 1,001 possible texts; a fraction
    within 1e-9 of a rounding tie is formatted by Python instead, so the text is always
    ``f"{w:.3f}"``'s.
    """
    from numpy.dtypes import StringDType

    indices = np.asarray(indices, dtype=np.int64)
    fractions = np.asarray(fractions, dtype=np.float64)
    if indices.size == 0:
        return [""] * len(indices)
    texts = np.array([f"{q / 1000:.3f}" for q in range(1001)], dtype=StringDType())
    labels = np.array(list(names) + [""], dtype=StringDType())  # index -1 reads the empty label
    scaled = fractions * 1000.0
    thousandths = np.rint(scaled).astype(np.int64)
    exact = (np.abs(scaled - np.floor(scaled) - 0.5) > 1e-9) & (thousandths >= 0) & (thousandths <= 1000)
    out = None
    for j in range(indices.shape[1]):
        present = indices[:, j] >= 0
        amount = texts[np.clip(thousandths[:, j], 0, 1000)]
        ties = np.flatnonzero(present & ~exact[:, j])
        if len(ties):
            amount[ties] = [f"{w:.3f}" for w in fractions[ties, j].tolist()]
        part = np.strings.add(np.strings.add(amount, " "), labels[indices[:, j]])
        if out is None:
            out = np.where(present, part, "").astype(StringDType())
        else:
            out = np.where(present, np.strings.add(np.strings.add(out, " + "), part), out)
    return out.tolist()


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


#: A compound is on the hull when its energy above it is at most this (1 meV/atom).
STABLE_TOLERANCE_EV_PER_ATOM = 1e-3


def e_above_hull(system: tuple[int, ...], points: np.ndarray, energies: np.ndarray, targets: np.ndarray,
                  target_energies: np.ndarray) -> np.ndarray:
    """Energy above the hull of ``points`` (fractions over DEFAULT_ELEMENTS, restricted to ``system``)."""
    columns = list(system)
    chemsys = tuple(DEFAULT_ELEMENTS[j] for j in columns)
    hull = hull_energies(chemsys, points[:, columns], energies, targets[:, columns])
    return target_energies - hull.energy_ev_per_atom
