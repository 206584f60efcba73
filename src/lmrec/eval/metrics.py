"""Ranking and classification metrics as pure functions on (n_users, n_candidates) arrays.

Every ranking metric takes ``scores`` (higher is better) and binary ``labels`` (1 = relevant) of
the same shape ``(n_users, n_candidates)``, as NumPy arrays or torch tensors, and returns the mean
over users (rows) as a Python float. Rows are users; columns are the candidates each user is
ranked over: the 20 items of a top-K candidate set, the (positive, negative) pair of an
interaction-prediction set, or every item in full ranking (masked items scored ``-inf``).

Conventions (the ones RecBole and Cornac use unless said otherwise):

- **Ties are ranked pessimistically.** A negative whose score equals a positive's ranks above
  it, so a model that cannot tell candidates apart gains nothing from where the positive sits
  (it is in column 0 of every saved candidate set). A constant scorer therefore gets HR@k = 0
  whenever a row has more than k - 1 negatives. Positives tied with each other keep column order;
  relevance is binary, so which of them comes first changes no metric.
- **Cutoff k** is an int >= 1. A k larger than the number of candidates means the whole list.
- **HR@k** (hit rate): 1 if any positive is in the top k, else 0.
- **NDCG@k**: binary gains, DCG = sum over positives in the top k of 1 / log2(rank + 1); the ideal
  DCG puts min(#positives, k) positives at ranks 1.. (RecBole's ``ndcg``).
- **MRR@k**: 1 / rank of the first positive if it is in the top k, else 0; ``k=None`` means no
  cutoff (RecBole's ``mrr`` with its ``topk``; Cornac's ``MRR`` has no cutoff).
- **Recall@k**: positives in the top k / #positives of the row (RecBole's and Cornac's
  denominator, not min(#positives, k)).
- **AUC** (:func:`auc`): per-user AUC averaged over users, i.e. the fraction of a row's
  (positive, negative) pairs whose positive scores strictly higher; ties count as a miss
  (Cornac's ``AUC``). On an interaction-prediction row (one positive, one negative) it is 1 when
  the positive outscores its negative and 0 otherwise, so the mean is pairwise accuracy.
- **Binary AUC** (:func:`binary_auc`): the classifier's ROC AUC over all (user, item) pairs
  pooled, ties counted half (equal to ``sklearn.metrics.roc_auc_score`` on the flattened
  arrays). This is the AUC that TALLRec, CoLLM and the BDLM interaction task report.
- **Precision, recall, F1** (:func:`precision_recall_f1`) for binary decisions, pooled over every
  candidate: precision = TP / (TP + FP), recall = TP / (TP + FN), F1 their harmonic mean; a zero
  denominator gives 0 (scikit-learn's ``zero_division=0``).

Bad input raises ``ValueError`` naming the problem: shapes that differ or are not 2-D, a NaN
score (``+-inf`` is allowed: it is how full ranking masks seen items), labels other than 0/1, a
row without a positive, or k < 1.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ArrayLike = Any  # np.ndarray or torch.Tensor; torch is only touched through duck typing


# The cutoffs every top-K evaluation reports (HR@1 and HR@2 are the BDLM paper's columns).
TOPK_CUTOFFS = (1, 2, 5, 10)


def _to_numpy(x: ArrayLike, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu()
        # bfloat16 and friends have no NumPy dtype; float64 keeps every tie a tie
        x = x.double() if x.is_floating_point() else x
        return x.numpy()
    arr = np.asarray(x)
    if arr.dtype == object:
        raise ValueError(f"{name} must be a numeric array, got dtype object")
    return arr


def _check_labels(labels: np.ndarray, name: str = "labels") -> np.ndarray:
    if labels.dtype != bool:
        if not np.isin(labels, (0, 1)).all():
            bad = labels[~np.isin(labels, (0, 1))].flat[0]
            raise ValueError(f"{name} must be 0/1 or bool, found the value {bad!r}")
        labels = labels.astype(bool)
    return labels


def _check_scores(scores: np.ndarray) -> np.ndarray:
    if not (np.issubdtype(scores.dtype, np.number) or scores.dtype == bool):
        raise ValueError(f"scores must be numeric, got dtype {scores.dtype}")
    scores = scores.astype(np.float64, copy=False)
    nan = np.isnan(scores)
    if nan.any():
        where = np.argwhere(nan)[0]
        at = f"row {where[0]}, column {where[1]}" if scores.ndim == 2 else f"position {where}"
        raise ValueError(
            f"scores contain NaN ({int(nan.sum())} value(s), first at {at}); "
            "a model produced an undefined score"
        )
    return scores


def _check_pair(
    scores: ArrayLike, labels: ArrayLike, *, need_negative: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (scores, labels) pair of 2-D arrays; return float64 scores and bool labels."""
    scores = _to_numpy(scores, "scores")
    labels = _to_numpy(labels, "labels")
    if scores.shape != labels.shape:
        raise ValueError(
            f"shape mismatch: scores {scores.shape} and labels {labels.shape} must be equal"
        )
    if scores.ndim != 2:
        raise ValueError(
            f"scores and labels must be 2-D (n_users, n_candidates), got shape {scores.shape}; "
            "for a single user use x.reshape(1, -1)"
        )
    if scores.shape[0] == 0 or scores.shape[1] == 0:
        raise ValueError(f"scores and labels are empty (shape {scores.shape})")
    scores = _check_scores(scores)
    labels = _check_labels(labels)
    no_pos = ~labels.any(axis=1)
    if no_pos.any():
        rows = np.flatnonzero(no_pos)
        raise ValueError(
            f"row {rows[0]} has no positive label ({len(rows)} such row(s)); every user needs "
            "at least one relevant candidate: drop those rows before computing metrics"
        )
    if need_negative:
        no_neg = labels.all(axis=1)
        if no_neg.any():
            rows = np.flatnonzero(no_neg)
            raise ValueError(
                f"row {rows[0]} has no negative label ({len(rows)} such row(s)); AUC needs at "
                "least one negative per user"
            )
    return scores, labels


