import numpy as np
import pandas as pd
import pytest

from lmrec.data import Dataset, IdMap, Interactions, PreprocessConfig, preprocess
from lmrec.data.preprocess import deduplicate, k_core, threshold
from lmrec.errors import ConfigError, DataError


def _raw(rows):
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "rating"])
    items = pd.DataFrame({"item_id": ["1", "2", "3", "4"], "title": ["A", "B", "C", "D"]})
    return Interactions("toy", df, items)


ROWS = [
    ("u1", "1", 10, 5.0),
    ("u1", "2", 5, 4.0),
    ("u1", "1", 20, 3.0),  # repeat of (u1, 1): dedup keeps the earlier one
    ("u2", "1", 1, 2.0),
    ("u2", "3", 2, 5.0),
    ("u3", "4", 1, 5.0),
]


def test_dedup_keeps_earliest():
    out = deduplicate(_raw(ROWS)).inter
    assert len(out) == 5
    assert out[(out.user_id == "u1") & (out.item_id == "1")]["timestamp"].tolist() == [10]


def test_threshold_keeps_high_ratings_and_missing_ones():
    rows = ROWS + [("u3", "2", 3, float("nan"))]
    out = threshold(_raw(rows), 4.0).inter
    assert sorted(out["rating"].fillna(-1).tolist()) == [-1, 4.0, 5.0, 5.0, 5.0]


def test_k_core_is_iterative():
    # item 4 has 1 interaction; dropping it leaves u3 empty; item 3 (1 interaction) goes too,
    # which leaves u2 with 1 interaction, so u2 goes, which drops item 1 to one user.
    raw = deduplicate(_raw(ROWS))
    out = k_core(raw, user_core=2, item_core=2).inter
    assert len(out) == 0
    out = k_core(raw, user_core=2, item_core=1).inter
    assert set(out.user_id) == {"u1", "u2"}


def test_reindex_is_chronological_and_maps_both_ways():
    ds = preprocess(_raw(ROWS))
    assert ds.users.raw == ["u1", "u2", "u3"]
    assert ds.items.raw == ["1", "2", "3", "4"]
    # u1 saw item 2 (t=5) before item 1 (t=10)
    assert ds.user_histories()[0].tolist() == [1, 0]
    assert ds.items.index("3") == 2 and ds.items.to_raw([2]).tolist() == ["3"]
    assert ds.item_text["title"].tolist() == ["A", "B", "C", "D"]
    assert ds.stats()["interactions"] == 5
    assert ds.stats()["sparsity"] == pytest.approx(1 - 5 / 12)


def test_unknown_id_and_empty_result_are_clear_errors():
    ds = preprocess(_raw(ROWS))
    with pytest.raises(DataError, match="unknown user id 'nobody'"):
        ds.users.index("nobody")
    with pytest.raises(DataError, match="no interactions left"):
        preprocess(_raw(ROWS), PreprocessConfig(rating_threshold=10))
    with pytest.raises(ConfigError, match="user_core"):
        PreprocessConfig(user_core=-1)


def test_missing_column_names_it():
    df = pd.DataFrame({"user_id": ["a"], "item_id": ["b"], "rating": [1.0]})
    with pytest.raises(DataError, match="missing column\\(s\\) timestamp"):
        Interactions("toy", df)


def test_dataset_save_load_round_trip(tmp_path):
    ds = preprocess(_raw(ROWS))
    ds.save(tmp_path / "ds")
    back = Dataset.load(tmp_path / "ds")
    pd.testing.assert_frame_equal(back.inter, ds.inter)
    assert back.users.raw == ds.users.raw and back.items.raw == ds.items.raw
    np.testing.assert_array_equal(back.user_histories()[0], ds.user_histories()[0])
    (tmp_path / "ds" / "item_ids.json").write_text("{not json")
    with pytest.raises(DataError, match="item_ids.json: corrupt JSON at line 1"):
        IdMap.load(tmp_path / "ds" / "item_ids.json")
