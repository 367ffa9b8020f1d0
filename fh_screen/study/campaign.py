"""A simulated discovery campaign: does feeding calculations back into the screen find more?

An *oracle* table (``formula``, ``target`` in eV/atom; for the shipped study ``val.csv``) plays
DFT and a *known* table of the same format (``train.csv``) holds what is computed at the start.
For each of ``n_systems`` seeded 2–4 element systems (drawn like the rediscovery test of
:mod:`fh_screen.study.evaluation`: element sets of oracle compounds with a compound of their own
elements on the true hull), four strategies spend ``budget`` calculations:

``loop``
    rounds of ``per_round`` picks, played in step across every system of the campaign (a group
    running many systems at once): each round ranks the candidates that are not computed yet,
    picks the best ``per_round``, "computes" them (the oracle's ΔH_f; a composition the oracle
    lacks counts as computed, not stable, and returns no energy), adds every returned energy to
    the known phases and re-screens (the hull moves). Between rounds it learns, from every
    calculation so far in every system, a logistic recalibration of the ranked column
    (:mod:`fh_screen.study.campaign_learning`: element count against the system's, whether it
    drops the system's anions, formula-unit size, charge balance, temperature, and what earlier
    calculations of the same element set returned), from zero or from a prior's weights
    (``learned_prior_path``). A calculation that found nothing on the
    hull (no energy, or an energy above the known hull: never a target anywhere) is shared with
    every system of the campaign holding its elements at the end of its round, as a group's
    store would: it is not computed again, and an absent one cuts its neighbours there too; a
    composition another system computes in the same round waits for that result, except in the
    last round (``share_outcomes``). Optional corrections (knobs): a calculation the oracle
    lacks cuts its neighbours' scores, a kernel-weighted mean of residuals shifts predicted
    energies, a per-element-set rate of discoveries, a diversity cut near pending picks.
``one_shot``
    the top ``budget`` new candidates of the first screen.
``one_shot_diverse``
    the first screen's candidates picked one by one with the loop's diversity penalty near every
    earlier pick: the loop's selection rule without any feedback.
``random``
    uniform picks among the new candidates (reported as the expectation, no sampling noise).

A *discovery* is a pick that is a new compound on the oracle's true hull: an oracle compound
of the system or one of its subsystems (at most 20 atoms per formula unit, not in the known
table) whose ΔH_f is on the hull of known + oracle entries at their DFT values (E_hull ≤ 1
meV/atom). The ranking uses one column of the screen table (``p_stable`` by default: the
probability that DFT puts a candidate on the known hull; ``stability_score`` also works), so
whatever makes that column better makes every strategy better; the campaign measures what the
feedback adds on top.

The ratios loop / one-shot and loop / diversified one-shot come with a bootstrap 95 % interval
over systems (pooled across seeds). Only the picks the oracle holds return an energy (about one
in four with ``val.csv``), so this testbed undervalues feedback: see ``docs/campaign.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fh_screen.chem.formula import DEFAULT_ELEMENTS
from fh_screen.errors import FhScreenError
from fh_screen.io import save_figure
from fh_screen.study.campaign_learning import (
    ABOVE_HULL,
    NO_ENERGY,
    SUCCESS,
    Recalibration,
    anion_columns,
    candidate_features,
    element_set_keys,
    load_prior,
    set_outcome_counts,
)

if TYPE_CHECKING:
    from fh_screen.data import OqmdSet
    from fh_screen.screening.analogues import AnalogueIndex
    from fh_screen.models.predictor import Predictor

logger = logging.getLogger(__name__)

#: Seed of the bootstrap behind every ratio's 95 % interval (reports are reproducible).
BOOTSTRAP_SEED = 12345

__all__ = [
    "BOOTSTRAP_SEED",
    "RANKABLE_COLUMNS",
    "STRATEGIES",
    "CampaignError",
    "CampaignOptions",
    "CampaignSystem",
    "SystemOutcome",
    "bootstrap_ratio_ci95",
    "campaign_systems",
    "run_campaign",
    "run_system",
    "summarize",
    "write_campaign_figure",
]

#: The strategies a campaign compares, in the order of the report.
STRATEGIES = ("loop", "one_shot", "one_shot_diverse", "random")
#: Floor of σ in the residual correction (eV/atom): a model without σ is treated as this sure.
MIN_STD_EV_PER_ATOM = 0.02
#: Screen table columns a campaign can rank on (higher is better).
RANKABLE_COLUMNS = ("p_stable", "stability_score")


def _is_whole(value: Any) -> bool:
    import numbers

    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


class CampaignError(FhScreenError):
    """A campaign that cannot run: bad options, an unreadable table, no eligible system."""


class CampaignOptions(BaseModel):
    """Knobs of a simulated campaign (defaults: the protocol of the issue, tuned on seeds 7, 2, 3 and 4)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_systems: int = Field(100, ge=1, description="systems per seed")
    budget: int = Field(10, ge=1, description="calculations per system")
    per_round: int = Field(2, ge=1, description="calculations per round of the loop")
    seeds: tuple[Annotated[int, Field(ge=0, le=2**32 - 1)], ...] = Field((0,), min_length=1, description="seeds of the system draw "
                                                            "(0 to 2**32 - 1); pooled")
    score_column: str = Field("p_stable", description="screen table column ranked on (higher is better)")
    kernel_width: float = Field(0.03, gt=0, description="width of the composition kernel (fraction space)")
    diversity_strength: float = Field(0.0, ge=0, lt=1, description="score cut at a pending pick (loop and diverse)")
    absent_strength: float = Field(0.3, ge=0, lt=1, description="score cut at a calculation the oracle lacks (loop)")
    presence_boost: float = Field(0.0, ge=0, description="score gain at a calculation that returned an energy (loop)")
    residual_prior_weight: float = Field(1.0, gt=0, description="pseudo-weight shrinking the residual correction to 0")
    set_rate_shape: float = Field(0.0, ge=0, description="shape a of the per-element-set rate of discoveries (loop): each "
                                  "set's scores scale by (a + discoveries) / (a + Σ p of its calculations); 0: off")
    hull_update: bool = Field(True, description="re-screen with the returned energies among the known phases (loop)")
    learned_correction: bool = Field(True, description="learn a logistic recalibration of the ranking across systems from "
                                     "the loop's calculations after every round (loop; fh_screen.study.campaign_learning)")
    learned_l2: float = Field(2.0, gt=0, description="L2 penalty of the learned recalibration (larger: closer to the screen, "
                              "or to the prior)")
    learned_prior_path: str | None = Field(
        None, description="start the learned recalibration from, and shrink it toward, these weights instead of zero: a "
                          "JSON file with a 'weights' mapping (scripts/build_campaign_prior.py: a rehearsal on train.csv "
                          "alone) or an earlier campaign's report (its 'recalibration'); off by default: neither a "
                          "rehearsal's weights nor their feedback features alone found more on the tuning seeds (loop)")
    share_outcomes: bool = Field(True, description="a calculation that found no compound on the hull (no energy, or "
                                 "above the known hull) is seen by every system of the campaign holding its elements: "
                                 "not computed again, its energy among the known phases, an absent one cuts its neighbours; "
                                 "and a composition another system computes this round waits for its result, "
                                 "except in the last round (loop)")
    success_tolerance_ev_per_atom: float | None = Field(
        None, ge=0, le=1,
        description="how far above the known hull a returned energy may lie and still count as a compound found: the "
                    "label the loop learns from, its element-set outcomes and what it shares as a miss (eV/atom; "
                    "None: the screen's P(stable) window, 0.05 by default; a discovery's own 1 meV/atom found no more "
                    "on the tuning seeds)")
    residual_correction: bool = Field(False, description="shift predictions by the kernel-weighted residuals (loop; off by default: it lost discoveries on seed 7 with the calibrated p_stable order)")
    bootstrap: int = Field(2000, ge=100, description="bootstrap resamples of systems")

    @classmethod
    def checked(cls, values: Mapping[str, Any] | CampaignOptions | None = None, /, *,
                labels: Mapping[str, str] | None = None, **fields: Any) -> CampaignOptions:
        """Options from ``values`` and ``fields``; a bad one raises :class:`CampaignError` (one line).

        The line names the option at fault, as ``labels`` calls it (the CLI passes its flags),
        else ``campaign option NAME``; the one check across options (a round larger than the
        budget) names ``per_round``. A :class:`CampaignOptions` without ``fields`` is returned as is.
        """
        if isinstance(values, CampaignOptions):
            if not fields:
                return values
            values = values.model_dump()
        data = {str(k): v for k, v in {**(values or {}), **fields}.items()}
        try:
            return cls(**data)
        except ValidationError as exc:
            error = exc.errors()[0]
        name = str(error["loc"][0]) if error.get("loc") else "per_round"
        if error["type"] == "extra_forbidden":
            raise CampaignError(f"unknown campaign option {name!r}; known: {', '.join(cls.model_fields)}") from None
        message = str(error["msg"]).removeprefix("Value error, ")
        if error.get("loc") and error["type"] != "value_error":  # pydantic's own words do not quote the value
            message += f" (got {error.get('input')!r})"
        raise CampaignError(f"{(labels or {}).get(name, f'campaign option {name}')}: {message}") from None

    @field_validator("n_systems", "budget", "per_round", "bootstrap", mode="before")
    @classmethod
    def _whole_number(cls, value: Any) -> Any:
        # the one rule of fh_screen.errors.check_count: a whole number, never a bool, a float or a text
        if not _is_whole(value):
            raise ValueError(f"must be a whole number, got {value!r}")
        return value

    @field_validator("seeds", mode="before")
    @classmethod
    def _whole_seeds(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            for seed in value:
                if not _is_whole(seed):
                    raise ValueError(f"must be a whole number from 0 to {2**32 - 1} (2**32 - 1), got {seed!r}")
        return value

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        repeated = sorted({seed for seed in value if value.count(seed) > 1})
        if repeated:
            raise ValueError(f"seed {repeated[0]} is given more than once (each seed draws its own systems, which "
                             f"seeds pool: a repeated seed would count the same systems twice)")
        return value

    @field_validator("score_column")
    @classmethod
    def _known_score_column(cls, value: str) -> str:
        if value not in RANKABLE_COLUMNS:
            raise ValueError(f"cannot rank on {value!r}: choose one of {', '.join(RANKABLE_COLUMNS)}")
        return value

    @model_validator(mode="after")
    def _round_fits_the_budget(self) -> "CampaignOptions":
        if self.per_round > self.budget:
            raise ValueError(f"a round of {self.per_round} calculations exceeds the budget of {self.budget} per system")
        return self


@dataclass(frozen=True)
class CampaignSystem:
    """One system of a campaign: its known phases, what the oracle would return, and the targets."""

    chemsys: tuple[str, ...]
    known: pd.DataFrame
    oracle_ev_per_atom: dict[str, float]
    targets: frozenset[str]
    seed: int = 0


@dataclass
class SystemOutcome:
    """What each strategy picked in one system, in pick order, and whether each pick was a discovery."""

    chemsys: str
    seed: int
    n_targets: int
    n_unknown: int
    picks: dict[str, list[str]] = field(default_factory=dict)
    hits: dict[str, list[bool]] = field(default_factory=dict)
    with_energy: dict[str, list[bool]] = field(default_factory=dict)
    random_expected: float = 0.0

    def discoveries(self, strategy: str) -> float:
        """Discoveries of ``strategy`` (``random``: the expectation)."""
        return self.random_expected if strategy == "random" else float(sum(self.hits[strategy]))


def _reduced(formula: str) -> str:
    """fh-screen's one reducer (:func:`fh_screen.chem.formula.reduced_formula`: ``Fe0.4O0.6`` is ``Fe2O3``, as
    the screen's candidates are written)."""
    from fh_screen.chem.formula import reduced_formula

    return reduced_formula(formula)


def _counts(formulas: Sequence[str], chemsys: Sequence[str]) -> np.ndarray:
    """Reduced integer counts of screen-table ``formulas`` over ``chemsys``."""
    from fh_screen.study.evaluation import _counts_of_formulas

    return _counts_of_formulas(list(formulas), list(chemsys))


def _composition_key(counts: np.ndarray, chemsys: Sequence[str]) -> tuple[tuple[str, int], ...]:
    """A reduced composition as sorted (element, count) pairs: the same key in every system holding its elements."""
    return tuple(sorted((element, int(n)) for element, n in zip(chemsys, counts) if n > 0))


def _fractions(formulas: Sequence[str], chemsys: Sequence[str]) -> np.ndarray:
    """Atomic fractions of screen-table ``formulas`` over ``chemsys`` (rows sum to 1)."""
    counts = _counts(formulas, chemsys).astype(np.float64)
    return counts / counts.sum(axis=1, keepdims=True)


def campaign_systems(known: OqmdSet, oracle: OqmdSet, n_systems: int, seed: int) -> list[CampaignSystem]:
    """Draw ``n_systems`` systems (seeded) the way :func:`fh_screen.study.evaluation.rediscovery` does.

    Eligible: element sets of 2–4 elements of oracle compounds (≤ 20 atoms per formula unit,
    ΔH_f in range); a drawn system counts when an oracle compound of its own elements is on the
    true hull (known + oracle at DFT values). Its targets are the oracle compounds of the system
    and its subsystems on that hull that the known table lacks.
    """
    from fh_screen.study.evaluation import drawn_systems

    systems: list[CampaignSystem] = []
    for drawn in drawn_systems(known, oracle, seed):
        if len(systems) >= n_systems:
            break
        system, k_rows, o_rows, stable = drawn.system, drawn.known_rows, drawn.hidden_rows, drawn.stable_rows
        if not any(oracle.systems[i] == system for i in stable):
            continue
        known_keys = {_reduced(known.formulas[i]) for i in k_rows}
        oracle_values: dict[str, float] = {}
        for i in o_rows:
            key = _reduced(oracle.formulas[i])
            oracle_values[key] = min(oracle_values.get(key, np.inf), float(oracle.dhf_ev_per_atom[i]))
        targets = frozenset(_reduced(oracle.formulas[i]) for i in stable) - known_keys
        if not targets:
            continue
        frame = pd.DataFrame({"formula": [known.formulas[i] for i in k_rows],
                              "dhf_ev_per_atom": known.dhf_ev_per_atom[k_rows]})
        chemsys = tuple(DEFAULT_ELEMENTS[j] for j in system)
        systems.append(CampaignSystem(chemsys, frame, oracle_values, targets, seed))
    return systems


class _Ranking:
    """The candidates of one screen table that are not computed, with their fractions and scores."""

    def __init__(self, table: pd.DataFrame, chemsys: Sequence[str], column: str, cache: dict[str, np.ndarray]):
        if column not in table.columns:
            raise CampaignError(f"the screen table has no column {column!r} to rank on")
        self.chemsys = tuple(chemsys)
        new = table[~table["is_known"].to_numpy(bool)]
        self.formulas = new["formula"].tolist()
        missing = [f for f in self.formulas if f not in cache]
        if missing:
            cache.update(zip(missing, _counts(missing, chemsys)))
        self.counts = np.array([cache[f] for f in self.formulas], dtype=np.int64).reshape(len(self.formulas), len(chemsys))
        self.fractions = self.counts / np.maximum(self.counts.sum(axis=1, keepdims=True), 1)
        self.composition_keys = [_composition_key(row, self.chemsys) for row in self.counts]
        self.set_keys = element_set_keys(self.counts)
        score = new[column].to_numpy(np.float64)
        if column == "p_stable":
            clipped = np.clip(score, 1e-300, None)
            self.log_score = np.log(clipped)
            self.log_odds = self.log_score - np.log1p(-np.minimum(clipped, 1 - 1e-9))
        else:
            self.log_score = score.copy()
            self.log_odds = score.copy()
        self.order_tie = new["rank"].to_numpy(np.float64)
        # a saturated probability (many candidates at p = 1) is ordered by the screen's own score
        self.second = (new["stability_score"].to_numpy(np.float64) if "stability_score" in new and column != "stability_score"
                       else np.zeros(len(new)))
        self.dhf_pred = new["dhf_pred_ev_per_atom"].to_numpy(np.float64)
        self.e_hull = new["e_above_hull_pred_ev_per_atom"].to_numpy(np.float64)
        std = new["dhf_std_ev_per_atom"].to_numpy(np.float64) if "dhf_std_ev_per_atom" in new else np.zeros(len(new))
        self.std = np.maximum(np.nan_to_num(std, nan=0.0), MIN_STD_EV_PER_ATOM)
        self.charge_balanced = (new["charge_balanced"].to_numpy(bool) if "charge_balanced" in new
                                else np.full(len(new), True))

    def kernel(self, points: np.ndarray, width: float) -> np.ndarray:
        """Gaussian kernel (candidates × points) of the distance in fraction space."""
        if len(points) == 0:
            return np.zeros((len(self.formulas), 0))
        d2 = ((self.fractions[:, None, :] - points[None, :, :]) ** 2).sum(axis=2)
        k = np.exp(-d2 / (2 * width**2))
        k[d2 > (3 * width) ** 2] = 0.0  # truncated at 3 widths: a far calculation changes nothing
        return k


def _pick(ranking: _Ranking, correction: np.ndarray, available: np.ndarray, n: int, options: CampaignOptions) -> list[int]:
    """``n`` rows picked one at a time; each pick cuts its neighbours' scores (the diversity rule).

    Rows are ordered by the ranked column plus ``correction`` (log scale), then by the screen's
    ``stability_score`` plus the same correction, then by the table's rank.
    """
    correction = np.where(available, correction, -np.inf)
    picks: list[int] = []
    for _ in range(min(n, int(available.sum()))):
        best = int(np.lexsort((ranking.order_tie, -(ranking.second + correction), -(ranking.log_score + correction)))[0])
        picks.append(best)
        correction[best] = -np.inf
        cut = options.diversity_strength * ranking.kernel(ranking.fractions[best][None, :], options.kernel_width)[:, 0]
        correction = correction + np.log1p(-cut)
    return picks


def _feedback(ranking: _Ranking, computed: list[tuple[str, float | None, float]], options: CampaignOptions,
              tolerance_ev_per_atom: float, shared_absent: Sequence[str] = ()) -> np.ndarray:
    """Log-score correction of each candidate from the calculations done so far.

    ``computed``: (formula, oracle ΔH_f or None, predicted ΔH_f, the known hull's ΔH_f there and
    the ranked probability, each at the time of the pick). ``tolerance_ev_per_atom``: the
    screen's P(stable) window (for the residual correction). ``shared_absent``: formulas other
    systems of the campaign computed without an energy (they cut their neighbours here too).
    """
    from scipy.stats import norm

    correction = np.zeros(len(ranking.formulas))
    if shared_absent:
        k_shared = ranking.kernel(_fractions(list(shared_absent), ranking.chemsys), options.kernel_width)
        correction += np.log1p(-options.absent_strength * k_shared).sum(axis=1)
    if not computed:
        return correction
    points = _fractions([c[0] for c in computed], ranking.chemsys)
    k = ranking.kernel(points, options.kernel_width)
    has_energy = np.array([c[1] is not None for c in computed])
    if has_energy.any() and options.residual_correction:
        residual = np.array([c[1] - c[2] for c in computed if c[1] is not None])
        ke = k[:, has_energy]
        shift = (ke * residual).sum(axis=1) / (ke.sum(axis=1) + options.residual_prior_weight)
        before = norm.logcdf((tolerance_ev_per_atom - ranking.e_hull) / ranking.std)
        after = norm.logcdf((tolerance_ev_per_atom - ranking.e_hull - shift) / ranking.std)
        correction += np.nan_to_num(after - before)
    if has_energy.any():
        correction += np.log1p(options.presence_boost * k[:, has_energy]).sum(axis=1)
    if (~has_energy).any():
        correction += np.log1p(-options.absent_strength * k[:, ~has_energy]).sum(axis=1)
    if options.set_rate_shape > 0 and all(len(c) >= 5 for c in computed):
        correction += _set_rate(ranking, computed, options.set_rate_shape,
                                _success_tolerance(options, tolerance_ev_per_atom))
    return correction


def _success_tolerance(options: CampaignOptions, screen_window_ev_per_atom: float) -> float:
    """How far above the known hull a returned energy still counts as a compound found (eV/atom)."""
    if options.success_tolerance_ev_per_atom is None:
        return screen_window_ev_per_atom
    return options.success_tolerance_ev_per_atom


def _found_on_hull(value_ev_per_atom: float | None, hull_ev_per_atom: float, tolerance_ev_per_atom: float) -> bool:
    """Whether a calculation returned an energy on the known hull at its composition (a success)."""
    return value_ev_per_atom is not None and value_ev_per_atom <= hull_ev_per_atom + tolerance_ev_per_atom


def _set_rate(ranking: _Ranking, computed: list[tuple], shape: float, tolerance_ev_per_atom: float) -> np.ndarray:
    """Log multiplier of each candidate's score from the calculations in its element set.

    Each element set (the elements a composition holds) gets a rate of discoveries λ with a
    Gamma(shape, shape) prior (mean 1); a calculation of probability p that found a compound on
    the known hull counts a success, so λ's posterior mean is (a + successes) / (a + Σ p).
    """
    support = ranking.fractions > 0
    keys = support @ (1 << np.arange(support.shape[1]))
    picked_keys = (_fractions([c[0] for c in computed], ranking.chemsys) > 0) @ (1 << np.arange(support.shape[1]))
    out = np.zeros(len(ranking.formulas))
    for key in np.unique(picked_keys):
        mine = [c for c, k in zip(computed, picked_keys) if k == key]
        successes = sum(1 for c in mine if _found_on_hull(c[1], c[3], tolerance_ev_per_atom))
        expected = sum(c[4] for c in mine)
        out[keys == key] = np.log((shape + successes) / (shape + expected))
    return out


class _SystemLoop:
    """One system of a campaign: the first screen, the one-shot lists, and the loop's state round by round."""

    def __init__(self, system: CampaignSystem, predictor: Predictor, options: CampaignOptions, screen_options,
                 analogues: AnalogueIndex | None = None) -> None:
        from fh_screen.screening import screen

        self.system, self.predictor, self.options, self.screen_options = system, predictor, options, screen_options
        self.analogues = analogues
        #: the screen's P(stable) window (the residual correction's) and how close to the hull a result is a success
        self.screen_tolerance = screen_options.e_hull_tolerance_ev_per_atom
        self.tolerance = _success_tolerance(options, self.screen_tolerance)
        self.cache: dict[str, np.ndarray] = {}
        first = screen(system.chemsys, predictor=predictor, known=system.known, options=screen_options,
                       analogues=analogues)
        self.chemsys = first.chemsys
        base = _Ranking(first.table, self.chemsys, options.score_column, self.cache)
        n_unknown = len(base.formulas)
        self.budget = min(options.budget, n_unknown)
        listed = {tuple(np.round(row, 9)) for row in base.fractions}
        n_targets_listed = sum(tuple(np.round(row, 9)) in listed
                               for row in _fractions(sorted(system.targets), self.chemsys))
        self.outcome = SystemOutcome("-".join(self.chemsys), system.seed, len(system.targets), n_unknown)
        self.outcome.random_expected = self.budget * n_targets_listed / n_unknown if n_unknown else 0.0
        top = np.lexsort((base.order_tie, -base.second, -base.log_score))[: self.budget]
        self._record("one_shot", [base.formulas[i] for i in top])
        diverse = _pick(base, np.zeros(n_unknown), np.ones(n_unknown, dtype=bool), self.budget, options)
        self._record("one_shot_diverse", [base.formulas[i] for i in diverse])
        self.ranking = base
        self.known = system.known
        self.computed: list[tuple[str, float | None, float, float, float]] = []
        self.computed_keys: list[int] = []
        self.computed_outcomes: list[int] = []
        self.picked: list[str] = []
        self.picked_keys: list[tuple[tuple[str, int], ...]] = []
        self.stalled = False
        #: what other systems of the campaign computed here without a compound on the hull
        self.shared_keys: set[tuple[tuple[str, int], ...]] = set()
        self.shared_absent: list[str] = []
        self.shared_energies: list[tuple[str, float]] = []
        #: the calculations that found nothing on the hull: (composition key, formula, ΔH_f or None)
        self.misses: list[tuple[tuple[tuple[str, int], ...], str, float | None]] = []
        self._misses_sent = 0
        #: (features, log-odds, success) of each calculation at the time of its pick
        self.examples: list[tuple[np.ndarray, float, bool]] = []

    def _record(self, strategy: str, formulas: list[str]) -> None:
        reduced = [_reduced(f) for f in formulas]
        self.outcome.picks[strategy] = formulas
        self.outcome.hits[strategy] = [r in self.system.targets for r in reduced]
        self.outcome.with_energy[strategy] = [r in self.system.oracle_ev_per_atom for r in reduced]

    @property
    def done(self) -> bool:
        """Whether the loop has spent its budget (or has nothing left to pick)."""
        return self.stalled or len(self.picked) >= self.budget

    def play_round(self, recalibration: Recalibration, in_flight: frozenset = frozenset()) -> None:
        """Pick ``per_round`` candidates, compute them with the oracle, and re-screen if energies came back.

        ``in_flight``: composition keys other systems compute this round; unless this is the last
        round, they wait for that result (a miss is then shared, a discovery stays to pick).
        """
        from fh_screen.screening import screen

        ranking, options = self.ranking, self.options
        available = ~np.isin(np.asarray(ranking.formulas, dtype=object), np.asarray(self.picked, dtype=object))
        if self.shared_keys:
            available &= np.array([key not in self.shared_keys for key in ranking.composition_keys])
        n_picks = min(options.per_round, self.budget - len(self.picked))
        if in_flight and len(self.picked) + n_picks < self.budget:
            waiting = available & np.array([key in in_flight for key in ranking.composition_keys])
            if (available & ~waiting).sum() >= n_picks:
                available &= ~waiting
        set_counts = set_outcome_counts(ranking.set_keys, np.asarray(self.computed_keys, dtype=np.int64),
                                        np.asarray(self.computed_outcomes, dtype=np.int64))
        features = candidate_features(ranking.counts, ranking.charge_balanced, ranking.log_odds, set_counts,
                                      anion_columns(ranking.chemsys))
        correction = _feedback(ranking, self.computed, options, self.screen_tolerance, self.shared_absent)
        if options.learned_correction:
            correction = correction + recalibration.correction(features)
        rows = _pick(ranking, correction, available, n_picks, options)
        if not rows:
            self.stalled = True
            return
        news = []
        for row in rows:
            formula = ranking.formulas[row]
            value = self.system.oracle_ev_per_atom.get(_reduced(formula))
            hull_here = float(ranking.dhf_pred[row] - ranking.e_hull[row])  # the known hull at this composition
            success = _found_on_hull(value, hull_here, self.tolerance)
            self.computed.append((formula, value, float(ranking.dhf_pred[row]), hull_here,
                                  float(np.exp(ranking.log_score[row]))))
            self.computed_keys.append(int(ranking.set_keys[row]))
            self.computed_outcomes.append(SUCCESS if success else ABOVE_HULL if value is not None else NO_ENERGY)
            self.examples.append((features[row], float(ranking.log_odds[row]), success))
            self.picked.append(formula)
            self.picked_keys.append(ranking.composition_keys[row])
            if value is not None:
                news.append((formula, value))
            if not success:
                self.misses.append((ranking.composition_keys[row], formula, value))
        if news and options.hull_update and not self.done:
            news, self.shared_energies = self.shared_energies + news, []
            self.known = pd.concat([self.known, pd.DataFrame(news, columns=["formula", "dhf_ev_per_atom"])],
                                   ignore_index=True)
            result = screen(self.system.chemsys, predictor=self.predictor, known=self.known, options=self.screen_options,
                            analogues=self.analogues)
            self.ranking = _Ranking(result.table, self.chemsys, options.score_column, self.cache)

    def new_misses(self) -> list[tuple[tuple[tuple[str, int], ...], str, float | None]]:
        """This system's misses since the last call (what it shares at the end of a round)."""
        fresh = self.misses[self._misses_sent:]
        self._misses_sent = len(self.misses)
        return fresh

    def receive(self, misses: Sequence[tuple[tuple[tuple[str, int], ...], str, float | None]]) -> None:
        """Take in other systems' calculations that found nothing on the hull, where this system holds their elements.

        Such a composition is never a target here either (no energy: the oracle lacks it; above
        the known hull: above the true hull too), so it is not computed again; an energy joins
        the known phases at the next re-screen, an absent one cuts its neighbours' scores.
        """
        elements = set(self.chemsys)
        own = {key for key, _, _ in self.misses}
        for key, formula, value in misses:
            if key in self.shared_keys or key in own or not {element for element, _ in key} <= elements:
                continue
            self.shared_keys.add(key)
            if value is None:
                self.shared_absent.append(formula)
            else:
                self.shared_energies.append((formula, value))

    def finish(self) -> SystemOutcome:
        """The outcome, with the loop's picks recorded."""
        self._record("loop", self.picked)
        return self.outcome


def _recalibration_prior(options: CampaignOptions) -> Recalibration:
    """Where the learned recalibration starts and is shrunk toward: zero, or ``learned_prior_path``'s weights."""
    if not options.learned_correction or options.learned_prior_path is None:
        return Recalibration.none()
    try:
        return load_prior(options.learned_prior_path)
    except ValueError as exc:
        raise CampaignError(str(exc)) from None


def _fit_recalibration(loops: Sequence[_SystemLoop], options: CampaignOptions, prior: Recalibration) -> Recalibration:
    """The recalibration learned from every calculation so far, in every system of the campaign."""
    examples = [e for loop in loops for e in loop.examples]
    if not options.learned_correction:
        return Recalibration.none()
    features = np.array([e[0] for e in examples])
    return Recalibration.fit(features, np.array([e[1] for e in examples]), np.array([e[2] for e in examples]),
                             options.learned_l2, prior=prior)


def _play(systems: Sequence[CampaignSystem], predictor: Predictor, options: CampaignOptions, screen_options,
          progress: Callable[[int, int], None] | None = None,
          analogues: AnalogueIndex | None = None) -> tuple[list[SystemOutcome], Recalibration]:
    """Screen every system once, then play the loop's rounds in step across systems, learning between rounds."""
    from fh_screen.screening import ScreenOptions

    screen_options = screen_options or ScreenOptions()
    n_rounds = -(-options.budget // options.per_round)
    total = len(systems) * (1 + n_rounds)
    prior = _recalibration_prior(options)
    loops = []
    for system in systems:
        loops.append(_SystemLoop(system, predictor, options, screen_options, analogues))
        if progress is not None:
            progress(len(loops), total)
    recalibration = prior
    for round_index in range(n_rounds):
        in_flight: set[tuple[tuple[str, int], ...]] = set()
        for i, loop in enumerate(loops):
            if not loop.done:
                n_before = len(loop.picked)
                loop.play_round(recalibration, frozenset(in_flight) if options.share_outcomes else frozenset())
                in_flight.update(loop.picked_keys[n_before:])
            if progress is not None:
                progress(len(loops) * (1 + round_index) + i + 1, total)
        if options.share_outcomes:
            misses = [miss for loop in loops for miss in loop.new_misses()]
            for loop in loops:
                loop.receive(misses)
        recalibration = _fit_recalibration(loops, options, prior)
        logger.debug("campaign round %d: recalibration %s", round_index + 1, recalibration.as_dict())
    return [loop.finish() for loop in loops], recalibration


def run_system(system: CampaignSystem, predictor: Predictor, options: CampaignOptions,
               screen_options=None) -> SystemOutcome:
    """Run the four strategies on one system alone (the loop learns from this system's calculations only)."""
    return _play([system], predictor, options, screen_options)[0][0]


def bootstrap_ratio_ci95(numerator: np.ndarray, denominator: np.ndarray, n: int,
                         seed: int = BOOTSTRAP_SEED) -> list[float]:
    """Percentile 95 % interval of sum(numerator)/sum(denominator) over systems resampled with replacement.

    ``numerator`` and ``denominator`` hold one value per system (discoveries of two strategies);
    ``n`` resamples; a resample whose denominator is zero is left out.
    """
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(numerator), size=(n, len(numerator)))
    top = numerator[draws].sum(axis=1)
    bottom = denominator[draws].sum(axis=1)
    ratios = top[bottom > 0] / bottom[bottom > 0]
    if len(ratios) == 0:
        return [float("nan"), float("nan")]
    return [float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))]


