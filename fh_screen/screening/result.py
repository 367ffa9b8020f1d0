"""The result of a screen: the ranked table, its columns and the hull behind it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from fh_screen.chem.hull import pymatgen_phase_diagram

__all__ = ["RESULT_COLUMNS", "ScreenResult", "plain_value"]

#: The ranked table's core columns (``--json``/``--csv`` write exactly these). After them come
#: ``dhf_std_ev_per_atom`` and ``p_stable`` (ensembles), ``is_known``, ``dhf_ev_per_atom`` (the
#: value on the hull: DFT when known, else the prediction), ``charge_balanced``,
#: ``stability_score`` (the ranking key, higher is better) and ``selected``.
RESULT_COLUMNS = [
    "rank",
    "formula",
    "dhf_pred_ev_per_atom",
    "e_above_hull_pred_ev_per_atom",
    "known_dhf_ev_per_atom",
    "decomposition",
]


@dataclass
class ScreenResult:
    """A ranked screen of one system (see :data:`RESULT_COLUMNS`) and the hull behind it."""

    chemsys: tuple[str, ...]
    table: pd.DataFrame
    phase_diagram_inputs: tuple = field(repr=False)
    n_candidates: int
    model_name: str
    model_version: str
    weights_sha256: str
    run_id: str
    n_known: int = 0
    warnings: list[str] = field(default_factory=list)
    #: ``name@version`` of the fast model that ranked the candidates not ``refined`` (None: none)
    prefilter: str | None = None
    #: the per-row features behind ``p_stable`` (:data:`fh_screen.screening.stability.FEATURE_NAMES`), in table order
    features: np.ndarray | None = field(default=None, repr=False)
    #: ``name@version`` of the classifier that gave ``p_stable`` (None: the σ-only fallback)
    stability_model: str | None = None
    #: ``name@version`` of the classifier that picked the head of the P(stable) order the screen's model
    #: refined under the cascade (None: no cascade, so no head was picked)
    stability_head_model: str | None = None
    #: the sources of the known values the hull stood on (each known composition's lowest entry's),
    #: sorted; None when the known table names no sources (the table's ``known_source`` is then absent)
    hull_sources: list[str] | None = None

    @property
    def expected_new_stable(self) -> float:
        """Σ p_stable over the new candidates: the expected number of new stable compounds."""
        table = self.table
        if "p_stable" not in table or len(table) == 0:
            return 0.0
        return float(np.nansum(table["p_stable"].to_numpy(np.float64)[~table["is_known"].to_numpy(bool)]))

    @cached_property
    def phase_diagram(self):
        """pymatgen ``PhaseDiagram`` of the elements, the known phases and the predicted stable ones.

        Built on first access (importing pymatgen's phase-diagram module costs about a second,
        which a screen that only prints a table does not pay).
        """
        return pymatgen_phase_diagram(self.chemsys, *self.phase_diagram_inputs)

    def known_sources(self) -> list[str]:
        """The sources of the known values the hull stood on, sorted (:attr:`hull_sources`; none for known
        phases without a source). Without it, those of the table's known rows (``known_source``)."""
        if self.hull_sources is not None:
            return list(self.hull_sources)
        return sorted({str(s) for s in self.table.get("known_source", []) if isinstance(s, str)})

    def row_models(self) -> np.ndarray:
        """``name@version`` of the model that predicted each row's ΔH_f and σ: the screen's model on
        ``refined`` rows, the cascade's prefilter on the others."""
        own = f"{self.model_name}@{self.model_version}"
        if self.prefilter and "refined" in self.table.columns:
            return np.where(self.table["refined"].to_numpy(bool), own, self.prefilter)
        return np.full(len(self.table), own, dtype=object)

    def records(self, limit: int | None = None, *, also: np.ndarray | None = None) -> list[dict]:
        """The ranked table (its first ``limit`` rows when given, plus the rows of the boolean mask
        ``also`` beyond them, in table order) and each row's ``model`` (:meth:`row_models`) as
        JSON-ready dicts (NaN becomes None, numpy scalars plain Python): what ``--json`` writes and
        what a stored screen keeps of each candidate."""
        n = len(self.table) if limit is None else min(max(int(limit), 0), len(self.table))
        if also is None:
            rows, models = self.table.head(n), self.row_models()[:n]
        else:
            keep = np.zeros(len(self.table), dtype=bool)
            keep[:n] = True
            keep |= np.asarray(also, dtype=bool)
            rows, models = self.table[keep], [m for m, kept in zip(self.row_models(), keep) if kept]
        return [{**{key: plain_value(value) for key, value in row.items()}, "model": str(model)}
                for row, model in zip(rows.to_dict("records"), models)]


def plain_value(value):
    """A JSON-ready cell: numpy scalars as Python, a non-finite float as None."""
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    return value
