import numpy as np
import pandas as pd
import pytest
import torch

from lmrec.errors import DataError
from lmrec.protocol.split import Split
from lmrec.train.batches import BatchBuilder, UserItems, history_tensor, sample_negatives


def _hand_split() -> Split:
    """User 0 trains on [3, 1, 4, 0] (in time order), user 1 on [2], user 2 on [5, 3].

    Valid/test: user 0 -> 5 then 2; user 2 -> 0 then 1. Six items, PAD = 6.
    """
    train = pd.DataFrame(
        {
            "user": [0, 0, 0, 0, 1, 2, 2],
            "item": [3, 1, 4, 0, 2, 5, 3],
            "timestamp": [1, 2, 3, 4, 1, 1, 2],
            "rating": 5.0,
        }
    )
    valid = pd.DataFrame({"user": [0, 2], "item": [5, 0], "timestamp": [5, 3]})
    test = pd.DataFrame({"user": [0, 2], "item": [2, 1], "timestamp": [6, 4]})
    return Split(train, valid, test, n_users=3, n_items=6)


def _train_pairs(split):
    return set(zip(split.train["user"], split.train["item"], strict=True))


def _cat(batches):
    return {k: torch.cat([b[k] for b in batches]).numpy() for k in batches[0]}


@pytest.mark.parametrize("kind", ["pairwise", "pointwise", "sequence"])
def test_same_seed_and_epoch_give_the_same_batches(split, kind):
    a = list(BatchBuilder(split, kind, 16, seed=3).epoch(2))
    b = list(BatchBuilder(split, kind, 16, seed=3).epoch(2))
    c = list(BatchBuilder(split, kind, 16, seed=3).epoch(3))
    d = list(BatchBuilder(split, kind, 16, seed=4).epoch(2))
    assert len(a) == len(b) == BatchBuilder(split, kind, 16, seed=3).n_batches()
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        assert all(torch.equal(x[k], y[k]) for k in x)
    key = "seq" if kind == "sequence" else "users"
    assert not np.array_equal(_cat(a)[key], _cat(c)[key])  # another epoch, another order
    assert not np.array_equal(_cat(a)[key], _cat(d)[key])  # another seed too


def test_pairwise_covers_every_train_pair_once_and_negatives_are_unseen(split):
    rows = _cat(list(BatchBuilder(split, "pairwise", 50, seed=0).epoch(1)))
    train = _train_pairs(split)
    assert sorted(zip(rows["users"], rows["pos"], strict=True)) == sorted(
        zip(split.train["user"], split.train["item"], strict=True)
    )
    assert all((u, n) not in train for u, n in zip(rows["users"], rows["neg"], strict=True))
    assert rows["neg"].min() >= 0 and rows["neg"].max() < split.n_items


def test_pointwise_has_n_neg_unseen_negatives_per_positive(split):
    rows = _cat(list(BatchBuilder(split, "pointwise", 64, seed=0, n_neg=3).epoch(1)))
    train = _train_pairs(split)
    labels = rows["labels"]
    assert rows["labels"].dtype == np.float32
    assert labels.sum() == len(split.train) and len(labels) == 4 * len(split.train)
    for u, i, y in zip(rows["users"], rows["items"], labels, strict=True):
        assert ((u, i) in train) == (y == 1.0)


def test_sequence_batches_match_the_hand_computed_layout():
    split = _hand_split()
    P = 6
    rows = _cat(list(BatchBuilder(split, "sequence", 8, seed=0, max_len=5).epoch(1)))
    assert sorted(rows["users"].tolist()) == [0, 2]  # user 1 has one item: nothing to predict
    r = {int(u): i for i, u in enumerate(rows["users"])}
    np.testing.assert_array_equal(rows["seq"][r[0]], [P, P, 3, 1, 4])
    np.testing.assert_array_equal(rows["pos"][r[0]], [P, P, 1, 4, 0])
    np.testing.assert_array_equal(rows["seq"][r[2]], [P, P, P, P, 5])
    np.testing.assert_array_equal(rows["pos"][r[2]], [P, P, P, P, 3])
    for u, seen in ((0, {3, 1, 4, 0}), (2, {5, 3})):
        neg, pos = rows["neg"][r[u]], rows["pos"][r[u]]
        assert all(n == P for n in neg[pos == P])
        assert all(0 <= n < P and n not in seen for n in neg[pos != P])


def test_sequence_keeps_the_last_max_len_steps():
    rows = _cat(list(BatchBuilder(_hand_split(), "sequence", 8, seed=0, max_len=2).epoch(1)))
    i = rows["users"].tolist().index(0)
    np.testing.assert_array_equal(rows["seq"][i], [1, 4])
    np.testing.assert_array_equal(rows["pos"][i], [4, 0])


def test_history_tensor_uses_train_for_valid_and_train_plus_valid_for_test():
    split = _hand_split()
    P = 6
    valid = history_tensor(split, "valid", np.array([0, 1, 2]), max_len=3)
    assert valid.dtype == torch.int64
    np.testing.assert_array_equal(valid.numpy(), [[1, 4, 0], [P, P, 2], [P, 5, 3]])
    test = history_tensor(split, "test", torch.tensor([2, 0]), max_len=6)
    np.testing.assert_array_equal(test.numpy(), [[P, P, P, 5, 3, 0], [P, 3, 1, 4, 0, 5]])


def test_negative_sampling_fails_clearly_for_a_user_who_saw_everything():
    seen = UserItems.from_frame(pd.DataFrame({"user": [0, 0], "item": [0, 1]}), 1, 2)
    with pytest.raises(DataError, match=r"user\(s\) \[0\]"):
        sample_negatives(np.random.default_rng(0), np.zeros(3, dtype=np.int64), seen)


def test_unknown_batch_kind_is_rejected(split):
    with pytest.raises(ValueError, match="batch kind"):
        BatchBuilder(split, "listwise", 8, seed=0)


def test_bitset_and_sorted_keys_agree(split, monkeypatch):
    import lmrec.train.batches as batches

    rng = np.random.default_rng(0)
    users = rng.integers(0, split.n_users, 500)
    items = rng.integers(0, split.n_items, 500)
    fast = UserItems.from_frame(split.train, split.n_users, split.n_items)
    monkeypatch.setattr(batches, "_BITSET_MAX_BYTES", 0)
    slow = UserItems.from_frame(split.train, split.n_users, split.n_items)
    assert fast.bits is not None and slow.bits is None
    expected = [(u, i) in _train_pairs(split) for u, i in zip(users, items, strict=True)]
    np.testing.assert_array_equal(fast.contains(users, items), expected)
    np.testing.assert_array_equal(slow.contains(users, items), expected)
    assert any(expected) and not all(expected)