def summarize(outcomes: Sequence[SystemOutcome], options: CampaignOptions) -> dict:
    """The campaign report: discoveries per strategy, ratios with bootstrap intervals, the curve."""
    if not outcomes:
        raise CampaignError("no system to summarize")
    totals = {s: float(sum(o.discoveries(s) for o in outcomes)) for s in STRATEGIES}
    per_system = {s: np.array([o.discoveries(s) for o in outcomes]) for s in STRATEGIES}
    budget = options.budget
    curve: dict[str, list[float]] = {}
    for s in ("loop", "one_shot", "one_shot_diverse"):
        steps = np.zeros(budget)
        for o in outcomes:
            hits = np.array(o.hits[s], dtype=float)
            cumulative = np.cumsum(hits)
            padded = np.concatenate([cumulative, np.full(budget - len(cumulative), cumulative[-1] if len(cumulative) else 0.0)])
            steps += padded
        curve[s] = steps.tolist()
    curve["random"] = [float(sum(o.random_expected * (n / budget) for o in outcomes)) for n in range(1, budget + 1)]
    n_picks = {s: sum(len(o.picks[s]) for o in outcomes) for s in ("loop", "one_shot", "one_shot_diverse")}
    with_energy = {s: sum(sum(o.with_energy[s]) for o in outcomes) for s in n_picks}

    def ratio(a: str, b: str) -> dict:
        value = totals[a] / totals[b] if totals[b] else float("nan")
        return {"ratio": value, "ci95": bootstrap_ratio_ci95(per_system[a], per_system[b], options.bootstrap)}

    return {
        "loop_discoveries": totals["loop"],
        "one_shot_discoveries": totals["one_shot"],
        "one_shot_diverse_discoveries": totals["one_shot_diverse"],
        "random_discoveries": totals["random"],
        "picks_with_energy_share": with_energy["loop"] / n_picks["loop"] if n_picks["loop"] else float("nan"),
        "picks_with_energy_share_by_strategy": {s: with_energy[s] / n_picks[s] if n_picks[s] else float("nan")
                                                for s in n_picks},
        "picks": n_picks,
        "ratios": {
            "loop_over_one_shot": ratio("loop", "one_shot"),
            "loop_over_one_shot_diverse": ratio("loop", "one_shot_diverse"),
            "one_shot_diverse_over_one_shot": ratio("one_shot_diverse", "one_shot"),
            "loop_over_random": ratio("loop", "random"),
        },
        "curve": {"calculations": list(range(1, budget + 1)), **curve},
        "n_systems": len(outcomes),
        "n_targets": int(sum(o.n_targets for o in outcomes)),
        "options": options.model_dump(mode="json"),
        "systems": [
            {"chemsys": o.chemsys, "seed": o.seed, "n_targets": o.n_targets, "n_unknown": o.n_unknown,
             "picks": o.picks, "hits": o.hits, "with_energy": o.with_energy, "random_expected": o.random_expected}
            for o in outcomes
        ],
    }


