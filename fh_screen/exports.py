"""The exported ranked table (``fh-screen SYSTEM --json/--csv``): every column, plus the model of each row.

:func:`export_frame` is ``ScreenResult.table`` with every column it has (``docs/screening.md``
lists them with units) and one more, ``model``: the ``name@version`` that predicted the row's
ΔH_f and σ. Under the cascade (a slow model refines the best candidates of a fast prefilter) the
``refined`` rows carry the screen's model and the others the prefilter's, so two models never
sit in one column unmarked.

Beside every exported file (not on stdout) its provenance is written (:func:`provenance_path`):
:func:`export_provenance` for a screen, :func:`stored_screen_provenance` for a stored one
(``query --run ID``), :func:`top_candidates_provenance` for the best candidates over the stored
screens (``query --top``) and :func:`sweep_provenance` for a bulk sweep's summary (``bulk --json``).
Each names the fh-screen version, where its columns are described and, when the shipped OQMD
table is among the sources, OQMD's attribution; the rows themselves stay bare rows.
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
    "export_records", "provenance_path", "stored_screen_frame", "stored_screen_provenance", "sweep_provenance",
    "top_candidates_provenance",
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

#: Where the columns of each kind of export are described (the provenance's ``columns``).
_SCREEN_COLUMNS_NOTE = "docs/screening.md (units in the names: _ev_per_atom is eV/atom)"
_TOP_COLUMNS_NOTE = "docs/bulk.md, The cross-system answer (units in the names: _ev_per_atom is eV/atom)"
_SWEEP_COLUMNS_NOTE = "docs/bulk.md (the summary's keys)"

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


def export_provenance(result: ScreenResult, options: Any = None, *, saved: bool | None = None) -> dict[str, Any]:
    """What an exported table came from, as JSON-ready data (the table's rows stay bare rows).

    ``run_id`` (the screen's; ``fh-screen query --run RUN`` when it was saved), the fh-screen
    version, the system, the model (``name@version``, weights sha256), the cascade's prefilter,
    the P(stable) classifier and the cascade's head classifier (which rows the model refined), the options, the candidate and known counts, the sources of the
    known phases, the screen's notes, and OQMD's attribution when the shipped table is among them;
    ``saved`` (when given) says whether the run was saved to the store (``query --run`` finds it).
    """
    import dataclasses

    from fh_screen.version import __version__

    sources = result.known_sources()
    provenance: dict[str, Any] = {
        "run_id": result.run_id, "fh_screen_version": __version__, "chemsys": "-".join(result.chemsys),
        "model": f"{result.model_name}@{result.model_version}", "model_weights_sha256": result.weights_sha256,
        "prefilter": result.prefilter, "stability_model": result.stability_model,
        "stability_head_model": result.stability_head_model,
        "options": dataclasses.asdict(options) if dataclasses.is_dataclass(options) else None,
        "n_candidates": result.n_candidates, "n_known": result.n_known, "known_sources": sources,
        "notes": list(result.warnings),
    }
    if saved is not None:  # the CLI knows: with --no-store the run id names no stored screen
        provenance["saved"] = saved
    return _completed(provenance)


def stored_screen_provenance(doc: Any) -> dict[str, Any]:
    """:func:`export_provenance` of a stored screen (a ``ScreenDoc``), for ``fh-screen query --run ID --csv/--json``.

    The known sources are those the screen's hull stood on (``hull_sources``; for a document made before
    2026-12-07, the kept candidates' ``known_source`` values and the document's ``sources`` when it chose
    some); OQMD's attribution is added when the shipped table is among them.
    """
    rows = [c.model_dump() if hasattr(c, "model_dump") else dict(c) for c in doc.candidates]
    provenance: dict[str, Any] = {
        "run_id": doc.run_id, "fh_screen_version": doc.fh_screen_version, "chemsys": doc.chemsys,
        "model": f"{doc.model_name}@{doc.model_version}", "model_weights_sha256": doc.weights_sha256,
        "prefilter": doc.prefilter, "stability_model": doc.stability_model,
        "stability_head_model": doc.stability_head_model,
        "options": doc.options, "n_candidates": doc.n_candidates, "n_known": doc.n_reference,
        "keep_top": doc.keep_top, "reference": doc.reference,
        "known_sources": sorted(_stored_sources(doc.sources, rows, doc.hull_sources)),
        "notes": [problem.message for problem in doc.problems if problem.stage == "screen"],
        "created_at": doc.created_at.isoformat() if doc.created_at else None,
    }
    return _completed(provenance)


def store_query_provenance(frame: Any, filters: dict[str, Any], kind: str) -> dict[str, Any]:
    """What the rows of ``fh-screen query --csv/--json`` (reference entries, predictions or both) came from.

    The filters as asked, the kind, the fh-screen version, the number of rows, the sources of the
    reference rows and the models (``name@version``) of the predicted ones, and OQMD's attribution
    when a row comes from the shipped table (``source`` ``oqmd``).
    """
    from fh_screen.version import __version__

    sources = sorted({str(s) for s in frame["source"].dropna()}) if "source" in frame else []
    models: list[str] = []
    if "model_name" in frame and "model_version" in frame:
        named = frame[["model_name", "model_version"]].dropna()
        models = sorted({f"{name}@{version}" for name, version in zip(named["model_name"], named["model_version"])})
    provenance: dict[str, Any] = {
        "fh_screen_version": __version__, "kind": kind,
        "filters": {key: value for key, value in filters.items() if value is not None},
        "n_rows": int(len(frame)), "known_sources": sources, "models": models,
    }
    provenance["columns"] = "docs/store.md (the collections' fields)"
    if "oqmd" in sources:
        provenance["attribution"] = OQMD_ATTRIBUTION
    return provenance


def top_candidates_provenance(rows: list[dict], filters: dict[str, Any], screens: Any = ()) -> dict[str, Any]:
    """What the rows of ``fh-screen query --top`` came from (rows across many stored screens).

    Parameters
    ----------
    rows
        The query's rows (``fh_screen.store.query.top_candidates``: ``model``, ``dhf_model``, ``run_id``, ...).
    filters
        The query's filters as asked (``top``, ``min_p``, ``chemsys``, ``model``).
    screens
        The stored screens the rows come from, as the store returns them (dicts with ``run_id``,
        ``model_name``, ``model_version``, ``weights_sha256``, ``fh_screen_version``, ``sources`` and
        ``candidates``' ``known_source``); none gives the rows' run ids and models alone.

    Returns
    -------
    dict
        The filters, the fh-screen version, the number of rows, the run ids and models they come
        from (``models``: the screens', whose P(stable) ranks them; ``dhf_models``: those whose ΔH_f
        they carry, the cascade's prefilter included), the weights' sha256 of each model, the
        fh-screen versions that made those screens, the sources of their known phases, and OQMD's
        attribution when the shipped table is among them.
    """
    from fh_screen.version import __version__

    run_ids = sorted({str(row["run_id"]) for row in rows})
    wanted = set(run_ids)
    used = [screen for screen in screens if str(screen.get("run_id")) in wanted]
    weights: dict[str, set[str]] = {}
    versions, sources = set(), set()
    for screen in used:
        label = f"{screen.get('model_name')}@{screen.get('model_version')}"
        if screen.get("weights_sha256"):
            weights.setdefault(label, set()).add(str(screen["weights_sha256"]))
        if screen.get("fh_screen_version"):
            versions.add(str(screen["fh_screen_version"]))
        sources |= _stored_sources(screen.get("sources"), screen.get("candidates") or [], screen.get("hull_sources"))
    provenance: dict[str, Any] = {
        "query": "top_candidates", "filters": dict(filters), "fh_screen_version": __version__, "n_rows": len(rows),
        "run_ids": run_ids, "models": sorted({str(row["model"]) for row in rows}),
        "dhf_models": sorted({str(row.get("dhf_model") or row["model"]) for row in rows}),
        "model_weights_sha256": {label: sorted(shas) for label, shas in sorted(weights.items())},
        "screens_fh_screen_versions": sorted(versions), "known_sources": sorted(sources),
    }
    return _completed(provenance, _TOP_COLUMNS_NOTE)


def sweep_provenance(report: Any, options: Any = None, sweep: Any = None,
                     weights_sha256: str | None = None) -> dict[str, Any]:
    """What a bulk sweep's summary (``fh-screen bulk --json``) came from, from the sweep's own records.

    Parameters
    ----------
    report
        The sweep's ``SweepReport`` (its ``model``, ``notes``, ``sources`` and ``known_sources``; the
        counts are the summary itself).
    options
        The ``ScreenOptions`` of every system's screen.
    sweep
        The ``SweepOptions`` (documents' ``keep_top``, predictions saved or not, ``redo``,
        processes, the store file, the hull's ``sources``).
    weights_sha256
        The model's weights (``SweepPlan.weights_sha256``).

    Returns
    -------
    dict
        The fh-screen version, the model and its weights, the screen options, the sweep's options,
        where its screens are (``origin`` bulk in that store: ``fh-screen runs`` lists them), the
        sources asked for (``sources``; None: every source the store held), those the hulls of the
        sweep's screens stood on (``known_sources``, as a screen's :func:`export_provenance` names
        them) and the sweep's notes, with OQMD's attribution when the shipped table is among them.
    """
    import dataclasses

    from fh_screen.version import __version__

    sources = getattr(report, "sources", None) or getattr(sweep, "sources", None)  # the report's: as the store read them
    store_file = getattr(sweep, "store_file", None)
    provenance: dict[str, Any] = {
        "fh_screen_version": __version__, "model": report.model, "model_weights_sha256": weights_sha256,
        "options": dataclasses.asdict(options) if dataclasses.is_dataclass(options) else None,
        "sweep": None if sweep is None else {
            "keep_top": sweep.keep_top, "save_predictions": sweep.save_predictions, "redo": sweep.redo,
            "processes": sweep.processes,
        },
        "store": str(store_file) if store_file is not None else "the configured store",
        "origin": "bulk", "sources": None if sources is None else sorted(sources),
        "known_sources": sorted(report.known_sources), "notes": list(report.notes),
    }
    return _completed(provenance, _SWEEP_COLUMNS_NOTE)


def _stored_sources(sources: Any, candidates: Any, hull_sources: Any = None) -> set[str]:
    """The sources of a stored screen's known phases: those its hull stood on (``hull_sources``, when the
    document records them); for an older document its ``sources`` (when it chose some) and its
    candidates' ``known_source`` (the known rows kept)."""
    if hull_sources is not None:
        return {str(s) for s in hull_sources}
    rows = [c.model_dump() if hasattr(c, "model_dump") else c for c in candidates]
    kept = {row["known_source"] for row in rows if isinstance(row, dict) and isinstance(row.get("known_source"), str)}
    return set(sources or []) | kept


def _completed(provenance: dict[str, Any], columns: str = _SCREEN_COLUMNS_NOTE) -> dict[str, Any]:
    """``provenance`` with where its columns are described, and OQMD's attribution when the shipped table is a
    source (``known_sources`` None: every source of the store, which may hold it)."""
    provenance["columns"] = columns
    sources = provenance["known_sources"]
    if sources is None or "oqmd" in sources:
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