def _check_k(k: int, n_candidates: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return min(int(k), n_candidates)


def _ranked_hits(scores: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """(n, k) bool: is the candidate at rank 1..k a positive, ties ranked pessimistically."""
    n, c = scores.shape
    if (labels.sum(axis=1) == 1).all():
        # One positive per row (the usual case, and full ranking over thousands of items):
        # its pessimistic rank is 1 + #other candidates scoring >= it, in O(n * c), no sort.
        pos_col = labels.argmax(axis=1)
        pos_score = scores[np.arange(n), pos_col]
        rank = (scores >= pos_score[:, None]).sum(axis=1)  # counts the positive itself
        hits = np.zeros((n, k), dtype=bool)
        inside = rank <= k
        hits[np.flatnonzero(inside), rank[inside] - 1] = True
        return hits
    # General case: sort by score descending, then negatives (label 0) before positives.
    order = np.lexsort((labels, -scores), axis=1)[:, :k]
    return np.take_along_axis(labels, order, axis=1)


def _discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, k + 2))


def hit_rate(scores: ArrayLike, labels: ArrayLike, k: int) -> float:
    """Hit rate at k (HR@k): the share of users with at least one positive in their top k.

    Parameters
    ----------
    scores, labels:
        (n_users, n_candidates) arrays or tensors; higher scores rank first, labels are 0/1
        and every row has a positive.
    k:
        Cutoff, >= 1; larger than n_candidates means the whole list.

    Returns
    -------
    float
        Mean over users of 1[some positive has rank <= k]. Ties are pessimistic: a negative
        tied with a positive ranks above it.
    """
    scores, labels = _check_pair(scores, labels)
    k = _check_k(k, scores.shape[1])
    return float(_ranked_hits(scores, labels, k).any(axis=1).mean())


def ndcg(scores: ArrayLike, labels: ArrayLike, k: int) -> float:
    """Normalised discounted cumulative gain at k (NDCG@k) with binary relevance.

    Parameters
    ----------
    scores, labels:
        (n_users, n_candidates) arrays or tensors; every row has a positive.
    k:
        Cutoff, >= 1; larger than n_candidates means the whole list.

    Returns
    -------
    float
        Mean over users of DCG@k / IDCG@k, where DCG@k = sum over positives at rank r <= k of
        1 / log2(r + 1) and IDCG@k is the DCG of min(#positives, k) positives at ranks 1, 2, ...
        (RecBole's convention). Ties are pessimistic.
    """
    scores, labels = _check_pair(scores, labels)
    k = _check_k(k, scores.shape[1])
    disc = _discounts(k)
    dcg = _ranked_hits(scores, labels, k) @ disc
    n_ideal = np.minimum(labels.sum(axis=1), k)
    idcg = np.cumsum(disc)[n_ideal - 1]
    return float((dcg / idcg).mean())


def mrr(scores: ArrayLike, labels: ArrayLike, k: int | None = None) -> float:
    """Mean reciprocal rank of each user's first positive, optionally cut at k.

    Parameters
    ----------
    scores, labels:
        (n_users, n_candidates) arrays or tensors; every row has a positive.
    k:
        ``None`` (default) ranks the whole list; an int >= 1 counts a first positive ranked
        below k as 0 (RecBole's MRR@k).

    Returns
    -------
    float
        Mean over users of 1 / rank of the highest-ranked positive (0 if beyond k). Ties are
        pessimistic.
    """
    scores, labels = _check_pair(scores, labels)
    k = scores.shape[1] if k is None else _check_k(k, scores.shape[1])
    hits = _ranked_hits(scores, labels, k)
    first = hits.argmax(axis=1)
    rr = np.where(hits.any(axis=1), 1.0 / (first + 1), 0.0)
    return float(rr.mean())


