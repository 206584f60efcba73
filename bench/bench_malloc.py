"""Benchmark: what lmrec's CPU allocator policy costs and saves (:mod:`lmrec.utils.memory`).

Runs ``lmrec train sasrec --dataset ml-100k`` (``--epochs`` epochs, 2 threads) in a fresh
process per run under each policy given (``LMREC_MALLOC``: ``release`` is the policy lmrec had
before, a 128 KiB mmap threshold; ``reuse`` is today's default; ``off`` is glibc's own), and
prints per policy: wall seconds, user and system CPU seconds (min / median / max over
``--repeats`` runs), the system share of CPU time, minor page faults, and the peak resident
memory. Take it on an otherwise idle machine.

    .venv/bin/python bench/bench_malloc.py [--policies "release reuse off"] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def one_run(policy: str, epochs: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "sasrec.yaml"
        config.write_text(
            f"train: {{epochs: {epochs}, batch_size: 128, lr: 0.001, max_len: 200, "
            "num_threads: 2, progress: false, patience: 0}\n"
        )
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        lmrec = Path(sys.executable).with_name("lmrec")
        subprocess.run(
            [
                str(lmrec),
                "train",
                "sasrec",
                "--dataset",
                "ml-100k",
                "--out",
                f"{tmp}/run",
                "--config",
                str(config),
            ],
            check=True,
            env={**os.environ, "LMREC_MALLOC": policy},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "wall": wall,
        "user": after.ru_utime - before.ru_utime,
        "sys": after.ru_stime - before.ru_stime,
        "faults": after.ru_minflt - before.ru_minflt,
        # ru_maxrss of children is the largest child so far: runs go in order of policy, so
        # the figure is read per policy from a child process of its own (see main)
        "maxrss_mb": after.ru_maxrss / 1024,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--policies", default="release reuse", help="space-separated LMREC_MALLOC values"
    )
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:  # one policy in its own process, so the children's peak is this policy's
        runs = [one_run(args.worker, args.epochs) for _ in range(args.repeats)]
        import json

        print(json.dumps(runs))
        return
    import json

    print(
        f"\n## `lmrec train sasrec --dataset ml-100k`, {args.epochs} epochs, 2 threads, "
        f"{args.repeats} runs per policy (min / median / max)"
    )
    print(
        "| LMREC_MALLOC | wall s | user CPU s | system CPU s | system share (median) "
        "| minor faults (median) | peak RSS (MB) |"
    )
    print("|---|---|---|---|---|---|---|")
    for policy in args.policies.split():
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--worker",
                policy,
                "--repeats",
                str(args.repeats),
                "--epochs",
                str(args.epochs),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        runs = json.loads(out.stdout.strip().splitlines()[-1])

        def mmm(key: str, runs=runs) -> str:
            xs = [r[key] for r in runs]
            return f"{min(xs):.1f} / {statistics.median(xs):.1f} / {max(xs):.1f}"

        share = statistics.median(r["sys"] / (r["user"] + r["sys"]) for r in runs)
        faults = statistics.median(r["faults"] for r in runs)
        print(
            f"| {policy} | {mmm('wall')} | {mmm('user')} | {mmm('sys')} | {share:.1%} | "
            f"{faults / 1e6:.2f} M | {max(r['maxrss_mb'] for r in runs):.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
