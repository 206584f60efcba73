"""Metrics against hand-computed values, RecBole's and Cornac's published cases, and a loop."""

import math

import numpy as np
import pytest
import torch

from lmrec.eval.metrics import (
    auc,
    binary_auc,
    hit_rate,
    mrr,
    ndcg,
    precision_recall_f1,
    recall,
)

L2, L3, L4 = 1 / math.log2(2), 1 / math.log2(3), 1 / math.log2(4)


def from_ranking(rank_to_col: list[list[int]], n_cand: int) -> np.ndarray:
    """Scores that put column rank_to_col[u][r] at rank r + 1 (Cornac's rec_list layout)."""
    scores = np.zeros((len(rank_to_col), n_cand))
    for u, cols in enumerate(rank_to_col):
        scores[u, cols] = np.arange(n_cand, 0, -1)[: len(cols)]
    return scores


# --- RecBole tests/metrics/test_topk_metrics.py -------------------------------------------
# RecBole gives each user's top-3 hit pattern and the number of positives (pos_len). In the
# (scores, labels) layout every positive is a candidate, so the positives beyond the top 3 sit
# at ranks 4..6. Columns are shuffled so the metric has to sort.
RECBOLE_RANKED = np.array(
    [
        [0, 0, 0, 1, 0, 0],  # pos_len 1
        [1, 1, 1, 0, 0, 0],  # pos_len 3
        [1, 0, 1, 1, 1, 0],  # pos_len 4
        [0, 0, 1, 1, 0, 0],  # pos_len 2
    ]
)


@pytest.fixture
def recbole_case():
    rng = np.random.default_rng(0)
    perm = rng.permutation(6)
    scores = np.tile(np.arange(6.0, 0.0, -1.0), (4, 1))[:, perm]
    labels = RECBOLE_RANKED[:, perm]
    return scores, labels


RECBOLE_EXPECTED = {  # per user, at k = 1, 2, 3
    hit_rate: [[0, 0, 0], [1, 1, 1], [1, 1, 1], [0, 0, 1]],
    mrr: [[0, 0, 0], [1, 1, 1], [1, 1, 1], [0, 0, 1 / 3]],
    recall: [[0, 0, 0], [1 / 3, 2 / 3, 1], [1 / 4, 1 / 4, 2 / 4], [0, 0, 1 / 2]],
    ndcg: [
        [0, 0, 0],
        [1, 1, 1],
        [1, L2 / (L2 + L3), (L2 + L4) / (L2 + L3 + L4)],
        [0, 0, L4 / (L2 + L3)],
    ],
}


@pytest.mark.parametrize("metric", list(RECBOLE_EXPECTED), ids=lambda f: f.__name__)
@pytest.mark.parametrize("k", [1, 2, 3])
def test_recbole_published_cases(recbole_case, metric, k):
    scores, labels = recbole_case
    expected = np.mean(np.array(RECBOLE_EXPECTED[metric])[:, k - 1])
    assert metric(scores, labels, k) == pytest.approx(expected)


# --- Cornac tests/cornac/metrics/test_ranking.py --------------------------------------------
def test_cornac_ndcg():
    assert ndcg(np.array([[1.0]]), np.array([[1]]), 1) == 1
    # ground truth [1, 0, 1], rec_list [0, 2, 1]
    assert ndcg(from_ranking([[0, 2, 1]], 3), np.array([[1, 0, 1]]), 3) == pytest.approx(1)
    # ground truth [0, 0, 1], rec_list [1, 2, 0], NDCG@2 = 0.63
    got = ndcg(from_ranking([[1, 2, 0]], 3), np.array([[0, 0, 1]]), 2)
    assert round(got, 2) == 0.63


def test_cornac_mrr():
    assert mrr(from_ranking([[0, 2, 1]], 3), np.array([[1, 0, 1]])) == 1
    assert mrr(from_ranking([[1, 2, 0]], 3), np.array([[1, 0, 1]])) == 0.5


def test_cornac_recall():
    assert recall(from_ranking([[0, 2, 1]], 3), np.array([[1, 0, 1]]), 3) == 1
    assert recall(from_ranking([[1, 2, 0]], 3), np.array([[0, 0, 1]]), 3) == 1
    assert recall(from_ranking([[1, 2, 0]], 3), np.array([[0, 0, 1]]), 2) == 1


def test_cornac_auc():
    assert auc(np.array([[0.1, 0.4, 0.35, 0.8]]), np.array([[0, 0, 1, 1]])) == 0.75
    assert auc(np.array([[0.1, 0.4, 0.35, 0.8]]), np.array([[0, 1, 0, 1]])) == 1.0


@pytest.mark.parametrize(
    "pred, truth, expected",
    [  # Cornac's ranking P/R/F cases, with its recommended items as the positive decisions
        ([1, 1, 1], [1, 0, 1], (2 / 3, 1, 4 / 5)),
        ([1, 1, 1], [0, 0, 1], (1 / 3, 1, 1 / 2)),
        ([0, 1, 1], [0, 0, 1], (1 / 2, 1, 2 / 3)),
        ([0, 1, 1], [1, 0, 0], (0, 0, 0)),
    ],
)
def test_cornac_precision_recall_f1(pred, truth, expected):
    got = precision_recall_f1(np.array([pred]), np.array([truth]))
    assert (got["precision"], got["recall"], got["F1"]) == pytest.approx(expected)


