"""Run or submit a flow: locally (embedded store), to FireWorks, or to jobflow-remote.

* ``local`` — :func:`jobflow.run_locally` with :func:`~fh_screen.jobs.jobstore.job_store`
  (the given SQLite file, else jobflow's configured ``JOB_STORE``; no server);
* ``fireworks`` — :func:`jobflow.managers.fireworks.flow_to_workflow` then ``LaunchPad.add_wf``
  (MongoDB behind the LaunchPad; workers need the JobStore in their ``jobflow.yaml``);
* ``jobflow-remote`` — :func:`jobflow_remote.submit_flow` (MongoDB queue store, workers as set up
  in the jobflow-remote project).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jobflow import Flow, Job

from fh_screen.errors import FhScreenError

__all__ = ["BACKENDS", "run_flow", "to_workflow"]

BACKENDS = ("local", "fireworks", "jobflow-remote")


def to_workflow(flow: Flow | Job, metadata: dict | None = None):
    """FireWorks ``Workflow`` of ``flow`` (works without a LaunchPad)."""
    try:
        from jobflow.managers.fireworks import flow_to_workflow
    except ImportError as exc:  # pragma: no cover - depends on the optional package
        raise FhScreenError(f"FireWorks is not installed (pip install fireworks): {exc}") from None
    workflow = flow_to_workflow(flow)
    if metadata:
        workflow.metadata.update(metadata)
    return workflow


def run_flow(
    flow: Flow | Job,
    backend: str = "local",
    *,
    store_path: str | Path | None = None,
    launchpad_file: str | Path | None = None,
    worker: str | None = None,
    project: str | None = None,
    root_dir: str | Path | None = None,
) -> Any:
    """Run ``flow`` with ``backend``; returns the run_locally responses, the FireWorks ids or the jobflow-remote ids."""
    if backend == "local":
        from jobflow import run_locally

        from fh_screen.jobs.jobstore import job_store

        kwargs: dict[str, Any] = {"store": job_store(store_path), "log": False}
        if root_dir is not None:
            kwargs.update(create_folders=True, root_dir=str(root_dir))
        return run_locally(flow, **kwargs)
    if backend == "fireworks":
        from fireworks import LaunchPad

        launchpad = LaunchPad.from_file(str(launchpad_file)) if launchpad_file else LaunchPad.auto_load()
        return launchpad.add_wf(to_workflow(flow))
    if backend == "jobflow-remote":
        try:
            from jobflow_remote import submit_flow
        except ImportError as exc:
            raise FhScreenError(f"jobflow-remote is not installed (pip install jobflow-remote): {exc}") from None
        if not worker:
            raise FhScreenError("jobflow-remote needs --worker (a worker name of your jobflow-remote project)")
        return submit_flow(flow, worker=worker, project=project)
    raise FhScreenError(f"unknown backend {backend!r} (choose {', '.join(BACKENDS)})")
