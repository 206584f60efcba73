"""Per-user outcomes, confidence intervals and paired tests for top-K results.

A HR@1 over a few hundred users moves by several points from one user sample to another (with
HR@1 = 0.2 on 100 users the binomial standard deviation is 0.04), so lmrec reports every top-K
row with a 95% interval and compares two methods on the *same* users:

- :func:`positive_ranks`: the rank of each user's positive among its candidates (1 = top), ties
  pessimistic as in :mod:`lmrec.eval.metrics`; saved per run as ``topk_ranks.json``
  (:func:`write_ranks`), so reports can pair methods after the fact.
- :func:`bootstrap_interval`: percentile bootstrap over users of a mean (HR@k is the mean of a
  0/1 hit per user). Runs over several seeds are pooled by resampling users within each seed and
  averaging the seeds' means, which is what the report's mean over seeds is.
- :func:`paired_comparison`: method A against method B on the users both scored (matched by seed
  and user): the mean difference of hits, its paired-bootstrap 95% interval, and McNemar's exact
  test (two-sided binomial test on the users exactly one of the two gets right).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from lmrec.errors import DataError
from lmrec.utils.io import read_json, write_json

RANKS_FILE = "topk_ranks.json"
# beside a BDLM-drs cell's own ranks: its domain model scored alone on the same users
DOMAIN_RANKS_FILE = "topk_ranks_domain.json"


def positive_ranks(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(n,) rank of each row's positive (1 = first); a tied negative ranks above it.

    Rows must hold exactly one positive (the top-K candidate sets do).
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.shape != labels.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must be equal (n, c)")
    if not np.all(labels.sum(1) == 1):
        raise ValueError("every row needs exactly one positive")
    pos = scores[labels.astype(bool)]
    negatives_above = ((scores >= pos[:, None]) & ~labels.astype(bool)).sum(1)
    return (1 + negatives_above).astype(np.int64)


def write_ranks(path: str | Path, users: np.ndarray, ranks: np.ndarray, n_candidates: int) -> None:
    """Save per-user ranks as JSON: ``{"users": [...], "rank": [...], "n_candidates": c}``."""
    write_json(
        path,
        {
            "users": [int(u) for u in users],
            "rank": [int(r) for r in ranks],
            "n_candidates": int(n_candidates),
        },
    )


def save_ranks(path: str | Path, cands, scores: np.ndarray) -> None:
    """:func:`write_ranks` of a scored top-K candidate set (rows aligned with ``cands``)."""
    write_ranks(path, cands.users, positive_ranks(scores, cands.labels), cands.n_candidates)


def read_ranks(path: str | Path) -> dict[int, int]:
    """``{user index: rank}`` from :func:`write_ranks`'s file (clear error if malformed)."""
    data = read_json(path)
    try:
        users, ranks = data["users"], data["rank"]
    except (KeyError, TypeError) as exc:
        raise DataError(f"{path}: not a ranks file (needs 'users' and 'rank')") from exc
    if len(users) != len(ranks):
        raise DataError(f"{path}: {len(users)} users but {len(ranks)} ranks")
    return {int(u): int(r) for u, r in zip(users, ranks, strict=True)}


def bootstrap_interval(
    groups: Sequence[np.ndarray], *, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """(mean, low, high): the mean over groups of each group's mean, with a bootstrap interval.

    Each group (one seed's per-user values) is resampled with replacement on its own, so the
    interval reflects which users were drawn, not which seeds.
    """
    groups = [np.asarray(g, dtype=np.float64) for g in groups if len(g)]
    if not groups:
        raise ValueError("no values to bootstrap")
    rng = np.random.default_rng(seed)
    boots = np.zeros(n_boot)
    for g in groups:
        idx = rng.integers(0, len(g), size=(n_boot, len(g)))
        boots += g[idx].mean(1)
    boots /= len(groups)
    mean = float(np.mean([g.mean() for g in groups]))
    alpha = (1 - level) / 2
    low, high = np.quantile(boots, [alpha, 1 - alpha])
    return mean, float(low), float(high)


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: binomial(only_a + only_b, 1/2) on the discordant pairs."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    # P(X <= k) for X ~ Bin(n, 1/2), summed in log space (n can be thousands)
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in range(k + 1)]
    top = max(logs)
    tail = math.exp(top + math.log(sum(math.exp(v - top) for v in logs)) - n * math.log(2))
    return float(min(1.0, 2 * tail))


def paired_comparison(
    a: Mapping[tuple[int, int], int],
    b: Mapping[tuple[int, int], int],
    *,
    k: int = 1,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, float]:
    """HR@k of A minus B on the (seed, user) keys both have (means over seeds of each seed's
    mean, as the report's rows).

    Returns ``n`` (pairs), ``a`` / ``b`` (their HR@k on those pairs), ``diff``, ``low`` /
    ``high`` (paired bootstrap 95% interval of the difference, resampling within each seed),
    ``only_a`` / ``only_b`` (users only one of them gets right) and ``p`` (exact McNemar).
    """
    keys = sorted(set(a) & set(b))
    if not keys:
        raise ValueError("the two methods share no (seed, user)")
    hit_a = np.array([a[key] <= k for key in keys], dtype=np.float64)
    hit_b = np.array([b[key] <= k for key in keys], dtype=np.float64)
    seeds = np.array([key[0] for key in keys])
    diffs = [hit_a[seeds == s] - hit_b[seeds == s] for s in np.unique(seeds)]
    # the mean over seeds of each seed's difference, like the interval and the report's means
    diff, low, high = bootstrap_interval(diffs, n_boot=n_boot, seed=seed)
    per_seed_a = float(np.mean([hit_a[seeds == s].mean() for s in np.unique(seeds)]))
    per_seed_b = float(np.mean([hit_b[seeds == s].mean() for s in np.unique(seeds)]))
    only_a = int(((hit_a == 1) & (hit_b == 0)).sum())
    only_b = int(((hit_a == 0) & (hit_b == 1)).sum())
    return {
        "n": float(len(keys)),
        "a": per_seed_a,
        "b": per_seed_b,
        "diff": diff,
        "low": low,
        "high": high,
        "only_a": float(only_a),
        "only_b": float(only_b),
        "p": mcnemar_exact(only_a, only_b),
    }


__all__ = [
    "DOMAIN_RANKS_FILE",
    "RANKS_FILE",
    "bootstrap_interval",
    "mcnemar_exact",
    "paired_comparison",
    "positive_ranks",
    "read_ranks",
    "save_ranks",
    "write_ranks",
]
