"""Scoring candidates with a causal LM, without free generation.

- :func:`score_token_candidates`: top-K with item-token answers. One forward pass per batch of
  prompts (left padded, so every prompt ends at the last position); only the last position's
  logits are computed (``logits_to_keep=1``) and the C candidates' log-probabilities are
  gathered from it. For single-token answers this *is* the per-candidate log-likelihood.
- :func:`score_continuations`: text-only top-K, the summed log-likelihood of each candidate's
  title after the prompt, all (prompt, candidate) pairs batched.
- :func:`score_yes_no`: interaction prediction, log P(yes) - log P(no) of the first answer token.
Generation restricted to the candidates, for when text is wanted, is in :mod:`lmrec.llm.generate`.

All functions run under ``torch.inference_mode`` in batches and return CPU float32 tensors.
"""

from __future__ import annotations

import types
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from lmrec.utils.modules import base_model, cache_argument, decoder_layers


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def is_prompt_learning(model) -> bool:
    """A peft soft-prompt model prepends virtual tokens and rejects ``position_ids``."""
    cfg = getattr(model, "active_peft_config", None)
    return bool(cfg is not None and getattr(cfg, "is_prompt_learning", False))


def encode(tokenizer, texts: Sequence[str], device: torch.device) -> dict[str, Tensor]:
    """Left-padded batch; prompts carry the tokenizer's own special tokens (e.g. BOS)."""
    tokenizer.padding_side = "left"
    batch = tokenizer(list(texts), return_tensors="pt", padding=True)
    return {
        "input_ids": batch["input_ids"].to(device),
        "attention_mask": batch["attention_mask"].to(device),
    }


def pad_ids(seqs: Sequence[Sequence[int]], pad: int, left: bool = True) -> tuple[Tensor, Tensor]:
    """Token id lists as one batch: ``(ids, attention_mask)``, (len(seqs), longest).

    ``left``: padded on the left, so every row ends at the last position (what
    :func:`forward`'s last-position reads need); else on the right (suffixes that continue a
    cached prefix).
    """
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, seq in enumerate(seqs):
        span = slice(width - len(seq), width) if left else slice(0, len(seq))
        ids[r, span] = torch.as_tensor(seq, dtype=torch.long)
        mask[r, span] = 1
    return ids, mask


def compile_layers(model) -> bool:
    """Run ``model``'s decoder layers through one ``torch.compile`` graph.

    All layers share one compiled function (their forward code is the same; the weights are
    its inputs), compiled with dynamic shapes on its first call, so batches of any size and
    length reuse it (one graph for scoring, one for training). Inductor fuses each layer's
    element-wise work (normalisation, rotary embedding, SiLU, residual adds, dtype casts),
    which is what bounds bf16 work on a CPU with AMX once the matrix products run at the
    hardware's rate. On a CPU the attention is switched to its written-out form, whose softmax
    inductor fuses too: PyTorch's CPU flash-attention backward was a quarter of a training
    step. The eager paths run it as well, at no loss (P(Yes) over shared prompt beginnings,
    bf16, 2 cores: 342-352 prompts/s written out against 269-336 with SDPA; the scores move
    by up to 0.19 in log-odds, as bf16 rounding does). SmolLM2 on 2 cores with AMX, bf16
    (``bench/results/llm.md``): top-20 scoring 53 -> 70 users/s, full-fine-tuning SFT 6.6 ->
    9.6 samples/s; compiling costs ~16 s (scoring) and ~26 s (training) on an empty compile
    cache, a few seconds once cached. Calls that carry a
    key/value cache (the shared-prefix paths) stay eager: they pass a layer index the graph
    would have to be recompiled for. Scores and losses move in their last bits (fused kernels
    round differently); LoRA's dropout draws the masks eager code draws under the same seed
    (:mod:`lmrec.llm.dropout`, tested). LoRA
    adapters, activation checkpointing and merging after training work through it (tested).

    A toy function is compiled first on the model's device; where that fails (no C++
    compiler) the layers stay eager, a warning says why, and False comes back. A failure
    particular to the model shows at its first compiled call, as PyTorch's error. An
    FSDP-sharded model is left eager.
    """
    import warnings

    from lmrec.utils.distributed import processes

    layers = decoder_layers(model)
    if layers and all(getattr(m, "lmrec_compiled", False) for m in layers):
        return True  # compiled for training already; the same graph function scores
    if not layers or any(type(m) is not type(layers[0]) for m in layers):
        warnings.warn(f"{type(model).__name__}: no uniform decoder layers to compile", stacklevel=2)
        return False
    procs = processes()
    if procs.sharded(model) or (procs.world > 1 and procs.engine == "fsdp"):
        warnings.warn(
            "torch.compile is not applied to an FSDP-sharded model; it runs eagerly", stacklevel=2
        )
        return False
    try:  # on the model's device: its backend (C++ on a CPU, Triton on CUDA) must build
        torch.compile(lambda x: torch.sin(x) + 1, dynamic=False)(
            torch.ones(3, device=model_device(model))
        )
    except Exception as err:  # noqa: BLE001 - any compiler failure leaves the model eager
        warnings.warn(
            f"torch.compile is not usable here, the model runs eagerly: {err}", stacklevel=2
        )
        return False
    if model_device(model).type == "cpu":
        base_model(model).set_attn_implementation("eager")
    eager = type(layers[0]).forward
    compiled = torch.compile(eager, dynamic=True)

    def forward(self, *args, **kwargs):
        if kwargs.get("cache") is not None or kwargs.get("past_key_values") is not None:
            return eager(self, *args, **kwargs)
        return compiled(self, *args, **kwargs)

    for layer in layers:  # a bound method: a deep copy of the model rebinds it to its copy
        layer.forward = types.MethodType(forward, layer)
        layer.lmrec_compiled = True
    return True


