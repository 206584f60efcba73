"""Inference: BDLM-llm (the LLM side alone) and BDLM-drs (the cascade), on the saved candidates.

- **BDLM-llm** is scored by the LLM side's own scorer (:func:`lmrec.llm.run.evaluate_llm`):
  top-K from the candidates' item-token log-probabilities after the top-K prompt, interaction
  prediction from log P(Yes) - log P(No).
- **BDLM-drs** scores each (user, candidate) pair with the cascade (eq. 5) on the h_LLM of that
  pair's own interaction prompt, the prompt the cascade was trained on: the 20 top-K
  candidates of a user are 20 interaction prompts that differ only in their last tokens, and
  :class:`~lmrec.bdlm.features.FeatureCache` runs their shared beginning once, which makes the
  per-candidate prompt affordable (about 4 prompts' worth of tokens per user instead of 20).
  A user-level prompt feature was the alternative; with a linear head it adds the same number
  to every candidate of a user and cannot change a ranking.

Both use the same rows of the same candidate sets (the first ``limit`` users of each set when
``limit`` > 0, as ``evaluate_llm``'s ``eval_limit``), the same metric keys as every other
method (``topk/HR@1`` ... ``interaction/F1``), and the interaction threshold chosen on the
validation set. :func:`evaluate_domain` also scores the domain model alone on those rows, so
"BDLM-drs vs its own domain model" is compared on identical users.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch

from lmrec.bdlm.cascade import Cascade
from lmrec.bdlm.features import FeatureCache
from lmrec.eval.evaluator import evaluate_candidate_sets
from lmrec.llm.prompts import PromptBuilder, histories
from lmrec.models.base import Recommender

ScoreFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


class CascadeScorer:
    """``score_fn`` of BDLM-drs for one stage: cascade logits on per-pair prompt features."""

    def __init__(
        self,
        cascade: Cascade,
        llm,
        tokenizer,
        builder: PromptBuilder,
        history: list[np.ndarray],
        cache: FeatureCache,
        llm_scores: ScoreTable | None = None,
    ) -> None:
        self.cascade, self.llm, self.tok = cascade, llm, tokenizer
        self.builder, self.history, self.cache = builder, history, cache
        self.llm_scores = llm_scores

    def prompts(self, users: np.ndarray, items: np.ndarray) -> list[str]:
        """Interaction prompt of every (user, candidate), candidates of a user consecutive."""
        return [
            self.builder.prompt("interaction", int(u), self.history[int(u)], target=int(j)).text
            for u, row in zip(users, items, strict=True)
            for j in row
        ]

    @torch.no_grad()
    def tensors(self, users: np.ndarray, items: np.ndarray):
        """(users (B, 1), items (B, C), h_LLM (B, C, d) or None) on the cascade's device."""
        device = next(self.cascade.parameters()).device
        h = None
        if self.cascade.h_dim:
            h = self.cache.features(self.llm, self.tok, self.prompts(users, items))
            h = h.view(*np.shape(items), -1).to(device)
        u = torch.as_tensor(np.asarray(users), dtype=torch.long, device=device).unsqueeze(1)
        it = torch.as_tensor(np.asarray(items), dtype=torch.long, device=device)
        return u, it, h

    def scores(self, users: np.ndarray, items: np.ndarray) -> torch.Tensor | None:
        """The LLM's candidate scores (B, C) when the head reads them and they are known."""
        if not self.cascade.s_dim or self.llm_scores is None:
            return None
        return torch.as_tensor(self.llm_scores.lookup(users, items), dtype=torch.float32)

    @torch.no_grad()
    def __call__(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        u, it, h = self.tensors(users, items)
        s = self.scores(users, items)
        return self.cascade(u, it, h, None, s).float().cpu().numpy()


class ScoreTable:
    """Scores of a scored candidate set, looked up by (user, candidate item).

    BDLM scores the LLM's top-K lists once and hands the scores to both sides: BDLM-llm's
    metrics and the cascade's LLM-score column. A (user, item) pair not in the set reads
    ``missing`` (interaction pairs, which have no top-K list).
    """

    def __init__(
        self, users: np.ndarray, items: np.ndarray, scores: np.ndarray, missing: float = 0.0
    ) -> None:
        self.users, self.items, self.scores = users, items, scores
        self.table = {
            (int(u), int(j)): float(v)
            for u, row, vals in zip(users, items, scores, strict=True)
            for j, v in zip(row, vals, strict=True)
        }
        self.missing = missing

    def lookup(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """(B, C) scores of ``items`` (B, C) for ``users`` (B,)."""
        return np.array(
            [
                [self.table.get((int(u), int(j)), self.missing) for j in row]
                for u, row in zip(users, items, strict=True)
            ],
            dtype=np.float64,
        )


def evaluate_cascade(
    cascade: Cascade,
    llm,
    tokenizer,
    builder: PromptBuilder,
    prepared,
    cache: FeatureCache,
    *,
    tasks: tuple[str, ...] = ("topk", "interaction"),
    limit: int = 0,
    batch_size: int = 8,
    progress: bool = True,
    ranks_to: Path | None = None,
    llm_scores: Mapping[str, ScoreTable] | None = None,
) -> dict[str, float]:
    """BDLM-drs metrics on ``prepared.sets`` (see the module docstring).

    ``llm_scores``: per stage, the LLM's top-K scores the cascade's score column reads.
    """
    split = prepared.split
    cascade.eval()
    llm.eval()

    def scorer(stage: str, task: str) -> ScoreFn:
        hist = histories(split.history_before(stage), split.n_users)
        # only top-K lists have LLM list scores; interaction pairs read 0 in that column
        table = (llm_scores or {}).get(stage) if task == "topk" else None
        return CascadeScorer(cascade, llm, tokenizer, builder, hist, cache, table)

    return evaluate_candidate_sets(
        scorer,
        prepared.sets,
        tasks=tasks,
        limit=limit,
        batch_size=batch_size,
        progress=progress,
        ranks_to=ranks_to,
    )


def evaluate_domain(
    model: Recommender,
    prepared,
    *,
    tasks: tuple[str, ...] = ("topk", "interaction"),
    limit: int = 0,
    progress: bool = True,
    ranks_to: Path | None = None,
) -> dict[str, float]:
    """The domain model alone (its own ``score``) on the same rows as the BDLM sides.

    BDLM's domain models (LightGCN, MF, GMF, NeuMF) read no history, so one scorer serves both
    stages.
    """
    device = next(model.parameters()).device
    model.eval()

    @torch.no_grad()
    def score(users: np.ndarray, items: np.ndarray) -> np.ndarray:
        u = torch.as_tensor(users, dtype=torch.long, device=device)
        it = torch.as_tensor(items, dtype=torch.long, device=device)
        return model.score(u, it).float().cpu().numpy()

    return evaluate_candidate_sets(
        lambda stage, task: score,
        prepared.sets,
        tasks=tasks,
        limit=limit,
        batch_size=1024,
        progress=progress,
        ranks_to=ranks_to,
    )
