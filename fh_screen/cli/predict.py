"""``fh-screen predict``: formulas on the command line or a CSV file in, ΔH_f out."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from fh_screen.cli.common import check_outputs, console, fail, is_stdout, one_line_errors, status_console, write_csv

__all__ = ["register"]


def predict_command(
    formulas: list[str] = typer.Argument(None, help="Formulas such as LiFePO4 Fe2O3."),
    input_csv: Optional[Path] = typer.Option(None, "--input", "-i", help="CSV file with a 'formula' column."),
    output_csv: Optional[Path] = typer.Option(None, "--output", "-o", help="Write every input column plus predictions here ('-': print the CSV)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Shipped model name (or name@version), or path to a .pt checkpoint or a model folder holding model.pt."),
) -> None:
    """Predict formation enthalpies (eV/atom) from composition.

    Every row is shown or written, a formula that cannot be predicted with its error (the table's
    note, the CSV's error column); then, if any could not, one line names it and the exit code is 2,
    whatever the output (table, --output FILE, --output -).
    """
    from fh_screen.models.predictor import Predictor

    if not formulas and input_csv is None:
        fail("give formulas (fh-screen predict LiFePO4) or --input FILE.csv")
    if formulas and input_csv is not None:
        fail("give formulas or --input, not both")
    check_outputs(output_csv, inputs={"the --input file": input_csv})
    predictor = Predictor.from_name(model)
    if input_csv is not None:
        formulas, result = _predict_csv(predictor, input_csv, output_csv)
    else:
        result = _checked(predictor.predict_formulas(formulas))
        if output_csv is not None:
            import pandas as pd

            frame = _with_predictions(pd.DataFrame({"formula": formulas}), result, predictor)
            write_csv(frame, output_csv)
            if not is_stdout(output_csv):
                console().print(f"wrote {len(frame)} rows to {output_csv}")
        else:
            _print_table(formulas, result, predictor)
    _fail_on_errors(formulas, result, output_csv)


def _fail_on_errors(formulas: list[str], result, output_csv: Optional[Path]) -> None:
    """Exit 2 with one line when any formula could not be predicted (after every row was shown or written)."""
    bad = [e for e in result.errors if e]
    if not bad:
        return
    where = ("the table" if output_csv is None else "the error column" if is_stdout(output_csv)
             else f"the error column of {output_csv}")
    fail(bad[0] if len(bad) == 1 else f"{len(bad)} of {len(formulas)} formulas could not be predicted (see {where})")


def _checked(result):
    """``result`` with an error on every row whose prediction is not finite (never a bare NaN)."""
    import numpy as np

    finite = np.isfinite(result.dhf_ev_per_atom)
    if result.dhf_std_ev_per_atom is not None:
        finite &= np.isfinite(result.dhf_std_ev_per_atom)
    for row in np.flatnonzero(~finite).tolist():
        if not result.errors[row]:
            result.errors[row] = "the model returned a non-finite value for this composition"
    return result


def _with_predictions(frame, result, predictor):
    frame = frame.copy()
    frame["dhf_pred_ev_per_atom"] = result.dhf_ev_per_atom
    if result.dhf_std_ev_per_atom is not None:
        frame["dhf_std_ev_per_atom"] = result.dhf_std_ev_per_atom
    elif "dhf_std_ev_per_atom" in frame.columns:  # an earlier model's σ (a file predicted before): none of this one's
        frame["dhf_std_ev_per_atom"] = float("nan")
    frame["out_of_domain"] = result.out_of_domain
    frame["error"] = [e or "" for e in result.errors]
    frame["model"] = f"{predictor.name}@{predictor.version}"
    return frame


def _predict_csv(predictor, input_csv: Path, output_csv: Optional[Path]):
    """Predict the ``formula`` column of ``input_csv``, show or write every row; returns (formulas, result)."""
    from fh_screen.data import read_csv_any

    if not input_csv.exists():
        fail(f"input file not found: {input_csv}")
    if not input_csv.is_file():
        fail(f"input is not a file: {input_csv}")
    frame = read_csv_any(input_csv, dtype={"formula": str})
    if "formula" not in frame.columns:
        fail(f"{input_csv} has no 'formula' column (columns: {', '.join(map(str, frame.columns))})")
    formulas = frame["formula"].fillna("").astype(str).tolist()
    result = _checked(predictor.predict_formulas(formulas))
    out = _with_predictions(frame, result, predictor)
    n_bad = sum(1 for e in result.errors if e)
    if output_csv is None:
        _print_table(formulas, result, predictor)
    else:
        write_csv(out, output_csv)
        status_console(output_csv).print(f"wrote {len(out)} rows to {output_csv} ({n_bad} with an error)"
                                         if not is_stdout(output_csv) else f"{n_bad} of {len(out)} rows with an error",
                                         highlight=False)
    return formulas, result


def _shown(text: str) -> str:
    """A cell for the rich table: markup escaped, control characters written as escapes."""
    from rich.markup import escape

    return escape(text if text.isprintable() else repr(text)[1:-1])


def _print_table(formulas, result, predictor) -> None:
    from rich.table import Table

    table = Table(title=f"Predicted formation enthalpy — model {predictor.name}@{predictor.version}")
    table.add_column("formula")
    table.add_column("ΔH_f pred (eV/atom)", justify="right")
    if result.dhf_std_ev_per_atom is not None:
        table.add_column("σ (eV/atom)", justify="right")
    table.add_column("note")
    for i, formula in enumerate(formulas):
        error = result.errors[i]
        value = "" if error else f"{result.dhf_ev_per_atom[i]:.3f}"
        row = [_shown(formula), value]
        if result.dhf_std_ev_per_atom is not None:
            row.append("" if error else f"{result.dhf_std_ev_per_atom[i]:.3f}")
        note = error or ("out of domain: element absent from training data" if result.out_of_domain[i] else "")
        row.append(f"[red]{_shown(note)}[/]" if error else _shown(note))
        table.add_row(*row)
    console().print(table)


def register(app: typer.Typer) -> None:
    """Add ``predict`` to the application."""
    app.command("predict")(one_line_errors(predict_command))
