"""Supervised fine-tuning data: training prompts from a split, encoding, and the answer-only loss.

Training examples come from the *train* part of a leave-one-out split only: for each user, the
last ``targets_per_user`` train interactions become targets, each predicted from the items
before it. Top-K examples get ``n_candidates - 1`` negatives, interaction examples one positive
("Yes") and one negative ("No") per target; negatives are items the user has not interacted
with in train (so nothing from the validation or test future leaks in), drawn uniformly, by
popularity, or half and half (``mixed``). ``candidates`` draws them with the candidate sets' own
sampler (e.g. popularity + title similarity), as the test lists are drawn; BDLM's joint trainer
reads that option (:mod:`lmrec.bdlm.aligned`).

The loss (BDLM eqs. 3-4) is the usual next-token cross-entropy over the answer tokens only:
labels are -100 on every prompt position, so the prompt conditions but is never predicted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from lmrec.errors import ConfigError
from lmrec.llm.prompts import Prompt, PromptBuilder, histories

IGNORE = -100
NEGATIVES = ("uniform", "popularity", "mixed", "candidates")


@dataclass
class ExampleConfig:
    """Which training prompts to build from the train interactions."""

    tasks: list[str] = field(default_factory=lambda: ["topk", "interaction"])
    targets_per_user: int = 1
    n_candidates: int = 20
    negatives: str = "mixed"
    seed: int = 0

    def __post_init__(self) -> None:
        bad = [t for t in self.tasks if t not in ("topk", "interaction")]
        if bad or not self.tasks:
            raise ConfigError(
                f"examples.tasks must be a non-empty subset of topk, interaction: {bad}"
            )
        if self.negatives not in NEGATIVES:
            raise ConfigError(
                f"examples.negatives must be one of {NEGATIVES}, got {self.negatives!r}"
            )
        if self.targets_per_user < 1 or self.n_candidates < 2:
            raise ConfigError(
                "examples.targets_per_user >= 1 and examples.n_candidates >= 2 needed"
            )


class TrainingNegatives:
    """Training prompts' negatives: items a user has not interacted with, uniformly, by
    popularity, or alternating the two (``mixed`` here; the candidate sets' ``mixed`` sampler,
    :mod:`lmrec.protocol.samplers`, is popularity + text similarity, which ``candidates``
    draws instead)."""

    def __init__(self, n_items: int, popularity: np.ndarray, kind: str, rng: np.random.Generator):
        self.n_items, self.kind, self.rng = n_items, kind, rng
        p = popularity.astype(np.float64) + 1e-9
        self.p = p / p.sum()

    def sample(self, n: int, exclude: set[int]) -> np.ndarray:
        if self.n_items - len(exclude) < n:
            raise ConfigError(f"a user has too few unseen items for {n} negatives")
        out: list[int] = []
        while len(out) < n:
            kind = self.kind
            if kind == "mixed":
                kind = "popularity" if len(out) % 2 == 0 else "uniform"
            if kind == "uniform":
                j = int(self.rng.integers(self.n_items))
            else:
                j = int(self.rng.choice(self.n_items, p=self.p))
            if j not in exclude and j not in out:
                out.append(j)
        return np.asarray(out, dtype=np.int64)


def training_examples(split, builder: PromptBuilder, config: ExampleConfig) -> list[Prompt]:
    """SFT prompts with answers from ``split.train`` (see the module docstring)."""
    if config.negatives == "candidates":
        raise ConfigError(
            "examples.negatives: 'candidates' is read by BDLM's joint trainer (lmrec.bdlm); a "
            "plain LLM run draws uniform, popularity or mixed negatives"
        )
    rng = np.random.default_rng(config.seed)
    train = split.train
    popularity = np.bincount(train["item"].to_numpy(), minlength=split.n_items)
    sampler = TrainingNegatives(split.n_items, popularity, config.negatives, rng)
    out: list[Prompt] = []
    for user, seq in enumerate(histories(train, split.n_users)):
        if len(seq) < 2:
            continue
        seen = set(seq.tolist())
        for t in range(max(1, len(seq) - config.targets_per_user), len(seq)):
            history, target = seq[:t], int(seq[t])
            if "topk" in config.tasks:
                negs = sampler.sample(config.n_candidates - 1, seen)
                out.append(builder.prompt("topk", user, history, candidates=[target, *negs]))
            if "interaction" in config.tasks:
                neg = int(sampler.sample(1, seen)[0])
                out.append(builder.prompt("interaction", user, history, target=target, label=1))
                out.append(builder.prompt("interaction", user, history, target=neg, label=0))
    return out


def encode_example(tokenizer, prompt: Prompt, max_length: int = 1024, eos: bool = True) -> dict:
    """Token ids and labels of one example; labels are -100 on the prompt.

    The prompt is tokenized exactly as :mod:`lmrec.llm.scoring` tokenizes it (with the
    tokenizer's special tokens), the answer without special tokens, then EOS so the model
    learns to stop. Over-long prompts lose tokens on the left, never the answer.
    """
    p = tokenizer(prompt.text)["input_ids"]
    a = tokenizer(prompt.answer, add_special_tokens=False)["input_ids"]
    if not a:
        raise ValueError(f"empty answer for prompt {prompt.text[:60]!r}...")
    if eos and tokenizer.eos_token_id is not None:
        a = [*a, tokenizer.eos_token_id]
    p = p[-max(1, max_length - len(a)) :]
    return {"input_ids": p + a, "labels": [IGNORE] * len(p) + a}


class SFTCollator:
    """Left-pads a list of encoded examples into ``input_ids``, ``attention_mask``, ``labels``."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, rows: list[dict]) -> dict[str, Tensor]:
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for k, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[k, width - n :] = torch.tensor(r["input_ids"])
            labels[k, width - n :] = torch.tensor(r["labels"])
            mask[k, width - n :] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def answer_loss(logits: Tensor, labels: Tensor, reduction: str = "mean") -> Tensor:
    """Next-token cross-entropy over labelled (answer) positions: (B, T, V), (B, T) -> ().

    ``reduction``: ``"mean"`` over the answer tokens, or their ``"sum"`` (to normalise by a
    global batch's token count when the batch is split across processes or micro-batches).
    """
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    return torch.nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]),
        shift_labels.reshape(-1),
        ignore_index=IGNORE,
        reduction=reduction,
    )


def answer_tokens(row: dict) -> int:
    """How many answer tokens of an :func:`encode_example` row the loss counts."""
    return sum(label != IGNORE for label in row["labels"][1:])
