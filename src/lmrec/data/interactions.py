"""The one in-memory currency: interactions plus item text, before and after re-indexing.

``Interactions`` holds raw ids (strings) exactly as the source spells them. Preprocessing
(:mod:`lmrec.data.preprocess`) maps ``Interactions -> Interactions`` and finally re-indexes into a
``Dataset`` whose users and items are dense integers ``0..n-1`` with JSON id maps both ways.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lmrec.errors import DataError
from lmrec.utils.io import read_json, write_json

INTER_COLUMNS = ("user_id", "item_id", "timestamp", "rating")
TEXT_COLUMNS = ("title", "genres", "category", "description", "brand")


def _check_columns(df: pd.DataFrame, required: tuple[str, ...], where: str) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(
            f"{where}: missing column(s) {', '.join(missing)}; "
            f"found {', '.join(map(str, df.columns))}"
        )


@dataclass
class Interactions:
    """Raw interactions of one dataset.

    Attributes
    ----------
    name:
        Dataset name, e.g. ``"ml-1m"``.
    inter:
        Columns ``user_id`` (str), ``item_id`` (str), ``timestamp`` (int64; the row order within a
        user when the source has no clock), ``rating`` (float32; NaN when the source has none).
    items:
        Item text, one row per item: ``item_id`` (str), ``title`` (str) and, where the source has
        them, ``genres``, ``category``, ``description``, ``brand``. May hold items with no
        interaction; re-indexing keeps only items that remain in ``inter``.
    clock:
        What orders a user's interactions: ``"timestamp"``, or ``"file order"`` when the source
        has no timestamps (the protocol file then says so).
    """

    name: str
    inter: pd.DataFrame
    items: pd.DataFrame = field(default_factory=lambda: pd.DataFrame({"item_id": [], "title": []}))
    clock: str = "timestamp"

    def __post_init__(self) -> None:
        _check_columns(self.inter, INTER_COLUMNS, f"{self.name} interactions")
        _check_columns(self.items, ("item_id", "title"), f"{self.name} item text")
        self.inter = self.inter.astype(
            {"user_id": str, "item_id": str, "timestamp": "int64", "rating": "float32"}
        )
        self.items = self.items.astype({"item_id": str}).reset_index(drop=True)

    @property
    def n_users(self) -> int:
        return int(self.inter["user_id"].nunique())

    @property
    def n_items(self) -> int:
        return int(self.inter["item_id"].nunique())

    def __len__(self) -> int:
        return len(self.inter)


@dataclass
class IdMap:
    """Raw id <-> dense index. ``raw[i]`` is the raw id of index ``i``."""

    kind: str
    raw: list[str]

    def __post_init__(self) -> None:
        self._index = {r: i for i, r in enumerate(self.raw)}
        if len(self._index) != len(self.raw):
            raise DataError(f"{self.kind} id map has duplicate raw ids")

    def __len__(self) -> int:
        return len(self.raw)

    def index(self, raw_id: str) -> int:
        """Dense index of ``raw_id``; an unknown id raises a clear error."""
        try:
            return self._index[str(raw_id)]
        except KeyError:
            raise DataError(
                f"unknown {self.kind} id {raw_id!r}: not among this dataset's {len(self)} "
                f"{self.kind}s (after filtering)"
            ) from None

    def indices(self, raw_ids) -> np.ndarray:
        return np.array([self.index(r) for r in raw_ids], dtype=np.int64)

    def to_raw(self, idx) -> np.ndarray:
        arr = np.asarray(self.raw, dtype=object)
        return arr[np.asarray(idx, dtype=np.int64)]

    def save(self, path: Path) -> None:
        write_json(path, {"kind": self.kind, "raw": self.raw})

    @classmethod
    def load(cls, path: Path) -> IdMap:
        obj = read_json(path)
        if not isinstance(obj, dict) or "raw" not in obj or "kind" not in obj:
            raise DataError(f"{path}: not an lmrec id map (expected keys 'kind' and 'raw')")
        return cls(obj["kind"], [str(r) for r in obj["raw"]])


@dataclass
class Dataset:
    """A re-indexed dataset: dense integer users and items, ready for the protocol.

    Attributes
    ----------
    inter:
        Columns ``user`` and ``item`` (int64 indices), ``timestamp``, ``rating``; sorted
        chronologically within each user (stable, so ties keep source order).
    item_text:
        One row per item index ``0..n_items-1`` with a ``title`` column (empty string if unknown)
        and the other text columns the source has.
    clock:
        ``"timestamp"`` or ``"file order"`` (see :class:`Interactions`).
    """

    name: str
    users: IdMap
    items: IdMap
    inter: pd.DataFrame
    item_text: pd.DataFrame
    clock: str = "timestamp"

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def titles(self) -> list[str]:
        return self.item_text["title"].fillna("").astype(str).tolist()

    def stats(self) -> dict[str, float | int | str]:
        """Users, items, interactions and sparsity, as in the BDLM paper's Table 1."""
        n = len(self.inter)
        return {
            "dataset": self.name,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": n,
            "sparsity": 1.0 - n / (self.n_users * self.n_items) if n else 1.0,
        }

    def user_histories(self) -> list[np.ndarray]:
        """Item indices of each user in chronological order."""
        order = self.inter["user"].to_numpy()
        items = self.inter["item"].to_numpy()
        bounds = np.searchsorted(order, np.arange(self.n_users + 1))
        return [items[bounds[u] : bounds[u + 1]] for u in range(self.n_users)]

    def save(self, directory: Path) -> None:
        """Write the id maps (JSON), interactions and item text (Parquet)."""
        from lmrec.utils.io import atomic_write

        directory = Path(directory)
        self.users.save(directory / "user_ids.json")
        self.items.save(directory / "item_ids.json")
        atomic_write(directory / "inter.parquet", lambda p: self.inter.to_parquet(p, index=False))
        atomic_write(
            directory / "item_text.parquet", lambda p: self.item_text.to_parquet(p, index=False)
        )
        write_json(
            directory / "dataset.json", {"name": self.name, **self.stats(), "clock": self.clock}
        )

    @classmethod
    def load(cls, directory: Path) -> Dataset:
        directory = Path(directory)
        meta = read_json(directory / "dataset.json")
        try:
            inter = pd.read_parquet(directory / "inter.parquet")
            text = pd.read_parquet(directory / "item_text.parquet")
        except Exception as exc:  # pyarrow raises several types for a corrupt file
            raise DataError(
                f"{directory}: corrupt cached dataset ({exc}); delete the folder to rebuild it"
            ) from exc
        return cls(
            meta["name"],
            IdMap.load(directory / "user_ids.json"),
            IdMap.load(directory / "item_ids.json"),
            inter,
            text,
            meta.get("clock", "timestamp"),
        )
