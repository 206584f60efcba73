"""`lmrec experiment` under torchrun (2 processes, gloo on CPU).

The llm (and bdlm) cells shard their training and evaluation across the processes; cells of the
kinds that train in one process must have finished before the launch, and the launch names
them before any work. The reference for the launched LLM cell is the same cell in one process
with ``accumulation_steps: 2`` (its two micro-batches are the two processes' shards; see
tests/llm/test_distributed.py for why).
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import yaml

LLM_TRAIN = {"max_steps": 3, "batch_size": 4, "lr": 1e-2, "lr_tokens": 1e-1, "warmup_steps": 1}


def _experiment(out, accumulation_steps: int = 1) -> dict:
    return {
        "name": "launched",
        "out": str(out),
        "seeds": [0],
        "candidates": {"sampler": "popularity"},
        "datasets": ["ml-100k"],
        "methods": [
            {"name": "popularity"},
            {
                "name": "lightgcn",
                "model_config": {"dim": 32, "n_layers": 1},
                "train_config": {"epochs": 1, "progress": False},
            },
            {
                "name": "tiny-bdlm",
                "kind": "bdlm",
                "model": "tiny-llama",
                "train_config": {
                    "batch_size": 4,
                    "rows_per_epoch": 8,
                    "lam": 0.5,
                    "progress": False,
                    "mutual_reduction": "row",
                    "num_threads": 1,
                },
                "options": {
                    "side": "llm",
                    "llm": {
                        "device": "cpu",
                        "num_threads": 1,
                        "eval_limit": 6,
                        "tasks": ["topk"],
                        "mode": {"mode": "full"},
                        "prompt": {"topk": "id-topk", "max_history": 4},
                        "examples": {"tasks": ["topk"], "n_candidates": 5, "negatives": "uniform"},
                    },
                    "domain": {"from_method": "lightgcn"},
                    "projection": "orthogonal",
                    "evaluate": ["llm"],
                },
            },  # fmt: skip
            {
                "name": "tiny-lora",
                "kind": "llm",
                "model": "tiny-llama",
                "train_config": {**LLM_TRAIN, "accumulation_steps": accumulation_steps},
                "options": {
                    "device": "cpu",
                    "num_threads": 1,
                    "eval_limit": 6,  # 3 users a process
                    "tasks": ["topk"],
                    "mode": {"mode": "lora"},
                    "prompt": {"max_history": 4},
                },
            },
        ],
    }


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(config: dict, tmp_path) -> subprocess.CompletedProcess:
    path = tmp_path / "launched.yaml"
    path.write_text(yaml.safe_dump(config))
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        f"--master_port={_port()}", "-m", "lmrec.cli", "experiment", str(path),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def _cell(out, method: str):
    return out / "cells" / "ml-100k" / method / "seed-0"


def test_the_refusal_gives_the_command_with_the_runs_own_folder_and_seeds(tmp_path, monkeypatch):
    from lmrec.errors import ConfigError
    from lmrec.experiment.runner import run_experiment
    from lmrec.utils import distributed

    monkeypatch.setattr(distributed, "launched", lambda: True)  # as under torchrun
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(_experiment(tmp_path / "default")))
    with pytest.raises(ConfigError) as err:
        run_experiment(path, tmp_path / "mine", seeds=[0])
    assert f"lmrec experiment {path} --out {tmp_path / 'mine'} --seeds 0 --only " in str(err.value)
    assert "--only popularity,lightgcn" in str(err.value)
    assert not (tmp_path / "mine").exists() and not (tmp_path / "default").exists()


def test_a_launch_refuses_cells_that_would_train_a_domain_model_inside(tmp_path, monkeypatch):
    from lmrec.errors import ConfigError
    from lmrec.experiment.runner import run_experiment
    from lmrec.utils import distributed

    monkeypatch.setattr(distributed, "launched", lambda: True)
    config = _experiment(tmp_path / "exp")
    bdlm = config["methods"][2]
    bdlm["options"]["domain"] = {"model": "lightgcn"}  # trained inside the cell
    config["methods"] = [bdlm]
    with pytest.raises(ConfigError, match="ml-100k/tiny-bdlm/seed-0 would train their domain"):
        run_experiment(config)


@pytest.mark.slow
def test_a_launch_names_the_one_process_cells_that_must_run_first(tmp_path):
    out = tmp_path / "exp"
    done = _launch(_experiment(out), tmp_path)
    assert done.returncode != 0
    text = done.stdout + done.stderr
    assert "ml-100k/popularity/seed-0" in text, text[-3000:]
    assert "--only popularity,lightgcn" in text, text[-3000:]
    assert not _cell(out, "tiny-lora").exists()  # refused before any work


@pytest.mark.slow
def test_launched_experiment_trains_its_llm_cell_on_two_processes_like_one(tmp_path):
    from lmrec.experiment.runner import run_experiment

    ref_out = tmp_path / "one"
    run_experiment({**_experiment(ref_out, accumulation_steps=2), "isolate": False})
    out = tmp_path / "two"
    run_experiment({**_experiment(out), "isolate": False}, only=["popularity", "lightgcn"])
    done = _launch(_experiment(out), tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    got = json.loads((_cell(out, "tiny-lora") / "metrics.json").read_text())
    ref = json.loads((_cell(ref_out, "tiny-lora") / "metrics.json").read_text())
    assert got["train/processes"] == 2 and ref["train/processes"] == 1
    assert got["topk/HR@1"] == pytest.approx(ref["topk/HR@1"], abs=1e-4)
    assert got["train/final_loss"] == pytest.approx(ref["train/final_loss"], rel=1e-4)
    ranks = [
        json.loads((_cell(o, "tiny-lora") / "run" / "topk_ranks.json").read_text())
        for o in (ref_out, out)
    ]
    assert ranks[1]["users"] == ranks[0]["users"] and len(set(ranks[1]["users"])) == 6
    np.testing.assert_array_equal(ranks[1]["rank"], ranks[0]["rank"])
    # one record of the cell (written by the main process) and the report over both methods
    attempts = json.loads((_cell(out, "tiny-lora") / "cell.json").read_text())["attempts"]
    assert [a["status"] for a in attempts] == ["finished"]
    results = json.dumps(json.loads((out / "results.json").read_text()))
    assert (out / "report.md").is_file() and "tiny-lora" in results and "tiny-bdlm" in results

    # the BDLM cell trained on both processes (its run checks M is the same on both) and scored
    # every user once; BDLM's 2-against-1 equality is tests/bdlm/test_distributed.py's
    bdlm = _cell(out, "tiny-bdlm")
    attempts = json.loads((bdlm / "cell.json").read_text())["attempts"]
    assert [a["status"] for a in attempts] == ["finished"]
    ranks = json.loads((bdlm / "run" / "topk_ranks.json").read_text())
    assert sorted(ranks["users"]) == sorted(set(ranks["users"])) and len(ranks["users"]) == 6
