"""MovieLens loaders for the official GroupLens files.

- ML-100K: ``u.data`` (tab-separated ``user, item, rating, timestamp``) and ``u.item``
  (latin-1, ``|``-separated: id, title, release date, video release date, IMDb URL, then 19 0/1
  genre flags in the order of ``u.genre``).
- ML-1M: ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``) and ``movies.dat``
  (latin-1, ``MovieID::Title::Genres`` with genres separated by ``|``).

Titles keep the year as GroupLens writes it (``"Toy Story (1995)"``); genres are joined with
``", "`` (``"Animation, Children's, Comedy"``), the same form the RecBole atomic loader produces.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lmrec.data.interactions import Interactions
from lmrec.data.readers import iter_lines, read_table
from lmrec.errors import DataError

# The 19 genre flags of u.item, in column order (the content of ML-100K's u.genre).
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip

_RATING_COLUMNS = ["user_id", "item_id", "rating", "timestamp"]


def _ratings(path: Path, sep: str, encoding: str) -> pd.DataFrame:
    table = read_table(path, sep, names=_RATING_COLUMNS, encoding=encoding)
    return pd.DataFrame(
        {
            "user_id": table.column("user_id").str.strip(),
            "item_id": table.column("item_id").str.strip(),
            "timestamp": table.numbers("timestamp").astype(np.int64),
            "rating": table.numbers("rating").astype(np.float32),
        }
    )


def load_ml100k(directory: Path, name: str = "ml-100k") -> Interactions:
    """Load the official ML-100K files ``u.data`` and ``u.item`` from ``directory``.

    Returns
    -------
    Interactions
        100,000 ratings of 943 users on 1,682 items for the full release, with item
        ``title`` and ``genres``.

    Raises
    ------
    DataError
        A file is missing, empty, or has a malformed line (named with its line number).
    """
    directory = Path(directory)
    inter = _ratings(directory / "u.data", "\t", "latin-1")
    path = directory / "u.item"
    rows = []
    for lineno, line in iter_lines(path, encoding="latin-1"):
        parts = line.rstrip("\r\n").split("|")
        if len(parts) != 5 + len(ML100K_GENRES):
            raise DataError(
                f"{path}, line {lineno}: expected {5 + len(ML100K_GENRES)} '|'-separated fields "
                f"(id, title, release date, video release date, URL, 19 genre flags), "
                f"found {len(parts)}"
            )
        flags = parts[5:]
        if any(f not in ("0", "1") for f in flags):
            raise DataError(f"{path}, line {lineno}: genre flags must be 0 or 1, got {flags}")
        genres = ", ".join(g for g, f in zip(ML100K_GENRES, flags, strict=True) if f == "1")
        rows.append((parts[0].strip(), parts[1].strip(), genres))
    items = pd.DataFrame(rows, columns=["item_id", "title", "genres"])
    return Interactions(name, inter, items)


def load_ml1m(directory: Path, name: str = "ml-1m") -> Interactions:
    """Load the official ML-1M files ``ratings.dat`` and ``movies.dat`` from ``directory``.

    Returns
    -------
    Interactions
        1,000,209 ratings of 6,040 users on 3,706 of the 3,883 listed movies for the full
        release, with item ``title`` and ``genres``.

    Raises
    ------
    DataError
        A file is missing, empty, or has a malformed line (named with its line number).
    """
    directory = Path(directory)
    inter = _ratings(directory / "ratings.dat", "::", "latin-1")
    path = directory / "movies.dat"
    rows = []
    for lineno, line in iter_lines(path, encoding="latin-1"):
        parts = line.rstrip("\r\n").split("::")
        if len(parts) < 3:
            raise DataError(
                f"{path}, line {lineno}: expected 'MovieID::Title::Genres', found {line.strip()!r}"
            )
        # A title could in principle contain '::'; id and genres are the first and last fields.
        title = "::".join(parts[1:-1]).strip()
        genres = ", ".join(g for g in parts[-1].strip().split("|") if g)
        rows.append((parts[0].strip(), title, genres))
    items = pd.DataFrame(rows, columns=["item_id", "title", "genres"])
    return Interactions(name, inter, items)
