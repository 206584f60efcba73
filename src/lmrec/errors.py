"""Exceptions lmrec raises for bad input. Each message names the file, line or field and the fix."""


class LmrecError(Exception):
    """Base class for every error lmrec raises on purpose."""


class DataError(LmrecError, ValueError):
    """A data file is missing, truncated, corrupt, or lacks a column."""


class ConfigError(LmrecError, ValueError):
    """A config has an unknown key or a value of the wrong type or range."""


class SourceNotFoundError(LmrecError, FileNotFoundError):
    """No source (local directory, cache, shipped wheel, download) could provide a dataset."""
