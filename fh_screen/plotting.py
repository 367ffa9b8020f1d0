"""Phase-diagram figures of a screen: known OQMD phases and the best predicted new ones.

Binary systems are drawn as the convex-hull plot (ΔH_f against composition, the hull as a line),
ternary systems in a triangle, quaternary systems as a tetrahedron seen at a fixed oblique angle
(a 2D projection, so every label can be placed without overlap). Known stable
phases, predicted new phases (on or above the hull of known + predicted) and known phases above
the hull have their own colour and marker, explained in a legend. Labels are placed greedily
around their point at the first position that overlaps no other label, point or the title.
matplotlib (Agg) is imported inside :func:`plot_screen`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fh_screen.errors import FhScreenError
from fh_screen.io import save_figure

if TYPE_CHECKING:
    from fh_screen.screening import ScreenResult

__all__ = ["DRAWN_SIZES", "PlotError", "draw_screen", "plot_screen", "projected_coordinates"]

logger = logging.getLogger(__name__)

KNOWN_STYLE = {"color": "#1f4e9c", "marker": "o", "s": 70}
PREDICTED_STYLE = {"color": "#d2461e", "marker": "D", "s": 80}
UNSTABLE_STYLE = {"color": "#9a9a9a", "marker": ".", "s": 25}

# Tetrahedron corners (x, y, z) and the view used to project quaternary compositions.
_TETRAHEDRON = np.array([[1.0, 1.0, 1.0], [1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]])
_DPI = 110
_TRIANGLE = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(3) / 2]])


class PlotError(FhScreenError):
    """A system that cannot be drawn (not a binary, ternary or quaternary); one-line message."""

#: Systems :func:`draw_screen` draws, by number of elements.
DRAWN_SIZES = (2, 3, 4)


def _rotation(degrees_x: float, degrees_y: float) -> np.ndarray:
    ax, ay = np.radians(degrees_x), np.radians(degrees_y)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    return ry @ rx


def projected_coordinates(fractions: np.ndarray) -> np.ndarray:
    """2D drawing coordinates of compositions given as atom fractions over 3 or 4 elements.

    Parameters
    ----------
    fractions
        Shape ``(n, 3)`` or ``(n, 4)``, rows summing to 1.

    Returns
    -------
    numpy.ndarray
        Shape ``(n, 2)``: barycentric coordinates in a unit triangle (ternary) or in a tetrahedron
        rotated 12° about x and −10° about y and projected on the page (quaternary).
    """
    fractions = np.asarray(fractions, dtype=float)
    if fractions.shape[1] == 3:
        return fractions @ _TRIANGLE
    if fractions.shape[1] == 4:
        return (fractions @ _TETRAHEDRON @ _rotation(12, -10).T)[:, :2]
    raise PlotError(f"compositions over {fractions.shape[1]} elements cannot be drawn")


def _hidden_edge() -> tuple[int, int]:
    """The tetrahedron edge at the back in the quaternary view (drawn dashed)."""
    depth = (_TETRAHEDRON @ _rotation(12, -10).T)[:, 2]
    pairs = [(i, j) for i in range(4) for j in range(i + 1, 4)]
    return min(pairs, key=lambda ij: depth[ij[0]] + depth[ij[1]])


@dataclass
class _Point:
    formula: str
    fractions: np.ndarray
    kind: str  # "known", "predicted", "unstable"
    on_hull: bool
    label: bool
    dhf_ev_per_atom: float = 0.0


def _points(result: ScreenResult, top: int, show_unstable_ev_per_atom: float):
    """Points to draw and the hull (PhaseDiagram) of known + the top new candidates."""
    from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
    from pymatgen.core import Composition

    base = result.phase_diagram
    known = [e for e in base.all_entries if e.attribute != "predicted"]
    marked = []
    for row in result.table.itertuples(index=False):
        if len(marked) >= top:
            break
        if not row.is_known and len(Composition(row.formula).elements) > 1:
            composition = Composition(row.formula)
            marked.append(PDEntry(composition, row.dhf_pred_ev_per_atom * composition.num_atoms,
                                  name=row.formula, attribute="predicted"))
    diagram = PhaseDiagram(known + marked, elements=base.elements)
    elements = list(diagram.elements)
    stable = set(diagram.stable_entries)
    points: list[_Point] = []
    seen: set[str] = set()
    for entry in sorted(diagram.all_entries, key=lambda e: diagram.get_e_above_hull(e)):
        formula = entry.composition.reduced_formula
        if formula in seen:
            continue
        seen.add(formula)
        fractions = np.array([entry.composition.get_atomic_fraction(el) for el in elements])
        predicted = entry.attribute == "predicted"
        on_hull = entry in stable
        dhf = float(diagram.get_form_energy_per_atom(entry))
        if predicted:
            points.append(_Point(formula, fractions, "predicted", on_hull, True, dhf))
        elif on_hull:
            points.append(_Point(formula, fractions, "known", True, len(entry.composition.elements) > 1, dhf))
        elif diagram.get_e_above_hull(entry) <= show_unstable_ev_per_atom:
            points.append(_Point(formula, fractions, "unstable", False, False, dhf))
    return diagram, elements, points


def _hull_edges(diagram, elements) -> list[tuple[np.ndarray, np.ndarray]]:
    """Edges of the lower hull's facets, as pairs of atom-fraction vectors."""
    edges = set()
    for facet in diagram.facets:
        for i in range(len(facet)):
            for j in range(i + 1, len(facet)):
                edges.add(tuple(sorted((facet[i], facet[j]))))
    out = []
    for i, j in edges:
        a, b = diagram.qhull_entries[i], diagram.qhull_entries[j]
        out.append((
            np.array([a.composition.get_atomic_fraction(el) for el in elements]),
            np.array([b.composition.get_atomic_fraction(el) for el in elements]),
        ))
    return out


