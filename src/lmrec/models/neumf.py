"""NeuMF: GMF and an MLP over separate embeddings, fused by one output layer (He et al. 2017).

logit(u, i) = h^T [p_u * q_i ; MLP([p'_u ; q'_i])] + b, trained pointwise with binary
cross-entropy. The GMF tables (p, q) are the ones exposed to BDLM.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmrec.errors import ConfigError
from lmrec.models._checks import check_non_negative, check_positive, check_probability
from lmrec.models.base import Recommender

_FULL_SCORE_ELEMENTS = 1 << 24  # cap on (users x items x width) per chunk of full_scores


@dataclass
class NeuMFConfig:
    """NeuMF hyper-parameters (RecBole defaults).

    Attributes
    ----------
    dim:
        Width of the GMF tables (BDLM sets it to the LLM hidden size).
    mlp_dim:
        Width of the MLP branch's own user and item tables.
    mlp_hidden:
        Output widths of the MLP's layers; its input is ``2 * mlp_dim``.
    dropout:
        Dropout before each MLP layer.
    init_std:
        Standard deviation of the normal initialisation of the four tables.
    """

    dim: int = 64
    mlp_dim: int = 64
    mlp_hidden: tuple[int, ...] = (128, 64)
    dropout: float = 0.1
    init_std: float = 0.01

    def __post_init__(self) -> None:
        if isinstance(self.mlp_hidden, list):
            self.mlp_hidden = tuple(self.mlp_hidden)  # JSON and YAML give lists
        check_positive(self, "dim", "mlp_dim")
        if (
            not isinstance(self.mlp_hidden, tuple)
            or not self.mlp_hidden
            or not all(
                isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in self.mlp_hidden
            )
        ):
            raise ConfigError(
                f"NeuMFConfig.mlp_hidden must be a non-empty list of positive integers, "
                f"got {self.mlp_hidden!r}"
            )
        check_probability(self, "dropout")
        check_non_negative(self, "init_std")


class NeuMF(Recommender):
    """Neural matrix factorisation with a BCE loss; ``batch_kind = "pointwise"``."""

    batch_kind = "pointwise"

    def __init__(self, n_users: int, n_items: int, config: NeuMFConfig | None = None) -> None:
        super().__init__(n_users, n_items)
        cfg = self.config = config or NeuMFConfig()
        self.user_gmf = nn.Embedding(n_users, cfg.dim)
        self.item_gmf = nn.Embedding(n_items, cfg.dim)
        self.user_mlp = nn.Embedding(n_users, cfg.mlp_dim)
        self.item_mlp = nn.Embedding(n_items, cfg.mlp_dim)
        for table in (self.user_gmf, self.item_gmf, self.user_mlp, self.item_mlp):
            nn.init.normal_(table.weight, std=cfg.init_std)
        # The first MLP layer, W [p'_u ; q'_i] + b, split into its user and item halves: full
        # ranking then adds a (B, 1, h) and a (1, N, h) tensor instead of concatenating B x N
        # input pairs. Mathematically the same layer.
        self.drop = nn.Dropout(cfg.dropout)
        self.mlp_user_in = nn.Linear(cfg.mlp_dim, cfg.mlp_hidden[0])
        self.mlp_item_in = nn.Linear(cfg.mlp_dim, cfg.mlp_hidden[0], bias=False)
        rest: list[nn.Module] = [nn.ReLU()]
        for width_in, width_out in zip(cfg.mlp_hidden, cfg.mlp_hidden[1:], strict=False):
            rest += [nn.Dropout(cfg.dropout), nn.Linear(width_in, width_out), nn.ReLU()]
        self.mlp_rest = nn.Sequential(*rest)
        self.predict = nn.Linear(cfg.dim + cfg.mlp_hidden[-1], 1)

    def _logits(self, users: Tensor, items: Tensor) -> Tensor:
        """Logits for broadcastable index tensors, e.g. users (B, 1) and items (B, C) or (1, N)."""
        gmf = self.user_gmf(users) * self.item_gmf(items)  # (..., d)
        hidden = self.mlp_user_in(self.drop(self.user_mlp(users))) + self.mlp_item_in(
            self.drop(self.item_mlp(items))
        )  # (..., h0)
        hidden = self.mlp_rest(hidden)  # (..., h_last)
        return self.predict(torch.cat([gmf, hidden], -1)).squeeze(-1)

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        logits = self._logits(batch["users"], batch["items"])  # (B,)
        return F.binary_cross_entropy_with_logits(logits, batch["labels"].float())

    def full_scores(self, users: Tensor, history: Tensor | None = None) -> Tensor:
        items = torch.arange(self.n_items, device=users.device).unsqueeze(0)  # (1, N)
        width = max(self.config.dim, *self.config.mlp_hidden)
        chunk = max(1, _FULL_SCORE_ELEMENTS // (self.n_items * width))
        return torch.cat([self._logits(u.unsqueeze(1), items) for u in users.split(chunk)])

    def score(self, users: Tensor, items: Tensor, history: Tensor | None = None) -> Tensor:
        return self._logits(users.unsqueeze(1), items)  # (B, C)

    def user_item_embeddings(self) -> tuple[Tensor | None, Tensor]:
        """The GMF tables p (users) and q (items); the MLP branch has its own tables."""
        return self.user_gmf.weight, self.item_gmf.weight
