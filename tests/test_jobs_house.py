"""Jobs the atomate2 way (issue 20, point 4), by behaviour.

One options model shared by the CLI and the Makers (pydantic, ``extra="forbid"``); checks at
``make()`` only where a maker names them (nothing looked up by name); every output document
carries the fh-screen version and the model's ``name@version``.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from jobflow import Maker, run_locally
from jobs_fixtures import memory_job_store

from fh_screen.errors import FhScreenError
from fh_screen.jobs import (
    HandoffDocument,
    HandoffMaker,
    PrescreenMaker,
    PrescreenToDFTMaker,
    ScreenDoc,
    StructureMaker,
    StructuresDocument,
    read_output,
)
from fh_screen.jobs.base import fh_screen_job
from fh_screen.screening import ScreenOptions
from fh_screen.screening.options import ScreenError
from fh_screen.version import __version__


def test_the_package_version_is_the_one_pyproject_states():
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert re.search(r'^version = "([^"]+)"', pyproject, re.MULTILINE).group(1) == __version__


def test_screen_options_refuse_unknown_names_and_wrong_types_when_made():
    with pytest.raises(ValueError, match="max_atom"):
        ScreenOptions(max_atom=6)  # extra="forbid"
    with pytest.raises(ValueError, match="max_atoms"):
        ScreenOptions(max_atoms="6")  # strict: no silent str → int
    with pytest.raises(ScreenError, match=r"unknown screen option 'chrge_neutral' \(did you mean 'charge_neutral'\?\)"):
        ScreenOptions.from_mapping({"chrge_neutral": True})
    with pytest.raises(ScreenError, match="select_p_min") as info:
        ScreenOptions.from_mapping({"select_p_min": 1.5})  # types fine, limit refused
    assert "\n" not in str(info.value)
    options = ScreenOptions(max_atoms=8, dft_budget=3)
    assert ScreenOptions.from_mapping({"@module": "x", **dataclasses.asdict(options)}) == options


def test_the_cli_and_the_makers_share_one_options_model():
    from fh_screen.cli import screen as cli_screen

    maker = PrescreenMaker(screen_options={"max_atoms": 7, "charge_neutral": True})
    assert type(maker.screen_options) is ScreenOptions
    from fh_screen.cli.common import screen_options_from_flags

    assert "screen_options_from_flags(" in Path(cli_screen.__file__).read_text()  # the CLI builds its options here
    from_flags = screen_options_from_flags(**dataclasses.asdict(maker.screen_options))
    assert type(from_flags) is ScreenOptions and from_flags == maker.screen_options  # the same class, the same value
    # a maker serialised and loaded again (a worker) validates through the same model
    again = PrescreenMaker.from_dict(maker.as_dict())
    assert again.screen_options == maker.screen_options


def test_make_runs_only_the_check_its_decorator_names():
    calls = []

    @dataclasses.dataclass
    class Quiet(Maker):
        name: str = "quiet"

        def _prepare(self, *args, **kwargs):  # the old hidden hook: never called now
            raise AssertionError("looked up by name")

        @fh_screen_job
        def make(self, x):
            return x

    @dataclasses.dataclass
    class Checked(Maker):
        name: str = "checked"

        def check_make(self, x):
            calls.append(x)
            if x < 0:
                raise FhScreenError("x must be >= 0")
            return dataclasses.replace(self, name=f"checked {x}"), (x,), {}

        @fh_screen_job(check=check_make)
        def make(self, x):
            return x

    assert Quiet().make(1).function_args == (1,)
    job = Checked().make(2)
    assert calls == [2] and job.name == "checked 2" and job.maker.name == "checked 2"
    with pytest.raises(FhScreenError, match="x must be"):
        Checked().make(-1)


def test_every_output_document_carries_the_package_version_and_the_model(tmp_path):
    flow = PrescreenToDFTMaker(
        prescreen_maker=PrescreenMaker(model="paper", use_reference=False, save_screen=False, top_n=1,
                                       screen_options={"max_atoms": 4, "refine_top": None}),
        structure_maker=StructureMaker(n_structures=1, max_sites=8, use_random=False),
        handoff_maker=HandoffMaker(dft_maker=None),
    ).make("Li-O")
    store = memory_job_store()
    run_locally(flow, store=store, log=False, ensure_success=True, create_folders=True, root_dir=str(tmp_path))
    prescreen, structures, handoff = (read_output(store, job.uuid) for job in flow.jobs)
    assert isinstance(prescreen, ScreenDoc) and isinstance(structures, StructuresDocument)
    assert isinstance(handoff, HandoffDocument)
    assert prescreen.model == f"{prescreen.model_name}@{prescreen.model_version}" and prescreen.model.startswith("paper@")
    for doc in (prescreen, structures, handoff):
        assert doc.fh_screen_version == __version__
    assert structures.model == handoff.model == prescreen.model
    # the stored document keeps both when read back
    assert ScreenDoc.model_validate(prescreen.model_dump()).model == prescreen.model
