"""Evaluation of any model on saved candidate sets and on full ranking, through score callables.

The evaluator never sees a model: it sees a function that scores items.

- Candidate sets: ``score_fn(users (B,), items (B, C)) -> scores (B, C)``. The top-K task ranks
  each user's candidates (HR@k, NDCG@k, MRR); the interaction task classifies every
  (user, item) pair with a decision threshold chosen to maximise F1 on the validation set, then
  applied unchanged to the test set (precision, recall, F1, AUC).
- Full ranking: ``full_score_fn(users (B,)) -> scores (B, n_items)``. Items the user interacted
  with before the stage are masked, then the held-out item is ranked against all the rest
  (HR@k, NDCG@k, Recall@k).

Score functions may return NumPy arrays or torch tensors; metric conventions (pessimistic ties
and the rest) are those of :mod:`lmrec.eval.metrics`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from lmrec.eval.metrics import (
    TOPK_CUTOFFS,
    ArrayLike,
    _check_labels,
    _check_scores,
    _to_numpy,
    auc,
    binary_auc,
    hit_rate,
    mrr,
    ndcg,
    precision_recall_f1,
    recall,
)
from lmrec.protocol.candidates import CandidateSet
from lmrec.protocol.split import Split
from lmrec.utils.distributed import processes

ScoreFn = Callable[[np.ndarray, np.ndarray], ArrayLike]
# (stage, task) -> the score_fn of that stage ("valid"/"test") and task ("topk"/"interaction")
StageScorer = Callable[[str, str], ScoreFn]
FullScoreFn = Callable[[np.ndarray], ArrayLike]


def _batch_scores(out: ArrayLike, expected: tuple[int, int], what: str) -> np.ndarray:
    """Convert one batch of scores to float64 NumPy and check its shape."""
    arr = _to_numpy(out, "scores").astype(np.float64, copy=False)
    if arr.shape != expected:
        raise ValueError(
            f"{what} returned scores of shape {arr.shape} for a batch that needs {expected}; "
            "it must return one score per (user, item)"
        )
    return arr


def score_candidates(
    score_fn: ScoreFn, cands: CandidateSet, batch_size: int = 1024, progress: bool = True
) -> np.ndarray:
    """Score every candidate of a saved set, ``batch_size`` users at a time.

    Parameters
    ----------
    score_fn:
        ``score_fn(users, items) -> scores`` with users (B,) int64, items (B, C) int64 and
        scores (B, C), higher meaning more relevant; NumPy or torch.
    cands:
        The candidate set to score.
    batch_size:
        Users per call to ``score_fn``.
    progress:
        Show a tqdm progress bar.

    Returns
    -------
    np.ndarray
        (n_users, n_candidates) float64 scores, aligned with ``cands.items`` and ``cands.labels``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n, c = cands.items.shape
    # under several processes each scores its contiguous share of the rows; gathered in order
    procs = processes()
    mine = procs.shard(np.arange(n))
    lo, hi = (int(mine[0]), int(mine[-1]) + 1) if len(mine) else (0, 0)
    out = np.empty((hi - lo, c), dtype=np.float64)
    starts = range(lo, hi, batch_size)
    desc = f"scoring {cands.task}/{cands.stage}"
    for start in tqdm(starts, desc=desc, unit="batch", disable=not progress or not procs.is_main):
        stop = min(start + batch_size, hi)
        batch = score_fn(cands.users[start:stop], cands.items[start:stop])
        out[start - lo : stop - lo] = _batch_scores(batch, (stop - start, c), "score_fn")
    return procs.gather(out)