def test_precision_recall_f1_pools_over_rows():
    pred = np.array([[1, 0], [1, 1], [0, 0]])
    truth = np.array([[1, 0], [0, 1], [1, 0]])  # TP 2, FP 1, FN 1
    got = precision_recall_f1(pred, truth)
    assert got == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "F1": 2 / 3})
    nothing = precision_recall_f1(np.zeros((3, 2)), truth)
    assert nothing == {"precision": 0.0, "recall": 0.0, "F1": 0.0}


# --- ties --------------------------------------------------------------------------------
def test_constant_scorer_gains_nothing_from_positive_in_column_zero():
    scores = np.zeros((4, 20))
    labels = np.zeros((4, 20), dtype=int)
    labels[:, 0] = 1
    assert hit_rate(scores, labels, 1) == 0
    assert hit_rate(scores, labels, 19) == 0
    assert hit_rate(scores, labels, 20) == 1
    assert mrr(scores, labels) == pytest.approx(1 / 20)
    assert ndcg(scores, labels, 20) == pytest.approx(1 / math.log2(21))
    assert auc(scores, labels) == 0
    assert binary_auc(scores, labels) == 0.5


def test_tied_negative_ranks_above_positive():
    # positive 0.5 ties with one negative, beats two: pessimistic rank 2
    scores = np.array([[0.5, 0.9, 0.5, 0.1, 0.2]])
    labels = np.array([[1, 0, 0, 0, 0]])
    assert hit_rate(scores, labels, 2) == 0
    assert hit_rate(scores, labels, 3) == 1
    assert mrr(scores, labels) == pytest.approx(1 / 3)
    assert ndcg(scores, labels, 3) == pytest.approx(1 / math.log2(4))
    assert auc(scores, labels) == pytest.approx(2 / 4)


def test_tied_positives_and_negatives_multi_positive():
    # ranks: neg 0.9; then the 0.7 tie: neg first, then the two positives; then neg 0.1
    scores = np.array([[0.7, 0.7, 0.9, 0.7, 0.1]])
    labels = np.array([[1, 1, 0, 0, 0]])
    assert hit_rate(scores, labels, 2) == 0
    assert recall(scores, labels, 3) == pytest.approx(1 / 2)
    assert recall(scores, labels, 4) == 1
    assert ndcg(scores, labels, 4) == pytest.approx(
        (1 / math.log2(4) + 1 / math.log2(5)) / (1 + L3)
    )
    assert mrr(scores, labels, k=2) == 0
    assert mrr(scores, labels) == pytest.approx(1 / 3)
    assert auc(scores, labels) == pytest.approx(1 / 3)  # each positive beats only the 0.1


def test_infinite_scores_are_allowed():
    scores = np.array([[-np.inf, 1.0, -np.inf], [np.inf, 0.0, -np.inf]])
    labels = np.array([[1, 0, 0], [1, 0, 0]])
    assert hit_rate(scores, labels, 1) == 0.5
    assert mrr(scores, labels) == pytest.approx((1 / 3 + 1) / 2)


# --- against a plain loop on random data with many ties ------------------------------------
def loop_reference(scores, labels, k):
    hr, nd, rr, rc, au = [], [], [], [], []
    for s, y in zip(scores, labels, strict=True):
        order = sorted(range(len(s)), key=lambda j: (-s[j], y[j], j))
        ranked = [int(y[j]) for j in order]
        top = ranked[:k]
        n_pos = sum(ranked)
        hr.append(float(any(top)))
        ideal = sum(1 / math.log2(r + 2) for r in range(min(n_pos, k)))
        nd.append(sum(g / math.log2(r + 2) for r, g in enumerate(top)) / ideal)
        rr.append(1 / (ranked.index(1) + 1) if ranked.index(1) < k else 0.0)
        rc.append(sum(top) / n_pos)
        pos = [a for a, b in zip(s, y, strict=True) if b]
        neg = [a for a, b in zip(s, y, strict=True) if not b]
        au.append(sum(p > n for p in pos for n in neg) / (len(pos) * len(neg)))
    return [float(np.mean(v)) for v in (hr, nd, rr, rc, au)]


@pytest.mark.parametrize("one_positive", [True, False])
@pytest.mark.parametrize("k", [1, 3, 7])
def test_matches_loop_reference(one_positive, k):
    rng = np.random.default_rng(k + 10 * one_positive)
    n, c = 50, 8
    scores = rng.integers(0, 4, size=(n, c)).astype(float)  # few values: many ties
    if one_positive:
        labels = np.zeros((n, c), dtype=int)
        labels[np.arange(n), rng.integers(0, c, n)] = 1
    else:
        labels = (rng.random((n, c)) < 0.3).astype(int)
        labels[:, 0] = 1
        labels[:, 1] = 0  # every row keeps a positive and a negative
    got = [
        hit_rate(scores, labels, k),
        ndcg(scores, labels, k),
        mrr(scores, labels, k),
        recall(scores, labels, k),
        auc(scores, labels),
    ]
    assert got == pytest.approx(loop_reference(scores, labels, k))


