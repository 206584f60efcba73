"""An experiment's cells -> mean +- std over seeds -> ``report.md``, ``results.json/.csv``, PNGs.

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
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from rich.console import Group

import lmrec
from lmrec.config import to_dict
from lmrec.experiment.cell import CELL_FILE, METRICS_FILE, RUN_DIR
from lmrec.experiment.config import ExperimentConfig
from lmrec.report import METRIC_LABELS, markdown_table, rich_table, stats_markdown
from lmrec.utils.io import atomic_write, atomic_write_text, read_json, write_json

REPORT_FILE = "report.md"
RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"
HR1_PNG = "hr1.png"
ABLATION_PNG = "ablation.png"
LAMBDA_PNG = "lambda.png"

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

# BDLM paper, Table 3, ML-1M (20 candidates, popularity + text-similarity negatives; Vicuna-7B).
PAPER_DATASET = "ml-1m"
# Rows in TABLE3_METRICS order: HR@1, HR@2, prec, rec, F1.
PAPER_TABLE3_ML1M: dict[str, tuple[float, ...]] = {
    "LightGCN": (0.284, 0.448, 0.733, 0.702, 0.717),
    "SASRec": (0.324, 0.475, 0.748, 0.644, 0.691),
    "BERT4Rec": (0.375, 0.506, 0.740, 0.668, 0.702),
    "InstructRec": (0.372, 0.483, 0.833, 0.672, 0.744),
    "BDLM-llm": (0.431, 0.545, 0.847, 0.758, 0.799),
    "BDLM-drs": (0.460, 0.607, 0.812, 0.819, 0.816),
}


# --------------------------------------------------------------------------------------------
# Aggregation


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
    from lmrec.experiment.runner import cell_dir, expand

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


# --------------------------------------------------------------------------------------------
# Tables


def fmt_mean_std(agg: Mapping[str, Any] | None, digits: int = 3) -> str:
    """``0.284 ± 0.012``, or the mean alone for one seed, or ``–`` when not measured."""
    if not agg or agg.get("mean") is None:
        return "–"
    text = f"{agg['mean']:.{digits}f}"
    if agg.get("std") is not None:
        text += f" ± {agg['std']:.{digits}f}"
    return text


def _label(name: str) -> str:
    return {
        "topk/HR@1": "HR@1",
        "topk/HR@2": "HR@2",
        "interaction/precision": "prec",
        "interaction/recall": "rec",
        "interaction/F1": "F1",
        "full/HR@10": "HR@10",
        "full/NDCG@10": "NDCG@10",
        "full/Recall@10": "Recall@10",
        "topk/MRR": "MRR",
    }.get(name, METRIC_LABELS.get(name, name))


def grouped_rows(
    results: Mapping[str, Any],
    metrics: Sequence[str],
    methods: Sequence[str] | None = None,
    digits: int = 3,
    datasets: Sequence[str] | None = None,
    prefix: bool = True,
) -> tuple[list[str], list[list[str]]]:
    """Rows = methods, column groups = datasets x ``metrics``; the best mean per column bold.

    ``datasets`` (labels) defaults to all; ``prefix`` puts the dataset in each metric header.

    Returns the header and the rows, for :func:`markdown_table` or :func:`rich_table`.
    """
    all_methods = {m["name"]: m for m in results["methods"]}
    names = list(methods) if methods is not None else list(all_methods)
    if datasets is None:
        datasets = [d["label"] for d in results["datasets"]]
    header = ["method"] + [
        f"{ds} {_label(m)}" if prefix else _label(m) for ds in datasets for m in metrics
    ]
    columns = [(ds, m) for ds in datasets for m in metrics]
    best = {}
    for ds, m in columns:
        means = [a["mean"] for n in names if (a := metric(results, ds, n, m))]
        # Bold marks a winner: nothing when every method has the same mean.
        best[(ds, m)] = max(means) if len(means) > 1 and max(means) > min(means) else None
    rows = []
    for n in names:
        row = [all_methods[n]["label"]]
        for ds, m in columns:
            agg = metric(results, ds, n, m)
            text = fmt_mean_std(agg, digits)
            if agg and best[(ds, m)] is not None and math.isclose(agg["mean"], best[(ds, m)]):
                text = f"**{text}**"
            row.append(text)
        rows.append(row)
    return header, rows


def table3_markdown(results: Mapping[str, Any], methods: Sequence[str] | None = None) -> str:
    """The paper's Table 3 layout: HR@1, HR@2, prec, rec, F1 per dataset (mean ± std)."""
    return markdown_table(*grouped_rows(results, TABLE3_METRICS, methods))


