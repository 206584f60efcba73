"""Negative samplers: which non-interacted items stand beside each held-out positive.

Four samplers are registered in :data:`SAMPLERS`:

``uniform``
    every item the user never interacted with is equally likely.
``popularity``
    proportional to ``train_count ** alpha`` (alpha = 1: plain popularity).
``textsim``
    uniform among the ``top`` items whose title embeddings are nearest (cosine) to the
    positive's, counting only items the user never interacted with: hard, on-topic negatives.
``mixed``
    the BDLM paper's mix: a fraction ``mix_popularity`` of each row's negatives from
    ``popularity``, the rest from ``textsim``, all distinct.

Guarantees, for every sampler: a negative is never an item the user interacted with in any
split (train, valid or test; :class:`SeenItems` holds them all), never the row's positive, and
the negatives of one row are distinct. Draws are without replacement: uniform and popularity
draw with replacement and reject repeats and seen items (equivalent to sequential sampling
without replacement), and the few rows that rejection cannot fill quickly (users who saw most
of the popular items) are finished exactly with the Gumbel-top-k trick.

Everything is vectorised over rows with NumPy and driven by one ``np.random.Generator``, so a
seed fixes the result.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from lmrec.errors import ConfigError, DataError
from lmrec.protocol.draws import (
    NO_ITEM,
    draw_textsim,
    draw_weighted,
    exclusions,
    neighbours,
)
from lmrec.registry import Registry

_DENSE_CELLS = 1 << 26  # users x items up to which SeenItems keeps a dense mask (64 MiB)


@dataclass
class SeenItems:
    """Every (user, item) pair a user interacted with, as sorted ``user * n_items + item`` keys.

    Build it from all splits (train, valid and test) so that no sampler can ever return an
    item the user interacted with anywhere. When the user x item matrix is small enough
    (ML-1M: 22 M cells) a dense boolean copy answers :meth:`contains` by direct lookup, which
    is several times faster than binary search over the keys.
    """

    n_users: int
    n_items: int
    keys: np.ndarray  # (n_pairs,) sorted unique int64
    indptr: np.ndarray  # (n_users + 1,) row offsets of each user's keys
    dense: np.ndarray | None = None  # (n_users * n_items,) bool, or None for large catalogues

    @classmethod
    def from_pairs(
        cls, users: np.ndarray, items: np.ndarray, n_users: int, n_items: int
    ) -> SeenItems:
        """Build from parallel arrays of user and item indices (repeats allowed)."""
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        if len(users) and (users.min() < 0 or users.max() >= n_users):
            raise DataError(f"user indices must lie in [0, {n_users}); re-index the dataset")
        if len(items) and (items.min() < 0 or items.max() >= n_items):
            raise DataError(f"item indices must lie in [0, {n_items}); re-index the dataset")
        keys = users * n_items + items
        dense = None
        if n_users * n_items <= _DENSE_CELLS:
            dense = np.zeros(n_users * n_items, dtype=bool)
            dense[keys] = True
            keys = np.flatnonzero(dense)  # sorted and unique, faster than sorting the pairs
        else:
            keys = np.unique(keys)
        indptr = np.searchsorted(keys, np.arange(n_users + 1, dtype=np.int64) * n_items)
        return cls(n_users, n_items, keys, indptr, dense)

    def counts(self, users: np.ndarray) -> np.ndarray:
        """(r,) number of distinct items each user interacted with."""
        users = np.asarray(users, dtype=np.int64)
        return self.indptr[users + 1] - self.indptr[users]

    def items_of(self, user: int) -> np.ndarray:
        """Sorted item indices of one user."""
        return self.keys[self.indptr[user] : self.indptr[user + 1]] % self.n_items

    def contains(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """(r, m) bool: did ``users[i]`` interact with ``items[i, j]``? Negative items: False."""
        q = np.asarray(users, dtype=np.int64)[:, None] * self.n_items + items
        if self.dense is not None:
            return self.dense[np.maximum(q, 0)] & (items >= 0)
        if len(self.keys) == 0:
            return np.zeros(q.shape, dtype=bool)
        pos = np.minimum(np.searchsorted(self.keys, q), len(self.keys) - 1)
        return (self.keys[pos] == q) & (items >= 0)

    def mass(self, users: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """(r,) sum of ``weights`` over the items each user interacted with."""
        per_user = np.bincount(
            self.keys // self.n_items,
            weights=weights[self.keys % self.n_items],
            minlength=self.n_users,
        )
        return per_user[np.asarray(users, dtype=np.int64)]


@dataclass
class SamplingContext:
    """What the samplers draw from: the seen items, train popularity, title embeddings.

    Attributes
    ----------
    seen:
        Items each user interacted with in any split.
    popularity:
        (n_items,) train interaction counts.
    embeddings:
        (n_items, dim) L2-normalised title embeddings; only the text samplers need them.
    popularity_alpha:
        Popularity weights are ``count ** alpha``.
    textsim_top:
        ``textsim`` samples among this many nearest non-interacted items.
    mix_popularity:
        Fraction of ``mixed`` negatives drawn by popularity (the rest by text similarity).
    """

    seen: SeenItems
    popularity: np.ndarray
    embeddings: np.ndarray | None = None
    popularity_alpha: float = 1.0
    textsim_top: int = 50
    mix_popularity: float = 0.5

    _nearest: dict[int, np.ndarray] = field(default_factory=dict, init=False, repr=False)

    def nearest(self, window: int) -> np.ndarray:
        """(n_items, window) int32: each item's nearest other items, most similar first.

        Computed once per window and kept, since the four candidate sets reuse it.
        """
        if window not in self._nearest:
            if self.embeddings is None:
                raise ConfigError("text similarity needs item embeddings")
            all_items = np.arange(self.seen.n_items)
            self._nearest[window] = neighbours(self.embeddings, all_items, window).astype(np.int32)
        return self._nearest[window]

    def __post_init__(self) -> None:
        if self.popularity.shape != (self.seen.n_items,):
            raise ValueError(
                f"popularity has shape {self.popularity.shape}, expected ({self.seen.n_items},)"
            )
        if self.embeddings is not None and self.embeddings.shape[0] != self.seen.n_items:
            raise ValueError(
                f"embeddings have {self.embeddings.shape[0]} rows for {self.seen.n_items} items"
            )


@dataclass
class Negatives:
    """Sampled negatives of ``r`` rows and how many each base sampler contributed."""

    items: np.ndarray  # (r, n) int64
    counts: dict[str, int]


class NegativeSampler(ABC):
    """Draws ``n`` distinct negatives per row; the one base class of the samplers."""

    needs_text: ClassVar[bool] = False

    def __init__(self, ctx: SamplingContext) -> None:
        self.ctx = ctx
        if self.needs_text and ctx.embeddings is None:
            raise ConfigError(
                f"sampler {type(self).__name__} needs item title embeddings; "
                "pass embeddings or pick the uniform or popularity sampler"
            )

    @abstractmethod
    def sample(
        self,
        users: np.ndarray,
        positives: np.ndarray,
        n: int,
        rng: np.random.Generator,
        exclude: np.ndarray | None = None,
    ) -> Negatives:
        """Draw negatives.

        Parameters
        ----------
        users, positives:
            (r,) user index and held-out positive item of each row.
        n:
            Negatives per row.
        rng:
            The only source of randomness.
        exclude:
            (r, k) further items to avoid in each row (``-1`` pads), e.g. those another
            sampler already picked.

        Returns
        -------
        Negatives
            ``items`` of shape (r, n), distinct within a row, never seen by the user, never
            the positive nor in ``exclude``.
        """


SAMPLERS: Registry[type[NegativeSampler]] = Registry("sampler")


@SAMPLERS.register("uniform")
class UniformSampler(NegativeSampler):
    """Every item the user never interacted with is equally likely."""

    def sample(
        self,
        users: np.ndarray,
        positives: np.ndarray,
        n: int,
        rng: np.random.Generator,
        exclude: np.ndarray | None = None,
    ) -> Negatives:
        exclude = exclusions(positives, exclude)
        items = draw_weighted(self.ctx.seen, users, n, rng, None, exclude)
        return Negatives(items, {"uniform": items.size})


@SAMPLERS.register("popularity")
class PopularitySampler(NegativeSampler):
    """Items drawn with probability proportional to ``train_count ** alpha``.

    Items with no train interaction have weight 0 and are drawn only when a user has too few
    other unseen items to fill the row.
    """

    def sample(
        self,
        users: np.ndarray,
        positives: np.ndarray,
        n: int,
        rng: np.random.Generator,
        exclude: np.ndarray | None = None,
    ) -> Negatives:
        exclude = exclusions(positives, exclude)
        w = np.asarray(self.ctx.popularity, dtype=np.float64) ** self.ctx.popularity_alpha
        items = draw_weighted(self.ctx.seen, users, n, rng, w, exclude)
        return Negatives(items, {"popularity": items.size})


@SAMPLERS.register("textsim")
class TextSimSampler(NegativeSampler):
    """Uniform among the ``textsim_top`` non-interacted items nearest the positive's title."""

    needs_text = True

    def sample(
        self,
        users: np.ndarray,
        positives: np.ndarray,
        n: int,
        rng: np.random.Generator,
        exclude: np.ndarray | None = None,
    ) -> Negatives:
        exclude = exclusions(positives, exclude)
        items = draw_textsim(self.ctx, users, positives, n, rng, exclude)
        return Negatives(items, {"textsim": items.size})


