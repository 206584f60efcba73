"""Leave-one-out split by time: each user's last interaction is test, the second-last validation.

Users with fewer than three interactions keep everything in train (they have nothing to hold
out without leaving train empty) and are absent from validation and test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from lmrec.data.interactions import Dataset


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
