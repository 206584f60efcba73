"""Finding the parts of a (possibly peft-wrapped) transformers model that lmrec works on."""

from __future__ import annotations

import inspect

import torch


def base_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model under a peft wrapper; ``model`` itself when it has none."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The decoder layers of ``model`` (the classes transformers marks ``_no_split_modules``),
    outermost first."""
    names = set(getattr(base_model(model), "_no_split_modules", None) or [])
    return [m for m in model.modules() if type(m).__name__ in names]


def cache_argument(model: torch.nn.Module) -> str:
    """The name ``model``'s forward takes its key/value cache by: ``cache`` from transformers
    5.24 on, ``past_key_values`` before (5.24 deprecates it; removal is announced for 5.40)."""
    # the class's forward: lmrec's precision wrapper on the instance takes ``**kwargs``
    params = inspect.signature(type(base_model(model)).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


__all__ = ["base_model", "cache_argument", "decoder_layers"]