@SAMPLERS.register("mixed")
class MixedSampler(NegativeSampler):
    """The BDLM mix: ``mix_popularity`` of the negatives by popularity, the rest by text.

    When ``n * mix_popularity`` is fractional (19 negatives at 0.5 gives 9.5), each row rounds
    up or down at random so that the expected share is exactly ``mix_popularity``; with one
    negative per row (interaction prediction) half the rows get a popularity negative.
    """

    needs_text = True

    def sample(
        self,
        users: np.ndarray,
        positives: np.ndarray,
        n: int,
        rng: np.random.Generator,
        exclude: np.ndarray | None = None,
    ) -> Negatives:
        r = len(users)
        extra = np.full((r, 0), NO_ITEM, dtype=np.int64) if exclude is None else exclude
        share = n * self.ctx.mix_popularity
        n_pop = np.floor(share).astype(np.int64) + (rng.random(r) < share - np.floor(share))
        items = np.full((r, n), NO_ITEM, dtype=np.int64)
        # rows share one of (at most) two splits k + (n - k): draw each group at its own sizes,
        # so that a user with exactly n unseen items never has to supply more than n
        for k in np.unique(n_pop).tolist():
            rows = np.flatnonzero(n_pop == k)
            u, p, ex = users[rows], positives[rows], extra[rows]
            # text first: its pool is the narrower one; popularity then avoids what text took
            text = TextSimSampler(self.ctx).sample(u, p, n - k, rng, ex).items
            taken = np.concatenate([ex, text], axis=1)
            pop = PopularitySampler(self.ctx).sample(u, p, k, rng, taken).items
            items[rows] = np.concatenate([text, pop], axis=1)
        n_popularity = int(n_pop.sum())
        return Negatives(items, {"textsim": r * n - n_popularity, "popularity": n_popularity})


def make_sampler(name: str, ctx: SamplingContext) -> NegativeSampler:
    """The registered sampler ``name`` bound to ``ctx``."""
    return SAMPLERS.get(name)(ctx)


# ---------------------------------------------------------------------------------------------
# drawing without replacement
