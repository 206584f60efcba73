"""A generic interactions table (CSV or Parquet) plus an optional item-text table.

The column names are parameters, so any export works without renaming: e.g.
``load_tabular("ratings.csv", user_col="uid", item_col="movie", time_col="ts")``. Parquet is
read by its extension (``.parquet``/``.pq``); a text file's separator is detected from its
header and first lines (comma, tab, semicolon, pipe, or ``::`` as in the MovieLens ``.dat``
files), whatever its extension, and ``sep=`` forces one. gzip is allowed. Timestamps may be
numbers or date strings (converted to Unix seconds). The item file names its id column on its
own (``item_key``, default the interactions' item column), and any of its columns can fill
lmrec's text fields (``item_fields={"description": "overview", ...}``).
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from lmrec.data.interactions import TEXT_COLUMNS, Interactions
from lmrec.data.readers import Table, read_table, require_file
from lmrec.errors import DataError

PARQUET_SUFFIXES = (".parquet", ".pq")
# Candidate separators, longest first ("::" would otherwise look like two ":" fields).
SEPARATORS = {"::": "::", "tab": "\t", "semicolon": ";", "pipe": "|", "comma": ","}
_SNIFF_LINES = 20


def _first_lines(path: Path) -> list[str]:
    """The first non-blank lines, from the first 64 KiB only (gzip allowed)."""
    import gzip

    from lmrec.data.readers import read_bytes

    with require_file(path).open("rb") as fh:
        gzipped = fh.read(2) == b"\x1f\x8b"
    try:
        with gzip.open(path, "rb") if gzipped else path.open("rb") as fh:
            head = fh.read(1 << 16)
    except (EOFError, OSError):  # a corrupt gzip: read_bytes says what is wrong
        head = read_bytes(path)[: 1 << 16]
    text = head.decode("utf-8", errors="replace")
    return [line for line in text.splitlines() if line.strip()][:_SNIFF_LINES]


def _n_fields(line: str, sep: str) -> int:
    """Fields of one line; a one-character separator inside double quotes does not count."""
    if len(sep) > 1:
        return line.count(sep) + 1
    return len(next(csv.reader([line], delimiter=sep)))


def detect_separator(path: Path) -> str:
    """The separator that splits the header into 2+ fields and every first line into as many.

    Raises :class:`DataError` naming the separators tried and the ``sep=`` option.
    """
    lines = _first_lines(path)
    if len(lines) < 1:
        raise DataError(f"{path} is empty; download or export it again")
    body = lines[1:-1] if len(lines) > 2 else lines[1:]  # the last line may be cut short
    for sep in SEPARATORS.values():
        fields = _n_fields(lines[0], sep)
        if fields >= 2 and all(_n_fields(line, sep) == fields for line in body):
            return sep
    tried = ", ".join(repr(s) for s in SEPARATORS.values())
    raise DataError(
        f"{path}: could not tell the separator from the header {lines[0][:80]!r} (tried {tried}, "
        "each must split the header into 2+ columns and every line into as many); pass sep= "
        f"({', '.join(SEPARATORS)}, or the character itself)"
    )


def _separator(path: Path, sep: str | None) -> str:
    if sep is None:
        return detect_separator(path)
    return SEPARATORS.get(sep, sep)


def read_any(path: Path, sep: str | None = None) -> Table:
    """Read a CSV/TSV/Parquet file into a :class:`~lmrec.data.readers.Table` of strings.

    ``sep``: the text separator (a name of :data:`SEPARATORS` or the string itself); None
    detects it.
    """
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
    sep = _separator(path, sep)
    try:
        table = read_table(path, sep, quoted=len(sep) == 1)
    except DataError as exc:
        raise DataError(
            f"{exc} (read with separator {sep!r}; pass sep= to choose another)"
        ) from None
    header = list(table.frame.columns)
    others = [s for s in SEPARATORS.values() if s != sep and len(header) == 1 and s in header[0]]
    if others:
        raise DataError(
            f"{path}: read with separator {sep!r}, the header is one column {header[0][:60]!r}, "
            f"which looks {others[0]!r}-separated; pass sep= to choose another"
        )
    return table


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
    item_key: str | None = None,
    item_fields: dict[str, str] | None = None,
    sep: str | None = None,
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
    item_key:
        Id column of ``items_path``; default ``item_col``.
    item_fields:
        lmrec text field -> column of ``items_path`` (``genres``, ``category``, ``description``,
        ``brand``); columns already named like a field are read without it.
    sep:
        Separator of both text files (see :func:`read_any`); None detects each file's own.

    Raises
    ------
    DataError
        Missing or empty file, a missing column (named, with the columns found and the
        parameter to set), a non-numeric rating or an unparseable time (named by line).
    """
    path = Path(path)
    table = read_any(path, sep)
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
    clock = "timestamp"
    if time_col is None:
        clock = "file order"
        warnings.warn(
            f"{path}: no timestamps (time_col=None): each user's interactions are ordered as "
            "the file lists them, and leave-one-out holds out each user's last rows in the file",
            stacklevel=2,
        )
    if items_path is None:
        return Interactions(name, inter, clock=clock)
    key = item_key or item_col
    return Interactions(
        name, inter, _items(Path(items_path), key, title_col, item_fields or {}, sep), clock
    )


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


def _items(
    path: Path, item_key: str, title_col: str, fields: dict[str, str], sep: str | None
) -> pd.DataFrame:
    table = read_any(path, sep)
    unknown = sorted(set(fields) - set(TEXT_COLUMNS) | ({"title"} & set(fields)))
    if unknown:
        raise DataError(
            f"{path}: item_fields names {unknown}; lmrec's item text fields are "
            f"{', '.join(c for c in TEXT_COLUMNS if c != 'title')} (the title is title_col=)"
        )
    out = pd.DataFrame(
        {
            "item_id": table.column(item_key, "pass item_key= to name the item file's id column")
            .str.strip()
            .to_numpy(),
            "title": table.column(title_col, "pass title_col= to name the title column")
            .str.strip()
            .to_numpy(),
        }
    )
    for field in TEXT_COLUMNS[1:]:
        col = fields.get(field, field)
        if field in fields or col in table.frame.columns:
            out[field] = table.column(col, f"item_fields: {field} -> {col}").str.strip().to_numpy()
    return out
