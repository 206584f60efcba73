"""Evaluator: candidate-set scoring, threshold choice, full ranking with masking, known answers."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from lmrec.data.interactions import Dataset, IdMap
from lmrec.eval.evaluator import (
    choose_threshold,
    evaluate_candidate_sets,
    everywhere,
    full_ranking_metrics,
    interaction_metrics,
    score_candidates,
    topk_metrics,
)
from lmrec.protocol.candidates import CandidateSet
from lmrec.protocol.split import Split, leave_one_out


def make_set(task, stage, users, items):
    items = np.asarray(items, dtype=np.int64)
    labels = np.zeros(items.shape, dtype=np.int8)
    labels[:, 0] = 1
    return CandidateSet(task, stage, np.asarray(users, dtype=np.int64), items, labels)


def random_topk_set(n_users=7, n_items=50, n_cand=20, seed=0):
    rng = np.random.default_rng(seed)
    items = np.stack([rng.choice(n_items, n_cand, replace=False) for _ in range(n_users)])
    return make_set("topk", "test", np.arange(n_users), items)


def oracle(cands: CandidateSet):
    """A perfect score_fn: each user's held-out positive scores 1, everything else 0."""
    positive = dict(zip(cands.users.tolist(), cands.items[:, 0].tolist(), strict=True))

    def score_fn(users, items):
        return (items == np.array([positive[u] for u in users])[:, None]).astype(float)

    return score_fn


# --- score_candidates --------------------------------------------------------------------
def test_score_candidates_batches_and_aligns():
    cands = random_topk_set()
    calls = []

    def score_fn(users, items):
        calls.append(len(users))
        return items * 10.0 + users[:, None]

    scores = score_candidates(score_fn, cands, batch_size=3, progress=False)
    assert calls == [3, 3, 1]
    np.testing.assert_array_equal(scores, cands.items * 10.0 + cands.users[:, None])


def test_score_candidates_accepts_torch_and_rejects_bad_shape():
    cands = random_topk_set(n_users=4)
    got = score_candidates(
        lambda u, i: torch.from_numpy(i).float().requires_grad_(), cands, progress=False
    )
    np.testing.assert_array_equal(got, cands.items)
    with pytest.raises(ValueError, match=r"score_fn returned scores of shape \(4, 19\).*\(4, 20\)"):
        score_candidates(lambda u, i: i[:, 1:], cands, progress=False)


# --- top-K -------------------------------------------------------------------------------
def test_perfect_scorer_gets_full_marks():
    cands = random_topk_set()
    got = topk_metrics(score_candidates(oracle(cands), cands, progress=False), cands.labels)
    assert set(got) == {
        "HR@1", "HR@2", "HR@5", "HR@10", "NDCG@1", "NDCG@2", "NDCG@5", "NDCG@10", "NDCG@20", "MRR"
    }  # fmt: skip
    assert all(v == 1.0 for v in got.values())


def test_topk_metrics_hand_computed_and_drops_k_beyond_list():
    scores = np.array([[0.2, 0.9, 0.1], [0.8, 0.3, 0.5]])  # positive ranks 2 and 1
    labels = np.array([[1, 0, 0], [1, 0, 0]])
    got = topk_metrics(scores, labels, ks=(1, 2, 5))
    assert got == pytest.approx(
        {
            "HR@1": 0.5,
            "NDCG@1": 0.5,
            "HR@2": 1.0,
            "NDCG@2": (1 / math.log2(3) + 1) / 2,
            "NDCG@3": (1 / math.log2(3) + 1) / 2,
            "MRR": 0.75,
        }
    )


# --- interaction prediction --------------------------------------------------------------
def test_choose_threshold_separable_case():
    scores = np.array([[0.9, 0.3], [0.8, 0.1]])
    labels = np.array([[1, 0], [1, 0]])
    t = choose_threshold(scores, labels)
    assert t == pytest.approx(0.55)  # halfway between the lowest positive and highest negative
    assert interaction_metrics(scores, labels, t) == pytest.approx(
        {"precision": 1.0, "recall": 1.0, "F1": 1.0, "AUC": 1.0, "UAUC": 1.0}
    )


