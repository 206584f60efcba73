"""Training modes of the LMRS taxonomy, as one function that prepares a model for each.

=========  ===============================================================  ==================
mode       what trains                                                      taxonomy
=========  ===============================================================  ==================
full       every weight; the new user/item rows as their own parameter      holistic
lora       LoRA adapters (peft) + the new user/item rows                    partial (PEFT)
extra      only the new user/item rows (tied head: their output rows too)   extra part
prompt     only a soft prompt of virtual tokens (peft PromptTuning)         fixed-PTM prompt
none       nothing: zero-/few-shot prompting                                tuning-free
=========  ===============================================================  ==================

The new rows are held by peft's ``TrainableTokens`` (see :mod:`lmrec.llm.tokens`), which gives
them a parameter of their own, so :func:`param_groups` can give them a separate (higher)
learning rate, as the SPEC probe found necessary. With an untied output head, the head's rows
of the new tokens are trained too (they are what top-K scoring reads).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from lmrec.errors import ConfigError
from lmrec.llm.dropout import use_keep_mask_dropout
from lmrec.llm.token_rows import use_row_lookup
from lmrec.llm.tokens import IdTokens
from lmrec.registry import Registry

MODES: Registry = Registry("llm training mode")


@dataclass
class ModeConfig:
    """Options of the training modes (only the chosen mode's fields are read)."""

    mode: str = "lora"
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: str | list[str] = "all-linear"
    prompt_tokens: int = 20
    prompt_init: str = "Recommend the next item for this user from the candidates."

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES.names())}, got {self.mode!r}")
        if self.lora_r < 1 or self.prompt_tokens < 1:
            raise ConfigError("mode.lora_r and mode.prompt_tokens must be >= 1")


def apply_mode(model, config: ModeConfig, ids: IdTokens | None, tokenizer=None):
    """Wrap/freeze ``model`` for ``config.mode``; returns the model to train (maybe a PeftModel).

    Call after adding and pre-loading the user/item tokens.
    """
    with warnings.catch_warnings():
        # peft warns that it cannot tie *adapters* of tied layers; its TrainableTokens layer does
        # follow the tied head (tests/llm/test_modes.py checks the item logits move with the rows)
        warnings.filterwarnings("ignore", message=".*tie_word_embeddings=True.*")
        training = model.training
        out = MODES.get(config.mode)(model, config, ids, tokenizer)
    return out.train(training)  # peft switches to train mode (dropout on); keep the caller's


def _token_targets(model, ids: IdTokens) -> dict[str, list[int]]:
    """peft ``trainable_token_indices``: the input embedding, and an untied head as well."""
    names = {m: n for n, m in model.named_modules()}
    emb = names[model.get_input_embeddings()].split(".")[-1]
    targets = {emb: ids.new_ids}
    head = model.get_output_embeddings()
    if (
        head is not None
        and head.weight.data_ptr() != model.get_input_embeddings().weight.data_ptr()
    ):
        targets[names[head].split(".")[-1]] = ids.new_ids
    return targets


def _trainable_tokens(model, ids: IdTokens):
    from peft import TrainableTokensConfig, get_peft_model

    targets = _token_targets(model, ids)
    config = TrainableTokensConfig(target_modules=list(targets), token_indices=ids.new_ids)
    model = get_peft_model(model, config)
    use_row_lookup(model)  # the same rows, without a merged copy of the vocabulary each forward
    return model


@MODES.register("full")
def _full(model, config: ModeConfig, ids: IdTokens | None, tokenizer=None):
    if ids is not None:
        model = _trainable_tokens(model, ids)
    for p in model.parameters():
        p.requires_grad_(True)
    return model


@MODES.register("lora")
def _lora(model, config: ModeConfig, ids: IdTokens | None, tokenizer=None):
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_targets,
        trainable_token_indices=_token_targets(model, ids) if ids is not None else None,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    use_keep_mask_dropout(model)  # the same dropout, its masks drawn at a sixth of the cost
    use_row_lookup(model)
    return model


@MODES.register("extra")
def _extra(model, config: ModeConfig, ids: IdTokens | None, tokenizer=None):
    if ids is None:
        raise ConfigError("mode 'extra' trains the user/item token rows; it needs id tokens")
    return _trainable_tokens(model, ids)


