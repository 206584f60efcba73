"""Amazon review data in the official 2014 and 2018 releases (J. McAuley's group, UCSD).

- 2014: ``reviews_<Category>_5.json.gz`` (one JSON object per line) and
  ``meta_<Category>.json.gz`` (one **Python literal** dict per line, parsed only with
  :func:`ast.literal_eval`, never ``eval``).
- 2018: ``<Category>_5.json.gz`` and ``meta_<Category>.json.gz``, both strict JSON lines.

Interactions come from ``reviewerID`` (user), ``asin`` (item), ``overall`` (rating) and
``unixReviewTime`` (timestamp). Item text keeps ``title``, ``brand``, ``category`` (one category
path joined with ``", "``) and ``description``; HTML entities (``AT&amp;T``) are unescaped.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lmrec.data.interactions import Interactions
from lmrec.data.readers import (
    iter_lines,
    parse_json_line,
    parse_json_or_literal_line,
    parse_literal_line,
)
from lmrec.errors import DataError

Parser = Callable[[Path, int, str], Any]
REVIEW_FIELDS = ("reviewerID", "asin", "overall", "unixReviewTime")
# Finds a metadata line's asin without parsing the line, so lines of items nobody reviewed
# (most of a full category's metadata) are skipped cheaply.
_ASIN = re.compile(r"""["']asin["']\s*:\s*["']([^"']+)["']""")


def load_amazon2014(
    reviews_path: Path, meta_path: Path | None = None, *, name: str | None = None
) -> Interactions:
    """Load a 2014 Amazon category: 5-core reviews plus (optional) Python-literal metadata.

    Parameters
    ----------
    reviews_path:
        ``reviews_<Category>_5.json.gz``. Lines are JSON; a Python-literal line is accepted too,
        as some 2014 dumps use that form.
    meta_path:
        ``meta_<Category>.json.gz`` or ``None`` (titles are then empty).
    name:
        Dataset name; defaults to ``amazon2014:<Category>``.

    Raises
    ------
    DataError
        Truncated gzip, a corrupt or non-literal line, a review missing a field, an empty file:
        the message names the file and line.
    """
    reviews_path = Path(reviews_path)
    name = name or f"amazon2014:{_category(reviews_path.name, 'reviews_', '_5')}"
    inter = _reviews(reviews_path, parse_json_or_literal_line)
    items = _meta(Path(meta_path), parse_literal_line, set(inter["item_id"])) if meta_path else None
    return Interactions(name, inter, items) if items is not None else Interactions(name, inter)


def load_amazon2018(
    reviews_path: Path, meta_path: Path | None = None, *, name: str | None = None
) -> Interactions:
    """Load a 2018 Amazon category: ``<Category>_5.json.gz`` plus (optional) metadata.

    Both files are strict JSON lines. The 2018 5-core files repeat some reviews verbatim;
    the default preprocessing (deduplication) removes those repeats.

    Raises
    ------
    DataError
        Truncated gzip, a corrupt JSON line, a review missing a field, an empty file: the
        message names the file and line.
    """
    reviews_path = Path(reviews_path)
    name = name or f"amazon2018:{_category(reviews_path.name, '', '_5')}"
    inter = _reviews(reviews_path, parse_json_line)
    items = _meta(Path(meta_path), parse_json_line, set(inter["item_id"])) if meta_path else None
    return Interactions(name, inter, items) if items is not None else Interactions(name, inter)


def _category(filename: str, prefix: str, suffix: str) -> str:
    stem = filename.split(".json")[0]
    stem = stem.removeprefix(prefix)
    return stem.removesuffix(suffix)


def _record(path: Path, lineno: int, obj: Any) -> dict:
    if not isinstance(obj, dict):
        raise DataError(
            f"{path}, line {lineno}: expected one object per line, got {type(obj).__name__}"
        )
    return obj


def _reviews(path: Path, parse: Parser) -> pd.DataFrame:
    users, items, ratings, times = [], [], [], []
    for lineno, line in iter_lines(path):
        rec = _record(path, lineno, parse(path, lineno, line))
        missing = [f for f in REVIEW_FIELDS if f not in rec]
        if missing:
            raise DataError(
                f"{path}, line {lineno}: review lacks field(s) {', '.join(missing)}; an Amazon "
                f"review has {', '.join(REVIEW_FIELDS)}"
            )
        try:
            ratings.append(float(rec["overall"]))
            times.append(int(rec["unixReviewTime"]))
        except (TypeError, ValueError):
            raise DataError(
                f"{path}, line {lineno}: 'overall' and 'unixReviewTime' must be numbers, got "
                f"{rec['overall']!r} and {rec['unixReviewTime']!r}"
            ) from None
        users.append(str(rec["reviewerID"]))
        items.append(str(rec["asin"]))
    return pd.DataFrame(
        {
            "user_id": users,
            "item_id": items,
            "timestamp": np.asarray(times, dtype=np.int64),
            "rating": np.asarray(ratings, dtype=np.float32),
        }
    )


def _meta(path: Path, parse: Parser, wanted: set[str]) -> pd.DataFrame:
    rows: dict[str, dict[str, str]] = {}
    for lineno, line in iter_lines(path):
        m = _ASIN.search(line)
        if m is not None and m.group(1) not in wanted:
            continue
        rec = _record(path, lineno, parse(path, lineno, line))
        if "asin" not in rec:
            raise DataError(f"{path}, line {lineno}: metadata lacks field 'asin'")
        asin = str(rec["asin"])
        # The 2018 metadata lists some items twice; keep the first.
        if asin in wanted and asin not in rows:
            rows[asin] = _text(rec)
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "item_id"
    frame = frame.reset_index()
    if "title" not in frame:
        frame["title"] = ""
    return frame


def _text(rec: dict) -> dict[str, str]:
    category = rec.get("categories") or rec.get("category") or []
    # 2014: a list of category paths (lists); 2018: one path (list of strings).
    if category and isinstance(category[0], list | tuple):
        category = category[0]
    description = rec.get("description") or ""
    if isinstance(description, list | tuple):
        description = " ".join(map(str, description))
    return {
        "title": _clean(rec.get("title")),
        "brand": _clean(rec.get("brand")),
        "category": ", ".join(_clean(c) for c in category),
        "description": _clean(description),
    }


def _clean(value: Any) -> str:
    return html.unescape(str(value)).strip() if value is not None else ""
