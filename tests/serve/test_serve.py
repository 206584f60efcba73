"""``lmrec serve`` over real HTTP: a LightGCN run and a BDLM run (tiny Llama) trained here.

The service must return what ``lmrec`` computed offline: for every test user, the rank of the
positive among its test candidates under ``POST /score`` equals the rank the run wrote to its
``topk_ranks*.json`` when it was evaluated.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
import warnings

import httpx
import numpy as np
import pytest
import torch

from lmrec.eval.significance import positive_ranks, read_ranks

N_USERS, N_ITEMS, PER_USER = 14, 30, 7


def write_shop(folder):
    """A CSV of 14 users x 7 timed purchases (leave-one-out: 5 train, 1 valid, 1 test), titled."""
    rng = np.random.default_rng(0)
    rows = ["user,item,ts"]
    for u in range(N_USERS):
        picks = rng.choice(N_ITEMS, PER_USER, replace=False)
        rows += [f"u{u},a{j},{100 * u + t}" for t, j in enumerate(picks)]
    (folder / "shop.csv").write_text("\n".join(rows) + "\n")
    things = ["item,title"] + [f"a{j},Thing {j}" for j in range(N_ITEMS)]
    (folder / "things.csv").write_text("\n".join(things) + "\n")
    query = "items=things.csv&user=user&item=item&timestamp=ts&rating=&title=title"
    return f"csv:{folder}/shop.csv?{query}"


CANDIDATES = {"sampler": "popularity", "n_negatives": 4}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(dataset spec, LightGCN run folder, BDLM run folder), trained once for the module."""
    from lmrec.bdlm.run import run_bdlm
    from lmrec.train.run import train_run

    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("serve")
    spec = write_shop(root)
    lightgcn = root / "lightgcn"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train_run(
            "lightgcn",
            spec,
            out_dir=lightgcn,
            model_config={"dim": 8, "n_layers": 1},
            train_config={"epochs": 3, "progress": False},
            candidates=CANDIDATES,
        )
        bdlm = root / "bdlm"
        run_bdlm(
            spec,
            {
                "candidates": CANDIDATES,
                "llm": {
                    "model": "tiny-llama",
                    "device": "cpu",
                    "eval_limit": 0,
                    "tasks": ["topk"],
                    "prompt": {"topk": "id-topk", "interaction": "id-interaction"},
                    "mode": {"mode": "full"},
                    "examples": {"tasks": ["topk"], "n_candidates": 5, "negatives": "candidates"},
                },
                "domain": {"model": "lightgcn", "run": str(lightgcn)},
                "projection": "orthogonal",
                "cascade": {"use_llm_feature": False, "use_llm_score": True},
                "cascade_refit": {"rows": "lists"},
                "joint": {"rows": "recent", "batch_size": 4, "epochs": 1, "progress": False},
            },
            bdlm,
        )
    return spec, lightgcn, bdlm


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(run_dir, engine=None, **config):
    """The app under uvicorn on 127.0.0.1 and a free port, in a thread; yields its base URL."""
    import uvicorn

    from lmrec.serve import ServeConfig, create_app

    app = create_app(run_dir, ServeConfig(**config), engine=engine)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:  # up, then the weights loaded
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/ready", headers=_key(config), timeout=5).status_code == 200:
                break
        time.sleep(0.1)
    else:
        server.should_exit = True
        raise AssertionError(f"the service never became ready: {httpx.get(url + '/ready').text}")
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(30)


def _key(config) -> dict:
    return {"X-API-Key": config["api_key"]} if config.get("api_key") else {}


def _test_lists(spec):
    """(raw user ids, raw candidate ids (B, C), labels) of the test top-K candidate set."""
    from lmrec.protocol.prepare import prepare

    prepared = prepare(spec, candidates=CANDIDATES)
    cands = prepared.sets[("topk", "test")]
    users = prepared.dataset.users.to_raw(cands.users)
    items = prepared.dataset.items.to_raw(cands.items)
    return list(users), [list(row) for row in items], cands.labels, cands.users


