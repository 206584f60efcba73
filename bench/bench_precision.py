"""Benchmark: LLM scoring in fp32 and under bf16 autocast, on a BDLM run's own test lists.

Loads a finished BDLM run (default: the main job's, ``make demo``), scores every test user's
top-K candidate list with the LLM side (item-token scores of the top-K prompt, batches of
``--batch-size``) once in fp32 and once under bf16 autocast, and prints per precision: users/s,
HR@1 with its 95% bootstrap interval, and then how many users keep the same rank of their
positive, the HR@1 difference with its paired-bootstrap interval, and McNemar's exact p-value.
bf16 only pays on processors that multiply it in hardware (AMX or AVX512-BF16; see
:mod:`lmrec.utils.precision`); elsewhere the table shows what it costs.

    .venv/bin/python bench/bench_precision.py [--run RUN_DIR] [--batch-size 16] [--limit 0]
"""

from __future__ import annotations

import argparse
import glob
import os
import resource
import time
from pathlib import Path

import numpy as np
import torch


def _default_run() -> Path:
    found = sorted(glob.glob("runs/bdlm_ml100k_cpu/cells/ml-100k/_bdlm/*/metrics.json"))
    if not found:
        raise SystemExit("no finished BDLM run under runs/bdlm_ml100k_cpu; run `make demo`")
    return Path(found[0]).parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=None)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--limit", type=int, default=0, help="first N test users (0: all)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from rich.console import Console
    from rich.table import Table
    from tqdm import tqdm

    from lmrec.bdlm.setup import load_bdlm_run
    from lmrec.eval.significance import bootstrap_interval, paired_comparison, positive_ranks
    from lmrec.llm.evaluate import LLMScorer
    from lmrec.llm.prompts import histories
    from lmrec.utils.precision import cpu_has_bf16, set_precision

    run = args.run or _default_run()
    loaded = load_bdlm_run(run)
    split = loaded.prepared.split
    cands = loaded.prepared.sets[("topk", "test")].head(args.limit)
    hist = histories(split.history_before("test"), split.n_users)
    scorer = LLMScorer(
        loaded.llm, loaded.tokenizer, loaded.builder, hist, loaded.ids, loaded.config.llm
    )
    scorer.cfg.eval_batch_size = args.batch_size
    ranks, rows = {}, []
    for name, dtype in (("fp32", None), ("bf16 autocast", torch.bfloat16)):
        set_precision(loaded.llm, dtype)
        t0, c0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        scores = []
        step = args.batch_size
        for s in tqdm(range(0, len(cands), step), desc=name, leave=False):
            scores.append(scorer.topk(cands.users[s : s + step], cands.items[s : s + step]))
        wall = time.perf_counter() - t0
        c1 = resource.getrusage(resource.RUSAGE_SELF)
        ranks[name] = positive_ranks(np.concatenate(scores), cands.labels)
        mean, low, high = bootstrap_interval([(ranks[name] == 1).astype(float)])
        rows.append(
            (name, len(cands) / wall, wall, c1.ru_utime - c0.ru_utime, c1.ru_stime - c0.ru_stime,
             f"{mean:.4f} [{low:.4f}, {high:.4f}]")
        )  # fmt: skip
    table = Table(
        title=f"LLM top-K scoring of {len(cands)} test users, {run} "
        f"(batch {args.batch_size}, {args.threads} threads, bf16 in hardware: {cpu_has_bf16()}, "
        f"{os.cpu_count()} cores)"
    )
    for col in ("precision", "users/s", "wall s", "user CPU s", "sys CPU s", "HR@1 [95%]"):
        table.add_column(col, justify="left" if col == "precision" else "right")
    for name, ups, wall, user, sys_, hr in rows:
        table.add_row(name, f"{ups:.2f}", f"{wall:.1f}", f"{user:.1f}", f"{sys_:.1f}", hr)
    console = Console(width=160)
    console.print(table)
    a, b = ranks["bf16 autocast"], ranks["fp32"]
    users = [int(u) for u in cands.users]
    cmp = paired_comparison(
        {(0, u): int(r) for u, r in zip(users, a, strict=True)},
        {(0, u): int(r) for u, r in zip(users, b, strict=True)},
    )
    console.print(
        f"same rank of the positive: {int((a == b).sum())}/{len(a)} users; HR@1 bf16 - fp32 = "
        f"{cmp['diff']:+.4f} [{cmp['low']:+.4f}, {cmp['high']:+.4f}], McNemar p = {cmp['p']:.3f} "
        f"({cmp['only_a']:.0f} users first only in bf16, {cmp['only_b']:.0f} only in fp32)"
    )


if __name__ == "__main__":
    main()
