"""The one training loop of every domain model: batches, checkpoints (safetensors + JSON), resume.

- :mod:`lmrec.train.batches`: pairwise / pointwise / sequence batches seeded by (seed, epoch).
- :mod:`lmrec.train.checkpoint`: weights, optimiser state and RNG states without pickle.
- :mod:`lmrec.train.trainer`: :class:`TrainConfig` and :func:`train`.
- :mod:`lmrec.train.run`: :func:`~lmrec.train.run.train_run` / ``evaluate_run`` (the CLI's calls).
"""

from lmrec.train.trainer import TrainConfig, TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train"]
