import pandas as pd

from lmrec.data import Interactions, preprocess
from lmrec.protocol import leave_one_out


def _dataset():
    rows = [
        ("a", "1", 3),
        ("a", "2", 1),
        ("a", "3", 2),
        ("b", "1", 1),
        ("b", "2", 2),
        ("b", "4", 3),
        ("b", "5", 4),
        ("c", "1", 1),  # too short to hold anything out
    ]
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).assign(rating=5.0)
    return preprocess(Interactions("toy", df))


def test_leave_one_out_holds_out_last_two_by_time():
    ds = _dataset()
    s = leave_one_out(ds)
    raw = ds.items.raw
    # a: 2 (t1), 3 (t2), 1 (t3) -> train [2], valid 3, test 1
    assert [raw[i] for i in s.test["item"]] == ["1", "5"]
    assert [raw[i] for i in s.valid["item"]] == ["3", "4"]
    assert s.test["user"].tolist() == [0, 1] and s.valid["user"].tolist() == [0, 1]
    train_a = s.train[s.train.user == 0]["item"].tolist()
    assert [raw[i] for i in train_a] == ["2"]
    assert len(s.train) + len(s.valid) + len(s.test) == len(ds.inter)
    # c keeps its only interaction in train
    assert (s.train.user == 2).sum() == 1


def test_history_before_test_includes_valid():
    s = leave_one_out(_dataset())
    hist = s.history_before("test")
    assert len(hist) == len(s.train) + len(s.valid)
    assert len(s.history_before("valid")) == len(s.train)
