"""Typed dataclass configs: defaults beside the code, unknown keys raise, saved as JSON or YAML."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from lmrec.errors import ConfigError

C = TypeVar("C")


def from_dict(cls: type[C], data: dict[str, Any] | None, where: str = "config") -> C:
    """Build dataclass ``cls`` from ``data``; unknown keys raise :class:`ConfigError`.

    Nested dataclass fields are built recursively, so ``where`` grows into a dotted path
    (``config.sampler.seed``) that names the offending field in the message. A class may check
    its raw input first, before its sections are built, with a static ``check_raw(data,
    where)`` (e.g. to say where a setting that belongs elsewhere goes).
    """
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)} for {cls.__name__}; "
            f"valid keys: {', '.join(sorted(fields))}"
        )
    check_raw = getattr(cls, "check_raw", None)
    if check_raw is not None:
        check_raw(data, where)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        tp = hints.get(name)
        sub = _dataclass_type(tp)
        if sub is not None and isinstance(value, dict):
            value = from_dict(sub, value, f"{where}.{name}")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{where}: {exc}") from exc


def build_sections(cfg: Any, where: str) -> None:
    """Turn the fields of dataclass ``cfg`` that hold a config section (a dataclass by their
    annotation) but were given as dicts into that dataclass, in place; errors name
    ``where.field``. For a config's ``__post_init__``, so one built directly from dicts is
    checked as :func:`from_dict` checks it."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        sub = _dataclass_type(hints.get(f.name))
        value = getattr(cfg, f.name)
        if sub is not None and isinstance(value, dict):
            setattr(cfg, f.name, from_dict(sub, value, f"{where}.{f.name}"))


def _dataclass_type(tp: Any) -> type | None:
    if dataclasses.is_dataclass(tp):
        return tp  # type: ignore[return-value]
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        for arg in typing.get_args(tp):
            if dataclasses.is_dataclass(arg):
                return arg  # type: ignore[return-value]
    return None


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain dict of a dataclass config (JSON-serialisable)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


# Dataclass field metadata of a config field that may change when a run resumes: it changes
# how long the run goes or how it shows progress, not what a step computes.
RESUMABLE = {"resumable": True}


def resumable_fields(cls: Any) -> frozenset[str]:
    """The fields of config class ``cls`` marked :data:`RESUMABLE`."""
    return frozenset(f.name for f in dataclasses.fields(cls) if f.metadata.get("resumable"))


def check_resumable(saved: dict[str, Any], cfg: Any, where: Any, what: str = "config") -> None:
    """Raise :class:`ConfigError` if ``cfg`` differs from the ``saved`` one (its ``to_dict``
    form) in a field that changes the result; the one check every trainer's resume makes."""
    diffs = config_changes(saved, cfg, resumable_fields(type(cfg)))
    if saved and diffs:
        raise ConfigError(
            f"{where}: this checkpoint was trained with another {what} ({diffs}); use a new "
            "out_dir, or the saved config to resume"
        )


def config_changes(saved: dict[str, Any], cfg: Any, unchecked: frozenset[str]) -> str:
    """``"key: saved -> now, ..."`` for the fields of ``cfg`` (a dataclass) that differ from
    ``saved`` (its ``to_dict`` form), leaving out ``unchecked``; empty when none does. What every
    "may this run resume from that checkpoint?" check compares."""
    now = to_dict(cfg)
    changed = sorted(
        k for k in set(saved) | set(now) if k not in unchecked and saved.get(k) != now.get(k)
    )
    return ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed)


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON config file into a dict, with a clear error on bad syntax."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML/JSON: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data