def _served_ranks(url, users, items, labels):
    scores = []
    for u, row in zip(users, items, strict=True):
        r = httpx.post(f"{url}/score", json={"user": u, "items": row}, timeout=60)
        assert r.status_code == 200, r.text
        answer = r.json()
        assert [x["item"] for x in answer["items"]] == row  # the caller's order
        scores.append([x["score"] for x in answer["items"]])
    return positive_ranks(np.array(scores), labels)


def test_domain_run_serves_the_offline_ranking(runs):
    spec, lightgcn, _ = runs
    users, items, labels, dense = _test_lists(spec)
    with serving(lightgcn) as url:
        ranks = _served_ranks(url, users, items, labels)
        ready = httpx.get(f"{url}/ready").json()
    offline = read_ranks(lightgcn / "topk_ranks.json")
    assert ready["kind"] == "domain" and ready["users"] == N_USERS
    assert [offline[int(u)] for u in dense] == ranks.tolist()
    assert len(set(ranks.tolist())) > 1


@pytest.mark.parametrize("side", ["llm", "drs"])
def test_bdlm_run_serves_the_offline_ranking_of_each_side(runs, side):
    spec, _, bdlm = runs
    users, items, labels, dense = _test_lists(spec)
    with serving(bdlm, side=side) as url:
        ranks = _served_ranks(url, users, items, labels)
        answer = httpx.post(f"{url}/recommend", json={"user": users[0], "k": 3}).json()
    offline = read_ranks(bdlm / f"topk_ranks_{side}.json")
    assert [offline[int(u)] for u in dense] == ranks.tolist()
    assert len(set(ranks.tolist())) > 1  # not a ranking every scorer would give
    assert answer["side"] == side and len(answer["items"]) == 3
    assert all(x["llm_score"] is not None for x in answer["items"])


def test_recommend_masks_seen_items_and_batching_gives_the_same_answers(runs):
    from lmrec.serve.load import load_engine

    spec, _, bdlm = runs
    engine = load_engine(bdlm)
    users = list(engine.users.raw)
    bodies = [{"user": u, "k": 5, "candidates_n": 10} for u in users]
    bodies.append({"history": ["a1", "a2", "nope"], "k": 4})

    async def fire(url):
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            rs = await asyncio.gather(*(client.post("/recommend", json=b) for b in bodies))
            return [r.json() for r in rs], (await client.get("/metrics")).text

    with serving(bdlm, engine=engine, max_batch=1) as url:
        alone, _ = asyncio.run(fire(url))
    with serving(bdlm, engine=engine, max_batch=32, max_wait_ms=50) as url:
        batched, metrics = asyncio.run(fire(url))
    for a, b in zip(alone, batched, strict=True):
        assert [x["item"] for x in a["items"]] == [x["item"] for x in b["items"]]
        np.testing.assert_allclose(
            [x["score"] for x in a["items"]], [x["score"] for x in b["items"]], atol=1e-4
        )
    # a batch held more than one request; every answer avoided the user's seen items
    sizes = [line for line in metrics.splitlines() if line.startswith("lmrec_batch_size_count")]
    count = float(sizes[0].split()[-1])
    assert count < len(bodies)
    for u, answer in zip(users, batched[:-1], strict=True):
        seen = set(engine.items.to_raw(engine.histories[engine.users.index(u)]))
        assert not seen & {x["item"] for x in answer["items"]}
    anonymous = batched[-1]
    assert anonymous["user"] is None and len(anonymous["items"]) == 4
    assert anonymous["warnings"] == ["history: unknown item id 'nope' ignored"]
    assert not {"a1", "a2"} & {x["item"] for x in anonymous["items"]}
    assert 'lmrec_requests_total{endpoint="/recommend",status="200"}' in metrics


