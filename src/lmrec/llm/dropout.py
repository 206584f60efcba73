"""LoRA's input dropout on a CPU at a sixth of the random-number cost.

peft applies dropout (``lora_dropout``, 0.05 by default in lmrec) to the input of every LoRA
adapter: seven masks per decoder layer for a Llama with all-linear targets. PyTorch draws every
element's mask with its own ``bernoulli_`` draw, about 5 ns an element on this machine's CPU,
and a compiled graph draws them with Inductor's in-kernel generator, slower still. On 2 cores
with SmolLM2-135M at batch 16 that was about half of a bf16 LoRA SFT step (turning the dropout
off took a compiled step from 3.7 to 7.6 samples/s).

:func:`keep_mask` draws the same mask (every element dropped independently with probability
``p``) from the gaps between dropped elements instead: in a Bernoulli(p) sequence they are
geometric, so a mask of n elements needs about ``n * p`` geometric draws (~13 ns each) and a
scatter, about 0.8 ns an element for ``p = 0.05``. Above ``p = 0.25`` the per-element draw is
cheaper and is used. Both come from the default generator, so ``torch.manual_seed`` and lmrec's
saved RNG state govern them as before.

The mask is a custom operator, opaque to ``torch.compile`` and tagged non-deterministic, so a
compiled graph neither merges two adapters' masks into one nor recomputes a mask in the backward
pass; the element-wise product around it fuses as usual. On other devices (CUDA's generator is
cheap) :class:`KeepMaskDropout` runs ``nn.functional.dropout``. Measured in
``bench/results/llm.md`` (LoRA rows): eager 3.55 -> 3.98 samples/s, compiled 4.46 -> 7.09.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

GAP_SAMPLING_UP_TO = 0.25  # above this drop rate one draw per element is cheaper


@torch.library.custom_op(
    "lmrec::keep_mask_v2",  # a new name for a new definition: compiled graphs are cached by it
    mutates_args=(),
    tags=(torch.Tag.nondeterministic_seeded,),
)
def _keep_mask(shape: Sequence[int], rate: Tensor) -> Tensor:
    p = float(rate)
    device = rate.device
    n = math.prod(shape)
    if p > GAP_SAMPLING_UP_TO:
        return torch.empty(shape, device=device).bernoulli_(1.0 - p).bool()
    keep = torch.ones(n, dtype=torch.bool, device=device)
    start = 0  # every position before ``start`` is decided
    while p > 0 and start < n:
        draws = _draws(n - start, p)
        # geometric_(p): trials up to and including the next drop, so cumulative sums are the
        # drops' positions
        gaps = torch.empty(draws, device=device).geometric_(p).long()
        drops = gaps.cumsum_(0).add_(start - 1)  # strictly increasing
        inside = int(torch.searchsorted(drops, n))  # how many fall before the end
        keep.index_fill_(0, drops[:inside], False)
        start = n if inside < draws else int(drops[-1]) + 1
    return keep.view(shape)


@_keep_mask.register_fake
def _(shape: Sequence[int], rate: Tensor) -> Tensor:
    return torch.empty(shape, dtype=torch.bool, device=rate.device)


def keep_mask(like: Tensor, rate: Tensor) -> Tensor:
    """Bool mask shaped as ``like``, each element False (dropped) independently with probability
    ``rate``, on ``rate``'s device.

    ``rate`` is a 0-d tensor: a compiled graph takes it as an input, so a graph cached for one
    rate never serves another. Only ``like``'s shape goes into the operator: a compiled graph
    need not write out the tensor the mask is for (peft's LoRA casts each adapter's input to
    fp32 before its dropout; an operator reading that input made the graph store it in fp32).
    """
    return _keep_mask(like.shape, rate)


def _draws(rest: int, p: float) -> int:
    """Gaps to draw for ``rest`` undecided elements: the expected drops plus six deviations."""
    return int(rest * p + 6 * math.sqrt(rest * p * (1 - p)) + 16)


class KeepMaskDropout(torch.nn.Module):
    """``nn.Dropout(p)`` with :func:`keep_mask`'s cheaper draw on CPU tensors."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        # a buffer, so torch.compile passes the rate in rather than baking it into the graph
        self.register_buffer("rate", torch.tensor(p, dtype=torch.float64), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return torch.nn.functional.dropout(x, self.p, True)
        mask = keep_mask(x, self.rate)
        return torch.where(mask, x * (1.0 / (1.0 - self.p)), 0.0)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_keep_mask_dropout(model: torch.nn.Module) -> int:
    """Replace every ``nn.Dropout`` of ``model``'s LoRA layers (peft's ``lora_dropout``) with
    :class:`KeepMaskDropout` of the same rate; returns how many were replaced."""
    n = 0
    for module in model.modules():
        drops = getattr(module, "lora_dropout", None)
        if not isinstance(drops, torch.nn.ModuleDict):
            continue
        for name, drop in list(drops.items()):
            if type(drop) is torch.nn.Dropout:
                replacement = KeepMaskDropout(drop.p)
                replacement.train(drop.training)
                drops[name] = replacement
                n += 1
    return n


__all__ = ["KeepMaskDropout", "keep_mask", "use_keep_mask_dropout"]
