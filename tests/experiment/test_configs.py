"""The shipped experiment configs: every one parses and validates; the BDLM ablation and lambda
sweep run end to end on a tiny Llama (same grid, same report sections, tiny budgets)."""

import copy
import json
from pathlib import Path

import pytest
import torch

from lmrec.bdlm.config import BDLMConfig
from lmrec.config import from_dict, load_file
from lmrec.experiment.config import experiment_from_dict, load_experiment
from lmrec.experiment.kinds import bdlm_config
from lmrec.experiment.runner import expand, run_experiment

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_config_validates(path):
    data = load_file(path)
    if "methods" not in data:  # a `lmrec train --config` file, not an experiment
        assert set(data) <= {"model", "train", "preprocess", "candidates"}
        return
    cells = expand(load_experiment(path))
    assert cells
    for cell in cells:
        if cell.method.kind == "bdlm":
            _, config, _ = bdlm_config(cell)
            from_dict(BDLMConfig, config, cell.id)  # raises on a bad BDLM section


def _shrink(node):
    """The same experiment at toy scale: tiny Llama (width 48), few rows, few users, 1 epoch."""
    if isinstance(node, list):
        return [_shrink(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _shrink(v) for k, v in node.items()}
    if out.get("model") == "smollm2-135m":
        out["model"] = "tiny-llama"
    if "dim" in out:
        out["dim"] = 48
    for key, value in (("rows_per_epoch", 4), ("eval_limit", 4), ("num_threads", 2)):
        if key in out:
            out[key] = value
    if "epochs" in out and "patience" in out:  # a domain model's train_config
        out["epochs"], out["progress"] = 1, False
    if "rows_per_epoch" in out:
        out["batch_size"], out["progress"] = 2, False
    if "max_history" in out:
        out["max_history"] = 3
    if out.get("device") == "auto":
        out["device"] = "cpu"
    return out


def _tiny(name: str) -> dict:
    data = _shrink(copy.deepcopy(load_file(CONFIGS / name)))
    data = {k: v for k, v in data.items() if not k.startswith("x-")}
    data["isolate"] = False
    data["candidates"] = {"sampler": "popularity", "seed": 0}
    return data


@pytest.mark.slow
def test_ablation_config_runs_end_to_end(tmp_path, metrics_from_ranks):
    torch.set_num_threads(2)
    data = _tiny("bdlm_ablation.yaml")
    cfg = experiment_from_dict(data)
    report = run_experiment(cfg, tmp_path).read_text()
    results = json.loads((tmp_path / "results.json").read_text())
    assert {c["status"] for c in results["cells"]} == {"finished"}
    by = results["metrics"]["ml-100k"]
    for name in data["ablation"]["methods"] + ["bdlm-ncf-llm", "bdlm-ncf-drs"]:
        cell = tmp_path / "cells" / "ml-100k" / name / "seed-0"
        metrics = json.loads((cell / "metrics.json").read_text())
        assert by[name]["topk/HR@1"]["mean"] == metrics["topk/HR@1"], name  # one seed
        metrics_from_ranks(metrics, cell / "run" / "topk_ranks.json")
    # w/o ET has no ID tokens; w/o PE starts from random rows; both pre-load nothing.
    shared = {json.loads((p / "preload.json").read_text()).get("init") for p in
              (tmp_path / "cells" / "ml-100k" / "_bdlm").iterdir()}  # fmt: skip
    assert shared == {"domain", "random", None}
    assert "## Ablation" in report and (tmp_path / "ablation.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_lambda_config_runs_end_to_end(tmp_path):
    torch.set_num_threads(2)
    data = _tiny("bdlm_lambda.yaml")
    report = run_experiment(experiment_from_dict(data), tmp_path).read_text()
    results = json.loads((tmp_path / "results.json").read_text())
    assert {c["status"] for c in results["cells"]} == {"finished"}
    assert "## Lambda sweep" in report
    for lam in ("0", "0.001", "0.01", "0.1", "1", "10"):
        assert f"| {lam} |" in report
    assert (tmp_path / "lambda.png").read_bytes()[:4] == b"\x89PNG"
