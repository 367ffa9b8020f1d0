"""fh-screen: formation enthalpy from composition (ElemNet-style DNN on OQMD) and system screening.

The public face::

    from fh_screen import predict, Predictor, screen, ScreenOptions
    predict(["LiFePO4", "Fe2O3"])          # numpy array, eV/atom
    screen("Li-Fe-P-O").table              # ranked against the store's known phases (pandas DataFrame)
    screen("Li-Fe-P-O", options=ScreenOptions(max_atoms=12, dft_budget=5))

Attributes load lazily so that importing the package (and ``fh-screen --help``) stays fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from fh_screen.version import __version__

__all__ = ["Predictor", "ScreenOptions", "__version__", "predict", "screen"]

_LAZY = {"predict": "fh_screen.models.predictor", "Predictor": "fh_screen.models.predictor", "screen": "fh_screen.service",
         "ScreenOptions": "fh_screen.screening.options"}

if TYPE_CHECKING:  # pragma: no cover
    from fh_screen.models.predictor import Predictor, predict
    from fh_screen.screening.options import ScreenOptions
    from fh_screen.service import screen


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fh_screen' has no attribute {name!r}")
