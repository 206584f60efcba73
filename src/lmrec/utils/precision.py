"""bf16 autocast where the processor does bf16 in hardware, fp32 elsewhere.

A CPU with AMX (``amx_bf16``) or AVX512-BF16 (``avx512_bf16``) multiplies bf16 matrices several
times faster than fp32 (SmolLM2 scoring 32 prompts of 212 tokens on 2 cores of a Xeon with AMX:
7.7 s in fp32, 3.1 s under bf16 autocast); one without them emulates bf16 and is slower, so
``auto`` picks bf16 only where it pays. CUDA devices that support bf16 get it too. Autocast keeps
the weights, the optimiser and the losses in fp32 and runs the matrix products in bf16
(:func:`torch.autocast`).
"""

from __future__ import annotations

import contextlib
import functools
import types
from pathlib import Path

import torch

from lmrec.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16")
_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.cache
def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU multiplies bf16 in hardware (AMX or AVX512-BF16; Linux flags)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return any(f in flags for f in _CPU_FLAGS)
    return False


def resolve_precision(precision: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device``: bf16, or None for plain fp32."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    device = torch.device(device)
    if precision == "fp32":
        return None
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
    else:
        supported = device.type == "cpu" and cpu_has_bf16()
    if precision == "bf16" or supported:  # bf16 asked for is honoured, if slow
        return torch.bfloat16
    return None


def autocast(device: torch.device | str, dtype: torch.dtype | None):
    """``torch.autocast`` to ``dtype`` on ``device``'s type, or nothing when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def set_precision(model, dtype: torch.dtype | None) -> None:
    """Run every forward of ``model`` under autocast to ``dtype`` (None: plain fp32).

    The model's own ``forward`` is wrapped on the instance, so every caller (training, scoring,
    the key/value-cache paths, peft wrappers, which call it) gets the same precision; logits
    come back in fp32. ``model.lmrec_precision`` records the dtype.
    """
    stored = getattr(model, "lmrec_stored", None)
    if stored is not None and stored != dtype:
        raise ConfigError(
            f"the model's linear weights are stored in {stored} for scoring "
            "(store_weights); set its precision before that, not after"
        )
    model.__dict__.pop("forward", None)  # back to the class's forward
    model.lmrec_precision = dtype
    if dtype is None:
        return
    device = next(model.parameters()).device

    def forward(self, *args, **kwargs):
        with autocast(device, dtype):
            out = type(self).forward(self, *args, **kwargs)
        logits = getattr(out, "logits", None)
        if logits is not None and logits.dtype != torch.float32:
            out.logits = logits.float()
        return out

    # a bound method, so a deep copy of the model runs its own weights under the same autocast
    model.forward = types.MethodType(forward, model)


def store_weights(model) -> int:
    """Store the weights of ``model``'s linear layers in its autocast dtype, once, for scoring.

    Under autocast each forward casts every fp32 weight to bf16 again: autocast caches a cast
    only for weights that require gradients and only within one autocast region, and a model
    being scored has neither. Storing them cast gives the same products bit for bit (autocast
    rounds a weight to bf16 the same way each time) without the per-forward copies: SmolLM2
    top-20 scoring on 2 cores with AMX, 44 -> 53 users/s (``bench/results/llm.md``). Biases go
    with their weights, as autocast casts them too. A head tied to the input embedding gets its
    own copy (the embedding stays fp32, so the residual stream does). Normalisation and
    embedding weights stay fp32.

    Only for a model that is done training (its fp32 weights are gone); a model with no
    autocast dtype (:func:`set_precision` to fp32) is left alone. Returns the number of layers
    stored.
    """
    dtype = getattr(model, "lmrec_precision", None)
    if dtype is None:
        return 0
    embedding_weights = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    stored = 0
    for module in model.modules():
        if not isinstance(module, torch.nn.Linear) or module.weight.dtype != torch.float32:
            continue
        if id(module.weight) in embedding_weights:  # tied head: untie, the embedding stays
            module.weight = torch.nn.Parameter(module.weight.detach().to(dtype), False)
        else:
            module.weight.requires_grad_(False)
            module.weight.data = module.weight.data.to(dtype)
        if module.bias is not None:
            module.bias.requires_grad_(False)
            module.bias.data = module.bias.data.to(dtype)
        stored += 1
    model.lmrec_stored = dtype
    return stored


__all__ = [
    "PRECISIONS",
    "autocast",
    "cpu_has_bf16",
    "resolve_precision",
    "set_precision",
    "store_weights",
]
