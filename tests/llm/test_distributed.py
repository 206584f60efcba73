"""`lmrec llm train` under 2 processes (torchrun, gloo on CPU) against 1 process.

The same config and global batch must give the same per-step losses and the same metrics,
score every user exactly once, and a run stopped under 2 processes must resume under 1 to the
same end. The reference is one process with ``accumulation_steps: 2``: its two micro-batches
are the two processes' shards, padded alike, so only the order in which the halves' gradients
are summed differs (float tolerance). Against one micro-batch of 6 the losses differ by ~0.1%
at these learning rates, in one process alone too: padding changes the last bits of a
forward, and Adam's first steps (about lr x sign(gradient)) amplify them.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import yaml

from lmrec.llm.run import llm_train

CONFIG = {
    "model": "tiny-llama",
    "device": "cpu",
    "num_threads": 1,
    "candidates": {"sampler": "popularity"},
    "eval_limit": 6,  # 3 users a process
    "train": {"max_steps": 4, "batch_size": 6, "lr": 1e-2, "lr_tokens": 1e-1, "warmup_steps": 1},
    "prompt": {"max_history": 4},
}
REF = {**CONFIG, "train": {**CONFIG["train"], "accumulation_steps": 2}}
TOL = 1e-4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(out, config: dict, tmp_path, processes: int = 2) -> None:
    path = tmp_path / f"config-{out.name}.yaml"
    path.write_text(yaml.safe_dump(config))
    cmd = [
        sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
        f"--master_port={_free_port()}", "-m", "lmrec.cli", "llm", "train",
        "--dataset", "ml-100k", "--mode", "lora", "--out", str(out), "--config", str(path),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _losses(run) -> list[float]:
    folder = sorted((run / "checkpoints").glob("step-*"))[-1]
    return [r["loss"] for r in json.loads((folder / "state.json").read_text())["recent"]]


def _metrics(run) -> dict:
    return json.loads((run / "metrics.json").read_text())


@pytest.mark.slow
def test_two_processes_train_and_score_like_one(tmp_path):
    one = tmp_path / "one"
    ref = llm_train("ml-100k", "lora", one, REF)
    two = tmp_path / "two"
    _torchrun(two, CONFIG, tmp_path)
    got = _metrics(two)
    assert got["train/processes"] == 2 and ref["train/processes"] == 1
    np.testing.assert_allclose(_losses(two), _losses(one), rtol=TOL)
    for key in ("topk/HR@1", "topk/NDCG@20", "interaction/AUC", "interaction/F1"):
        assert got[key] == pytest.approx(ref[key], abs=TOL), key
    # every one of the 6 users scored once, in the order one process scores them
    ranks = [json.loads((run / "topk_ranks.json").read_text()) for run in (one, two)]
    assert ranks[1]["users"] == ranks[0]["users"] and len(set(ranks[1]["users"])) == 6
    np.testing.assert_array_equal(ranks[1]["rank"], ranks[0]["rank"])


@pytest.mark.slow
def test_a_run_stopped_under_two_processes_resumes_under_one(tmp_path):
    full = tmp_path / "full"
    ref = llm_train("ml-100k", "lora", full, REF)
    cut = tmp_path / "cut"
    half = {**CONFIG, "train": {**CONFIG["train"], "max_steps": 2}}
    _torchrun(cut, half, tmp_path)
    assert json.loads((cut / "train.json").read_text())["steps"] == 2
    (cut / "metrics.json").unlink()  # the 2-step run's own result
    resumed = llm_train("ml-100k", "lora", cut, REF)
    assert json.loads((cut / "train.json").read_text())["resumed_from"] == 2
    np.testing.assert_allclose(_losses(cut), _losses(full), rtol=TOL)
    assert resumed["topk/HR@1"] == pytest.approx(ref["topk/HR@1"], abs=TOL)
    assert resumed["interaction/AUC"] == pytest.approx(ref["interaction/AUC"], abs=TOL)


def test_trainers_that_do_not_shard_refuse_a_multi_process_launch(monkeypatch):
    from lmrec.errors import ConfigError
    from lmrec.utils.distributed import require_one_process

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="bdlm joint training runs in one process"):
        require_one_process("bdlm joint training")
