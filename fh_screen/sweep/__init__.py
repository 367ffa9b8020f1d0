"""The bulk sweep: many chemical systems screened by the one screen service, resumable.

Owns system enumeration (:mod:`~fh_screen.sweep.systems`), the runner
(:mod:`~fh_screen.sweep.runner`: plan, skip what is stored, screen in one or N processes, each
system saved as its own ``screens`` document) and the same sweep as a maggma Builder
(:mod:`~fh_screen.sweep.builder`, imported on demand). May import :mod:`fh_screen.service`,
:mod:`fh_screen.store`, :mod:`fh_screen.screening`, :mod:`fh_screen.models`, :mod:`fh_screen.chem`
and :mod:`fh_screen.errors`; imported by ``cli`` (``fh-screen bulk``), never by the core.

>>> from fh_screen.sweep import run_sweep, systems_from_elements
>>> report = run_sweep(systems_from_elements("Li,Fe,P,O", "2,3"))
>>> report.systems_done, report.systems_skipped
"""

from fh_screen.sweep.runner import (
    BULK_KEEP_TOP,
    SweepOptions,
    SweepPlan,
    SweepInterrupted,
    SweepReport,
    SweepStoreError,
    SystemOutcome,
    check_keep_top,
    check_screen_options,
    plan_sweep,
    run_sweep,
    screen_system,
    stored_screens,
    stored_systems,
)
from fh_screen.sweep.systems import (
    SweepInputError,
    count_systems,
    parse_elements,
    parse_nelements,
    read_systems_file,
    systems_from_elements,
)

__all__ = [
    "BULK_KEEP_TOP",
    "SweepInputError",
    "SweepOptions",
    "SweepPlan",
    "SweepInterrupted",
    "SweepReport",
    "SweepStoreError",
    "SystemOutcome",
    "check_keep_top",
    "check_screen_options",
    "count_systems",
    "parse_elements",
    "parse_nelements",
    "plan_sweep",
    "read_systems_file",
    "run_sweep",
    "screen_system",
    "stored_screens",
    "stored_systems",
    "systems_from_elements",
]
