"""Validation helpers shared by the model configs' ``__post_init__`` (messages name the field)."""

from __future__ import annotations

from typing import Any

from lmrec.errors import ConfigError


def check_positive(cfg: Any, *names: str, minimum: int = 1) -> None:
    """Each named field must be an int >= ``minimum`` (1 unless told)."""
    for name in names:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(
                f"{type(cfg).__name__}.{name} must be an integer >= {minimum}, got {value!r}"
            )


def check_non_negative(cfg: Any, *names: str) -> None:
    """Each named number field must be a real number >= 0."""
    for name in names:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"{type(cfg).__name__}.{name} must be a number >= 0, got {value!r}")


def check_probability(cfg: Any, *names: str) -> None:
    """Each named field must be a probability in [0, 1)."""
    for name in names:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
            raise ConfigError(f"{type(cfg).__name__}.{name} must be in [0, 1), got {value!r}")
