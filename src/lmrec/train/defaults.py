"""Each domain model's own training settings: what ``lmrec train MODEL`` uses without a config.

One :class:`~lmrec.train.trainer.TrainConfig` default cannot suit every model: LightGCN
propagates over the whole graph at every step and wants large batches and a high rate, the
sequence models small batches. These are the settings of ``configs/baselines.yaml`` (tuned on
ML-100K / ML-1M validation, early stopping on validation NDCG@10), so a model trained with no
config is the baseline the tables compare against, not a weakened one. Keys a config gives win
over these.
"""

from __future__ import annotations

from typing import Any

TRAIN_DEFAULTS: dict[str, dict[str, Any]] = {
    "mf": {"epochs": 60, "batch_size": 4096, "lr": 0.005, "patience": 5},
    "gmf": {"epochs": 30, "batch_size": 4096, "lr": 0.01, "patience": 3},
    # NeuMF scores every (user, item) pair through its MLP: validate on the candidate sets
    "neumf": {
        "epochs": 20,
        "batch_size": 4096,
        "lr": 0.005,
        "patience": 3,
        "valid_metric": "topk/NDCG@20",
    },
    "lightgcn": {"epochs": 60, "batch_size": 2048, "lr": 0.01, "patience": 8},
    "sasrec": {"epochs": 60, "batch_size": 128, "lr": 0.001, "max_len": 200, "patience": 5},
    "gru4rec": {"epochs": 40, "batch_size": 128, "lr": 0.003, "max_len": 50, "patience": 5},
    "bert4rec": {"epochs": 60, "batch_size": 128, "lr": 0.002, "max_len": 200, "patience": 10},
}


def train_defaults(model: str, given: dict[str, Any] | None) -> dict[str, Any]:
    """``model``'s defaults with the keys of ``given`` on top."""
    return {**TRAIN_DEFAULTS.get(model, {}), **(given or {})}


__all__ = ["TRAIN_DEFAULTS", "train_defaults"]
