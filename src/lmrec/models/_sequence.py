"""Helpers shared by the sequential models (SASRec, GRU4Rec, BERT4Rec) for left-padded input."""

from __future__ import annotations

import torch
from torch import Tensor


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
