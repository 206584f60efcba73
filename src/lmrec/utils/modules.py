"""Finding the parts of a (possibly peft-wrapped) transformers model that lmrec works on."""

from __future__ import annotations

import torch


def base_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model under a peft wrapper; ``model`` itself when it has none."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The decoder layers of ``model`` (the classes transformers marks ``_no_split_modules``),
    outermost first."""
    names = set(getattr(base_model(model), "_no_split_modules", None) or [])
    return [m for m in model.modules() if type(m).__name__ in names]


__all__ = ["base_model", "decoder_layers"]
