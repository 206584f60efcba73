"""The one device rule of lmrec: ``auto`` is CUDA when present, else the CPU."""

from __future__ import annotations

import torch

from lmrec.errors import ConfigError


def resolve_device(name: str | torch.device = "auto", field: str = "device") -> torch.device:
    """``"auto"`` -> CUDA when present, else CPU; an explicit CUDA device must exist.

    ``field`` names the config field in the error (e.g. ``train.device``).
    """
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        msg = f"{field}: {name!r} is not a device ({exc}); use auto, cpu or cuda"
        raise ConfigError(msg) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{field} is {str(name)!r} but no CUDA device is available; use 'auto'")
    return device


__all__ = ["resolve_device"]
