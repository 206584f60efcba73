"""The one contract every domain model follows (the only abstract base in lmrec.models).

A model is a pure ``nn.Module`` that takes tensors. The single training loop
(:mod:`lmrec.train`) reads ``batch_kind`` to know which batches to build, calls ``loss`` on them,
and evaluation calls ``score`` / ``full_scores``. BDLM reads ``user_item_embeddings``.

Batch kinds (all tensors int64 unless noted; ``PAD = n_items`` pads item sequences on the left):

- ``"pairwise"``:  ``users`` (B,), ``pos`` (B,), ``neg`` (B,): BPR (MF, LightGCN).
- ``"pointwise"``: ``users`` (B,), ``items`` (B,), ``labels`` (B,) float32: BCE (GMF, NeuMF).
- ``"sequence"``:  ``users`` (B,), ``seq`` (B, L) the items before each target, ``pos`` (B, L)
  the next item at every position (PAD where there is none), ``neg`` (B, L) a sampled
  non-interacted item per position (SASRec, GRU4Rec, BERT4Rec; BERT4Rec masks ``seq`` itself).
- ``"none"``: nothing to train (popularity).

At scoring time ``history`` (B, L) is the user's chronological items before the evaluated stage,
left-padded with PAD; models that do not read histories ignore it.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import Tensor, nn


class Recommender(nn.Module):
    """Base class: ``loss(batch)``, ``score(users, items)``, ``user_item_embeddings()``.

    Subclasses are built as ``Model(n_users, n_items, config)`` with a dataclass ``config``
    kept as ``self.config``; sequential models also expose ``max_len``, the history length
    they read (longer histories are cut to their last ``max_len`` items).
    """

    batch_kind: ClassVar[str] = "pairwise"

    def __init__(self, n_users: int, n_items: int) -> None:
        super().__init__()
        self.n_users = n_users
        self.n_items = n_items

    def prepare(self, users: np.ndarray, items: np.ndarray) -> None:
        """Hand the model the train interactions it needs beyond batches; default: nothing.

        The training loop calls this once with the train ``(user, item)`` pairs before training,
        and again after loading a checkpoint, since what it builds is not saved with the weights.
        LightGCN builds its graph here (:meth:`LightGCN.set_graph`), popularity counts items.
        """

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        """Scalar training loss on one batch of this model's ``batch_kind``."""
        raise NotImplementedError

    def full_scores(self, users: Tensor, history: Tensor | None = None) -> Tensor:
        """Scores of every item for each user: (B,) -> (B, n_items). Higher is better."""
        raise NotImplementedError

    def score(self, users: Tensor, items: Tensor, history: Tensor | None = None) -> Tensor:
        """Scores of the given items: users (B,), items (B, C) -> (B, C).

        The default gathers from :meth:`full_scores`; models override it when scoring a few
        candidates is much cheaper than scoring all items.
        """
        return torch.gather(self.full_scores(users, history), 1, items)

    def user_item_embeddings(self) -> tuple[Tensor | None, Tensor]:
        """The user table (n_users, d), or None for models without one, and item table (n_items, d).

        BDLM pre-loads the LLM's user/item token rows from these and aligns them through its
        information-sharing module, so they must be the tables the model scores with.
        """
        raise NotImplementedError
