"""Print the README's BDLM quality tables from a finished (or partly finished) experiment run.

    python scripts/quality_table.py [CONFIG]     # default configs/bdlm_ml100k_quality.yaml

Reads the per-user top-K ranks every cell wrote (``topk_ranks.json``) through
:mod:`lmrec.experiment.paired`, pooled over the seeds that finished, and prints:

1. every row's HR@1 with its 95% bootstrap interval, and against LightGCN alone on the same
   (seed, user) pairs: the difference with its paired interval, the ratio, and McNemar's p;
2. the ablation pairs: BDLM against w/o JL and against w/o PE, on each side, the same way.
"""

from __future__ import annotations

import sys

from lmrec.eval.significance import paired_comparison
from lmrec.experiment.config import load_experiment
from lmrec.experiment.paired import collect_ranks, paired_markdown, paired_results
from lmrec.report import markdown_table

PAIRS = [  # (row, against)
    ("bdlm-llm", "wo-jl-llm"),
    ("bdlm-llm", "wo-pe-llm"),
    ("wo-jl-llm", "wo-pe-llm"),
    ("bdlm-drs", "wo-jl-drs"),
    ("bdlm-drs", "wo-pe-drs"),
    ("bdlm-drs", "sasrec"),
    ("bdlm-llm", "sasrec"),
    ("bdlm-drs", "bdlm-llm"),
]


def main(path: str) -> None:
    cfg = load_experiment(path)
    ranks = collect_ranks(cfg, cfg.out)
    print(paired_markdown(cfg, paired_results(cfg, ranks)))
    labels = {m.name: m.label for m in cfg.methods}
    for dataset, rows in ranks.items():
        body = []
        for a, b in PAIRS:
            if a in rows and b in rows and set(rows[a]) & set(rows[b]):
                r = paired_comparison(rows[a], rows[b])
                body.append(
                    [
                        labels[a],
                        labels[b],
                        f"{int(r['n'])}",
                        f"{r['a']:.3f} vs {r['b']:.3f}",
                        f"{r['diff']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}]",
                        f"{int(r['only_a'])} / {int(r['only_b'])}",
                        f"{r['p']:.2g}",
                    ]
                )
        if body:
            header = [
                "row",
                "against",
                "pairs",
                "HR@1",
                "difference [95% CI]",
                "only row / only against",
                "McNemar p",
            ]
            print(f"\n**{dataset}: paired comparisons**\n")
            print(markdown_table(header, body))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "configs/bdlm_ml100k_quality.yaml")
