"""Mongo criteria for fh-screen's questions (formula, chemical system, size, ΔH_f range), and the
cross-system answer over stored screens (:func:`top_candidates`: the best new candidates).

The criteria are plain MongoDB filters, so they run unchanged on the embedded
:class:`~fh_screen.store.backend.SQLiteStore`, on ``MongoStore`` and on any other maggma Store.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import TYPE_CHECKING

from fh_screen.errors import FhScreenError
from fh_screen.store.bootstrap import SHIPPED_SOURCE
from fh_screen.store.documents import RESULT_SOURCES, subsystems

if TYPE_CHECKING:
    from maggma.core import Store

__all__ = [
    "QueryError", "SOURCE_NAME", "SourceNameError", "TOP_COLUMNS", "absent_sources_note", "check_model_filter",
    "criteria_for", "is_owned_source", "parse_sources", "resolve_sources", "selected_sources", "source_criteria", "source_name",
    "source_spelling", "top_candidates",
]


class QueryError(FhScreenError):
    """A query that cannot be answered as asked; one-line message."""


class SourceNameError(QueryError):
    """A source name that is empty or has characters outside the safe set; one-line message."""


#: A source name as stored: 1-64 lower-case letters, digits or ``.-_+@``, beginning with a letter or digit.
SOURCE_NAME = re.compile(r"[a-z0-9][a-z0-9._+@-]{0,63}")


def source_name(name: object) -> str:
    """The one form of a source name, used by every door (ingest, ``--remove-source``, ``--sources``,
    ``query --source``, the Python API and the jobs): stripped and lower case (``' OQMD '`` → ``oqmd``);
    a selection or a removal keeps another spelling of an owned name (:func:`source_spelling`).

    Raises :class:`SourceNameError` (one line) for a name that is not text, is empty, or has
    characters outside :data:`SOURCE_NAME` once normalised.
    """
    if not isinstance(name, str):
        raise SourceNameError(f"a source name must be text, got {name!r}")
    text = name.strip().lower()
    if not SOURCE_NAME.fullmatch(text):
        raise SourceNameError(f"source name must be 1-64 letters, digits or .-_+@ characters (beginning with a "
                              f"letter or digit; upper case is read as lower case), got {name!r}")
    return text


def is_owned_source(name: str) -> bool:
    """Whether ``name`` (as stored: lower case) is owned: the shipped OQMD table
    (:data:`~fh_screen.store.bootstrap.SHIPPED_SOURCE`) or a source of results brought back from
    atomate2 (:data:`~fh_screen.store.documents.RESULT_SOURCES`), whose entries are not ingested by hand."""
    return name == SHIPPED_SOURCE or name in RESULT_SOURCES


def source_spelling(name: object) -> str:
    """A source name as a selection (``--sources``) and a removal (``--remove-source``) read it:
    :func:`source_name`, except another spelling of an owned name (``OQMD``, ``ChgNet``), which is
    kept as given (stripped): it names the entries once ingested under such a spelling beside the
    owned ones (:func:`selected_sources`)."""
    canonical = source_name(name)
    spelled = str(name).strip()
    return spelled if spelled != canonical and is_owned_source(canonical) else canonical


def _selected(name: str, present: Sequence[str]) -> list[str]:
    """The values of ``present`` that the source ``name`` (a :func:`source_spelling`) selects
    (:func:`selected_sources`)."""
    canonical = source_name(name)
    spelled = [s for s in present if isinstance(s, str) and s.strip().lower() == canonical]
    if name != canonical:  # OQMD: the entries stored under a spelling of oqmd other than its own, if any
        legacy = [s for s in spelled if s != canonical]
        if legacy:
            return legacy
    if is_owned_source(canonical):
        return [s for s in spelled if s == canonical]
    return spelled


def selected_sources(sources: str | Sequence[str], present: Iterable[str]) -> list[str]:
    """The stored source values among ``present`` (a store's) that ``sources`` select; the one rule of
    a selection (``--sources``, ``query --source``: :func:`resolve_sources`, :func:`source_criteria`)
    and of a removal (``FhScreenStore.remove_source``):

    * an owned name (``oqmd``, ``chgnet``; :func:`is_owned_source`) selects its own entries;
    * another spelling of it (``OQMD``) selects the entries stored under any spelling of it but the
      owned one (ingested before names were read in lower case), or, when the store holds none, the
      owned name's;
    * any other name (``my-dft``, ``My-DFT``) selects its entries under any spelling (``MyLab`` with ``mylab``).
    """
    present = list(present)
    return list(dict.fromkeys(value for name in parse_sources(sources) for value in _selected(name, present)))


def resolve_sources(sources: str | Sequence[str], present: Callable[[], Iterable[str]]) -> list[str]:
    """:func:`parse_sources`'s names as a store whose source values are ``present()`` reads them: another
    spelling of an owned name (``OQMD``) stays when the store holds entries under such a spelling
    and reads as the owned name (``oqmd``) when it holds none (:func:`selected_sources`).
    ``present`` (a store-wide look-up) runs only for such a spelling."""
    held: list[str] | None = None
    names = []
    for name in parse_sources(sources):
        canonical = source_name(name)
        if name != canonical:
            held = list(present()) if held is None else held
            if all(value == canonical for value in _selected(name, held)):
                name = canonical
        names.append(name)
    return list(dict.fromkeys(names))


def source_criteria(sources: str | Sequence[str]) -> dict:
    """The criterion on ``source`` selecting what the names ``sources`` (:func:`resolve_sources`'s) name,
    by the rule of :func:`selected_sources`: an owned name exactly, another spelling of it (``OQMD``)
    as every stored spelling of it but the owned one, any other name whatever its case (a regular
    expression)."""
    exact, legacy, patterns = [], [], []
    for name in parse_sources(sources):
        canonical = source_name(name)
        if name != canonical:
            legacy.append(canonical)
        elif is_owned_source(canonical):
            exact.append(canonical)
        else:
            patterns.append(canonical)
    legacy = list(dict.fromkeys(legacy))
    clauses = []
    if exact:
        clauses.append({"source": exact[0] if len(exact) == 1 else {"$in": exact}})
    if patterns:
        clauses.append({"source": _spellings_of(patterns)})
    if legacy:
        clauses.append({"source": {**_spellings_of(legacy), "$nin": legacy}})
    return clauses[0] if len(clauses) == 1 else {"$or": clauses}


def _spellings_of(names: list[str]) -> dict:
    """A regular expression matching ``names`` in any case, with any surrounding spaces (as stored by old versions)."""
    return {"$regex": rf"^\s*(?:{'|'.join(re.escape(name) for name in names)})\s*$", "$options": "i"}


def criteria_for(
    formula: str | Sequence[str] | None = None,
    chemsys: str | Sequence[str] | None = None,
    nelements: int | Sequence[int] | None = None,
    min_dhf_ev_per_atom: float | None = None,
    max_dhf_ev_per_atom: float | None = None,
    dhf_field: str = "dhf_ev_per_atom",
    source: str | Sequence[str] | None = None,
    sources_present: Callable[[], Iterable[str]] | None = None,
) -> dict:
    """A MongoDB filter for the given conditions (all must hold).

    ``chemsys`` (elements in any order, ``Li-Fe-O`` or a list) selects every entry whose elements
    are a subset of it, as a phase diagram needs; formulas are reduced first, so ``Fe4O6`` finds
    ``Fe2O3`` (fh-screen's one formula reducer, :func:`fh_screen.chem.formula.reduced_formula`).
    The system is read by the one chemical-system parser (:func:`fh_screen.chem.candidates.parse_chemsys`).
    ``source`` (``oqmd``, ``chgnet``, ``atomate2-vasp``, ``user``; one or several, or a comma
    separated text) keeps the reference entries of those sources only (:func:`source_criteria`); with
    ``sources_present`` (a store-wide look-up of its source values) the names are read as that store
    reads them first (:func:`resolve_sources`: ``OQMD`` is ``oqmd`` unless entries are stored under it).
    """
    from fh_screen.chem.formula import reduced_formula

    criteria: dict = {}
    if formula is not None:
        formulas = [formula] if isinstance(formula, str) else list(formula)
        reduced = sorted({reduced_formula(f) for f in formulas})
        criteria["formula"] = reduced[0] if len(reduced) == 1 else {"$in": reduced}
    if source is not None:
        names = source if sources_present is None else resolve_sources(source, sources_present)
        criteria.update(source_criteria(names))
    if chemsys is not None:
        criteria["chemsys"] = {"$in": subsystems(chemsys)}
    if nelements is not None:
        counts = [nelements] if isinstance(nelements, int) else list(nelements)
        if any(int(n) < 1 for n in counts):
            raise QueryError(f"number of elements must be at least 1, got {nelements}")
        criteria["nelements"] = int(counts[0]) if len(counts) == 1 else {"$in": [int(n) for n in counts]}
    if min_dhf_ev_per_atom is not None or max_dhf_ev_per_atom is not None:
        min_dhf_ev_per_atom = _finite_bound("min", min_dhf_ev_per_atom)
        max_dhf_ev_per_atom = _finite_bound("max", max_dhf_ev_per_atom)
        if (
            min_dhf_ev_per_atom is not None
            and max_dhf_ev_per_atom is not None
            and min_dhf_ev_per_atom > max_dhf_ev_per_atom
        ):
            raise QueryError(f"empty ΔH_f range: min {min_dhf_ev_per_atom} > max {max_dhf_ev_per_atom} eV/atom")
        bounds = {}
        if min_dhf_ev_per_atom is not None:
            bounds["$gte"] = float(min_dhf_ev_per_atom)
        if max_dhf_ev_per_atom is not None:
            bounds["$lte"] = float(max_dhf_ev_per_atom)
        criteria[dhf_field] = bounds
    return criteria



def _finite_bound(which: str, value: object) -> float | None:
    """A ΔH_f bound as a float; :class:`QueryError` (one line) for one that is not a finite number (NaN, inf, text)."""
    if value is None:
        return None
    try:
        bound = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        bound = float("nan")
    if isinstance(value, bool) or not math.isfinite(bound):
        raise QueryError(f"{which} ΔH_f (--{which}-dhf) must be a finite number of eV/atom, got {value!r}")
    return bound


def parse_sources(source: str | Sequence[str]) -> list[str]:
    """Source names from ``"oqmd,chgnet"`` or a list, each read by :func:`source_spelling` (stripped, lower
    case, but another spelling of an owned name such as ``OQMD`` kept as given), without repeats (order
    kept). Raises :class:`QueryError` (one line) when none is named or a name is not usable."""
    if not isinstance(source, (str, list, tuple)) or not all(isinstance(s, str) for s in
                                                             ([source] if isinstance(source, str) else source)):
        raise QueryError(f"sources must be source names ('oqmd,chgnet' or a list), got {source!r}")
    parts = source.split(",") if isinstance(source, str) else [p for s in source for p in str(s).split(",")]
    names = list(dict.fromkeys(source_spelling(p) for p in parts if p.strip()))
    if not names:
        raise QueryError(f"no source named in {source!r} (e.g. oqmd, chgnet, atomate2-vasp)")
    return names


def absent_sources_note(sources: str | Sequence[str] | None, found: Collection[str],
                        sources_present: Callable[[], Iterable[str]], where: str, *, what: str = "reference entry") -> str:
    """A line naming the requested sources that ``where`` holds no ``what`` of at all, else ``""``.

    ``found`` are the sources of the entries a query returned; a requested source among them, or
    present elsewhere in the store (nothing computed in this system yet), gets no line.
    ``sources_present`` (a store-wide look-up) runs only when a requested source was not found.
    """
    if sources is None:
        return ""
    found = list(found)
    missing = [name for name in parse_sources(sources) if not selected_sources([name], found)]
    if not missing:
        return ""
    present = sorted({str(name) for name in sources_present() if name})
    absent = [name for name in missing if not selected_sources([name], present)]
    if not absent:
        return ""
    return (f"source {', '.join(absent)}: no {what} in {where} (it holds "
            f"{', '.join(present) or 'none'}): a misspelt name, or nothing of it computed yet")


#: Columns of a :func:`top_candidates` row.
TOP_COLUMNS = ["system", "formula", "p_stable", "model", "e_above_hull_pred_ev_per_atom", "dhf_pred_ev_per_atom",
               "dhf_std_ev_per_atom", "dhf_model", "selected", "run_id"]


def model_criteria(model: str | None) -> dict:
    """Store criteria for a model given as ``name`` or ``name@version`` (the form every export shows)."""
    if not model:
        return {}
    name, _, version = str(model).partition("@")
    return {"model_name": name, **({"model_version": version} if version else {})}


def check_model_filter(model: str | None, collections: Sequence[Store]) -> None:
    """Refuse, with the one-line :class:`~fh_screen.models.checkpoint.ModelError`, a model filter
    (``query --model``, ``prediction_docs(model_name=)``, ``top_candidates(model=)``) whose name names no model.

    The name of ``name`` or ``name@version`` must be a shipped or user model's
    (:func:`~fh_screen.models.predictor.available_models`) or one that ``collections`` (predictions,
    screens) hold documents of: a fine-tuned model since removed or renamed stays selectable. A
    version is not checked: another version of a known name matches nothing, as before.
    """
    if model is None:
        return
    from fh_screen.models.checkpoint import ModelError
    from fh_screen.models.predictor import available_models, split_model_reference

    if not isinstance(model, str) or not model.strip():
        raise ModelError(f"a model filter must be a model name or name@version, got {model!r}")
    split_model_reference(model)  # NAME@ or @VERSION: one line
    name = model_criteria(model)["model_name"]
    shipped = available_models()
    if name in shipped:
        return
    if any(collection.query_one(criteria={"model_name": name}, properties=["model_name"]) is not None
           for collection in collections):
        return
    stored = sorted({str(n) for collection in collections for n in collection.distinct("model_name") if n})
    raise ModelError(f"no model named {name!r}: neither a shipped or user model ({', '.join(shipped) or 'none'}) "
                     f"nor one the store holds predictions or screens of ({', '.join(stored) or 'none'})")


def top_candidates(
    screens: Store,
    top: int = 100,
    min_p: float = 0.0,
    model: str | None = None,
    chemsys: str | Sequence[str] | None = None,
) -> list[dict]:
    """The best new candidates over every stored screen: rows of ``system``, ``formula``, ``p_stable``, ``model``.

    ``model`` is the screen's (``name@version``: its P(stable) and rank); ``dhf_model`` the model
    whose ΔH_f and σ the row carries, the cascade's prefilter on a row the screen did not refine.

    Each (system, model ``name@version``) counts once, by its newest screen (run ids sort by
    time); a composition found by several systems' screens (a binary inside many ternaries) is
    listed once per model, from the screen that gives it the highest ``p_stable`` (ties: the
    smallest system). Only new candidates (not in the reference data) with ``p_stable >= min_p``
    are listed, highest first; ``top`` = 0 lists them all.

    Every document is read once (a stored screen keeps its best ``keep_top`` rows), so the
    cost grows with the number of stored screens: ~0.3 ms per 100-row document on SQLite.

    Parameters
    ----------
    screens
        The screens collection (any maggma Store; ``FhScreenStore.screens``).
    model
        Only screens of this model name (or ``name@version``).
    chemsys
        Only screens of this system and its subsystems (``Li-Fe-P-O``).
    """
    if isinstance(top, bool) or not isinstance(top, int) or top < 0:
        raise QueryError(f"top must be 0 (all) or a positive number of rows, got {top!r}")
    if isinstance(min_p, bool) or not isinstance(min_p, (int, float)) or not 0 <= float(min_p) <= 1:
        raise QueryError(f"min_p must be a probability between 0 and 1, got {min_p!r}")
    criteria: dict = model_criteria(model)
    if chemsys is not None:
        criteria["chemsys"] = {"$in": subsystems(chemsys)}
    newest: dict[tuple[str, str], tuple[str, list[dict]]] = {}
    fields = ["run_id", "chemsys", "model_name", "model_version", "candidates"]
    for doc in screens.query(criteria=criteria, properties=fields):
        label = f"{doc.get('model_name')}@{doc.get('model_version')}"
        key = (str(doc.get("chemsys")), label)
        run_id = str(doc.get("run_id"))
        if key in newest and newest[key][0] >= run_id:
            continue
        rows = []
        for c in doc.get("candidates") or []:
            p = c.get("p_stable")
            if c.get("is_known") or p is None or p != p or p < min_p:
                continue
            rows.append({"system": key[0], "formula": c.get("formula"), "p_stable": float(p), "model": label,
                         "e_above_hull_pred_ev_per_atom": c.get("e_above_hull_pred_ev_per_atom"),
                         "dhf_pred_ev_per_atom": c.get("dhf_pred_ev_per_atom"),
                         "dhf_std_ev_per_atom": c.get("dhf_std_ev_per_atom"),
                         "dhf_model": c.get("model") or label,
                         "selected": bool(c.get("selected", False)), "run_id": run_id})
        newest[key] = (run_id, rows)
    best: dict[tuple[str, str], dict] = {}
    for _, rows in newest.values():
        for row in rows:
            key = (row["formula"], row["model"])
            held = best.get(key)
            rank = (-row["p_stable"], row["system"].count("-"), row["system"])
            if held is None or rank < (-held["p_stable"], held["system"].count("-"), held["system"]):
                best[key] = row
    ordered = sorted(best.values(), key=lambda r: (-r["p_stable"], r["system"], r["formula"], r["model"]))
    return ordered[:top] if top else ordered
