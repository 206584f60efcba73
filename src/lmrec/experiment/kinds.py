"""Experiment cell kinds ``bdlm`` and ``llm`` (see :mod:`lmrec.experiment.cell`).

``bdlm``: one row of a table is one side of a BDLM run. A method names its side::

    - name: bdlm-llm
      kind: bdlm
      model: smollm2-135m               # the LLM
      train_config: {lam: 0.1, ...}     # lmrec.bdlm.joint.JointConfig (seed set per cell)
      options:
        side: llm                       # llm (BDLM-llm) or drs (BDLM-drs)
        llm: {...}                      # LLMSideConfig (prompt, mode, train, ...)
        domain: {model: lightgcn, ...}  # DomainSpec; or {from_method: lightgcn}
        cascade: {...}                  # CascadeConfig; also preload, share_prefix, evaluate

Methods whose options differ only in ``side`` share one joint training: it runs once, in
``<cells>/<dataset>/_bdlm/<config hash>/``, and each side's cell reads its half of the metrics
(the first cell to run trains; the other finds the run finished). ``domain: {from_method: X}``
pre-loads from the finished cell of method X with the same seed (e.g. the LightGCN row of the
same table), so "LightGCN alone" and BDLM's domain side are one model.

``gpt4sm``: the GPT4SM baseline (:func:`lmrec.llm.baselines.gpt4sm_run`): ``model`` is the
frozen LLM, ``model_config`` / ``train_config`` the scorer's and the training loop's configs.

``llm``: one LLM recommender run (:func:`lmrec.llm.run.llm_train`): ``model`` is the LLM,
``train_config`` its :class:`lmrec.llm.finetune.FinetuneConfig`, ``options`` the other
:class:`~lmrec.llm.config.LLMRunConfig` fields (``mode``, ``prompt``, ``id_tokens``, ...).

Both functions are found by the runner through :data:`lmrec.experiment.cell.KIND_TARGETS`;
:func:`register_cell_kinds` adds them to :data:`~lmrec.experiment.cell.CELL_KINDS` for code
that runs cells in-process without that table.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from lmrec.errors import ConfigError
from lmrec.utils.io import read_json, sha256_json, write_json

SHARED_DIR = "_bdlm"  # "_..." is never a method name (method names are slugs without "_" ends)


def _no_model_config(cell, kind: str) -> None:
    if cell.method.model_config:
        raise ConfigError(
            f"method {cell.method.name!r}: the {kind} kind takes no model_config (give the "
            f"LLM in 'model' and the rest in 'options'), got {sorted(cell.method.model_config)}"
        )


def bdlm_config(cell) -> tuple[str, dict[str, Any], str | None]:
    """(side, BDLM config dict, domain method to reuse or None) of a ``bdlm`` cell."""
    _no_model_config(cell, "bdlm")
    options = copy.deepcopy(cell.method.options)
    side = options.pop("side", "drs")
    if side not in ("llm", "drs"):
        raise ConfigError(
            f"method {cell.method.name!r}: options.side must be 'llm' or 'drs', got {side!r}"
        )
    llm = dict(options.pop("llm", {}) or {})
    if "model" in llm and llm["model"] != cell.method.model:
        raise ConfigError(
            f"method {cell.method.name!r}: give the LLM once, in 'model' (not options.llm.model)"
        )
    llm["model"] = cell.method.model
    domain = dict(options.pop("domain", {}) or {})
    from_method = domain.pop("from_method", None)
    config = {
        **options,
        "llm": llm,
        "domain": domain,
        "joint": dict(cell.method.train_config),
        "preprocess": dict(cell.preprocess),
        "candidates": dict(cell.candidates),
        "data_dir": cell.data_dir,
    }
    return side, config, from_method


def run_bdlm_cell(cell, out_dir: Path) -> dict[str, float]:
    """The ``bdlm`` kind: run (or reuse) the shared BDLM run and return one side's metrics.

    Also returns the domain model alone on the same users as ``domain/...`` keys (on the drs
    side) and the joint training's scalars as ``train/...``.
    """
    from lmrec.bdlm.config import BDLMConfig
    from lmrec.bdlm.run import run_bdlm
    from lmrec.config import from_dict

    side, config, from_method = bdlm_config(cell)
    out_dir = Path(out_dir)
    dataset_dir = out_dir.parents[2]  # <cells>/<dataset>/<method>/seed-<s>/run
    hashed = copy.deepcopy(config)
    for cosmetic in ("progress", "num_threads"):  # they change nothing computed
        hashed["joint"].pop(cosmetic, None)
    key = sha256_json({"dataset": cell.dataset, "config": hashed, "from": from_method})[:16]
    if from_method is not None:
        sibling = dataset_dir / from_method / f"seed-{cell.seed}"
        if not (sibling / "metrics.json").is_file():
            raise ConfigError(
                f"method {cell.method.name!r} pre-loads from method {from_method!r}, whose cell "
                f"{sibling} has not finished; list {from_method!r} before it in the config "
                "(or run it first)"
            )
        config["domain"] = {**config["domain"], "run": str(sibling / "run")}
    from_dict(BDLMConfig, config, f"method {cell.method.name}")  # fail before any work
    shared = dataset_dir / SHARED_DIR / key
    metrics = run_bdlm(cell.dataset, config, shared)
    if side not in metrics:
        raise ConfigError(
            f"method {cell.method.name!r}: side {side!r} was not evaluated (bdlm.evaluate)"
        )
    from lmrec.utils.distributed import processes

    procs = processes()
    procs.barrier()  # the shared run's files are written
    if procs.is_main:  # under a launch, the main process writes the cell's files
        _bdlm_cell_files(shared, out_dir, side)
    out = dict(metrics[side])
    if side == "drs":
        out.update({f"domain/{k}": v for k, v in metrics.get("domain", {}).items()})
    out.update({f"train/{k}": v for k, v in metrics.get("train", {}).items()})
    return out


def _bdlm_cell_files(shared: Path, out_dir: Path, side: str) -> None:
    """A bdlm cell's own files: the shared run's protocol and config, and its side's ranks."""
    from lmrec.bdlm.run import ranks_file
    from lmrec.eval.significance import DOMAIN_RANKS_FILE, RANKS_FILE

    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "protocol.json", read_json(shared / "protocol.json"))
    write_json(out_dir / "config.json", {**read_json(shared / "config.json"), "side": side})
    write_json(out_dir / "shared_run.json", {"folder": str(shared), "side": side})
    copies = {ranks_file(side): RANKS_FILE}
    if side == "drs":
        copies[ranks_file("domain")] = DOMAIN_RANKS_FILE
    for src, dst in copies.items():
        if (shared / src).is_file():
            write_json(out_dir / dst, read_json(shared / src))


