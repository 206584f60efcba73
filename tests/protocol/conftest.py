"""Tiny datasets for the protocol tests, built through the real preprocessing."""

import numpy as np
import pandas as pd
import pytest

from lmrec.data.interactions import Interactions
from lmrec.data.preprocess import reindex

TITLES = [
    "Toy Story (1995)",
    "Toy Story 2 (1999)",
    "Heat (1995)",
    "American President, The (1995)",
    "Casino (1995)",
    "Sabrina (1995)",
    "GoldenEye (1995)",
    "Babe (1995)",
    "Balto (1995)",
    "Jumanji (1995)",
]


def _make_dataset(rows, name="toy", titles=None):
    """``rows``: (user_id, item_id, timestamp); titles default to the item ids."""
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).assign(rating=5.0)
    ids = sorted(df["item_id"].unique())
    items = pd.DataFrame({"item_id": ids, "title": [(titles or {}).get(i, i) for i in ids]})
    return reindex(Interactions(name, df, items))


@pytest.fixture
def movies():
    """5 users x 10 items; item ids are ML-1M style titles (one with a comma)."""
    rows = []
    histories = {
        "1m_1": [0, 2, 4, 6, 8],
        "1m_2": [1, 3, 5, 7],
        "1m_3": [0, 1, 2, 3, 4, 5],
        "1m_4": [9, 8, 7],
        "1m_5": [2, 9],  # too short: train only
    }
    for user, items in histories.items():
        rows += [(user, TITLES[i], t) for t, i in enumerate(items)]
    return _make_dataset(rows, "movies", {t: t for t in TITLES})


def _random_dataset(seed, n_users=30, n_items=40, max_items=35):
    """Random histories of 3..``max_items`` items, some users heavy (most of the catalogue)."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        k = int(rng.integers(3, max_items + 1))
        for t, i in enumerate(rng.choice(n_items, size=k, replace=False)):
            rows.append((f"u{u}", f"i{i}", t))
    return _make_dataset(rows, f"random{seed}")


@pytest.fixture
def titles():
    return list(TITLES)


@pytest.fixture
def make_dataset():
    """``make_dataset(rows, name, titles)`` with rows of (user_id, item_id, timestamp)."""
    return _make_dataset


@pytest.fixture
def random_dataset():
    """``random_dataset(seed)``: 30 users x 40 items, random histories."""
    return _random_dataset
