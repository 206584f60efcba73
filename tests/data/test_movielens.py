"""MovieLens official-format loaders on tiny hand-written files."""

import pytest

from lmrec.data.movielens import ML100K_GENRES, load_ml1m, load_ml100k
from lmrec.errors import DataError


def flags(*names):
    return "|".join("1" if g in names else "0" for g in ML100K_GENRES)


def write_ml100k(d, data=None):
    d.mkdir(parents=True, exist_ok=True)
    (d / "u.data").write_text(data or "1\t10\t4\t100\n1\t20\t5\t50\n2\t10\t3\t70\n")
    toy = flags("Animation", "Children's", "Comedy")
    lines = [
        f"10|Toy Story (1995)|01-Jan-1995||http://x|{toy}",
        f"20|Café Society (1995)|01-Jan-1995||http://y|{flags('Drama')}",
        f"30|Unrated (1990)|||http://z|{flags('unknown')}",
    ]
    (d / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    return d


def write_ml1m(d):
    d.mkdir(parents=True, exist_ok=True)
    (d / "ratings.dat").write_text(
        "1::10::5::978300760\n1::20::3::978300700\n\n2::20::4::978300800\n"
    )
    (d / "movies.dat").write_bytes(
        "10::Toy Story (1995)::Animation|Children's|Comedy\n20::Amélie (2001)::Comedy|Romance\n"
        "30::Never Rated (1999)::Drama\n".encode("latin-1")
    )
    return d


def test_ml100k_known_answer(tmp_path):
    data = load_ml100k(write_ml100k(tmp_path / "ml-100k"))
    assert data.name == "ml-100k"
    assert (len(data), data.n_users, data.n_items) == (3, 2, 2)
    assert data.inter["timestamp"].tolist() == [100, 50, 70]
    assert data.inter["rating"].tolist() == [4.0, 5.0, 3.0]
    items = data.items.set_index("item_id")
    assert items.loc["10", "title"] == "Toy Story (1995)"
    assert items.loc["10", "genres"] == "Animation, Children's, Comedy"
    assert items.loc["20", "title"] == "Café Society (1995)"  # latin-1 decoded
    assert len(items) == 3  # unrated items are kept as text


def test_ml1m_known_answer(tmp_path):
    data = load_ml1m(write_ml1m(tmp_path / "ml-1m"))
    assert (len(data), data.n_users, data.n_items) == (3, 2, 2)
    assert data.inter["user_id"].tolist() == ["1", "1", "2"]
    assert data.inter["timestamp"].tolist() == [978300760, 978300700, 978300800]
    items = data.items.set_index("item_id")
    assert items.loc["20", "title"] == "Amélie (2001)"
    assert items.loc["20", "genres"] == "Comedy, Romance"


def test_ml100k_non_numeric_rating_names_line(tmp_path):
    d = write_ml100k(tmp_path / "d", data="1\t10\t4\t100\n1\t20\tfive\t50\n")
    with pytest.raises(DataError, match=r"u\.data, line 2: column 'rating' holds 'five'"):
        load_ml100k(d)


def test_ml100k_short_line_names_line(tmp_path):
    d = write_ml100k(tmp_path / "d", data="1\t10\t4\t100\n\n1\t20\t5\n")
    with pytest.raises(DataError, match=r"u\.data, line 3: too few fields"):
        load_ml100k(d)


def test_ml100k_bad_item_line(tmp_path):
    d = write_ml100k(tmp_path / "d")
    (d / "u.item").write_text("10|Toy Story (1995)|x\n")
    with pytest.raises(DataError, match=r"u\.item, line 1: expected 24 '\|'-separated fields"):
        load_ml100k(d)


def test_ml1m_missing_and_empty_files(tmp_path):
    d = write_ml1m(tmp_path / "d")
    (d / "ratings.dat").write_text("")
    with pytest.raises(DataError, match=r"ratings\.dat is empty"):
        load_ml1m(d)
    (d / "ratings.dat").unlink()
    with pytest.raises(DataError, match=r"ratings\.dat does not exist"):
        load_ml1m(d)
