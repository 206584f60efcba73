"""LightGCN propagation against a graph small enough to propagate by hand.

Nodes u0, u1, i0, i1, i2; edges u0-i0, u0-i1, u1-i1, u1-i2. Degrees: u0 2, u1 2, i0 1, i1 2,
i2 1, so the normalised weights are 1/sqrt(2) on u0-i0 and u1-i2 and 1/2 on u0-i1 and u1-i1.
With E0 = [[1, 0], [0, 1], [1, 1], [0.5, -1], [2, 0]] (users first), one layer gives
E1 = [[0.9571, 0.2071], [1.6642, -0.5], [0.7071, 0], [0.5, 0.5], [0, 0.7071]], and the final table
is the mean of layers 0..K.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmrec.errors import DataError
from lmrec.models import LightGCN, LightGCNConfig

E0 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, -1.0], [2.0, 0.0]])
EDGES = (np.array([0, 0, 1, 1]), np.array([0, 1, 1, 2]))
EXPECTED = {
    1: [[0.8870, 0.4634, 1.0152], [0.8352, 0.3536, 0.9205]],
    3: [[0.7399, 0.6703, 0.8320], [0.6962, 0.5891, 0.7642]],
}


def hand_model(n_layers: int) -> LightGCN:
    model = LightGCN(2, 3, LightGCNConfig(dim=2, n_layers=n_layers))
    with torch.no_grad():
        model.user_emb.weight.copy_(E0[:2])
        model.item_emb.weight.copy_(E0[2:])
    return model.set_graph(*EDGES).eval()


@pytest.mark.parametrize("n_layers", [1, 3])
def test_scores_match_hand_propagation(n_layers):
    model = hand_model(n_layers)
    scores = model.full_scores(torch.tensor([0, 1]))
    torch.testing.assert_close(scores, torch.tensor(EXPECTED[n_layers]), atol=1e-4, rtol=0)
    users, items = model.user_item_embeddings()  # the tables it scores with
    torch.testing.assert_close(users @ items.T, scores)


def test_first_layer_matches_hand_computation():
    users, items = hand_model(1).propagate()
    e1 = torch.tensor([[0.9571, 0.2071], [1.6642, -0.5], [0.7071, 0.0], [0.5, 0.5], [0.0, 0.7071]])
    torch.testing.assert_close(torch.cat([users, items]), (E0 + e1) / 2, atol=1e-4, rtol=0)


def test_repeated_edges_count_once_and_training_mode_agrees():
    model = hand_model(3)
    model.set_graph(np.concatenate([EDGES[0], [0, 0]]), np.concatenate([EDGES[1], [0, 1]]))
    model.train()  # no cache in training mode: propagation with gradients
    scores = model.full_scores(torch.tensor([0, 1]))
    torch.testing.assert_close(scores.detach(), torch.tensor(EXPECTED[3]), atol=1e-4, rtol=0)
    scores.sum().backward()
    assert model.user_emb.weight.grad is not None


def test_eval_cache_follows_weight_updates():
    model = hand_model(1)
    model.full_scores(torch.tensor([0]))  # fills the cache
    with torch.no_grad():
        model.item_emb.weight.mul_(2)  # an in-place update, like an optimiser step
    fresh = hand_model(1)
    with torch.no_grad():
        fresh.item_emb.weight.mul_(2)
    torch.testing.assert_close(
        model.full_scores(torch.tensor([0])), fresh.full_scores(torch.tensor([0]))
    )


def test_zero_layers_is_mf():
    model = hand_model(0)
    torch.testing.assert_close(model.full_scores(torch.tensor([0, 1])), E0[:2] @ E0[2:].T)


def test_graph_errors_are_clear():
    model = LightGCN(2, 3, LightGCNConfig(dim=2))
    with pytest.raises(RuntimeError, match="set_graph"):
        model.full_scores(torch.tensor([0]))
    with pytest.raises(DataError, match="items must lie in 0..2"):
        model.set_graph(np.array([0]), np.array([3]))
    with pytest.raises(DataError, match="differ in length"):
        model.set_graph(np.array([0, 1]), np.array([0]))
