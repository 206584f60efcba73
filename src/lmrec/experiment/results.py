"""An experiment's cells -> mean +- std over seeds: the aggregated results every table and chart
is drawn from (``results.json``, ``results.csv``).

Everything here reads the cell folders the runner wrote (or the aggregated ``results.json``), so
a report can be rebuilt at any time, also while cells are still missing (they are listed).

``results.json`` (the aggregated results every table and chart below is drawn from)::

    {"name": ..., "config": {...}, "seeds": [0, 1, 2],
     "datasets": [{"name": "ml-1m", "label": "ml-1m"}, ...],
     "methods": [{"name": "sasrec", "label": "SASRec", "kind": "domain"}, ...],
     "stats": {"ml-1m": {"users": 6040, ...}},
     "metrics": {"ml-1m": {"sasrec": {"topk/HR@1": {"mean", "std", "n", "values", "seeds"}}}},
     "cells": [{"id", "dataset", "method", "seed", "status", "wall_s", "peak_rss_mb", ...}],
     "protocol": {"ml-1m": {"candidate_hashes": 1, ...}}, "ablation": ..., "lambda_sweep": ...}

The std is the sample standard deviation (ddof = 1) over seeds; with one seed it is ``None``
and the tables show the mean alone.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lmrec
from lmrec.config import to_dict
from lmrec.experiment.cell import CELL_FILE, METRICS_FILE, RUN_DIR
from lmrec.experiment.config import ExperimentConfig
from lmrec.experiment.grid import cell_dir, expand
from lmrec.utils.io import read_json

RESULTS_JSON = "results.json"


RESULTS_CSV = "results.csv"


# The BDLM paper's Table 3 layout: top-K then interaction prediction, per dataset.
TABLE3_METRICS = (
    "topk/HR@1",
    "topk/HR@2",
    "interaction/precision",
    "interaction/recall",
    "interaction/F1",
)


FULL_METRICS = ("full/HR@10", "full/NDCG@10", "full/Recall@10")


EXTRA_METRICS = ("topk/NDCG@20", "topk/MRR", "interaction/AUC")


def mean_std(values: Sequence[float]) -> dict[str, Any]:
    """Mean and sample std (ddof = 1; ``None`` for a single value) of ``values``.

    Non-finite values are dropped (a metric a cell could not compute).
    """
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(vals)
    if n == 0:
        return {"mean": None, "std": None, "n": 0, "values": []}
    mean = sum(vals) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else None
    return {"mean": mean, "std": std, "n": n, "values": vals}


def collect_results(cfg: ExperimentConfig, out: Path) -> dict[str, Any]:
    """Read every cell of ``cfg``'s grid under ``out`` and aggregate it (see module docstring)."""

    out = Path(out)
    cells: list[dict[str, Any]] = []
    per: dict[tuple[str, str], dict[str, list[tuple[int, float]]]] = {}
    stats: dict[str, Any] = {ds.label: None for ds in cfg.datasets}
    hashes: dict[str, set[str]] = {ds.label: set() for ds in cfg.datasets}
    configs: dict[str, dict[str, Any]] = {}
    for cell in expand(cfg):
        folder = cell_dir(out, cell)
        row: dict[str, Any] = {
            "id": cell.id,
            "dataset": cell.dataset_label,
            "method": cell.method.name,
            "seed": cell.seed,
            "status": "not run",
            "attempts": 0,
            "wall_s": None,
            "peak_rss_mb": None,
            "peak_gpu_mb": None,
        }
        if (folder / CELL_FILE).exists():
            rec = read_json(folder / CELL_FILE)
            row.update(
                status=rec.get("status"),
                attempts=len(rec.get("attempts", [])),
                wall_s=rec.get("wall_s"),
                peak_rss_mb=rec.get("peak_rss_mb"),
                peak_gpu_mb=rec.get("peak_gpu_mb"),
                peak_rss_scope=(rec.get("attempts") or [{}])[-1].get("peak_rss_scope"),
            )
        if (folder / METRICS_FILE).exists():
            row["status"] = "finished"
            metrics = read_json(folder / METRICS_FILE)
            row["metrics"] = metrics
            for name, value in metrics.items():
                if value is not None and math.isfinite(value):
                    by_metric = per.setdefault((cell.dataset_label, cell.method.name), {})
                    by_metric.setdefault(name, []).append((cell.seed, value))
        protocol = folder / RUN_DIR / "protocol.json"
        if protocol.exists():
            p = read_json(protocol)
            if stats[cell.dataset_label] is None and isinstance(p.get("dataset"), dict):
                stats[cell.dataset_label] = p["dataset"]
            if p.get("content_hash"):
                hashes[cell.dataset_label].add(repr(sorted(p["content_hash"].items())))
        run_config = folder / RUN_DIR / "config.json"
        pair = f"{cell.dataset_label}/{cell.method.name}"
        if pair not in configs and run_config.exists():
            configs[pair] = read_json(run_config)
        cells.append(row)

    metrics_out: dict[str, dict[str, dict[str, Any]]] = {}
    for (ds, method), by_metric in per.items():
        for name, pairs in by_metric.items():
            agg = mean_std([v for _, v in pairs])
            agg["seeds"] = [s for s, _ in pairs]
            metrics_out.setdefault(ds, {}).setdefault(method, {})[name] = agg
    return {
        "name": cfg.name,
        "lmrec_version": lmrec.__version__,
        "config": to_dict(cfg),
        "seeds": list(cfg.seeds),
        "datasets": [{"name": d.name, "label": d.label} for d in cfg.datasets],
        "methods": [{"name": m.name, "label": m.label, "kind": m.kind} for m in cfg.methods],
        "stats": stats,
        "metrics": metrics_out,
        "cells": cells,
        "protocol": {ds: {"candidate_hashes": len(h)} for ds, h in hashes.items()},
        "run_configs": configs,
        "ablation": to_dict(cfg.ablation) if cfg.ablation else None,
        "lambda_sweep": to_dict(cfg.lambda_sweep) if cfg.lambda_sweep else None,
    }


def metric(results: Mapping[str, Any], dataset: str, method: str, name: str) -> dict | None:
    """The aggregate of ``name`` for (dataset label, method name), or None if not measured."""
    agg = results["metrics"].get(dataset, {}).get(method, {}).get(name)
    return agg if agg and agg.get("n") else None


def fmt_mean_std(agg: Mapping[str, Any] | None, digits: int = 3) -> str:
    """``0.284 ± 0.012``, or the mean alone for one seed, or ``–`` when not measured."""
    if not agg or agg.get("mean") is None:
        return "–"
    text = f"{agg['mean']:.{digits}f}"
    if agg.get("std") is not None:
        text += f" ± {agg['std']:.{digits}f}"
    return text


def results_csv(results: Mapping[str, Any]) -> str:
    """Long format: dataset, method, label, kind, metric, mean, std, n, values (;-separated)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["dataset", "method", "label", "kind", "metric", "mean", "std", "n", "values"])
    methods = {m["name"]: m for m in results["methods"]}
    for d in results["datasets"]:
        for name, m in methods.items():
            for key, agg in sorted(results["metrics"].get(d["label"], {}).get(name, {}).items()):
                w.writerow(
                    [
                        d["label"],
                        name,
                        m["label"],
                        m["kind"],
                        key,
                        agg["mean"],
                        "" if agg["std"] is None else agg["std"],
                        agg["n"],
                        ";".join(repr(v) for v in agg["values"]),
                    ]
                )
    return buf.getvalue()
