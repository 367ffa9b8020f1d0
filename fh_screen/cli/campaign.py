"""``fh-screen campaign``: a simulated discovery campaign (an oracle table plays DFT).

See :mod:`fh_screen.study.campaign` for the protocol; the report is JSON (``--json``) and, with
``--figure``, a PNG of cumulative discoveries against calculations.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from fh_screen.cli.common import check_outputs, fail, is_stdout, one_line_errors, status_console, write_json_file
from fh_screen.errors import FhScreenError, one_line

__all__ = ["register"]

#: CampaignOptions fields and the flags that set them, for one-line errors.
_FLAGS = {"n_systems": "--systems", "budget": "--budget", "per_round": "--per-round", "seeds": "--seed",
          "score_column": "--rank-by"}


def campaign_command(
    oracle: Optional[Path] = typer.Option(None, "--oracle", help="CSV (formula,target eV/atom) that plays DFT (default: shared oqmd/val.csv)."),
    known: Optional[Path] = typer.Option(None, "--known", help="CSV of the phases known at the start (default: shared oqmd/train.csv)."),
    systems: int = typer.Option(100, "--systems", min=1, help="Chemical systems per seed (2-4 elements)."),
    budget: int = typer.Option(10, "--budget", min=1, help="Calculations per system."),
    per_round: int = typer.Option(2, "--per-round", min=1, help="Calculations per round of the loop."),
    seed: List[int] = typer.Option([0], "--seed", help="Seed of the system draw; repeat to pool seeds."),
    score_column: str = typer.Option("p_stable", "--rank-by", help="Screen table column ranked on (p_stable or stability_score)."),
    learn: bool = typer.Option(True, "--learn/--no-learn", help="The loop learns a recalibration across systems after each round."),
    share: bool = typer.Option(True, "--share/--no-share", help="Systems share their calculations that found nothing on the hull, "
                               "and a composition another system computes this round waits for its result."),
    prior: Optional[Path] = typer.Option(None, "--prior", help="Start the loop's learned recalibration from these weights: an "
                                         "earlier campaign's --json report, or a prior from scripts/build_campaign_prior.py."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Shipped model name (or name@version) or .pt path or model folder (default model)."),
    json_path: Path = typer.Option(..., "--json", help="Write the report here (JSON; '-': print it)."),
    figure: Optional[Path] = typer.Option(None, "--figure", help="Also write the discovery curve here (PNG)."),
) -> None:
    """Simulate a discovery campaign: the loop (feedback each round) against one-shot, diversified and random picks."""
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from fh_screen.study.campaign import CampaignError, CampaignOptions, run_campaign, write_campaign_figure
    from fh_screen.study.campaign_learning import load_prior
    from fh_screen.data import shared_data_dir
    from fh_screen.data import load_set
    from fh_screen.models.predictor import Predictor

    options = CampaignOptions.checked(n_systems=systems, budget=budget, per_round=per_round, seeds=tuple(seed),
                                      score_column=score_column, learned_correction=learn, share_outcomes=share,
                                      learned_prior_path=None if prior is None else str(prior), labels=_FLAGS)
    if prior is not None:
        try:
            load_prior(prior)
        except ValueError as exc:
            raise CampaignError(f"--prior: {exc}") from None
    check_outputs(json_path, figure, inputs={"the oracle table": oracle, "the known table": known})
    if figure is not None:
        if is_stdout(figure) or figure.suffix.lower() != ".png":
            fail(f"--figure needs a .png path, got {figure}")
    if oracle is None or known is None:
        missing = " and ".join(f"{flag} FILE" for flag, path in (("--oracle", oracle), ("--known", known)) if path is None)
        folder = shared_data_dir(instead=f"give {missing}")
        oracle = oracle or folder / "val.csv"
        known = known or folder / "train.csv"
    for label, path in (("--oracle", oracle), ("--known", known)):
        if path.is_dir():
            raise CampaignError(f"{label}: {path} is a folder, not a CSV file (formula,target)")
        if not path.is_file():
            raise CampaignError(f"{label}: no such file: {path}")
    if oracle.resolve() == known.resolve():
        raise CampaignError(f"--oracle and --known are the same file ({oracle}): the oracle must hold the compounds "
                            "the known table lacks (e.g. --oracle val.csv --known train.csv)")
    out = status_console(json_path)
    started = time.perf_counter()
    known_set = _load(load_set, known, "--known")  # refused as ingest and finetune refuse a table (check_rows)
    oracle_set = _load(load_set, oracle, "--oracle")
    predictor = Predictor.from_name(model)
    with Progress(TextColumn("campaign"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=out) as bar:
        task = bar.add_task("systems", total=systems * len(seed))
        report = run_campaign(known_set, oracle_set, predictor, options,
                              progress=lambda done, total: bar.update(task, completed=done, total=total))
    report["command"] = (f"fh-screen campaign --oracle {oracle} --known {known} --systems {systems} --budget {budget} "
                         f"--per-round {per_round} " + " ".join(f"--seed {s}" for s in seed)
                         + f" --rank-by {score_column}" + ("" if learn else " --no-learn")
                         + ("" if share else " --no-share") + (f" --prior {prior}" if prior else "")
                         + (f" --model {model}" if model else "") + f" --json {json_path}")
    report["seconds"] = round(time.perf_counter() - started, 1)
    write_json_file(report, json_path)
    if figure is not None:
        write_campaign_figure(report, figure)
    r, rd = report["ratios"]["loop_over_one_shot"], report["ratios"]["loop_over_one_shot_diverse"]
    out.print(f"{report['n_systems']} systems, {report['n_targets']} new stable compounds to find, {budget} calculations each: "
              f"loop {report['loop_discoveries']:.0f}, one-shot {report['one_shot_discoveries']:.0f}, diversified one-shot "
              f"{report['one_shot_diverse_discoveries']:.0f}, random {report['random_discoveries']:.1f}; loop/one-shot "
              f"{r['ratio']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}], loop/diversified {rd['ratio']:.3f} "
              f"[{rd['ci95'][0]:.3f}, {rd['ci95'][1]:.3f}]; {100 * report['picks_with_energy_share']:.0f} % of the loop's "
              f"picks returned an energy", highlight=False, soft_wrap=True)
    written = ([] if is_stdout(json_path) else [str(json_path)]) + ([str(figure)] if figure else [])
    if written:
        out.print(f"wrote {' and '.join(written)}", highlight=False, soft_wrap=True)


def _load(loader, path: Path, label: str):
    """``loader(path)`` with a file that is not a formula,target CSV, or a table ``ingest`` would refuse, reported as one line."""
    from fh_screen.study.campaign import CampaignError

    try:
        table = loader(path, refused="the campaign did not start")
    except FhScreenError as exc:  # an unknown element or a pure element's nonzero ΔH_f (check_rows)
        raise CampaignError(f"{label} {exc}") from None
    except (KeyError, ValueError, UnicodeDecodeError) as exc:
        raise CampaignError(f"{label} {path}: not a CSV with columns formula,target ({one_line(exc, with_type=True)})") from None
    if len(table) == 0:
        raise CampaignError(f"{label} {path}: no usable rows")
    return table


def register(app: typer.Typer) -> None:
    """Add ``campaign`` to the application."""
    app.command("campaign")(one_line_errors(campaign_command))
