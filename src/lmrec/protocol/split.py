"""Leave-one-out split by time: each user's last interaction is test, the second-last validation.

Users with fewer than three interactions keep everything in train (they have nothing to hold
out without leaving train empty) and are absent from validation and test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from lmrec.data.interactions import Dataset
from lmrec.errors import DataError


@dataclass
class Split:
    """Train interactions plus one held-out (user, item) per user for validation and test.

    ``train`` keeps the ``Dataset.inter`` columns and chronological order. ``valid`` and
    ``test`` have columns ``user``, ``item``, ``timestamp``, one row per evaluated user,
    sorted by user.
    """

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    n_users: int
    n_items: int

    def stage(self, name: str) -> pd.DataFrame:
        if name not in ("valid", "test"):
            raise ValueError(f"stage must be 'valid' or 'test', got {name!r}")
        return self.valid if name == "valid" else self.test

    def history_before(self, stage: str) -> pd.DataFrame:
        """Interactions a model may see when predicting ``stage``: train (+ valid for test)."""
        if stage == "test":
            return pd.concat([self.train, self.valid], ignore_index=True).sort_values(
                ["user", "timestamp"], kind="stable"
            )
        return self.train


STAGE_COLUMN = "stage"  # Dataset.inter column of sources that ship their own split


def split_dataset(data: Dataset) -> Split:
    """The source's own split when it ships one (a ``stage`` column), else leave-one-out."""
    if STAGE_COLUMN in data.inter.columns:
        return given_split(data)
    return leave_one_out(data)


def given_split(data: Dataset) -> Split:
    """The split a source ships (RecBole benchmark files): rows tagged train, valid or test.

    lmrec's candidate sets hold one held-out item per user and stage, so a user may have at most
    one validation and one test row (the leave-one-out benchmark files have exactly that).
    """
    inter = data.inter
    stage = inter[STAGE_COLUMN].to_numpy()
    bad = sorted(set(stage) - {"train", "valid", "test"})
    if bad:
        raise DataError(f"{data.name}: unknown stage value(s) {bad}; expected train, valid, test")
    cols = ["user", "item", "timestamp"]
    parts = {}
    for name in ("valid", "test"):
        rows = inter[stage == name]
        dup = rows["user"].duplicated()
        if dup.any():
            index = int(rows["user"][dup].iloc[0])
            count = int((rows["user"] == index).sum())
            raise DataError(
                f"{data.name}: user {data.users.raw[index]!r} has {count} {name} rows; lmrec's "
                "protocol holds out one item per user and stage (a leave-one-out split)"
            )
        parts[name] = rows[cols].sort_values("user", kind="stable").reset_index(drop=True)
    train = inter[stage == "train"].drop(columns=[STAGE_COLUMN]).reset_index(drop=True)
    return Split(train, parts["valid"], parts["test"], data.n_users, data.n_items)


def leave_one_out(data: Dataset) -> Split:
    """Split ``data`` by time; ``data.inter`` must be sorted by (user, timestamp)."""
    inter = data.inter
    users = inter["user"].to_numpy()
    # position of each row from the end of its user's history: 0 = last
    counts = np.bincount(users, minlength=data.n_users)
    ends = np.cumsum(counts)
    from_end = ends[users] - 1 - np.arange(len(inter))
    eligible = counts[users] >= 3
    test_mask = eligible & (from_end == 0)
    valid_mask = eligible & (from_end == 1)
    cols = ["user", "item", "timestamp"]
    return Split(
        train=inter[~(test_mask | valid_mask)].reset_index(drop=True),
        valid=inter.loc[valid_mask, cols].reset_index(drop=True),
        test=inter.loc[test_mask, cols].reset_index(drop=True),
        n_users=data.n_users,
        n_items=data.n_items,
    )