def forward(model, input_ids: Tensor, attention_mask: Tensor, keep: int = 1, **kwargs):
    """Model forward on a left-padded batch, logits for the last ``keep`` positions only.

    Positions count from each sequence's first real token (so padding shifts nothing, also for
    absolute position embeddings); soft-prompt models get none (peft rejects them). No
    key/value cache is built unless asked for (``use_cache=True``): nothing here reads it, and
    a cache would send compiled layers (:func:`compile_layers`) down their eager path.
    """
    if not is_prompt_learning(model):
        kwargs["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
    kwargs.setdefault("use_cache", False)
    return model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=keep, **kwargs)


def prefix_then_suffixes(
    model,
    prefix: Tensor,
    p_mask: Tensor,
    owner: Tensor,
    suffix: Tensor | None,
    s_mask: Tensor | None,
    **suffix_kwargs,
):
    """Run prefixes once, then each suffix on top of its prefix's key/value cache.

    ``prefix`` (G, P) is left padded with ``p_mask``; ``suffix`` (R, S) right padded with
    ``s_mask``, row r continuing prefix ``owner[r]`` at the position after its last token. The
    one routine behind every shared-prefix pass (a user's candidate continuations, BDLM's 20
    interaction prompts of a user). Returns ``(prefix output, suffix output or None)``; the
    prefix output has the last position's logits only.
    """
    from transformers import DynamicCache

    cache = DynamicCache()
    by = cache_argument(model)
    first = model(
        input_ids=prefix,
        attention_mask=p_mask,
        position_ids=(p_mask.long().cumsum(-1) - 1).clamp_min(0),
        **{by: cache},
        use_cache=True,
        logits_to_keep=1,
    )
    if suffix is None:
        return first, None
    cache.batch_select_indices(owner)
    mask = torch.cat([p_mask[owner], s_mask], 1)
    start = p_mask.long().sum(1)[owner].unsqueeze(1)  # the prefixes' lengths
    positions = start + torch.arange(suffix.shape[1], device=suffix.device).unsqueeze(0)
    rest = model(
        input_ids=suffix,
        attention_mask=mask,
        position_ids=positions,
        **{by: cache},
        use_cache=True,
        **suffix_kwargs,
    )
    return first, rest


@torch.inference_mode()
def last_log_probs(model, tokenizer, prompts: Sequence[str], batch_size: int = 16) -> Tensor:
    """(B, V) log-softmax of the next-token distribution after each prompt."""
    out = []
    for s in range(0, len(prompts), batch_size):
        batch = encode(tokenizer, prompts[s : s + batch_size], model_device(model))
        logits = forward(model, **batch).logits[:, -1].float()
        out.append(torch.log_softmax(logits, -1).cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)