def run_campaign(known: OqmdSet, oracle: OqmdSet, predictor: Predictor,
                 options: CampaignOptions | Mapping[str, Any] = CampaignOptions(), *,
                 progress: Callable[[int, int], None] | None = None, screen_options=None,
                 analogues: AnalogueIndex | None = None) -> dict:
    """Draw the systems of every seed, run the strategies on each, and return :func:`summarize`'s report.

    ``options``: :class:`CampaignOptions` or a mapping of them (checked by
    :meth:`CampaignOptions.checked`). ``analogues``: the index of known compositions whose
    analogues P(stable) counts (default: the shipped one, of train.csv; a rehearsal on a carve of
    train.csv passes one of the rest). An empty table raises :class:`CampaignError`.
    """
    options = CampaignOptions.checked(options)
    for label, table in (("known", known), ("oracle", oracle)):
        if len(table) == 0:
            raise CampaignError(f"the {label} table has no usable rows")
    systems = [s for seed in options.seeds for s in campaign_systems(known, oracle, options.n_systems, seed)]
    if not systems:
        raise CampaignError("no eligible system: the oracle holds no new compound on the hull of a 2–4 element system")
    outcomes, recalibration = _play(systems, predictor, options, screen_options, progress, analogues)
    report = summarize(outcomes, options)
    report["recalibration"] = recalibration.as_dict()
    report["model"] = f"{predictor.name}@{predictor.version}"
    return report


def write_campaign_figure(report: dict, path: str | Path) -> Path:
    """Cumulative discoveries against calculations per system, one line per strategy (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    curve = report["curve"]
    x = curve["calculations"]
    n = report["n_systems"]
    labels = {"loop": "loop (feedback each round)", "one_shot": "one-shot top-B",
              "one_shot_diverse": "one-shot, diversified", "random": "random (expectation)"}
    figure, ax = plt.subplots(figsize=(6.4, 4.2))
    for strategy in STRATEGIES:
        ax.plot(x, np.asarray(curve[strategy]) / n, marker="o" if strategy == "loop" else None, label=labels[strategy],
                linestyle="--" if strategy == "one_shot_diverse" else "-")  # dashed: visible where it equals the one-shot
    r = report["ratios"]["loop_over_one_shot"]
    rd = report["ratios"]["loop_over_one_shot_diverse"]
    ax.set_xlabel("calculations per system")
    ax.set_ylabel("new stable compounds per system (cumulative)")
    ax.set_title(f"{n} systems: loop/one-shot {r['ratio']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}], "
                 f"loop/diverse {rd['ratio']:.2f}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    figure.tight_layout()
    save_figure(figure, path, dpi=120)
    plt.close(figure)
    return path
