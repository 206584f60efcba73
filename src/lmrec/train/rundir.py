"""A run folder's one "same run" rule, for every kind of run (domain, LLM, BDLM).

A run folder holds the resolved config it was started with (``config.json``). Starting again on
the same folder resumes it, but only if the new config computes the same thing: each kind hands
:func:`check_same_run` a *view* of its config with what may differ removed (fields marked
:data:`lmrec.config.RESUMABLE`, cosmetic ones such as ``progress``, where the data lives) and
defaults filled in for configs written by older lmrec versions. The check runs before
``config.json`` is rewritten, so a refused start leaves the folder as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lmrec.config import resumable_fields
from lmrec.errors import ConfigError
from lmrec.utils.io import read_json

CONFIG_FILE = "config.json"


def _flat(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flat(value, name + "."))
        else:
            out[name] = value
    return out


def config_diff(saved: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``"key: old -> new"`` for every dotted key whose value differs (sorted)."""
    a, b = _flat(saved), _flat(new)
    missing = object()
    return [
        f"{k}: {a.get(k, missing)!r} -> {b.get(k, missing)!r}".replace(repr(missing), "(none)")
        for k in sorted(set(a) | set(b))
        if a.get(k, missing) != b.get(k, missing)
    ]


def without_resumable(config: Mapping[str, Any], cls: type, *path: str) -> dict[str, Any]:
    """A copy of ``config`` whose section at ``path`` (e.g. ``"llm", "train"``) lacks the fields
    of config class ``cls`` marked :data:`lmrec.config.RESUMABLE`: the part of a run's config
    that may change when it resumes, left out of :func:`check_same_run`'s view."""
    out = dict(config)
    node = out
    for key in path[:-1]:
        node[key] = dict(node.get(key) or {})
        node = node[key]
    skip = resumable_fields(cls)
    node[path[-1]] = {k: v for k, v in (node.get(path[-1]) or {}).items() if k not in skip}
    return out


def check_same_run(
    out_dir: str | Path,
    run_config: Mapping[str, Any],
    view: Callable[[dict[str, Any]], dict[str, Any]],
    what: str = "run",
) -> None:
    """Raise :class:`ConfigError` if ``out_dir`` holds a run whose config differs from
    ``run_config`` in ``view`` (see the module docstring); nothing to check in a new folder."""
    path = Path(out_dir) / CONFIG_FILE
    if not path.is_file():
        return
    diffs = config_diff(view(dict(read_json(path))), view(dict(run_config)))
    if diffs:
        shown = ", ".join(diffs[:6]) + (f", and {len(diffs) - 6} more" if len(diffs) > 6 else "")
        raise ConfigError(
            f"{path}: {Path(out_dir)} holds a {what} with a different config ({shown}); use a "
            "new out_dir to start this one"
        )


__all__ = ["CONFIG_FILE", "check_same_run", "config_diff", "without_resumable"]
