"""Generation-based ranking: constrained decoding over a trie of the candidates' token sequences,
and ranking lists read from generated text (the generative recommenders' protocol).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from lmrec.llm.scoring import encode, model_device


class CandidateTrie:
    """Token-id prefix tree of one prompt's candidate answers (each ending in ``end_id``)."""

    def __init__(self, sequences: Sequence[Sequence[int]], end_id: int) -> None:
        self.root: dict = {}
        self.end_id = end_id
        for k, seq in enumerate(sequences):
            node = self.root
            for t in [*seq, end_id]:
                node = node.setdefault(int(t), {})
            node.setdefault("_ids", []).append(k)

    def allowed(self, prefix: Sequence[int]) -> list[int]:
        node = self.root
        for t in prefix:
            node = node.get(int(t))
            if node is None:
                return [self.end_id]
        return [t for t in node if t != "_ids"] or [self.end_id]

    def match(self, generated: Sequence[int]) -> int:
        """Index of the candidate a finished generation spells, or -1."""
        node = self.root
        for t in generated:
            node = node.get(int(t))
            if node is None:
                return -1
            if "_ids" in node:
                return node["_ids"][0]
        return -1


@torch.inference_mode()
def generate_constrained(
    model,
    tokenizer,
    prompts: Sequence[str],
    candidates: Sequence[Sequence[str]],
    batch_size: int = 8,
    max_new_tokens: int = 48,
) -> list[int]:
    """Greedy generation that can only spell one of each prompt's candidates.

    Returns the chosen candidate's index per prompt (-1 if generation ran out of tokens).
    """
    end = tokenizer.eos_token_id
    device = model_device(model)
    chosen: list[int] = []
    for s in range(0, len(prompts), batch_size):
        batch = encode(tokenizer, prompts[s : s + batch_size], device)
        tries = [
            CandidateTrie([tokenizer(c, add_special_tokens=False)["input_ids"] for c in cands], end)
            for cands in candidates[s : s + batch_size]
        ]
        start = batch["input_ids"].shape[1]

        def allowed(b: int, ids: Tensor, tries=tries, start=start) -> list[int]:
            return tries[b].allowed(ids[start:].tolist())

        out = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            prefix_allowed_tokens_fn=allowed,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=end,
        )
        chosen += [t.match(o[start:].tolist()) for t, o in zip(tries, out, strict=True)]
    return chosen


@torch.inference_mode()
def generate_ranking(
    model, tokenizer, prompts: Sequence[str], candidate_ids, batch_size: int = 8
) -> np.ndarray:
    """Rank single-token candidates by generating them one after another, each at most once.

    (B,) prompts, (B, C) token ids -> (B, C) candidate column indices, best first. The first
    generated token is the argmax of :func:`score_token_candidates`; later ones condition on the
    earlier ones. This is the slow path the benchmark compares one-pass scoring against.
    """
    cand = np.asarray(candidate_ids)
    device = model_device(model)
    ranks = []
    for s in range(0, len(prompts), batch_size):
        batch = encode(tokenizer, prompts[s : s + batch_size], device)
        rows = cand[s : s + batch_size]
        start = batch["input_ids"].shape[1]

        def allowed(b: int, ids: Tensor, rows=rows, start=start) -> list[int]:
            used = set(ids[start:].tolist())
            return [int(t) for t in rows[b] if int(t) not in used] or [tokenizer.eos_token_id]

        out = model.generate(
            **batch,
            max_new_tokens=rows.shape[1],
            min_new_tokens=rows.shape[1],
            do_sample=False,
            prefix_allowed_tokens_fn=allowed,
            pad_token_id=tokenizer.pad_token_id,
        )
        for b, o in enumerate(out[:, start:].cpu().numpy()):
            pos = {int(t): k for k, t in enumerate(rows[b])}
            ranks.append([pos[int(t)] for t in o])
    return np.asarray(ranks, dtype=np.int64)


@torch.inference_mode()
def generate_text_ranking(
    model,
    tokenizer,
    prompts: Sequence[str],
    candidates: Sequence[Sequence[str]],
    sep: str = "\n",
    batch_size: int = 4,
) -> np.ndarray:
    """Rank candidates by generating their texts one per line, each at most once.

    (B,) prompts, (B, C) candidate texts -> (B, C) candidate indices, best first (-1 where the
    generation ran out). Decoding is greedy and constrained: inside a line only continuations
    of an unused candidate are allowed, and a finished candidate must be followed by ``sep``.
    This is how a generative recommender answers with text; the benchmark times it against
    one-pass scoring.
    """
    sep_ids = tokenizer(sep, add_special_tokens=False)["input_ids"]
    if not sep_ids:
        raise ValueError(f"separator {sep!r} tokenizes to nothing with this tokenizer; pass sep=")
    sep_id = sep_ids[-1]
    end = tokenizer.eos_token_id
    device = model_device(model)
    ranks = []
    for s in range(0, len(prompts), batch_size):
        batch = encode(tokenizer, prompts[s : s + batch_size], device)
        cands = [
            [tokenizer(c, add_special_tokens=False)["input_ids"] for c in row]
            for row in candidates[s : s + batch_size]
        ]
        start = batch["input_ids"].shape[1]

        def parse(b: int, gen: list[int], cands=cands) -> tuple[list[int], list[int]]:
            """Finished candidates so far, and the tokens of the current line."""
            done, line = [], []
            for t in gen:
                if t == sep_id:
                    done.append(next((k for k, c in enumerate(cands[b]) if c == line), -1))
                    line = []
                else:
                    line.append(t)
            return done, line

        def allowed(b: int, ids: Tensor, cands=cands, start=start) -> list[int]:
            done, line = parse(b, ids[start:].tolist())
            left = [c for k, c in enumerate(cands[b]) if k not in done]
            if not left:
                return [end]
            nxt = {c[len(line)] for c in left if len(c) > len(line) and c[: len(line)] == line}
            if any(c == line for c in left):
                nxt.add(sep_id)
            return sorted(nxt) or [end]

        budget = max(sum(len(c) + 1 for c in row) for row in cands)
        out = model.generate(
            **batch,
            max_new_tokens=budget,
            do_sample=False,
            prefix_allowed_tokens_fn=allowed,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=end,
        )
        for b, o in enumerate(out[:, start:].tolist()):
            done, _ = parse(b, o)
            row = (done + [-1] * len(cands[b]))[: len(cands[b])]
            ranks.append(row)
    return np.asarray(ranks, dtype=np.int64)
