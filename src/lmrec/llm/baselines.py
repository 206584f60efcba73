"""The BDLM paper's LLM baselines (5.3) on the shared candidate sets.

- **LLM-Rec** (Lyu et al. 2023): zero-shot prompting of the instruct model, titles only, in the
  chat template; top-K by the candidates' title likelihood, interaction by P(Yes) vs P(No).
  A config preset for :func:`lmrec.llm.run.llm_train` with mode ``none``.
- **InstructRec** (Zhang et al. 2023): the same text-only prompts, supervised fine-tuning (LoRA by
  default). Also a preset.
- **GPT4SM**: frozen LLM features of user text (the titles of the train history) and item text
  (the title), each projected and concatenated into a small MLP scorer trained by the domain
  models' one training loop (:func:`lmrec.train.trainer.train`), pointwise with BCE.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from lmrec.errors import ConfigError
from lmrec.models import build_model

TEXT_PROMPTS = {"topk": "text-topk", "interaction": "text-interaction"}

PRESETS: dict[str, dict] = {
    "llm-rec": {
        "id_tokens": False,
        "mode": {"mode": "none"},
        "prompt": {**TEXT_PROMPTS, "chat": True},
    },
    "instructrec": {
        "id_tokens": False,
        "mode": {"mode": "lora"},
        "prompt": dict(TEXT_PROMPTS),
    },
}


def preset(name: str, overrides: dict | None = None) -> dict:
    """A baseline's :class:`~lmrec.llm.config.LLMRunConfig` dict, with ``overrides`` merged."""
    if name not in PRESETS:
        raise ConfigError(f"unknown LLM baseline {name!r}; choose one of {', '.join(PRESETS)}")
    out = copy.deepcopy(PRESETS[name])
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


# ---------------------------------------------------------------- GPT4SM


def user_texts(split, titles: list[str], max_history: int = 10) -> list[str]:
    """One text per user: the titles of the last ``max_history`` train items."""
    from lmrec.llm.prompts import histories

    out = []
    for seq in histories(split.train, split.n_users):
        names = "; ".join(titles[j] for j in seq[-max_history:]) or "nothing yet"
        out.append(f"A user who interacted with: {names}. The user likes")
    return out


def text_features(model, tokenizer, texts: list[str], batch_size: int = 32) -> Tensor:
    """Frozen h_LLM of each text (last-position top-layer state), with a progress bar."""
    from tqdm.auto import tqdm

    from lmrec.llm.features import prompt_features

    chunks = range(0, len(texts), batch_size)
    feats = [
        prompt_features(model, texts[s : s + batch_size], tokenizer, batch_size)
        for s in tqdm(chunks, desc="llm features")
    ]
    return torch.cat(feats)


def gpt4sm_features(llm: str, prepared) -> tuple[Tensor, Tensor]:
    """The frozen LLM's (user, item) text features, cached by LLM name and the texts' hash.

    The LLM is frozen and the texts depend only on the data and the split, so seeds and reruns
    share one copy under ``cache_dir("gpt4sm")``.
    """
    from lmrec.llm.resolve import load_llm
    from lmrec.utils.io import atomic_write
    from lmrec.utils.paths import cache_dir

    titles = prepared.dataset.titles()
    users = user_texts(prepared.split, titles)
    items = [f"An item: {t}." for t in titles]
    lm, tok = load_llm(llm)
    # the key names the weights actually loaded (a name alone can resolve to other weights or
    # another tokenizer), the tokenizer and every text
    checksum = float(lm.get_input_embeddings().weight.detach().double().sum())
    ident = [llm, lm.config.to_json_string(), len(tok), checksum]
    digest = hashlib.sha256(json.dumps([ident, users, items]).encode()).hexdigest()[:16]
    path = cache_dir("gpt4sm") / f"{digest}.safetensors"
    if path.is_file():
        saved = load_file(str(path))
        return saved["users"], saved["items"]
    uf = text_features(lm, tok, users)
    itf = text_features(lm, tok, items)
    del lm
    atomic_write(path, lambda p: save_file({"users": uf, "items": itf}, str(p)))
    return uf, itf


def gpt4sm_train_config(given: dict | None, where: str = "train"):
    """GPT4SM's :class:`lmrec.train.TrainConfig`: ``given`` over its own defaults (it scores
    every pair through an MLP, so it is validated on the candidate sets)."""
    from lmrec.config import from_dict
    from lmrec.train.trainer import TrainConfig

    return from_dict(TrainConfig, {"valid_metric": "topk/NDCG@20", **(given or {})}, where)


def gpt4sm_run(
    dataset_name: str,
    out_dir: str | Path,
    llm: str = "smollm2-135m",
    model_config: dict | None = None,
    train_config: dict | None = None,
    preprocess: dict | None = None,
    candidates: dict | None = None,
    data_dir: str | Path | None = None,
) -> dict:
    """Features from the frozen LLM -> GPT4SM trained by the shared loop -> ``metrics.json``.

    The features are saved in ``out_dir/features.safetensors`` and reused when training resumes.
    """
    from lmrec.config import to_dict
    from lmrec.eval.significance import RANKS_FILE
    from lmrec.protocol.prepare import prepare
    from lmrec.train.checkpoint import weights_metadata
    from lmrec.train.evaluate import evaluate_model, make_valid_fn
    from lmrec.train.run import train_summary
    from lmrec.train.trainer import resolve_device, train
    from lmrec.utils.io import write_json

    out = Path(out_dir)
    prepared = prepare(
        dataset_name, data_dir=data_dir, preprocess=preprocess, candidates=candidates
    )
    cfg = gpt4sm_train_config(train_config)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    feats_path = out / "features.safetensors"
    # the features belong to one LLM and one dataset: another LLM's are computed anew
    source = {"llm": llm, "dataset": str(dataset_name)}
    if feats_path.is_file() and weights_metadata(feats_path) == source:
        saved = load_file(str(feats_path))
        uf, itf = saved["users"], saved["items"]
    else:
        uf, itf = gpt4sm_features(llm, prepared)
        out.mkdir(parents=True, exist_ok=True)
        save_file({"users": uf, "items": itf}, str(feats_path), metadata=source)
    torch.manual_seed(cfg.seed)
    model = build_model("gpt4sm", len(uf), len(itf), model_config, user_feats=uf, item_feats=itf)
    device = resolve_device(cfg.device)
    model.to(device)
    write_json(
        out / "config.json",
        {
            "model": "gpt4sm",
            "llm": llm,
            "dataset": dataset_name,
            "model_config": to_dict(model.config),
            "train": to_dict(cfg),
            "preprocess": to_dict(prepared.preprocess),
            "candidates": to_dict(prepared.candidates),
        },
    )
    result = train(
        model, prepared.split, cfg, out, make_valid_fn(prepared.split, prepared.sets, cfg, device)
    )
    metrics = evaluate_model(
        model, prepared.split, prepared.sets, progress=cfg.progress, ranks_to=out / RANKS_FILE
    )
    metrics.update(train_summary(result.best_epoch, result.epochs, result.best_metric))
    write_json(out / "metrics.json", metrics)
    return metrics
