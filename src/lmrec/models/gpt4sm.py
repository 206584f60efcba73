"""GPT4SM: a small MLP scorer on frozen LLM features of user and item text.

The features come from an LLM (:func:`lmrec.llm.baselines.gpt4sm_features`); the model itself
is a plain module on tensors, registered with the others as ``gpt4sm`` and built by
:func:`lmrec.models.build_model` with ``user_feats=`` and ``item_feats=``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmrec.errors import ConfigError
from lmrec.models.base import Recommender


@dataclass
class GPT4SMConfig:
    """GPT4SM scorer: widths of the projected features and of the MLP's hidden layer."""

    dim: int = 64
    hidden: int = 64
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.dim < 1 or self.hidden < 1 or not 0 <= self.dropout < 1:
            raise ConfigError("gpt4sm.dim and gpt4sm.hidden must be >= 1, dropout in [0, 1)")


class GPT4SM(Recommender):
    """score(u, i) = w . relu(A [P f_u ; Q f_i] + b) + c with frozen LLM features f_u, f_i.

    The first layer is applied to the two halves separately (``A = [A_u, A_i]``), so scoring all
    items for a batch of users costs (B, n_items, hidden), never (B, n_items, 2 * width).
    """

    batch_kind = "pointwise"

    def __init__(
        self,
        n_users: int,
        n_items: int,
        config: GPT4SMConfig | None = None,
        *,
        user_feats: Tensor,
        item_feats: Tensor,
    ):
        super().__init__(n_users, n_items)
        if user_feats.shape[0] != n_users or item_feats.shape[0] != n_items:
            raise ValueError(
                f"gpt4sm: {user_feats.shape[0]} user and {item_feats.shape[0]} item feature "
                f"rows for {n_users} users and {n_items} items"
            )
        if user_feats.shape[1] != item_feats.shape[1]:
            raise ValueError("gpt4sm: user and item features must have the same width")
        self.config = config or GPT4SMConfig()
        d, h = self.config.dim, self.config.hidden
        # features are standardised once: LLM hidden states have a few huge dimensions
        feats = torch.cat([user_feats, item_feats]).float()
        mean, std = feats.mean(0), feats.std(0).clamp_min(1e-6)
        self.register_buffer("user_feats", (user_feats.float() - mean) / std)
        self.register_buffer("item_feats", (item_feats.float() - mean) / std)
        self.user_proj = nn.Linear(user_feats.shape[1], d)
        self.item_proj = nn.Linear(item_feats.shape[1], d)
        self.first_user = nn.Linear(d, h)
        self.first_item = nn.Linear(d, h, bias=False)
        self.out = nn.Linear(h, 1)
        self.drop = nn.Dropout(self.config.dropout)

    def _halves(self, users: Tensor, items: Tensor | None = None) -> tuple[Tensor, Tensor]:
        u = self.first_user(self.drop(self.user_proj(self.user_feats[users])))  # (B, h)
        feats = self.item_feats if items is None else self.item_feats[items]
        i = self.first_item(self.drop(self.item_proj(feats)))  # (n or B.., h)
        return u, i

    def score(self, users: Tensor, items: Tensor, history: Tensor | None = None) -> Tensor:
        u, i = self._halves(users, items)  # (B, h), (B, C, h)
        return self.out(F.relu(u.unsqueeze(1) + i)).squeeze(-1)

    def full_scores(self, users: Tensor, history: Tensor | None = None) -> Tensor:
        u, i = self._halves(users)  # (B, h), (n_items, h)
        return self.out(F.relu(u.unsqueeze(1) + i.unsqueeze(0))).squeeze(-1)

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        logits = self.score(batch["users"], batch["items"].unsqueeze(1)).squeeze(1)
        return F.binary_cross_entropy_with_logits(logits, batch["labels"].float())

    def user_item_embeddings(self) -> tuple[Tensor | None, Tensor]:
        return self.user_proj(self.user_feats), self.item_proj(self.item_feats)


__all__ = ["GPT4SM", "GPT4SMConfig"]
