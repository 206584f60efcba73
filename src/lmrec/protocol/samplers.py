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
from lmrec.registry import Registry

_ROUNDS = 4  # rejection rounds before the exact fallback
_NO_ITEM = -1  # padding in exclusion matrices
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
            self._nearest[window] = _neighbours(self.embeddings, all_items, window).astype(np.int32)
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
        exclude = _exclusions(positives, exclude)
        items = _draw_weighted(self.ctx.seen, users, n, rng, None, exclude)
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
        exclude = _exclusions(positives, exclude)
        w = np.asarray(self.ctx.popularity, dtype=np.float64) ** self.ctx.popularity_alpha
        items = _draw_weighted(self.ctx.seen, users, n, rng, w, exclude)
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
        exclude = _exclusions(positives, exclude)
        items = _draw_textsim(self.ctx, users, positives, n, rng, exclude)
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
        extra = np.full((r, 0), _NO_ITEM, dtype=np.int64) if exclude is None else exclude
        share = n * self.ctx.mix_popularity
        n_pop = np.floor(share).astype(np.int64) + (rng.random(r) < share - np.floor(share))
        items = np.full((r, n), _NO_ITEM, dtype=np.int64)
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


def _exclusions(positives: np.ndarray, exclude: np.ndarray | None) -> np.ndarray:
    pos = np.asarray(positives, dtype=np.int64)[:, None]
    if exclude is None:
        return pos
    return np.concatenate([pos, np.asarray(exclude, dtype=np.int64)], axis=1)


