"""GMF: generalised matrix factorisation, the linear half of NCF (He et al., WWW 2017).

score(u, i) = h^T (p_u * q_i) + b, trained pointwise with binary cross-entropy on observed
items (label 1) and sampled negatives (label 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from lmrec.models._checks import check_non_negative, check_positive
from lmrec.models.base import Recommender


@dataclass
class GMFConfig:
    """GMF hyper-parameters.

    Attributes
    ----------
    dim:
        Embedding width (BDLM sets it to the LLM hidden size).
    init_std:
        Standard deviation of the normal initialisation of the tables (NCF uses 0.01).
    """

    dim: int = 64
    init_std: float = 0.01

    def __post_init__(self) -> None:
        check_positive(self, "dim")
        check_non_negative(self, "init_std")


class GMF(Recommender):
    """Generalised MF with a BCE loss; ``batch_kind = "pointwise"``."""

    batch_kind = "pointwise"

    def __init__(self, n_users: int, n_items: int, config: GMFConfig | None = None) -> None:
        super().__init__(n_users, n_items)
        self.config = config or GMFConfig()
        self.user_emb = nn.Embedding(n_users, self.config.dim)
        self.item_emb = nn.Embedding(n_items, self.config.dim)
        self.predict = nn.Linear(self.config.dim, 1)  # h and b
        nn.init.normal_(self.user_emb.weight, std=self.config.init_std)
        nn.init.normal_(self.item_emb.weight, std=self.config.init_std)

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        u, i = self.user_emb(batch["users"]), self.item_emb(batch["items"])  # (B, d)
        logits = self.predict(u * i).squeeze(-1)  # (B,)
        return F.binary_cross_entropy_with_logits(logits, batch["labels"].float())

    def full_scores(self, users: Tensor, history: Tensor | None = None) -> Tensor:
        # h^T (p_u * q_i) = (p_u * h)^T q_i: one (B, d) x (d, N) product, no (B, N, d) tensor
        weighted = self.user_emb(users) * self.predict.weight  # (B, d)
        return weighted @ self.item_emb.weight.T + self.predict.bias  # (B, N)

    def score(self, users: Tensor, items: Tensor, history: Tensor | None = None) -> Tensor:
        u = self.user_emb(users).unsqueeze(1)  # (B, 1, d)
        return self.predict(u * self.item_emb(items)).squeeze(-1)  # (B, C)

    def user_item_embeddings(self) -> tuple[Tensor | None, Tensor]:
        """The GMF tables p (users) and q (items); scores are ``h^T (p_u * q_i) + b``."""
        return self.user_emb.weight, self.item_emb.weight
