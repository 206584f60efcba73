"""The HTTP service: ``create_app(run_dir)`` (FastAPI), run by ``lmrec serve`` under uvicorn.

Endpoints (the OpenAPI schema at ``/docs`` and ``/openapi.json`` has examples):

- ``POST /recommend``: the domain model retrieves ``candidates_n`` items over the whole catalogue
  (seen items masked unless ``exclude_seen`` is false), the LLM re-ranks them in one forward
  pass, the best ``k`` come back with raw ids, titles and the scores;
- ``POST /score``: scores of a caller's own candidate list, in its order;
- ``GET /items/{id}``, ``GET /health`` (the process is up), ``GET /ready`` (weights loaded),
  ``GET /metrics`` (Prometheus text: requests by endpoint and status, latency, batch sizes).

Nothing happens at import: the weights load in a thread when the app starts, while ``/health``
already answers and ``/ready`` says 503 until they are in. Errors are JSON
``{"error": ..., "field": ...}`` with a 4xx naming the field at fault; a full queue answers 503
with ``Retry-After``. With an API key set, every endpoint but ``/health`` wants the header
``X-API-Key``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import APIKeyHeader
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.exceptions import HTTPException

from lmrec.serve.batcher import Job, MicroBatcher, QueueFull, run_jobs
from lmrec.serve.engine import Engine, Ranked, RequestError
from lmrec.serve.load import load_engine

log = logging.getLogger("lmrec.serve")
RawId = str | int


@dataclass
class ServeConfig:
    """How the service runs (``lmrec serve`` options)."""

    side: str | None = None  # BDLM: drs (default) or llm
    retriever: str | None = None  # LLM runs: an `lmrec train` folder (default popularity)
    data_dir: str | None = None
    api_key: str | None = None
    max_batch: int = 32  # 1: one request at a time
    max_wait_ms: float = 5.0
    queue_size: int = 256
    timeout_s: float = 30.0
    max_body_bytes: int = 65536
    llm_batch_size: int = 32
    precision: str = "run"  # the run's own; auto / fp32 / bf16 override it
    compile: bool | None = None  # the LLM's decoder layers compiled (None: as the run says)
    threads: int = 0  # torch threads of the scoring thread (0: the run's own setting)


# ---------------------------------------------------------------------- request / answer bodies
class _Who(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: RawId | None = Field(None, description="A user id of the run's data.")
    history: list[RawId] | None = Field(
        None,
        max_length=1000,
        description="Item ids, oldest first: a user without an id, or a fresher history.",
    )


class RecommendRequest(_Who):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"user": "196", "k": 5},
                {"history": ["50", "181", "100"], "k": 10, "candidates_n": 20},
            ]
        },
    )
    k: int = Field(10, ge=1, le=100, description="Items in the answer.")
    exclude_seen: bool = Field(True, description="Mask the items the user has seen.")
    candidates_n: int = Field(20, ge=1, le=500, description="Items the domain model retrieves.")

    @model_validator(mode="after")
    def _k_within_candidates(self):
        if self.k > self.candidates_n:
            raise ValueError("k must be <= candidates_n")
        return self


class ScoreRequest(_Who):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"user": "196", "items": ["242", "302", "377"]}]},
    )
    items: list[RawId] = Field(..., min_length=1, max_length=500, description="Items to score.")


class ScoredItem(BaseModel):
    item: str
    title: str
    score: float = Field(description="What the answer is ordered by (the run's served side).")
    domain_score: float
    llm_score: float | None = None


class Answer(BaseModel):
    user: str | None
    side: str = Field(description="domain, llm (BDLM-llm or an LLM run) or drs (BDLM-drs).")
    items: list[ScoredItem]
    warnings: list[str] = []


class ErrorBody(BaseModel):
    error: str
    field: str | None = None


# ---------------------------------------------------------------------- the app
class _State:
    def __init__(self, run_dir: Path, config: ServeConfig) -> None:
        self.run_dir, self.config = run_dir, config
        self.engine: Engine | None = None
        self.batcher: MicroBatcher | None = None
        self.load_error: str | None = None
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "lmrec_requests", "Requests by endpoint and status", ["endpoint", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "lmrec_request_seconds", "Request latency by endpoint", ["endpoint"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )  # fmt: skip
        self.batch_size = Histogram(
            "lmrec_batch_size", "Requests per forward pass",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=self.registry,
        )  # fmt: skip
        self.batch_seconds = Histogram(
            "lmrec_batch_seconds", "Seconds per batch", registry=self.registry
        )

    def on_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)


def _error(status: int, message: str, field: str | None = None, headers=None) -> JSONResponse:
    return JSONResponse(
        ErrorBody(error=message, field=field).model_dump(), status_code=status, headers=headers
    )


def create_app(
    run_dir: str | Path, config: ServeConfig | None = None, *, engine: Engine | None = None
) -> FastAPI:
    """The FastAPI app serving ``run_dir``; ``engine`` skips loading (an engine in memory)."""
    config = config or ServeConfig()
    state = _State(Path(run_dir), config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.engine = engine
        state.batcher = MicroBatcher(
            lambda jobs: run_jobs(state.engine, jobs),
            max_batch=config.max_batch,
            max_wait_ms=config.max_wait_ms,
            queue_size=config.queue_size,
            on_batch=state.on_batch,
            initializer=_threads(config.threads),
        )
        state.batcher.start()
        loading = None
        if engine is None:
            loading = asyncio.get_running_loop().run_in_executor(None, _load, state)
        yield
        if loading is not None:
            await loading
        await state.batcher.stop()

    app = FastAPI(
        title="lmrec",
        summary="Recommendations from a saved lmrec run: domain retrieval, LLM re-ranking.",
        lifespan=lifespan,
        responses={k: {"model": ErrorBody} for k in (401, 404, 413, 422, 503, 504)},
    )
    app.state.lmrec = state
    key_header = APIKeyHeader(name="X-API-Key", auto_error=False)

    def guard(key: str | None = Depends(key_header)) -> None:
        if config.api_key and not (key and secrets.compare_digest(key, config.api_key)):
            raise HTTPException(401, "missing or wrong X-API-Key header")

    def ready_engine() -> Engine:
        if state.engine is None:
            why = state.load_error or "the weights are still loading"
            raise HTTPException(503, f"not ready: {why}")
        return state.engine

    @app.middleware("http")
    async def observe(request: Request, call_next):
        t0 = time.perf_counter()
        size = request.headers.get("content-length")
        if size is not None and (not size.isdigit() or int(size) > config.max_body_bytes):
            response = _error(413, f"body larger than {config.max_body_bytes} bytes", "body")
        else:
            response = await call_next(request)
        route = request.scope.get("route")
        endpoint = getattr(route, "path", "other")
        state.requests.labels(endpoint, str(response.status_code)).inc()
        state.latency.labels(endpoint).observe(time.perf_counter() - t0)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        if first.get("type") == "json_invalid":
            return _error(400, f"malformed JSON: {first.get('ctx', {}).get('error', '')}", "body")
        message = first.get("msg", "invalid request")
        return _error(422, message, ".".join(loc) or "body")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        headers = getattr(exc, "headers", None)
        return _error(exc.status_code, str(exc.detail), None, headers)

    @app.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError):
        return _error(exc.status, str(exc), exc.field)

    async def _submit(job: Job) -> Ranked:
        try:
            return await state.batcher.submit(job, config.timeout_s)
        except QueueFull:
            raise HTTPException(503, "queue full; retry", headers={"Retry-After": "1"}) from None
        except TimeoutError:
            raise HTTPException(504, f"no answer within {config.timeout_s} s") from None

    def _answer(engine: Engine, user, ranked: Ranked, warnings: list[str]) -> Answer:
        items = [
            ScoredItem(
                item=engine.items.raw[int(j)],
                title=engine.titles[int(j)] if engine.titles else "",
                score=float(ranked.score[r]),
                domain_score=float(ranked.domain[r]),
                llm_score=None if ranked.llm is None else float(ranked.llm[r]),
            )
            for r, j in enumerate(ranked.items)
        ]
        return Answer(user=None if user is None else str(user), side=engine.side, items=items,
                      warnings=warnings)  # fmt: skip

    @app.post("/recommend", response_model=Answer, dependencies=[Depends(guard)])
    async def recommend(body: RecommendRequest) -> Answer:
        engine = ready_engine()
        query = engine.query(body.user, body.history)
        engine.validate(query)
        n = body.candidates_n if engine.reranker is not None else body.k
        job = Job("recommend", query, k=body.k, n=n, exclude_seen=body.exclude_seen)
        return _answer(engine, body.user, await _submit(job), query.warnings)

    @app.post("/score", response_model=Answer, dependencies=[Depends(guard)])
    async def score(body: ScoreRequest) -> Answer:
        engine = ready_engine()
        query = engine.query(body.user, body.history)
        engine.validate(query)
        items = engine.items_of(body.items, query.warnings)
        if len(items) == 0:
            raise RequestError("items has no item id this run knows", "items")
        ranked = await _submit(Job("score", query, items=items))
        return _answer(engine, body.user, ranked, query.warnings)

    @app.get("/items/{item_id}", dependencies=[Depends(guard)])
    async def item(item_id: str) -> dict:
        engine = ready_engine()
        try:
            j = engine.items.index(item_id)
        except Exception:  # noqa: BLE001 - DataError: an unknown id
            raise RequestError(f"unknown item id {item_id!r}", "item_id", status=404) from None
        return {"item": item_id, "title": engine.titles[j] if engine.titles else "", "index": j}

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/ready", dependencies=[Depends(guard)])
    async def ready() -> dict:
        engine = ready_engine()
        return {
            "status": "ready",
            "run": str(state.run_dir),
            "kind": engine.kind,
            "side": engine.side,
            "users": len(engine.users),
            "items": len(engine.items),
        }

    @app.get("/metrics", dependencies=[Depends(guard)])
    async def metrics() -> PlainTextResponse:
        body = generate_latest(state.registry)
        return PlainTextResponse(body, media_type=CONTENT_TYPE_LATEST)

    return app


def _threads(n: int):
    """Set torch's threads in the scoring thread itself (OpenMP reads them per thread)."""
    if not n:
        return None

    def init() -> None:
        import torch

        torch.set_num_threads(n)

    return init


def app_from_env() -> FastAPI:
    """The app ``lmrec serve`` starts in each uvicorn worker (settings in ``$LMREC_SERVE``)."""
    import json
    import os

    settings = json.loads(os.environ["LMREC_SERVE"])
    run_dir = settings.pop("run_dir")
    return create_app(run_dir, ServeConfig(**settings))


def _load(state: _State) -> None:
    config = state.config
    try:
        state.engine = load_engine(
            state.run_dir,
            side=config.side,
            retriever=config.retriever,
            data_dir=config.data_dir,
            batch_size=config.llm_batch_size,
            precision=config.precision,
            compile=config.compile,
        )
        log.info("lmrec serve: %s ready (%s)", state.run_dir, state.engine.side)
    except Exception as exc:  # noqa: BLE001 - reported by /ready, the process stays up
        state.load_error = f"{type(exc).__name__}: {exc}"
        log.error("lmrec serve: cannot load %s: %s", state.run_dir, state.load_error)


__all__ = [
    "Answer",
    "RecommendRequest",
    "ScoreRequest",
    "ServeConfig",
    "app_from_env",
    "create_app",
]
