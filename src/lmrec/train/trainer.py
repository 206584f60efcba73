"""Domain-model training: the step, validation and early stopping handed to the one loop.

``train(model, split, cfg, out_dir, valid_fn)`` runs on :class:`lmrec.train.loop.Loop`: Adam
on the batches of the model's ``batch_kind``, validation every ``eval_every`` epochs, early
stopping on ``cfg.valid_metric`` with ``patience``, a checkpoint after every epoch (the loop's
format) and ``best.safetensors`` whenever validation improves. Running it again on the same
``out_dir`` resumes after the last completed epoch and ends bit-for-bit where an uninterrupted
run would: batches depend only on ``(seed, epoch)``, and the checkpoint carries the weights,
Adam's moments and step, and every RNG state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from lmrec.config import RESUMABLE
from lmrec.errors import ConfigError, DataError, check_ints
from lmrec.models.base import Recommender
from lmrec.protocol.split import Split
from lmrec.train.batches import BatchBuilder
from lmrec.train.checkpoint import load_weights, save_weights, weights_metadata
from lmrec.train.loop import Loop, Part
from lmrec.utils.device import resolve_device

BEST_FILE = "best.safetensors"
# Fields that may change when a run is resumed: ``epochs`` may grow to train a finished run
# further; the others do not change what is computed (another thread count or device can
# change the last bits of float sums, so keep them for bit-exact resumes).

ValidFn = Callable[[Recommender], dict[str, float]]


@dataclass
class TrainConfig:
    """How a domain model is trained. Saved with every checkpoint.

    Attributes
    ----------
    epochs:
        Maximum number of epochs.
    batch_size:
        Rows per batch (users per batch for sequence models).
    lr, weight_decay:
        Adam's learning rate and L2 penalty.
    patience:
        Stop after this many validations in a row without improvement; 0 never stops early.
    eval_every:
        Validate every this many epochs (and after the last one). Patience counts validations.
    seed:
        Seeds python, numpy and torch, and with the epoch number every epoch's batches.
    device:
        ``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    max_len:
        History length of sequence models, in training batches and at scoring time. ``None``
        (default) takes the model's own ``max_len`` (:func:`history_len`).
    n_neg:
        Sampled negatives per positive for pointwise (BCE) models.
    num_threads:
        ``torch.set_num_threads`` for CPU training; 0 leaves torch's default.
    valid_metric:
        The validation metric early stopping and best-weight selection follow (higher is
        better). Default ``"full/NDCG@10"``: full ranking over every item with the user's train
        items masked, on the validation stage. It depends on no negative sampler and varies
        more smoothly than HR@1 over 20 candidates, so patience is less noisy. Candidate-set
        metrics such as ``"topk/HR@1"`` are accepted too (whatever key ``valid_fn`` returns).
    progress:
        Show a tqdm bar per epoch and a one-line summary after it.
    """

    epochs: int = field(default=100, metadata=RESUMABLE)
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 10
    eval_every: int = 1
    seed: int = 0
    device: str = field(default="auto", metadata=RESUMABLE)
    max_len: int | None = None
    n_neg: int = 4
    num_threads: int = field(default=0, metadata=RESUMABLE)
    valid_metric: str = "full/NDCG@10"
    progress: bool = field(default=True, metadata=RESUMABLE)

    def __post_init__(self) -> None:
        check_ints(
            "train",
            self,
            {
                "epochs": 0,
                "batch_size": 1,
                "patience": 0,
                "eval_every": 1,
                "n_neg": 1,
                "num_threads": 0,
            },
        )
        if self.max_len is not None and (
            isinstance(self.max_len, bool) or not isinstance(self.max_len, int) or self.max_len < 1
        ):
            raise ConfigError(
                f"train.max_len must be null or an integer >= 1, got {self.max_len!r}"
            )
        if not isinstance(self.seed, int):
            raise ConfigError(f"train.seed must be an integer, got {self.seed!r}")
        if isinstance(self.lr, bool) or not isinstance(self.lr, int | float) or self.lr <= 0:
            raise ConfigError(f"train.lr must be a number > 0, got {self.lr!r}")
        wd = self.weight_decay
        if isinstance(wd, bool) or not isinstance(wd, int | float) or wd < 0:
            raise ConfigError(f"train.weight_decay must be a number >= 0, got {wd!r}")
        if self.device != "auto":
            try:
                torch.device(self.device)
            except (RuntimeError, TypeError) as exc:
                raise ConfigError(
                    f"train.device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}"
                ) from exc
        if not isinstance(self.valid_metric, str) or not self.valid_metric:
            raise ConfigError("train.valid_metric must be a metric name such as 'full/NDCG@10'")


@dataclass
class TrainResult:
    """What :func:`train` did: ``history`` has one entry per epoch (loss, metrics, seconds)."""

    best_epoch: int
    best_metric: float | None
    epochs: int
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)


def history_len(model: Recommender, cfg: TrainConfig) -> int | None:
    """How many past items ``model`` reads, or None when it reads no history.

    Sequence models expose ``max_len``; ``cfg.max_len`` overrides it when set. Other models
    ignore histories, so none are built for them.
    """
    reads = model.batch_kind == "sequence" or hasattr(model, "max_len")
    if not reads:
        return None
    return cfg.max_len if cfg.max_len is not None else int(getattr(model, "max_len", 50))


def train(
    model: Recommender,
    split: Split,
    cfg: TrainConfig,
    out_dir: str | Path,
    valid_fn: ValidFn,
    *,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train ``model`` on ``split.train``, resuming from ``out_dir``'s checkpoint if there is one.

    Parameters
    ----------
    model:
        Any :class:`~lmrec.models.base.Recommender`; ``batch_kind == "none"`` is only validated.
    split:
        The leave-one-out split (train interactions are read; validation is ``valid_fn``'s job).
    cfg:
        The :class:`TrainConfig`.
    out_dir:
        Run folder: ``checkpoints/`` (every epoch, :mod:`lmrec.train.loop`) and
        ``best.safetensors`` are written here.
    valid_fn:
        ``valid_fn(model) -> {metric: value}``, called in eval mode under ``torch.no_grad``; it
        must return ``cfg.valid_metric``.
    on_epoch_end:
        Called as ``on_epoch_end(epoch, history_entry)`` after each epoch's checkpoint is
        written (epochs count from 1). Raising from it stops training with the checkpoint intact.

    Returns
    -------
    TrainResult
        With ``model`` left holding the best weights (those of ``best.safetensors``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.to(resolve_device(cfg.device, "train.device"))
    # What models build from the train data (LightGCN's graph, popularity's counts) is not in
    # their weights, so it is rebuilt on every start, resumed or not.
    model.prepare(split.train["user"].to_numpy(), split.train["item"].to_numpy())
    trains = model.batch_kind != "none"
    optimizer = (
        torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        if trains
        else None
    )
    batches = None
    if trains:
        batches = BatchBuilder(
            split,
            model.batch_kind,
            cfg.batch_size,
            cfg.seed,
            max_len=history_len(model, cfg) or 1,
            n_neg=cfg.n_neg,
        )
    loop = Loop(
        [Part("model", model, optimizer)],
        cfg,
        # nothing to learn: one empty "epoch" validates once, for the record
        steps_per_epoch=batches.n_batches() if batches is not None else 1,
        epochs=cfg.epochs if trains else 1,
        out_dir=out_dir,
        seed=cfg.seed,
        num_threads=cfg.num_threads,
        progress=cfg.progress,
        desc="train",
        state={"best_metric": None, "best_epoch": None, "bad_evals": 0},
    )
    current: list[Any] = [None]  # this epoch's batch iterator

    def step_fn(step: int) -> dict[str, torch.Tensor]:
        if batches is None:
            return {}
        epoch, k = divmod(step, loop.per_epoch)
        # checkpoints fall on epoch boundaries, so every start (fresh or resumed) is a k == 0;
        # batches depend on (seed, epoch) only
        if k == 0:
            current[0] = iter(batches.epoch(epoch + 1))
            model.train()
        rows = next(current[0])
        batch = {n: t.to(loop.device, non_blocking=True) for n, t in rows.items()}
        loss = model.loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"loss": loss.detach()}

    def validate(entry: dict[str, Any]) -> bool:
        state = loop.state
        epoch = entry["epoch"]
        if not trains:
            entry["epoch"], entry["loss"] = 0, None
            state["epoch"] = 0
        elif not np.isfinite(entry["loss"]):
            raise FloatingPointError(
                f"training loss became {entry['loss']} in epoch {epoch}; lower train.lr"
            )
        if trains and epoch % cfg.eval_every and epoch != cfg.epochs:
            return False
        metrics = _validate(model, valid_fn, cfg.valid_metric)
        entry["metrics"] = metrics
        value = metrics[cfg.valid_metric]
        if state["best_metric"] is None or value > state["best_metric"]:
            state.update(best_metric=value, best_epoch=entry["epoch"], bad_evals=0)
            return False
        state["bad_evals"] += 1
        return bool(cfg.patience and state["bad_evals"] >= cfg.patience)

    def after_checkpoint(entry: dict[str, Any]) -> None:
        # After the checkpoint: a kill in between is repaired on resume by _repair_best. The
        # best epoch is this one exactly when this epoch's validation improved.
        if entry["epoch"] == loop.state["best_epoch"]:
            save_weights(model, out_dir / BEST_FILE, {"epoch": str(entry["epoch"])})
        if not trains:
            return
        if cfg.progress:
            tqdm.write(_summary(entry, loop.state, cfg.valid_metric))
        if on_epoch_end is not None:
            on_epoch_end(entry["epoch"], entry)

    if loop.start():
        _repair_best(out_dir, model, loop.state)
    loop.run(step_fn, on_epoch_end=validate, after_checkpoint=after_checkpoint)
    return _finish(out_dir, model, loop.state, trains)


def _validate(model: Recommender, valid_fn: ValidFn, metric: str) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        metrics = {k: float(v) for k, v in valid_fn(model).items()}
    model.train()
    if metric not in metrics:
        raise ConfigError(
            f"train.valid_metric {metric!r} is not among the validation metrics "
            f"({', '.join(sorted(metrics))})"
        )
    return metrics


def _repair_best(out_dir: Path, model: Recommender, state: dict[str, Any]) -> None:
    # best.safetensors is written just after the checkpoint swap; a kill in between leaves it
    # one improvement behind, and then the checkpoint's own weights are the best ones.
    best_epoch = state.get("best_epoch")
    if best_epoch is None:
        return
    path = out_dir / BEST_FILE
    on_disk = weights_metadata(path).get("epoch") if path.exists() else None
    if on_disk == str(best_epoch):
        return
    if best_epoch != state["epoch"]:
        raise DataError(
            f"{path}: holds epoch {on_disk} but the checkpoint's best epoch is {best_epoch}; "
            "the best weights are lost, delete the run folder to train again"
        )
    save_weights(model, path, {"epoch": str(best_epoch)})


def _finish(out_dir: Path, model: Recommender, state: dict[str, Any], trains: bool) -> TrainResult:
    if state["best_epoch"] is not None:
        load_weights(model, out_dir / BEST_FILE)
    model.eval()
    return TrainResult(
        best_epoch=state["best_epoch"] if state["best_epoch"] is not None else state["epoch"],
        best_metric=state["best_metric"],
        epochs=state["epoch"],
        stopped_early=state["stopped"] and trains,
        history=state["history"],
    )


def _summary(entry: dict[str, Any], state: dict[str, Any], metric: str) -> str:
    text = f"epoch {entry['epoch']}: loss {entry['loss']:.4f}"
    if "metrics" in entry:
        text += f", {metric} {entry['metrics'][metric]:.4f}"
        text += f" (best {state['best_metric']:.4f} at epoch {state['best_epoch']})"
    return text + f", {entry['seconds']:.1f} s"


__all__ = [
    "TrainConfig",
    "TrainResult",
    "history_len",
    "resolve_device",
    "train",
]