def test_bad_input_gets_a_4xx_naming_the_field(runs):
    _, lightgcn, _ = runs
    with serving(lightgcn, api_key="s3cret", max_body_bytes=2000) as url:
        key = {"X-API-Key": "s3cret"}
        assert httpx.get(f"{url}/health").status_code == 200  # no key needed
        assert httpx.post(f"{url}/recommend", json={"user": "u1"}).status_code == 401
        cases = [
            ({"user": "nobody"}, 404, "user"),
            ({"user": "u1", "k": 0}, 422, "k"),
            ({"user": "u1", "k": 30, "candidates_n": 20}, 422, "body"),
            ({"history": []}, 422, "history"),
            ({"history": ["zzz"]}, 422, "history"),
            ({}, 422, "user"),
            ({"user": "u1", "colour": 3}, 422, "colour"),
            ({"user": "u1", "history": ["a1"] * 400}, 413, "body"),
        ]
        for body, status, field in cases:
            r = httpx.post(f"{url}/recommend", json=body, headers=key)
            assert (r.status_code, r.json().get("field")) == (status, field), (body, r.text)
        r = httpx.post(
            f"{url}/recommend",
            content=b'{"user": ',
            headers={**key, "content-type": "application/json"},
        )
        assert (r.status_code, r.json()["field"]) == (400, "body")
        r = httpx.post(f"{url}/score", json={"user": "u1", "items": ["x", "y"]}, headers=key)
        assert (r.status_code, r.json()["field"]) == (422, "items")
        assert httpx.get(f"{url}/items/nope", headers=key).status_code == 404
        assert httpx.get(f"{url}/items/a3", headers=key).json()["title"] == "Thing 3"
        schema = httpx.get(f"{url}/openapi.json", headers=key).json()
        assert "examples" in str(schema["components"]["schemas"]["RecommendRequest"])


class _Slow:
    """An engine that takes 0.3 s a batch, to fill the queue; ``busy`` is set once one runs."""

    def __init__(self, engine) -> None:
        self._engine = engine
        self.busy = threading.Event()

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def recommend(self, *args, **kwargs):
        self.busy.set()
        time.sleep(0.3)
        return self._engine.recommend(*args, **kwargs)


def test_full_queue_answers_503_with_retry_after(runs):
    from lmrec.serve.load import load_engine

    _, lightgcn, _ = runs
    engine = _Slow(load_engine(lightgcn))

    async def fire(url):
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            body = {"user": "u1", "k": 3}
            first = asyncio.create_task(client.post("/recommend", json=body))
            # the worker holds the first job (out of the queue) before the rest arrive: one more
            # fits in the queue of one, the other six are turned away
            assert await asyncio.to_thread(engine.busy.wait, 30)
            rest = await asyncio.gather(*(client.post("/recommend", json=body) for _ in range(7)))
            return [await first, *rest]

    with serving(lightgcn, engine=engine, max_batch=1, queue_size=1) as url:
        rs = asyncio.run(fire(url))
    codes = sorted(r.status_code for r in rs)
    assert codes.count(200) >= 2 and codes.count(503) >= 1, codes
    assert set(codes) <= {200, 503}
    assert all(r.headers["retry-after"] == "1" for r in rs if r.status_code == 503)


def test_restart_serves_the_same_answers_and_pickles_are_refused(runs, tmp_path):
    from lmrec.errors import DataError
    from lmrec.serve.load import load_engine

    _, lightgcn, bdlm = runs
    body = {"user": "u3", "k": 5, "candidates_n": 8}
    answers = []
    for _ in range(2):
        with serving(bdlm) as url:
            answers.append(httpx.post(f"{url}/recommend", json=body).json())
    assert answers[0] == answers[1]
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(lightgcn, copy)
    (copy / "model.pt").write_bytes(b"\x80\x04")
    with pytest.raises(DataError, match=r"model\.pt.*unpickles"):
        load_engine(copy)


