"""The entry points of the data layer: ``load_raw`` (a dataset's raw interactions from the first
source that has them) and ``load_dataset`` (preprocessed, re-indexed and cached).
"""

from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path

from lmrec.config import to_dict
from lmrec.data.datasets import DatasetEntry, get_entry
from lmrec.data.interactions import Dataset, Interactions
from lmrec.data.preprocess import PreprocessConfig
from lmrec.data.preprocess import preprocess as run_preprocess
from lmrec.data.sources import RawFiles, find_raw
from lmrec.errors import ConfigError, DataError
from lmrec.utils.io import atomic_folder, sha256_json, write_json
from lmrec.utils.paths import cache_dir

# Bump when a loader's output changes, so cached datasets built by older code are not reused.
CACHE_VERSION = 2  # 2: the clock and a source's own split are saved with the dataset


def _load(entry: DatasetEntry, files: RawFiles) -> Interactions:
    return entry.loaders[files.layout.fmt](files)


def load_raw(
    name: str, *, data_dir: str | Path | None = None, download: bool = True
) -> Interactions:
    """Load a dataset's raw interactions and item text, with ids as the source spells them.

    Parameters
    ----------
    name:
        A registered name (``ml-100k``, ``ml-1m``, ``amazon-office``) or a spec string
        (``amazon2014:<Category>``, ``amazon2018:<Category>``, ``atomic:<dir>/<name>``,
        ``json:<dir>/<name>``, ``csv:<path>``).
    data_dir:
        A folder to search before ``LMREC_DATA_DIR``, the cache and the shipped copies.
    download:
        Allow downloading from the official URL (MovieLens) when nothing local has the files.

    Raises
    ------
    ConfigError
        Unknown name (the message lists the choices).
    SourceNotFoundError
        No source has the files (the message lists every place tried and the fix).
    DataError
        A file is truncated, corrupt or lacks a column (named with file and line).
    """
    entry = get_entry(name)
    return _load(entry, find_raw(entry.spec(), data_dir=data_dir, download=download))


def load_dataset(
    name: str,
    *,
    data_dir: str | Path | None = None,
    preprocess: PreprocessConfig | None = None,
    cache: bool = True,
    download: bool = True,
) -> Dataset:
    """Load and preprocess a dataset, reusing a cached copy when nothing changed.

    The cache folder is ``cache_dir("datasets")/<name>-<key>`` where ``key`` hashes the name,
    the preprocessing config and the source files' paths, sizes and modification times; it is
    built in a temporary folder and renamed into place, so a crash never leaves half of it.

    Parameters
    ----------
    name, data_dir, download:
        As for :func:`load_raw`.
    preprocess:
        Preprocessing config; ``None`` means ``PreprocessConfig()`` (deduplication only).
    cache:
        Read and write the cache; ``False`` always rebuilds and writes nothing.

    Returns
    -------
    Dataset
        Re-indexed interactions and item text; ``dataset.stats()`` gives the paper's Table 1.
    """
    cfg = preprocess if preprocess is not None else PreprocessConfig()
    if not isinstance(cfg, PreprocessConfig):
        raise ConfigError(f"preprocess must be a PreprocessConfig, got {type(cfg).__name__}")
    entry = get_entry(name)
    files = find_raw(entry.spec(), data_dir=data_dir, download=download)
    if not cache:
        return run_preprocess(_load(entry, files), cfg)
    provenance = {
        "version": CACHE_VERSION,
        "name": name,
        "format": files.layout.fmt,
        "preprocess": to_dict(cfg),
        "files": files.fingerprint(),
    }
    folder = cache_dir("datasets") / f"{_safe(name)}-{sha256_json(provenance)[:16]}"
    if (folder / "dataset.json").is_file():
        try:
            return Dataset.load(folder)
        except (DataError, KeyError, OSError) as exc:
            warnings.warn(f"rebuilding the cached dataset {folder}: {exc}", stacklevel=2)
            shutil.rmtree(folder, ignore_errors=True)
    dataset = run_preprocess(_load(entry, files), cfg)
    _save_atomic(dataset, folder, {**provenance, "origin": files.origin})
    return dataset


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:60] or "dataset"


def _save_atomic(dataset: Dataset, folder: Path, provenance: dict) -> None:
    # another process may finish the same folder first; theirs is as good as ours
    with atomic_folder(folder, replace=False) as tmp:
        dataset.save(tmp)
        write_json(tmp / "source.json", provenance)
