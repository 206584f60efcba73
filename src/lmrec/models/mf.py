"""MF/BPR: matrix factorisation trained with Bayesian personalised ranking (Rendle et al. 2009).

score(u, i) = <p_u, q_i>; loss = -log sigmoid(score(u, pos) - score(u, neg)) plus an L2 penalty
on the batch's embeddings, weighted as in LightGCN so the two compare like for like.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from lmrec.models._checks import check_non_negative, check_positive
from lmrec.models.base import Recommender


@dataclass
class MFConfig:
    """MF/BPR hyper-parameters.

    Attributes
    ----------
    dim:
        Embedding width (BDLM sets it to the LLM hidden size).
    reg_weight:
        Weight of ``0.5 * (|p_u|^2 + |q_pos|^2 + |q_neg|^2) / B`` added to the BPR loss.
    init_std:
        Standard deviation of the normal initialisation of both tables.
    """

    dim: int = 64
    reg_weight: float = 1e-4
    init_std: float = 0.1

    def __post_init__(self) -> None:
        check_positive(self, "dim")
        check_non_negative(self, "reg_weight", "init_std")


def bpr_loss(pos: Tensor, neg: Tensor) -> Tensor:
    """Mean of ``-log sigmoid(pos - neg)``; softplus form is stable for large margins."""
    return F.softplus(neg - pos).mean()


def l2_penalty(*embeddings: Tensor) -> Tensor:
    """``0.5 * sum of squared norms / batch size`` of (B, d) embedding rows (LightGCN's form)."""
    return 0.5 * sum(e.pow(2).sum() for e in embeddings) / embeddings[0].shape[0]


class MF(Recommender):
    """Matrix factorisation with a BPR loss; ``batch_kind = "pairwise"``."""

    batch_kind = "pairwise"

    def __init__(self, n_users: int, n_items: int, config: MFConfig | None = None) -> None:
        super().__init__(n_users, n_items)
        self.config = config or MFConfig()
        self.user_emb = nn.Embedding(n_users, self.config.dim)
        self.item_emb = nn.Embedding(n_items, self.config.dim)
        nn.init.normal_(self.user_emb.weight, std=self.config.init_std)
        nn.init.normal_(self.item_emb.weight, std=self.config.init_std)

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        u = self.user_emb(batch["users"])  # (B, d)
        p = self.item_emb(batch["pos"])
        n = self.item_emb(batch["neg"])
        loss = bpr_loss((u * p).sum(-1), (u * n).sum(-1))
        return loss + self.config.reg_weight * l2_penalty(u, p, n)

    def full_scores(self, users: Tensor, history: Tensor | None = None) -> Tensor:
        return self.user_emb(users) @ self.item_emb.weight.T  # (B, N)

    def score(self, users: Tensor, items: Tensor, history: Tensor | None = None) -> Tensor:
        u = self.user_emb(users).unsqueeze(1)  # (B, 1, d)
        return (u * self.item_emb(items)).sum(-1)  # (B, C)

    def user_item_embeddings(self) -> tuple[Tensor | None, Tensor]:
        return self.user_emb.weight, self.item_emb.weight
