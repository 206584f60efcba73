"""The LLM-repository JSON layout: {user: [items in time order]} + {item: {title, ...}}."""

import json

import numpy as np
import pytest

from lmrec.data.jsonlayout import load_json_layout
from lmrec.errors import DataError


def write(tmp_path, inter, items=None, name="Office"):
    (tmp_path / f"{name}.inter.json").write_text(json.dumps(inter))
    if items is not None:
        (tmp_path / f"{name}.item.json").write_text(json.dumps(items))
    return tmp_path / f"{name}.inter.json", (tmp_path / f"{name}.item.json") if items else None


def test_positions_are_timestamps_and_text_is_kept(tmp_path):
    items = {
        "0": {"title": "AT&amp;T Phone", "description": "", "brand": "AT&T", "categories": "A, B"},
        "1": {"title": "Stapler", "description": "Staples.", "brand": "", "categories": "C"},
    }
    data = load_json_layout(*write(tmp_path, {"0": [1, 0], "1": [0]}, items))
    assert data.name == "Office"
    assert data.inter["user_id"].tolist() == ["0", "0", "1"]
    assert data.inter["item_id"].tolist() == ["1", "0", "0"]
    assert data.inter["timestamp"].tolist() == [0, 1, 0]
    assert np.isnan(data.inter["rating"]).all()
    text = data.items.set_index("item_id")
    assert text.loc["0", "title"] == "AT&T Phone"
    assert text.loc["0", "category"] == "A, B"
    assert text.loc["1", "description"] == "Staples."


def test_corrupt_json_names_line(tmp_path):
    path = tmp_path / "Office.inter.json"
    path.write_text('{\n  "0": [1, 2],\n  "1": [3,\n')
    with pytest.raises(DataError, match=r"Office\.inter\.json: corrupt JSON at line 4"):
        load_json_layout(path)


def test_wrong_shape_names_the_user(tmp_path):
    inter, _ = write(tmp_path, {"0": [1], "7": {"item": 2}})
    with pytest.raises(DataError, match=r"user '7' maps to dict; expected a list"):
        load_json_layout(inter)


def test_empty_file_and_no_interactions(tmp_path):
    (tmp_path / "E.inter.json").write_text("")
    with pytest.raises(DataError, match=r"E\.inter\.json is empty"):
        load_json_layout(tmp_path / "E.inter.json")
    inter, _ = write(tmp_path, {"0": []}, name="N")
    with pytest.raises(DataError, match="holds no interactions"):
        load_json_layout(inter)
