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
    # fp32: under bf16 the tiny model's yes/no scores tie to the last bit, and a batch padded
    # differently (3 users a process against 6) breaks ties differently
    "precision": "fp32",
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


# what `accelerate launch --config_file configs/accelerate/fsdp_full_shard.yaml` sets (on GPUs);
# under torchrun the same variables ask for FSDP on CPU processes
FSDP = {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "FSDP_RESHARD_AFTER_FORWARD": "true"}


def _torchrun(
    out, config: dict, tmp_path, processes: int = 2, mode: str = "lora", env: dict | None = None
) -> None:
    path = tmp_path / f"config-{out.name}.yaml"
    path.write_text(yaml.safe_dump(config))
    cmd = [
        sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
        f"--master_port={_free_port()}", "-m", "lmrec.cli", "llm", "train",
        "--dataset", "ml-100k", "--mode", mode, "--out", str(out), "--config", str(path),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
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


# FSDP: the same step, bit for bit, except where a value is summed over the shards. Gradient
# clipping's norm is (each process's squared norm, then their sum, a different rounding than
# one sum over the whole tensors), so with clipping the losses agree to float tolerance, and
# without it the weights, losses and metrics are identical.
# 5 users: one process scores 3, the other 2, so their evaluation forwards differ in number
# (which only works because the weights are gathered whole after training)
NO_CLIP = {**CONFIG, "eval_limit": 5, "train": {**CONFIG["train"], "grad_clip": 0.0}}
NO_CLIP_REF = {**NO_CLIP, "train": {**NO_CLIP["train"], "accumulation_steps": 2}}


def _weights(run) -> dict:
    from safetensors.torch import load_file

    folder = sorted((run / "checkpoints").glob("step-*"))[-1]
    return load_file(str(folder / "llm" / "trainable.safetensors"))


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["full", "lora"])
def test_fsdp_two_processes_train_and_score_like_one(tmp_path, mode):
    one = tmp_path / "one"
    ref = llm_train("ml-100k", mode, one, NO_CLIP_REF)
    two = tmp_path / "two"
    _torchrun(two, NO_CLIP, tmp_path, mode=mode, env=FSDP)
    got = _metrics(two)
    assert got["train/processes"] == 2
    assert json.loads((two / "train.json").read_text())["engine"] == "fsdp"
    assert json.loads((one / "train.json").read_text())["engine"] == "single"
    assert _losses(two) == _losses(one)
    mine, theirs = _weights(two), _weights(one)
    assert mine.keys() == theirs.keys()
    for name in theirs:  # gathered whole from the shards, bit for bit
        assert mine[name].equal(theirs[name]), name
    for key in ("topk/HR@1", "topk/NDCG@20", "interaction/AUC", "interaction/F1"):
        assert got[key] == pytest.approx(ref[key], abs=TOL), key
    ranks = [json.loads((run / "topk_ranks.json").read_text()) for run in (one, two)]
    assert ranks[1] == ranks[0] and len(set(ranks[1]["users"])) == 5


@pytest.mark.slow
def test_fsdp_with_clipping_follows_one_process_to_float_tolerance(tmp_path):
    one = tmp_path / "one"
    llm_train("ml-100k", "lora", one, REF)
    two = tmp_path / "two"
    _torchrun(two, CONFIG, tmp_path, env=FSDP)
    assert json.loads((two / "train.json").read_text())["engine"] == "fsdp"
    np.testing.assert_allclose(_losses(two), _losses(one), rtol=TOL)


@pytest.mark.slow
def test_fsdp_processes_with_unequal_micro_batches_stay_in_step(tmp_path):
    """A global batch of 3 rows, 2 micro-batches: one process has 2 rows (2 micro-batches), the
    other 1 (1 micro-batch); FSDP's forwards and backwards are collectives, so the second
    joins the other's second micro-batch with a zero-weight row instead of hanging. One
    process with 3 micro-batches of 1 row computes the same rows."""
    small = {**NO_CLIP, "train": {**NO_CLIP["train"], "batch_size": 3, "accumulation_steps": 2}}
    ref = {**small, "train": {**small["train"], "accumulation_steps": 3}}
    one = tmp_path / "one"
    llm_train("ml-100k", "lora", one, ref)
    two = tmp_path / "two"
    _torchrun(two, small, tmp_path, env=FSDP)
    np.testing.assert_allclose(_losses(two), _losses(one), rtol=TOL)


@pytest.mark.slow
def test_fsdp_checkpoints_resume_across_process_counts(tmp_path):
    """2 FSDP processes to step 2, 1 process to step 3, 2 FSDP processes to step 4: the same
    weights, losses and metrics as 4 steps in one process (checkpoints hold whole tensors;
    each resume cuts its shares out of them, optimiser state included)."""
    full = tmp_path / "full"
    ref = llm_train("ml-100k", "lora", full, NO_CLIP_REF)
    run = tmp_path / "run"

    def steps(n):
        return {**NO_CLIP, "train": {**NO_CLIP["train"], "max_steps": n}}

    _torchrun(run, steps(2), tmp_path, env=FSDP)
    (run / "metrics.json").unlink()
    llm_train(
        "ml-100k", "lora", run, {**NO_CLIP_REF, "train": {**NO_CLIP_REF["train"], "max_steps": 3}}
    )
    assert json.loads((run / "train.json").read_text())["resumed_from"] == 2
    (run / "metrics.json").unlink()
    _torchrun(run, steps(4), tmp_path, env=FSDP)
    assert json.loads((run / "train.json").read_text())["resumed_from"] == 3
    assert _losses(run) == _losses(full)
    mine, theirs = _weights(run), _weights(full)
    for name in theirs:
        assert mine[name].equal(theirs[name]), name
    got = _metrics(run)
    for key in ("topk/HR@1", "topk/NDCG@20", "interaction/AUC"):
        assert got[key] == pytest.approx(ref[key], abs=TOL), key


def test_deepspeed_launches_are_refused_clearly(monkeypatch):
    from lmrec.errors import ConfigError
    from lmrec.utils import distributed

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    distributed.processes.cache_clear()
    try:
        with pytest.raises(ConfigError, match="DeepSpeed.*fsdp_full_shard.yaml"):
            distributed.processes()
    finally:
        distributed.processes.cache_clear()


def test_fsdp_version_1_is_refused_clearly(monkeypatch):
    from lmrec.errors import ConfigError
    from lmrec.llm.resolve import tiny_llama
    from lmrec.utils.distributed import _fully_shard

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "1")
    model, _ = tiny_llama("word")
    with pytest.raises(ConfigError, match="fsdp_version: 2"):
        _fully_shard(model)
