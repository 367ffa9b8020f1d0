"""int16-per-column weight storage: what is stored, what loads back, and what it does to predictions."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from fh_screen.models.checkpoint import ModelError, load_checkpoint, save_checkpoint
from fh_screen.models.predictor import Predictor, shipped_model_path
from fh_screen.models.weight_storage import FLOAT32, INT16_PER_COLUMN, compact_state, expand_state


@pytest.fixture(scope="module")
def paper_float32():
    """The shipped seed-study network (stored as float32: int16 moves it by more than 1 meV/atom)."""
    checkpoint = load_checkpoint(shipped_model_path("paper"))
    assert checkpoint.stored_as == FLOAT32
    return checkpoint


def test_compact_state_keeps_every_weight_within_half_a_step_of_its_column(paper_float32):
    state = paper_float32.member_state_dicts[0]
    stored, scales = compact_state(state)
    matrices = [k for k, v in state.items() if v.ndim == 2]
    assert matrices and set(scales) == set(matrices)
    for key in matrices:
        assert stored[key].dtype == torch.int16
        step = scales[key]  # (1, columns)
        assert torch.all(step > 0)
        # the largest weight of each column is stored exactly as ±32767 steps
        assert torch.equal(stored[key].abs().amax(dim=0), torch.full((state[key].shape[1],), 32767, dtype=torch.int16)) or \
            torch.any(state[key].abs().amax(dim=0) == 0)
    expanded = expand_state(stored, scales)
    for key, tensor in state.items():
        error = (expanded[key] - tensor).abs()
        if key in scales:  # half a step, plus float32 rounding of the product
            assert torch.all(error <= scales[key] * 0.5001 + 1e-6 * tensor.abs()), key
        else:
            assert torch.equal(expanded[key], tensor), key  # vectors come back bit for bit


def test_an_int16_checkpoint_is_smaller_and_predicts_within_a_few_tenths_of_a_mev(paper_float32, tmp_path, oqmd_train_raw):
    full_path = save_checkpoint(paper_float32, tmp_path / "full.pt")
    small_path = save_checkpoint(paper_float32, tmp_path / "small.pt", weights_storage=INT16_PER_COLUMN)
    assert small_path.stat().st_size < 0.6 * full_path.stat().st_size
    small = load_checkpoint(small_path)
    assert small.stored_as == INT16_PER_COLUMN and load_checkpoint(full_path).stored_as == FLOAT32
    assert all(v.dtype == torch.float32 for s in small.member_state_dicts for v in s.values())
    formulas = oqmd_train_raw["formula"].sample(2000, random_state=3).astype(str).tolist()
    before = Predictor(paper_float32).predict_formulas(formulas).dhf_ev_per_atom
    after = Predictor(small).predict_formulas(formulas).dhf_ev_per_atom
    change_mev = np.abs(before - after) * 1000
    assert 0 < np.nanmax(change_mev) < 5 and np.nanmean(change_mev) < 0.2
    # saved again as int16 the values do not drift: the same identity
    again = load_checkpoint(save_checkpoint(small, tmp_path / "again.pt", weights_storage=INT16_PER_COLUMN))
    assert again.identity() == small.identity() != paper_float32.identity()


def test_unknown_storage_is_refused_on_save_and_on_load(paper_float32, tmp_path):
    with pytest.raises(ModelError, match="unknown weights storage 'int8'"):
        save_checkpoint(paper_float32, tmp_path / "x.pt", weights_storage="int8")
    assert not (tmp_path / "x.pt").exists()
    path = save_checkpoint(paper_float32, tmp_path / "y.pt")
    payload = torch.load(path, weights_only=True)
    payload["weights_storage"] = "int8"
    torch.save(payload, path)
    with pytest.raises(ModelError, match=r"incompatible model file .*unknown weights storage 'int8'") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)


def test_the_shipped_default_model_loads_from_its_compact_file():
    checkpoint = load_checkpoint(shipped_model_path("attention-ensemble"))
    assert checkpoint.stored_as == INT16_PER_COLUMN
    card = pd.read_json(shipped_model_path("attention-ensemble").parent / "model_card.json", typ="series")
    assert card["identity_sha256"] == checkpoint.identity()
    assert card["weights_storage"][INT16_PER_COLUMN]["max_abs_change_mev_per_atom"] < 1.0
