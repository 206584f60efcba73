"""Preprocessing as pure functions: each takes ``Interactions`` and returns a new one.

The usual chain (:func:`preprocess`) is: deduplicate -> implicit feedback (rating threshold) ->
k-core filtering -> chronological order -> re-index into a :class:`~lmrec.data.Dataset`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from lmrec.data.interactions import TEXT_COLUMNS, Dataset, IdMap, Interactions
from lmrec.errors import ConfigError, DataError


@dataclass
class PreprocessConfig:
    """How raw interactions become a dataset.

    Attributes
    ----------
    rating_threshold:
        Keep interactions with ``rating >= rating_threshold`` (implicit feedback). ``None``
        keeps all; rows with no rating (NaN) are always kept.
    user_core, item_core:
        k-core: repeat until every user has at least ``user_core`` and every item at least
        ``item_core`` interactions. 0 or 1 disables.
    dedup:
        Keep only the first (earliest) interaction of each (user, item) pair.
    top_share:
        Implicit feedback from weights or counts (listens, clicks) in the rating column: keep
        each user's ``top_share`` of interactions with the largest weights (at least one;
        ties broken by file order). ``None`` keeps all. Applied after ``rating_threshold``.
    """

    rating_threshold: float | None = None
    user_core: int = 0
    item_core: int = 0
    dedup: bool = True
    top_share: float | None = None

    def __post_init__(self) -> None:
        if self.top_share is not None and (
            isinstance(self.top_share, bool)
            or not isinstance(self.top_share, int | float)
            or not 0 < self.top_share <= 1
        ):
            raise ConfigError(f"preprocess.top_share must be in (0, 1], got {self.top_share!r}")
        for name in ("user_core", "item_core"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                raise ConfigError(f"preprocess.{name} must be an integer >= 0, got {v!r}")


def _replace(data: Interactions, inter: pd.DataFrame) -> Interactions:
    return Interactions(data.name, inter.reset_index(drop=True), data.items, data.clock)


def chronological(data: Interactions) -> Interactions:
    """Sort by user, then time; a stable sort keeps the source order of equal timestamps."""
    inter = data.inter.sort_values(["user_id", "timestamp"], kind="stable")
    return _replace(data, inter)


def deduplicate(data: Interactions) -> Interactions:
    """Keep the earliest interaction of every (user, item) pair."""
    inter = data.inter.sort_values("timestamp", kind="stable")
    inter = inter.drop_duplicates(["user_id", "item_id"], keep="first").sort_index()
    return _replace(data, inter)


def threshold(data: Interactions, min_rating: float | None) -> Interactions:
    """Implicit feedback: keep ratings ``>= min_rating`` (and rows without a rating)."""
    if min_rating is None:
        return data
    r = data.inter["rating"]
    return _replace(data, data.inter[r.isna() | (r >= min_rating)])


def top_share(data: Interactions, share: float | None) -> Interactions:
    """Keep each user's ``share`` of interactions with the largest rating (weight), >= 1 each."""
    if share is None:
        return data
    inter = data.inter
    if inter["rating"].isna().all():
        raise DataError(
            f"{data.name}: preprocess.top_share ranks interactions by their rating (weight) "
            "column, and this source has none; name it with rating_col="
        )
    order = inter.assign(_w=inter["rating"].fillna(-np.inf), _pos=np.arange(len(inter)))
    order = order.sort_values(["user_id", "_w", "_pos"], ascending=[True, False, True])
    rank = order.groupby("user_id").cumcount().to_numpy()
    size = order.groupby("user_id")["user_id"].transform("size").to_numpy()
    keep = rank < np.maximum(1, np.ceil(share * size))
    kept = order[keep].sort_values("_pos").drop(columns=["_w", "_pos"])
    return _replace(data, kept)


def k_core(data: Interactions, user_core: int, item_core: int) -> Interactions:
    """Iteratively drop users with < ``user_core`` and items with < ``item_core`` interactions."""
    inter = data.inter
    while True:
        n = len(inter)
        if item_core > 1:
            counts = inter["item_id"].map(inter["item_id"].value_counts())
            inter = inter[counts >= item_core]
        if user_core > 1:
            counts = inter["user_id"].map(inter["user_id"].value_counts())
            inter = inter[counts >= user_core]
        if len(inter) == n:
            break
    return _replace(data, inter)


def reindex(data: Interactions) -> Dataset:
    """Map raw ids to dense indices (users and items in order of first appearance after sorting).

    Users are numbered in sorted raw-id order and items in order of first interaction, so the
    result is deterministic for a given input.
    """
    if len(data.inter) == 0:
        raise DataError(f"{data.name}: no interactions left after preprocessing; relax the filters")
    inter = data.inter.sort_values(["user_id", "timestamp"], kind="stable")
    user_raw = sorted(inter["user_id"].unique(), key=_natural_key)
    item_raw = sorted(inter["item_id"].unique(), key=_natural_key)
    users, items = IdMap("user", list(user_raw)), IdMap("item", list(item_raw))
    u = pd.Series(np.arange(len(user_raw)), index=user_raw)
    i = pd.Series(np.arange(len(item_raw)), index=item_raw)
    out = pd.DataFrame(
        {
            "user": u.loc[inter["user_id"].to_numpy()].to_numpy(np.int64),
            "item": i.loc[inter["item_id"].to_numpy()].to_numpy(np.int64),
            "timestamp": inter["timestamp"].to_numpy(np.int64),
            "rating": inter["rating"].to_numpy(np.float32),
        }
    )
    if "stage" in inter.columns:  # a source's own train / valid / test split
        out["stage"] = inter["stage"].to_numpy()
    out = out.sort_values(["user", "timestamp"], kind="stable").reset_index(drop=True)
    text = data.items.drop_duplicates("item_id").set_index("item_id")
    cols = [c for c in TEXT_COLUMNS if c in text.columns]
    text = text.reindex(item_raw)[cols].reset_index(drop=True)
    text["title"] = text["title"].astype("string").fillna("").astype(str)
    return Dataset(data.name, users, items, out, text, data.clock)


def _natural_key(raw: str) -> tuple[int, int | str]:
    # Numeric ids sort numerically ("2" before "10"), others lexically after them.
    return (0, int(raw)) if raw.isdigit() else (1, raw)


def preprocess(data: Interactions, cfg: PreprocessConfig | None = None) -> Dataset:
    """The standard chain: dedup -> threshold -> k-core -> chronological -> re-index."""
    cfg = cfg or PreprocessConfig()
    if cfg.dedup:
        data = deduplicate(data)
    data = threshold(data, cfg.rating_threshold)
    data = top_share(data, cfg.top_share)
    data = k_core(data, cfg.user_core, cfg.item_core)
    return reindex(chronological(data))