def test_choose_threshold_hand_computed():
    # thresholds 0.9 / 0.8 / 0.7 / 0.2 give F1 2/3, 1/2, 4/5, 2/3: best is 0.7
    scores = np.array([0.9, 0.8, 0.7, 0.2])
    labels = np.array([1, 0, 1, 0])
    assert choose_threshold(scores, labels) == pytest.approx(0.45)
    # equal best F1 (2/3) at 4 and at 1: the higher threshold wins
    assert choose_threshold(np.array([4.0, 3, 2, 1]), np.array([1, 0, 0, 1])) == 3.5
    # tied scores are decided together: 0.5 (pos) and 0.5 (neg) go in or out as one
    assert choose_threshold(np.array([0.5, 0.5, 0.1]), np.array([1, 0, 0])) == pytest.approx(0.3)
    # an infinite neighbour gives no midpoint: keep the score itself
    assert choose_threshold(np.array([1.0, -np.inf]), np.array([1, 0])) == 1.0
    with pytest.raises(ValueError, match="no positive"):
        choose_threshold(np.array([0.1, 0.2]), np.array([0, 0]))


def test_interaction_metrics_hand_computed():
    scores = np.array([[0.9, 0.2], [0.4, 0.6], [0.7, 0.7]])
    labels = np.array([[1, 0], [1, 0], [1, 0]])
    got = interaction_metrics(scores, labels, threshold=0.5)
    # decisions: row 0 (1, 0); row 1 (0, 1); row 2 (1, 1) -> TP 2, FP 2, FN 1
    assert got["precision"] == pytest.approx(0.5)
    assert got["recall"] == pytest.approx(2 / 3)
    assert got["F1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    # pooled pairs won: 0.9 beats 3, 0.4 beats 1, 0.7 beats 2 and ties 1 -> 6.5 / 9
    assert got["AUC"] == pytest.approx(6.5 / 9)
    assert got["UAUC"] == pytest.approx(1 / 3)  # only row 0's positive strictly wins


def interaction_sets(n=6, seed=0):
    rng = np.random.default_rng(seed)
    items = rng.choice(100, size=(2 * n, 2), replace=False)
    return {
        ("interaction", "valid"): make_set("interaction", "valid", np.arange(n), items[:n]),
        ("interaction", "test"): make_set("interaction", "test", np.arange(n), items[n:]),
    }


def test_evaluate_candidate_sets_perfect_scorer():
    users = np.arange(6)
    negatives = 100 + np.arange(6 * 19).reshape(6, 19)  # items >= 100 are never positive
    sets = {
        ("topk", "test"): make_set("topk", "test", users, np.c_[users, negatives]),
        ("interaction", "valid"): make_set(
            "interaction", "valid", users, np.c_[users + 10, 200 + users]
        ),
        ("interaction", "test"): make_set(
            "interaction", "test", users, np.c_[users + 20, 300 + users]
        ),
    }

    def score_fn(users, items):
        return (items < 100).astype(float)

    got = evaluate_candidate_sets(everywhere(score_fn), sets, progress=False)
    assert got["topk/HR@1"] == got["topk/HR@2"] == got["topk/NDCG@20"] == got["topk/MRR"] == 1.0
    assert got["interaction/precision"] == got["interaction/recall"] == 1.0
    assert got["interaction/F1"] == got["interaction/AUC"] == 1.0
    assert got["interaction/threshold"] == 0.5


def test_evaluate_candidate_sets_needs_validation_and_consistent_keys():
    sets = interaction_sets()
    del sets[("interaction", "valid")]
    with pytest.raises(ValueError, match="chosen on validation"):
        evaluate_candidate_sets(everywhere(lambda u, i: i * 1.0), sets, progress=False)
    with pytest.raises(ValueError, match="no test candidate set"):
        evaluate_candidate_sets(everywhere(lambda u, i: i * 1.0), {}, progress=False)
    wrong = {("topk", "test"): make_set("topk", "valid", [0], [[1, 2]])}
    with pytest.raises(ValueError, match="stage='valid'"):
        evaluate_candidate_sets(everywhere(lambda u, i: i * 1.0), wrong, progress=False)


# --- full ranking ------------------------------------------------------------------------
def tiny_split():
    """3 users, 6 items. u0: train {0, 1}, valid 2, test 3; u1: train {4}, valid 5, test 0."""
    train = pd.DataFrame(
        {"user": [0, 0, 1, 2], "item": [0, 1, 4, 5], "timestamp": [1, 2, 1, 1], "rating": 1.0}
    )
    valid = pd.DataFrame({"user": [0, 1], "item": [2, 5], "timestamp": [3, 2]})
    test = pd.DataFrame({"user": [0, 1], "item": [3, 0], "timestamp": [4, 3]})
    return Split(train, valid, test, n_users=3, n_items=6)


def test_full_ranking_masks_seen_items():
    split = tiny_split()
    # a "leaky" scorer ranks each user's seen items first and the test item just below them
    table = np.zeros((3, 6))
    table[0, [0, 1, 2]] = 10.0  # u0's train and valid items
    table[0, 3] = 5.0
    table[1, [4, 5]] = 10.0
    table[1, 0] = 5.0
    got = full_ranking_metrics(lambda u: table[u], split, "test", k=1, progress=False)
    assert got == {"HR@1": 1.0, "NDCG@1": 1.0, "Recall@1": 1.0}
    assert table[0, 0] == 10.0  # the model's own array is not overwritten
    # at the valid stage the valid item is the target, so it is not masked (only train is):
    # u0's item 2 (10) beats the unseen rest once train items 0 and 1 (10) are out of the way
    valid = full_ranking_metrics(lambda u: table[u], split, "valid", k=1, progress=False)
    assert valid["HR@1"] == 1.0


def test_full_ranking_does_not_reward_a_seen_item():
    split = tiny_split()
    table = np.zeros((3, 6))
    table[0, 1] = 10.0  # u0 seen item first, then the unseen items 4 and 5, then the target 3
    table[0, [4, 5]] = 7.0
    table[0, 3] = 5.0
    table[1, 0] = 5.0  # u1's target first among unseen
    got = full_ranking_metrics(lambda u: torch.tensor(table[u]), split, "test", k=2, batch_size=1)
    # u0's target ranks 3rd among unseen items (after 4 and 5): miss at 2; u1 hits at rank 1
    assert got["HR@2"] == 0.5
    assert got["NDCG@2"] == pytest.approx(0.5)
    got3 = full_ranking_metrics(lambda u: table[u], split, "test", k=3, progress=False)
    assert got3["NDCG@3"] == pytest.approx((1 / math.log2(4) + 1) / 2)


def test_full_ranking_never_masks_the_target():
    split = tiny_split()
    split.test.loc[1, "item"] = 4  # a repeat: u1's test item is also in its train history
    table = np.zeros((3, 6))
    table[0, 3] = 1.0
    table[1, 4] = 1.0
    got = full_ranking_metrics(lambda u: table[u], split, "test", k=1, progress=False)
    assert got["HR@1"] == 1.0


def test_full_ranking_bad_shape():
    with pytest.raises(ValueError, match=r"full_score_fn returned.*\(2, 5\).*\(2, 6\)"):
        full_ranking_metrics(lambda u: np.zeros((len(u), 5)), tiny_split(), progress=False)


# --- integration: a popularity scorer on a tiny dataset with a known answer ----------------
def tiny_dataset():
    """4 users, 8 items, histories in time order; user 3 has 2 interactions, all in train."""
    histories = {0: [0, 1, 2, 5], 1: [0, 2, 1, 3], 2: [0, 3, 1, 4], 3: [0, 1]}
    rows = [(u, i, t) for u, items in histories.items() for t, i in enumerate(items)]
    inter = pd.DataFrame(rows, columns=["user", "item", "timestamp"]).assign(rating=1.0)
    return Dataset(
        "tiny",
        IdMap("user", [f"u{u}" for u in range(4)]),
        IdMap("item", [f"i{i}" for i in range(8)]),
        inter,
        pd.DataFrame({"title": [f"item {i}" for i in range(8)]}),
    )


def test_popularity_known_answer():
    split = leave_one_out(tiny_dataset())
    # train counts: item 0 x4, item 1 x2, items 2 and 3 x1, items 4..7 never
    counts = np.bincount(split.train["item"], minlength=split.n_items).astype(float)
    np.testing.assert_array_equal(counts, [4, 2, 1, 1, 0, 0, 0, 0])

    def score_fn(users, items):
        return counts[items]

    sets = {  # negatives are items the user never touched in any split
        ("topk", "test"): make_set("topk", "test", [0, 1, 2], [[5, 3, 6], [3, 4, 5], [4, 2, 7]]),
        ("interaction", "valid"): make_set(
            "interaction", "valid", [0, 1, 2], [[2, 6], [1, 7], [1, 5]]
        ),
        ("interaction", "test"): make_set(
            "interaction", "test", [0, 1, 2], [[5, 6], [3, 7], [4, 2]]
        ),
    }
    got = evaluate_candidate_sets(everywhere(score_fn), sets, progress=False)
    # top-K positives score 0, 1, 0 against (1, 0), (0, 0), (1, 0): pessimistic ranks 3, 1, 3
    assert got["topk/HR@1"] == pytest.approx(1 / 3)
    assert got["topk/HR@2"] == pytest.approx(1 / 3)
    assert got["topk/NDCG@3"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    assert got["topk/MRR"] == pytest.approx(5 / 9)
    # valid: positives 1, 2, 2 vs negatives 0, 0, 0 -> F1 = 1 from ">= 1": threshold 0.5
    assert got["interaction/threshold"] == 0.5
    # test: (0, 0), (1, 0), (0, 1) -> TP 1, FP 1, FN 2
    assert got["interaction/precision"] == pytest.approx(0.5)
    assert got["interaction/recall"] == pytest.approx(1 / 3)
    assert got["interaction/F1"] == pytest.approx(0.4)
    assert got["interaction/AUC"] == pytest.approx(4.5 / 9)
    assert got["interaction/UAUC"] == pytest.approx(1 / 3)

    # full ranking: u0 ranks 5 behind 3 and tied with 4, 6, 7 -> 5th; u1's 3 is first among
    # unseen (its seen items 0, 1, 2 are more popular but masked); u2's 4 -> 5th
    full = full_ranking_metrics(lambda u: np.tile(counts, (len(u), 1)), split, k=5, progress=False)
    assert full["HR@5"] == 1.0
    assert full["NDCG@5"] == pytest.approx((2 / math.log2(6) + 1) / 3)
    full2 = full_ranking_metrics(lambda u: np.tile(counts, (len(u), 1)), split, k=2, progress=False)
    assert full2 == pytest.approx({"HR@2": 1 / 3, "NDCG@2": 1 / 3, "Recall@2": 1 / 3})


def test_the_one_evaluator_scores_each_stage_with_its_own_scorer_and_writes_the_ranks(tmp_path):
    from lmrec.eval.significance import read_ranks

    users = np.arange(4)
    sets = {
        ("topk", "test"): make_set("topk", "test", users, np.c_[users, 10 + users, 20 + users]),
        ("interaction", "valid"): make_set("interaction", "valid", users, np.c_[users, 30 + users]),
        ("interaction", "test"): make_set("interaction", "test", users, np.c_[users, 40 + users]),
    }
    seen = []

    def scorer(stage, task):
        seen.append((stage, task))
        # right on test, exactly wrong on validation
        good = stage == "test"
        return lambda u, i: ((i < 10) == good).astype(float)

    got = evaluate_candidate_sets(scorer, sets, progress=False, ranks_to=tmp_path / "r.json")
    assert sorted(seen) == [("test", "interaction"), ("test", "topk"), ("valid", "interaction")]
    assert got["topk/HR@1"] == 1.0 and got["eval/users"] == 4.0
    assert read_ranks(tmp_path / "r.json") == {0: 1, 1: 1, 2: 1, 3: 1}
    # the first 2 users only, and top-K scores handed in are used as they are
    cut = evaluate_candidate_sets(
        scorer, sets, tasks=["topk"], limit=2, progress=False,
        topk_scores=np.array([[0.0, 1.0, 2.0], [3.0, 2.0, 1.0]]),
    )  # fmt: skip
    assert cut["topk/HR@1"] == 0.5 and cut["eval/users"] == 2.0 and "interaction/F1" not in cut
