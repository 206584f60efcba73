"""Shared fixtures of the LLM tests: a tiny random Llama and a hand-made dataset."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from lmrec.llm.resolve import load_llm
from lmrec.protocol.split import Split


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


@pytest.fixture
def tiny():
    """(model, tokenizer): a fresh 2-layer random Llama on the CPU."""
    return load_llm("tiny-llama", device="cpu")


@pytest.fixture
def split() -> Split:
    """3 users, 8 items. Train histories: u0 [0, 1, 2], u1 [3, 4], u2 [5]."""
    train = pd.DataFrame(
        {
            "user": [0, 0, 0, 1, 1, 2],
            "item": [0, 1, 2, 3, 4, 5],
            "timestamp": [1, 2, 3, 1, 2, 1],
            "rating": np.ones(6, dtype=np.float32),
        }
    )
    valid = pd.DataFrame({"user": [0, 1], "item": [6, 5], "timestamp": [4, 3]})
    test = pd.DataFrame({"user": [0, 1], "item": [7, 6], "timestamp": [5, 4]})
    return Split(train, valid, test, n_users=3, n_items=8)
