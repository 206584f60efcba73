"""Vectorised drawing of negatives for :mod:`lmrec.protocol.samplers`: weighted draws with
rejection rounds and an exact fallback, exclusion of seen items, and text-similarity pools.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from lmrec.errors import DataError

if TYPE_CHECKING:
    from lmrec.protocol.samplers import SamplingContext, SeenItems

ROUNDS = 4  # rejection rounds before the exact fallback
NO_ITEM = -1  # padding in exclusion matrices


def exclusions(positives: np.ndarray, exclude: np.ndarray | None) -> np.ndarray:
    pos = np.asarray(positives, dtype=np.int64)[:, None]
    if exclude is None:
        return pos
    return np.concatenate([pos, np.asarray(exclude, dtype=np.int64)], axis=1)


def isin_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(r, m) bool: is ``a[i, j]`` among ``b[i, :]``? (``b`` is small: exclusions of a row.)"""
    if b.shape[1] == 0:
        return np.zeros(a.shape, dtype=bool)
    return (a[:, :, None] == b[:, None, :]).any(axis=2)


def first_occurrence(a: np.ndarray) -> np.ndarray:
    """(r, m) bool: ``a[i, j]`` is the first occurrence of its value in row ``i``."""
    order = np.argsort(a, axis=1, kind="stable")  # equal values keep their left-to-right order
    s = np.take_along_axis(a, order, axis=1)
    first_sorted = np.ones(a.shape, dtype=bool)
    first_sorted[:, 1:] = s[:, 1:] != s[:, :-1]
    first = np.empty(a.shape, dtype=bool)
    np.put_along_axis(first, order, first_sorted, axis=1)
    return first


def draw_weighted(
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
    out = np.full((r, n), NO_ITEM, dtype=np.int64)
    if r == 0 or n == 0:
        return out
    w = np.ones(n_items) if weights is None else weights
    total = w.sum()
    if total <= 0:  # no item has weight: nothing to reject against, go straight to exact
        draw_exact(seen, users, out, rng, w, exclude, np.arange(r))
        return out
    p = w / total
    # expected share of draws that survive; sizes the batch of draws per round
    blocked = seen.mass(users, p) + np.where(exclude >= 0, p[np.maximum(exclude, 0)], 0.0).sum(1)
    accept = np.clip(1.0 - blocked, 1e-3, 1.0)

    filled = np.zeros(r, dtype=np.int64)
    pending = np.arange(r)
    for _ in range(ROUNDS):
        need = n - filled[pending]
        m = int(np.ceil(np.quantile(need / accept[pending], 0.9) * 1.5)) + 8
        m = min(m, max(8 * n, 256))
        if weights is None:
            draws = rng.integers(0, n_items, size=(len(pending), m))
        else:
            draws = rng.choice(n_items, size=(len(pending), m), p=p)
        ok = ~seen.contains(users[pending], draws)
        ok &= ~isin_rows(draws, exclude[pending]) & ~isin_rows(draws, out[pending])
        ok &= first_occurrence(draws)
        rank = np.cumsum(ok, axis=1)
        take = ok & (rank <= need[:, None])
        ri, ci = np.nonzero(take)
        out[pending[ri], filled[pending][ri] + rank[ri, ci] - 1] = draws[ri, ci]
        filled[pending] += take.sum(axis=1)
        pending = pending[filled[pending] < n]
        if len(pending) == 0:
            return out
    draw_exact(seen, users, out, rng, w, exclude, pending)
    return out


def draw_exact(
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
            slots = np.flatnonzero(out[row] == NO_ITEM)
            best = np.argsort(-keys[j], kind="stable")[: len(slots)]
            if len(best) < len(slots) or not np.isfinite(keys[j, best]).all():
                not_enough(
                    users[row], n_items, int(seen.counts(users[row : row + 1])[0]), out.shape[1]
                )
            out[row, slots] = best


def not_enough(user: int, n_items: int, n_seen: int, n: int) -> None:
    raise DataError(
        f"user index {user} interacted with {n_seen} of {n_items} items, leaving too few "
        f"to draw {n} distinct negatives; lower n_negatives or filter such users out"
    )


def neighbours(emb: np.ndarray, items: np.ndarray, length: int) -> np.ndarray:
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


def draw_textsim(
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
    out = np.full((r, n), NO_ITEM, dtype=np.int64)
    if r == 0 or n == 0:
        return out
    # Look at a window of nearest items large enough for most users; users who interacted
    # with much of that window get their full ranking below.
    window = min(n_items - 1, 4 * top + 128)
    nb = ctx.nearest(window)[positives].astype(np.int64)  # (r, window)
    allowed = ~seen.contains(users, nb) & ~isin_rows(nb, exclude)
    short = allowed.sum(axis=1) < top
    if window < n_items - 1 and short.any():
        rows = np.flatnonzero(short)
        full = neighbours(emb, positives[rows], n_items - 1)
        full_allowed = ~seen.contains(users[rows], full) & ~isin_rows(full, exclude[rows])
        out[rows] = pick_from_pool(full, full_allowed, top, n, rng, users[rows], seen)
        keep = np.flatnonzero(~short)
        out[keep] = pick_from_pool(nb[keep], allowed[keep], top, n, rng, users[keep], seen)
    else:
        out[:] = pick_from_pool(nb, allowed, top, n, rng, users, seen)
    return out


def pick_from_pool(
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
        not_enough(u, seen.n_items, int(seen.counts(users[lacking[:1]])[0]), n)
    keys = np.where(pool, rng.random(nb.shape), 2.0)  # random order inside the pool, rest last
    pick = np.argsort(keys, axis=1, kind="stable")[:, :n]
    return np.take_along_axis(nb, pick, axis=1)


__all__ = [
    "NO_ITEM",
    "ROUNDS",
    "draw_exact",
    "draw_textsim",
    "draw_weighted",
    "exclusions",
    "neighbours",
]
