"""Candidate sets on disk: a collection saved and loaded (safetensors + JSON), the cache key and
load-or-build through the cache, and CSV in raw ids for other tools.

A collection is a folder with one sub-folder per ``task-stage``, each holding
``arrays.safetensors`` (users, items, labels) and ``candidates.json`` (task, stage, meta with the
``content_hash``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lmrec.data.interactions import Dataset
from lmrec.errors import DataError
from lmrec.protocol.candidates import (
    STAGES,
    TASKS,
    CandidateConfig,
    CandidateSet,
    Key,
    _split_meta,
    build_candidates,
    item_texts,
)
from lmrec.protocol.split import Split
from lmrec.utils import paths
from lmrec.utils.io import atomic_folder, atomic_write, sha256_json


def _set_dir(directory: Path, key: Key) -> Path:
    return directory / f"{key[0]}-{key[1]}"


def save_candidates(cands: Mapping[Key, CandidateSet], directory: str | Path) -> None:
    """Save every set of ``cands`` under ``directory/<task>-<stage>/``."""
    for key, cset in cands.items():
        cset.save(_set_dir(Path(directory), key))


def load_candidates(directory: str | Path) -> dict[Key, CandidateSet]:
    """Load the four sets saved by :func:`save_candidates`, verifying each hash."""
    directory = Path(directory)
    out = {}
    for key in [(t, s) for t in TASKS for s in STAGES]:
        sub = _set_dir(directory, key)
        if not sub.is_dir():
            raise DataError(f"{sub} is missing; delete {directory} to rebuild the candidate sets")
        out[key] = CandidateSet.load(sub)
    return out


def candidates_key(
    dataset: Dataset,
    split: Split,
    cfg: CandidateConfig,
    *,
    preprocess: Mapping[str, Any] | None = None,
    embeddings: np.ndarray | None = None,
) -> str:
    """sha256 naming a collection: the data itself, preprocessing, split and sampler config.

    The data enters as a fingerprint of its interactions, id maps and item texts, so a changed
    source file gives new candidates rather than stale ones.
    """
    h = hashlib.sha256()
    inter = dataset.inter
    for col in ("user", "item", "timestamp"):
        h.update(np.ascontiguousarray(inter[col].to_numpy(), dtype="<i8").tobytes())
    for frame in (split.valid, split.test):
        for col in ("user", "item"):
            h.update(np.ascontiguousarray(frame[col].to_numpy(), dtype="<i8").tobytes())
    h.update(json.dumps([dataset.users.raw, dataset.items.raw, item_texts(dataset)]).encode())
    ident = {
        "version": 1,
        "dataset": dataset.stats(),
        "data": h.hexdigest(),
        "preprocess": dict(preprocess) if preprocess is not None else None,
        "split": _split_meta(split),
        "config": cfg.identity(),
        "embeddings": None
        if embeddings is None
        else hashlib.sha256(np.ascontiguousarray(embeddings, dtype="<f4").tobytes()).hexdigest(),
    }
    return sha256_json(ident)


def load_or_build_candidates(
    dataset: Dataset,
    split: Split,
    cfg: CandidateConfig | None = None,
    cache_dir: str | Path | None = None,
    *,
    preprocess: Mapping[str, Any] | None = None,
    embeddings: np.ndarray | None = None,
) -> dict[Key, CandidateSet]:
    """The candidate sets of this (dataset, preprocessing, split, sampler config, seed).

    Built on the first call and saved under ``cache_dir`` (default ``cache_dir("candidates")``)
    in a folder named by :func:`candidates_key`; later calls load it. The folder is written
    under a temporary name and renamed when complete, so an interrupted build leaves nothing
    that a later call would read.
    """
    cfg = cfg or CandidateConfig()
    root = Path(cache_dir) if cache_dir is not None else paths.cache_dir("candidates")
    key = candidates_key(dataset, split, cfg, preprocess=preprocess, embeddings=embeddings)
    final = root / f"{_safe_name(dataset.name)}-{key[:16]}"
    if final.is_dir():
        return load_candidates(final)

    cands = build_candidates(dataset, split, cfg, embeddings=embeddings, preprocess=preprocess)
    # another process may finish the same build first: theirs is identical, keep it
    with atomic_folder(final, replace=False) as tmp:
        save_candidates(cands, tmp)
    return cands


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "dataset"


CSV_COLUMNS = ("user_id", "item_id", "label")


def write_csv(cset: CandidateSet, dataset: Dataset, path: str | Path) -> None:
    """Write one set as ``user_id,item_id,label`` rows in raw ids (positive first per user)."""
    n, c = cset.items.shape
    df = pd.DataFrame(
        {
            "user_id": dataset.users.to_raw(np.repeat(cset.users, c)),
            "item_id": dataset.items.to_raw(cset.items.reshape(-1)),
            "label": cset.labels.reshape(-1).astype(np.int64),
        }
    )
    atomic_write(Path(path), lambda p: df.to_csv(p, index=False))


def export_csv(
    cands: CandidateSet | Mapping[Key, CandidateSet], dataset: Dataset, path: str | Path
) -> list[Path]:
    """Write candidates as ``user_id,item_id,label`` CSV in raw ids.

    Parameters
    ----------
    cands:
        One set, written to the file ``path``; or the ``{(task, stage): set}`` mapping of
        :func:`build_candidates`, written to the folder ``path`` as ``<task>_<stage>.csv`` per
        set plus ``candidates.csv`` (the test top-K set, the file other tools score).
    dataset:
        Gives the raw ids.
    path:
        A file (one set) or a folder (a mapping).

    Returns
    -------
    list[Path]
        The files written.
    """
    path = Path(path)
    if isinstance(cands, CandidateSet):
        write_csv(cands, dataset, path)
        return [path]
    written = []
    for (task, stage), cset in cands.items():
        file = path / f"{task}_{stage}.csv"
        write_csv(cset, dataset, file)
        written.append(file)
    if ("topk", "test") in cands:
        file = path / "candidates.csv"
        write_csv(cands[("topk", "test")], dataset, file)
        written.append(file)
    return written


def read_csv(path: str | Path, dataset: Dataset, task: str, stage: str) -> CandidateSet:
    """Read a ``user_id,item_id,label`` CSV (raw ids) back into a :class:`CandidateSet`.

    Each user's rows must be contiguous, every user must have the same number of candidates
    and exactly one row with label 1; that row becomes column 0.
    """
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype={"user_id": str, "item_id": str}, keep_default_na=False)
    except FileNotFoundError:
        raise DataError(f"{path} does not exist") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc})") from exc
    missing = [c for c in CSV_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(CSV_COLUMNS)}"
        )
    if len(df) == 0:
        raise DataError(f"{path}: no candidate rows")
    users = dataset.users.indices(df["user_id"])
    items = dataset.items.indices(df["item_id"])
    labels = pd.to_numeric(df["label"], errors="coerce").to_numpy()
    bad = np.flatnonzero(~np.isin(labels, (0, 1)))
    if len(bad):
        raise DataError(f"{path}, line {bad[0] + 2}: label must be 0 or 1")
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    sizes = np.diff(np.r_[starts, len(users)])
    if len(np.unique(users[starts])) != len(starts):
        raise DataError(f"{path}: each user's rows must be contiguous")
    if len(set(sizes.tolist())) > 1:
        raise DataError(f"{path}: users have different numbers of candidates {sorted(set(sizes))}")
    c = int(sizes[0])
    items, labels = items.reshape(-1, c), labels.reshape(-1, c).astype(np.int8)
    wrong = np.flatnonzero(labels.sum(axis=1) != 1)
    if len(wrong):
        raise DataError(f"{path}, line {starts[wrong[0]] + 2}: each user needs exactly one label 1")
    # the positive goes to column 0, the other rows keep their order
    order = np.argsort(-labels, axis=1, kind="stable")
    items = np.take_along_axis(items, order, axis=1)
    labels = np.take_along_axis(labels, order, axis=1)
    return CandidateSet(task, stage, users[starts], items, labels, {"source": str(path)})


__all__ = [
    "CSV_COLUMNS",
    "candidates_key",
    "export_csv",
    "load_candidates",
    "load_or_build_candidates",
    "read_csv",
    "save_candidates",
    "write_csv",
]
