"""LightGCN (He et al., SIGIR 2020): embeddings smoothed over the user-item graph, BPR loss.

E^(k+1) = D^-1/2 A D^-1/2 E^(k) on the bipartite graph A = [[0, R], [R^T, 0]] (no self-loops,
no feature transforms, no non-linearity); the final table is the mean of layers 0..K and
score(u, i) = <e_u, e_i>. The L2 penalty is on the batch's layer-0 rows, as in the paper.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from lmrec.errors import DataError
from lmrec.models._checks import check_non_negative, check_positive
from lmrec.models.base import Recommender
from lmrec.models.mf import bpr_loss, l2_penalty


@dataclass
class LightGCNConfig:
    """LightGCN hyper-parameters (paper defaults: 3 layers, L2 weight 1e-4, N(0, 0.1) init).

    Attributes
    ----------
    dim:
        Embedding width (BDLM sets it to the LLM hidden size).
    n_layers:
        Propagation layers K; 0 reduces LightGCN to MF.
    reg_weight:
        Weight of ``0.5 * (|e0_u|^2 + |e0_pos|^2 + |e0_neg|^2) / B`` on layer-0 rows.
    init_std:
        Standard deviation of the normal initialisation of the layer-0 tables.
    """

    dim: int = 64
    n_layers: int = 3
    reg_weight: float = 1e-4
    init_std: float = 0.1

    def __post_init__(self) -> None:
        check_positive(self, "dim")
        check_positive(self, "n_layers", minimum=0)
        check_non_negative(self, "reg_weight", "init_std")


class _SymmetricSpMM(torch.autograd.Function):
    """``adj @ x`` for a symmetric sparse ``adj``: the gradient is ``adj @ grad`` again.

    Writing the backward by hand keeps it a CSR product too; autograd's own would transpose
    the CSR matrix on every step, which is several times slower on CPU.
    """

    @staticmethod
    def forward(ctx, adj: Tensor, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.adj = adj
        return adj @ x

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor]:  # type: ignore[override]
        return None, ctx.adj @ grad


class LightGCN(Recommender):
    """LightGCN over the train user-item graph; ``batch_kind = "pairwise"``.

    Call :meth:`set_graph` (or :meth:`prepare`) with the train interactions before training or
    scoring. The graph is not part of the state dict, so set it again after loading weights.
    In eval mode the propagated tables are computed once and cached until the weights, the
    graph or the mode change.
    """

    batch_kind = "pairwise"

    def __init__(self, n_users: int, n_items: int, config: LightGCNConfig | None = None) -> None:
        super().__init__(n_users, n_items)
        self.config = config or LightGCNConfig()
        self.user_emb = nn.Embedding(n_users, self.config.dim)
        self.item_emb = nn.Embedding(n_items, self.config.dim)
        nn.init.normal_(self.user_emb.weight, std=self.config.init_std)
        nn.init.normal_(self.item_emb.weight, std=self.config.init_std)
        # The normalised adjacency as CSR parts; non-persistent buffers follow .to(device)
        # but stay out of the state dict (they are rebuilt from the train data).
        self.register_buffer("adj_crow", torch.zeros(0, dtype=torch.int64), persistent=False)
        self.register_buffer("adj_col", torch.zeros(0, dtype=torch.int64), persistent=False)
        self.register_buffer("adj_val", torch.zeros(0), persistent=False)
        self._cache: tuple[tuple, Tensor, Tensor] | None = None

    def set_graph(self, users: np.ndarray, items: np.ndarray) -> LightGCN:
        """Build D^-1/2 A D^-1/2 from train pairs ``users[i]``-``items[i]``. Returns ``self``.

        Repeated pairs count once (A is binary); nodes without edges keep only their layer-0
        embedding's share of the mean.
        """
        users = np.asarray(users, dtype=np.int64).reshape(-1)
        items = np.asarray(items, dtype=np.int64).reshape(-1)
        if users.shape != items.shape:
            raise DataError(f"users and items differ in length: {len(users)} vs {len(items)}")
        for name, ids, n in (("users", users, self.n_users), ("items", items, self.n_items)):
            if ids.size and (ids.min() < 0 or ids.max() >= n):
                raise DataError(
                    f"graph {name} must lie in 0..{n - 1}, got {ids.min()}..{ids.max()}"
                )
        pairs = np.unique(users * self.n_items + items)
        u, i = pairs // self.n_items, pairs % self.n_items + self.n_users  # item nodes follow users
        rows, cols = np.concatenate([u, i]), np.concatenate([i, u])
        n_nodes = self.n_users + self.n_items
        deg = np.bincount(rows, minlength=n_nodes).astype(np.float64)
        val = 1.0 / np.sqrt(deg[rows] * deg[cols])  # every edge's endpoints have degree >= 1
        order = np.lexsort((cols, rows))  # CSR wants rows sorted, columns sorted within a row
        crow = np.zeros(n_nodes + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n_nodes), out=crow[1:])
        device = self.user_emb.weight.device
        self.adj_crow = torch.from_numpy(crow).to(device)
        self.adj_col = torch.from_numpy(cols[order]).to(device)
        self.adj_val = torch.from_numpy(val[order]).to(device, self.user_emb.weight.dtype)
        self._cache = None
        return self

    def prepare(self, users: np.ndarray, items: np.ndarray) -> None:
        self.set_graph(users, items)

    def _adjacency(self) -> Tensor:
        if len(self.adj_crow) != self.n_users + self.n_items + 1:
            raise RuntimeError("LightGCN has no graph: call set_graph(train_users, train_items)")
        n = self.n_users + self.n_items
        with warnings.catch_warnings():  # "sparse CSR support is in beta": it is what we want
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(
                self.adj_crow, self.adj_col, self.adj_val.to(self.user_emb.weight.dtype), (n, n)
            )

    def propagate(self) -> tuple[Tensor, Tensor]:
        """The final (layer-mean) user table (n_users, d) and item table (n_items, d)."""
        if not self.training:
            # A tensor's _version counts its in-place updates (optimiser steps, load_state_dict),
            # so the cache key changes whenever the weights do.
            key = tuple(
                (w.data_ptr(), w._version, w.device)
                for w in (self.user_emb.weight, self.item_emb.weight)
            ) + (self.adj_val.data_ptr(),)
            if self._cache is None or self._cache[0] != key:
                with torch.no_grad():
                    self._cache = (key, *self._propagate())
            return self._cache[1], self._cache[2]
        return self._propagate()

    def _propagate(self) -> tuple[Tensor, Tensor]:
        adj = self._adjacency()
        layer = torch.cat([self.user_emb.weight, self.item_emb.weight])  # (U + N, d)
        total = layer
        for _ in range(self.config.n_layers):
            layer = _SymmetricSpMM.apply(adj, layer)
            total = total + layer
        final = total / (self.config.n_layers + 1)
        return final[: self.n_users], final[self.n_users :]

    def train(self, mode: bool = True) -> LightGCN:
        self._cache = None
        return super().train(mode)

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        users, items = self.propagate()
        u, p, n = users[batch["users"]], items[batch["pos"]], items[batch["neg"]]  # (B, d)
        loss = bpr_loss((u * p).sum(-1), (u * n).sum(-1))
        reg = l2_penalty(
            self.user_emb(batch["users"]), self.item_emb(batch["pos"]), self.item_emb(batch["neg"])
        )
        return loss + self.config.reg_weight * reg

    def full_scores(self, users: Tensor, history: Tensor | None = None) -> Tensor:
        user_table, item_table = self.propagate()
        return user_table[users] @ item_table.T  # (B, N)

    def score(self, users: Tensor, items: Tensor, history: Tensor | None = None) -> Tensor:
        user_table, item_table = self.propagate()
        return (user_table[users].unsqueeze(1) * item_table[items]).sum(-1)  # (B, C)

    def user_item_embeddings(self) -> tuple[Tensor | None, Tensor]:
        """The propagated (final) tables: those LightGCN scores with."""
        return self.propagate()
