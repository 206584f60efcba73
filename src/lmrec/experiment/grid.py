"""An experiment's grid: its (dataset, method, seed) cells, choosing some, and their folders."""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Sequence
from pathlib import Path

from lmrec.errors import ConfigError
from lmrec.experiment.cell import Cell
from lmrec.experiment.config import ExperimentConfig

CELLS_DIR = "cells"


def expand(cfg: ExperimentConfig) -> list[Cell]:
    """Every (dataset, method, seed) cell of ``cfg``, datasets outermost, seeds innermost.

    The seed goes into ``train_config["seed"]`` (and ``candidates["seed"]`` when
    ``cfg.seed_candidates``); a dataset's ``preprocess`` overrides the experiment's, and a
    method's ``per_dataset`` settings are merged in for their dataset.
    """
    cells = []
    for ds in cfg.datasets:
        preprocess = {**cfg.preprocess, **ds.preprocess}
        for method in cfg.methods:
            method = method.for_dataset(ds.label)
            for seed in cfg.seeds:
                candidates = dict(cfg.candidates)
                if cfg.seed_candidates:
                    candidates["seed"] = seed
                m = dataclasses.replace(method, train_config={**method.train_config, "seed": seed})
                cells.append(Cell(ds.name, ds.label, m, seed, preprocess, candidates, ds.data_dir))
    return cells


def select_cells(cells: Sequence[Cell], only: str | Sequence[str] | None) -> list[Cell]:
    """The cells whose id (``dataset/method/seed-s``) matches one of the ``only`` patterns.

    A pattern is a glob over the id (``*/sasrec/*``), a leading part of it (``ml-100k/mf``), or
    a glob over one dataset label, method name or method label (``ml-1m``, ``sasrec``,
    ``BDLM-*``). ``None`` selects every cell; a pattern matching none raises.
    """
    if only is None:
        return list(cells)
    patterns = [only] if isinstance(only, str) else list(only)
    chosen = []
    for cell in cells:
        if any(_matches(cell, p) for p in patterns):
            chosen.append(cell)
    unmatched = [p for p in patterns if not any(_matches(c, p) for c in cells)]
    if unmatched:
        ids = ", ".join(c.id for c in cells[:6]) + (", ..." if len(cells) > 6 else "")
        raise ConfigError(
            f"only: {', '.join(unmatched)} matches no cell; cell ids look like {ids}, and "
            "a dataset label, method name or method label alone selects its cells"
        )
    return chosen


def _matches(cell: Cell, pattern: str) -> bool:
    pattern = pattern.strip("/")
    if fnmatch.fnmatchcase(cell.id, pattern) or cell.id.startswith(pattern + "/"):
        return True
    names = (cell.dataset_label, cell.method.name, cell.method.label)
    return "/" not in pattern and any(fnmatch.fnmatchcase(n, pattern) for n in names)


def cell_dir(out: Path, cell: Cell) -> Path:
    """The folder of ``cell`` under the experiment folder ``out``."""
    return Path(out) / CELLS_DIR / cell.id


__all__ = ["CELLS_DIR", "cell_dir", "expand", "select_cells"]
