"""PredictionBuilder: bulk prediction of a store's compositions as a maggma Builder.

Runs with maggma's own runners (``maggma.cli.serial.serial`` or
``maggma.cli.multiprocessing.multi``, i.e. ``mrun``) and is incremental: compositions that
already have a prediction from the current model (same name, version and weights hash) are
skipped, so a re-run after adding data predicts only the new ones.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from maggma.core import Builder, Store

from fh_screen.store.documents import PredictionDoc, chemsys_of, elements_of, prediction_id, utcnow

__all__ = ["PredictionBuilder"]


@lru_cache(maxsize=4)
def _predictor(model: str | None):
    """One Predictor per model and process (worker processes load it once)."""
    from fh_screen.models.predictor import Predictor

    return Predictor.from_name(model, threads=1)


class PredictionBuilder(Builder):
    """Predict ΔH_f for every document of ``source`` that has no prediction from the model yet."""

    def __init__(
        self,
        source: Store,
        target: Store,
        model: str | None = None,
        query: dict | None = None,
        formula_field: str = "formula",
        batch_size: int = 1000,
        chunk_size: int = 4,
        **kwargs,
    ):
        """Describe the build; the model is loaded by the first worker that needs it.

        Parameters
        ----------
        source
            Store with a ``formula_field`` (e.g. the reference collection).
        target
            Prediction store (documents are upserted on ``prediction_id``).
        model
            Shipped model name or checkpoint path (default model when None).
        query
            Mongo criteria restricting the source documents.
        formula_field
            Source field holding the formula.
        batch_size
            Formulas per item; each item is predicted in one vectorised call.
        chunk_size
            Items per ``update_targets`` call.
        **kwargs
            Passed to :class:`maggma.core.Builder`.
        """
        from fh_screen.store.documents import new_run_id

        self.source = source
        self.target = target
        self.model = model
        self.query = query or {}
        self.formula_field = formula_field
        self.batch_size = batch_size
        #: label of this run in the log (predictions carry no run id: they belong to (formula, model))
        self.run_id = new_run_id()
        #: ``name@version`` of the model predicting, once :meth:`get_items` has loaded it
        self.model_label: str | None = None
        self.kwargs = kwargs
        super().__init__(sources=[source], targets=[target], chunk_size=chunk_size, **kwargs)

    def _model_criteria(self) -> dict:
        predictor = _predictor(self.model)
        return {
            "model_name": predictor.name,
            "model_version": predictor.version,
            "model_weights_sha256": predictor.weights_sha256,
        }

    def get_items(self):
        """Batches of formulas without a prediction from the current model."""
        from fh_screen.chem.formula import reduced_formula

        self.target.ensure_index("formula")
        self.target.ensure_index("model_weights_sha256")
        model = self._model_criteria()
        self.model_label = f"{model['model_name']}@{model['model_version']}"
        done = set(self.target.distinct("formula", criteria=model))
        raw = [f for f in self.source.distinct(self.formula_field, criteria=self.query) if isinstance(f, str)]
        pending = [f for f in raw if f not in done]
        reduced: list[str] = []
        seen = set(done)
        for formula in pending:  # source formulas need not be reduced; reduce only the new ones
            try:
                formula = reduced_formula(formula)
            except Exception:  # noqa: BLE001 - a bad formula is reported by process_item
                pass
            if formula not in seen:
                seen.add(formula)
                reduced.append(formula)
        reduced.sort()
        self.total = (len(reduced) + self.batch_size - 1) // self.batch_size
        self.logger.info("%d of %d formulas need a prediction from %s", len(reduced), len(raw), model["model_name"])
        for start in range(0, len(reduced), self.batch_size):
            yield {"formulas": reduced[start:start + self.batch_size], "model": model}

    def process_item(self, item: dict[str, Any]) -> list[dict]:
        """Predict one batch; returns PredictionDoc dictionaries (bad formulas are logged, skipped)."""
        predictor = _predictor(self.model)
        if predictor.weights_sha256 != item["model"]["model_weights_sha256"]:
            raise RuntimeError(f"model {self.model!r} changed while the builder ran")
        formulas = item["formulas"]
        result = predictor.predict_formulas(formulas)
        now = utcnow()
        docs = []
        for i, formula in enumerate(formulas):
            if result.errors[i]:
                self.logger.warning("skipping %s: %s", formula, result.errors[i])
                continue
            elements = elements_of(formula)
            std = None if result.dhf_std_ev_per_atom is None else float(result.dhf_std_ev_per_atom[i])
            docs.append(PredictionDoc(
                prediction_id=prediction_id(formula, predictor.name, predictor.version, predictor.weights_sha256),
                formula=formula, elements=list(elements), chemsys=chemsys_of(elements), nelements=len(elements),
                dhf_pred_ev_per_atom=float(result.dhf_ev_per_atom[i]), dhf_std_ev_per_atom=std,
                out_of_domain=bool(result.out_of_domain[i]), model_name=predictor.name,
                model_version=predictor.version, model_weights_sha256=predictor.weights_sha256,
                last_updated=now,
            ).model_dump())
        return docs

    def update_targets(self, items: list[list[dict]]) -> None:
        """Upsert the predicted documents (one store update per chunk)."""
        docs = [doc for batch in items for doc in batch]
        if docs:
            self.target.update(docs, key="prediction_id")