def length_order(token_ids: Sequence[Sequence[int]]) -> np.ndarray:
    """Indices that sort tokenized prompts by length (stable): batches taken in this order hold
    prompts of similar length, so left padding wastes (almost) no compute."""
    lengths = np.asarray([len(ids) for ids in token_ids], dtype=np.int64)
    return np.argsort(lengths, kind="stable")


@torch.inference_mode()
def score_token_candidates(
    model, tokenizer, prompts: Sequence[str], candidate_ids, batch_size: int = 16
) -> Tensor:
    """Log-probability of each candidate's single answer token.

    (B,) prompts and (B, C) token ids -> (B, C) log-probabilities, in the prompts' order. The
    batches group prompts of similar length (:func:`length_order`).
    """
    cand = torch.as_tensor(np.asarray(candidate_ids), dtype=torch.long)
    if not len(prompts):
        return torch.zeros(0, cand.shape[-1])
    out = torch.empty(len(prompts), cand.shape[-1])
    device = model_device(model)
    tokens = tokenizer(list(prompts))["input_ids"]  # as encode() tokenizes them
    order = length_order(tokens)
    for s in range(0, len(prompts), batch_size):
        rows = torch.from_numpy(order[s : s + batch_size])
        ids, mask = pad_ids([tokens[i] for i in rows.tolist()], tokenizer.pad_token_id)
        logits = forward(model, ids.to(device), mask.to(device)).logits[:, -1].float()  # (b, V)
        logp = torch.log_softmax(logits, -1)
        out[rows] = torch.gather(logp, 1, cand[rows].to(logp.device)).cpu()
    return out


def first_token_id(tokenizer, text: str) -> int:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"answer {text!r} tokenizes to nothing")
    return int(ids[0])


@torch.inference_mode()
def score_yes_no(
    model,
    tokenizer,
    prompts: Sequence[str],
    yes: str = " Yes",
    no: str = " No",
    batch_size: int = 16,
    share_prefix: bool = True,
) -> Tensor:
    """log P(yes) - log P(no) of the first answer token after each prompt: (B,).

    Positive means "yes" is the likelier answer; ``sigmoid`` of it is P(yes | yes or no). With
    ``share_prefix``, consecutive prompts with a common beginning (one user's interaction
    prompts) run it once (:func:`lmrec.llm.prefix.shared_prefix_last`); soft-prompt models take
    the plain path.
    """
    y, n = first_token_id(tokenizer, yes), first_token_id(tokenizer, no)
    if y == n:
        raise ValueError(f"answers {yes!r} and {no!r} share their first token")
    if share_prefix and len(prompts) > 1 and not is_prompt_learning(model):
        from lmrec.llm.prefix import shared_prefix_last

        logp = shared_prefix_last(model, tokenizer, prompts, batch_size, token_ids=[y, n])
    else:
        logp = score_token_candidates(
            model, tokenizer, prompts, np.tile([y, n], (len(prompts), 1)), batch_size
        )
    return logp[:, 0] - logp[:, 1]


@torch.inference_mode()
def score_continuations(
    model,
    tokenizer,
    prompts: Sequence[str],
    continuations: Sequence[Sequence[str]],
    batch_size: int = 32,
    normalize: bool = False,
) -> Tensor:
    """Summed log-likelihood of each continuation after its prompt: (B,) x (B, C) texts -> (B, C).

    Every (prompt, continuation) pair is one row; rows are left padded so all of them end at the
    last position, and only the last ``max continuation length`` logits are computed.
    ``normalize=True`` divides by the continuation's token count (mean log-likelihood).
    """
    n_c = len(continuations[0]) if continuations else 0
    if any(len(conts) != n_c for conts in continuations):
        raise ValueError("every prompt needs the same number of continuations")
    if n_c and not is_prompt_learning(model):
        return _score_continuations_cached(
            model, tokenizer, prompts, continuations, batch_size, normalize
        )
    return _score_continuations_full(
        model, tokenizer, prompts, continuations, batch_size, normalize
    )