def topk_metrics(
    scores: ArrayLike, labels: ArrayLike, ks: Iterable[int] = (1, 2, 5, 10)
) -> dict[str, float]:
    """Top-K ranking metrics of one candidate set.

    Parameters
    ----------
    scores, labels:
        (n_users, n_candidates) scores and 0/1 labels.
    ks:
        Cutoffs for HR@k and NDCG@k. Cutoffs larger than n_candidates are left out: the whole
        list always contains the positive, so HR there says nothing.

    Returns
    -------
    dict
        ``"HR@k"`` and ``"NDCG@k"`` for each requested k, ``"NDCG@C"`` for C = n_candidates
        (the whole list, e.g. ``"NDCG@20"``), and ``"MRR"`` (no cutoff).
    """
    n_cand = int(np.shape(scores)[-1])
    out: dict[str, float] = {}
    for k in sorted(set(ks)):
        if k > n_cand:
            continue
        out[f"HR@{k}"] = hit_rate(scores, labels, k)
        out[f"NDCG@{k}"] = ndcg(scores, labels, k)
    out[f"NDCG@{n_cand}"] = ndcg(scores, labels, n_cand)
    out["MRR"] = mrr(scores, labels)
    return out


def choose_threshold(scores: ArrayLike, labels: ArrayLike) -> float:
    """The decision threshold that maximises pooled F1 on validation scores.

    A pair is predicted positive when ``score >= threshold``. Every distinct score is tried as
    the lowest score predicted positive; among the best (equal F1) the highest, i.e. the most
    conservative, wins. The returned threshold sits halfway between that score and the next
    lower distinct score, so test scores that fall in the gap are not decided by float luck.

    Parameters
    ----------
    scores, labels:
        Validation scores and 0/1 labels of the same shape (flattened, pooled); labels need a
        positive.

    Returns
    -------
    float
        The threshold to apply to test scores.
    """
    s = _to_numpy(scores, "scores")
    y = _to_numpy(labels, "labels")
    if s.shape != y.shape:
        raise ValueError(f"shape mismatch: scores {s.shape} and labels {y.shape} must be equal")
    s = _check_scores(s).ravel()
    y = _check_labels(y).ravel()
    if not y.any():
        raise ValueError("labels have no positive; F1 is undefined, so no threshold can be chosen")
    # Sort descending; predicting "score >= the i-th distinct value" takes every pair up to
    # the last occurrence of that value.
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    tp = np.cumsum(y_sorted)
    n_pred = np.arange(1, len(s) + 1)
    last_of_value = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    tp, n_pred, values = tp[last_of_value], n_pred[last_of_value], s_sorted[last_of_value]
    f1 = 2 * tp / (n_pred + y.sum())  # 2PR / (P + R) = 2 TP / (#predicted + #positives)
    best = int(np.argmax(f1))  # first = highest threshold among ties
    chosen = float(values[best])
    if best + 1 < len(values):
        lower = float(values[best + 1])
        mid = (chosen + lower) / 2.0
        # keep the chosen score itself when the midpoint is not a usable value strictly
        # between the two (an infinite neighbour, or adjacent floats)
        if np.isfinite(mid) and lower < mid <= chosen:
            return mid
    return chosen


def interaction_metrics(scores: ArrayLike, labels: ArrayLike, threshold: float) -> dict[str, float]:
    """Interaction-prediction metrics at a fixed decision threshold.

    Parameters
    ----------
    scores, labels:
        (n_users, n_candidates) scores and 0/1 labels; each row a held-out positive and its
        sampled negatives.
    threshold:
        Pairs with ``score >= threshold`` are predicted positive (see :func:`choose_threshold`).

    Returns
    -------
    dict
        ``"precision"``, ``"recall"``, ``"F1"`` of the thresholded decisions, pooled over every
        pair; ``"AUC"``, the pooled ROC AUC (:func:`~lmrec.eval.metrics.binary_auc`, ties half);
        and ``"UAUC"``, the per-user AUC averaged (:func:`~lmrec.eval.metrics.auc`, ties a miss).
    """
    s = _check_scores(_to_numpy(scores, "scores"))
    out = precision_recall_f1(s >= threshold, labels)
    out["AUC"] = binary_auc(s, labels)
    out["UAUC"] = auc(s, labels)
    return out


