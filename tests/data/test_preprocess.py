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


def test_top_share_keeps_each_users_heaviest_interactions():
    from lmrec.data.preprocess import top_share

    rows = [
        ("u1", "1", 0, 10.0),
        ("u1", "2", 1, 300.0),
        ("u1", "3", 2, 20.0),
        ("u1", "4", 3, 20.0),  # tie with item 3: file order decides
        ("u2", "1", 0, 1.0),
    ]
    kept = top_share(_raw(rows), 0.5).inter
    assert kept[kept.user_id == "u1"]["item_id"].tolist() == ["2", "3"]  # file order kept
    assert kept[kept.user_id == "u2"]["item_id"].tolist() == ["1"]  # at least one per user
    with pytest.raises(ConfigError, match="top_share"):
        PreprocessConfig(top_share=1.5)
    none = _raw([("u1", "1", 0, float("nan"))])
    with pytest.raises(DataError, match="rating_col="):
        top_share(none, 0.5)


def test_a_source_without_timestamps_is_split_by_file_order_and_says_so(tmp_path):
    from lmrec.data.tabular import load_tabular
    from lmrec.protocol import leave_one_out
    from lmrec.protocol.prepare import Prepared

    path = tmp_path / "clicks.tsv"
    path.write_text("user_id\titem_id\nu1\ta\nu1\tc\nu1\tb\nu2\tb\nu2\ta\nu2\tc\n")
    with pytest.warns(UserWarning, match="ordered as the file lists them"):
        data = load_tabular(path, time_col=None, rating_col=None)
    ds = preprocess(data)
    assert ds.clock == "file order"
    split = leave_one_out(ds)
    assert [ds.items.raw[i] for i in split.test["item"]] == ["b", "c"]  # each user's last row
    from lmrec.protocol.candidates import CandidateConfig

    protocol = Prepared(ds, split, {}, PreprocessConfig(), CandidateConfig()).protocol()
    assert "by file order" in protocol["split"]
    ds.save(tmp_path / "cache")
    assert Dataset.load(tmp_path / "cache").clock == "file order"


def test_a_spec_string_dataset_gets_a_short_report_label():
    from lmrec.experiment.config import DatasetSpec

    spec = DatasetSpec("csv:data/lastfm/user_artists.dat?items=artists.dat&item_key=id")
    assert spec.label == "user_artists"
    assert DatasetSpec("json:/data/amazon/Office").label == "Office"
    assert DatasetSpec("ml-100k").label == "ml-100k"
    assert DatasetSpec("csv:x/plays.csv", label="plays-2024").label == "plays-2024"
