"""Benchmark: `lmrec serve` under load, loopback only, batching on and off.

For each run folder given, and for batching on (up to 32 requests per forward pass, 5 ms wait)
and off (one request at a time), starts ``lmrec serve`` in its own process on a free port of
127.0.0.1, waits until ``/ready``, then sends ``POST /recommend`` requests (users in a fixed
order, ``k`` items out of ``candidates_n``) at concurrency 1, 8 and 32. Each level is bounded
by a request count and a time limit. Prints one row per (run, batching, concurrency) with
throughput, p50/p95/p99 latency and errors, then how often batching on and off gave the same
top-k items for the same request, and the speed-up of batching at the highest concurrency.
The client runs on the same machine as the server: say the load when quoting the figures.

    .venv/bin/python bench/bench_serve.py --run LIGHTGCN_RUN --run BDLM_RUN \
        [--requests 256] [--seconds 120] [--k 10] [--candidates 20] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

LEVELS = (1, 8, 32)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``lmrec serve RUN`` in a child process on a free loopback port."""

    def __init__(self, run: Path, max_batch: int, extra: list[str]) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "lmrec.cli", "serve", str(run), "--port", str(self.port)]
        cmd += ["--max-batch", str(max_batch), "--queue-size", "1024", *extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def wait_ready(self, timeout: float = 600) -> float:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"lmrec serve exited: {self.proc.stderr.read().decode()}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=5).status_code == 200:
                    return time.perf_counter() - t0
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError("lmrec serve did not become ready")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


async def _level(url: str, bodies: list[dict], concurrency: int, seconds: float):
    """Send ``bodies`` with ``concurrency`` in flight; (latencies, errors, wall, answers)."""
    latencies, errors, answers = [], 0, {}
    gate = asyncio.Semaphore(concurrency)
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:

        async def one(i: int, body: dict) -> None:
            nonlocal errors
            async with gate:
                if time.perf_counter() > deadline:
                    return
                t0 = time.perf_counter()
                try:
                    r = await client.post("/recommend", json=body)
                except httpx.HTTPError:
                    errors += 1
                    return
                latencies.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    errors += 1
                    return
                answers[i] = [x["item"] for x in r.json()["items"]]

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i, b) for i, b in enumerate(bodies)))
        wall = time.perf_counter() - t0
    return latencies, errors, wall, answers


def bench_run(run: Path, args) -> list[dict]:
    users = json.loads((run / "user_ids.json").read_text())["raw"]
    bodies = [
        {"user": users[i % len(users)], "k": args.k, "candidates_n": args.candidates}
        for i in range(args.requests)
    ]
    rows = []
    for batching, max_batch in (("on", 32), ("off", 1)):
        server = Server(run, max_batch, args.serve_args)
        try:
            load = server.wait_ready()
            for level in LEVELS:
                lat, errors, wall, answers = asyncio.run(
                    _level(server.url, bodies, level, args.seconds)
                )
                done = len(answers)
                ms = np.array(lat) * 1000 if lat else np.zeros(1)
                rows.append(
                    {
                        "run": run.name if run.name not in ("run", "seed-0") else str(run),
                        "batching": batching,
                        "concurrency": level,
                        "requests": done,
                        "errors": errors,
                        "req_per_s": done / wall if wall else 0.0,
                        "p50_ms": float(np.percentile(ms, 50)),
                        "p95_ms": float(np.percentile(ms, 95)),
                        "p99_ms": float(np.percentile(ms, 99)),
                        "load_s": load,
                        "answers": answers,
                    }
                )
                print(
                    f"{run} batching {batching} concurrency {level}: {done} requests, "
                    f"{rows[-1]['req_per_s']:.1f} req/s, {errors} errors",
                    file=sys.stderr,
                )
        finally:
            server.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", type=Path, required=True)
    parser.add_argument("--requests", type=int, default=256, help="requests per level")
    parser.add_argument("--seconds", type=float, default=120, help="time limit per level")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("serve_args", nargs="*", help="extra `lmrec serve` options after --")
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    rows = [row for run in args.run for row in bench_run(run, args)]
    table = Table(title=f"lmrec serve, loopback, {os.cpu_count()} cores (client on the same)")
    for col in ("run", "batching", "conc.", "requests", "errors", "req/s", "p50 ms", "p95 ms",
                "p99 ms"):  # fmt: skip
        table.add_column(col, justify="left" if col in ("run", "batching") else "right")
    for r in rows:
        table.add_row(
            r["run"], r["batching"], str(r["concurrency"]), str(r["requests"]), str(r["errors"]),
            f"{r['req_per_s']:.1f}", f"{r['p50_ms']:.0f}", f"{r['p95_ms']:.0f}",
            f"{r['p99_ms']:.0f}",
        )  # fmt: skip
    console = Console(width=160)
    console.print(table)
    summary = []
    for run in dict.fromkeys(r["run"] for r in rows):
        on = {r["concurrency"]: r for r in rows if r["run"] == run and r["batching"] == "on"}
        off = {r["concurrency"]: r for r in rows if r["run"] == run and r["batching"] == "off"}
        top = max(LEVELS)
        common = [
            (lvl, i) for lvl in LEVELS for i in on[lvl]["answers"] if i in off[lvl]["answers"]
        ]
        same = sum(on[lvl]["answers"][i] == off[lvl]["answers"][i] for lvl, i in common)
        speedup = on[top]["req_per_s"] / off[top]["req_per_s"] if off[top]["req_per_s"] else 0
        summary.append({"run": run, "same_topk": same, "compared": len(common), "speedup": speedup})
        console.print(
            f"{run}: batching on vs off, same top-{args.k} items in {same}/{len(common)} "
            f"requests; at concurrency {top} batching serves {speedup:.2f}x the requests/s"
        )
    if args.out is not None:
        for r in rows:
            r.pop("answers")
        args.out.write_text(json.dumps({"rows": rows, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
