"""Print the README's BDLM quality table from a finished quality run's cells.

    python scripts/quality_table.py [runs/bdlm_ml100k_quality]

Reads ``cells/ml-100k/<method>/seed-<s>/metrics.json`` of every row below (mean ± sample std
over the seeds that finished; the mean alone with one seed). The "LightGCN on the LLM rows'
100 users" row is the ``domain/`` metrics the BDLM-drs cells record: LightGCN scored on exactly
the users the LLM rows are scored on. The paired column is the mean, over seeds, of each row's
HR@1 minus that LightGCN's HR@1 on the same seed.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

ROWS = [  # label, method, metric prefix
    ("Popularity (943 users)", "popularity", ""),
    ("LightGCN (943 users)", "lightgcn", ""),
    ("GPT4SM (943 users)", "gpt4sm", ""),
    ("Zero-shot, ID tokens pre-loaded (PE)", "zero-shot-pe", ""),
    ("LLM-Rec (zero-shot, titles)", "llm-rec", ""),
    ("SFT-LLM, random token rows (w/o PE, lambda 0)", "sft-llm", ""),
    ("InstructRec (text-only SFT, w/o ET)", "instructrec", ""),
    ("SFT-LLM (PE), lambda 0 (w/o JL)", "sft-llm-pe", ""),
    ("BDLM-llm, lambda 0.1", "bdlm-llm", ""),
    ("BDLM-llm, lambda 10", "bdlm-llm-10", ""),
    ("LightGCN on the LLM rows' 100 users", "bdlm-drs", "domain/"),
    ("BDLM-drs, lambda 0.1", "bdlm-drs", ""),
    ("BDLM-drs, lambda 0.1, head refit", "bdlm-drs-refit", ""),
    ("BDLM-drs, lambda 10, head refit", "bdlm-drs-10", ""),
]
KEYS = ["topk/HR@1", "topk/HR@2", "interaction/precision", "interaction/recall"]
KEYS += ["interaction/F1", "interaction/AUC"]


def _cell(run: Path, method: str, seed: int) -> dict | None:
    path = run / "cells" / "ml-100k" / method / f"seed-{seed}" / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _fmt(xs: list[float]) -> str:
    if len(xs) > 1:
        return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}"
    return f"{xs[0]:.3f}"


def main(run: Path) -> None:
    same_users = {s: _cell(run, "bdlm-drs", s) for s in (0, 1, 2)}
    print("| method | seeds | HR@1 | HR@2 | prec | rec | F1 | AUC | HR@1 vs LightGCN, same users |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, method, prefix in ROWS:
        found = {s: m for s in (0, 1, 2) if (m := _cell(run, method, s)) is not None}
        if not found:
            print(f"| {label} | 0 |" + " – |" * (len(KEYS) + 1))
            continue
        cells = [_fmt([m[prefix + k] for m in found.values()]) for k in KEYS]
        diffs = [
            m[prefix + "topk/HR@1"] - same_users[s]["domain/topk/HR@1"]
            for s, m in found.items()
            if same_users.get(s) and m.get("eval/users") == 100.0
        ]
        paired = f"{statistics.mean(diffs):+.3f}" if diffs else "–"
        print(f"| {label} | {len(found)} | " + " | ".join(cells) + f" | {paired} |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/bdlm_ml100k_quality"))
