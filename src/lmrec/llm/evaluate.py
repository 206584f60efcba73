"""Evaluation of an LLM recommender on the shared candidate sets: a scorer per stage and task
(item-token log-probabilities, titles' likelihood, log P(Yes) - log P(No)) and the metrics,
through the one evaluator (:mod:`lmrec.eval.evaluator`).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from lmrec.config import from_dict, to_dict
from lmrec.llm.config import LLMSideConfig
from lmrec.llm.prompts import Prompt, PromptBuilder, histories
from lmrec.llm.scoring import score_continuations, score_token_candidates, score_yes_no
from lmrec.llm.sft import ExampleConfig, training_examples


class LLMScorer:
    """Score callables for :mod:`lmrec.eval.evaluator` on one stage's histories."""

    def __init__(self, model, tokenizer, builder: PromptBuilder, hist, ids, cfg, shots=None):
        self.model, self.tok, self.builder, self.hist = model, tokenizer, builder, hist
        self.ids, self.cfg, self.shots = ids, cfg, shots or {}

    def prompts(self, task: str, users, items) -> list[str]:
        shots = self.shots.get(task, ())
        if task == "topk":
            return [
                self.builder.prompt(
                    "topk", int(u), self.hist[int(u)], candidates=row, shots=shots
                ).text
                for u, row in zip(users, items, strict=True)
            ]
        return [
            self.builder.prompt(
                "interaction", int(u), self.hist[int(u)], target=int(j), shots=shots
            ).text
            for u, row in zip(users, items, strict=True)
            for j in row
        ]

    def topk(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        prompts = self.prompts("topk", users, items)
        bs = self.cfg.eval_batch_size
        if self.builder.config.template("topk").answer == "item_token":
            s = score_token_candidates(
                self.model, self.tok, prompts, self.ids.token_ids("item", items), bs
            )
        else:
            conts = [[self.builder.answer("topk", item=int(j)) for j in row] for row in items]
            s = score_continuations(self.model, self.tok, prompts, conts, bs * 4)
        return s.numpy()

    def interaction(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        prompts = self.prompts("interaction", users, items)
        yes = self.builder.answer("interaction", label=1)
        no = self.builder.answer("interaction", label=0)
        s = score_yes_no(self.model, self.tok, prompts, yes, no, self.cfg.eval_batch_size)
        return s.numpy().reshape(items.shape)


def evaluate_llm(
    model,
    tokenizer,
    builder,
    prepared,
    ids,
    cfg: LLMSideConfig,
    shots=None,
    progress: bool = True,
    ranks_to: Path | None = None,
    topk_scores: np.ndarray | None = None,
) -> dict[str, float]:
    """Metrics on the shared candidate sets, with the domain models' metric keys.

    ``ranks_to``: also write the test users' top-K ranks there. ``topk_scores``: the test top-K
    scores when the caller has computed them already (BDLM scores them once for both sides).
    """
    from lmrec.eval.evaluator import evaluate_candidate_sets

    split = prepared.split
    scorers = {
        stage: LLMScorer(
            model,
            tokenizer,
            builder,
            histories(split.history_before(stage), split.n_users),
            ids,
            cfg,
            shots,
        )
        for stage in ("valid", "test")
    }

    model.eval()
    t0 = time.perf_counter()
    out = evaluate_candidate_sets(
        lambda stage, task: getattr(scorers[stage], task),
        prepared.sets,
        tasks=cfg.tasks,
        limit=cfg.eval_limit,
        batch_size=cfg.eval_batch_size,
        progress=progress,
        ranks_to=ranks_to,
        topk_scores=topk_scores,
    )
    out["eval/seconds"] = time.perf_counter() - t0
    return out


def few_shot_examples(
    prepared, builder: PromptBuilder, cfg: LLMSideConfig
) -> dict[str, list[Prompt]]:
    """``cfg.few_shot`` demonstrations per task, drawn (seeded) from the training prompts."""
    if not cfg.few_shot:
        return {}
    out = {}
    for task in cfg.tasks:
        ex_cfg = from_dict(
            ExampleConfig, {**to_dict(cfg.examples), "tasks": [task]}, "llm.examples"
        )
        pool = training_examples(prepared.split, builder, ex_cfg)
        rng = np.random.default_rng([cfg.seed, len(task)])
        pick = rng.choice(len(pool), size=min(cfg.few_shot, len(pool)), replace=False)
        out[task] = [pool[i] for i in pick]
    return out
