"""Training batches of every batch kind, built from the train interactions of a ``Split``.

Each epoch's batches come from a generator seeded by ``(seed, epoch)`` and nothing else, so the
epoch a resumed run starts with is exactly the epoch an uninterrupted run would have seen.
Negatives are drawn uniformly from the items the user has no train interaction with (the
reference implementations of BPR, NCF and SASRec do the same). Layouts follow
:mod:`lmrec.models.base`; ``PAD = n_items`` pads item sequences on the left.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from lmrec.errors import DataError
from lmrec.protocol.split import Split

BATCH_KINDS = ("pairwise", "pointwise", "sequence", "none")
_MAX_REJECTION_ROUNDS = 1000


_BITSET_MAX_BYTES = 1 << 28  # 256 MB: ML-1M needs 2.8 MB, Amazon-Office 1.5 MB


@dataclass(frozen=True)
class UserItems:
    """Each user's items in chronological order, stored CSR-style.

    ``items[indptr[u]:indptr[u + 1]]`` are user ``u``'s items. Membership tests read a bitset
    over all ``user * n_items + item`` codes (one bit per pair, O(1) per lookup) when it fits
    in 256 MB, else binary-search the sorted codes in ``keys``.
    """

    indptr: np.ndarray  # (n_users + 1,)
    items: np.ndarray  # (n_interactions,)
    keys: np.ndarray  # (n_unique_pairs,) sorted codes
    bits: np.ndarray | None  # (ceil(n_users * n_items / 8),) uint8, or None when too big
    n_users: int
    n_items: int

    @classmethod
    def from_frame(cls, inter: pd.DataFrame, n_users: int, n_items: int) -> UserItems:
        """Build from a frame with ``user`` and ``item`` columns sorted by (user, time)."""
        users = inter["user"].to_numpy(np.int64)
        items = inter["item"].to_numpy(np.int64)
        if len(users) and np.any(np.diff(users) < 0):
            raise DataError("interactions must be sorted by user (then time) to build histories")
        indptr = np.zeros(n_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(users, minlength=n_users), out=indptr[1:])
        # sort + drop repeats: np.unique is an order of magnitude slower here (numpy 2.x)
        keys = np.sort(users * n_items + items)
        keys = keys[np.r_[True, keys[1:] != keys[:-1]]] if len(keys) else keys
        bits = None
        if (n_users * n_items + 7) // 8 <= _BITSET_MAX_BYTES:
            bits = np.zeros((n_users * n_items + 7) // 8, dtype=np.uint8)
            np.bitwise_or.at(bits, keys >> 3, (1 << (keys & 7)).astype(np.uint8))
        return cls(indptr, items, keys, bits, n_users, n_items)

    def contains(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Boolean array: did ``users[i]`` interact with ``items[i]`` (any equal shapes)."""
        q = np.asarray(users, dtype=np.int64) * self.n_items + items
        if self.bits is not None:
            return ((self.bits[q >> 3] >> (q & 7).astype(np.uint8)) & 1).astype(bool)
        if len(self.keys) == 0:
            return np.zeros(q.shape, dtype=bool)
        pos = np.minimum(np.searchsorted(self.keys, q), len(self.keys) - 1)
        return self.keys[pos] == q

    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def last(self, users: np.ndarray, max_len: int, pad: int) -> np.ndarray:
        """The last ``max_len`` items of each user, left-padded with ``pad``: (B, max_len)."""
        users = np.asarray(users, dtype=np.int64)
        start, end = self.indptr[users], self.indptr[users + 1]
        pos = end[:, None] - max_len + np.arange(max_len)[None, :]  # (B, L)
        keep = pos >= start[:, None]
        gathered = (
            self.items[np.clip(pos, 0, max(len(self.items) - 1, 0))] if len(self.items) else 0
        )
        return np.where(keep, gathered, pad).astype(np.int64)


def sample_negatives(
    rng: np.random.Generator,
    users: np.ndarray,
    seen: UserItems,
    shape: tuple[int, ...] | None = None,
) -> np.ndarray:
    """Uniform items each user has not interacted with; ``users`` broadcasts against ``shape``.

    Rejection sampling: draw all, redraw the hits. With typical densities (< 5%) one or two
    rounds suffice; a user who has seen every item cannot get a negative and raises.
    """
    shape = users.shape if shape is None else shape
    users = np.broadcast_to(users, shape)
    neg = rng.integers(0, seen.n_items, size=shape, dtype=np.int64)
    bad = seen.contains(users, neg)
    for _ in range(_MAX_REJECTION_ROUNDS):
        if not bad.any():
            return neg
        neg[bad] = rng.integers(0, seen.n_items, size=int(bad.sum()), dtype=np.int64)
        bad[bad] = seen.contains(users[bad], neg[bad])
    full = np.unique(users[bad])
    raise DataError(
        f"cannot sample negatives for user(s) {full[:5].tolist()}: they interacted with (nearly) "
        f"all {seen.n_items} items; filter such users out in preprocessing"
    )


