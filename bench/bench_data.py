"""Benchmark: load + preprocess ML-1M, split it and build its candidate sets (mixed sampler).

Runs the pipeline twice, each in a fresh process on a private, empty ``LMREC_CACHE_DIR``: first
cold (the item titles are encoded with all-MiniLM-L6-v2), then warm (the title embeddings come
from the cache). The dataset is always re-read and re-preprocessed (``cache=False``) and the
candidate sets always rebuilt, so "warm" only means the embeddings are cached. Prints one row
per stage with its wall time and the process's peak resident memory so far, then the totals
against the targets (under 60 s cold, under 10 s warm, on 2 CPU threads).

    .venv/bin/python bench/bench_data.py [--dataset ml-1m] [--threads 2] [--seed 0]
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
from pathlib import Path

TARGETS = {"cold": 60.0, "warm": 10.0}


def _peak_rss_mib() -> float:
    # ru_maxrss is KiB on Linux (bytes on macOS)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def run_once(dataset: str, threads: int, seed: int, out_dir: Path) -> list[dict]:
    """One pass of the pipeline in this process; returns a row per stage."""
    # torch is only imported (with ``threads`` threads) if the titles must be encoded
    from lmrec.data import load_dataset
    from lmrec.protocol import CandidateConfig, build_candidates, leave_one_out, save_candidates
    from lmrec.protocol.candidate_files import export_csv, load_candidates
    from lmrec.protocol.candidates import item_texts
    from lmrec.protocol.text_encoder import EncoderConfig, encode_titles

    rows: list[dict] = []
    start, cpu_start = time.perf_counter(), time.process_time()

    cpu = [time.process_time()]

    def stage(name: str, t0: float, **extra) -> None:
        # CPU seconds of all this process's threads: less sensitive than wall time to other
        # jobs sharing the machine
        now = time.process_time()
        rows.append(
            {
                "stage": name,
                "seconds": time.perf_counter() - t0,
                "cpu_seconds": now - cpu[0],
                "peak_rss_mib": _peak_rss_mib(),
            }
            | extra
        )
        cpu[0] = now

    t = time.perf_counter()
    ds = load_dataset(dataset, cache=False)
    stats = ds.stats()
    stage("load + preprocess", t, note=f"{stats['users']} users, {stats['items']} items")

    t = time.perf_counter()
    split = leave_one_out(ds)
    stage("leave-one-out split", t, note=f"{len(split.test)} test users")

    cfg = CandidateConfig(sampler="mixed", seed=seed, encoder=EncoderConfig(threads=threads))
    t = time.perf_counter()
    emb = encode_titles(item_texts(ds), cfg.encoder)
    stage("title embeddings", t, note=f"{emb.shape[0]} x {emb.shape[1]}")

    t = time.perf_counter()
    cands = build_candidates(ds, split, cfg, embeddings=emb)
    topk = cands[("topk", "test")]
    mix = topk.meta["negatives_by_sampler"]
    stage("candidate sets (4)", t, note=f"topk test {topk.items.shape}, negatives {mix}")

    t = time.perf_counter()
    save_candidates(cands, out_dir / "candidates")
    stage("save (safetensors + hash)", t)

    t = time.perf_counter()
    export_csv(cands, ds, out_dir / "csv")
    stage("export CSV (raw ids)", t)

    t = time.perf_counter()
    load_candidates(out_dir / "candidates")
    stage("reload + verify hash", t)

    rows.append(
        {
            "stage": "pipeline total",
            "seconds": time.perf_counter() - start,
            "cpu_seconds": time.process_time() - cpu_start,
            "peak_rss_mib": _peak_rss_mib(),
        }
    )
    return rows


def _child(args: argparse.Namespace) -> None:
    rows = run_once(args.dataset, args.threads, args.seed, Path(args.work))
    print("BENCH_JSON " + json.dumps(rows), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args)
        return 0

    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="lmrec-bench-") as tmp:
        env = dict(os.environ, LMREC_CACHE_DIR=str(Path(tmp) / "cache"))
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(args.threads)
        cpu_before = 0.0
        for run in ("cold", "warm"):
            work = Path(tmp) / run
            cmd = [sys.executable, __file__, "--child", "--work", str(work)]
            cmd += ["--dataset", args.dataset, "--threads", str(args.threads)]
            cmd += ["--seed", str(args.seed)]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            line = [x for x in proc.stdout.splitlines() if x.startswith("BENCH_JSON ")]
            if proc.returncode != 0 or not line:
                sys.stderr.write(proc.stdout + proc.stderr)
                print(f"{run} run failed (exit code {proc.returncode})")
                return 1
            results[run] = json.loads(line[-1].removeprefix("BENCH_JSON "))
            child = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu_children = child.ru_utime + child.ru_stime
            results[run].append(
                {
                    "stage": "END TO END",
                    "seconds": wall,
                    "cpu_seconds": cpu_children - cpu_before,
                    "peak_rss_mib": results[run][-1]["peak_rss_mib"],
                    "note": "fresh process: Python start, imports, pipeline",
                }
            )
            cpu_before = cpu_children

    print(f"\n{args.dataset}, mixed sampler, seed {args.seed}, {args.threads} CPU threads\n")
    print("| run | stage | wall s | CPU s | peak RSS (MiB) | note |")
    print("|---|---|---:|---:|---:|---|")
    for run, rows in results.items():
        for r in rows:
            cells = [run, r["stage"], f"{r['seconds']:.2f}", f"{r['cpu_seconds']:.2f}"]
            cells += [f"{r['peak_rss_mib']:.0f}", r.get("note", "")]
            print("| " + " | ".join(cells) + " |")
    print()
    ok = True
    for run, target in TARGETS.items():
        total = results[run][-1]["seconds"]
        passed = total < target
        ok &= passed
        verdict = "OK" if passed else "OVER"
        cpu_s = results[run][-1]["cpu_seconds"]
        print(
            f"{run}: {total:.1f} s end to end, {cpu_s:.1f} CPU s "
            f"(target < {target:.0f} s wall) {verdict}"
        )
    load = os.getloadavg()[0]
    print(f"load average during the run: {load:.1f} on {os.cpu_count()} CPUs")
    return 0 if ok else 2


if __name__ == "__main__":
    raise SystemExit(main())