def recall(scores: ArrayLike, labels: ArrayLike, k: int) -> float:
    """Recall at k: the share of a user's positives that reach the top k, averaged over users.

    Parameters
    ----------
    scores, labels:
        (n_users, n_candidates) arrays or tensors; every row has a positive.
    k:
        Cutoff, >= 1; larger than n_candidates means the whole list.

    Returns
    -------
    float
        Mean over users of (#positives with rank <= k) / #positives. The denominator is the
        row's number of positives, as in RecBole and Cornac (not min(#positives, k)), so a row
        with more than k positives cannot reach 1. With one positive per row it equals HR@k.
        Ties are pessimistic.
    """
    scores, labels = _check_pair(scores, labels)
    k = _check_k(k, scores.shape[1])
    found = _ranked_hits(scores, labels, k).sum(axis=1)
    return float((found / labels.sum(axis=1)).mean())


def auc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Per-user AUC averaged over users (Cornac's ``AUC``; RecBole's GAUC weights by user size).

    Parameters
    ----------
    scores, labels:
        (n_users, n_candidates) arrays or tensors; every row has a positive and a negative.

    Returns
    -------
    float
        Mean over users of the fraction of (positive, negative) pairs in the row whose
        positive scores strictly higher. Ties count as a miss, like every ranking metric here.
        For the interaction-prediction layout (each row = one positive, one negative) this is
        the share of users whose positive outscores their negative. For the classifier's AUC
        over all pairs pooled, use :func:`binary_auc`.
    """
    scores, labels = _check_pair(scores, labels, need_negative=True)
    n_pos = labels.sum(axis=1)
    n_neg = labels.shape[1] - n_pos
    # In pessimistic order, the negatives ranked before a positive are exactly those that
    # score >= it; the ones after it are the pairs it wins.
    order = np.lexsort((labels, -scores), axis=1)
    ranked = np.take_along_axis(labels, order, axis=1)
    neg_before = np.cumsum(~ranked, axis=1)
    wins = np.where(ranked, n_neg[:, None] - neg_before, 0).sum(axis=1)
    return float((wins / (n_pos * n_neg)).mean())


def binary_auc(scores: ArrayLike, labels: ArrayLike) -> float:
    """ROC AUC of a binary classifier over all (user, item) pairs pooled.

    Parameters
    ----------
    scores, labels:
        Arrays or tensors of the same shape (any, flattened); labels are 0/1 and both classes
        occur. Rows need not each hold a positive.

    Returns
    -------
    float
        The probability that a random positive scores higher than a random negative, ties
        counted half (Mann-Whitney U / (n_pos * n_neg)); equal to
        ``sklearn.metrics.roc_auc_score(labels.ravel(), scores.ravel())``.
    """
    scores = _to_numpy(scores, "scores")
    labels = _to_numpy(labels, "labels")
    if scores.shape != labels.shape:
        raise ValueError(
            f"shape mismatch: scores {scores.shape} and labels {labels.shape} must be equal"
        )
    scores = _check_scores(scores).ravel()
    labels = _check_labels(labels).ravel()
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"binary AUC needs both classes; labels have {n_pos} positive(s) and "
            f"{n_neg} negative(s)"
        )
    # Mid-ranks (1-based, ties share their average rank) give the Mann-Whitney U statistic.
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    mid = np.cumsum(counts) - (counts - 1) / 2.0
    rank_sum = mid[inverse][labels].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def precision_recall_f1(pred: ArrayLike, labels: ArrayLike) -> dict[str, float]:
    """Precision, recall and F1 of binary decisions, pooled over every (user, item) pair.

    Parameters
    ----------
    pred:
        0/1 or bool decisions (1 = predicted relevant), any shape; threshold scores first
        (e.g. ``scores >= threshold``).
    labels:
        0/1 or bool ground truth of the same shape, with at least one positive.

    Returns
    -------
    dict
        ``{"precision": TP / (TP + FP), "recall": TP / (TP + FN), "F1": 2PR / (P + R)}``,
        each 0.0 when its denominator is 0 (nothing predicted positive, or P = R = 0).
    """
    pred = _to_numpy(pred, "pred")
    labels = _to_numpy(labels, "labels")
    if pred.shape != labels.shape:
        raise ValueError(
            f"shape mismatch: pred {pred.shape} and labels {labels.shape} must be equal"
        )
    pred = _check_labels(pred, "pred (binary decisions; threshold the scores first)")
    labels = _check_labels(labels)
    n_pos = int(labels.sum())
    if n_pos == 0:
        raise ValueError("labels have no positive; recall is undefined")
    tp = int((pred & labels).sum())
    n_pred = int(pred.sum())
    precision = tp / n_pred if n_pred else 0.0
    rec = tp / n_pos
    f1 = 2 * precision * rec / (precision + rec) if precision + rec else 0.0
    return {"precision": precision, "recall": rec, "F1": f1}