def test_llm_run_re_ranks_what_its_retriever_retrieves(runs, tmp_path):
    from lmrec.llm.run import llm_train

    spec, lightgcn, _ = runs
    config = {
        "model": "tiny-llama",
        "device": "cpu",
        "candidates": CANDIDATES,
        "eval_limit": 0,
        "tasks": ["topk"],
        "prompt": {"topk": "id-topk", "interaction": "id-interaction", "max_history": 4},
        "train": {"max_steps": 2, "batch_size": 2},
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        llm_train(spec, "lora", tmp_path / "llm", config)
    users, items, labels, dense = _test_lists(spec)
    with serving(tmp_path / "llm", retriever=str(lightgcn)) as url:
        ranks = _served_ranks(url, users, items, labels)
        answer = httpx.post(f"{url}/recommend", json={"user": "u2", "k": 4}).json()
    offline = read_ranks(tmp_path / "llm" / "topk_ranks.json")
    assert [offline[int(u)] for u in dense] == ranks.tolist()
    # the candidates are LightGCN's best 20 unseen items, re-ordered by the LLM's score
    scores = [x["llm_score"] for x in answer["items"]]
    assert answer["side"] == "llm" and scores == sorted(scores, reverse=True)


def test_the_command_serves_a_run(runs):
    import subprocess
    import sys

    _, lightgcn, _ = runs
    port = _free_port()
    cmd = [sys.executable, "-m", "lmrec.cli", "serve", str(lightgcn), "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/ready", timeout=5).status_code == 200:
                    break
            assert proc.poll() is None, proc.stdout.read().decode()
            time.sleep(0.2)
        answer = httpx.post(f"{url}/recommend", json={"user": "u0", "k": 3}).json()
        assert answer["side"] == "domain" and len(answer["items"]) == 3
    finally:
        proc.terminate()
        proc.wait(30)
    bad = subprocess.run(
        [sys.executable, "-m", "lmrec.cli", "serve", str(lightgcn / "nothing")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "no such run folder" in bad.stdout


def test_precision_is_the_runs_own_unless_overridden(runs):
    from lmrec.serve.load import load_engine
    from lmrec.utils.precision import resolve_precision

    _, _, bdlm = runs
    own = load_engine(bdlm).reranker.llm.lmrec_precision
    assert own is resolve_precision("auto", "cpu")  # the run's config: the default, auto
    assert load_engine(bdlm, precision="fp32").reranker.llm.lmrec_precision is None
    assert load_engine(bdlm, precision="bf16").reranker.llm.lmrec_precision is torch.bfloat16


@pytest.mark.skipif(
    not any(__import__("shutil").which(c) for c in ("g++", "c++", "clang++")),
    reason="torch.compile on a CPU needs a C++ compiler",
)
def test_compiled_llm_serves_the_eager_scores_and_is_compiled_at_load(runs):
    """--compile: the decoder layers compiled while loading (a warm-up batch), the scores the
    eager engine gives to float tolerance; the default follows the run (not compiled here)."""
    from lmrec.llm.scoring import decoder_layers
    from lmrec.serve.engine import Query
    from lmrec.serve.load import load_engine

    _, _, bdlm = runs
    eager = load_engine(bdlm)
    compiled = load_engine(bdlm, compile=True)
    assert not any(getattr(m, "lmrec_compiled", False) for m in decoder_layers(eager.reranker.llm))
    assert all(m.lmrec_compiled for m in decoder_layers(compiled.reranker.llm))
    queries = [Query(u, eager.histories[u]) for u in range(3)]
    cands = np.array([[0, 1, 2, 3], [4, 5, 6, 7], [1, 3, 5, 7]])
    for a, b in zip(eager.score(queries, cands), compiled.score(queries, cands), strict=True):
        np.testing.assert_allclose(a.llm, b.llm, atol=1e-3, rtol=1e-3)
        np.testing.assert_allclose(a.score, b.score, atol=1e-3, rtol=1e-3)