def _overlaps(box, boxes) -> float:
    total = 0.0
    for other in boxes:
        dx = min(box.x1, other.x1) - max(box.x0, other.x0)
        dy = min(box.y1, other.y1) - max(box.y0, other.y0)
        if dx > 0 and dy > 0:
            total += dx * dy
    return total


def _segment_points(start: np.ndarray, end: np.ndarray, step: float = 5.0) -> np.ndarray:
    n = max(int(np.hypot(*(end - start)) / step), 1)
    return start + np.linspace(0, 1, n + 1)[:, None] * (end - start)


def _hits(points: np.ndarray, boxes) -> int:
    return sum(1 for x, y in points for b in boxes if b.x0 <= x <= b.x1 and b.y0 <= y <= b.y1)


def _place_labels(ax, figure, items: list[tuple[str, np.ndarray, str]], points_xy: np.ndarray, blocked: list) -> None:
    """Place each (text, xy, colour) label at the free spot nearest its point.

    A spot is scored by how much the label's box overlaps labels already placed, markers and the
    leader lines drawn so far, and whether its own leader line would cross a label; the axes must
    contain it. Labels further than a few points from their marker get a thin leader line.
    """
    from matplotlib.transforms import Bbox

    renderer = figure.canvas.get_renderer()
    to_display = ax.transData.transform
    marker_boxes = [Bbox.from_extents(x - 7, y - 7, x + 7, y + 7) for x, y in to_display(points_xy)]
    placed = list(blocked)
    leader_samples: list[np.ndarray] = []
    axes_box = ax.get_window_extent(renderer)
    scale = figure.dpi / 72.0
    angles = np.radians([0, 180, 90, 270, 45, 135, 225, 315, 22, 158, 202, 338, 67, 113, 247, 293])
    for text, xy, colour in items:
        anchor = to_display(np.asarray(xy)[None, :])[0]
        label = ax.annotate(text, xy=xy, xytext=(0, 0), textcoords="offset points", fontsize=8.5, color=colour,
                            ha="center", va="center", zorder=6)
        best, best_cost = None, None
        for radius in (11, 16, 22, 30, 40, 52, 66, 82):
            for angle in angles:
                offset = (radius * np.cos(angle), radius * np.sin(angle) * 0.8)
                label.set_position(offset)
                box = label.get_window_extent(renderer).expanded(1.08, 1.15)
                cost = _overlaps(box, placed) + _overlaps(box, marker_boxes)
                if leader_samples:
                    cost += 40.0 * _hits(np.vstack(leader_samples), [box])
                if radius > _LEADER_MIN:
                    centre = anchor + np.array(offset) * scale
                    cost += 40.0 * _hits(_segment_points(anchor, centre)[2:-2], placed)
                if not axes_box.contains(box.x0, box.y0) or not axes_box.contains(box.x1, box.y1):
                    cost += 1e6
                cost += radius * 0.02
                if best_cost is None or cost < best_cost:
                    best, best_cost = (offset, box), cost
            if best_cost is not None and best_cost < 2:
                break
        offset, box = best
        label.set_position(offset)
        if np.hypot(*offset) > _LEADER_MIN:
            ax.annotate("", xy=xy, xytext=offset, textcoords="offset points", zorder=5,
                        arrowprops={"arrowstyle": "-", "color": colour, "lw": 0.6, "alpha": 0.7, "shrinkA": 6, "shrinkB": 3})
            leader_samples.append(_segment_points(anchor, anchor + np.array(offset) * scale)[1:-1])
        placed.append(box)


