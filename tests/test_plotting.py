"""``--plot``: readable binary, ternary and quaternary figures (labels apart, known vs predicted, legend, title)."""

from __future__ import annotations

import itertools

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from fh_screen.plotting import PlotError, draw_screen, plot_screen, projected_coordinates  # noqa: E402
from fh_screen.screening import screen  # noqa: E402
from fh_screen.store.bootstrap import packaged_reference_frame  # noqa: E402


@pytest.fixture(scope="module")
def predictor():
    from fh_screen.models.predictor import Predictor

    return Predictor.from_name("paper", threads=1)


def _result(system, predictor, max_atoms):
    from fh_screen.screening import ScreenOptions

    return screen(system, predictor=predictor, known=packaged_reference_frame(system), options=ScreenOptions(max_atoms=max_atoms))


def _boxes(figure, texts):
    renderer = figure.canvas.get_renderer()
    return [t.get_window_extent(renderer) for t in texts]


@pytest.mark.parametrize("system, max_atoms, top", [("Li-Fe-O", 12, 20), ("Li-Fe-P-O", 8, 30)])
def test_labels_do_not_overlap_and_known_and_predicted_are_told_apart(system, max_atoms, top, predictor, tmp_path):
    import matplotlib.pyplot as plt

    result = _result(system, predictor, max_atoms)
    figure = draw_screen(result, top=top)
    try:
        figure.canvas.draw()
        ax = figure.axes[0]
        labels = [t for t in ax.texts if t.get_text() and t.get_text() not in {str(e) for e in result.chemsys}]
        vertices = [t for t in ax.texts if t.get_text() in set(result.chemsys)]
        assert len(vertices) == len(result.chemsys) and len(labels) > 5
        boxes = _boxes(figure, labels)
        for a, b in itertools.combinations(boxes, 2):
            assert not a.overlaps(b) or min(a.x1, b.x1) - max(a.x0, b.x0) < 1 or min(a.y1, b.y1) - max(a.y0, b.y0) < 1
        colours = {matplotlib.colors.to_hex(t.get_color()) for t in labels}
        assert len(colours) == 2  # known and predicted labels differ in colour
        legend_texts = [t.get_text() for legend in figure.legends for t in legend.get_texts()]
        assert any("known" in t for t in legend_texts) and any("predicted" in t for t in legend_texts)
        title = figure._suptitle.get_window_extent(figure.canvas.get_renderer())
        assert not any(title.overlaps(b) for b in _boxes(figure, vertices))
    finally:
        plt.close(figure)
    png = plot_screen(result, tmp_path / "pd.png", top=top)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*tmp*"))


def test_projection_keeps_vertices_apart_and_refuses_other_sizes():
    corners = projected_coordinates(np.eye(4))
    distances = [np.linalg.norm(a - b) for a, b in itertools.combinations(corners, 2)]
    assert min(distances) > 0.5 * max(distances)
    assert np.allclose(projected_coordinates(np.eye(3))[1], [1, 0])
    with pytest.raises(PlotError, match="5 elements"):
        projected_coordinates(np.eye(5))


def test_a_binary_is_drawn_as_its_convex_hull_plot(predictor, tmp_path):
    """A binary is the convex-hull plot a chemist draws: ΔH_f against composition, the hull a line through
    the stable phases (the elements at 0), each point at its own ΔH_f, labels apart."""
    import matplotlib.pyplot as plt

    result = _result("Fe-O", predictor, 12)
    figure = draw_screen(result, top=10)
    try:
        figure.canvas.draw()
        ax = figure.axes[0]
        diagram = result.phase_diagram
        stable = {e.composition.reduced_formula: diagram.get_form_energy_per_atom(e) for e in diagram.stable_entries
                  if e.attribute != "predicted"}
        hull_line = max(ax.lines, key=lambda line: len(line.get_xdata()))
        xs, ys = np.asarray(hull_line.get_xdata()), np.asarray(hull_line.get_ydata())
        assert xs[0] == 0 and xs[-1] == 1 and ys[0] == ys[-1] == 0 and np.all(np.diff(xs) > 0)
        assert ys.min() == pytest.approx(min(stable.values()))  # Fe2O3 or Fe3O4, about -1.6 eV/atom
        assert np.all(np.diff(np.diff(ys) / np.diff(xs)) > -1e-9)  # convex: slopes never fall
        labels = [t for t in ax.texts if t.get_text()]
        assert len(labels) >= len(stable) - 2 + 1  # every known compound and the predictions
        boxes = _boxes(figure, labels)
        for a, b in itertools.combinations(boxes, 2):
            assert not a.overlaps(b) or min(a.x1, b.x1) - max(a.x0, b.x0) < 1 or min(a.y1, b.y1) - max(a.y0, b.y0) < 1
        assert "O" in ax.get_xlabel() and "eV/atom" in ax.get_ylabel()
        from fh_screen.plotting import KNOWN_STYLE

        # the title counts the known compounds drawn on the hull (each labelled), not the elements, and names their source
        n_compounds = sum(matplotlib.colors.to_hex(t.get_color()) == KNOWN_STYLE["color"] for t in labels)
        assert n_compounds >= 3  # FeO, Fe3O4, Fe2O3
        assert figure._suptitle.get_text().startswith(f"Fe-O: {n_compounds} known stable compounds (OQMD)")
        assert [t.get_text() for t in ax.get_xticklabels()][::4] == ["Fe", "O"]
    finally:
        plt.close(figure)
    assert plot_screen(result, tmp_path / "fe-o.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(PlotError, match="binary, ternary and quaternary"):
        draw_screen(_result("Li-Fe-P-O-Mn", predictor, 4))


def test_the_title_names_the_known_phases_source_and_counts_no_element(predictor):
    """Known phases of the user's own source are not credited to OQMD; the elements are not counted."""
    import matplotlib.pyplot as plt

    known = packaged_reference_frame("Li-Fe-O").assign(source="my-dft")
    from fh_screen.screening import ScreenOptions

    result = screen("Li-Fe-O", predictor=predictor, known=known, options=ScreenOptions(max_atoms=8))
    figure = draw_screen(result, top=5)
    try:
        title = figure._suptitle.get_text()
        legend_texts = [t.get_text() for legend in figure.legends for t in legend.get_texts()]
        from fh_screen.plotting import KNOWN_STYLE

        n_compounds = sum(matplotlib.colors.to_hex(t.get_color()) == KNOWN_STYLE["color"] for t in figure.axes[0].texts
                          if t.get_text() and t.get_text() not in {"Fe", "Li", "O"})
        assert n_compounds > 3
        assert title.startswith(f"Fe-Li-O: {n_compounds} known stable compounds (my-dft)") and "OQMD" not in title
        assert "known, on the hull (my-dft)" in legend_texts
    finally:
        plt.close(figure)
