"""Amazon 2014 (JSON reviews + Python-literal metadata) and 2018 (strict JSON) loaders."""

import gzip
import json

import pytest

from lmrec.data.amazon import load_amazon2014, load_amazon2018
from lmrec.errors import DataError

REVIEWS = [
    {"reviewerID": "U1", "asin": "A1", "overall": 5.0, "unixReviewTime": 300, "reviewText": "ok"},
    {"reviewerID": "U1", "asin": "A2", "overall": 3.0, "unixReviewTime": 100},
    {"reviewerID": "U2", "asin": "A1", "overall": 4.0, "unixReviewTime": 200},
]
# 2014 metadata: Python literals (single quotes, tuples), which json.loads rejects.
META_2014 = [
    "{'asin': 'A1', 'title': 'AT&amp;T Phone', 'brand': 'AT&T', "
    "'categories': [['Office Products', 'Phones'], ['Electronics']], 'price': 9.5}",
    "{'asin': 'A2', 'title': \"Post-it Notes, 3'' x 3''\", 'description': 'Sticky.'}",
    "{'asin': 'Z9', 'title': 'Nobody reviewed me', 'related': {'also_bought': ('A1',)}}",
]
META_2018 = [
    {"asin": "A1", "title": "Phone", "category": ["Office Products", "Phones"],
     "description": ["Line one.", "Line two."], "brand": "VTech"},
    {"asin": "A1", "title": "Duplicate line, ignored"},
    {"asin": "A2", "title": "Notes"},
]  # fmt: skip


def gz_lines(path, lines):
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("".join(line + "\n" for line in lines))
    return path


def write_2014(tmp_path, reviews=None, meta=None):
    r = gz_lines(tmp_path / "reviews_Office_5.json.gz", reviews or [json.dumps(x) for x in REVIEWS])
    m = gz_lines(tmp_path / "meta_Office.json.gz", meta or META_2014)
    return r, m


def test_2014_known_answer(tmp_path):
    data = load_amazon2014(*write_2014(tmp_path))
    assert data.name == "amazon2014:Office"
    assert data.inter["user_id"].tolist() == ["U1", "U1", "U2"]
    assert data.inter["item_id"].tolist() == ["A1", "A2", "A1"]
    assert data.inter["timestamp"].tolist() == [300, 100, 200]
    assert data.inter["rating"].tolist() == [5.0, 3.0, 4.0]
    items = data.items.set_index("item_id")
    assert sorted(items.index) == ["A1", "A2"]  # unreviewed Z9 skipped
    assert items.loc["A1", "title"] == "AT&T Phone"  # HTML entity unescaped
    assert items.loc["A1", "category"] == "Office Products, Phones"
    assert items.loc["A2", "title"] == "Post-it Notes, 3'' x 3''"
    assert items.loc["A2", "description"] == "Sticky."


def test_2018_known_answer(tmp_path):
    r = gz_lines(tmp_path / "Office_5.json.gz", [json.dumps(x) for x in REVIEWS])
    m = gz_lines(tmp_path / "meta_Office.json.gz", [json.dumps(x) for x in META_2018])
    data = load_amazon2018(r, m)
    assert data.name == "amazon2018:Office"
    assert len(data) == 3
    items = data.items.set_index("item_id")
    assert items.loc["A1", "title"] == "Phone"  # first of the duplicate lines
    assert items.loc["A1", "description"] == "Line one. Line two."
    assert items.loc["A1", "category"] == "Office Products, Phones"


def test_2018_rejects_python_literal_meta(tmp_path):
    r = gz_lines(tmp_path / "Office_5.json.gz", [json.dumps(x) for x in REVIEWS])
    m = gz_lines(tmp_path / "meta_Office.json.gz", META_2014)
    with pytest.raises(DataError, match=r"meta_Office\.json\.gz, line 1: corrupt JSON"):
        load_amazon2018(r, m)


def test_truncated_gzip(tmp_path):
    lines = [json.dumps({**REVIEWS[0], "reviewText": "x" * 50 + str(i)}) for i in range(300)]
    r, m = write_2014(tmp_path, reviews=lines)
    raw = r.read_bytes()
    r.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"reviews_Office_5\.json\.gz: truncated or corrupt gzip"):
        load_amazon2014(r, m)


def test_corrupt_json_line_names_file_and_line(tmp_path):
    lines = [json.dumps(x) for x in REVIEWS]
    lines[1] = lines[1][:-5]
    r = gz_lines(tmp_path / "Office_5.json.gz", lines)
    with pytest.raises(DataError, match=r"Office_5\.json\.gz, line 2: corrupt JSON"):
        load_amazon2018(r)


def test_non_literal_python_line_is_refused_not_run(tmp_path):
    marker = tmp_path / "pwned"
    evil = f"{{'asin': 'A1', 'title': __import__('pathlib').Path({str(marker)!r}).touch()}}"
    r, m = write_2014(tmp_path, meta=[META_2014[1], evil])
    with pytest.raises(DataError, match=r"meta_Office\.json\.gz, line 2: not a Python literal"):
        load_amazon2014(r, m)
    assert not marker.exists()


def test_review_missing_field(tmp_path):
    lines = [json.dumps(x) for x in REVIEWS]
    lines[2] = json.dumps({"reviewerID": "U2", "overall": 4.0, "unixReviewTime": 1})
    r = gz_lines(tmp_path / "Office_5.json.gz", lines)
    with pytest.raises(DataError, match=r"line 3: review lacks field\(s\) asin"):
        load_amazon2018(r)


def test_empty_file(tmp_path):
    r = gz_lines(tmp_path / "Office_5.json.gz", [])
    with pytest.raises(DataError, match="holds no data"):
        load_amazon2018(r)
    (tmp_path / "plain_5.json").write_text("")
    with pytest.raises(DataError, match=r"plain_5\.json is empty"):
        load_amazon2018(tmp_path / "plain_5.json")
