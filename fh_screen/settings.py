"""Settings for fh-screen, in the atomate2 style.

Defaults can be changed in ``~/.fh_screen.yaml`` (or the YAML file named by
``FH_SCREEN_CONFIG_FILE``; ``/dev/null`` names no file), and any field can be set with an
``FH_SCREEN_<FIELD>`` environment variable, which wins over the file. A key of the file that is no
setting (``mongo_ur``), or a named file that does not exist, is a one-line :class:`SettingsError`
(other environment variables are left alone)::

    # ~/.fh_screen.yaml
    data_dir: /scratch/me/fh_screen
    oqmd_dir: /data/oqmd                   # train.csv, val.csv for `fh-screen train` / `evaluate`
    mongo_uri: mongodb://localhost:27017   # use MongoDB instead of the embedded store
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fh_screen.errors import FhScreenError, one_line

__all__ = ["DEFAULT_CONFIG_FILE", "ENV_PREFIX", "FhScreenSettings", "SettingsError"]

DEFAULT_CONFIG_FILE = "~/.fh_screen.yaml"
ENV_PREFIX = "FH_SCREEN_"


class SettingsError(FhScreenError):
    """An unreadable or invalid settings file; one-line message naming the file."""


def _check_known_keys(loaded: dict[str, Any], path: Path, known: set[str]) -> None:
    """Raise ``ValueError`` (one line) naming the first key of a settings file that is no setting, and the closest one."""
    import difflib

    by_lower = {name.lower(): name for name in known}
    for key in loaded:
        if key in known:
            continue
        close = difflib.get_close_matches(key.lower(), list(by_lower), n=1, cutoff=0.6)
        hint = (f"did you mean {by_lower[close[0]]!r}?" if close else
                f"known settings: {', '.join(sorted(k for k in known if k != 'CONFIG_FILE'))}")
        raise ValueError(f"settings file {path}: unknown setting {key!r} ({hint})")


class FhScreenSettings(BaseSettings):
    """Where fh-screen keeps its data and which store it uses."""

    CONFIG_FILE: str = Field(DEFAULT_CONFIG_FILE, description="YAML file with defaults for these settings.")
    data_dir: Path = Field(Path("~/.fh_screen"), description="Folder of the embedded store and other data.")
    store_file: str = Field("fh_screen.sqlite", description="File name of the embedded store inside data_dir.")
    mongo_uri: str | None = Field(None, description="MongoDB URI; when set, MongoStore replaces the embedded store.")
    mongo_database: str = Field("fh_screen", description="MongoDB database name (when mongo_uri is set).")
    reference_collection: str = Field("reference", description="Collection of OQMD reference entries.")
    predictions_collection: str = Field("predictions", description="Collection of predictions ((formula, model) → ΔH_f, σ).")
    screens_collection: str = Field("screens", description="Collection of screens (one document per run id).")
    results_collection: str = Field("results", description="Collection of calculations brought back (one per job: "
                                    "successful, failed, unconverged, rejected, no_reference).")
    element_references_collection: str = Field("element_references", description="Collection of the cached element "
                                                "references of each computed source (element|source).")
    mongo_timeout_s: float = Field(
        10.0, gt=0, description="How long to wait for the MongoDB server before giving up (one line naming the host)."
    )
    busy_timeout_s: float = Field(60.0, description="How long an embedded-store writer waits for another one.")
    reference_data: bool = Field(
        True, description="Fill the store (embedded or MongoDB) with the OQMD reference table shipped with the package on first use."
    )
    oqmd_dir: Path | None = Field(
        None, description="Folder of the OQMD CSVs (train.csv, val.csv) used for training and the seed study."
    )
    model_dir: Path | None = Field(
        None, description="Folder of models kept outside the package (<name>/model.pt), searched by name before the shipped ones."
    )

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    def __init__(self, **values: Any):
        """Read the settings; a bad file or value raises :class:`SettingsError` (one line)."""
        try:
            super().__init__(**values)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(p) for p in error.get("loc", ())) or "settings"
            message = str(error.get("msg", exc)).removeprefix("Value error, ")
            raise SettingsError(message if where == "settings" else f"setting {where}: {message}") from None

    @model_validator(mode="before")
    @classmethod
    def load_default_settings(cls, values: dict[str, Any]) -> dict[str, Any]:
        """Fill values not given explicitly or by environment variables from the YAML file.

        An unknown key of the file, or a file named by ``FH_SCREEN_CONFIG_FILE`` that does not
        exist, raises one line (the default ``~/.fh_screen.yaml`` may be absent)."""
        named = values.get("CONFIG_FILE") or os.environ.get(f"{ENV_PREFIX}CONFIG_FILE")
        path = Path(named or DEFAULT_CONFIG_FILE).expanduser()
        if named and str(named) == os.devnull:
            return values  # FH_SCREEN_CONFIG_FILE=/dev/null: no settings file, not even ~/.fh_screen.yaml
        if not path.exists():
            if named:  # a file named on purpose that is not there: a typo, not "no settings"
                raise ValueError(f"settings file {path} does not exist ({ENV_PREFIX}CONFIG_FILE): fix the path, "
                                 f"or set {ENV_PREFIX}CONFIG_FILE={os.devnull} to use no settings file")
            return values
        from monty.serialization import loadfn

        try:
            loaded = loadfn(path) or {}
        except Exception as exc:  # noqa: BLE001 - any YAML problem becomes one line
            raise ValueError(f"cannot read settings file {path}: {one_line(exc, first_line=True)}") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"settings file {path} must hold a mapping of setting: value")
        merged = {str(k): v for k, v in loaded.items()}
        _check_known_keys(merged, path, set(cls.model_fields))
        merged.update(values)
        return merged

    @property
    def store_path(self) -> Path:
        """Absolute path of the embedded store file."""
        return Path(self.data_dir).expanduser() / self.store_file
