"""The trained user/item token rows looked up beside the vocabulary, not merged into a copy of it.

peft's ``TrainableTokensLayer`` (the new id tokens' rows in modes ``full``, ``lora`` and
``extra``) builds the whole weight anew on every forward: a copy of the (vocabulary x width)
matrix with the trained rows written in (``index_copy``), once for the input embedding and once
more for the tied output head; the backward zeroes those rows in two more full-size gradients
(``index_fill``). For SmolLM2 that is four passes over a 51,777 x 576 fp32 matrix a training
step for rows that 16 prompts barely touch.

:func:`use_row_lookup` gives each such layer a forward with the same outputs and gradients
without the copies:

- embedding: the base matrix's rows, and for positions holding a trained token its row from
  the trained rows (``torch.where``; the base matrix gets no gradient there, as the merged
  copy's overwritten rows gave none);
- head: the base matrix's logits, and the trained tokens' logits from the trained rows written
  over their columns (``index_copy`` of the logits, a batch of rows, not of the weight); a
  frozen base matrix (LoRA, extra) is cast to the autocast dtype once, not at every forward.

Full fine-tuning SFT of SmolLM2-135M (bf16, compiled layers, batch 16, 2 cores, steps timed in
turn on the same batches, ``bench/bench_llm.py --only rows``): 1.413 -> 1.294 s a step
(median); LoRA 1.694 -> 1.509 s (``bench/results/llm.md``). Products can differ from the
merged path's in their last bits (the trained rows' logits come out of their own, smaller
product). The layer falls back to peft's forward wherever the two could differ otherwise:
adapters merged or disabled, several active adapters, an embedding with ``max_norm``, sparse or
frequency-scaled gradients, or a padding row among the trained rows.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F


def _indices(layer, name: str, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The trained rows' vocabulary ids, and vocabulary id -> trained row (-1 elsewhere)."""
    key = (name, weight.device, weight.shape[0])
    cache = layer.__dict__.setdefault("_lmrec_rows", {})
    if key not in cache:
        idx = torch.tensor(layer.token_indices[name], dtype=torch.long, device=weight.device)
        lookup = torch.full((weight.shape[0],), -1, dtype=torch.long, device=weight.device)
        lookup[idx] = torch.arange(len(idx), device=weight.device)
        cache[key] = (idx, lookup)
    return cache[key]


def _looks_up(layer, active) -> bool:
    """Whether the row lookup computes what peft's merged forward computes for ``layer``."""
    if layer.disable_adapters or layer.merged or len(active) != 1:
        return False
    base = layer.base_layer
    if isinstance(base, torch.nn.Embedding):
        if base.max_norm is not None or base.sparse or base.scale_grad_by_freq:
            return False
        pad = base.padding_idx  # a trained row as padding: peft gives it no gradient
        return pad is None or int(_indices(layer, active[0], base.weight)[1][pad]) < 0
    return isinstance(base, torch.nn.Linear)


def _forward_adapters(self, x: torch.Tensor, active_adapters, *args, **kwargs) -> torch.Tensor:
    if not _looks_up(self, active_adapters):
        return type(self).forward_adapters(self, x, active_adapters, *args, **kwargs)
    name = active_adapters[0]
    self._check_overlapping_tokens(active_adapters)
    base = self.base_layer
    weight = base.weight
    idx, lookup = _indices(self, name, weight)
    rows = self.trainable_tokens_delta[name].to(weight)
    if isinstance(base, torch.nn.Embedding):
        out = F.embedding(x, weight, padding_idx=base.padding_idx)
        at = lookup[x]
        own = F.embedding(at.clamp_min(0), rows)
        out = torch.where((at >= 0).unsqueeze(-1), own.to(out.dtype), out)
        scale = self._get_embed_scale()
        return out if scale is None else out * scale.to(out.dtype)
    out = F.linear(x, _frozen_cast(self, weight, x))  # peft's merged head passes no bias either
    return out.index_copy(-1, idx, F.linear(x, rows).to(out.dtype))


def _frozen_cast(layer, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``weight`` cast to the autocast dtype once while it stays frozen and unchanged.

    Autocast casts a weight that needs no gradient anew at every forward (its cache keeps only
    the casts of weights that need one): the whole vocabulary matrix of a frozen tied head
    (LoRA, extra) each step. The cast kept here is the one autocast makes, so the products are
    the same; a write to the weight (its version counter) or a new storage casts it again.
    """
    kind = x.device.type
    if weight.requires_grad or not torch.is_autocast_enabled(kind):
        return weight
    dtype = torch.get_autocast_dtype(kind)
    if weight.dtype == dtype:
        return weight
    key = (weight.data_ptr(), weight._version, dtype, weight.device)
    kept = layer.__dict__.get("_lmrec_cast")
    if kept is None or kept[0] != key:
        kept = (key, weight.detach().to(dtype))
        layer.__dict__["_lmrec_cast"] = kept
    return kept[1]


def use_row_lookup(model: torch.nn.Module) -> int:
    """Give every peft ``TrainableTokensLayer`` of ``model`` the row-lookup forward (module
    docstring); returns how many layers now use it."""
    try:
        from peft.tuners.trainable_tokens.layer import TrainableTokensLayer
    except ImportError:  # pragma: no cover - peft is a dependency
        return 0
    n = 0
    for module in model.modules():
        if isinstance(module, TrainableTokensLayer):
            # a bound method: a deep copy of the model rebinds it to the copy
            module.forward_adapters = types.MethodType(_forward_adapters, module)
            n += 1
    return n


__all__ = ["use_row_lookup"]
