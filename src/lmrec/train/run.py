"""A whole run of one domain model: data -> split -> candidates -> train -> evaluate -> files.

:func:`train_run` is what ``lmrec train`` calls and :func:`evaluate_run` what
``lmrec evaluate --run`` calls. A run folder holds:

- ``config.json``: model name and config, dataset, preprocessing, candidate and train configs;
- ``user_ids.json``, ``item_ids.json``: the id maps the weights are indexed by;
- ``protocol.json``: dataset statistics and the candidate sets' content hashes;
- ``checkpoints/`` (every epoch) and ``best.safetensors``: see :mod:`lmrec.train.trainer`;
- ``metrics.json``: test metrics of the best weights (flat keys, see
  :func:`lmrec.train.evaluate.evaluate_model`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

import lmrec
from lmrec.config import from_dict, to_dict
from lmrec.errors import ConfigError, DataError
from lmrec.eval.significance import RANKS_FILE
from lmrec.models.base import Recommender
from lmrec.protocol.split import Split
from lmrec.train.checkpoint import load_weights, seed_everything
from lmrec.train.defaults import train_defaults
from lmrec.train.evaluate import evaluate_model, make_valid_fn
from lmrec.train.loop import latest_checkpoint, read_state
from lmrec.train.rundir import check_same_run, without_resumable
from lmrec.train.trainer import (
    BEST_FILE,
    TrainConfig,
    history_len,
    resolve_device,
    train,
)
from lmrec.utils.io import read_json, write_json

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
SECTIONS = ("model", "train", "preprocess", "candidates")
# Keys of config.json that may differ when a run is resumed or re-evaluated.
_UNCHECKED = {"data_dir", "lmrec_version"}


def train_run(
    model_name: str,
    dataset_name: str,
    *,
    out_dir: str | Path,
    model_config: dict[str, Any] | None = None,
    train_config: dict[str, Any] | None = None,
    preprocess: dict[str, Any] | None = None,
    candidates: dict[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    data_dir: str | Path | None = None,
) -> dict[str, float]:
    """Train ``model_name`` on ``dataset_name`` (resuming ``out_dir`` if it holds a checkpoint).

    Parameters
    ----------
    model_name:
        A name registered in :data:`lmrec.models.MODELS` (``"popularity"`` is counted, not
        trained).
    dataset_name:
        A dataset :func:`lmrec.data.load_dataset` knows.
    out_dir:
        The run folder (see the module docstring).
    model_config, train_config, preprocess, candidates:
        The four config sections as dicts; unknown keys raise :class:`~lmrec.errors.ConfigError`.
    config:
        The dict form of a YAML/JSON config file with those sections; an explicit argument
        above wins over its section.
    data_dir:
        Local folder to load the dataset from (else the usual sources).

    Returns
    -------
    dict
        The contents of ``metrics.json``: ``topk/HR@1``, ``topk/HR@2``, ``topk/NDCG@20``, ...,
        ``interaction/precision``, ``interaction/recall``, ``interaction/F1``,
        ``interaction/AUC``, ``full/HR@10``, ``full/NDCG@10``, ``full/Recall@10``, and
        ``train/best_epoch``, ``train/epochs``, ``train/best_valid``.
    """
    from lmrec.models import model_config_class
    from lmrec.protocol.prepare import prepare

    sections = _sections(config or {})
    model_config = model_config if model_config is not None else sections.get("model")
    train_config = train_config if train_config is not None else sections.get("train")
    preprocess = preprocess if preprocess is not None else sections.get("preprocess")
    candidates = candidates if candidates is not None else sections.get("candidates")

    train_config = train_defaults(model_name, train_config)  # the model's own best settings
    cfg = from_dict(TrainConfig, train_config, "train")
    # A bad model name or config key fails here, before minutes of data loading.
    from_dict(model_config_class(model_name), model_config, f"model.{model_name}")
    out_dir = Path(out_dir)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    prepared = prepare(
        dataset_name, data_dir=data_dir, preprocess=preprocess, candidates=candidates
    )
    seed_everything(cfg.seed)  # model initialisation is part of the seeded run
    model = _build(model_name, prepared.split, model_config)
    run_config = {
        "model": model_name,
        "model_config": _model_config(model, model_config),
        "dataset": dataset_name,
        "data_dir": str(Path(data_dir).resolve()) if data_dir is not None else None,
        "preprocess": to_dict(prepared.preprocess),
        "candidates": to_dict(prepared.candidates),
        "train": to_dict(cfg),
        "lmrec_version": lmrec.__version__,
    }
    _check_same_run(out_dir, run_config)
    write_json(out_dir / CONFIG_FILE, run_config)
    prepared.dataset.users.save(out_dir / "user_ids.json")
    prepared.dataset.items.save(out_dir / "item_ids.json")
    write_json(out_dir / "protocol.json", prepared.protocol())

    device = resolve_device(cfg.device)
    validate = make_valid_fn(prepared.split, prepared.sets, cfg, device)
    result = train(model, prepared.split, cfg, out_dir, validate)
    metrics = evaluate_model(
        model,
        prepared.split,
        prepared.sets,
        max_len=history_len(model, cfg),
        progress=cfg.progress,
        ranks_to=out_dir / RANKS_FILE,
    )
    metrics.update(train_summary(result.best_epoch, result.epochs, result.best_metric))
    write_json(out_dir / METRICS_FILE, metrics)
    return metrics


def evaluate_run(run_dir: str | Path, *, data_dir: str | Path | None = None) -> dict[str, float]:
    """Reload a saved run's config and best weights and evaluate them again.

    The data, split and candidate sets are rebuilt (or loaded from cache) from ``config.json``;
    the id maps must match the saved ones. The result equals the run's ``metrics.json``.
    """
    run_dir = Path(run_dir)
    model, prepared, cfg = load_domain_run(run_dir, data_dir=data_dir)
    saved_hashes = read_json(run_dir / "protocol.json").get("content_hash")
    if saved_hashes != prepared.protocol()["content_hash"]:
        raise DataError(
            f"{run_dir / 'protocol.json'}: the rebuilt candidate sets differ from those the run "
            "was evaluated on (content hashes differ)"
        )
    metrics = evaluate_model(
        model, prepared.split, prepared.sets, max_len=history_len(model, cfg), progress=cfg.progress
    )
    folder = latest_checkpoint(run_dir)
    if folder is None:
        raise DataError(f"{run_dir}: no checkpoint folder; is this a run folder of `lmrec train`?")
    state = read_state(folder)
    metrics.update(train_summary(state["best_epoch"], state["epoch"], state["best_metric"]))
    return metrics


def load_domain_run(
    run_dir: str | Path, *, data_dir: str | Path | None = None
) -> tuple[Recommender, Any, TrainConfig]:
    """A finished ``lmrec train`` folder back in memory: ``(model, prepared data, train config)``.

    The model holds the best weights, in eval mode, on the run's device; the data and split are
    rebuilt (or read from the cache) from ``config.json``, and their id maps must equal the
    saved ones, else the weights no longer line up.
    """
    from lmrec.protocol.prepare import prepare

    run_dir = Path(run_dir)
    saved = read_json(run_dir / CONFIG_FILE)
    required = ("model", "model_config", "dataset", "train", "preprocess", "candidates")
    missing = [k for k in required if k not in saved]
    if missing:
        raise DataError(f"{run_dir / CONFIG_FILE}: missing key(s) {', '.join(missing)}")
    if not (run_dir / BEST_FILE).is_file():
        raise DataError(f"{run_dir}: no {BEST_FILE}; is it a finished `lmrec train` folder?")
    cfg = from_dict(TrainConfig, saved["train"], f"{run_dir / CONFIG_FILE}: train")
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    prepared = prepare(
        saved["dataset"],
        data_dir=data_dir if data_dir is not None else saved.get("data_dir"),
        preprocess=saved["preprocess"],
        candidates=saved["candidates"],
    )
    check_id_maps(run_dir, prepared.dataset)
    model = trained_model(run_dir, prepared.split, saved, resolve_device(cfg.device))
    return model, prepared, cfg


def domain_model_in(
    run_dir: str | Path,
    dataset_name: str,
    prepared: Any,
    *,
    model: str | None = None,
    model_config: dict[str, Any] | None = None,
    train_config: dict[str, Any] | None = None,
    data_dir: str | Path | None = None,
) -> Recommender:
    """The trained domain model of run folder ``run_dir`` on ``prepared``, in eval mode: the one
    load-or-train step of LLM pre-loading and BDLM.

    A folder without best weights is trained first when ``model`` names what to train (with
    ``prepared``'s preprocessing and candidate sets, so it is scored like everything else);
    otherwise it must be a finished ``lmrec train`` folder. Its id maps must equal
    ``prepared``'s, else its rows belong to other users or items.
    """
    run = Path(run_dir)
    if not (run / BEST_FILE).is_file():
        if model is None:
            raise DataError(f"{run}: no {BEST_FILE}; is it a finished `lmrec train` folder?")
        train_run(
            model,
            dataset_name,
            out_dir=run,
            model_config=model_config,
            train_config=train_config,
            preprocess=to_dict(prepared.preprocess),
            candidates=to_dict(prepared.candidates),
            data_dir=data_dir,
        )
    check_id_maps(run, prepared.dataset)
    return trained_model(run, prepared.split, read_json(run / CONFIG_FILE))


def trained_model(
    run_dir: Path, split: Split, saved: Mapping[str, Any], device: torch.device | None = None
) -> Recommender:
    """The model of a finished run (its ``config.json`` as ``saved``) with its best weights, in
    eval mode: built, given ``split``'s train pairs (LightGCN's graph, popularity's counts),
    then loaded."""
    model = _build(saved["model"], split, saved.get("model_config"))
    if device is not None:
        model.to(device)
    model.prepare(split.train["user"].to_numpy(), split.train["item"].to_numpy())
    load_weights(model, Path(run_dir) / BEST_FILE)
    model.eval()
    return model


def check_id_maps(run_dir: Path, dataset) -> None:
    """Raise if a reloaded ``dataset``'s user or item ids differ from the run folder's
    ``user_ids.json`` / ``item_ids.json`` (every reload of saved weights checks this)."""
    for kind, ids in (("user", dataset.users), ("item", dataset.items)):
        path = Path(run_dir) / f"{kind}_ids.json"
        if read_json(path).get("raw") != ids.raw:
            raise DataError(
                f"{path}: the {kind} ids of the reloaded dataset differ from the run's; the data "
                "changed since training, so the saved weights no longer line up"
            )


def _sections(config: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(config) - set(SECTIONS))
    if unknown:
        raise ConfigError(
            f"config: unknown section(s) {', '.join(unknown)}; valid: {', '.join(SECTIONS)}"
        )
    for name, value in config.items():
        if value is not None and not isinstance(value, Mapping):
            raise ConfigError(f"config.{name} must be a mapping, got {type(value).__name__}")
    return dict(config)


def _build(name: str, split: Split, config: dict[str, Any] | None) -> Recommender:
    from lmrec.models import build_model

    return build_model(name, split.n_users, split.n_items, config)


def _model_config(model: Recommender, given: dict[str, Any] | None) -> dict[str, Any]:
    """The resolved model config (defaults filled in) when the model keeps one, else as given."""
    cfg = getattr(model, "config", None)
    try:
        return to_dict(cfg)
    except TypeError:  # not a dataclass
        return dict(given or {})


def _check_same_run(out_dir: Path, run_config: dict[str, Any]) -> None:
    def view(config: dict[str, Any]) -> dict[str, Any]:
        kept = {k: v for k, v in config.items() if k not in _UNCHECKED}
        return without_resumable(kept, TrainConfig, "train")

    check_same_run(out_dir, run_config, view, "domain-model run")


def train_summary(best_epoch: int | None, epochs: int, best: float | None) -> dict[str, float]:
    """``train/best_epoch``, ``train/epochs`` and ``train/best_valid`` for ``metrics.json``."""
    out = {
        "train/best_epoch": best_epoch if best_epoch is not None else epochs,
        "train/epochs": epochs,
    }
    if best is not None:
        out["train/best_valid"] = float(best)
    return out