def everywhere(score_fn: ScoreFn) -> StageScorer:
    """The :data:`StageScorer` of a model whose scores depend on neither stage nor task."""
    return lambda stage, task: score_fn


def evaluate_candidate_sets(
    scorer: StageScorer,
    sets: Mapping[tuple[str, str], CandidateSet],
    *,
    tasks: Iterable[str] | None = None,
    ks: Iterable[int] = TOPK_CUTOFFS,
    limit: int = 0,
    batch_size: int = 1024,
    progress: bool = True,
    ranks_to: Path | None = None,
    topk_scores: np.ndarray | None = None,
) -> dict[str, float]:
    """Score a model on the saved candidate sets of both BDLM tasks: the one evaluator every
    method (domain models, LLM runs, BDLM's two sides, GPT4SM) goes through.

    Parameters
    ----------
    scorer:
        ``scorer(stage, task) -> score_fn``, ``score_fn(users (B,), items (B, C)) -> scores
        (B, C)``: the model as it scores rows of that stage (sequence models and prompts read
        the history before the stage) and task. :func:`everywhere` wraps a plain ``score_fn``.
    sets:
        Candidate sets keyed by ``(task, stage)``. ``("topk", "test")`` gives the top-K
        metrics; ``("interaction", "test")`` gives the interaction metrics and then needs
        ``("interaction", "valid")``, where the decision threshold is chosen.
    tasks:
        The tasks to evaluate; None: every task whose test set is in ``sets``.
    ks:
        Cutoffs of :func:`topk_metrics`.
    limit:
        Score only the first ``limit`` users of each set (0: every user).
    batch_size, progress:
        Passed to :func:`score_candidates`.
    ranks_to:
        Also write each test user's top-K rank there
        (:func:`lmrec.eval.significance.write_ranks`), for intervals and paired tests.
    topk_scores:
        The top-K test scores when the caller has them already (BDLM scores them once for
        both of its sides).

    Returns
    -------
    dict
        One flat dict: ``"topk/HR@1"``, ``"topk/NDCG@20"``, ``"topk/MRR"``, ...,
        ``"interaction/precision"``, ``"interaction/recall"``, ``"interaction/F1"``,
        ``"interaction/AUC"``, ``"interaction/UAUC"``, ``"interaction/threshold"`` and
        ``"eval/users"`` (test users scored).
    """
    for key, cands in sets.items():
        if (cands.task, cands.stage) != tuple(key):
            raise ValueError(
                f"candidate set stored under {key} is task={cands.task!r}, "
                f"stage={cands.stage!r}; key it by its own (task, stage)"
            )
    if tasks is None:
        tasks = [t for t in ("topk", "interaction") if (t, "test") in sets]
    tasks = list(tasks)
    missing = [t for t in tasks if (t, "test") not in sets]
    if not tasks or missing:
        raise ValueError(
            f"no test candidate set to evaluate {missing or ''}; got {sorted(sets)}, need "
            "('topk', 'test') and/or ('interaction', 'test')"
        )
    if "interaction" in tasks and ("interaction", "valid") not in sets:
        raise ValueError(
            "('interaction', 'test') needs ('interaction', 'valid'): the decision threshold is "
            "chosen on validation, never on test"
        )

    def run(task: str, stage: str) -> tuple[np.ndarray, np.ndarray, CandidateSet]:
        cands = sets[(task, stage)].head(limit)
        scores = score_candidates(scorer(stage, task), cands, batch_size, progress)
        return scores, cands.labels, cands

    out: dict[str, float] = {}
    if "topk" in tasks:
        cands = sets[("topk", "test")].head(limit)
        scores = topk_scores
        if scores is None:
            scores, _, _ = run("topk", "test")
        out.update({f"topk/{k}": v for k, v in topk_metrics(scores, cands.labels, ks).items()})
        if ranks_to is not None and processes().is_main:
            from lmrec.eval.significance import save_ranks

            save_ranks(ranks_to, cands, scores)
        out["eval/users"] = float(len(cands.users))
    if "interaction" in tasks:
        threshold = choose_threshold(*run("interaction", "valid")[:2])
        scores, labels, cands = run("interaction", "test")
        metrics = interaction_metrics(scores, labels, threshold)
        out.update({f"interaction/{k}": v for k, v in metrics.items()})
        out["interaction/threshold"] = threshold
        out.setdefault("eval/users", float(len(np.unique(cands.users))))
    return out


