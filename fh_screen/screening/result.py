"""The result of a screen: the ranked table, its columns and the hull behind it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from fh_screen.chem.hull import pymatgen_phase_diagram

__all__ = ["RESULT_COLUMNS", "ScreenResult"]

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

    def records(self, limit: int | None = None) -> list[dict]:
        """The ranked table (its first ``limit`` rows when given) as JSON-ready dicts (NaN becomes
        None, numpy scalars plain Python)."""
        table = self.table if limit is None else self.table.head(max(int(limit), 0))
        out = []
        for row in table.to_dict("records"):
            out.append({key: _plain(value) for key, value in row.items()})
        return out


def _plain(value):
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    return value
