"""The screen's table-building stages: row-by-row reference paths beside the vectorised ones.

    python benchmarks/bench_screen_stages.py      # writes results/screen_stages.json, prints it

Each pair runs side by side in one process on the same inputs (the quinary Li-Fe-P-O-Mn, every
candidate up to 20 atoms, against the shipped OQMD reference phases) and the outputs are checked
equal before timing. Then the whole warm ``screen()`` with the default model (the cascade).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from timing import alternating_median_seconds, median_seconds  # noqa: E402

CHEMSYS = "Li-Fe-P-O-Mn"


def stage_pairs(repeats: int = 5, threads: int = 2) -> list[dict]:
    """Median seconds of each reference/vectorised pair and their ratio."""
    import torch

    from fh_screen.screening import probability as ranking
    from fh_screen.chem.candidates import _formula_plan, enumerate_counts, formula_from_count_row, formulas_from_counts, parse_chemsys
    from fh_screen.chem.oxidation import charge_neutral_mask
    from fh_screen.chem.hull import build_hull, format_decomposition, format_decompositions
    from fh_screen.screening.core import _unique_rows
    from fh_screen.screening import known_counts
    from fh_screen.store.bootstrap import packaged_reference_frame

    torch.set_num_threads(threads)
    system = parse_chemsys(CHEMSYS)
    known_rows, known_dhf = known_counts(packaged_reference_frame(CHEMSYS), system)
    counts = enumerate_counts(len(system), 20).astype(np.int64)
    fractions = counts / counts.sum(axis=1, keepdims=True)
    hull = build_hull(system, known_rows / known_rows.sum(axis=1, keepdims=True), known_dhf)
    _, facet = hull.hull_energy(fractions)
    names = list(system) + formulas_from_counts(known_rows, system)

    def decomposition_reference():
        return [format_decomposition(parts, names) for parts in hull.decomposition(fractions, facet)]

    def decomposition_fast():
        return format_decompositions(*hull.decomposition_arrays(fractions, facet), names)

    order, x, special = _formula_plan(system)
    symbols, xs = [system[j] for j in order], [x[j] for j in order]

    def formulas_reference():
        formulas = (formula_from_count_row(row, symbols, xs) for row in counts[:, list(order)].tolist())
        return [special.get(f, f) for f in formulas]

    neutral = charge_neutral_mask(counts, system)
    table, patterns = ranking._load_prior(str(ranking.PRIOR_PATH), float(ranking.PATTERN_WEIGHT))
    shape = table[np.minimum((counts > 0).sum(axis=1), table.shape[0] - 1), np.minimum(counts.sum(axis=1), table.shape[1] - 1), neutral.astype(int)]

    def prior_reference():
        return ranking._pattern_lookup_by_row(ranking.pattern_rows(counts, system), neutral, shape, patterns)

    both = np.concatenate([counts, known_rows])
    pairs = [
        ("hull decomposition + its text, every candidate", decomposition_reference, decomposition_fast),
        ("reduced formulas (pymatgen's rules)", formulas_reference, lambda: formulas_from_counts(counts, system)),
        ("stability prior lookup", prior_reference, lambda: ranking.log_prior(counts, neutral, system)),
        ("unique candidate rows (+ known phases)", lambda: np.unique(both, axis=0), lambda: _unique_rows(both)),
    ]
    rows = []
    for label, reference, fast in pairs:
        a, b = reference(), fast()
        same = np.array_equal(a, b) if isinstance(a, np.ndarray) else a == list(b)
        if not same:
            raise AssertionError(f"{label}: the vectorised path differs from the reference")
        t_ref, t_fast = median_seconds(reference, repeats), median_seconds(fast, repeats)
        rows.append({"stage": label, "n": len(counts), "reference_s": t_ref, "vectorised_s": t_fast, "ratio": t_ref / t_fast})
    return rows


SYSTEMS = ("Li-Fe-P-O", "Li-Fe-P-O-Mn", "Li-Fe-P-O-Mn-Co")


def blas_threads_pair(repeats: int = 7, threads: int = 2, chemsys: str = "Li-Fe-P-O") -> dict:
    """Warm ``screen()`` (numpy's BLAS on one thread) beside its body with numpy's default BLAS
    threads, alternating, same inputs; the two tables are checked equal first."""
    import torch
    from threadpoolctl import threadpool_info

    from fh_screen.models.predictor import Predictor
    from fh_screen.screening import ScreenOptions, screen
    from fh_screen.screening.core import _screen
    from fh_screen.store.bootstrap import packaged_reference_frame

    torch.set_num_threads(threads)
    predictor = Predictor.from_name()
    known = packaged_reference_frame(chemsys)
    options = ScreenOptions()

    def limited():
        return screen(chemsys, predictor=predictor, known=known, options=options)

    def default_blas():
        return _screen(chemsys, predictor=predictor, known=known, options=options, progress=None)

    a, b = limited().table, default_blas().table
    if not (a["formula"].equals(b["formula"]) and np.allclose(a["dhf_ev_per_atom"], b["dhf_ev_per_atom"], atol=1e-9)):
        raise AssertionError("the BLAS thread limit changed the screen's table")
    medians = alternating_median_seconds({"default": default_blas, "limited": limited}, repeats)
    blas = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
    t_default, t_limited = medians["default"], medians["limited"]
    return {"chemsys": chemsys, "numpy_blas_threads": blas, "default_s": t_default, "limited_s": t_limited,
            "ratio": t_default / t_limited}


def head_pairs(repeats: int = 5, threads: int = 2, systems: tuple[str, ...] = SYSTEMS[:2]) -> list[dict]:
    """Warm ``screen()`` with the default cascade (the prefilter's best and the P(stable) head
    refined) beside the cascade as it was before 2026-12-07 (the prefilter's best alone, one
    classifier), alternating, same inputs and process."""
    import torch

    from fh_screen.models.predictor import Predictor
    from fh_screen.screening import ScreenOptions, core, screen
    from fh_screen.store.bootstrap import packaged_reference_frame

    torch.set_num_threads(threads)
    predictor = Predictor.from_name()
    options = ScreenOptions()
    out = []
    for chemsys in systems:
        known = packaged_reference_frame(chemsys)

        def default():
            return screen(chemsys, predictor=predictor, known=known, options=options)

        def prefilter_best_only():
            passes, head = core.MAX_HEAD_PASSES, core.STABILITY_HEAD_MODEL_PATH
            core.MAX_HEAD_PASSES, core.STABILITY_HEAD_MODEL_PATH = 0, HERE / "no-head-classifier.json"
            try:
                return screen(chemsys, predictor=predictor, known=known, options=options)
            finally:
                core.MAX_HEAD_PASSES, core.STABILITY_HEAD_MODEL_PATH = passes, head

        n_refined = {"default": int(default().table["refined"].sum()),
                     "prefilter_best_only": int(prefilter_best_only().table["refined"].sum())}
        medians = alternating_median_seconds({"prefilter_best_only": prefilter_best_only, "default": default}, repeats)
        t_new, t_old = medians["default"], medians["prefilter_best_only"]
        out.append({"chemsys": chemsys, "default_s": t_new, "prefilter_best_only_s": t_old, "ratio": t_new / t_old,
                    "refined_rows": n_refined})
    return out


def predicted_hull_pairs(repeats: int = 3, threads: int = 2, systems: tuple[str, ...] = SYSTEMS[1:]) -> list[dict]:
    """The hull of the predictions (P(stable)'s ``e_above_predicted_hull`` feature): one qhull of
    every point beside the hull built face by face (``face_by_face_hull_energies``, what
    ``lower_hull_energies`` does beyond ``FACE_BY_FACE_MIN_POINTS``), alternating, on the points
    the screen gives it: the known phases and every candidate the fast ``paper`` network puts
    below their hull; queried at every candidate. The energies are checked equal (1e-12) first."""
    import torch

    from fh_screen.chem.candidates import enumerate_counts, parse_chemsys
    from fh_screen.chem.hull import build_hull, face_by_face_hull_energies, hull_energies
    from fh_screen.models.predictor import Predictor
    from fh_screen.screening import known_counts
    from fh_screen.store.bootstrap import packaged_reference_frame

    torch.set_num_threads(threads)
    predictor = Predictor.from_name("paper")
    out = []
    for chemsys in systems:
        system = parse_chemsys(chemsys)
        counts = enumerate_counts(len(system), 20)
        fractions = counts / counts.sum(axis=1, keepdims=True)
        known_rows, known_dhf = known_counts(packaged_reference_frame(chemsys), system)
        known_fractions = known_rows / known_rows.sum(axis=1, keepdims=True)
        dhf = predictor.predict_counts(counts, system).dhf_ev_per_atom.astype(np.float64)
        below = dhf < hull_energies(system, known_fractions, known_dhf, fractions).energy_ev_per_atom
        points = np.concatenate([known_fractions, fractions[below]])
        energies = np.concatenate([known_dhf, dhf[below]])

        def one_qhull():
            return build_hull(system, points, energies).lower_hull_energy(fractions)

        def face_by_face():
            return face_by_face_hull_energies(system, points, energies, fractions)

        if not np.allclose(one_qhull(), face_by_face(), rtol=0, atol=1e-12):
            raise AssertionError(f"{chemsys}: the hull built face by face differs from one qhull")
        medians = alternating_median_seconds({"one_qhull": one_qhull, "face_by_face": face_by_face}, repeats)
        out.append({"chemsys": chemsys, "candidates": len(counts), "points": len(points),
                    "one_qhull_s": medians["one_qhull"], "face_by_face_s": medians["face_by_face"],
                    "ratio": medians["one_qhull"] / medians["face_by_face"]})
    return out


def tree_masks_pair(repeats: int = 7, chemsys: str = "Li-Fe-P-O-Mn") -> dict:
    """The P(stable) classifier over every row of a warm screen's features: the trees walked node
    by node (``TreeEnsemble.walk_raw_score``, shipped at a7421ac) beside the leaf masks
    (``raw_score``, shipped), both 500 rows at a time, alternating; the scores are checked equal
    bit for bit first."""
    from fh_screen.models.predictor import Predictor
    from fh_screen.screening import screen
    from fh_screen.screening.stability import TreeEnsemble, load_stability_model
    from fh_screen.store.bootstrap import packaged_reference_frame

    features = screen(chemsys, predictor=Predictor.from_name(), known=packaged_reference_frame(chemsys)).features
    trees = load_stability_model().trees

    def walk():
        return trees.walk_raw_score(features)

    def masks():
        return trees.raw_score(features)

    if not np.array_equal(walk(), masks()):
        raise AssertionError("the leaf masks' scores differ from the walk's")
    medians = alternating_median_seconds({"walk": walk, "masks": masks}, repeats)
    return {"chemsys": chemsys, "rows": len(features), "chunk_rows": TreeEnsemble.CHUNK_ROWS, "walk_s": medians["walk"],
            "masks_s": medians["masks"], "ratio": medians["walk"] / medians["masks"]}


def pass_work_pairs(repeats: int = 9, threads: int = 2, systems: tuple[str, ...] = SYSTEMS[:1]) -> list[dict]:
    """Warm ``screen()`` with the default as shipped beside the same screen as it ran at a7421ac
    (2026-12-07: every classifier pass walks the trees node by node, every head pass recomputes
    the features that depend on the known phases alone), alternating, same inputs and process;
    the two tables (and feature matrices) are checked equal first."""
    import pandas as pd
    import torch

    from fh_screen.models.predictor import Predictor
    from fh_screen.screening import ScreenOptions, core, screen
    from fh_screen.screening.stability import TreeEnsemble
    from fh_screen.store.bootstrap import packaged_reference_frame

    torch.set_num_threads(threads)
    predictor = Predictor.from_name()
    options = ScreenOptions()
    out = []
    for chemsys in systems:
        known = packaged_reference_frame(chemsys)

        def shipped():
            return screen(chemsys, predictor=predictor, known=known, options=options)

        def before():
            masked, shared = TreeEnsemble.raw_score, core.known_set_features
            TreeEnsemble.raw_score = TreeEnsemble.walk_raw_score
            core.known_set_features = lambda counts, known_rows: None  # candidate_features computes them on every pass
            try:
                return screen(chemsys, predictor=predictor, known=known, options=options)
            finally:
                TreeEnsemble.raw_score, core.known_set_features = masked, shared

        a, b = shipped(), before()
        pd.testing.assert_frame_equal(a.table, b.table, check_exact=True)
        if not np.array_equal(a.features, b.features, equal_nan=True):
            raise AssertionError(f"{chemsys}: the shipped screen's features differ from the screen before")
        medians = alternating_median_seconds({"before": before, "shipped": shipped}, repeats)
        out.append({"chemsys": chemsys, "n_candidates": a.n_candidates, "before_s": medians["before"],
                    "shipped_s": medians["shipped"], "ratio": medians["before"] / medians["shipped"]})
    return out


def warm_screens(repeats: int = 5, threads: int = 2, systems: tuple[str, ...] = SYSTEMS, options=None) -> list[dict]:
    """Warm ``screen()`` wall time and candidates/s with the shipped default (by default the cascade)."""
    import torch

    from fh_screen.models.predictor import Predictor
    from fh_screen.screening import ScreenOptions, screen
    from fh_screen.store.bootstrap import packaged_reference_frame

    torch.set_num_threads(threads)
    options = options or ScreenOptions()
    predictor = Predictor.from_name()
    out = []
    for chemsys in systems:
        known = packaged_reference_frame(chemsys)
        result = screen(chemsys, predictor=predictor, known=known, options=options)  # warm up (and the candidate count)
        seconds = median_seconds(lambda: screen(chemsys, predictor=predictor, known=known, options=options), repeats)
        out.append({"chemsys": chemsys, "n_candidates": result.n_candidates, "seconds": seconds,
                    "per_s": result.n_candidates / seconds, "model": f"{predictor.name}@{predictor.version}"})
    return out


def main_with(repeats: int = 5) -> dict:
    """Measure, write ``results/screen_stages.json`` and return it (also called by ``run_all.py``)."""
    from fh_screen.screening.probability import DEFAULT_PREFILTER_MODEL, DEFAULT_REFINE_TOP

    load_before = "/".join(f"{v:.2f}" for v in os.getloadavg())
    pairs = stage_pairs(repeats)
    screens = warm_screens(repeats)
    blas = blas_threads_pair(max(repeats, 7))
    heads = head_pairs(repeats)
    hulls = predicted_hull_pairs(max(2, repeats // 2))
    trees = tree_masks_pair(max(repeats, 7))
    passes = pass_work_pairs(max(repeats, 9))
    rows = [{"what": f"{p['stage']} ({p['n']:,} rows): reference {p['reference_s']:.3f} s, vectorised {p['vectorised_s']:.3f} s",
             "value": round(p["ratio"], 1), "unit": "× faster (median)"} for p in pairs]
    rows.append({"what": f"warm `screen()` {blas['chemsys']}: numpy's BLAS at its default "
                         f"{max(blas['numpy_blas_threads'] or [1])} threads {blas['default_s']:.3f} s, on one thread (shipped) "
                         f"{blas['limited_s']:.3f} s", "value": round(blas["ratio"], 2), "unit": "× faster (median)"})
    rows += [{"what": f"warm `screen()` {s['chemsys']} ({s['n_candidates']:,} candidates, {s['model']}, cascade): {s['seconds']:.2f} s",
              "value": round(s["per_s"]), "unit": "candidates/s (median)"} for s in screens]
    rows += [{"what": f"warm `screen()` {h['chemsys']}: the P(stable) head refined too (default, "
                      f"{h['refined_rows']['default']:,} rows refined) {h['default_s']:.2f} s, the prefilter's best alone "
                      f"(before 2026-12-07, {h['refined_rows']['prefilter_best_only']:,} rows) {h['prefilter_best_only_s']:.2f} s",
              "value": round(h["ratio"], 2), "unit": "× the time (median)"} for h in heads]
    rows += [{"what": f"the predictions' hull {h['chemsys']} ({h['points']:,} points, queried at {h['candidates']:,} "
                      f"candidates): one qhull {h['one_qhull_s']:.2f} s, face by face {h['face_by_face_s']:.2f} s",
              "value": round(h["ratio"], 1), "unit": "× faster (median)"} for h in hulls]
    rows.append({"what": f"P(stable)'s trees over {trees['rows']:,} rows ({trees['chemsys']}, {trees['chunk_rows']} rows at a time): "
                         f"walked node by node {trees['walk_s']:.3f} s, by leaf masks (shipped) {trees['masks_s']:.3f} s",
                 "value": round(trees["ratio"], 1), "unit": "× faster (median)"})
    rows += [{"what": f"warm `screen()` {w['chemsys']} ({w['n_candidates']:,} candidates, default): trees walked and the "
                      f"known-phase features recomputed on every pass (at a7421ac, 2026-12-07) {w['before_s']:.3f} s, "
                      f"leaf masks and those features once (shipped) {w['shipped_s']:.3f} s",
              "value": round(w["ratio"], 2), "unit": "× faster (median)"} for w in passes]
    payload = {
        "title": f"Screen stages: reference beside vectorised paths ({CHEMSYS}), and warm screens with the default",
        "command": "python benchmarks/bench_screen_stages.py",
        "measured": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "rows": rows,
        "notes": ("Each pair ran side by side in one process on the same inputs, and the outputs were checked equal before timing "
                  "(the tests check the same equalities). Warm screens use the shipped reference phases and the default cascade: "
                  f"{DEFAULT_PREFILTER_MODEL} ranks every candidate, the attention ensemble predicts the known phases, the best "
                  f"{DEFAULT_REFINE_TOP:,} new ones by the prefilter's score and the best {DEFAULT_REFINE_TOP:,} by P(stable) "
                  "with every selected row (the 'before' of the head rows: the same code with no head passes and one "
                  "classifier; the 'before' of the pass-work row: the same code with the trees walked node by node and the "
                  "known-phase features recomputed on every pass, as at a7421ac). "
                  f"Load average before: {load_before}, after: " + "/".join(f"{v:.2f}" for v in os.getloadavg()) + "."),
        "pairs": pairs, "screens": screens, "blas_threads": blas, "head_pairs": heads,
        "predicted_hull_pairs": hulls, "tree_masks_pair": trees,
        "pass_work_pairs": passes,
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "screen_stages.json").write_text(json.dumps(payload, indent=1) + "\n")
    return payload


if __name__ == "__main__":
    print(json.dumps(main_with(), indent=1))