class BatchBuilder:
    """Builds one epoch of batches of a model's ``batch_kind`` from the train interactions.

    Parameters
    ----------
    split:
        The leave-one-out split; only ``split.train`` is read.
    kind:
        ``"pairwise"``, ``"pointwise"``, ``"sequence"`` or ``"none"``.
    batch_size:
        Rows per batch (users per batch for ``"sequence"``).
    seed:
        With the epoch number, the only source of randomness: ``default_rng([seed, epoch])``.
    max_len:
        Sequence length ``L`` of ``"sequence"`` batches.
    n_neg:
        Negatives per positive in ``"pointwise"`` batches.
    """

    def __init__(
        self,
        split: Split,
        kind: str,
        batch_size: int,
        seed: int,
        *,
        max_len: int = 50,
        n_neg: int = 4,
    ) -> None:
        if kind not in BATCH_KINDS:
            raise ValueError(f"batch kind must be one of {BATCH_KINDS}, got {kind!r}")
        self.kind = kind
        self.batch_size = batch_size
        self.seed = seed
        self.max_len = max_len
        self.n_neg = n_neg
        self.seen = UserItems.from_frame(split.train, split.n_users, split.n_items)
        self.pad = split.n_items

    def arrays(self, epoch: int) -> dict[str, np.ndarray]:
        """All rows of epoch ``epoch``, shuffled, as numpy arrays keyed like the batches."""
        rng = np.random.default_rng([self.seed, epoch])
        if self.kind == "pairwise":
            return self._pairwise(rng)
        if self.kind == "pointwise":
            return self._pointwise(rng)
        if self.kind == "sequence":
            return self._sequence(rng)
        return {}

    def epoch(self, epoch: int) -> Iterator[dict[str, Tensor]]:
        """Batches of epoch ``epoch`` as CPU tensors; the same ``(seed, epoch)`` gives the same."""
        arrays = self.arrays(epoch)
        n = len(next(iter(arrays.values()))) if arrays else 0
        for lo in range(0, n, self.batch_size):
            yield {k: torch.from_numpy(v[lo : lo + self.batch_size]) for k, v in arrays.items()}

    def n_batches(self) -> int:
        """Batches per epoch (the progress bar's total)."""
        if self.kind == "none":
            return 0
        if self.kind == "sequence":
            n = int((self.seen.lengths() >= 2).sum())
        else:
            n = len(self.seen.items) * (1 + self.n_neg if self.kind == "pointwise" else 1)
        return -(-n // self.batch_size)

    def _positives(self) -> tuple[np.ndarray, np.ndarray]:
        users = np.repeat(np.arange(self.seen.n_users), self.seen.lengths())
        return users, self.seen.items

    def _pairwise(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        users, pos = self._positives()
        order = rng.permutation(len(users))
        users, pos = users[order], pos[order]
        return {"users": users, "pos": pos, "neg": sample_negatives(rng, users, self.seen)}

    def _pointwise(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        users, pos = self._positives()
        neg = sample_negatives(rng, users[:, None], self.seen, (len(users), self.n_neg))
        all_users = np.concatenate([users, np.repeat(users, self.n_neg)])
        items = np.concatenate([pos, neg.reshape(-1)])
        labels = np.concatenate([np.ones(len(pos)), np.zeros(neg.size)]).astype(np.float32)
        order = rng.permutation(len(all_users))
        return {"users": all_users[order], "items": items[order], "labels": labels[order]}

    def _sequence(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        # One sample per user per epoch, as in SASRec's reference sampler: the input is the
        # history without its last item, the target at each position the item that follows.
        lengths = self.seen.lengths()
        users = rng.permutation(np.flatnonzero(lengths >= 2)).astype(np.int64)
        full = self.seen.last(users, self.max_len + 1, self.pad)  # (B, L + 1)
        seq = full[:, :-1]
        # A user's first item has nothing before it to predict it from, so no target there.
        real = seq != self.pad
        pos = np.where(real, full[:, 1:], self.pad)
        neg = np.full_like(pos, self.pad)
        neg[real] = sample_negatives(
            rng, np.broadcast_to(users[:, None], pos.shape)[real], self.seen
        )
        return {"users": users, "seq": seq, "pos": pos, "neg": neg}


class Histories:
    """Left-padded item histories for scoring one stage, built once and sliced per batch.

    The model may see train interactions when scoring ``"valid"`` and train + valid when
    scoring ``"test"`` (:meth:`Split.history_before`).
    """

    def __init__(self, split: Split, stage: str, max_len: int) -> None:
        self.seen = UserItems.from_frame(split.history_before(stage), split.n_users, split.n_items)
        self.max_len = max_len
        self.pad = split.n_items

    def tensor(self, users: np.ndarray | Tensor) -> Tensor:
        """(B,) users -> (B, max_len) int64 histories, left-padded with ``PAD = n_items``."""
        users = users.cpu().numpy() if isinstance(users, Tensor) else np.asarray(users)
        return torch.from_numpy(self.seen.last(users.astype(np.int64), self.max_len, self.pad))


def history_tensor(split: Split, stage: str, users: np.ndarray | Tensor, max_len: int) -> Tensor:
    """Left-padded histories of ``users`` for scoring ``stage`` (train; train + valid for test).

    Builds the index each call; use :class:`Histories` to score many batches of one stage.
    """
    return Histories(split, stage, max_len).tensor(users)
