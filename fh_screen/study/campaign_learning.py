"""What the campaign's loop learns across systems: a logistic recalibration of its ranking.

Every calculation of the loop is a labelled example: did it return an energy on the known hull
at the time of the pick (a *success*)? After each round the loop fits, on every calculation so
far in every system of the campaign, a logistic model of success whose offset is the log-odds of
the ranked column at the time of the pick, with a few features the first screen does not weigh
against each other:

- the element count of the candidate against the system's (one indicator per pair: a binary of
  a quaternary system is not a binary of a binary system),
- whether it keeps the system's anions: in a ternary or quaternary system holding a halogen, a
  chalcogen (O–Te) or N (:data:`ANION_ELEMENTS`), a candidate without any of them (an
  intermetallic of an oxide system, say) is a different chemistry from the rest of its list,
- the size of its reduced formula unit (log atoms), and its charge balance,
- the log-odds itself (a temperature: the screen may be too sure or too shy),
- what earlier calculations of the same element set returned: successes, energies above the
  hull, and compositions the oracle lacks (a set whose compound was just found has less left).

The weights start at zero (the first round is the screen's order) and are shrunk toward zero by
an L2 penalty, so a campaign with few outcomes stays close to the screen. With a *prior*
(:func:`load_prior`: the weights an earlier campaign learned, or those of a rehearsal campaign on
train.csv alone, ``scripts/build_campaign_prior.py``) they start there and are shrunk toward it
instead. The correction is in log-odds, added to the loop's log score. Nothing here knows the
oracle: it sees only what the loop's own calculations returned.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "ANION_ELEMENTS",
    "FEATURE_NAMES",
    "Recalibration",
    "anion_columns",
    "candidate_features",
    "element_set_keys",
    "load_prior",
    "set_outcome_counts",
]

#: (system element count, candidate element count) pairs with an indicator of their own.
SIZE_PAIRS = ((2, 2), (3, 2), (3, 3), (4, 2), (4, 3), (4, 4))
#: Elements that are the anions of the compounds that hold them (halogens, chalcogens O–Te, N).
ANION_ELEMENTS = frozenset({"N", "O", "F", "S", "Cl", "Se", "Br", "Te", "I"})
#: System sizes with an indicator of their own for a candidate that drops every anion of the system.
ANION_DROP_SIZES = (3, 4)
#: Names of the feature columns, in order.
FEATURE_NAMES = (
    *(f"elements_{c}_of_{s}" for s, c in SIZE_PAIRS),
    *(f"drops_anions_of_{s}" for s in ANION_DROP_SIZES),
    "log_atoms_per_formula_unit",
    "charge_balanced",
    "log_odds",
    "set_successes",
    "set_energies_above_hull",
    "set_without_energy",
)
#: Outcomes of a calculation, as columns of :func:`set_outcome_counts`.
SUCCESS, ABOVE_HULL, NO_ENERGY = 0, 1, 2


def element_set_keys(counts: np.ndarray) -> np.ndarray:
    """One integer per row naming the elements present (a bit per column of ``counts``)."""
    present = np.asarray(counts) > 0
    return present @ (1 << np.arange(present.shape[1], dtype=np.int64))


def anion_columns(chemsys: Sequence[str]) -> np.ndarray:
    """Which columns of a system are :data:`ANION_ELEMENTS` (a boolean per element of ``chemsys``)."""
    return np.array([element in ANION_ELEMENTS for element in chemsys], dtype=bool)


def set_outcome_counts(candidate_keys: np.ndarray, computed_keys: np.ndarray, outcomes: np.ndarray) -> np.ndarray:
    """For each candidate, how many earlier calculations of its element set had each outcome (n × 3)."""
    out = np.zeros((len(candidate_keys), 3))
    for key, outcome in zip(computed_keys, outcomes):
        out[candidate_keys == key, outcome] += 1.0
    return out


def candidate_features(counts: np.ndarray, charge_balanced: np.ndarray, log_odds: np.ndarray,
                       set_outcomes: np.ndarray, anions: np.ndarray) -> np.ndarray:
    """The feature matrix (candidates × :data:`FEATURE_NAMES`) of one system's candidates.

    ``counts``: reduced integer counts over the system's elements; ``log_odds``: the ranked
    column's log-odds; ``set_outcomes``: :func:`set_outcome_counts` at the time of the pick;
    ``anions``: :func:`anion_columns` of the system.
    """
    counts = np.asarray(counts)
    anions = np.asarray(anions, dtype=bool)
    n_system = counts.shape[1]
    if anions.shape != (n_system,):
        raise ValueError(f"{anions.size} anion flags for a system of {n_system} elements")
    n_candidate = (counts > 0).sum(axis=1)
    columns = [((n_system == s) & (n_candidate == c)).astype(float) for s, c in SIZE_PAIRS]
    drops_anions = bool(anions.any()) & ~(counts[:, anions] > 0).any(axis=1)
    columns += [(drops_anions & (n_system == s)).astype(float) for s in ANION_DROP_SIZES]
    columns.append(np.log(np.maximum(counts.sum(axis=1), 1)) - 1.5)
    columns.append(np.asarray(charge_balanced, dtype=float) - 0.5)
    columns.append(np.clip(log_odds, -20, 20) / 4)
    return np.column_stack([*columns, set_outcomes])


@dataclass(frozen=True)
class Recalibration:
    """Logistic weights on :data:`FEATURE_NAMES` (zero: the screen's order unchanged)."""

    weights: np.ndarray

    @classmethod
    def none(cls) -> Recalibration:
        """No correction: every weight zero."""
        return cls(np.zeros(len(FEATURE_NAMES)))

    @classmethod
    def fit(cls, features: np.ndarray, log_odds: np.ndarray, successes: np.ndarray, l2: float,
            prior: Recalibration | None = None) -> Recalibration:
        """Maximum a posteriori weights: logistic likelihood with offset ``log_odds``, Gaussian prior of precision ``l2``.

        The prior is centred on ``prior``'s weights (default: zero); with no example the fit is the prior.
        """
        from scipy.optimize import minimize

        centre = cls.none().weights if prior is None else np.asarray(prior.weights, dtype=float)
        features = np.asarray(features, dtype=float)
        offset = np.clip(np.asarray(log_odds, dtype=float), -20, 20)
        y = np.asarray(successes, dtype=float)
        if len(y) == 0:
            return cls(centre.copy())

        def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
            z = offset + features @ w
            value = float((np.logaddexp(0.0, z) - y * z).sum() + 0.5 * l2 * (w - centre) @ (w - centre))
            gradient = features.T @ (1.0 / (1.0 + np.exp(-z)) - y) + l2 * (w - centre)
            return value, gradient

        result = minimize(loss, centre.copy(), jac=True, method="L-BFGS-B")
        return cls(np.asarray(result.x))

    def correction(self, features: np.ndarray) -> np.ndarray:
        """Log-odds shift of each candidate."""
        return np.asarray(features, dtype=float) @ self.weights

    def as_dict(self) -> dict[str, float]:
        """The weights by feature name (for the report)."""
        return {name: round(float(w), 4) for name, w in zip(FEATURE_NAMES, self.weights)}

    @classmethod
    def from_dict(cls, weights: dict[str, float]) -> Recalibration:
        """Weights by feature name (:meth:`as_dict`); every name of :data:`FEATURE_NAMES` and no other."""
        missing = [name for name in FEATURE_NAMES if name not in weights]
        unknown = [name for name in weights if name not in FEATURE_NAMES]
        if missing or unknown:
            raise ValueError(f"recalibration weights do not match the features: missing {missing or 'none'}, "
                             f"unknown {unknown or 'none'}")
        return cls(np.array([float(weights[name]) for name in FEATURE_NAMES]))


def load_prior(path: str | Path) -> Recalibration:
    """The recalibration stored at ``path``: a prior (JSON with a ``weights`` mapping) or a campaign report.

    A campaign report's ``recalibration`` (the weights its loop learned by the end) carries one
    campaign's learning to the next.
    """
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"no recalibration prior at {path}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"recalibration prior {path} is not JSON: {exc.msg} (line {exc.lineno})") from None
    weights = document.get("weights", document.get("recalibration")) if isinstance(document, dict) else None
    if not isinstance(weights, dict):
        raise ValueError(f"recalibration prior {path} has no 'weights' (or campaign 'recalibration') mapping")
    return Recalibration.from_dict(weights)
