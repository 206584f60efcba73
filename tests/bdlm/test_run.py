"""run_bdlm and the bdlm / llm experiment cell kinds (end to end with the tiny Llama)."""

from pathlib import Path

import pytest
import torch

from lmrec.bdlm.config import BDLMConfig
from lmrec.bdlm.sharing import SharingModule
from lmrec.config import from_dict
from lmrec.errors import ConfigError, DataError

TABLE3 = ["topk/HR@1", "topk/HR@2", "interaction/precision", "interaction/recall"]
TINY_LLM = {
    "device": "cpu",
    "eval_limit": 4,
    "prompt": {"topk": "id-topk", "interaction": "id-interaction", "max_history": 4},
    "examples": {"n_candidates": 5, "negatives": "uniform"},
}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"llm": {"train": {"epochs": 3}}}, "set joint.epochs"),
        ({"llm": {"preload": {"init": "domain", "domain_model": "mf"}}}, "use bdlm.preload"),
        ({"llm": {"candidates": {"sampler": "uniform"}}}, "top level"),
        ({"llm": {"id_tokens": False}}, "set bdlm.preload: false"),
        ({"joint": {"lamda": 0.1}}, "bdlm.joint: unknown key"),
        ({"evaluate": ["both"]}, "bdlm.evaluate"),
    ],
)
def test_config_errors_name_the_field(config, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(BDLMConfig, config, "bdlm")


def test_llm_section_is_the_side_config_without_what_bdlm_owns():
    from lmrec.config import to_dict
    from lmrec.llm.config import LLMSideConfig
    from lmrec.llm.finetune import LLMOptimConfig

    cfg = from_dict(BDLMConfig, {"llm": {"train": {"lr": 3e-4}, "seed": 2}}, "bdlm")
    assert type(cfg.llm) is LLMSideConfig and type(cfg.llm.train) is LLMOptimConfig
    assert cfg.llm.train.lr == 3e-4
    saved = to_dict(cfg)["llm"]
    for owned in ("preload", "preprocess", "candidates", "data_dir"):
        assert owned not in saved
    assert set(saved["train"]) == {
        "lr",
        "lr_tokens",
        "weight_decay",
        "warmup_steps",
        "grad_clip",
        "max_length",
        "gradient_checkpointing",
    }


def test_a_run_saved_with_the_whole_llm_run_config_still_loads_and_is_the_same_run():
    """Runs written before the LLM side had its own config saved a whole LLMRunConfig (with the
    defaults BDLM refused to change); they reload, and a resumed run counts as the same run."""
    from lmrec.bdlm.config import saved_llm_side
    from lmrec.bdlm.run import _comparable
    from lmrec.config import to_dict
    from lmrec.llm.config import LLMRunConfig

    cfg = from_dict(BDLMConfig, {"llm": {"train": {"lr": 3e-4}}, "joint": {"lam": 0.2}}, "bdlm")
    old_llm = to_dict(LLMRunConfig(**{**to_dict(cfg.llm), "train": {"lr": 3e-4}}))
    assert {"preload", "candidates"} <= set(old_llm) and "epochs" in old_llm["train"]
    old = {"dataset": "ml-100k", "bdlm": {**to_dict(cfg), "llm": old_llm}}

    section = {**old["bdlm"], "llm": saved_llm_side(old["bdlm"]["llm"])}
    assert from_dict(BDLMConfig, section, "saved") == cfg
    assert _comparable(old) == _comparable({"dataset": "ml-100k", "bdlm": to_dict(cfg)})

    # the rows were seeded by preload.seed (0) then, by llm.seed now: another seed cannot reload
    with pytest.raises(DataError, match="llm.seed 3"):
        saved_llm_side({**old_llm, "seed": 3})

    # a value BDLM never allowed is kept, so the check names it instead of dropping it
    old_llm["train"]["epochs"] = 3
    with pytest.raises(ConfigError, match=r"saved.llm.train.epochs.*joint.epochs"):
        from_dict(BDLMConfig, {**section, "llm": saved_llm_side(old_llm)}, "saved")


def test_text_only_config_is_accepted_without_sharing():
    cfg = from_dict(
        BDLMConfig, {"llm": {"id_tokens": False}, "preload": False, "joint": {"lam": 0}}, "bdlm"
    )
    assert not cfg.llm.id_tokens and cfg.joint.lam == 0


@pytest.mark.slow
def test_experiment_runs_both_sides_from_one_joint_training(tmp_path, metrics_from_ranks):
    from lmrec.experiment.runner import run_experiment
    from lmrec.utils.io import read_json

    torch.set_num_threads(2)
    joint = {"batch_size": 2, "rows_per_epoch": 4, "progress": False, "mutual_reduction": "row"}
    bdlm = {"llm": TINY_LLM, "domain": {"from_method": "lightgcn"}}
    config = {
        "name": "tiny bdlm",
        "seeds": [0],
        "candidates": {"sampler": "popularity"},
        "datasets": ["ml-100k"],
        "isolate": False,
        "methods": [
            {
                "name": "lightgcn",
                "model_config": {"dim": 48, "n_layers": 1},
                "train_config": {"epochs": 1, "progress": False, "valid_metric": "topk/HR@1"},
            },
            *(
                {
                    "name": f"bdlm-{side}",
                    "kind": "bdlm",
                    "model": "tiny-llama",
                    "train_config": joint,
                    "options": {**bdlm, "side": side},
                }
                for side in ("llm", "drs")
            ),
        ],
        "ablation": {"methods": ["bdlm-llm", "bdlm-drs"]},
    }
    report = run_experiment(config, tmp_path)
    cells = tmp_path / "cells" / "ml-100k"
    llm, drs = (read_json(cells / f"bdlm-{s}" / "seed-0" / "metrics.json") for s in ("llm", "drs"))
    # every reported top-K figure is what the 4 users' saved ranks give
    for side, metrics in (("llm", llm), ("drs", drs)):
        metrics_from_ranks(
            metrics, cells / f"bdlm-{side}" / "seed-0" / "run" / "topk_ranks.json", 4
        )
    domain = {k.removeprefix("domain/"): v for k, v in drs.items() if k.startswith("domain/")}
    metrics_from_ranks(domain, cells / "bdlm-drs" / "seed-0" / "run" / "topk_ranks_domain.json", 4)
    for metrics in (llm, drs):  # F1 is the harmonic mean of the precision and recall reported
        p, r = metrics["interaction/precision"], metrics["interaction/recall"]
        assert metrics["interaction/F1"] == pytest.approx(2 * p * r / (p + r) if p + r else 0.0)
    assert "domain/topk/HR@1" in drs and drs["eval/users"] == 4.0
    shared = list((cells / "_bdlm").iterdir())
    assert len(shared) == 1  # one joint training for both rows
    run = shared[0]
    assert read_json(run / "metrics.json")["llm"]["topk/HR@1"] == llm["topk/HR@1"]
    # pre-loaded from the LightGCN cell of the same seed, and M saved beside the run
    assert read_json(run / "config.json")["bdlm"]["domain"]["run"].endswith("lightgcn/seed-0/run")
    m = SharingModule.load(run / "sharing.safetensors")
    assert m.users.shape == (943, 48) and m.reduction == "row"
    assert "BDLM-drs" in report.read_text() or "bdlm-drs" in report.read_text()


def _run_one_method(tmp_path, method: dict) -> Path:
    """Run a one-method, one-seed ML-100K experiment in-process; return the cell's folder."""
    from lmrec.experiment.runner import run_experiment

    torch.set_num_threads(2)
    config = {
        "name": f"tiny {method['name']}",
        "candidates": {"sampler": "popularity"},
        "datasets": ["ml-100k"],
        "isolate": False,
        "paper_reference": False,
        "methods": [method],
    }
    run_experiment(config, tmp_path)
    return tmp_path / "cells" / "ml-100k" / method["name"] / "seed-0"


@pytest.mark.slow
def test_llm_cell_kind_runs_llm_train(tmp_path, metrics_from_ranks):
    from lmrec.utils.io import read_json

    run = _run_one_method(
        tmp_path,
        {
            "name": "sft",
            "kind": "llm",
            "model": "tiny-llama",
            "train_config": {"max_steps": 2, "batch_size": 2},
            "options": {**TINY_LLM, "mode": {"mode": "lora"}},
        },
    )
    metrics = read_json(run / "metrics.json")
    assert metrics["train/steps"] == 2
    metrics_from_ranks(metrics, run / "run" / "topk_ranks.json", 4)
    assert read_json(run / "run" / "config.json")["llm"]["train"]["seed"] == 0


@pytest.mark.slow
def test_gpt4sm_cell_kind_runs_gpt4sm(tmp_path, metrics_from_ranks):
    from lmrec.utils.io import read_json

    cell = _run_one_method(
        tmp_path,
        {
            "name": "gpt4sm",
            "kind": "gpt4sm",
            "model": "tiny-llama",
            "model_config": {"dim": 8, "hidden": 8},
            "train_config": {"epochs": 1, "progress": False},
        },
    )
    metrics = read_json(cell / "metrics.json")
    assert metrics["train/epochs"] == 1
    metrics_from_ranks(metrics, cell / "run" / "topk_ranks.json", 943)  # every test user
    saved = read_json(cell / "run" / "config.json")
    assert saved["llm"] == "tiny-llama" and saved["train"]["seed"] == 0
    assert (cell / "run" / "features.safetensors").is_file()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"joint": {"listwise_weight": 1.0}, "llm": {"id_tokens": False}}, "listwise_weight"),
        ({"cascade": {"use_llm_score": True}}, "use_llm_score"),
        ({"cascade_refit": {"rows": "lists"}}, "use_llm_score true"),
        ({"projection": "pca"}, "bdlm.projection"),
    ],
)
def test_recipe_config_errors_name_the_field(config, message):
    if config.get("llm", {}).get("id_tokens") is False:
        config = {**config, "preload": False, "joint": {**config["joint"], "lam": 0}}
    with pytest.raises(ConfigError, match=message):
        from_dict(BDLMConfig, config, "bdlm")