def table3_rich(results: Mapping[str, Any], methods: Sequence[str] | None = None) -> Group:
    """:func:`table3_markdown` for the terminal: one table per dataset, so it fits 80 columns."""
    tables = []
    for d in results["datasets"]:
        header, rows = grouped_rows(
            results, TABLE3_METRICS, methods, datasets=[d["label"]], prefix=False
        )
        rows = [[re.sub(r"\*\*(.+)\*\*", r"[bold]\1[/bold]", c) for c in r] for r in rows]
        tables.append(rich_table(header, rows, title=f"{results['name']}: {d['label']}"))
    return Group(*tables)


def same_users_markdown(results: Mapping[str, Any]) -> str | None:
    """Each method that also reports its domain model alone on the users it was scored on
    (``domain/...`` keys, e.g. BDLM-drs scored on a subset), beside that domain model.

    A method scored on fewer users than the domain model's own row is compared here on the same
    users, with the relative change of each mean; None when no method reports such keys.
    """
    pairs = []
    for m in results["methods"]:
        inner = {
            ds: {k[len("domain/") :]: v for k, v in by.get(m["name"], {}).items()
                 if k.startswith("domain/")}
            for ds, by in results["metrics"].items()
        }  # fmt: skip
        if any(inner.values()):
            pairs.append((m, inner))
    if not pairs:
        return None
    methods, metrics = [], {ds: dict(by) for ds, by in results["metrics"].items()}
    for m, inner in pairs:
        alone = f"{m['name']}::domain"
        methods += [m, {"name": alone, "label": f"its domain model alone ({m['label']}'s users)"}]
        for ds, by in inner.items():
            if by:
                metrics[ds][alone] = by
    view = {**results, "methods": methods, "metrics": metrics}
    header, rows = grouped_rows(view, TABLE3_METRICS, [m["name"] for m in methods])
    header.append("HR@1 change")
    for i in range(0, len(rows), 2):
        gains = []
        for ds in (d["label"] for d in results["datasets"]):
            a = metric(view, ds, methods[i]["name"], "topk/HR@1")
            b = metric(view, ds, methods[i + 1]["name"], "topk/HR@1")
            if a and b and b["mean"]:
                gains.append(f"{100 * (a['mean'] / b['mean'] - 1):+.1f}%")
        rows[i].append(", ".join(gains) or "–")
        rows[i + 1].append("")
    return markdown_table(header, rows)


def full_ranking_markdown(results: Mapping[str, Any]) -> str:
    """HR@10, NDCG@10, Recall@10 over all items with seen items masked, per dataset."""
    names = [m["name"] for m in results["methods"] if _has_any(results, m["name"], FULL_METRICS)]
    if not names:
        return "_No method reported full-ranking metrics._"
    return markdown_table(*grouped_rows(results, FULL_METRICS, names, digits=4))


def extra_markdown(results: Mapping[str, Any]) -> str:
    """NDCG@20 and MRR over the 20 candidates and interaction AUC, per dataset."""
    names = [m["name"] for m in results["methods"] if _has_any(results, m["name"], EXTRA_METRICS)]
    if not names:
        return "_No method reported these metrics._"
    return markdown_table(*grouped_rows(results, EXTRA_METRICS, names, digits=4))


def _has_any(results: Mapping[str, Any], method: str, metrics: Sequence[str]) -> bool:
    return any(metric(results, d["label"], method, m) for d in results["datasets"] for m in metrics)


def stats_section(results: Mapping[str, Any]) -> str:
    """Dataset statistics (the paper's Table 1) as the cells' ``protocol.json`` recorded them."""
    known = [dict(s, dataset=ds) for ds, s in results["stats"].items() if s]
    missing = [ds for ds, s in results["stats"].items() if not s]
    text = stats_markdown(known) if known else ""
    if missing:
        text += f"\n\n_No statistics recorded yet for: {', '.join(missing)}._"
    return text.strip()


