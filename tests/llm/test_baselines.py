import pytest
import torch

from lmrec.config import from_dict
from lmrec.errors import ConfigError
from lmrec.llm.baselines import preset, text_features, user_texts
from lmrec.llm.config import LLMRunConfig


def test_presets_are_valid_text_only_configs():
    llmrec = from_dict(LLMRunConfig, preset("llm-rec"), "llm")
    assert llmrec.mode.mode == "none" and not llmrec.id_tokens and llmrec.prompt.chat
    assert llmrec.prompt.template("topk").answer == "title"
    instruct = from_dict(LLMRunConfig, preset("instructrec", {"mode": {"lora_r": 4}}), "llm")
    assert instruct.mode.mode == "lora" and instruct.mode.lora_r == 4
    with pytest.raises(ConfigError, match="unknown LLM baseline"):
        preset("gpt5rec")


def test_user_texts_and_text_features(tiny, split):
    texts = user_texts(split, ["Heat", "Up", "Alien", "Big", "Jaws", "Rocky", "Fargo", "Brazil"], 2)
    assert texts[0] == "A user who interacted with: Up; Alien. The user likes"
    model, tok = tiny
    feats = text_features(model, tok, texts, batch_size=2)
    assert feats.shape == (3, 48) and torch.isfinite(feats).all()


@pytest.mark.slow
def test_gpt4sm_run_end_to_end_with_the_tiny_llama(tmp_path, metrics_from_ranks):
    from safetensors.torch import load_file, save_file

    from lmrec.llm.baselines import gpt4sm_run

    # features another LLM left in the folder are not reused
    (tmp_path / "gpt4sm").mkdir()
    stale = {"users": torch.zeros(943, 48), "items": torch.zeros(1682, 48)}
    save_file(stale, str(tmp_path / "gpt4sm" / "features.safetensors"), {"llm": "other"})
    metrics = gpt4sm_run(
        "ml-100k",
        tmp_path / "gpt4sm",
        llm="tiny-llama",
        model_config={"dim": 8, "hidden": 8},
        train_config={"epochs": 1, "progress": False, "num_threads": 1},
        candidates={"sampler": "popularity"},
    )
    metrics_from_ranks(metrics, tmp_path / "gpt4sm" / "topk_ranks.json", 943)
    feats = load_file(str(tmp_path / "gpt4sm" / "features.safetensors"))
    assert feats["items"].abs().sum() > 0 and feats["users"].abs().sum() > 0


@pytest.mark.slow
def test_gpt4sm_features_are_cached_across_runs(tmp_path, monkeypatch):
    from lmrec.llm import baselines
    from lmrec.protocol.prepare import prepare

    monkeypatch.setenv("LMREC_CACHE_DIR", str(tmp_path / "cache"))
    prepared = prepare("ml-100k", candidates={"sampler": "popularity"})
    calls = []
    real = baselines.text_features

    def counting(*args, **kwargs):
        calls.append(len(args[2]))
        return real(*args, **kwargs)

    monkeypatch.setattr(baselines, "text_features", counting)
    uf, itf = baselines.gpt4sm_features("tiny-llama:word", prepared)
    assert calls == [943, 1682] and uf.shape[0] == 943 and itf.shape[0] == 1682
    again_u, again_i = baselines.gpt4sm_features("tiny-llama:word", prepared)
    assert calls == [943, 1682]  # served from the cache, no forward pass
    assert torch.equal(again_u, uf) and torch.equal(again_i, itf)
    assert len(list((tmp_path / "cache" / "gpt4sm").glob("*.safetensors"))) == 1
