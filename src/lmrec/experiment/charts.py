"""The report's charts (matplotlib's object API on an Agg canvas: no pyplot, no global backend
switch)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lmrec.experiment.results import metric
from lmrec.experiment.tables import _label
from lmrec.utils.io import atomic_write

HR1_PNG = "hr1.png"


ABLATION_PNG = "ablation.png"


LAMBDA_PNG = "lambda.png"


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
