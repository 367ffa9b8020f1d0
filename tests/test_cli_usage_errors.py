"""Usage errors at the console script's door (``fh_screen.cli.main``): one line, exit 2, no box; help as before."""

from __future__ import annotations

import pytest

from fh_screen.cli import main


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``fh-screen ARGV`` run through the console script's entry point."""
    with pytest.raises(SystemExit) as done:
        main(list(argv))
    out, err = capsys.readouterr()
    return done.value.code, out, err


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["campaign", "--systems", "0", "--json", "x.json"], ["--systems", "greater than or equal to 1"]),
        (["campaign", "--budget", "0"], ["--budget", "greater than or equal to 1"]),
        (["campaign", "--systems", "many"], ["--systems", "integer"]),
        (["campaign", "--rank-by"], ["--rank-by", "requires an argument"]),
        (["predict", "NaCl", "--top", "3"], ["No such option", "--top"]),
        (["Li-O", "--bogus"], ["No such option", "--bogus"]),
        (["train"], ["Missing argument", "train_path"]),
        (["train", "rows.csv"], ["Missing option", "--output"]),
        (["campaign", "--json", "x.json", "surplus"], ["unexpected extra argument", "surplus"]),
    ],
)
def test_a_usage_error_is_one_line_on_stderr_with_exit_code_2(capsys, argv, fragments):
    code, out, err = _run(capsys, *argv)
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], err
    assert "╭" not in err and "Usage:" not in err and "Traceback" not in err
    assert out == ""


def test_help_and_a_bare_call_are_unchanged(capsys):
    code, out, err = _run(capsys, "--help")
    assert code == 0 and "Usage" in out and "campaign" in out and err == ""
    code, out, err = _run(capsys, "campaign", "--help")
    assert code == 0 and "--systems" in out and err == ""
    code, out, err = _run(capsys)  # no arguments: the help, exit code 2 (click's no_args_is_help)
    assert code == 2 and "Usage" in out and "campaign" in out and err == ""


def test_a_command_error_keeps_its_one_line_and_code(capsys):
    code, out, err = _run(capsys, "predict")
    assert code == 2 and out == ""
    assert [line for line in err.splitlines() if line.strip()] == [
        "error: give formulas (fh-screen predict LiFePO4) or --input FILE.csv"
    ]
