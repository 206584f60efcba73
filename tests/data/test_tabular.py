"""Generic CSV/Parquet interactions plus an item-text table."""

import pandas as pd
import pytest

from lmrec.data.tabular import load_tabular
from lmrec.errors import DataError


def test_csv_with_custom_columns_and_dates(tmp_path):
    (tmp_path / "events.csv").write_text(
        "uid,movie,when,stars\n7,007,1970-01-01T00:01:40Z,4.5\n7,42,1970-01-02,\n8,007,1970-01-01,3\n"
    )
    (tmp_path / "movies.csv").write_text(
        'movie,name,genres\n007,"Dr. No, 1962",Action\n42,Other,\n'
    )
    data = load_tabular(
        tmp_path / "events.csv",
        tmp_path / "movies.csv",
        user_col="uid",
        item_col="movie",
        time_col="when",
        rating_col="stars",
        title_col="name",
    )
    assert data.name == "events"
    assert data.inter["item_id"].tolist() == ["007", "42", "007"]  # leading zeros kept
    assert data.inter["timestamp"].tolist() == [100, 86400, 0]
    assert data.inter["rating"].isna().tolist() == [False, True, False]
    text = data.items.set_index("item_id")
    assert text.loc["007", "title"] == "Dr. No, 1962"
    assert text.loc["007", "genres"] == "Action"


def test_parquet_without_time_uses_row_order(tmp_path):
    pd.DataFrame({"user_id": [1, 1, 2], "item_id": [5, 6, 5]}).to_parquet(tmp_path / "i.parquet")
    data = load_tabular(tmp_path / "i.parquet", time_col=None, rating_col=None)
    assert data.inter["user_id"].tolist() == ["1", "1", "2"]
    assert data.inter["timestamp"].tolist() == [0, 1, 2]


def test_missing_column_names_file_column_and_fix(tmp_path):
    (tmp_path / "i.csv").write_text("user_id,item_id,rating\n1,2,3\n")
    with pytest.raises(DataError, match=r"i\.csv: missing column 'timestamp'.*time_col=None"):
        load_tabular(tmp_path / "i.csv")


def test_bad_time_names_line(tmp_path):
    (tmp_path / "i.csv").write_text("user_id,item_id,timestamp\n1,2,5\n1,3,yesterday-ish\n")
    with pytest.raises(
        DataError, match=r"i\.csv, line 3: column 'timestamp' holds 'yesterday-ish', not a number"
    ):
        load_tabular(tmp_path / "i.csv", rating_col=None)


def test_corrupt_parquet_and_empty_csv(tmp_path):
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match=r"bad\.parquet: not a readable Parquet file"):
        load_tabular(tmp_path / "bad.parquet")
    (tmp_path / "e.csv").write_text("\n\n")
    with pytest.raises(DataError, match=r"e\.csv is empty"):
        load_tabular(tmp_path / "e.csv")


@pytest.mark.parametrize(
    ("sep", "suffix"), [("\t", ".dat"), (";", ".csv"), ("|", ".txt"), ("::", ".dat"), (",", ".dat")]
)
def test_the_separator_is_read_from_the_file_not_its_name(tmp_path, sep, suffix):
    rows = (
        ["user_id", "item_id", "timestamp"],
        ["u1", "i1", "5"],
        ["u1", "i2", "6"],
        ["u2", "i1", "7"],
    )
    path = tmp_path / f"events{suffix}"
    path.write_text("\n".join(sep.join(r) for r in rows) + "\n")
    data = load_tabular(path, rating_col=None)
    assert data.inter["item_id"].tolist() == ["i1", "i2", "i1"]
    assert data.inter["timestamp"].tolist() == [5, 6, 7]


def test_a_forced_separator_wins_and_a_bad_one_names_itself(tmp_path):
    path = tmp_path / "events.dat"
    path.write_text("user_id\titem_id\nu1\ti1\nu2\ti2\n")
    assert len(load_tabular(path, rating_col=None, time_col=None, sep="tab").inter) == 2
    with pytest.raises(DataError, match="separator ';'.*pass sep="):
        load_tabular(path, rating_col=None, time_col=None, sep=";")
    odd = tmp_path / "odd.txt"
    odd.write_text("just one column\na\nb\n")
    with pytest.raises(DataError, match="could not tell the separator.*pass sep="):
        load_tabular(odd, rating_col=None, time_col=None)


def test_the_item_file_names_its_own_id_column_and_maps_text_fields(tmp_path):
    (tmp_path / "plays.dat").write_text("user\tartist\tweight\nu1\ta1\t10\nu1\ta2\t3\nu2\ta1\t7\n")
    (tmp_path / "artists.dat").write_text("id\tname\ttags\na1\tBand One\trock\na2\tDuo\tjazz\n")
    files = (tmp_path / "plays.dat", tmp_path / "artists.dat")
    cols = {"user_col": "user", "item_col": "artist", "time_col": None, "title_col": "name"}
    data = load_tabular(
        *files, **cols, rating_col="weight", item_key="id", item_fields={"category": "tags"}
    )
    text = data.items.set_index("item_id")
    assert text.loc["a1", "title"] == "Band One" and text.loc["a2", "category"] == "jazz"
    with pytest.raises(DataError, match="item_key="):
        load_tabular(*files, **cols, rating_col=None)
    with pytest.raises(DataError, match="item_fields names"):
        load_tabular(*files, **cols, rating_col=None, item_key="id", item_fields={"tags": "tags"})
