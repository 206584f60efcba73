"""Candidate sets: the saved, shared evaluation items of the two BDLM tasks.

A ``CandidateSet`` is built once per (dataset, preprocessing, split, sampler, seed), saved with
its config and a content hash, and reused by every method, so every number in a table is scored
on the same candidates. The positive sits in column 0; metrics rank ties pessimistically, so a
model that cannot tell candidates apart gains nothing from that position.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

TASKS = ("topk", "interaction")


@dataclass
class CandidateSet:
    """Candidates of one task and stage.

    Attributes
    ----------
    task:
        ``"topk"`` (1 positive + n negatives per user, ranked) or ``"interaction"`` (each
        held-out positive paired with sampled negatives, classified one by one).
    stage:
        ``"valid"`` or ``"test"``.
    users:
        (n_users,) int64 user indices.
    items:
        (n_users, n_candidates) int64 item indices; column 0 is the held-out positive.
    labels:
        (n_users, n_candidates) int8, 1 for the positive.
    meta:
        The config that built it (dataset, preprocessing, split, sampler, seed) and its
        ``content_hash``.
    """

    task: str
    stage: str
    users: np.ndarray
    items: np.ndarray
    labels: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.items.shape != self.labels.shape or self.items.shape[0] != len(self.users):
            raise ValueError(
                f"shape mismatch: users {self.users.shape}, items {self.items.shape}, "
                f"labels {self.labels.shape}"
            )

    @property
    def n_candidates(self) -> int:
        return int(self.items.shape[1])

    def __len__(self) -> int:
        return len(self.users)
