"""The exported ranked table (``fh-screen SYSTEM --json/--csv``): every column, plus the model of each row.

:func:`export_frame` is ``ScreenResult.table`` with every column it has (``docs/screening.md``
lists them with units) and one more, ``model``: the ``name@version`` that predicted the row's
ΔH_f and σ. Under the cascade (a slow model refines the best candidates of a fast prefilter) the
``refined`` rows carry the screen's model and the others the prefilter's, so two models never
sit in one column unmarked.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from fh_screen.screening import ScreenResult

__all__ = [
    "EXPORT_COLUMN_ORDER", "MODEL_COLUMN", "OQMD_ATTRIBUTION", "PROVENANCE_SUFFIX", "export_frame", "export_provenance",
    "export_records", "provenance_path", "stored_screen_frame", "stored_screen_provenance",
]

#: Suffix of the provenance file written beside an exported table (``out.csv`` → ``out.csv.provenance.json``).
PROVENANCE_SUFFIX = ".provenance.json"

#: The attribution an export owes OQMD when its known phases include the shipped table (CC-BY 4.0,
#: ``fh_screen/reference_data/ATTRIBUTION.md``).
OQMD_ATTRIBUTION = {
    "data": "OQMD (https://oqmd.org), the ElemNet/CrabNet benchmark split (train + val), as shipped with fh-screen",
    "licence": "CC-BY 4.0 (https://creativecommons.org/licenses/by/4.0/)",
    "cite": [
        "J. E. Saal et al., JOM 65, 1501-1509 (2013), doi:10.1007/s11837-013-0755-4",
        "S. Kirklin et al., npj Computational Materials 1, 15010 (2015), doi:10.1038/npjcompumats.2015.10",
    ],
}

#: Name of the added column: ``name@version`` of the model that predicted the row.
MODEL_COLUMN = "model"

#: The columns of a screen's export in their order (``docs/screening.md``, "Exported columns").
EXPORT_COLUMN_ORDER = [
    "rank", "formula", "dhf_pred_ev_per_atom", "e_above_hull_pred_ev_per_atom", "known_dhf_ev_per_atom",
    "decomposition", "dhf_std_ev_per_atom", "p_stable", "is_known", "dhf_ev_per_atom", "charge_balanced",
    "stability_score", "selected", "refined", "known_source", MODEL_COLUMN,
]


def export_frame(result: ScreenResult) -> pd.DataFrame:
    """Every column of ``result.table`` and :data:`MODEL_COLUMN`, in rank order.

    Parameters
    ----------
    result
        A screen (:class:`~fh_screen.screening.ScreenResult`).

    Returns
    -------
    pandas.DataFrame
        A copy; ``model`` is the screen's model on refined rows, the prefilter's on the others.
    """
    frame = result.table.copy()
    frame[MODEL_COLUMN] = result.row_models()
    return frame


def provenance_path(path: str | Path) -> Path:
    """Where the provenance of the table exported to ``path`` is written (:data:`PROVENANCE_SUFFIX`)."""
    path = Path(path)
    return path.with_name(path.name + PROVENANCE_SUFFIX)


def export_provenance(result: ScreenResult, options: Any = None) -> dict[str, Any]:
    """What an exported table came from, as JSON-ready data (the table's rows stay bare rows).

    ``run_id`` (the screen's; ``fh-screen query --run RUN`` when it was saved), the fh-screen
    version, the system, the model (``name@version``, weights sha256), the cascade's prefilter,
    the P(stable) classifier, the options, the candidate and known counts, the sources of the
    known phases, the screen's notes, and OQMD's attribution when the shipped table is among them.
    """
    import dataclasses

    from fh_screen.version import __version__

    sources = sorted({str(s) for s in result.table.get("known_source", []) if isinstance(s, str)})
    provenance: dict[str, Any] = {
        "run_id": result.run_id, "fh_screen_version": __version__, "chemsys": "-".join(result.chemsys),
        "model": f"{result.model_name}@{result.model_version}", "model_weights_sha256": result.weights_sha256,
        "prefilter": result.prefilter, "stability_model": result.stability_model,
        "options": dataclasses.asdict(options) if dataclasses.is_dataclass(options) else None,
        "n_candidates": result.n_candidates, "n_known": result.n_known, "known_sources": sources,
        "notes": list(result.warnings),
    }
    return _completed(provenance)


def stored_screen_provenance(doc: Any) -> dict[str, Any]:
    """:func:`export_provenance` of a stored screen (a ``ScreenDoc``), for ``fh-screen query --run ID --csv``.

    The known sources are the candidates' ``known_source`` values (the document's ``sources`` when it
    chose some); OQMD's attribution is added when the shipped table is among them.
    """
    rows = [c.model_dump() if hasattr(c, "model_dump") else dict(c) for c in doc.candidates]
    kept = {row["known_source"] for row in rows if isinstance(row.get("known_source"), str)}
    sources = sorted(set(doc.sources or []) | kept)
    provenance: dict[str, Any] = {
        "run_id": doc.run_id, "fh_screen_version": doc.fh_screen_version, "chemsys": doc.chemsys,
        "model": f"{doc.model_name}@{doc.model_version}", "model_weights_sha256": doc.weights_sha256,
        "options": doc.options, "n_candidates": doc.n_candidates, "n_known": doc.n_reference,
        "keep_top": doc.keep_top, "reference": doc.reference, "known_sources": sources,
        "created_at": doc.created_at.isoformat() if doc.created_at else None,
    }
    return _completed(provenance)


def _completed(provenance: dict[str, Any]) -> dict[str, Any]:
    """``provenance`` with where its columns are described, and OQMD's attribution when the shipped table is a source."""
    provenance["columns"] = "docs/screening.md (units in the names: _ev_per_atom is eV/atom)"
    if "oqmd" in provenance["known_sources"]:
        provenance["attribution"] = OQMD_ATTRIBUTION
    return provenance


def export_records(result: ScreenResult) -> list[dict]:
    """:func:`export_frame` as JSON-ready dicts (NaN becomes None): ``result.records()``."""
    return result.records()


def stored_screen_frame(doc: Any) -> pd.DataFrame:
    """A stored screen's candidates (a ``ScreenDoc`` of :mod:`fh_screen.store`) with the columns, in
    the order, of the screen's own export.

    The columns of :func:`export_frame` of a screen come first in its order (``rank`` …
    ``refined``, ``known_source``, ``model``), any other stored field after them. A document
    written before candidates kept their ``model`` gets the screen's model on refined rows and
    none on the others (their prefilter was not recorded).
    """
    import pandas as pd

    frame = pd.DataFrame([c.model_dump() for c in doc.candidates])
    if frame.empty:
        return frame
    if MODEL_COLUMN not in frame.columns:
        refined = frame["refined"].astype(bool) if "refined" in frame.columns else True
        frame[MODEL_COLUMN] = np.where(refined, doc.model, None)
    first = [c for c in EXPORT_COLUMN_ORDER if c in frame.columns]
    return frame[first + [c for c in frame.columns if c not in first]]
