"""The report's confidence intervals and paired tests, from each cell's per-user top-K ranks.

Every evaluation writes the test users' top-K ranks (``topk_ranks.json``, see
:mod:`lmrec.eval.significance`). Here they are gathered per (dataset, method) over seeds and
turned into one table per dataset:

- HR@1 with a 95% bootstrap interval over users (pooled over seeds: users are resampled within
  each seed, the seeds' means averaged);
- against the experiment's reference method (``reference:``, e.g. LightGCN alone) on the same
  (seed, user) pairs: the difference of HR@1, its paired-bootstrap 95% interval, the users only
  one of the two gets right, and McNemar's exact p-value.

BDLM-drs cells also carry their domain model scored alone on the same users
(``topk_ranks_domain.json``), shown as "<method> · domain alone".
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lmrec.eval.significance import (
    DOMAIN_RANKS_FILE,
    RANKS_FILE,
    bootstrap_interval,
    paired_comparison,
    read_ranks,
)
from lmrec.experiment.cell import RUN_DIR
from lmrec.experiment.config import ExperimentConfig
from lmrec.experiment.grid import cell_dir, expand
from lmrec.report import markdown_table

DOMAIN_SUFFIX = " · domain alone"

Ranks = dict[tuple[int, int], int]  # (seed, user) -> rank of the positive


def collect_ranks(cfg: ExperimentConfig, out: Path) -> dict[str, dict[str, Ranks]]:
    """``{dataset label: {row name: {(seed, user): rank}}}`` from the finished cells' files."""

    found: dict[str, dict[str, Ranks]] = {}
    for cell in expand(cfg):
        run = cell_dir(Path(out), cell) / RUN_DIR
        for name, suffix in ((RANKS_FILE, ""), (DOMAIN_RANKS_FILE, DOMAIN_SUFFIX)):
            if (run / name).is_file():
                rows = found.setdefault(cell.dataset_label, {})
                ranks = rows.setdefault(cell.method.name + suffix, {})
                ranks.update({(cell.seed, u): r for u, r in read_ranks(run / name).items()})
    return found


def paired_results(
    cfg: ExperimentConfig, ranks: Mapping[str, Mapping[str, Ranks]], k: int = 1
) -> dict[str, list[dict[str, Any]]]:
    """Per dataset, one dict per row: HR@k with its interval, and the paired test."""
    reference = cfg.reference_method()
    out: dict[str, list[dict[str, Any]]] = {}
    for dataset, rows in ranks.items():
        ref = rows.get(reference) if reference else None
        table = []
        for name, r in rows.items():
            seeds = sorted({s for s, _ in r})
            groups = [
                np.array([rank <= k for (s, _), rank in r.items() if s == seed], float)
                for seed in seeds
            ]
            mean, low, high = bootstrap_interval(groups)
            row: dict[str, Any] = {
                "method": name,
                "users": len(r),
                "seeds": len(seeds),
                "hr": mean,
                "low": low,
                "high": high,
            }
            if ref is not None and name != reference and set(r) & set(ref):
                row["vs"] = {"reference": reference, **paired_comparison(r, ref, k=k)}
            table.append(row)
        out[dataset] = table
    return out


def paired_markdown(cfg: ExperimentConfig, results: Mapping[str, list[dict[str, Any]]]) -> str:
    """One table per dataset (see the module docstring)."""
    labels = {m.name: m.label for m in cfg.methods}

    def label(name: str) -> str:
        base = name.removesuffix(DOMAIN_SUFFIX)
        return labels.get(base, base) + (DOMAIN_SUFFIX if name.endswith(DOMAIN_SUFFIX) else "")

    parts = []
    for dataset, rows in results.items():
        ref = next((r["vs"]["reference"] for r in rows if "vs" in r), cfg.reference_method())
        body = []
        for r in rows:
            vs = r.get("vs")
            cells = [
                label(r["method"]),
                f"{r['users']}",
                f"{r['hr']:.3f} [{r['low']:.3f}, {r['high']:.3f}]",
            ]
            if vs:
                ratio = f"{vs['a'] / vs['b']:.2f}x" if vs["b"] else "–"
                cells += [
                    f"{vs['diff']:+.3f} [{vs['low']:+.3f}, {vs['high']:+.3f}]",
                    ratio,
                    f"{int(vs['only_a'])} / {int(vs['only_b'])}",
                    f"{vs['p']:.2g}",
                ]
            else:
                cells += ["–", "–", "–", "–"]
            body.append(cells)
        ref_label = labels.get(ref, ref) if ref else "the reference"
        header = [
            "method",
            "(seed, user) pairs",
            "HR@1 [95% CI]",
            f"minus {ref_label}, same users [95% CI]",
            "ratio",
            f"only this / only {ref_label}",
            "McNemar p",
        ]
        parts.append(f"**{dataset}**\n\n" + markdown_table(header, body))
    return "\n\n".join(parts)


__all__ = ["collect_ranks", "paired_markdown", "paired_results"]