def test_binary_auc_hand_computed_with_ties():
    # positives 0.8, 0.4; negatives 0.4, 0.1: pairs won 1 + 1 + 0.5 (tie) + 1 = 3.5 of 4
    scores = np.array([[0.8, 0.4], [0.4, 0.1]])
    labels = np.array([[1, 0], [1, 0]])
    assert binary_auc(scores, labels) == pytest.approx(3.5 / 4)
    assert binary_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75


def test_binary_auc_and_prf_match_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 5, size=(40, 2)).astype(float)
    labels = np.tile([1, 0], (40, 1))
    assert binary_auc(scores, labels) == pytest.approx(
        sk.roc_auc_score(labels.ravel(), scores.ravel())
    )
    pred = scores >= 2
    got = precision_recall_f1(pred, labels)
    assert got["precision"] == pytest.approx(sk.precision_score(labels.ravel(), pred.ravel()))
    assert got["recall"] == pytest.approx(sk.recall_score(labels.ravel(), pred.ravel()))
    assert got["F1"] == pytest.approx(sk.f1_score(labels.ravel(), pred.ravel()))


# --- input types -------------------------------------------------------------------------
def test_torch_input_matches_numpy():
    scores = np.array([[0.2, 0.9, 0.5], [0.7, 0.1, 0.3]])
    labels = np.array([[1, 0, 0], [0, 0, 1]])
    ts = torch.tensor(scores, requires_grad=True)
    tl = torch.tensor(labels)
    assert hit_rate(ts, tl, 2) == hit_rate(scores, labels, 2) == 0.5
    assert ndcg(ts, tl, 3) == pytest.approx(ndcg(scores, labels, 3))
    assert mrr(ts, tl) == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert auc(ts, tl) == pytest.approx(auc(scores, labels))
    assert binary_auc(ts, tl) == pytest.approx(binary_auc(scores, labels))
    assert precision_recall_f1(tl.bool(), tl)["F1"] == 1.0
    assert hit_rate(ts.to(torch.bfloat16), tl.bool(), 2) == 0.5
    assert isinstance(recall(ts, tl, 1), float)


# --- bad input ---------------------------------------------------------------------------
def test_row_without_positive_is_named():
    labels = np.array([[1, 0], [0, 0], [0, 1], [0, 0]])
    with pytest.raises(ValueError, match=r"row 1 has no positive label \(2 such row"):
        hit_rate(np.ones((4, 2)), labels, 1)


def test_nan_score_is_named():
    scores = np.array([[0.1, 0.2, 0.3], [0.1, 0.2, np.nan]])
    with pytest.raises(ValueError, match="NaN.*row 1, column 2"):
        ndcg(scores, np.eye(2, 3), 2)
    with pytest.raises(ValueError, match="NaN"):
        binary_auc(scores, np.eye(2, 3))


def test_shape_mismatch_and_dimensions():
    with pytest.raises(ValueError, match=r"shape mismatch: scores \(2, 3\) and labels \(2, 2\)"):
        mrr(np.ones((2, 3)), np.eye(2))
    with pytest.raises(ValueError, match="must be 2-D.*reshape"):
        hit_rate(np.ones(3), np.array([1, 0, 0]), 1)
    with pytest.raises(ValueError, match="empty"):
        hit_rate(np.ones((0, 3)), np.ones((0, 3)), 1)
    with pytest.raises(ValueError, match="shape mismatch: pred"):
        precision_recall_f1(np.ones(3), np.ones(2))


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_bad_k(k):
    with pytest.raises(ValueError, match="k must be"):
        hit_rate(np.ones((1, 3)), np.array([[1, 0, 0]]), k)


def test_k_beyond_candidates_is_whole_list():
    scores, labels = np.array([[0.1, 0.9]]), np.array([[1, 0]])
    assert hit_rate(scores, labels, 10) == 1
    assert ndcg(scores, labels, 10) == pytest.approx(L3)


def test_bad_labels_and_classes():
    with pytest.raises(ValueError, match="labels must be 0/1.*2"):
        hit_rate(np.ones((1, 2)), np.array([[2, 0]]), 1)
    with pytest.raises(ValueError, match="row 0 has no negative label"):
        auc(np.ones((2, 2)), np.array([[1, 1], [1, 0]]))
    with pytest.raises(ValueError, match="both classes.*0 negative"):
        binary_auc(np.ones((2, 2)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="threshold the scores first"):
        precision_recall_f1(np.array([0.3, 0.8]), np.array([0, 1]))
    with pytest.raises(ValueError, match="no positive"):
        precision_recall_f1(np.array([0, 1]), np.array([0, 0]))