def check_bdlm_cell(cell) -> None:
    """The :class:`~lmrec.bdlm.run.BDLMConfig` a ``bdlm`` cell builds (no work done)."""
    from lmrec.bdlm.config import BDLMConfig
    from lmrec.config import from_dict

    _, config, from_method = bdlm_config(cell)
    if from_method is not None:  # the sibling cell's folder, known once it has run
        config["domain"] = {**config["domain"], "run": f"<the {from_method} cell>"}
    from_dict(BDLMConfig, config, f"method {cell.method.name}")


def llm_cell_config(cell) -> dict[str, Any]:
    """The :class:`~lmrec.llm.config.LLMRunConfig` dict of an ``llm`` cell."""
    _no_model_config(cell, "llm")
    options = copy.deepcopy(cell.method.options)
    for key in ("model", "train", "preprocess", "candidates", "data_dir"):
        if key in options:
            raise ConfigError(
                f"method {cell.method.name!r}: options.{key} is set by the cell (model, "
                "train_config, and the experiment's data settings)"
            )
    config = {
        **options,
        "model": cell.method.model,
        "train": dict(cell.method.train_config),
        "seed": cell.seed,
        "preprocess": dict(cell.preprocess),
        "candidates": dict(cell.candidates),
        "data_dir": cell.data_dir,
    }
    return config


def check_llm_cell(cell) -> None:
    """The :class:`~lmrec.llm.config.LLMRunConfig` an ``llm`` cell builds (no work done)."""
    from lmrec.config import from_dict
    from lmrec.llm.config import LLMRunConfig

    from_dict(LLMRunConfig, llm_cell_config(cell), f"method {cell.method.name}")


def run_llm_cell(cell, out_dir: Path) -> dict[str, float]:
    """The ``llm`` kind: :func:`lmrec.llm.run.llm_train` (which resumes ``out_dir``)."""
    from lmrec.llm.run import llm_train

    return llm_train(cell.dataset, None, out_dir, llm_cell_config(cell))


def check_gpt4sm_cell(cell) -> None:
    """The scorer's and the training loop's configs of a ``gpt4sm`` cell (no work done)."""
    from lmrec.config import from_dict
    from lmrec.experiment.cell import no_options
    from lmrec.llm.baselines import gpt4sm_train_config
    from lmrec.models.gpt4sm import GPT4SMConfig

    no_options(cell, "gpt4sm")
    where = f"method {cell.method.name!r}"
    from_dict(GPT4SMConfig, dict(cell.method.model_config), f"{where}: model_config")
    gpt4sm_train_config(dict(cell.method.train_config), f"{where}: train_config")


def run_gpt4sm_cell(cell, out_dir: Path) -> dict[str, float]:
    """The ``gpt4sm`` kind: :func:`lmrec.llm.baselines.gpt4sm_run` with ``model`` as the frozen
    LLM, ``model_config`` the scorer's :class:`~lmrec.models.gpt4sm.GPT4SMConfig` and
    ``train_config`` the shared loop's :class:`lmrec.train.TrainConfig`."""
    from lmrec.experiment.cell import no_options
    from lmrec.llm.baselines import gpt4sm_run

    no_options(cell, "gpt4sm")
    return gpt4sm_run(
        cell.dataset,
        out_dir,
        llm=cell.method.model,
        model_config=dict(cell.method.model_config),
        train_config=dict(cell.method.train_config),
        preprocess=dict(cell.preprocess),
        candidates=dict(cell.candidates),
        data_dir=cell.data_dir,
    )


def register_cell_kinds() -> None:
    """Add ``bdlm`` (and ``llm``, unless another module has) to the registry of cell kinds."""
    from lmrec.experiment.cell import CELL_KINDS

    for name, fn in (("bdlm", run_bdlm_cell), ("llm", run_llm_cell), ("gpt4sm", run_gpt4sm_cell)):
        if name not in CELL_KINDS:
            CELL_KINDS.add(name, fn)