def cost_markdown(results: Mapping[str, Any]) -> str:
    """Wall time (summed over attempts) and peak memory of every cell."""
    labels = {m["name"]: m["label"] for m in results["methods"]}
    rows = []
    for c in results["cells"]:
        rows.append(
            [
                c["dataset"],
                labels.get(c["method"], c["method"]),
                str(c["seed"]),
                str(c["status"]),
                str(c["attempts"]),
                _fmt_seconds(c["wall_s"]),
                "–" if c["peak_rss_mb"] is None else f"{c['peak_rss_mb']:,.0f}",
                "–" if c.get("peak_gpu_mb") is None else f"{c['peak_gpu_mb']:,.0f}",
            ]
        )
    header = [
        "dataset",
        "method",
        "seed",
        "status",
        "attempts",
        "wall time",
        "peak RSS (MB)",
        "peak GPU (MB)",
    ]
    return markdown_table(header, rows)


def _fmt_seconds(s: float | None) -> str:
    if s is None:
        return "–"
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(round(s), 60)
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m {sec:02d}s" if h else f"{m}m {sec:02d}s"


def paper_markdown(results: Mapping[str, Any]) -> str:
    """The paper's Table 3 (ML-1M) with our ML-1M figures beside it, matched by method label."""
    ours = {}
    has_ml1m = any(d["name"] == PAPER_DATASET for d in results["datasets"])
    ds = next((d["label"] for d in results["datasets"] if d["name"] == PAPER_DATASET), None)
    for m in results["methods"]:
        for paper_name in PAPER_TABLE3_ML1M:
            if paper_name.lower() in (m["label"].lower(), m["name"].lower()):
                ours[paper_name] = m["name"]
    header = ["method"] + [f"{_label(k)} paper / ours" for k in TABLE3_METRICS]
    rows = []
    for paper_name, figures in PAPER_TABLE3_ML1M.items():
        row = [paper_name]
        for k, theirs in zip(TABLE3_METRICS, figures, strict=True):
            agg = metric(results, ds, ours[paper_name], k) if ds and paper_name in ours else None
            row.append(f"{theirs:.3f} / {fmt_mean_std(agg)}")
        rows.append(row)
    note = (
        "The paper: Vicuna-7B, full fine-tuning on 2 GPUs, ML-1M, 20 candidates with popularity "
        "+ text-similarity negatives. Our absolute figures differ (smaller models, our own "
        "preprocessing); what should hold is the direction."
    )
    if not has_ml1m:
        note += " This experiment has no ml-1m dataset, so only the paper's column is filled."
    return markdown_table(header, rows) + "\n\n" + note


def protocol_section(results: Mapping[str, Any]) -> str:
    """The protocol in words, and a check that every cell of a dataset saw the same candidates."""
    cfg = results["config"]
    cand = cfg.get("candidates") or {}
    lines = [
        "Leave-one-out by time (last interaction = test, second-last = validation). "
        f"Candidates: sampler `{cand.get('sampler', 'mixed')}`, seed "
        f"{'= the cell seed' if cfg.get('seed_candidates') else cand.get('seed', 0)}; "
        "top-K: the test item + 19 negatives; interaction prediction: each positive + 1 "
        "negative, decision threshold chosen on validation. Full ranking: every item, the "
        "user's seen items masked.",
        f"Seeds: {results['seeds']}; tables show mean ± sample std (ddof = 1) over seeds, the "
        "mean alone with one seed; the best mean of each column is bold.",
    ]
    for ds, p in results["protocol"].items():
        n = p["candidate_hashes"]
        if n > 1 and not cfg.get("seed_candidates"):
            lines.append(
                f"**Warning:** the cells of {ds} were scored on {n} different candidate sets "
                "(content hashes differ); their numbers are not comparable."
            )
    return "\n\n".join(lines)


# --------------------------------------------------------------------------------------------
# Charts (matplotlib's object API on an Agg canvas: no pyplot, no global backend switch)


