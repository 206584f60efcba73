"""Side by side: lmrec and RecBole 1.2.1 training LightGCN and SASRec on ML-1M on 2 CPU threads.

For each model, both frameworks train for the same number of epochs on the same interactions
with the same configuration, and the table gives wall seconds and process CPU seconds per
training epoch, peak resident memory, and test NDCG@10 / HR@10 (leave-one-out by time, full
ranking over all items with the user's seen items masked). Target: lmrec no slower per epoch
than RecBole at equal or better NDCG@10.

Each measurement runs in its own process (so peak RSS is that run's alone), under ``nice``:

- lmrec: this script with ``--worker``, in lmrec's virtualenv: ``load_dataset`` ->
  ``leave_one_out`` -> ``build_model`` -> :func:`lmrec.train.trainer.train` (the one training
  loop, checkpoints included) -> full-ranking test metrics.
- RecBole: ``bench/recbole_runner.py`` in the separate virtualenv made by
  ``bench/recbole_env.sh`` (created on first use), reading the very interactions lmrec trained
  on, exported as a RecBole ``.inter`` file whose timestamps are each user's positions in
  lmrec's chronological order (ML-1M has many equal timestamps; this makes both frameworks hold
  out the same test and validation items).

What an epoch is: LightGCN, every train (user, item) pair once with one sampled negative, in
both. SASRec: every next-item target of the train histories once, in both, but lmrec trains one
sequence per user with a target at every position (as the SASRec paper does), while RecBole
trains every prefix of every history as its own sequence (988k sequences of length 200 on
ML-1M), which makes its epochs very long: ``--recbole-sasrec-cap`` stops its epoch after that
many seconds and extrapolates the epoch's length from the batches done (marked in the table;
its NDCG is then that of a partly trained model and is not compared).

Usage (from the repository root)::

    .venv/bin/python bench/bench_models.py                      # both models, 2 epochs each
    .venv/bin/python bench/bench_models.py --models lightgcn --epochs 1
    .venv/bin/python bench/bench_models.py --skip-recbole       # lmrec rows only
    .venv/bin/python bench/bench_models.py --recbole-published  # RecBole's figures from PEERS.md

Writes ``bench/results/models.md`` and ``bench/results/models.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
TARGET = "no slower per epoch than RecBole at equal or better NDCG@10"

# lmrec's configuration of each model; recbole_runner.py's MODELS holds the same in RecBole's
# names. Embedding width 64 everywhere.
LMREC = {
    "lightgcn": {
        "model": {"dim": 64, "n_layers": 3, "reg_weight": 1e-4},
        "train": {"batch_size": 4096, "lr": 0.002},
    },
    # The SASRec paper's ML-1M setting: 2 blocks, 1 head, dropout 0.2, history 200, batch 128.
    "sasrec": {
        "model": {"dim": 64, "max_len": 200, "n_blocks": 2, "n_heads": 1, "dropout": 0.2},
        "train": {"batch_size": 128, "lr": 0.001, "max_len": 200},
    },
}
RECBOLE_NAMES = {"lightgcn": "LightGCN", "sasrec": "SASRec"}

# RecBole's figures measured by a peer session on this machine kind (/work/shared/PEERS.md,
# 2026-11-23), shown by --recbole-published when RecBole cannot be run here. Not our runs.
PUBLISHED = {
    ("ml-100k", "lightgcn"): {
        "s_per_epoch": 1.46,
        "peak_rss_gib": 0.5,
        "note": "PEERS.md: LightGCN 3 layers, BPR, batch 4096, lr 0.002; NDCG@10 0.049 after "
        "10 epochs (not after this run's epoch count)",
    },
    ("ml-1m", "lightgcn"): {
        "s_per_epoch": 122.0,
        "peak_rss_gib": 1.2,
        "note": "PEERS.md: LightGCN 3 layers, BPR, batch 4096, lr 0.002; 4 epochs, not "
        "converged, no NDCG@10 given",
    },
    ("ml-1m", "sasrec"): {
        "s_per_epoch": 3000.0,
        "peak_rss_gib": 5.5,
        "note": "PEERS.md: 'over 3,000' s/epoch with max len 50, CE, batch 2048, cores shared "
        "with other work (not a clean figure)",
    },
}


# ----------------------------------------------------------------------------- lmrec side


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def run_lmrec(model_name: str, dataset: str, epochs: int, threads: int, seed: int) -> dict:
    """Train one lmrec model for ``epochs`` epochs and return the measurements (worker side)."""
    import numpy as np
    import torch

    import lmrec
    from lmrec.config import to_dict
    from lmrec.data.load import load_dataset
    from lmrec.eval.evaluator import full_ranking_metrics
    from lmrec.models import build_model
    from lmrec.protocol.split import leave_one_out
    from lmrec.train.batches import BatchBuilder, Histories
    from lmrec.train.checkpoint import seed_everything
    from lmrec.train.evaluate import evaluate_model
    from lmrec.train.trainer import TrainConfig, history_len, train

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    data = load_dataset(dataset)
    split = leave_one_out(data)
    spec = LMREC[model_name]
    # Validate only after the last epoch (the trainer always does then): the benchmark times
    # training, and RecBole's side validates never.
    cfg = TrainConfig(
        **spec["train"],
        epochs=epochs,
        eval_every=epochs,
        patience=0,
        seed=seed,
        device="cpu",
        num_threads=threads,
        progress=sys.stderr.isatty(),
    )
    seed_everything(cfg.seed)
    model = build_model(model_name, split.n_users, split.n_items, spec["model"])
    if hasattr(model, "prepare"):  # LightGCN's graph
        model.prepare(split.train["user"].to_numpy(), split.train["item"].to_numpy())
    load_s = time.perf_counter() - t0
    rss_ready = _peak_rss_gib()
    hist_len = history_len(model, cfg)  # None: the model reads no histories
    batches = BatchBuilder(split, model.batch_kind, cfg.batch_size, cfg.seed, max_len=hist_len or 1)
    n_batches = batches.n_batches()
    targets = _targets(batches, model.batch_kind, hist_len or 1)

    # The trainer's per-epoch seconds include validation: time validation here and take it out.
    valid_wall, valid_cpu = {}, {}
    histories = Histories(split, "valid", hist_len or 1)

    def valid_fn(m) -> dict[str, float]:
        w, c = time.perf_counter(), time.process_time()

        def scores(users: np.ndarray) -> np.ndarray:
            u = torch.tensor(users, dtype=torch.int64)  # copies: users may be read-only
            history = histories.tensor(users) if hist_len else None
            return m.full_scores(u, history).float().numpy()

        out = full_ranking_metrics(scores, split, "valid", 10, progress=False)
        epoch = len(ends) - 1  # 0-based: on_epoch_end has not run yet for this epoch
        valid_wall[epoch] = time.perf_counter() - w
        valid_cpu[epoch] = time.process_time() - c
        return {"full/NDCG@10": out["NDCG@10"]}

    ends = [time.process_time()]  # CPU clock before epoch 1, then after each epoch's checkpoint

    def on_epoch_end(epoch: int, entry: dict) -> None:
        ends.append(time.process_time())

    with tempfile.TemporaryDirectory(prefix="lmrec-bench-") as out_dir:
        result = train(model, split, cfg, out_dir, valid_fn, on_epoch_end=on_epoch_end)
    rows = []
    for i, entry in enumerate(result.history):
        wall = entry["seconds"] - valid_wall.get(i, 0.0)
        cpu = ends[i + 1] - ends[i] - valid_cpu.get(i, 0.0)
        rows.append({"seconds": round(wall, 3), "cpu_s": round(cpu, 3), "batches": n_batches})

    t0 = time.perf_counter()
    metrics = evaluate_model(model, split, {}, max_len=hist_len, progress=False)
    eval_s = time.perf_counter() - t0
    return {
        "framework": "lmrec",
        "version": lmrec.__version__,
        "torch": torch.__version__,
        "model": model_name,
        "data": dataset,
        "n_users": split.n_users,
        "n_items": split.n_items,
        "n_interactions": len(data.inter),
        "n_train_rows": len(split.train),
        "train_targets_per_epoch": targets,
        "epochs": rows,
        "s_per_epoch": round(sum(r["seconds"] for r in rows) / len(rows), 3),
        "cpu_s_per_epoch": round(sum(r["cpu_s"] for r in rows) / len(rows), 3),
        "extrapolated": False,
        "mean_batch_loss": [round(e["loss"], 5) for e in result.history],
        "load_s": round(load_s, 2),
        "eval_s": round(eval_s, 2),
        "peak_rss_gib_before_train": round(rss_ready, 3),
        "peak_rss_gib": round(_peak_rss_gib(), 3),
        "threads": torch.get_num_threads(),
        "loadavg_1min_end": round(os.getloadavg()[0], 2),
        "ndcg@10": round(metrics["full/NDCG@10"], 5),
        "hr@10": round(metrics["full/HR@10"], 5),
        "config": {"model": to_dict(model.config), "train": to_dict(cfg)},
    }


def _targets(batches, kind: str, max_len: int) -> int:
    """Training targets (positive items) one epoch holds: pairs, or next items in sequences."""
    lengths = batches.seen.lengths()
    if kind == "sequence":
        return int(sum(min(n - 1, max_len) for n in lengths if n >= 2))
    return int(lengths.sum())


def export_inter(dataset: str, path: Path) -> dict:
    """Write lmrec's preprocessed ``dataset`` as a RecBole ``.inter`` file at ``path``.

    The timestamp column is each interaction's position in its user's chronological order, so
    RecBole's time ordering reproduces lmrec's exactly, ties included.
    """
    import numpy as np

    from lmrec.data.load import load_dataset

    data = load_dataset(dataset)
    inter = data.inter  # sorted by (user, time)
    users = np.asarray(data.users.raw, dtype=object)[inter["user"].to_numpy()]
    items = np.asarray(data.items.raw, dtype=object)[inter["item"].to_numpy()]
    order = inter.groupby("user", sort=False).cumcount().to_numpy()
    for kind, raw in (("user", data.users.raw), ("item", data.items.raw)):
        bad = [r for r in raw if "\t" in r or "\n" in r]
        if bad:
            raise ValueError(f"{kind} id {bad[0]!r} holds a tab or newline; RecBole cannot read it")
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    lines += [f"{u}\t{i}\t{t}" for u, i, t in zip(users, items, order, strict=True)]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)
    return {"users": data.n_users, "items": data.n_items, "interactions": len(inter)}


# ----------------------------------------------------------------------------- orchestration


def _nice() -> None:
    os.nice(19)  # the 2 cores are shared: the benchmark yields to everyone else


def _run_json(cmd: list[str], what: str, timeout: float | None = None) -> dict:
    """Run ``cmd`` niced; its last stdout line is one JSON object. stderr goes to ours."""
    start = time.perf_counter()
    proc = subprocess.run(
        cmd, stdout=subprocess.PIPE, text=True, preexec_fn=_nice, timeout=timeout, check=False
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}")
    out = json.loads(lines[-1])
    out["process_s"] = round(time.perf_counter() - start, 1)
    return out


def recbole_python(make: bool) -> tuple[str | None, str]:
    """The RecBole venv's python (creating the venv with recbole_env.sh when ``make``)."""
    venv = os.environ.get("RECBOLE_VENV") or str(HERE.parent / ".bench" / "recbole-venv")
    py = Path(venv) / "bin" / "python"
    if py.exists():
        return str(py), ""
    if not make:
        return None, f"no RecBole venv at {venv} (run bench/recbole_env.sh)"
    proc = subprocess.run(
        ["bash", str(HERE / "recbole_env.sh")],
        capture_output=True,
        text=True,
        preexec_fn=_nice,
        check=False,
    )
    if proc.returncode != 0:
        return None, "bench/recbole_env.sh failed: " + proc.stderr.strip()[-500:]
    return proc.stdout.strip().splitlines()[-1], ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(LMREC), choices=list(LMREC))
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--skip-recbole", action="store_true", help="lmrec rows only")
    parser.add_argument(
        "--recbole-published",
        action="store_true",
        help="RecBole rows from PEERS.md's published figures instead of running it",
    )
    parser.add_argument(
        "--recbole-sasrec-cap",
        type=float,
        default=900.0,
        help="seconds after which RecBole's SASRec epoch stops and is extrapolated (0: none)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for models.md/.json")
    parser.add_argument("--worker", metavar="MODEL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")

    if args.worker:  # one lmrec measurement, in its own process
        result = run_lmrec(args.worker, args.dataset, args.epochs, args.threads, args.seed)
        print(json.dumps(result), flush=True)
        return 0

    rows: list[dict] = []
    recbole_note = "--recbole-published was given"
    py = None
    if not args.skip_recbole and not args.recbole_published:
        py, recbole_note = recbole_python(make=True)
        if py is None:
            print(f"RecBole unavailable, showing published figures: {recbole_note}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-models-") as tmp:
        inter = Path(tmp) / f"lmrec-{args.dataset}.inter"
        if py is not None:
            export_inter(args.dataset, inter)
        for name in args.models:
            print(f"== lmrec {name}, {args.epochs} epoch(s)", flush=True)
            worker = [sys.executable, __file__, "--worker", name]
            worker += ["--dataset", args.dataset, "--epochs", str(args.epochs)]
            worker += ["--threads", str(args.threads), "--seed", str(args.seed)]
            rows.append(_run_json(worker, f"lmrec {name}"))
            if args.skip_recbole:
                continue
            if py is None:
                rows.append(_published(args.dataset, name, recbole_note))
                continue
            print(f"== RecBole {RECBOLE_NAMES[name]}, {args.epochs} epoch(s)", flush=True)
            cmd = [py, str(HERE / "recbole_runner.py"), "--model", RECBOLE_NAMES[name]]
            cmd += ["--inter", str(inter), "--epochs", str(args.epochs)]
            cmd += ["--threads", str(args.threads), "--seed", str(args.seed)]
            if name == "sasrec" and args.recbole_sasrec_cap:
                cmd += ["--time-cap", str(args.recbole_sasrec_cap)]
            if sys.stderr.isatty():
                cmd.append("--progress")
            rows.append(_run_json(cmd, f"RecBole {name}"))

    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "dataset": args.dataset,
        "epochs": args.epochs,
        "threads": args.threads,
        "cpus": os.cpu_count(),
        "target": TARGET,
        "rows": rows,
        "verdicts": _verdicts(rows),
    }
    text = render(report)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    _write(args.out / "models.md", text)
    _write(args.out / "models.json", json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out / 'models.md'} and {args.out / 'models.json'}")
    return 0


