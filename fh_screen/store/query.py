"""Mongo criteria for fh-screen's questions (formula, chemical system, size, ΔH_f range).

The criteria are plain MongoDB filters, so they run unchanged on the embedded
:class:`~fh_screen.store.backend.SQLiteStore`, on ``MongoStore`` and on any other maggma Store.
"""

from __future__ import annotations

from collections.abc import Sequence

from fh_screen.errors import FhScreenError
from fh_screen.store.documents import subsystems

__all__ = ["QueryError", "criteria_for", "parse_sources"]


class QueryError(FhScreenError):
    """A query that cannot be answered as asked; one-line message."""


def criteria_for(
    formula: str | Sequence[str] | None = None,
    chemsys: str | Sequence[str] | None = None,
    nelements: int | Sequence[int] | None = None,
    min_dhf_ev_per_atom: float | None = None,
    max_dhf_ev_per_atom: float | None = None,
    dhf_field: str = "dhf_ev_per_atom",
    source: str | Sequence[str] | None = None,
) -> dict:
    """A MongoDB filter for the given conditions (all must hold).

    ``chemsys`` (elements in any order, ``Li-Fe-O`` or a list) selects every entry whose elements
    are a subset of it, as a phase diagram needs; formulas are reduced first, so ``Fe4O6`` finds
    ``Fe2O3`` (fh-screen's one formula reducer, :func:`fh_screen.chem.formula.reduced_formula`).
    The system is read by the one chemical-system parser (:func:`fh_screen.chem.candidates.parse_chemsys`).
    ``source`` (``oqmd``, ``chgnet``, ``atomate2-vasp``, ``user``; one or several, or a comma
    separated text) keeps the reference entries of those sources only.
    """
    from fh_screen.chem.formula import reduced_formula

    criteria: dict = {}
    if formula is not None:
        formulas = [formula] if isinstance(formula, str) else list(formula)
        reduced = sorted({reduced_formula(f) for f in formulas})
        criteria["formula"] = reduced[0] if len(reduced) == 1 else {"$in": reduced}
    if source is not None:
        sources = parse_sources(source)
        criteria["source"] = sources[0] if len(sources) == 1 else {"$in": sources}
    if chemsys is not None:
        criteria["chemsys"] = {"$in": subsystems(chemsys)}
    if nelements is not None:
        counts = [nelements] if isinstance(nelements, int) else list(nelements)
        if any(int(n) < 1 for n in counts):
            raise QueryError(f"number of elements must be at least 1, got {nelements}")
        criteria["nelements"] = int(counts[0]) if len(counts) == 1 else {"$in": [int(n) for n in counts]}
    if min_dhf_ev_per_atom is not None or max_dhf_ev_per_atom is not None:
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



def parse_sources(source: str | Sequence[str]) -> list[str]:
    """Source names from ``"oqmd,chgnet"`` or a list, stripped, lower case, without repeats (order kept)."""
    parts = source.split(",") if isinstance(source, str) else [p for s in source for p in str(s).split(",")]
    names = list(dict.fromkeys(p.strip().lower() for p in parts if p.strip()))
    if not names:
        raise QueryError(f"no source named in {source!r} (e.g. oqmd, chgnet, atomate2-vasp)")
    return names