def _figure(width: float = 7.0, height: float = 4.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> Path:
    path = Path(path)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png"))
    return path


def plot_metric_bars(
    results: Mapping[str, Any],
    path: str | Path,
    *,
    metric_name: str = "topk/HR@1",
    methods: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """Horizontal bars: one row per method (in order, top first), one bar per dataset.

    Error bars are the std over seeds; each bar is labelled with its mean. Method names sit on
    the y axis, so long labels and many methods stay readable.
    """
    labels = {m["name"]: m["label"] for m in results["methods"]}
    names = list(methods) if methods is not None else list(labels)
    datasets = [d["label"] for d in results["datasets"]]
    rows = max(len(names), 1)
    fig = _figure(7.5, max(2.5, 1.0 + 0.3 * rows * max(1, len(datasets))))
    ax = fig.add_subplot(1, 1, 1)
    height = 0.8 / max(len(datasets), 1)
    for k, ds in enumerate(datasets):
        aggs = [metric(results, ds, name, metric_name) for name in names]
        ys = [i - 0.4 + height * (k + 0.5) for i in range(len(names))]
        means = [a["mean"] if a else 0.0 for a in aggs]
        stds = [(a["std"] or 0.0) if a else 0.0 for a in aggs]
        ax.barh(ys, means, height, xerr=stds, capsize=2, label=ds)
        for y, a, m, e in zip(ys, aggs, means, stds, strict=True):
            if a:
                ax.text(m + e, y, f" {m:.3f}", va="center", fontsize="x-small")
    ax.set_yticks(range(len(names)), [labels.get(n, n) for n in names])
    ax.invert_yaxis()
    ax.set_xlabel(_label(metric_name))
    ax.set_title(title or f"{_label(metric_name)} per method (mean ± std over seeds)")
    if len(datasets) > 1:
        ax.legend(fontsize="small")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, Path(path))


def plot_ablation(
    results: Mapping[str, Any],
    path: str | Path,
    *,
    methods: Sequence[str] | None = None,
    metric_name: str | None = None,
) -> Path:
    """The ablation chart: one bar per variant (default: ``results["ablation"]``'s methods)."""
    spec = results.get("ablation") or {}
    methods = list(methods) if methods is not None else list(spec.get("methods") or [])
    if not methods:
        raise ValueError("plot_ablation: no methods given and the results have no ablation")
    metric_name = metric_name or spec.get("metric") or "topk/HR@1"
    return plot_metric_bars(
        results,
        path,
        metric_name=metric_name,
        methods=methods,
        title=f"Ablation: {_label(metric_name)} (mean ± std over seeds)",
    )


def plot_lambda_curve(
    results: Mapping[str, Any],
    path: str | Path,
    *,
    methods: Sequence[str] | None = None,
    lambdas: Sequence[float] | None = None,
    metric_name: str | None = None,
    series: Mapping[str, Sequence[str]] | None = None,
) -> Path:
    """``metric`` over lambda, one line per dataset and series (default: the results' spec).

    The x axis is logarithmic; lambda = 0 sits on its linear part (symlog, linear below the
    smallest positive lambda), so the sweep {0, 1e-3, ..., 10} is drawn as one curve.
    """
    spec = results.get("lambda_sweep") or {}
    methods = list(methods) if methods is not None else list(spec.get("methods") or [])
    lambdas = list(lambdas) if lambdas is not None else list(spec.get("lambdas") or [])
    if not methods or len(methods) != len(lambdas):
        raise ValueError("plot_lambda_curve: give one lambda per method (none in the results)")
    metric_name = metric_name or spec.get("metric") or "topk/HR@1"
    lines = {spec.get("label") or "": methods}
    if series is None:
        series = spec.get("series") or {}
    for name, more in series.items():
        if len(more) != len(lambdas):
            raise ValueError(f"plot_lambda_curve: series {name!r} needs one method per lambda")
        lines[name] = list(more)
    order = sorted(range(len(lambdas)), key=lambda i: lambdas[i])
    fig = _figure(6.0, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    for d in results["datasets"]:
        for name, line in lines.items():
            pts = [(lambdas[i], metric(results, d["label"], line[i], metric_name)) for i in order]
            pts = [(x, a) for x, a in pts if a]
            if not pts:
                continue
            ax.errorbar(
                [x for x, _ in pts],
                [a["mean"] for _, a in pts],
                yerr=[a["std"] or 0.0 for _, a in pts],
                marker="o",
                capsize=3,
                label=f"{d['label']} {name}".strip() if len(lines) > 1 else d["label"],
            )
    positive = [x for x in lambdas if x > 0]
    if positive:
        ax.set_xscale("symlog", linthresh=min(positive))
    ax.set_xlabel("lambda")
    ax.set_ylabel(_label(metric_name))
    ax.set_title(f"{_label(metric_name)} over lambda (mean ± std over seeds)")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return _save(fig, Path(path))


# --------------------------------------------------------------------------------------------
# Files


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


def write_report(cfg: ExperimentConfig, out: str | Path, *, source: str | None = None) -> Path:
    """Aggregate the cells under ``out`` and write the report, results files and charts.

    Returns the path of ``report.md``.
    """
    from lmrec.experiment.paired import collect_ranks, paired_markdown, paired_results

    out = Path(out)
    results = collect_results(cfg, out)
    paired = paired_results(cfg, collect_ranks(cfg, out))
    results["paired"] = paired
    write_json(out / RESULTS_JSON, results)
    atomic_write_text(out / RESULTS_CSV, results_csv(results))
    finished = sum(c["status"] == "finished" for c in results["cells"])
    total = len(results["cells"])

    figures = []
    if finished:
        plot_metric_bars(results, out / HR1_PNG)
        figures.append(f"![HR@1 per method]({HR1_PNG})")
    parts = [
        f"# {cfg.name}",
        f"Generated by lmrec {lmrec.__version__} on "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}"
        + (f" from `{source}`" if source else "")
        + f". {finished} of {total} cells finished.",
        "## Protocol",
        protocol_section(results),
        "## Data statistics",
        stats_section(results),
        "## Top-K and interaction prediction (the paper's Table 3 layout)",
        table3_markdown(results),
        "## HR@1 with 95% intervals, and paired against the reference on the same users",
        "Intervals: bootstrap over users (resampled within each seed, seeds pooled). The "
        "paired columns compare each row with the reference method on the (seed, user) pairs "
        "both scored: the difference of HR@1 with its paired-bootstrap interval, the ratio of "
        "the two HR@1, how many users only one of them ranks first, and McNemar's exact test."
        if paired
        else "",
        paired_markdown(cfg, paired) if paired else "",
        "## Full ranking (HR@10, NDCG@10, Recall@10; seen items masked)",
        full_ranking_markdown(results),
        "## More metrics (NDCG@20, MRR over the 20 candidates; interaction AUC)",
        extra_markdown(results),
    ]
    same = same_users_markdown(results)
    if same:
        parts += [
            "## On the same users",
            "Methods scored on a subset of users (`eval_limit`) beside their domain model "
            "scored on exactly those users (bold: the best mean of each column in this "
            "table).",
            same,
        ]
    parts += figures
    if cfg.ablation and cfg.ablation.methods:
        parts += ["## Ablation", table3_markdown(results, cfg.ablation.methods)]
        if finished:
            plot_ablation(results, out / ABLATION_PNG)
            parts.append(f"![ablation]({ABLATION_PNG})")
    if cfg.lambda_sweep and cfg.lambda_sweep.methods:
        lambdas, rows = cfg.lambda_sweep.lambdas, []
        for methods in cfg.lambda_sweep.lines().values():
            header, line = grouped_rows(results, TABLE3_METRICS, methods)
            rows += [[f"{lam:g}", *r] for lam, r in zip(lambdas, line, strict=True)]
        parts += ["## Lambda sweep", markdown_table(["lambda", *header], rows)]
        if finished:
            plot_lambda_curve(results, out / LAMBDA_PNG)
            parts.append(f"![lambda curve]({LAMBDA_PNG})")
    if cfg.paper_reference:
        parts += [
            "## The paper's figures beside ours (BDLM Table 3, ML-1M)",
            paper_markdown(results),
        ]
    parts += [
        "## Cost per cell",
        "Wall time summed over a cell's attempts (a resumed cell ran more than once); peak "
        "memory is the highest resident set size of its attempts"
        + (
            ", each cell in its own process."
            if cfg.isolate
            else ", measured in one shared process, so it is the high-water mark so far."
        ),
        cost_markdown(results),
        "## Configs",
        "The experiment config, as resolved (defaults filled in):",
        "```yaml\n" + yaml.safe_dump(to_dict(cfg), sort_keys=False).strip() + "\n```",
    ]
    for key, conf in results["run_configs"].items():
        body = yaml.safe_dump(conf, sort_keys=True).strip()
        parts.append(
            f"<details><summary>{key}: resolved run config (first seed)</summary>\n\n"
            f"```yaml\n{body}\n```\n</details>"
        )
    path = out / REPORT_FILE
    atomic_write_text(path, "\n\n".join(p for p in parts if p) + "\n")
    return path
