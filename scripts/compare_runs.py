"""Compare two output folders of one experiment config, row by row, on the same (seed, user).

    python scripts/compare_runs.py CONFIG OUT_A OUT_B [--labels A,B]

For every row both folders finished: HR@1 in each, the difference A - B with its paired
bootstrap 95% interval, the users only one of them ranks first, McNemar's exact p-value, and
how many users keep the same rank of their positive. Used for "the same config, computed
another way" (e.g. fp32 against bf16 autocast, or before and after a code change).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lmrec.eval.significance import paired_comparison
from lmrec.experiment.config import load_experiment
from lmrec.experiment.paired import collect_ranks
from lmrec.report import markdown_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--labels", default="A,B")
    args = parser.parse_args()
    la, lb = args.labels.split(",")
    cfg = load_experiment(args.config)
    labels = {m.name: m.label for m in cfg.methods}
    ranks_a, ranks_b = collect_ranks(cfg, args.a), collect_ranks(cfg, args.b)
    for dataset, rows_a in ranks_a.items():
        body = []
        for name, a in rows_a.items():
            b = ranks_b.get(dataset, {}).get(name)
            if not b:
                continue
            c = paired_comparison(a, b)
            same = sum(a[key] == b[key] for key in set(a) & set(b))
            body.append(
                [labels.get(name, name), f"{c['a']:.4f}", f"{c['b']:.4f}",
                 f"{c['diff']:+.4f} [{c['low']:+.4f}, {c['high']:+.4f}]",
                 f"{c['only_a']:.0f} / {c['only_b']:.0f}", f"{c['p']:.3g}",
                 f"{same}/{c['n']:.0f}"]
            )  # fmt: skip
        header = ["row", f"HR@1 {la}", f"HR@1 {lb}", f"{la} - {lb} [95%]",
                  f"only {la} / only {lb}", "McNemar p", "same rank"]  # fmt: skip
        print(f"\n{dataset}\n")
        print(markdown_table(header, body))


if __name__ == "__main__":
    main()
