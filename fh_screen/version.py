"""The package version, in one place (``pyproject.toml`` states the same; a test holds them equal).

Imports nothing, so every layer may read it: output documents record it beside the model's
``name@version``.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
