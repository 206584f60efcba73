"""The report's tables (Markdown and rich), drawn from the aggregated results."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Group

from lmrec.experiment.paper import BDLM_TABLE3_ML1M, PaperTable
from lmrec.experiment.results import (
    EXTRA_METRICS,
    FULL_METRICS,
    TABLE3_METRICS,
    fmt_mean_std,
    metric,
)
from lmrec.report import METRIC_LABELS, markdown_table, rich_table, stats_markdown


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
    """NDCG@20 and MRR over the candidate lists and interaction AUC, per dataset."""
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


def paper_markdown(results: Mapping[str, Any], paper: PaperTable = BDLM_TABLE3_ML1M) -> str:
    """A published table with our figures beside it, matched by method label or name."""
    ds = next((d["label"] for d in results["datasets"] if d["name"] == paper.dataset), None)
    ours = {}
    for m in results["methods"]:
        for paper_name in paper.rows:
            if paper_name.lower() in (m["label"].lower(), m["name"].lower()):
                ours[paper_name] = m["name"]
    header = ["method"] + [f"{_label(k)} paper / ours" for k in paper.metrics]
    rows = []
    for paper_name, figures in paper.rows.items():
        row = [paper_name]
        for k, theirs in zip(paper.metrics, figures, strict=True):
            agg = metric(results, ds, ours[paper_name], k) if ds and paper_name in ours else None
            row.append(f"{theirs:.3f} / {fmt_mean_std(agg)}")
        rows.append(row)
    note = (
        f"The paper: {paper.setting}. Our absolute figures differ (smaller models, our own "
        "preprocessing); what should hold is the direction."
    )
    if ds is None:
        note += (
            f" This experiment has no {paper.dataset} dataset, so only the paper's column is "
            "filled."
        )
    return markdown_table(header, rows) + "\n\n" + note


def protocol_section(results: Mapping[str, Any]) -> str:
    """The protocol in words, and a check that every cell of a dataset saw the same candidates."""
    cfg = results["config"]
    cand = cfg.get("candidates") or {}
    n_neg = cand.get("n_negatives", 19)
    lines = [
        "Leave-one-out by time (last interaction = test, second-last = validation). "
        f"Candidates: sampler `{cand.get('sampler', 'mixed')}`, seed "
        f"{'= the cell seed' if cfg.get('seed_candidates') else cand.get('seed', 0)}; "
        f"top-K: the test item + {n_neg} negatives; interaction prediction: each positive + "
        f"{cand.get('n_interaction_negatives', 1)} negative(s), decision threshold chosen on "
        "validation. Full ranking: every item, the "
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
