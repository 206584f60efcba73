"""Benchmark: SFT samples/s of `lmrec llm train` with 1 and 2 processes (torchrun, DDP).

Each run is a fresh `torchrun --nproc_per_node N -m lmrec.cli llm train` on ML-100K with
SmolLM2-135M (LoRA, batch 8 = the global batch, id top-K prompts), ``--steps`` steps, scoring
only ``--eval-users`` users; samples/s, wall time of the training loop and peak memory per
process come from the run's ``train.json`` (the main process's own figures; every process holds
one model copy). On CPU every process gets ``--threads`` threads: on 2 cores, 2 processes of 1
thread use the cores one process of 2 threads uses, so expect no speed-up; the table shows the
overhead honestly. With a GPU per process, pass ``--device cuda``.

    .venv/bin/python bench/bench_distributed.py [--steps 6] [--repeats 2] [--processes 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_once(n: int, args, workdir: Path) -> dict:
    cores = os.cpu_count() or 1
    threads = args.threads or max(1, cores // n)
    config = {
        "model": args.model,
        "device": args.device,
        "num_threads": threads,
        "candidates": {"sampler": "mixed", "seed": 0},
        "eval_limit": args.eval_users,
        "tasks": ["topk"],
        "prompt": {"topk": "id-topk", "interaction": "id-interaction", "max_history": 10},
        "examples": {"tasks": ["topk"], "n_candidates": 20},
        "train": {"batch_size": 8, "max_steps": args.steps, "warmup_steps": 1},
    }
    out = workdir / f"run-{n}-{time.monotonic_ns()}"
    cfg_path = workdir / f"{out.name}.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    cmd = [
        sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={n}",
        f"--master_port={_port()}", "-m", "lmrec.cli", "llm", "train", "--dataset", "ml-100k",
        "--mode", "lora", "--out", str(out), "--config", str(cfg_path),
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)}
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    train = json.loads((out / "train.json").read_text())
    return {
        "processes": n,
        "threads": threads,
        "samples_per_s": train["samples_per_s"],
        "train_s": train["seconds"],
        "peak_mb": train["peak_memory_mb"],
        "wall_s": wall,
        "user_s": after.ru_utime - before.ru_utime,
        "sys_s": after.ru_stime - before.ru_stime,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="per process; 0: cores / processes")
    p.add_argument("--eval-users", type=int, default=16)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.processes:
            for _ in range(args.repeats):
                rows.append(run_once(n, args, Path(tmp)))
    print(
        f"\nSFT, SmolLM2-135M LoRA, batch 8, {args.steps} steps, {os.cpu_count()} cores "
        f"({args.repeats} runs each; min / median / max)\n"
    )
    print("| processes | threads each | samples/s | training s | peak MB per process | "
          "user CPU s | sys CPU s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for n in args.processes:
        mine = [r for r in rows if r["processes"] == n]

        def span(key: str, digits: int = 1, mine=mine) -> str:
            vals = sorted(r[key] for r in mine)
            mid = vals[len(vals) // 2] if len(vals) % 2 else sum(vals[len(vals) // 2 - 1 :][:2]) / 2
            return f"{vals[0]:.{digits}f} / {mid:.{digits}f} / {vals[-1]:.{digits}f}"

        print(
            f"| {n} | {mine[0]['threads']} | {span('samples_per_s', 2)} | {span('train_s')} | "
            f"{span('peak_mb', 0)} | {span('user_s')} | {span('sys_s')} |"
        )


if __name__ == "__main__":
    main()