@pytest.mark.slow
def test_the_recipe_runs_end_to_end_and_its_ranks_match_its_metrics(tmp_path):
    """Test-shaped rows, protocol negatives, listwise loss, a 16-wide LightGCN projected into the
    48-wide tiny Llama, the LLM-score column fitted on the validation lists; every user scored."""
    import numpy as np

    from lmrec.bdlm.run import ranks_file, run_bdlm
    from lmrec.eval.significance import read_ranks
    from lmrec.utils.io import read_json

    torch.set_num_threads(2)
    llm = {
        **TINY_LLM,
        "model": "tiny-llama",
        "eval_limit": 0,
        "tasks": ["topk"],
        "mode": {"mode": "full"},
        "examples": {"tasks": ["topk"], "n_candidates": 20, "negatives": "candidates"},
    }
    config = {
        "llm": llm,
        "domain": {
            "model": "lightgcn",
            "model_config": {"dim": 16, "n_layers": 1},
            "train_config": {"epochs": 1, "progress": False},
        },
        "projection": "orthogonal",
        "joint": {
            "rows": "recent",
            "rows_per_epoch": 32,
            "batch_size": 16,
            "epochs": 1,
            "listwise_weight": 1.0,
            "mutual_reduction": "row",
            "progress": False,
        },
        "cascade": {"use_llm_feature": False, "use_llm_score": True},
        "cascade_refit": {"rows": "lists", "steps": 50},
        "candidates": {"sampler": "popularity"},
    }
    metrics = run_bdlm("ml-100k", config, tmp_path)
    assert metrics["llm"]["eval/users"] == 943.0
    assert "train/refit/llm_score_weight" not in metrics  # train scalars sit under "train"
    assert "refit/llm_score_weight" in metrics["train"]
    for side in ("llm", "drs", "domain"):
        ranks = read_ranks(tmp_path / ranks_file(side))
        assert len(ranks) == 943
        hits = np.mean([r == 1 for r in ranks.values()])
        assert metrics[side]["topk/HR@1"] == pytest.approx(hits)
    m = SharingModule.load(tmp_path / "sharing.safetensors")
    assert m.users.shape == (943, 16) and m.llm_projection.shape == (16, 48)
    assert read_json(tmp_path / "preload.json")["projection"] == "orthogonal"
