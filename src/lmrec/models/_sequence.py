"""Helpers shared by the sequential models (SASRec, GRU4Rec, BERT4Rec) for left-padded input."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lmrec.models.base import Recommender


def last_items(seq: Tensor, max_len: int, pad: int, what: str = "history") -> Tensor:
    """Check a left-padded (B, L) item tensor and keep its last ``max_len`` columns.

    Ids must lie in ``0..pad`` (``pad = n_items``); anything else (a MASK id, an item of another
    dataset) would be embedded silently, so it raises instead.
    """
    if seq.dim() != 2 or seq.shape[1] == 0:
        raise ValueError(
            f"{what} must be a (B, L) tensor with L >= 1, got shape {tuple(seq.shape)}"
        )
    if seq.numel() and (int(seq.min()) < 0 or int(seq.max()) > pad):
        raise ValueError(
            f"{what} holds item ids outside 0..{pad} (n_items = {pad}, PAD = {pad}): "
            f"min {int(seq.min())}, max {int(seq.max())}; check the dataset the model was built for"
        )
    return seq[:, -max_len:]


def positions(length: int, max_len: int, device: torch.device) -> Tensor:
    """Position ids of the last ``length`` columns of a ``max_len`` window: (length,).

    Input is left-padded, so counting positions from the right end makes a short batch (L <
    max_len) see exactly the positions it would see padded to ``max_len``: the newest item
    always sits at position ``max_len - 1``, in training and in scoring alike.
    """
    return torch.arange(max_len - length, max_len, device=device)


class NextItemRecommender(Recommender):
    """Base of models that score items by the dot product of the last hidden state of the
    user's history with the item table (SASRec, GRU4Rec); ``batch_kind = "sequence"``.

    A subclass sets ``item_emb`` (rows ``0..n_items-1`` are items, row ``n_items = pad`` is PAD),
    ``max_len`` and ``pad``, and defines ``encode(seq) -> (B, L, d)`` for a left-padded sequence.
    Users are ignored: a user is their history.
    """

    batch_kind = "sequence"
    item_emb: nn.Embedding
    max_len: int
    pad: int

    def encode(self, seq: Tensor) -> Tensor:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def user_state(self, history: Tensor | None) -> Tensor:
        """The hidden state (B, d) after the last item of each left-padded history (B, L)."""
        if history is None:
            raise ValueError(
                f"{type(self).__name__} scores from histories: pass history (B, L), left-padded"
            )
        return self.encode(last_items(history, self.max_len, self.pad))[:, -1]

    def full_scores(self, users: Tensor, history: Tensor | None = None) -> Tensor:
        return self.user_state(history) @ self.item_emb.weight[: self.n_items].T  # (B, N)

    def score(self, users: Tensor, items: Tensor, history: Tensor | None = None) -> Tensor:
        h = self.user_state(history).unsqueeze(1)  # (B, 1, d)
        return (h * self.item_emb(items)).sum(-1)  # (B, C)

    def user_item_embeddings(self) -> tuple[Tensor | None, Tensor]:
        """No user table (a user is their history); the item table without the PAD row."""
        return None, self.item_emb.weight[: self.n_items]
