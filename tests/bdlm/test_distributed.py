"""BDLM's joint training under 2 processes (torchrun, gloo on CPU) against 1 process.

Each process computes its shard of every step's rows; the mutual losses and M's writes cover
the whole batch on every process, from weights the engine (DDP or FSDP) keeps equal, so M stays
identical on every process (checked after training; the run fails otherwise). The per-step
losses and M match one process within float tolerance: the shards are padded apart, which
changes the last bits.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

CONFIG = {
    "llm": {
        "model": "tiny-llama",
        "device": "cpu",
        "num_threads": 1,
        "eval_limit": 6,
        "mode": {"mode": "full"},
        "prompt": {"topk": "id-topk", "interaction": "id-interaction", "max_history": 4},
        "examples": {"tasks": ["topk"], "n_candidates": 5, "negatives": "uniform"},
    },
    "joint": {
        "batch_size": 4, "rows_per_epoch": 13, "epochs": 1, "lam": 0.5, "progress": False,
        "mutual_reduction": "row", "listwise_weight": 1.0, "num_threads": 1,
    },
    "candidates": {"sampler": "popularity"},
    "projection": "orthogonal",
}  # fmt: skip


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _losses(run) -> list[dict]:
    folder = sorted((run / "checkpoints").glob("step-*"))[-1]
    return json.loads((folder / "state.json").read_text())["recent"]


# what `accelerate launch --config_file configs/accelerate/fsdp_full_shard.yaml` sets
FSDP = {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "FSDP_RESHARD_AFTER_FORWARD": "true"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A domain model (trained first, in one process) and the one-process BDLM run on it."""
    from lmrec.bdlm.run import run_bdlm
    from lmrec.train.run import train_run

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("reference")
    domain = tmp / "domain"
    train_run(
        "lightgcn",
        "ml-100k",
        out_dir=domain,
        model_config={"dim": 32, "n_layers": 1},
        train_config={"epochs": 1, "progress": False},
        candidates=CONFIG["candidates"],
    )
    config = {**CONFIG, "domain": {"run": str(domain)}}
    one = tmp / "one"
    return config, one, run_bdlm("ml-100k", config, one)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["ddp", "fsdp"])
def test_joint_training_on_two_processes_matches_one_and_keeps_m_identical(
    tmp_path, reference, engine
):
    """DDP, and FSDP sharding the LLM (its forwards collectives: every process computes the
    features of all rows, and M's rows are read while the embedding is whole)."""
    config, one, ref = reference
    two = tmp_path / "two"
    path = tmp_path / "bdlm.yaml"
    path.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           f"--master_port={_port()}", "-m", "lmrec.cli", "bdlm", "train",
           "--dataset", "ml-100k", "--out", str(two), "--config", str(path)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(FSDP if engine == "fsdp" else {})}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    train = json.loads((two / "train.json").read_text())
    # 13 rows in batches of 4: the last batch has 1 row, so one process joins with weight 0
    assert train["processes"] == 2 and train["steps"] == 4  # M was checked equal on both
    assert train["engine"] == engine
    got = json.loads((two / "metrics.json").read_text())
    for a, b in zip(_losses(two), _losses(one), strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-3, abs=1e-5), key
    m1, m2 = (load_file(str(run / "sharing.safetensors")) for run in (one, two))
    for key in ("users", "items"):
        np.testing.assert_allclose(m2[key].numpy(), m1[key].numpy(), rtol=1e-3, atol=1e-5)
    assert got["llm"]["eval/users"] == ref["llm"]["eval/users"] == 6.0
    ranks = json.loads((two / "topk_ranks_drs.json").read_text())
    assert len(set(ranks["users"])) == 6  # every user scored once
