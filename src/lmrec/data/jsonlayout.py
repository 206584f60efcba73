"""The JSON layout many LLM-recommender repositories publish (LC-Rec, LETTER, APAO, ...).

- ``<name>.inter.json``: ``{user: [item, item, ...]}``, each list in chronological order.
- ``<name>.item.json``: ``{item: {"title", "description", "brand", "categories"}}``.

There are no timestamps or ratings: a user's ``timestamp`` is the item's position in the list
(0, 1, 2, ...) and ``rating`` is NaN. ``categories`` becomes the ``category`` column. HTML
entities in the text (``AT&amp;T``) are unescaped.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lmrec.data.interactions import Interactions
from lmrec.data.readers import require_file
from lmrec.errors import DataError
from lmrec.utils.io import read_json

# item.json key -> Interactions.items column
TEXT_KEYS = {
    "title": "title",
    "description": "description",
    "brand": "brand",
    "categories": "category",
    "category": "category",
    "genres": "genres",
}


def load_json_layout(
    inter_path: Path, item_path: Path | None = None, *, name: str | None = None
) -> Interactions:
    """Load ``<name>.inter.json`` and, optionally, ``<name>.item.json``.

    Parameters
    ----------
    inter_path:
        ``{user: [items in time order]}``.
    item_path:
        ``{item: {title, ...}}`` or ``None`` (titles are then empty).
    name:
        Dataset name; defaults to ``<name>`` from the file name.

    Raises
    ------
    DataError
        Missing, empty or corrupt JSON (named with line and column), or a value of the wrong
        shape (named with the user or item key).
    """
    inter_path = Path(inter_path)
    name = name or inter_path.name.removesuffix(".json").removesuffix(".inter")
    obj = _read(inter_path)
    users: list[str] = []
    items: list[str] = []
    times: list[np.ndarray] = []
    for user, seq in obj.items():
        if not isinstance(seq, list):
            raise DataError(
                f"{inter_path}: user {user!r} maps to {type(seq).__name__}; expected a list of "
                "item ids in time order"
            )
        users.extend([str(user)] * len(seq))
        items.extend(str(i) for i in seq)
        times.append(np.arange(len(seq), dtype=np.int64))
    if not items:
        raise DataError(f"{inter_path} holds no interactions")
    inter = pd.DataFrame(
        {
            "user_id": users,
            "item_id": items,
            "timestamp": np.concatenate(times),
            "rating": np.full(len(items), np.nan, dtype=np.float32),
        }
    )
    if item_path is None:
        return Interactions(name, inter)
    return Interactions(name, inter, _items(Path(item_path)))


def _read(path: Path) -> dict[str, Any]:
    obj = read_json(require_file(path))
    if not isinstance(obj, dict):
        raise DataError(f"{path}: the top level must be a JSON object, got {type(obj).__name__}")
    return obj


def _items(path: Path) -> pd.DataFrame:
    rows = []
    for item, meta in _read(path).items():
        if not isinstance(meta, dict):
            raise DataError(
                f"{path}: item {item!r} maps to {type(meta).__name__}; expected an object "
                "with a 'title'"
            )
        row = {"item_id": str(item), "title": ""}
        for key, column in TEXT_KEYS.items():
            value = meta.get(key)
            if value is None:
                continue
            if isinstance(value, list):
                value = ", ".join(map(str, value))
            row[column] = html.unescape(str(value)).strip()
        rows.append(row)
    return pd.DataFrame(rows, columns=None) if rows else pd.DataFrame({"item_id": [], "title": []})