def _published(dataset: str, name: str, why: str) -> dict:
    fig = PUBLISHED.get((dataset, name))
    if fig is None:
        fig = {"s_per_epoch": None, "peak_rss_gib": None, "note": "no published figure"}
    return {
        "framework": "recbole (published)",
        "model": RECBOLE_NAMES[name],
        "s_per_epoch": fig["s_per_epoch"],
        "cpu_s_per_epoch": None,
        "peak_rss_gib": fig["peak_rss_gib"],
        "ndcg@10": None,
        "hr@10": None,
        "extrapolated": False,
        "note": f"{fig['note']}; not run here: {why}",
    }


def _verdicts(rows: list[dict]) -> dict[str, str]:
    """Per model: is lmrec no slower per epoch than RecBole at equal or better NDCG@10?"""
    out = {}
    for name in RECBOLE_NAMES:
        mine = [r for r in rows if r["model"].lower() == name]
        ours = next((r for r in mine if r["framework"] == "lmrec"), None)
        theirs = next((r for r in mine if r["framework"] != "lmrec"), None)
        if ours is None or theirs is None or theirs["s_per_epoch"] is None:
            continue
        ratio = theirs["s_per_epoch"] / ours["s_per_epoch"]
        faster = ratio >= 1.0
        speed = f"{ratio:.1f}x faster per epoch" if faster else f"{1 / ratio:.1f}x slower per epoch"
        if theirs.get("ndcg@10") is None or theirs.get("extrapolated"):
            why = "published figures" if theirs.get("ndcg@10") is None else "a partial epoch"
            out[name] = f"speed only: {speed}; NDCG@10 not comparable (RecBole row is {why})"
            continue
        better = ours["ndcg@10"] >= theirs["ndcg@10"]
        met = "MET" if faster and better else "NOT MET"
        out[name] = (
            f"{met}: {speed}; NDCG@10 {ours['ndcg@10']:.4f} vs {theirs['ndcg@10']:.4f} "
            f"({'equal or better' if better else 'worse'})"
        )
    return out


