"""Aligned batches: the same (user, positive, negative) rows for both sides of a joint step.

The rows are the domain model's own pairwise training rows (:class:`lmrec.train.batches.
BatchBuilder`: every train interaction once per epoch, shuffled by ``(seed, epoch)``, with a
uniformly drawn item the user has not interacted with), so the domain side trains on exactly the
rows it would alone. ``per_epoch`` keeps only the first rows of each shuffled epoch (an LLM step
costs far more than a domain step). Each row also knows where its positive sits in the user's
chronological train history, which gives the LLM side the items *before* it: the LLM learns to
predict that interaction from the past only, as at test time.

Two row schedules (``rows``):

- ``random``: the domain model's own rows, as above (the first ``per_epoch`` of each epoch).
- ``recent``: rows shaped like the test task. Every user with at least two train items gives
  one row per epoch, its target being the user's e-th most recent train item in epoch e (the
  last one in epoch 1, the one before in epoch 2, ...), predicted from the items before it;
  users are shuffled by ``(seed, epoch)`` and the row's ``neg`` (the domain side's BPR negative)
  is drawn uniformly among the items the user never trained on.

The LLM's top-K candidates are the target plus ``n_candidates - 1`` negatives. With a protocol
sampler (``negatives``, e.g. the candidate sets' own ``mixed`` popularity + title-similarity
sampler with their settings) they are drawn as the test candidates are: never the target, never
an item the user interacted with in any split (so no held-out item is ever a training
negative), and fresh every (epoch, batch). Without one, the row's ``neg`` plus
:mod:`lmrec.llm.sft`'s uniform/popularity draws.

From one batch of rows:

- :meth:`AlignedBatches.domain_batch`: the model's native batch (pairwise ``users/pos/neg`` or
  pointwise ``users/items/labels`` with the positive and the negative of every row);
- :meth:`AlignedBatches.llm_prompts`: SFT prompts (interaction "Yes" for the positive, "No" for
  the negative; top-K with the positive, the row's negative and further negatives drawn as
  :mod:`lmrec.llm.sft` draws them, from their own seeded stream);
- :meth:`AlignedBatches.feature_prompts`: the interaction prompts whose h_LLM the cascade reads,
  positive then negative per row (consecutive, so they share their prefix).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from lmrec.llm.prompts import Prompt, PromptBuilder
from lmrec.llm.sft import ExampleConfig, TrainingNegatives
from lmrec.protocol.samplers import NegativeSampler
from lmrec.protocol.split import Split
from lmrec.train.batches import BatchBuilder, sample_negatives

ROW_SCHEDULES = ("random", "recent")

# Separate seed streams: the LLM's extra top-K negatives never consume the row stream.
LLM_NEGATIVES_STREAM = 1
RECENT_STREAM = 2
STREAM_TAG = 0xB41D  # last word of every seed list here (see topk_candidates)


@dataclass(frozen=True)
class Rows:
    """One aligned batch: ``users``, ``pos``, ``neg`` and ``position`` (B,) int64 arrays.

    ``position[r]`` is the index of ``pos[r]`` in user ``users[r]``'s chronological train items.
    """

    users: np.ndarray
    pos: np.ndarray
    neg: np.ndarray
    position: np.ndarray

    def __len__(self) -> int:
        return len(self.users)

    def subset(self, index: np.ndarray) -> Rows:
        """The rows at ``index`` (one process's shard of a batch)."""
        return Rows(self.users[index], self.pos[index], self.neg[index], self.position[index])

    def tensors(self, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor, Tensor]:
        """(users, pos, neg) as int64 tensors on ``device``."""
        return tuple(  # type: ignore[return-value]
            torch.as_tensor(a, dtype=torch.long, device=device)
            for a in (self.users, self.pos, self.neg)
        )


class AlignedBatches:
    """Batches of aligned rows for epoch ``e`` and batch ``k``, reproducible from the seed alone.

    Parameters
    ----------
    split:
        The leave-one-out split; only ``split.train`` is read.
    batch_size:
        Rows per joint step.
    seed:
        Seeds the rows (with the epoch, as :class:`BatchBuilder` does) and the LLM's top-K
        negatives (with the epoch and the batch, on a stream of their own).
    per_epoch:
        Rows per epoch: the first ``per_epoch`` of the shuffled epoch; 0 takes all of them.
    rows:
        ``random`` or ``recent`` (see the module docstring).
    negatives:
        A protocol sampler for the LLM's top-K negatives (see the module docstring), or None.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        seed: int,
        per_epoch: int = 0,
        rows: str = "random",
        negatives: NegativeSampler | None = None,
    ) -> None:
        if batch_size < 1 or per_epoch < 0:
            raise ValueError("batch_size must be >= 1 and per_epoch >= 0")
        if rows not in ROW_SCHEDULES:
            raise ValueError(f"rows must be one of {ROW_SCHEDULES}, got {rows!r}")
        self.builder = BatchBuilder(split, "pairwise", batch_size, seed)
        self.seen = self.builder.seen
        self.batch_size = batch_size
        self.seed = seed
        self.schedule = rows
        self.negatives = negatives
        lengths = self.seen.lengths()
        self._recent_users = np.flatnonzero(lengths >= 2).astype(np.int64)
        n_rows = len(self.seen.items) if rows == "random" else len(self._recent_users)
        self.rows_per_epoch = min(per_epoch, n_rows) if per_epoch else n_rows
        self.popularity = np.bincount(self.seen.items, minlength=self.seen.n_items)
        # first position of every (user, item) pair in the user's chronological items
        users = np.repeat(np.arange(self.seen.n_users), self.seen.lengths())
        codes = users * self.seen.n_items + self.seen.items
        order = np.argsort(codes, kind="stable")  # stable: the first occurrence comes first
        self._codes = codes[order]
        self._positions = (np.arange(len(codes)) - self.seen.indptr[users])[order]
        self._epoch: tuple[int, dict[str, np.ndarray]] | None = None

    def n_batches(self) -> int:
        """Joint steps per epoch."""
        return -(-self.rows_per_epoch // self.batch_size)

    def _recent(self, epoch: int) -> dict[str, np.ndarray]:
        """Rows of the ``recent`` schedule for epoch ``epoch`` (from 1)."""
        rng = np.random.default_rng([self.seed, RECENT_STREAM, epoch, STREAM_TAG])
        users = rng.permutation(self._recent_users)
        lengths = self.seen.lengths()[users]
        # the e-th most recent train item; users with fewer items cycle back to their last
        back = (epoch - 1) % (lengths - 1)
        position = lengths - 1 - back
        pos = self.seen.items[self.seen.indptr[users] + position].astype(np.int64)
        neg = sample_negatives(rng, users, self.seen)  # the domain loop's own uniform draw
        return {"users": users, "pos": pos, "neg": neg, "position": position.astype(np.int64)}

    def _arrays(self, epoch: int) -> dict[str, np.ndarray]:
        if self._epoch is None or self._epoch[0] != epoch:
            arrays = (
                self._recent(epoch) if self.schedule == "recent" else self.builder.arrays(epoch)
            )
            self._epoch = (epoch, {k: v[: self.rows_per_epoch] for k, v in arrays.items()})
        return self._epoch[1]

    def batch(self, epoch: int, k: int) -> Rows:
        """Batch ``k`` (from 0) of epoch ``epoch`` (from 1)."""
        arrays = self._arrays(epoch)
        lo = k * self.batch_size
        users = arrays["users"][lo : lo + self.batch_size]
        pos = arrays["pos"][lo : lo + self.batch_size]
        neg = arrays["neg"][lo : lo + self.batch_size]
        if "position" in arrays:  # recent rows know their target's place already
            return Rows(users, pos, neg, arrays["position"][lo : lo + self.batch_size])
        at = np.searchsorted(self._codes, users * self.seen.n_items + pos)
        return Rows(users, pos, neg, self._positions[at])

    def history(self, user: int, position: int) -> np.ndarray:
        """The user's train items before ``position``, oldest first."""
        start = self.seen.indptr[user]
        return self.seen.items[start : start + position]

    # ------------------------------------------------------------------------ per side

    @staticmethod
    def domain_batch(rows: Rows, kind: str, device: torch.device | str = "cpu") -> dict:
        """The domain model's native batch of ``kind`` built from the rows."""
        users, pos, neg = rows.tensors(device)
        if kind == "pairwise":
            return {"users": users, "pos": pos, "neg": neg}
        if kind == "pointwise":
            labels = torch.cat([torch.ones(len(rows)), torch.zeros(len(rows))]).to(device)
            return {
                "users": torch.cat([users, users]),
                "items": torch.cat([pos, neg]),
                "labels": labels,
            }
        raise ValueError(f"BDLM's domain side trains pairwise or pointwise models, not {kind!r}")

    def topk_candidates(
        self, rows: Rows, examples: ExampleConfig, epoch: int, k: int
    ) -> np.ndarray:
        """(B, n_candidates) top-K candidates of the rows, the target in column 0."""
        # a non-zero last word: numpy drops trailing zeros of a seed list, which would make
        # batch 0 share its stream with other users of the seed
        rng = np.random.default_rng([self.seed, LLM_NEGATIVES_STREAM, epoch, k, STREAM_TAG])
        n = examples.n_candidates
        if self.negatives is not None:
            negs = self.negatives.sample(rows.users, rows.pos, n - 1, rng).items
            return np.concatenate([rows.pos[:, None], negs], 1).astype(np.int64)
        sampler = TrainingNegatives(self.seen.n_items, self.popularity, examples.negatives, rng)
        out = np.empty((len(rows), n), dtype=np.int64)
        for r, (u, pos, neg) in enumerate(zip(rows.users, rows.pos, rows.neg, strict=True)):
            start, stop = self.seen.indptr[u], self.seen.indptr[u + 1]
            exclude = {*self.seen.items[start:stop].tolist(), int(neg)}
            more = sampler.sample(n - 2, exclude).tolist()
            out[r] = [int(pos), int(neg), *more]
        return out

    def llm_prompts(
        self,
        rows: Rows,
        builder: PromptBuilder,
        examples: ExampleConfig,
        epoch: int,
        k: int,
        cands: np.ndarray | None = None,
    ) -> list[Prompt]:
        """SFT prompts of the rows for the tasks in ``examples.tasks`` (see module docstring).

        Per row: the top-K prompt (if asked), then the interaction prompts of the positive and
        the negative (if asked). ``cands``: the rows' :meth:`topk_candidates` when the caller
        has drawn them already.
        """
        if cands is None and "topk" in examples.tasks:
            cands = self.topk_candidates(rows, examples, epoch, k)
        out: list[Prompt] = []
        for r, (u, pos, neg, t) in enumerate(
            zip(rows.users, rows.pos, rows.neg, rows.position, strict=True)
        ):
            u, pos, neg = int(u), int(pos), int(neg)
            history = self.history(u, int(t))
            if cands is not None:
                out.append(builder.prompt("topk", u, history, candidates=cands[r]))
            if "interaction" in examples.tasks:
                out.append(builder.prompt("interaction", u, history, target=pos, label=1))
                out.append(builder.prompt("interaction", u, history, target=neg, label=0))
        return out

    def feature_prompts(self, rows: Rows, builder: PromptBuilder) -> list[str]:
        """Interaction prompt texts of (user, positive) and (user, negative), row by row."""
        out = []
        for u, pos, neg, t in zip(rows.users, rows.pos, rows.neg, rows.position, strict=True):
            history = self.history(int(u), int(t))
            for item in (pos, neg):
                out.append(builder.prompt("interaction", int(u), history, target=int(item)).text)
        return out
