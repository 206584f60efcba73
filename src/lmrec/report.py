"""Tables people compare: rich tables for the terminal and Markdown for reports."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.table import Table

STATS_COLUMNS = ("dataset", "users", "items", "interactions", "sparsity")
# Headline metrics in the BDLM paper's order, then the extra ones lmrec reports.
METRIC_COLUMNS = (
    ("topk/HR@1", "HR@1"),
    ("topk/HR@2", "HR@2"),
    ("topk/NDCG@20", "NDCG@20"),
    ("interaction/precision", "prec"),
    ("interaction/recall", "rec"),
    ("interaction/F1", "F1"),
    ("interaction/AUC", "AUC"),
    ("full/HR@10", "full HR@10"),
    ("full/NDCG@10", "full NDCG@10"),
    ("full/Recall@10", "full Recall@10"),
)
METRIC_LABELS = dict(METRIC_COLUMNS)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "" if value is None else str(value)


def stats_rows(stats: Sequence[Mapping[str, object]]) -> list[list[str]]:
    return [[_fmt(s.get(c)) for c in STATS_COLUMNS] for s in stats]


def stats_table(stats: Sequence[Mapping[str, object]]) -> Table:
    table = Table(title="Dataset statistics")
    for c in STATS_COLUMNS:
        table.add_column(c, justify="left" if c == "dataset" else "right")
    for row in stats_rows(stats):
        table.add_row(*row)
    return table


def _metric_columns(results: Mapping[str, Mapping[str, float]]) -> list[tuple[str, str]]:
    present = {k for m in results.values() for k in m}
    return [(k, label) for k, label in METRIC_COLUMNS if k in present]


def metrics_table(results: Mapping[str, Mapping[str, float]], title: str = "Results") -> Table:
    """One row per method; the headline metrics that any row has, in the paper's order."""
    cols = _metric_columns(results)
    table = Table(title=title)
    table.add_column("method")
    for _, label in cols:
        table.add_column(label, justify="right")
    for name, m in results.items():
        table.add_row(name, *[_fmt(m.get(k)) for k, _ in cols])
    return table


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def rich_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], title: str | None = None
) -> Table:
    """The same header and rows as :func:`markdown_table`, for the terminal."""
    table = Table(title=title)
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i == 0 else "right")
    for r in rows:
        table.add_row(*r)
    return table


def stats_markdown(stats: Sequence[Mapping[str, object]]) -> str:
    return markdown_table(STATS_COLUMNS, stats_rows(stats))


def metrics_markdown(results: Mapping[str, Mapping[str, float]]) -> str:
    cols = _metric_columns(results)
    rows = [[name] + [_fmt(m.get(k)) for k, _ in cols] for name, m in results.items()]
    return markdown_table(["method"] + [label for _, label in cols], rows)
