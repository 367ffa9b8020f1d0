"""Store documents (emmet style): an OQMD reference entry and a prediction, units in field names."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from functools import lru_cache

from pydantic import BaseModel, Field

__all__ = [
    "PredictionDoc",
    "ReferenceEntryDoc",
    "chemsys_of",
    "elements_of",
    "prediction_id",
    "subsystems",
    "utcnow",
]

_SYMBOL = re.compile(r"[A-Z][a-z]?")


def utcnow() -> datetime:
    """Now, as a naive UTC datetime (what MongoDB hands back)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


@lru_cache(maxsize=1 << 18)
def elements_of(formula: str) -> tuple[str, ...]:
    """Sorted element symbols of a pymatgen reduced formula (``LiFePO4`` → Fe, Li, O, P).

    A regular expression on the symbols, tested against pymatgen's ``Composition.elements``.
    """
    return tuple(sorted(set(_SYMBOL.findall(formula))))


def chemsys_of(elements) -> str:
    """Chemical system as pymatgen writes it: symbols sorted alphabetically, joined by ``-``."""
    return "-".join(sorted(elements))


def subsystems(chemsys: str | list[str] | tuple[str, ...]) -> list[str]:
    """Every non-empty sub-system of a chemical system (``Li-O`` → ``Li``, ``O``, ``Li-O``).

    The elements may be given in any order and separated by ``-``, ``,`` or spaces.
    """
    from itertools import combinations

    from fh_screen.composition import ALL_ELEMENT_SYMBOLS, FormulaError

    if isinstance(chemsys, str):
        symbols = [s for s in re.split(r"[-,\s]+", chemsys.strip()) if s]
    else:
        symbols = [str(s).strip() for s in chemsys]
    unknown = [s for s in symbols if s not in ALL_ELEMENT_SYMBOLS]
    if not symbols or unknown:
        raise FormulaError(
            f"bad chemical system {chemsys!r}: "
            + (f"unknown element symbol(s) {', '.join(unknown)}" if unknown else "no elements")
        )
    unique = sorted(set(symbols))
    return ["-".join(c) for n in range(1, len(unique) + 1) for c in combinations(unique, n)]


def prediction_id(formula: str, model_name: str, model_version: str, weights_sha256: str) -> str:
    """Store key of a prediction: one per formula and model (name, version, weights)."""
    return f"{formula}|{model_name}@{model_version}|{(weights_sha256 or 'unhashed')[:16]}"


class ReferenceEntryDoc(BaseModel):
    """One OQMD composition: the lowest DFT formation enthalpy of its reduced formula."""

    formula: str = Field(description="pymatgen reduced formula, the store key.")
    elements: list[str] = Field(description="Element symbols, sorted alphabetically.")
    chemsys: str = Field(description="Chemical system, e.g. Fe-Li-O-P (sorted, as pymatgen writes it).")
    nelements: int = Field(description="Number of elements.")
    dhf_ev_per_atom: float = Field(description="DFT formation enthalpy in eV/atom.")
    source: str = Field("oqmd", description="Database the value comes from.")
    source_id: str | None = Field(None, description="Entry id in the source database, when known.")
    source_version: str | None = Field(None, description="Source database version, when known.")
    source_file: str | None = Field(None, description="Name of the file the entry was ingested from.")
    passed_outlier_filter: bool = Field(True, description="False for values outside (-20, 5) eV/atom.")
    last_updated: datetime = Field(default_factory=utcnow, description="When this entry was written (UTC).")

    @classmethod
    def from_formula(cls, formula: str, dhf_ev_per_atom: float, **kwargs) -> ReferenceEntryDoc:
        """Build from a reduced formula, filling elements, chemsys and nelements."""
        elements = elements_of(formula)
        return cls(
            formula=formula,
            elements=list(elements),
            chemsys=chemsys_of(elements),
            nelements=len(elements),
            dhf_ev_per_atom=float(dhf_ev_per_atom),
            **kwargs,
        )


class PredictionDoc(BaseModel):
    """A formation enthalpy predicted by an fh-screen model for one composition."""

    prediction_id: str = Field(description="Store key: formula | model name@version | weights hash prefix.")
    formula: str = Field(description="pymatgen reduced formula.")
    elements: list[str] = Field(description="Element symbols, sorted alphabetically.")
    chemsys: str = Field(description="Chemical system, e.g. Fe-Li-O-P.")
    nelements: int = Field(description="Number of elements.")
    dhf_pred_ev_per_atom: float = Field(description="Predicted formation enthalpy in eV/atom.")
    dhf_std_ev_per_atom: float | None = Field(None, description="Ensemble spread in eV/atom (ensembles only).")
    e_above_hull_pred_ev_per_atom: float | None = Field(
        None, description="Energy above the predicted hull in eV/atom, when a screen computed it."
    )
    out_of_domain: bool = Field(False, description="True when an element never occurs in the training data.")
    model_name: str = Field(description="Name of the model that made the prediction.")
    model_version: str = Field(description="Version of that model.")
    model_weights_sha256: str = Field(description="sha256 of the model's checkpoint file.")
    run_id: str = Field(description="Id of the run (screen, builder, save) that wrote this prediction.")
    last_updated: datetime = Field(default_factory=utcnow, description="When the prediction was made (UTC).")
