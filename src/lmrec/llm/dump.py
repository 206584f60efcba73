"""Write prompts exactly as the LLM sees them, one JSON object a line (``lmrec llm prompts``).

So a user can read what is trained and what is tested, and check that no answer leaks:

- ``train``: the joint trainer's prompts of one epoch (:mod:`lmrec.bdlm.aligned`, ``recent``
  rows: every user, its e-th most recent train item as the target in epoch e, top-K candidates
  drawn by the candidate sets' own sampler);
- ``valid`` / ``test``: the saved candidate sets, each prompt showing the history before that
  stage (train items for valid, train + valid for test).

Each line has ``user`` (raw id), ``text`` (the prompt), ``answer`` (what SFT learns after it),
``task``, ``split``, and for top-K ``candidates`` (raw ids, in candidate-set order; the text
lists them in the prompt's own shuffled order) and ``target``; for interaction ``item`` and
``label``. The train split is drawn as the joint trainer draws it with the same ``seed`` and
``batch_size`` (``joint.batch_size``; the shipped configs use 16).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lmrec.errors import ConfigError
from lmrec.llm.prompts import PromptBuilder, PromptConfig, histories
from lmrec.llm.tokens import IdTokens

SPLITS = ("train", "valid", "test")
TASKS = ("topk", "interaction")


def prompt_records(
    prepared,
    builder: PromptBuilder,
    split: str,
    task: str,
    *,
    epoch: int = 1,
    seed: int = 0,
    n_candidates: int = 20,
    batch_size: int = 16,
) -> Iterator[dict[str, Any]]:
    """The records of :func:`write_prompts` (see the module docstring)."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
    if task not in TASKS:
        raise ConfigError(f"task must be one of {TASKS}, got {task!r}")
    users_raw = prepared.dataset.users.raw
    items_raw = prepared.dataset.items.raw
    if split == "train":
        yield from _train_records(prepared, builder, task, epoch, seed, n_candidates, batch_size)
        return
    cands = prepared.sets[(task, split)]
    hist = histories(prepared.split.history_before(split), prepared.split.n_users)
    for u, row, labels in zip(cands.users, cands.items, cands.labels, strict=True):
        u = int(u)
        if task == "topk":
            p = builder.prompt("topk", u, hist[u], candidates=row)
            yield _record(
                users_raw[u],
                split,
                task,
                p,
                target=items_raw[int(row[0])],
                candidates=[items_raw[int(j)] for j in row],
            )
            continue
        for j, label in zip(row, labels, strict=True):
            p = builder.prompt("interaction", u, hist[u], target=int(j), label=int(label))
            yield _record(users_raw[u], split, task, p, item=items_raw[int(j)], label=int(label))


def _record(user: str, split: str, task: str, prompt, epoch: int | None = None, **fields):
    """One JSON line: who, which split and task (and epoch), the prompt, then its answer's ids."""
    head = {"user": user, "split": split, "task": task}
    if epoch is not None:
        head["epoch"] = epoch
    return {**head, "text": prompt.text, "answer": prompt.answer, **fields}


def _train_records(prepared, builder, task, epoch, seed, n_candidates, batch_size):
    from lmrec.bdlm.aligned import AlignedBatches
    from lmrec.llm.sft import ExampleConfig
    from lmrec.protocol.candidates import make_candidate_sampler

    sampler = make_candidate_sampler(prepared.dataset, prepared.split, prepared.candidates)
    # the joint trainer's batch size: a batch's negatives come from one seeded draw
    batches = AlignedBatches(prepared.split, batch_size, seed, rows="recent", negatives=sampler)
    examples = ExampleConfig(tasks=[task], n_candidates=n_candidates, negatives="candidates")
    users_raw = prepared.dataset.users.raw
    items_raw = prepared.dataset.items.raw
    for k in range(batches.n_batches()):
        rows = batches.batch(epoch, k)
        prompts = batches.llm_prompts(rows, builder, examples, epoch, k)
        cands = batches.topk_candidates(rows, examples, epoch, k) if task == "topk" else None
        per_row = len(prompts) // len(rows)
        for r, (u, pos, neg) in enumerate(zip(rows.users, rows.pos, rows.neg, strict=True)):
            for q, p in enumerate(prompts[r * per_row : (r + 1) * per_row]):
                if cands is not None:
                    fields = {
                        "target": items_raw[int(pos)],
                        "candidates": [items_raw[int(j)] for j in cands[r]],
                    }
                else:
                    fields = {"item": items_raw[int(pos if q == 0 else neg)], "label": int(q == 0)}
                yield _record(users_raw[int(u)], "train", task, p, epoch, **fields)


def write_prompts(
    dataset: str,
    split: str,
    task: str,
    out: str | Path,
    *,
    prompt: dict | PromptConfig | None = None,
    candidates: dict | None = None,
    data_dir: str | Path | None = None,
    epoch: int = 1,
    seed: int = 0,
    batch_size: int = 16,
) -> int:
    """Write the prompts of ``split`` / ``task`` to ``out`` (JSON lines); returns how many."""
    from lmrec.config import from_dict
    from lmrec.protocol.prepare import prepare

    cfg = prompt if isinstance(prompt, PromptConfig) else from_dict(PromptConfig, prompt, "prompt")
    prepared = prepare(dataset, data_dir=data_dir, candidates=candidates or None)
    ds = prepared.dataset
    # token names do not depend on where the tokens sit in a vocabulary
    ids = IdTokens(n_users=ds.n_users, n_items=ds.n_items, first_id=0)
    uses_ids = any(cfg.template(t).uses_ids for t in TASKS)
    builder = PromptBuilder(cfg, ds.titles(), ids if uses_ids else None)
    n = prepared.candidates.n_negatives + 1
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with out.open("w", encoding="utf-8") as fh:
        for rec in prompt_records(
            prepared,
            builder,
            split,
            task,
            epoch=epoch,
            seed=seed,
            n_candidates=n,
            batch_size=batch_size,
        ):
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
            count += 1
    return count


__all__ = ["SPLITS", "TASKS", "prompt_records", "write_prompts"]
