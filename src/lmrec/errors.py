"""Exceptions lmrec raises for bad input. Each message names the file, line or field and the fix."""


class LmrecError(Exception):
    """Base class for every error lmrec raises on purpose."""


class DataError(LmrecError, ValueError):
    """A data file is missing, truncated, corrupt, or lacks a column."""


class ConfigError(LmrecError, ValueError):
    """A config has an unknown key or a value of the wrong type or range."""


class SourceNotFoundError(LmrecError, FileNotFoundError):
    """No source (local directory, cache, shipped wheel, download) could provide a dataset."""


def check_ints(section: str, config: object, bounds: dict[str, int]) -> None:
    """Raise :class:`ConfigError` unless each ``config.<name>`` is an integer >= its bound.

    ``bounds`` maps field names to their lowest allowed value; the message names
    ``section.name`` and the value given. Booleans are refused (``True`` is an ``int``).
    """
    for name, low in bounds.items():
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{section}.{name} must be an integer >= {low}, got {value!r}")


def check_numbers(section: str, config: object, names: tuple[str, ...], low: float = 0) -> None:
    """Raise :class:`ConfigError` unless each ``config.<name>`` is a number >= ``low``."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
            raise ConfigError(f"{section}.{name} must be a number >= {low:g}, got {value!r}")
