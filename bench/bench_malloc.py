"""Benchmark: what lmrec's CPU allocator policy costs and saves (:mod:`lmrec.utils.memory`).

Two jobs, each in a fresh process per run under each policy given (``LMREC_MALLOC``:
``release`` is the policy lmrec had before, a 128 KiB mmap threshold; ``reuse`` is the one
for gradient checkpointing; ``heap`` is the default; ``off`` is glibc's own;
``MMAP_MIB,TRIM_MIB`` tries other thresholds):

- ``--job sasrec``: ``lmrec train sasrec --dataset ml-100k`` (``--epochs`` epochs, 2 threads);
  per policy: wall seconds, user and system CPU seconds (min / median / max over ``--repeats``
  runs), the system share of CPU time, minor page faults, and the peak resident memory.
- ``--job sft``: steady-state SFT of SmolLM2 on the main job's prompts, full fine-tuning, bf16,
  compiled layers, batch 16 (``bench/bench_llm.py --worker flops-train``: 2 untimed steps, then
  ``--repeats`` x 4 timed ones); per policy: samples/s (the median pass of each run), user and
  system CPU seconds and minor page faults of the timed steps, and the peak resident memory.

Take it on an otherwise idle machine.

    .venv/bin/python bench/bench_malloc.py [--job sasrec|sft] [--policies "release reuse off"]
        [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
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


def one_sft_run(policy: str, repeats: int) -> dict:
    """One process of ``bench_llm.py --worker flops-train`` (bf16, compiled) under ``policy``."""
    out = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).with_name("bench_llm.py")),
            "--worker",
            "flops-train",
            "--precision",
            "bf16",
            "--variant",
            "compiled",
            "--steps",
            "4",
            "--repeats",
            str(repeats),
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "LMREC_MALLOC": policy},
    )
    rec = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "rate": statistics.median(rec["rates"]),
        "user": rec["user_s"],
        "sys": rec["sys_s"],
        "faults_per_step": rec["minor_faults"] / (4 * repeats),
        "maxrss_mb": rec["peak_mb"],
    }


def sft_table(args) -> None:
    print(
        f"\n## Steady-state SFT, SmolLM2-135M, full fine-tuning, bf16, compiled, batch 16, "
        f"2 threads: {args.repeats} runs per policy, each 3 x 4 timed steps (min / median / max "
        "over runs)"
    )
    print(
        "| LMREC_MALLOC | samples/s | user CPU s | system CPU s | system share (median) "
        "| minor faults per step (median) | peak RSS (MB, max) |"
    )
    print("|---|---|---|---|---|---|---|")
    for policy in args.policies.split():
        runs = [one_sft_run(policy, 3) for _ in range(args.repeats)]
        print(
            f"| {policy} | {_mmm(runs, 'rate', 2)} | {_mmm(runs, 'user')} | "
            f"{_mmm(runs, 'sys')} | "
            f"{statistics.median(r['sys'] / (r['user'] + r['sys']) for r in runs):.1%} | "
            f"{statistics.median(r['faults_per_step'] for r in runs):,.0f} | "
            f"{max(r['maxrss_mb'] for r in runs):,.0f} |",
            flush=True,
        )


def _mmm(runs: list[dict], key: str, digits: int = 1) -> str:
    xs = [r[key] for r in runs]
    return f"{min(xs):.{digits}f} / {statistics.median(xs):.{digits}f} / {max(xs):.{digits}f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--policies", default="release reuse", help="space-separated LMREC_MALLOC values"
    )
    p.add_argument("--job", default="sasrec", choices=("sasrec", "sft"))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:  # one policy in its own process, so the children's peak is this policy's
        runs = [one_run(args.worker, args.epochs) for _ in range(args.repeats)]
        print(json.dumps(runs))
        return
    if args.job == "sft":
        sft_table(args)
        return

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

        share = statistics.median(r["sys"] / (r["user"] + r["sys"]) for r in runs)
        faults = statistics.median(r["faults"] for r in runs)
        print(
            f"| {policy} | {_mmm(runs, 'wall')} | {_mmm(runs, 'user')} | {_mmm(runs, 'sys')} | "
            f"{share:.1%} | "
            f"{faults / 1e6:.2f} M | {max(r['maxrss_mb'] for r in runs):.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
