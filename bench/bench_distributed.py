"""Benchmark: SFT samples/s of `lmrec llm train` with 1 and N processes (torchrun; DDP or FSDP).

Each run is a fresh `torchrun --nproc_per_node N -m lmrec.cli llm train` on ML-100K with
SmolLM2-135M (``--mode`` lora or full, batch 8 = the global batch, id top-K prompts), under
each of ``--engines`` for N > 1 (FSDP: the environment `accelerate launch` sets from
configs/accelerate/fsdp_full_shard.yaml), ``--steps`` steps, scoring
only ``--eval-users`` users; samples/s, wall time of the training loop and peak memory per
process come from the run's ``train.json`` (the main process's own figures; under DDP every
process holds one model copy, under FSDP its shard after loading the whole model). On CPU
every process gets ``--threads`` threads: on 2 cores, 2 processes of 1 thread use the cores
one process of 2 threads uses, so expect no speed-up; the table shows the overhead honestly.
With a GPU per process, pass ``--device cuda``.

    .venv/bin/python bench/bench_distributed.py [--steps 6] [--repeats 2] [--processes 1 2] \\
        [--engines ddp fsdp] [--mode lora|full]
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


FSDP_ENV = {
    "ACCELERATE_USE_FSDP": "true",
    "FSDP_VERSION": "2",
    "FSDP_RESHARD_AFTER_FORWARD": "true",
}


def run_once(n: int, engine: str, args, workdir: Path) -> dict:
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
        "--mode", args.mode, "--out", str(out), "--config", str(cfg_path),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), **(FSDP_ENV if engine == "fsdp" else {})}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    train = json.loads((out / "train.json").read_text())
    return {
        "processes": n,
        "engine": engine if n > 1 else "-",
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
    p.add_argument("--engines", nargs="+", default=["ddp", "fsdp"], choices=["ddp", "fsdp"])
    p.add_argument("--mode", default="lora", choices=["lora", "full"])
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
            for engine in args.engines if n > 1 else ["-"]:
                for _ in range(args.repeats):
                    rows.append(run_once(n, engine, args, Path(tmp)))
    print(
        f"\nSFT, SmolLM2-135M {args.mode}, batch 8, {args.steps} steps, {os.cpu_count()} cores "
        f"({args.repeats} runs each; min / median / max)\n"
    )
    print("| processes | engine | threads each | samples/s | training s | peak MB per process | "
          "user CPU s | sys CPU s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for n, engine in dict.fromkeys((r["processes"], r["engine"]) for r in rows):
        mine = [r for r in rows if r["processes"] == n and r["engine"] == engine]

        def span(key: str, digits: int = 1, mine=mine) -> str:
            vals = sorted(r[key] for r in mine)
            mid = vals[len(vals) // 2] if len(vals) % 2 else sum(vals[len(vals) // 2 - 1 :][:2]) / 2
            return f"{vals[0]:.{digits}f} / {mid:.{digits}f} / {vals[-1]:.{digits}f}"

        print(
            f"| {n} | {engine} | {mine[0]['threads']} | {span('samples_per_s', 2)} | "
            f"{span('train_s')} | {span('peak_mb', 0)} | {span('user_s')} | {span('sys_s')} |"
        )


if __name__ == "__main__":
    main()