_LEADER_MIN = 24.0


def plot_screen(result: ScreenResult, path: str | Path, *, top: int = 10, show_unstable_ev_per_atom: float = 0.1) -> Path:
    """Draw the screen's phase diagram (binary, ternary or quaternary) to a PNG file.

    Parameters
    ----------
    result
        A screen of a binary, ternary or quaternary system.
    path
        The ``.png`` to write (atomically: a temporary file is renamed).
    top
        Number of the best-ranked new compositions to draw, labelled.
    show_unstable_ev_per_atom
        Known phases up to this far above the hull are drawn as small grey points (unlabelled).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    import matplotlib.pyplot as plt

    figure = draw_screen(result, top=top, show_unstable_ev_per_atom=show_unstable_ev_per_atom)
    path = Path(path)
    try:
        save_figure(figure, path, dpi=_DPI)
    finally:
        plt.close(figure)
    logger.info("wrote %s", path)
    return path


def draw_screen(result: ScreenResult, *, top: int = 10, show_unstable_ev_per_atom: float = 0.1):
    """The figure :func:`plot_screen` saves (matplotlib, Agg backend).

    Parameters
    ----------
    result
        A screen of a binary, ternary or quaternary system.
    top
        Number of the best-ranked new compositions to draw, labelled.
    show_unstable_ev_per_atom
        Known phases up to this far above the hull are drawn as small grey points.

    Returns
    -------
    matplotlib.figure.Figure
        The figure; close it with ``matplotlib.pyplot.close`` when done.

    Raises
    ------
    PlotError
        For a system that is not a binary, a ternary or a quaternary.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from pymatgen.util.string import latexify

    system = "-".join(result.chemsys)
    if len(result.chemsys) not in DRAWN_SIZES:
        raise PlotError(f"phase diagrams are drawn for binary, ternary and quaternary systems, not {system}")
    diagram, elements, points = _points(result, max(int(top), 0), show_unstable_ev_per_atom)
    if len(elements) == 2:
        figure, ax = plt.subplots(figsize=(9, 7), dpi=_DPI)
        figure.subplots_adjust(left=0.11, right=0.97, bottom=0.20, top=0.87)
        xy = _draw_binary(ax, diagram, elements, points)
        figure.canvas.draw()
        blocked: list = []
    else:
        figure, ax, xy, blocked = _draw_simplex(plt, diagram, elements, points)
    colours = {"known": KNOWN_STYLE["color"], "predicted": PREDICTED_STYLE["color"]}
    order = sorted((i for i, p in enumerate(points) if p.label), key=lambda i: points[i].kind != "predicted")
    _place_labels(ax, figure, [(latexify(points[i].formula), xy[i], colours[points[i].kind]) for i in order], xy, blocked)

    n_predicted = sum(p.kind == "predicted" for p in points)
    n_known = sum(p.kind == "known" and p.fractions.max() < 1 for p in points)  # compounds: not the elements
    sources = _sources_text(result.known_sources())
    figure.suptitle(
        f"{system}: {n_known} known stable compound{'s' if n_known != 1 else ''}{sources} and the {n_predicted} "
        f"best-ranked new compositions\nmodel {result.model_name}; hull of the known phases and these predictions",
        fontsize=12.5, y=0.975,
    )
    handles = [
        Line2D([], [], ls="", marker=KNOWN_STYLE["marker"], color=KNOWN_STYLE["color"], ms=8,
               label=f"known, on the hull{sources}"),
        Line2D([], [], ls="", marker=PREDICTED_STYLE["marker"], color=PREDICTED_STYLE["color"], ms=8,
               label="predicted new, on the hull"),
        Line2D([], [], ls="", marker=PREDICTED_STYLE["marker"], mfc="white", mec=PREDICTED_STYLE["color"], mew=1.5, ms=8,
               label="predicted new, above the hull"),
        Line2D([], [], ls="", marker="o", color=UNSTABLE_STYLE["color"], ms=4,
               label=f"known, ≤ {show_unstable_ev_per_atom:g} eV/atom above the hull"),
        Line2D([], [], color="#b0b0b0" if len(elements) > 2 else "black", lw=1,
               label="hull tie-lines" if len(elements) > 2 else "hull"),
    ]
    figure.legend(handles=handles, loc="lower center", ncol=3, frameon=False, fontsize=9.5, bbox_to_anchor=(0.5, 0.01))
    return figure


def _sources_text(sources: list[str]) -> str:
    """`` (OQMD)``, `` (OQMD, chgnet)`` for a title and a legend: the sources the hull's known values came
    from (the shipped table named OQMD), empty when the known phases name none."""
    names = ["OQMD" if name == "oqmd" else name for name in sources]
    return f" ({', '.join(names)})" if names else ""