@MODES.register("prompt")
def _prompt(model, config: ModeConfig, ids: IdTokens | None, tokenizer=None):
    from peft import PromptTuningConfig, get_peft_model

    pt = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=config.prompt_tokens)
    model = get_peft_model(model, pt)
    if tokenizer is not None and config.prompt_init:
        # start from real word embeddings (peft's TEXT init would re-load a tokenizer by name)
        init = tokenizer(config.prompt_init, add_special_tokens=False)["input_ids"]
        init = (init * config.prompt_tokens)[: config.prompt_tokens]
        words = model.get_input_embeddings().weight[torch.tensor(init)].detach()
        with torch.no_grad():
            prompt_embedding(model).weight.copy_(words.to(prompt_embedding(model).weight))
    return model


def prompt_embedding(model) -> torch.nn.Embedding:
    """The soft prompt's embedding table of a peft prompt-tuning model."""
    return model.prompt_encoder[model.active_adapter].embedding


@MODES.register("none")
def _none(model, config: ModeConfig, ids: IdTokens | None, tokenizer=None):
    model.requires_grad_(False)
    return model


def merged_for_scoring(model):
    """After training: the model with its LoRA adapters and new token rows folded into the base
    weights (peft's ``merge_and_unload``), for scoring; other models as they are.

    An unmerged peft model pays at every forward for the adapters' extra products and for
    rebuilding the whole embedding and head with the trained rows written in (two
    vocabulary-sized matrices, mmapped and faulted in each time). SmolLM2 with 2,625 new
    tokens, a batch of 8 prompts of 85 tokens, bf16: 0.45 s and 73k page faults a forward
    unmerged, 0.30 s and 15k merged. The rows are copied exactly; a LoRA product is added to
    its weight in fp32 once instead of computed beside it in the scoring dtype, so scores
    move in their last bits. Soft prompts (``prompt`` mode) do not merge and are returned as
    they are, and so is an FSDP-sharded model. The peft wrapper must not be trained further
    after this (its base now holds the merged weights): call it once training is over.
    """
    from peft import PeftModel

    from lmrec.llm.scoring import is_prompt_learning
    from lmrec.utils.distributed import processes

    if not isinstance(model, PeftModel) or is_prompt_learning(model):
        return model
    if processes().sharded(model):  # FSDP units hold the modules merging would replace
        return model
    training = model.training
    merged = model.merge_and_unload()
    merged.requires_grad_(False)
    return merged.train(training)


def ready_for_scoring(model, compile: bool = False):
    """After training: ``model`` as it scores fastest with the same numbers.

    Adapters folded in (:func:`merged_for_scoring`), the linear layers' weights stored in the
    autocast dtype (:func:`lmrec.utils.precision.store_weights`: bit-identical scores under
    bf16), and with ``compile`` the decoder layers compiled
    (:func:`lmrec.llm.scoring.compile_layers`; scores move in their last bits, as fused
    kernels round differently). An FSDP-sharded model is returned as it is.
    """
    from lmrec.llm.scoring import compile_layers
    from lmrec.utils.distributed import processes
    from lmrec.utils.modules import base_model
    from lmrec.utils.precision import store_weights

    model = merged_for_scoring(model)
    if processes().sharded(model):
        return model
    store_weights(base_model(model))
    if compile:
        compile_layers(model)
    return model


def is_token_param(name: str) -> bool:
    return "trainable_tokens_delta" in name


def param_groups(model, lr: float, lr_tokens: float, weight_decay: float = 0.0) -> list[dict]:
    """AdamW groups: the user/item rows at ``lr_tokens`` without decay, the rest at ``lr``."""
    tokens, rest = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (tokens if is_token_param(name) else rest).append(p)
    groups = [{"params": rest, "lr": lr, "weight_decay": weight_decay, "name": "model"}]
    if tokens:
        groups.append({"params": tokens, "lr": lr_tokens, "weight_decay": 0.0, "name": "tokens"})
    return [g for g in groups if g["params"]]


def trainable_state(model) -> dict[str, torch.Tensor]:
    """Name -> tensor of every trainable parameter (what a checkpoint must keep)."""
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
