import dataclasses
import json

import numpy as np
import pytest
import torch

from lmrec.errors import ConfigError, DataError
from lmrec.models import MODELS, build_model, model_config_class
from lmrec.train.loop import latest_checkpoint
from lmrec.train.run import evaluate_run, train_run
from lmrec.train.trainer import TrainConfig, train

FAST = {"epochs": 2, "batch_size": 64, "lr": 0.01, "progress": False, "num_threads": 1}
CANDIDATES = {"sampler": "uniform", "seed": 0}


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """A 40-user JSON-layout dataset with four planted taste groups; caches under tmp_path."""
    monkeypatch.setenv("LMREC_CACHE_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    inter = {}
    for u in range(40):
        own = [i for i in range(48) if i % 4 == u % 4]
        inter[f"u{u}"] = [f"i{i}" for i in rng.choice(own, 10, replace=False)]
    (tmp_path / "toy.inter.json").write_text(json.dumps(inter))
    titles = {f"i{i}": {"title": f"Item {i}"} for i in range(48)}
    (tmp_path / "toy.item.json").write_text(json.dumps(titles))
    return f"json:{tmp_path}/toy"


def test_train_run_writes_the_run_folder_and_evaluate_run_reproduces_it(
    toy, tmp_path, metrics_from_ranks
):
    out = tmp_path / "run"
    metrics = train_run("mf", toy, out_dir=out, train_config=FAST, candidates=CANDIDATES)
    for name in ("config.json", "user_ids.json", "item_ids.json", "protocol.json",
                 "metrics.json", "best.safetensors"):  # fmt: skip
        assert (out / name).is_file(), name
    assert (latest_checkpoint(out) / "model" / "model.safetensors").is_file()
    assert json.loads((out / "metrics.json").read_text()) == metrics
    metrics_from_ranks(metrics, out / "topk_ranks.json", 40)  # the toy set's 40 users
    for key in ("interaction/precision", "interaction/recall", "interaction/F1",
                "interaction/AUC", "full/HR@10", "full/NDCG@10", "full/Recall@10"):  # fmt: skip
        assert key in metrics, key
    p, r = metrics["interaction/precision"], metrics["interaction/recall"]
    assert metrics["interaction/F1"] == pytest.approx(2 * p * r / (p + r) if p + r else 0.0)
    # one positive per user: Recall@10 over all items is HR@10
    assert metrics["full/Recall@10"] == pytest.approx(metrics["full/HR@10"])
    assert metrics["train/epochs"] == 2
    saved = json.loads((out / "config.json").read_text())
    assert saved["model"] == "mf" and saved["dataset"] == toy
    assert saved["model_config"]["dim"] == dataclasses.asdict(model_config_class("mf")())["dim"]
    assert saved["train"]["epochs"] == 2 and saved["candidates"]["sampler"] == "uniform"

    assert evaluate_run(out) == metrics
    # Running the finished run again trains nothing and reports the same numbers.
    assert train_run("mf", toy, out_dir=out, train_config=FAST, candidates=CANDIDATES) == metrics


def test_popularity_is_counted_not_trained_and_trained_models_beat_it(toy, tmp_path):
    pop = train_run("popularity", toy, out_dir=tmp_path / "pop", candidates=CANDIDATES)
    assert pop["train/epochs"] == 0
    cfg = {**FAST, "epochs": 8}
    mf = train_run("mf", toy, out_dir=tmp_path / "mf", train_config=cfg, candidates=CANDIDATES)
    # Every user's items share a residue mod 4; popularity cannot see that, MF learns it.
    assert mf["topk/HR@1"] > pop["topk/HR@1"] and mf["full/NDCG@10"] > pop["full/NDCG@10"]


def test_config_sections_are_checked(toy, tmp_path):
    with pytest.raises(ConfigError, match="unknown section"):
        train_run("mf", toy, out_dir=tmp_path / "a", config={"trainer": {}})
    with pytest.raises(ConfigError, match="train: unknown key.*epoch"):
        train_run("mf", toy, out_dir=tmp_path / "b", config={"train": {"epoch": 3}})
    with pytest.raises(ConfigError, match="dimm"):
        train_run("mf", toy, out_dir=tmp_path / "c", config={"model": {"dimm": 3}})
    with pytest.raises(ConfigError, match="unknown model 'mff'.*lightgcn"):
        train_run("mff", toy, out_dir=tmp_path / "c")
    assert not (tmp_path / "c").exists()  # refused before anything was written
    out = tmp_path / "d"
    config = {"model": {"dim": 8}, "train": FAST, "candidates": CANDIDATES}
    train_run("mf", toy, out_dir=out, config=config)
    assert json.loads((out / "config.json").read_text())["model_config"]["dim"] == 8
    before = (out / "config.json").read_text()
    with pytest.raises(ConfigError, match="different config.*model_config"):
        train_run("mf", toy, out_dir=out, config={**config, "model": {"dim": 16}})
    with pytest.raises(ConfigError, match="config.json: .*lr: 0.01 -> 0.02"):
        train_run("mf", toy, out_dir=out, config={**config, "train": {**FAST, "lr": 0.02}})
    assert (out / "config.json").read_text() == before  # a refused resume changes nothing


def test_evaluate_run_refuses_changed_ids_and_missing_weights(toy, tmp_path):
    out = tmp_path / "run"
    train_run("mf", toy, out_dir=out, train_config=FAST, candidates=CANDIDATES)
    ids = json.loads((out / "user_ids.json").read_text())
    ids["raw"] = ids["raw"][::-1]
    (out / "user_ids.json").write_text(json.dumps(ids))
    with pytest.raises(DataError, match="user_ids.json"):
        evaluate_run(out)
    ids["raw"] = ids["raw"][::-1]
    (out / "user_ids.json").write_text(json.dumps(ids))
    protocol = json.loads((out / "protocol.json").read_text())
    original = json.dumps(protocol)
    protocol["content_hash"]["topk/test"] = "0" * 64
    (out / "protocol.json").write_text(json.dumps(protocol))
    with pytest.raises(DataError, match="candidate sets differ"):
        evaluate_run(out)
    (out / "protocol.json").write_text(original)
    (out / "best.safetensors").unlink()
    with pytest.raises(DataError, match="best.safetensors"):
        evaluate_run(out)


def _small_config(name: str) -> dict:
    fields = {f.name for f in dataclasses.fields(model_config_class(name))}
    small = {"dim": 8, "hidden_size": 8, "max_len": 8, "n_layers": 1, "n_blocks": 1}
    return {k: v for k, v in small.items() if k in fields}


@pytest.mark.parametrize("name", [n for n in MODELS.names() if not MODELS.get(n).inputs])
def test_every_registered_model_trains_and_resumes_exactly(name, tmp_path, tiny):
    split = tiny.make_split()
    valid_fn = tiny.hit_rate_valid(split, max_len=8)
    cfg = TrainConfig(epochs=3, batch_size=32, lr=0.01, seed=1, valid_metric="HR@5",
                      progress=False)  # fmt: skip

    def build():
        torch.manual_seed(0)
        return build_model(name, split.n_users, split.n_items, _small_config(name))

    full = build()
    ref = train(full, split, cfg, tmp_path / "full", valid_fn)

    class Stop(Exception):
        pass

    def stop_after_1(epoch, entry):
        if epoch == 1:
            raise Stop

    if ref.epochs:  # popularity trains no epoch: nothing to interrupt
        with pytest.raises(Stop):
            train(build(), split, cfg, tmp_path / "resumed", valid_fn, on_epoch_end=stop_after_1)
        assert all(np.isfinite(e["loss"]) for e in ref.history)
    torch.manual_seed(123)
    resumed = build()
    res = train(resumed, split, cfg, tmp_path / "resumed", valid_fn)
    assert res.epochs == ref.epochs == (0 if full.batch_kind == "none" else 3)
    strip = [{k: v for k, v in e.items() if k != "seconds"} for e in ref.history]
    assert [{k: v for k, v in e.items() if k != "seconds"} for e in res.history] == strip
    for key, value in full.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_a_model_built_from_llm_features_is_refused_by_train_run_with_the_way_to_run_it(
    toy, tmp_path
):
    with pytest.raises(ConfigError, match="kind 'gpt4sm'"):
        train_run("gpt4sm", toy, out_dir=tmp_path, train_config=FAST, candidates=CANDIDATES)


def test_domain_model_in_trains_once_then_loads_and_checks_the_id_maps(toy, tmp_path):
    from lmrec.protocol.prepare import prepare
    from lmrec.train.run import domain_model_in

    prepared = prepare(toy, candidates=CANDIDATES)
    run = tmp_path / "domain"
    with pytest.raises(DataError, match="no best.safetensors"):
        domain_model_in(run, toy, prepared)  # nothing to load and nothing named to train
    first = domain_model_in(run, toy, prepared, model="mf", train_config=FAST)
    again = domain_model_in(run, toy, prepared)  # loaded, not trained again
    assert torch.equal(first.user_item_embeddings()[1], again.user_item_embeddings()[1])
    ids = json.loads((run / "item_ids.json").read_text())
    ids["raw"] = ids["raw"][::-1]
    (run / "item_ids.json").write_text(json.dumps(ids))
    with pytest.raises(DataError, match="item ids of the reloaded dataset differ"):
        domain_model_in(run, toy, prepared)