def render(report: dict) -> str:
    """The Markdown table (also printed)."""
    lines = [
        f"# lmrec vs RecBole 1.2.1: {report['dataset']}, {report['epochs']} epoch(s), "
        f"{report['threads']} torch threads ({report['when']})",
        "",
        "Leave-one-out by time, full ranking with seen items masked; embedding 64. s/epoch is "
        "wall time of the training part of an epoch (no validation); CPU s/epoch is the "
        "process's CPU time over all threads in the same span. Peak RSS is the whole process's.",
        "",
        "| framework | model | s/epoch | CPU s/epoch | peak RSS GiB | NDCG@10 | HR@10 | "
        "load avg | note |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["rows"]:
        note = r.get("note", "")
        if r.get("extrapolated"):
            done = r["epochs"][-1]
            note = (
                f"epoch stopped after {done['batches']}/{done['of']} batches and extrapolated; "
                "metrics after that partial epoch"
            )
        lines.append(
            "| {fw} | {model} | {s} | {cpu} | {rss} | {ndcg} | {hr} | {load} | {note} |".format(
                fw=r["framework"],
                model=RECBOLE_NAMES.get(r["model"], r["model"]),
                s=_num(r["s_per_epoch"], 1),
                cpu=_num(r.get("cpu_s_per_epoch"), 1),
                rss=_num(r["peak_rss_gib"], 2),
                ndcg=_num(r.get("ndcg@10"), 4),
                hr=_num(r.get("hr@10"), 4),
                load=_num(r.get("loadavg_1min_end"), 1),
                note=note,
            )
        )
    lines += ["", f"Target: {report['target']}."]
    for name, verdict in report["verdicts"].items():
        lines.append(f"- {name}: {verdict}")
    lines += [
        "",
        "The 2 cores are shared with other work; 'load avg' is the 1-minute load average at the "
        "end of each run (2.0 means both cores busy). Timings taken under higher load are "
        "slower; compare rows taken under similar load.",
    ]
    return "\n".join(lines) + "\n"


def _num(value, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(main())
