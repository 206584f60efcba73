"""Popularity: every user gets the items ranked by train interaction count. The floor."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from lmrec.errors import DataError, LmrecError
from lmrec.models.base import Recommender


@dataclass
class PopularityConfig:
    """Popularity has no hyper-parameters; the config exists so every model has one."""


class Popularity(Recommender):
    """Scores an item by how often it occurs in the train interactions.

    Nothing is trained (``batch_kind = "none"``): :meth:`fit_counts` (or :meth:`prepare`, which
    counts the train pairs) sets the ``counts`` buffer, which is saved with the state dict.
    """

    batch_kind = "none"

    def __init__(self, n_users: int, n_items: int, config: PopularityConfig | None = None) -> None:
        super().__init__(n_users, n_items)
        self.config = config or PopularityConfig()
        self.register_buffer("counts", torch.zeros(n_items))  # (N,)

    def fit_counts(self, item_counts: np.ndarray | Tensor) -> Popularity:
        """Set the per-item train counts, shape (n_items,), all >= 0. Returns ``self``."""
        counts = torch.as_tensor(np.asarray(item_counts), dtype=torch.float32)
        if counts.shape != (self.n_items,):
            raise DataError(
                f"item_counts must have shape ({self.n_items},), one count per item, "
                f"got {tuple(counts.shape)}"
            )
        if bool((counts < 0).any()) or not bool(torch.isfinite(counts).all()):
            raise DataError("item_counts must be finite and >= 0")
        self.counts.copy_(counts)
        return self

    def prepare(self, users: np.ndarray, items: np.ndarray) -> None:
        """Count the train items (``users`` is unused: popularity is the same for everyone)."""
        items = np.asarray(items, dtype=np.int64)
        if items.size and (items.min() < 0 or items.max() >= self.n_items):
            raise DataError(f"train items must lie in 0..{self.n_items - 1}")
        self.fit_counts(np.bincount(items, minlength=self.n_items))

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        raise LmrecError("popularity has nothing to train (batch_kind 'none'); call prepare()")

    def full_scores(self, users: Tensor, history: Tensor | None = None) -> Tensor:
        return self.counts.unsqueeze(0).expand(len(users), -1).clone()  # (B, N)

    def score(self, users: Tensor, items: Tensor, history: Tensor | None = None) -> Tensor:
        return self.counts[items]  # (B, C)

    def user_item_embeddings(self) -> tuple[Tensor | None, Tensor]:
        """No user table; the item "table" is the (n_items, 1) column of counts."""
        return None, self.counts.unsqueeze(1)