def _scatter_points(ax, xy: np.ndarray, points: list[_Point]) -> None:
    """Markers of every point: filled on the hull, hollow for a prediction above it."""
    for kind, style in (("unstable", UNSTABLE_STYLE), ("known", KNOWN_STYLE), ("predicted", PREDICTED_STYLE)):
        chosen = [i for i, p in enumerate(points) if p.kind == kind]
        if not chosen:
            continue
        filled = [i for i in chosen if kind != "predicted" or points[i].on_hull]
        hollow = [i for i in chosen if i not in filled]
        ax.scatter(xy[filled, 0], xy[filled, 1], c=style["color"], marker=style["marker"], s=style["s"],
                   edgecolors="white", linewidths=0.6, zorder=4)
        if hollow:
            ax.scatter(xy[hollow, 0], xy[hollow, 1], facecolors="white", edgecolors=style["color"],
                       marker=style["marker"], s=style["s"], linewidths=1.5, zorder=4)


def _draw_binary(ax, diagram, elements, points: list[_Point]) -> np.ndarray:
    """The convex-hull plot of a binary: ΔH_f (eV/atom) against the second element's atom fraction,
    the hull of the known phases and the drawn predictions as a line; returns the points' xy."""
    xy = np.array([[p.fractions[1], p.dhf_ev_per_atom] for p in points]) if points else np.zeros((0, 2))
    stable = sorted(diagram.stable_entries, key=lambda e: e.composition.get_atomic_fraction(elements[1]))
    hull = np.array([[e.composition.get_atomic_fraction(elements[1]), diagram.get_form_energy_per_atom(e)] for e in stable])
    ax.plot(hull[:, 0], hull[:, 1], color="black", lw=1.2, zorder=2)
    ax.axhline(0.0, color="#b0b0b0", lw=0.7, zorder=1)
    _scatter_points(ax, xy, points)
    low = float(min(hull[:, 1].min(), xy[:, 1].min() if len(xy) else 0.0))
    high = float(max(0.0, xy[:, 1].max() if len(xy) else 0.0))
    pad = 0.15 * max(high - low, 0.1)
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(low - pad, high + pad)
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1], [str(elements[0]), "0.25", "0.5", "0.75", str(elements[1])])
    ax.set_xlabel(f"atom fraction of {elements[1]} (the rest {elements[0]})", fontsize=11)
    ax.set_ylabel(r"$\Delta H_\mathrm{f}$ (eV/atom)", fontsize=11)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return xy


def _draw_simplex(plt, diagram, elements, points: list[_Point]):
    """The triangle (ternary) or tetrahedron (quaternary) with its tie-lines and points: the figure,
    its axes, the points' xy and the label boxes already taken (the element names)."""
    quaternary = len(elements) == 4
    figure, ax = plt.subplots(figsize=(10, 9) if quaternary else (9, 8), dpi=_DPI)
    figure.subplots_adjust(left=0.03, right=0.97, bottom=0.10, top=0.87)
    ax.set_aspect("equal")
    ax.axis("off")

    corners = projected_coordinates(np.eye(len(elements)))
    hidden = _hidden_edge() if quaternary else None
    for i in range(len(elements)):
        for j in range(i + 1, len(elements)):
            ax.plot(*corners[[i, j]].T, color="black", lw=1.2, zorder=1, ls="--" if (i, j) == hidden else "-")
    for a, b in _hull_edges(diagram, elements):
        ax.plot(*projected_coordinates(np.array([a, b])).T, color="#b0b0b0", lw=0.5 if quaternary else 0.7,
                alpha=0.6 if quaternary else 1.0, zorder=2)

    xy = projected_coordinates(np.array([p.fractions for p in points])) if points else np.zeros((0, 2))
    _scatter_points(ax, xy, points)

    # Element names just outside their corner, away from the centre.
    centre = corners.mean(axis=0)
    span = np.ptp(corners, axis=0).max()
    for corner, element in zip(corners, elements):
        direction = (corner - centre) / np.linalg.norm(corner - centre)
        ax.text(*(corner + direction * 0.045 * span), str(element), fontsize=15, fontweight="bold",
                ha="center", va="center", zorder=6)
    pad = 0.12 * span
    ax.set_xlim(corners[:, 0].min() - pad, corners[:, 0].max() + pad)
    ax.set_ylim(corners[:, 1].min() - pad, corners[:, 1].max() + pad)

    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    blocked = [t.get_window_extent(renderer).expanded(1.2, 1.3) for t in ax.texts]
    return figure, ax, xy, blocked
