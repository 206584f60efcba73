"""A generic interactions table (CSV or Parquet) plus an optional item-text table.

The column names are parameters, so any export works without renaming: e.g.
``load_tabular("ratings.csv", user_col="uid", item_col="movie", time_col="ts")``. The format
follows the extension: ``.parquet``/``.pq`` is Parquet, ``.tsv``/``.tab`` tab-separated,
anything else comma-separated (gzip allowed). Timestamps may be numbers or date strings
(converted to Unix seconds).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lmrec.data.interactions import TEXT_COLUMNS, Interactions
from lmrec.data.readers import Table, read_table, require_file
from lmrec.errors import DataError

PARQUET_SUFFIXES = (".parquet", ".pq")


def read_any(path: Path) -> Table:
    """Read a CSV/TSV/Parquet file into a :class:`~lmrec.data.readers.Table` of strings."""
    path = require_file(Path(path))
    if path.suffix.lower() in PARQUET_SUFFIXES:
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for a corrupt file
            raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
        if len(frame) == 0:
            raise DataError(f"{path} has no rows")
        # Same currency as the CSV path: strings, so ids like "007" keep their zeros.
        frame = frame.astype(str).where(frame.notna(), "")
        return Table(path, frame, "", 1)
    suffixes = [s.lower() for s in path.suffixes]
    sep = "\t" if any(s in (".tsv", ".tab") for s in suffixes) else ","
    return read_table(path, sep, quoted=True)


def load_tabular(
    path: Path,
    items_path: Path | None = None,
    *,
    name: str | None = None,
    user_col: str = "user_id",
    item_col: str = "item_id",
    time_col: str | None = "timestamp",
    rating_col: str | None = "rating",
    title_col: str = "title",
) -> Interactions:
    """Load an interactions table and, optionally, an item-text table.

    Parameters
    ----------
    path:
        Interactions, one row per (user, item) event, with a header.
    items_path:
        Item text with columns ``item_col`` and ``title_col`` and any of ``genres``,
        ``category``, ``description``, ``brand``; or ``None``.
    name:
        Dataset name; defaults to the file's stem.
    user_col, item_col:
        Id columns (required).
    time_col:
        Timestamp column (numbers or dates); ``None`` uses the row order as the clock.
    rating_col:
        Rating column; ``None`` leaves ratings NaN.
    title_col:
        Title column of ``items_path``.

    Raises
    ------
    DataError
        Missing or empty file, a missing column (named, with the columns found and the
        parameter to set), a non-numeric rating or an unparseable time (named by line).
    """
    path = Path(path)
    table = read_any(path)
    n = len(table)
    ids = {"user_id": _ids(table, user_col, "user"), "item_id": _ids(table, item_col, "item")}
    timestamp = _times(table, time_col) if time_col is not None else np.arange(n, dtype=np.int64)
    if rating_col is not None:
        table.column(rating_col, "pass rating_col= to name it, or rating_col=None for none")
        rating = table.numbers(rating_col, required=False)
    else:
        rating = np.full(n, np.nan)
    inter = pd.DataFrame({**ids, "timestamp": timestamp, "rating": rating.astype(np.float32)})
    name = name or path.name.split(".")[0]
    if items_path is None:
        return Interactions(name, inter)
    return Interactions(name, inter, _items(Path(items_path), item_col, title_col))


def _times(table: Table, col: str) -> np.ndarray:
    values = table.column(col, "pass time_col= to name it, or time_col=None to use row order")
    values = values.str.strip()
    numeric = pd.to_numeric(values, errors="coerce")
    # The first value decides: a column of Unix times, or a column of dates.
    if not np.isnan(numeric.iloc[0]):
        parsed, kind = numeric, "a number"
    else:
        parsed, kind = pd.to_datetime(values, errors="coerce", utc=True, format="mixed"), "a date"
    bad = parsed.isna().to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(
            f"{table.path}, {table.where(i)}: column {col!r} holds {values.iloc[i]!r}, not {kind} "
            f"like the first row's {values.iloc[0]!r}"
        )
    if kind == "a number":
        return parsed.to_numpy(np.float64).astype(np.int64)
    seconds = (parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return seconds.to_numpy(np.int64)


def _ids(table: Table, col: str, what: str) -> pd.Series:
    ids = table.column(col, f"pass {what}_col= to name the {what} column").str.strip()
    empty = (ids == "").to_numpy()
    if empty.any():
        i = int(np.argmax(empty))
        raise DataError(f"{table.path}, {table.where(i)}: empty {what} id in column {col!r}")
    return ids


def _items(path: Path, item_col: str, title_col: str) -> pd.DataFrame:
    table = read_any(path)
    out = pd.DataFrame(
        {
            "item_id": _ids(table, item_col, "item").to_numpy(),
            "title": table.column(title_col, "pass title_col= to name the title column")
            .str.strip()
            .to_numpy(),
        }
    )
    for col in TEXT_COLUMNS:
        if col != "title" and col in table.frame.columns:
            out[col] = table.frame[col].str.strip().to_numpy()
    return out
