"""SweepBuilder: the bulk sweep as a maggma Builder (serial, ``mrun`` multiprocessing, or distributed).

The same work as ``fh-screen bulk``, run by maggma's runners: ``get_items`` plans (systems
already screened with this model and these options are skipped,
:func:`~fh_screen.sweep.runner.stored_systems`), ``process_item`` screens one system with the one
screen service (:func:`fh_screen.service.run_screen`, known phases from ``reference``, nothing
saved in the worker), and ``update_targets`` saves each screen by the one saving rule
(:func:`fh_screen.service.save_screen`: the model's predictions, then one ``screens`` document
per system). ``prechunk(n)`` splits the systems into ``n`` disjoint slices for maggma's
distributed manager/worker runner: each worker reads the reference collection and writes only
the screens of its own slice, so no document is written twice.

>>> from maggma.cli.serial import serial
>>> store = FhScreenStore.embedded("sweep.sqlite")
>>> serial(SweepBuilder(store.reference, store.screens, systems_from_elements("Li,Fe,O", "3"),
...                     predictions=store.predictions))
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from maggma.core import Builder, Store

from fh_screen.errors import FhScreenError, one_line

__all__ = ["SweepBuilder"]


@lru_cache(maxsize=4)
def _predictor(model: str | None):
    """One model per name and process (maggma's worker processes load it once)."""
    from fh_screen.models.predictor import load_predictor
    from fh_screen.sweep.runner import sweep_predictor

    return sweep_predictor(load_predictor(model))


class SweepBuilder(Builder):
    """Screen ``systems`` into ``screens`` (and ``predictions``), skipping what is stored."""

    def __init__(
        self,
        reference: Store,
        screens: Store,
        systems: list[str],
        predictions: Store | None = None,
        model: str | None = None,
        screen_options: dict[str, Any] | None = None,
        keep_top: int | None = 100,
        redo: bool = False,
        chunk_size: int = 8,
        reference_sources: str | list[str] | None = None,
        **kwargs,
    ):
        """Describe the sweep; nothing is loaded until ``get_items``.

        Parameters
        ----------
        reference, screens, predictions
            The known phases to read; where the screen documents (and the model's predictions,
            when given) are written.
        systems
            Canonical systems (:func:`~fh_screen.sweep.systems.systems_from_elements`).
        model
            Shipped model name or checkpoint path (None: the default model).
        screen_options
            :class:`~fh_screen.screening.ScreenOptions` fields (None: the defaults).
        keep_top, redo
            Candidates kept per document (None or 0: all); screen again systems already stored.
        reference_sources
            Reference sources that count for each hull (``"oqmd,chgnet"`` or a list; None: all).
            (``sources`` is the maggma Builder's own word for its input stores.)
        """
        self.reference = reference
        self.screens = screens
        self.predictions = predictions
        self.systems = list(systems)
        self.model = model
        self.screen_options = dict(screen_options or {})
        self.keep_top = keep_top or None  # 0 keeps all, as `fh-screen bulk --keep-top 0`
        self.redo = redo
        self.reference_sources = reference_sources
        self.kwargs = kwargs
        targets = [screens] + ([predictions] if predictions is not None else [])
        super().__init__(sources=[reference], targets=targets, chunk_size=chunk_size, **kwargs)

    def _options(self):
        from fh_screen.screening import ScreenOptions
        from fh_screen.sweep.runner import check_keep_top, check_screen_options

        options = ScreenOptions.from_mapping(self.screen_options)
        check_screen_options(options)
        check_keep_top(self.keep_top)
        return options

    def _sources(self) -> list[str] | None:
        from fh_screen.store.query import parse_sources

        return None if self.reference_sources is None else parse_sources(self.reference_sources)

    def _store(self, **collections):
        from fh_screen.store import FhScreenStore

        return FhScreenStore(**collections)

    def prechunk(self, number_splits: int):
        """``number_splits`` disjoint slices of the systems (maggma's distributed runner)."""
        for i in range(number_splits):
            part = self.systems[i::number_splits]
            if part:
                yield {"systems": part}

    def get_items(self):
        """The systems without a stored screen of this model and these options."""
        from fh_screen.sweep.runner import stored_systems

        predictor = _predictor(self.model)
        options = self._options()
        done = set() if self.redo else stored_systems(self._store(screens=self.screens, reference=self.reference),
                                                      predictor, options, self.keep_top, self._sources())
        pending = [s for s in self.systems if s not in done]
        self.total = len(pending)
        self.logger.info("%d of %d systems to screen with %s@%s (%d stored)", len(pending), len(self.systems),
                         predictor.name, predictor.version, len(self.systems) - len(pending))
        for system in pending:
            yield {"system": system, "weights_sha256": predictor.weights_sha256}

    def process_item(self, item: dict[str, Any]) -> dict[str, Any]:
        """Screen one system with the one service (nothing saved here); a refused system is logged, skipped."""
        from fh_screen.service import run_screen

        predictor = _predictor(self.model)
        if predictor.weights_sha256 != item["weights_sha256"]:
            raise RuntimeError(f"model {self.model!r} changed while the builder ran")
        try:
            result, phases, _ = run_screen(item["system"], predictor, options=self._options(),
                                           store=self._store(reference=self.reference), sources=self._sources())
        except FhScreenError as exc:
            self.logger.warning("skipping %s: %s", item["system"], one_line(exc))
            return {"system": item["system"], "error": one_line(exc)}
        if not phases.n_compounds and phases.note:  # the service's note, in the document's problems too
            self.logger.warning("%s: %s", item["system"], phases.note)
        where = f"{phases.where} ({phases.n_compounds} compounds)" if phases.frame is not None else None
        return {"system": item["system"], "result": result, "reference": where}

    def update_targets(self, items: list[dict[str, Any]]) -> None:
        """Save each screen by the one saving rule: predictions, then one screen document per system."""
        from fh_screen.service import save_screen

        predictor = _predictor(self.model)
        store = self._store(predictions=self.predictions, screens=self.screens)
        options = self._options()
        for item in items:
            if "result" in item:
                save_screen(item["result"], options, predictor, store=store, origin="bulk",
                            reference=item["reference"], keep_top=self.keep_top, sources=self._sources())
