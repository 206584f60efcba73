"""Popularity: scores are the train counts, saved with the weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from lmrec.errors import DataError, LmrecError
from lmrec.models import Popularity, build_model


def test_scores_are_train_counts():
    model = build_model("popularity", 3, 4)
    model.prepare(np.array([0, 1, 2, 2, 1]), np.array([2, 2, 0, 2, 3]))  # counts 1, 0, 3, 1
    expected = torch.tensor([1.0, 0.0, 3.0, 1.0])
    torch.testing.assert_close(model.full_scores(torch.tensor([0, 2])), expected.expand(2, 4))
    items = torch.tensor([[2, 1], [3, 0]])
    torch.testing.assert_close(model.score(torch.tensor([0, 1]), items), expected[items])
    users, table = model.user_item_embeddings()
    assert users is None and table.shape == (4, 1)


def test_counts_survive_a_safetensors_round_trip(tmp_path):
    model = Popularity(2, 3).fit_counts(np.array([5, 0, 2]))
    save_file(model.state_dict(), str(tmp_path / "w.safetensors"))
    again = Popularity(2, 3)
    again.load_state_dict(load_file(str(tmp_path / "w.safetensors")))
    torch.testing.assert_close(again.counts, torch.tensor([5.0, 0.0, 2.0]))


def test_bad_counts_and_training_raise():
    model = Popularity(2, 3)
    assert model.batch_kind == "none"
    with pytest.raises(DataError, match=r"shape \(3,\)"):
        model.fit_counts(np.array([1, 2]))
    with pytest.raises(DataError, match=">= 0"):
        model.fit_counts(np.array([1, -1, 0]))
    with pytest.raises(LmrecError, match="nothing to train"):
        model.loss({})
