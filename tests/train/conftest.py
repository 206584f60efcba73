"""Tiny data and tiny models for the trainer tests (the real models live in lmrec.models)."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lmrec.data import Interactions, preprocess
from lmrec.models.base import Recommender
from lmrec.protocol import leave_one_out

N_GROUPS = 4


def make_split(n_users: int = 24, n_items: int = 32, per_user: int = 9, seed: int = 0):
    """Users of group g = u % 4 mostly watch items of group g = i % 4, in a random order."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        own = [i for i in range(n_items) if i % N_GROUPS == u % N_GROUPS]
        other = [i for i in range(n_items) if i % N_GROUPS != u % N_GROUPS]
        items = list(rng.choice(own, per_user - 1, replace=False)) + [int(rng.choice(other))]
        rng.shuffle(items)
        rows += [(f"u{u}", f"i{i}", t, 5.0) for t, i in enumerate(items)]
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "rating"])
    return leave_one_out(preprocess(Interactions("tiny", df)))


class TinyMF(Recommender):
    """BPR matrix factorisation with dropout, so training also draws from torch's RNG."""

    batch_kind = "pairwise"

    def __init__(self, n_users: int, n_items: int, dim: int = 8, dropout: float = 0.2) -> None:
        super().__init__(n_users, n_items)
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)
        self.drop = nn.Dropout(dropout)
        nn.init.normal_(self.user.weight, std=0.1)
        nn.init.normal_(self.item.weight, std=0.1)
        self.fail_at_step: int | None = None  # simulate a crash mid-epoch
        self.steps = 0

    def loss(self, batch):
        self.steps += 1
        if self.fail_at_step is not None and self.steps == self.fail_at_step:
            raise KeyboardInterrupt("simulated kill mid-epoch")
        u = self.drop(self.user(batch["users"]))  # (B, d)
        diff = (u * (self.item(batch["pos"]) - self.item(batch["neg"]))).sum(-1)
        return -F.logsigmoid(diff).mean()

    def full_scores(self, users, history=None):
        return self.user(users) @ self.item.weight.T  # (B, n_items)

    def user_item_embeddings(self):
        return self.user.weight, self.item.weight


class TinySeq(Recommender):
    """Next-item model: the mean of the history's item embeddings scores the next item."""

    batch_kind = "sequence"

    def __init__(self, n_users: int, n_items: int, dim: int = 8) -> None:
        super().__init__(n_users, n_items)
        self.max_len = 10
        self.item = nn.Embedding(n_items + 1, dim, padding_idx=n_items)  # row n_items = PAD
        self.mix = nn.Linear(dim, dim)

    def _states(self, seq):  # (B, L) -> (B, L, d): running mean of the prefix
        emb = self.item(seq)
        real = (seq != self.n_items).unsqueeze(-1).float()
        count = real.cumsum(1).clamp(min=1)
        return self.mix(emb.cumsum(1) / count)

    def loss(self, batch):
        h = self._states(batch["seq"])
        real = batch["pos"] != self.n_items
        pos = (h * self.item(batch["pos"])).sum(-1)[real]
        neg = (h * self.item(batch["neg"])).sum(-1)[real]
        return -(F.logsigmoid(pos) + F.logsigmoid(-neg)).mean()

    def full_scores(self, users, history=None):
        h = self._states(history)[:, -1]  # (B, d)
        return h @ self.item.weight[: self.n_items].T

    def user_item_embeddings(self):
        return None, self.item.weight[: self.n_items]


class TinyPointwise(TinyMF):
    batch_kind = "pointwise"

    def loss(self, batch):
        logits = (self.user(batch["users"]) * self.item(batch["items"])).sum(-1)
        return F.binary_cross_entropy_with_logits(logits, batch["labels"])


class TinyPopularity(Recommender):
    batch_kind = "none"

    def __init__(self, n_users: int, n_items: int) -> None:
        super().__init__(n_users, n_items)
        self.register_buffer("counts", torch.zeros(n_items))

    def prepare(self, users, items) -> None:
        self.counts = torch.bincount(torch.tensor(items), minlength=self.n_items).float()

    def full_scores(self, users, history=None):
        return self.counts.expand(len(users), -1)

    def user_item_embeddings(self):
        return None, self.counts[:, None]


def hit_rate_valid(split, k: int = 5, stage: str = "valid", max_len: int = 10):
    """A small stand-alone validation function: HR@k over all unseen items."""
    from lmrec.train.batches import Histories

    target = split.stage(stage)
    users = target["user"].to_numpy()
    items = target["item"].to_numpy()
    seen = split.history_before(stage)
    row_of = np.full(split.n_users, -1)
    row_of[users] = np.arange(len(users))
    rows = row_of[seen["user"].to_numpy()]
    keep = rows >= 0
    rows, cols = rows[keep], seen["item"].to_numpy()[keep]
    hist = Histories(split, stage, max_len)

    def valid_fn(model):
        u = torch.tensor(users)
        scores = model.full_scores(u, hist.tensor(users)).clone()
        scores[rows, cols] = -torch.inf  # never recommend what the user already has
        top = scores.topk(k, dim=1).indices.numpy()
        return {"HR@5": float((top == items[:, None]).any(1).mean()), "other": 0.0}

    return valid_fn


@pytest.fixture
def split():
    return make_split()


@pytest.fixture
def tiny():
    """The helpers above, for test modules (conftest is not importable by name)."""
    return SimpleNamespace(
        MF=TinyMF,
        Seq=TinySeq,
        Pointwise=TinyPointwise,
        Popularity=TinyPopularity,
        make_split=make_split,
        hit_rate_valid=hit_rate_valid,
    )
