"""The jobflow JobStore on fh-screen's embedded store, configured the jobflow way.

jobflow reads its ``JOB_STORE`` from ``~/.jobflow.yaml`` (or the file named by
``JOBFLOW_CONFIG_FILE``); a monty-serialised ``JobStore`` whose ``docs_store`` and ``data``
additional store are :class:`~fh_screen.store.backend.SQLiteStore` collections of one file works
there, so ``run_locally(flow)`` needs no ``store=`` and no server::

    python -c "from fh_screen.jobs import jobflow_yaml; print(jobflow_yaml())" > ~/.jobflow.yaml

:func:`local_job_store` builds the same store in Python; :func:`job_store` is what the recipes
use: a given file, else jobflow's configured ``JOB_STORE`` when it has a ``data`` store, else the
embedded default (logged).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

__all__ = ["default_job_store_path", "job_store", "job_store_spec", "jobflow_yaml", "local_job_store"]

logger = logging.getLogger(__name__)


def default_job_store_path() -> Path:
    """``<data_dir>/jobflow.sqlite`` (data_dir from ``~/.fh_screen.yaml`` / ``FH_SCREEN_DATA_DIR``)."""
    from fh_screen.settings import FhScreenSettings

    return Path(FhScreenSettings().data_dir).expanduser() / "jobflow.sqlite"


def job_store_spec(path: str | Path | None = None) -> dict[str, Any]:
    """The monty dict of a JobStore on the SQLite file ``path`` (collections ``jobs`` and ``data``).

    This is what ``JOB_STORE`` in ``~/.jobflow.yaml`` holds; ``path`` may start with ``~``.
    """
    path = str(path) if path is not None else str(default_job_store_path())

    def sqlite(collection: str, key: str) -> dict[str, Any]:
        return {"@module": "fh_screen.store.backend", "@class": "SQLiteStore", "database_path": path,
                "collection_name": collection, "key": key}

    return {
        "@module": "jobflow.core.store",
        "@class": "JobStore",
        "docs_store": sqlite("jobs", "uuid"),
        "additional_stores": {"data": sqlite("data", "blob_uuid")},
    }


def jobflow_yaml(path: str | Path | None = None) -> str:
    """A ``~/.jobflow.yaml`` text whose ``JOB_STORE`` is :func:`job_store_spec` of ``path``."""
    import io

    from ruamel.yaml import YAML

    stream = io.StringIO()
    yaml = YAML()
    yaml.default_flow_style = False
    yaml.dump({"JOB_STORE": job_store_spec(path)}, stream)
    return stream.getvalue()


def local_job_store(path: str | Path | None = None):
    """jobflow ``JobStore`` on an embedded SQLite file (default ``<data_dir>/jobflow.sqlite``).

    Collections ``jobs`` (job outputs) and ``data`` (the additional store fh-screen and atomate2
    jobs route large outputs to) live in the same file; no server is needed.
    """
    from monty.json import MontyDecoder

    return MontyDecoder().process_decoded(job_store_spec(path))


def job_store(path: str | Path | None = None):
    """The JobStore to run with: ``path`` if given, else jobflow's configured one, else the embedded default.

    jobflow's ``JOB_STORE`` (``~/.jobflow.yaml``) is used when it has the ``data`` additional
    store fh-screen's jobs need; jobflow's built-in default (memory, no ``data``) is not, and
    the embedded default file is used instead (and said so in the log).
    """
    if path is not None:
        return local_job_store(path)
    from jobflow import SETTINGS

    configured = SETTINGS.JOB_STORE
    if "data" in (configured.additional_stores or {}):
        return configured
    fallback = default_job_store_path()
    logger.info("jobflow's JOB_STORE has no 'data' store (configure ~/.jobflow.yaml, see docs/jobs.md); "
                "using fh-screen's embedded job store %s", fallback)
    return local_job_store(fallback)
