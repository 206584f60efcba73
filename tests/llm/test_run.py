"""End to end on ML-100K (shipped by the recbole wheel) with the tiny Llama: a few steps only."""

import pytest
import torch
from safetensors.torch import load_file

from lmrec.config import from_dict
from lmrec.errors import ConfigError
from lmrec.llm.config import LLMRunConfig
from lmrec.llm.run import llm_evaluate, llm_train

KEYS = [
    "topk/HR@1",
    "topk/HR@2",
    "topk/NDCG@20",
    "interaction/precision",
    "interaction/recall",
    "interaction/F1",
    "interaction/AUC",
]
BASE = {
    "model": "tiny-llama",
    "device": "cpu",
    "candidates": {"sampler": "popularity"},
    "eval_limit": 4,
    "train": {"max_steps": 2, "batch_size": 2},
    "prompt": {"max_history": 4},
}


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="llm.train: unknown key"):
        from_dict(LLMRunConfig, {"train": {"lr_token": 1}}, "llm")
    with pytest.raises(ConfigError, match="preload.init=domain needs"):
        from_dict(LLMRunConfig, {"preload": {"init": "domain"}}, "llm")


@pytest.mark.slow
def test_train_then_evaluate_reproduces_the_metrics(tmp_path, metrics_from_ranks):
    metrics = llm_train("ml-100k", "lora", tmp_path / "run", BASE)
    metrics_from_ranks(metrics, tmp_path / "run" / "topk_ranks.json")
    assert metrics["train/steps"] == 2
    again = llm_evaluate(tmp_path / "run")
    assert all(again[k] == pytest.approx(metrics[k], abs=1e-9) for k in KEYS)
    assert (tmp_path / "run" / "metrics.json").is_file()


@pytest.mark.slow
def test_preloading_from_a_trained_domain_model(tmp_path):
    cfg = {
        **BASE,
        "tasks": ["topk"],
        "examples": {"tasks": ["topk"]},
        "preload": {
            "init": "domain",
            "domain_model": "mf",
            "domain_config": {"dim": 48},
            "domain_train": {"epochs": 1, "progress": False},
        },
    }
    llm_train("ml-100k", "extra", tmp_path / "run", cfg)
    from lmrec.models import build_model
    from lmrec.train.checkpoint import load_weights

    mf = build_model("mf", 943, 1682, {"dim": 48})
    load_weights(mf, tmp_path / "run" / "domain" / "best.safetensors")
    users, items = mf.user_item_embeddings()
    rows = load_file(str(tmp_path / "run" / "id_rows.safetensors"))["rows"]
    assert torch.equal(rows[:943], users.detach()) and torch.equal(rows[943:], items.detach())