def _history_index(split: Split, stage: str) -> tuple[np.ndarray, np.ndarray]:
    """CSR view of the items each user saw before ``stage``: (indptr (n_users+1,), items)."""
    hist = split.history_before(stage)
    users = hist["user"].to_numpy(dtype=np.int64)
    items = hist["item"].to_numpy(dtype=np.int64)
    order = np.argsort(users, kind="stable")
    indptr = np.zeros(split.n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(users, minlength=split.n_users), out=indptr[1:])
    return indptr, items[order]


def full_ranking_metrics(
    full_score_fn: FullScoreFn,
    split: Split,
    stage: str = "test",
    k: int = 10,
    batch_size: int = 256,
    progress: bool = True,
) -> dict[str, float]:
    """Rank each held-out item against every item the user has not interacted with.

    Parameters
    ----------
    full_score_fn:
        ``full_score_fn(users (B,)) -> scores (B, n_items)``.
    split:
        The leave-one-out split; ``split.stage(stage)`` gives one (user, item) per user.
    stage:
        ``"valid"`` or ``"test"``.
    k:
        Cutoff.
    batch_size:
        Users per call to ``full_score_fn``.
    progress:
        Show a tqdm progress bar.

    Returns
    -------
    dict
        ``"HR@k"``, ``"NDCG@k"``, ``"Recall@k"`` (mean over evaluated users; with one held-out
        item per user Recall@k equals HR@k).

    Notes
    -----
    Every item in ``split.history_before(stage)`` (train, plus the validation item when
    ``stage == "test"``) is scored ``-inf``, so a model is not rewarded for recommending what
    the user already has. The held-out item itself is never masked: it can only appear in the
    history when the data keeps repeat interactions, and masking it would make the row
    unwinnable. Ties, masked items included, rank pessimistically.
    """
    target = split.stage(stage)
    users = target["user"].to_numpy(dtype=np.int64)
    items = target["item"].to_numpy(dtype=np.int64)
    if len(users) == 0:
        raise ValueError(f"split has no {stage} users to evaluate")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    indptr, hist_items = _history_index(split, stage)
    sums = {"HR": 0.0, "NDCG": 0.0, "Recall": 0.0}
    starts = range(0, len(users), batch_size)
    for start in tqdm(starts, desc=f"full ranking {stage}", unit="batch", disable=not progress):
        u = users[start : start + batch_size]
        pos = items[start : start + batch_size]
        b = len(u)
        scores = _batch_scores(full_score_fn(u), (b, split.n_items), "full_score_fn")
        scores = scores.copy()  # never write -inf into an array the model may still hold
        # gather each user's history slice into flat (row, item) index pairs
        lens = indptr[u + 1] - indptr[u]
        rows = np.repeat(np.arange(b), lens)
        offsets = np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)
        cols = hist_items[np.repeat(indptr[u], lens) + offsets]
        pos_scores = scores[np.arange(b), pos]
        scores[rows, cols] = -np.inf
        scores[np.arange(b), pos] = pos_scores
        labels = np.zeros((b, split.n_items), dtype=bool)
        labels[np.arange(b), pos] = True
        sums["HR"] += hit_rate(scores, labels, k) * b
        sums["NDCG"] += ndcg(scores, labels, k) * b
        sums["Recall"] += recall(scores, labels, k) * b
    return {f"{name}@{k}": total / len(users) for name, total in sums.items()}
