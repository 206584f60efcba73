"""Micro-batching: requests that arrive together are scored in one forward pass.

A request becomes a :class:`Job` on a bounded queue. One worker task takes the first job, then
waits up to ``max_wait_ms`` for more until it holds ``max_batch`` of them, and runs the batch in
one thread (the models are not re-entrant, and torch uses the cores itself). Jobs are grouped by
what shares a forward pass (:func:`run_jobs`): recommendations with the same number of
candidates, scores of lists of the same length. A full queue refuses at once (:class:`QueueFull`,
the service answers 503 with Retry-After) instead of growing without limit; a job whose caller
timed out is skipped when its batch forms. ``max_batch = 1`` serves one request at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lmrec.serve.engine import Engine, Query, Ranked


class QueueFull(Exception):
    """The batcher's queue holds ``queue_size`` jobs already."""


@dataclass
class Job:
    """One request: ``recommend`` (``k``, ``n``, ``exclude_seen``) or ``score`` (``items``)."""

    kind: str
    query: Query
    k: int = 0
    n: int = 0
    exclude_seen: bool = True
    items: np.ndarray | None = None
    future: asyncio.Future | None = field(default=None, repr=False)


def run_jobs(engine: Engine, jobs: list[Job]) -> list[Ranked | Exception]:
    """Answers of ``jobs`` in order; jobs sharing a forward pass are scored together."""
    out: list[Ranked | Exception | None] = [None] * len(jobs)
    groups: dict[tuple, list[int]] = {}
    for i, job in enumerate(jobs):
        key = ("score", len(job.items)) if job.kind == "score" else ("recommend", max(job.n, job.k))
        groups.setdefault(key, []).append(i)
    for (kind, width), members in groups.items():
        queries = [jobs[i].query for i in members]
        try:
            if kind == "score":
                cands = np.stack([jobs[i].items for i in members])
                answers = engine.score(queries, cands)
            else:
                answers = engine.recommend(
                    queries,
                    k=width,
                    n_candidates=width,
                    exclude_seen=[jobs[i].exclude_seen for i in members],
                )
                answers = [a.head(jobs[i].k) for a, i in zip(answers, members, strict=True)]
        except Exception as exc:  # noqa: BLE001 - handed to each caller of the group
            answers = [exc] * len(members)
        for i, answer in zip(members, answers, strict=True):
            out[i] = answer
    return out  # type: ignore[return-value]


class MicroBatcher:
    """Gathers jobs for up to ``max_wait_ms`` or ``max_batch`` and runs them with ``run_batch``.

    ``on_batch(size, seconds)`` is called after each batch (the service's metrics);
    ``initializer()`` once in the thread that runs the batches.
    """

    def __init__(
        self,
        run_batch: Callable[[list[Job]], list[Any]],
        *,
        max_batch: int = 32,
        max_wait_ms: float = 5.0,
        queue_size: int = 256,
        on_batch: Callable[[int, float], None] | None = None,
        initializer: Callable[[], None] | None = None,
    ) -> None:
        if max_batch < 1 or queue_size < 1 or max_wait_ms < 0:
            raise ValueError("max_batch and queue_size must be >= 1 and max_wait_ms >= 0")
        self.run_batch, self.on_batch = run_batch, on_batch
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000.0
        self.queue: asyncio.Queue[Job] = asyncio.Queue(maxsize=queue_size)
        self.executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="lmrec-batch", initializer=initializer
        )
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._worker())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        self.executor.shutdown(wait=True)

    @property
    def depth(self) -> int:
        return self.queue.qsize()

    async def submit(self, job: Job, timeout: float) -> Ranked:
        """Queue ``job`` and wait for its answer (raises QueueFull, TimeoutError or its error)."""
        job.future = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            raise QueueFull from None
        result = await asyncio.wait_for(job.future, timeout)
        if isinstance(result, Exception):
            raise result
        return result

    async def _take(self) -> list[Job]:
        batch = [await self.queue.get()]
        deadline = time.perf_counter() + self.max_wait
        while len(batch) < self.max_batch:
            try:
                batch.append(self.queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), left))
            except TimeoutError:
                break
        return [j for j in batch if not j.future.done()]  # callers that timed out are gone

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._take()
            if not batch:
                continue
            t0 = time.perf_counter()
            try:
                results = await loop.run_in_executor(self.executor, self.run_batch, batch)
            except Exception as exc:  # noqa: BLE001 - every caller of the batch gets it
                results = [exc] * len(batch)
            if self.on_batch is not None:
                self.on_batch(len(batch), time.perf_counter() - t0)
            for job, result in zip(batch, results, strict=True):
                if not job.future.done():
                    job.future.set_result(result)


__all__ = ["Job", "MicroBatcher", "QueueFull", "run_jobs"]