def _score_continuations_full(
    model, tokenizer, prompts, continuations, batch_size: int, normalize: bool
) -> Tensor:
    """:func:`score_continuations` with every (prompt, continuation) pair as one full row.

    For soft-prompt models, whose virtual tokens do not go through a key/value cache.
    """
    n_c = len(continuations[0]) if continuations else 0
    device = model_device(model)
    p_ids = tokenizer(list(prompts))["input_ids"]
    rows, lens = [], []
    for b, conts in enumerate(continuations):
        for c in _continuation_ids(tokenizer, conts):
            rows.append(p_ids[b] + c)
            lens.append(len(c))
    pad = tokenizer.pad_token_id
    scores = torch.zeros(len(rows))
    for s in range(0, len(rows), batch_size):
        chunk, clen = rows[s : s + batch_size], lens[s : s + batch_size]
        ids, mask = pad_ids(chunk, pad)
        width = ids.shape[1]
        keep = max(clen) + 1
        logits = forward(model, ids.to(device), mask.to(device), keep=keep).logits.float()
        logp = torch.log_softmax(logits[:, :-1], -1)  # position t predicts token t + 1
        targets = ids[:, width - keep + 1 :].to(logp.device)  # (b, keep - 1)
        tok_lp = torch.gather(logp, 2, targets.unsqueeze(-1)).squeeze(-1)
        span = torch.arange(keep - 1, device=logp.device).unsqueeze(0)
        in_cont = span >= (keep - 1 - torch.tensor(clen, device=logp.device)).unsqueeze(1)
        total = (tok_lp * in_cont).sum(1).cpu()
        scores[s : s + len(chunk)] = total / torch.tensor(clen) if normalize else total
    return scores.view(len(continuations), n_c)


def _continuation_ids(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each continuation, without special tokens (EOS for an empty one)."""
    return [
        tokenizer(t, add_special_tokens=False)["input_ids"] or [tokenizer.eos_token_id]
        for t in texts
    ]


def _score_continuations_cached(
    model, tokenizer, prompts, continuations, batch_size: int, normalize: bool
) -> Tensor:
    """:func:`score_continuations` reading each prompt once.

    The prompts of a chunk run once (left padded) and keep their key/value cache; the cache is
    repeated for each prompt's C continuations, which then run right padded after it. A user's
    20 candidate titles thus cost one prompt plus 20 short titles instead of 20 full prompts.
    """
    device = model_device(model)
    n_c = len(continuations[0])
    per_chunk = max(1, batch_size // n_c)
    out = []
    for s in range(0, len(prompts), per_chunk):
        batch = encode(tokenizer, prompts[s : s + per_chunk], device)
        p_mask = batch["attention_mask"]
        conts = [
            c for row in continuations[s : s + per_chunk] for c in _continuation_ids(tokenizer, row)
        ]
        lens = torch.tensor([len(c) for c in conts])
        ids, c_mask = pad_ids(conts, tokenizer.pad_token_id, left=False)
        width = ids.shape[1]
        ids, c_mask = ids.to(device), c_mask.to(device)
        owner = torch.arange(len(p_mask), device=device).repeat_interleave(n_c)
        # the continuations' tokens but the last are read on top of the prompt's cache
        first, rest = prefix_then_suffixes(
            model,
            batch["input_ids"],
            p_mask,
            owner,
            ids[:, :-1] if width > 1 else None,
            c_mask[:, :-1] if width > 1 else None,
        )
        first_lp = torch.log_softmax(first.logits[:, -1].float(), -1)[owner]  # (b*C, V)
        tok_lp = torch.gather(first_lp, 1, ids[:, :1])  # the first continuation token
        if rest is not None:
            logits = rest.logits.float()
            later = torch.gather(torch.log_softmax(logits, -1), 2, ids[:, 1:].unsqueeze(-1))
            tok_lp = torch.cat([tok_lp, later.squeeze(-1)], 1)
        total = (tok_lp * c_mask).sum(1).cpu()
        out.append(total / lens if normalize else total)
    return torch.cat(out).view(len(continuations), n_c)


# ---------------------------------------------------------------- constrained generation
