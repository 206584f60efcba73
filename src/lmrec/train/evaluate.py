"""Evaluation of a domain model: test metrics on the candidate sets and full ranking (through the
one evaluator, :mod:`lmrec.eval.evaluator`), and the validation function early stopping reads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmrec.errors import ConfigError
from lmrec.eval.metrics import TOPK_CUTOFFS
from lmrec.models.base import Recommender
from lmrec.protocol.split import Split
from lmrec.train.batches import Histories
from lmrec.train.trainer import (
    TrainConfig,
    history_len,
)

FULL_K = 10


def evaluate_model(
    model: Recommender,
    split: Split,
    sets: Mapping[tuple[str, str], Any],
    *,
    max_len: int | None = None,
    batch_size: int = 1024,
    progress: bool = True,
    ranks_to: Path | None = None,
) -> dict[str, float]:
    """Test metrics of ``model`` on the candidate sets and on full ranking.

    ``ranks_to``: also write each test user's top-K rank there
    (:func:`lmrec.eval.significance.write_ranks`), for intervals and paired tests.

    Each stage is scored with the last ``max_len`` items the model may see then (train for
    validation, train + valid for test); ``max_len=None`` passes no history.

    Top-K: HR@1/2/5/10, NDCG@k and NDCG@C over all C candidates, MRR. Interaction:
    precision/recall/F1 at the threshold that maximises F1 on the validation set, AUC (pooled)
    and UAUC. Full ranking: HR@10, NDCG@10, Recall@10 with seen items masked.
    """
    from lmrec.eval.evaluator import evaluate_candidate_sets, full_ranking_metrics

    device = _device_of(model)
    scorers = {s: _Scorer(model, _histories(split, s, max_len), device) for s in ("valid", "test")}
    model.eval()
    with torch.no_grad():
        # scored stage by stage: sequence models read the history before the row's stage
        out = evaluate_candidate_sets(
            lambda stage, task: scorers[stage].candidates,
            sets,
            batch_size=batch_size,
            progress=progress,
            ranks_to=ranks_to,
        )
        full = full_ranking_metrics(
            scorers["test"].full, split, "test", FULL_K, batch_size=256, progress=progress
        )
        out.update({f"full/{k}": v for k, v in full.items()})
    return out


class _Scorer:
    """Score callables for the evaluator: numpy in, numpy out, histories of one stage."""

    def __init__(
        self, model: Recommender, histories: Histories | None, device: torch.device
    ) -> None:
        self.model = model
        self.histories = histories
        self.device = device

    def _inputs(self, users: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        u = torch.tensor(users, dtype=torch.int64, device=self.device)
        if self.histories is None:
            return u, None
        return u, self.histories.tensor(users).to(self.device)

    def candidates(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        u, hist = self._inputs(users)
        it = torch.tensor(items, dtype=torch.int64, device=self.device)
        return self.model.score(u, it, hist).float().cpu().numpy()

    def full(self, users: np.ndarray) -> np.ndarray:
        u, hist = self._inputs(users)
        return self.model.full_scores(u, hist).float().cpu().numpy()


def make_valid_fn(
    split: Split, sets: Mapping[tuple[str, str], Any], cfg: TrainConfig, device: torch.device
) -> Callable[[Recommender], dict[str, float]]:
    """The validation metrics early stopping reads, chosen by ``cfg.valid_metric``'s prefix.

    ``full/...``: full ranking on the validation stage (cutoff from the name, default 10).
    ``topk/...``: the validation top-K candidate set. ``interaction/...``: the validation
    interaction set (AUC is the meaningful one; F1 uses a threshold chosen on the same set).
    """
    from lmrec.eval.evaluator import (
        choose_threshold,
        full_ranking_metrics,
        interaction_metrics,
        score_candidates,
        topk_metrics,
    )

    family, _, name = cfg.valid_metric.partition("/")
    if family not in ("full", "topk", "interaction") or not name:
        raise ConfigError(
            f"train.valid_metric {cfg.valid_metric!r} must look like 'full/NDCG@10', "
            "'topk/HR@1' or 'interaction/AUC'"
        )
    if family != "full" and (family, "valid") not in sets:
        raise ConfigError(
            f"train.valid_metric {cfg.valid_metric!r} needs the ({family!r}, 'valid') "
            "candidate set, which this run does not have"
        )
    k = _cutoff(name, FULL_K)

    histories: list[Histories | None] = []  # built on the first call, read every epoch

    def valid_fn(model: Recommender) -> dict[str, float]:
        if not histories:
            histories.append(_histories(split, "valid", history_len(model, cfg)))
        scorer = _Scorer(model, histories[0], device)
        progress = False  # the epoch's own bar is enough
        if family == "full":
            m = full_ranking_metrics(scorer.full, split, "valid", k, progress=progress)
        else:
            cands = sets[(family, "valid")]
            scores = score_candidates(scorer.candidates, cands, progress=progress)
            if family == "topk":
                m = topk_metrics(scores, cands.labels, sorted({*TOPK_CUTOFFS, k}))
            else:
                m = interaction_metrics(
                    scores, cands.labels, choose_threshold(scores, cands.labels)
                )
        return {f"{family}/{key}": value for key, value in m.items()}

    return valid_fn


def _histories(split: Split, stage: str, max_len: int | None) -> Histories | None:
    return None if max_len is None else Histories(split, stage, max_len)


def _cutoff(name: str, default: int) -> int:
    _, at, k = name.partition("@")
    if not at:
        return default
    if not k.isdigit() or int(k) < 1:
        raise ConfigError(f"train.valid_metric: bad cutoff in {name!r}; write e.g. NDCG@10")
    return int(k)


def _device_of(model: Recommender) -> torch.device:
    for t in model.state_dict().values():
        return t.device
    return torch.device("cpu")