def _isin_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(r, m) bool: is ``a[i, j]`` among ``b[i, :]``? (``b`` is small: exclusions of a row.)"""
    if b.shape[1] == 0:
        return np.zeros(a.shape, dtype=bool)
    return (a[:, :, None] == b[:, None, :]).any(axis=2)


def _first_occurrence(a: np.ndarray) -> np.ndarray:
    """(r, m) bool: ``a[i, j]`` is the first occurrence of its value in row ``i``."""
    order = np.argsort(a, axis=1, kind="stable")  # equal values keep their left-to-right order
    s = np.take_along_axis(a, order, axis=1)
    first_sorted = np.ones(a.shape, dtype=bool)
    first_sorted[:, 1:] = s[:, 1:] != s[:, :-1]
    first = np.empty(a.shape, dtype=bool)
    np.put_along_axis(first, order, first_sorted, axis=1)
    return first


def _draw_weighted(
    seen: SeenItems,
    users: np.ndarray,
    n: int,
    rng: np.random.Generator,
    weights: np.ndarray | None,
    exclude: np.ndarray,
) -> np.ndarray:
    """(r, n) distinct items per row, drawn proportionally to ``weights`` (None: uniform)."""
    users = np.asarray(users, dtype=np.int64)
    r, n_items = len(users), seen.n_items
    out = np.full((r, n), _NO_ITEM, dtype=np.int64)
    if r == 0 or n == 0:
        return out
    w = np.ones(n_items) if weights is None else weights
    total = w.sum()
    if total <= 0:  # no item has weight: nothing to reject against, go straight to exact
        _draw_exact(seen, users, out, rng, w, exclude, np.arange(r))
        return out
    p = w / total
    # expected share of draws that survive; sizes the batch of draws per round
    blocked = seen.mass(users, p) + np.where(exclude >= 0, p[np.maximum(exclude, 0)], 0.0).sum(1)
    accept = np.clip(1.0 - blocked, 1e-3, 1.0)

    filled = np.zeros(r, dtype=np.int64)
    pending = np.arange(r)
    for _ in range(_ROUNDS):
        need = n - filled[pending]
        m = int(np.ceil(np.quantile(need / accept[pending], 0.9) * 1.5)) + 8
        m = min(m, max(8 * n, 256))
        if weights is None:
            draws = rng.integers(0, n_items, size=(len(pending), m))
        else:
            draws = rng.choice(n_items, size=(len(pending), m), p=p)
        ok = ~seen.contains(users[pending], draws)
        ok &= ~_isin_rows(draws, exclude[pending]) & ~_isin_rows(draws, out[pending])
        ok &= _first_occurrence(draws)
        rank = np.cumsum(ok, axis=1)
        take = ok & (rank <= need[:, None])
        ri, ci = np.nonzero(take)
        out[pending[ri], filled[pending][ri] + rank[ri, ci] - 1] = draws[ri, ci]
        filled[pending] += take.sum(axis=1)
        pending = pending[filled[pending] < n]
        if len(pending) == 0:
            return out
    _draw_exact(seen, users, out, rng, w, exclude, pending)
    return out


def _draw_exact(
    seen: SeenItems,
    users: np.ndarray,
    out: np.ndarray,
    rng: np.random.Generator,
    w: np.ndarray,
    exclude: np.ndarray,
    rows: np.ndarray,
) -> None:
    """Fill the ``-1`` slots of ``out[rows]`` exactly, over all items (Gumbel-top-k).

    Adding Gumbel noise to ``log w`` and taking the largest keys is sequential sampling without
    replacement proportional to ``w``. Zero-weight items get keys far below every other, so they
    come last (uniformly among themselves) and only fill rows that would otherwise stay short.
    """
    n_items = seen.n_items
    base = np.where(w > 0, np.log(np.where(w > 0, w, 1.0)), -1e9)
    for start in range(0, len(rows), 256):  # bounded memory: 256 x n_items keys at a time
        chunk = rows[start : start + 256]
        keys = base[None, :] + rng.gumbel(size=(len(chunk), n_items))
        for j, row in enumerate(chunk):
            keys[j, seen.items_of(users[row])] = -np.inf
            taken = np.concatenate([exclude[row], out[row]])
            keys[j, taken[taken >= 0]] = -np.inf
        for j, row in enumerate(chunk):
            slots = np.flatnonzero(out[row] == _NO_ITEM)
            best = np.argsort(-keys[j], kind="stable")[: len(slots)]
            if len(best) < len(slots) or not np.isfinite(keys[j, best]).all():
                _not_enough(
                    users[row], n_items, int(seen.counts(users[row : row + 1])[0]), out.shape[1]
                )
            out[row, slots] = best


def _not_enough(user: int, n_items: int, n_seen: int, n: int) -> None:
    raise DataError(
        f"user index {user} interacted with {n_seen} of {n_items} items, leaving too few "
        f"to draw {n} distinct negatives; lower n_negatives or filter such users out"
    )


def _neighbours(emb: np.ndarray, items: np.ndarray, length: int) -> np.ndarray:
    """(len(items), length) nearest other items by cosine, most similar first."""
    out = np.empty((len(items), length), dtype=np.int64)
    n_items = len(emb)
    for start in range(0, len(items), 1024):  # bounded memory: 1024 x n_items similarities
        chunk = items[start : start + 1024]
        sim = emb[chunk] @ emb.T  # (c, n_items)
        sim[np.arange(len(chunk)), chunk] = -np.inf  # an item is not its own neighbour
        if length < n_items:
            idx = np.sort(np.argpartition(-sim, length - 1, axis=1)[:, :length], axis=1)
        else:
            idx = np.broadcast_to(np.arange(n_items), sim.shape)
        s = np.take_along_axis(sim, idx, axis=1)
        # ties in similarity are broken by item index (idx is ascending, the sort stable)
        order = np.argsort(-s, axis=1, kind="stable")
        out[start : start + len(chunk)] = np.take_along_axis(idx, order, axis=1)[:, :length]
    return out


def _draw_textsim(
    ctx: SamplingContext,
    users: np.ndarray,
    positives: np.ndarray,
    n: int,
    rng: np.random.Generator,
    exclude: np.ndarray,
) -> np.ndarray:
    """(r, n) items drawn uniformly from each row's ``top`` nearest allowed items."""
    seen, emb, top = ctx.seen, ctx.embeddings, ctx.textsim_top
    users = np.asarray(users, dtype=np.int64)
    positives = np.asarray(positives, dtype=np.int64)
    r, n_items = len(users), seen.n_items
    out = np.full((r, n), _NO_ITEM, dtype=np.int64)
    if r == 0 or n == 0:
        return out
    # Look at a window of nearest items large enough for most users; users who interacted
    # with much of that window get their full ranking below.
    window = min(n_items - 1, 4 * top + 128)
    nb = ctx.nearest(window)[positives].astype(np.int64)  # (r, window)
    allowed = ~seen.contains(users, nb) & ~_isin_rows(nb, exclude)
    short = allowed.sum(axis=1) < top
    if window < n_items - 1 and short.any():
        rows = np.flatnonzero(short)
        full = _neighbours(emb, positives[rows], n_items - 1)
        full_allowed = ~seen.contains(users[rows], full) & ~_isin_rows(full, exclude[rows])
        out[rows] = _pick_from_pool(full, full_allowed, top, n, rng, users[rows], seen)
        keep = np.flatnonzero(~short)
        out[keep] = _pick_from_pool(nb[keep], allowed[keep], top, n, rng, users[keep], seen)
    else:
        out[:] = _pick_from_pool(nb, allowed, top, n, rng, users, seen)
    return out


def _pick_from_pool(
    nb: np.ndarray,
    allowed: np.ndarray,
    top: int,
    n: int,
    rng: np.random.Generator,
    users: np.ndarray,
    seen: SeenItems,
) -> np.ndarray:
    """Pick ``n`` of each row's first ``top`` allowed neighbours, uniformly without replacement."""
    pool = allowed & (np.cumsum(allowed, axis=1) <= top)
    lacking = np.flatnonzero(pool.sum(axis=1) < n)
    if len(lacking):
        u = int(users[lacking[0]])
        _not_enough(u, seen.n_items, int(seen.counts(users[lacking[:1]])[0]), n)
    keys = np.where(pool, rng.random(nb.shape), 2.0)  # random order inside the pool, rest last
    pick = np.argsort(keys, axis=1, kind="stable")[:, :n]
    return np.take_along_axis(nb, pick, axis=1)
