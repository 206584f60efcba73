"""The one training loop: domain models, LLM fine-tuning and BDLM's joint step all run on it.

A trainer hands :class:`Loop` its named parts (a module, its optimiser, what a checkpoint keeps
of it) and a step function ``step_fn(step) -> {loss name: value}`` that takes one gradient step
(global steps count from 0). The loop owns everything around the steps:

- threads (``num_threads``), the CPU allocator fix (:func:`lmrec.utils.memory.configure_malloc`)
  and peak-memory accounting;
- seeding: python, numpy and torch are seeded from ``seed`` at the start, and their states are
  saved with every checkpoint and restored on resume (step functions that seed per step, as
  the LLM's dropout does, stay exact either way);
- progress (one tqdm bar) and loss bookkeeping: per-epoch means (``history``) and the last
  :data:`RECENT` steps (``final``);
- epochs: ``on_epoch_end(entry)`` (validation, early stopping: return True to stop) runs before
  the epoch's checkpoint, ``after_checkpoint(entry)`` after it;
- one checkpoint format, written whole to a temporary folder and renamed::

      checkpoints/step-NNNNNNN/<part>/model.safetensors      (or trainable.safetensors)
                              <part>/optimizer.safetensors  optimiser tensors
                              <part>/optimizer.json         param groups, scalars
                              state.json                    step, epoch, history, config, RNG

  at the end of every epoch, every ``save_every`` steps and at the last step; the newest
  ``keep`` are kept;
- exact resume: the newest complete checkpoint is loaded, its saved config checked against
  this one (only fields marked :data:`lmrec.config.RESUMABLE` may differ), and the run goes on
  from the step after it.
"""

from __future__ import annotations

import resource
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from lmrec.config import check_resumable, to_dict
from lmrec.errors import DataError
from lmrec.train.checkpoint import (
    load_optimizer,
    load_weights,
    optimizer_state,
    rng_state,
    save_optimizer,
    save_weights,
    seed_everything,
    set_rng_state,
)
from lmrec.utils.distributed import full_tensor, local_share, processes, require_one_process
from lmrec.utils.io import atomic_folder, read_json, write_json
from lmrec.utils.memory import LEAN_POLICY, configure_malloc

CHECKPOINTS = "checkpoints"
STATE_FILE = "state.json"
RECENT = 20  # steps averaged into ``final`` (the loss a run reports) and the progress bar

StepFn = Callable[[int], Mapping[str, float | torch.Tensor]]
EpochHook = Callable[[dict[str, Any]], bool | None]


@dataclass
class Part:
    """One trained part of a run and what a checkpoint keeps of it.

    Attributes
    ----------
    name:
        Its folder inside a checkpoint (``model``, ``llm``, ``drs``, ``sharing``).
    module:
        The module; its state dict (or only its trainable parameters) is saved.
    optimizer:
        Its optimiser, saved beside it; None for parts not trained by gradient (BDLM's M).
    trainable_only:
        Keep only the parameters with ``requires_grad`` (``trainable.safetensors``): an LLM's
        LoRA adapters or new token rows without its frozen base.
    """

    name: str
    module: nn.Module
    optimizer: torch.optim.Optimizer | None = None
    trainable_only: bool = False

    @property
    def weights_file(self) -> str:
        return "trainable.safetensors" if self.trainable_only else "model.safetensors"

    def gather(self, keep: bool = True) -> dict[str, Any] | None:
        """What a checkpoint writes of this part, on the CPU, sharded tensors gathered whole:
        a collective when the part is sharded (every process calls it, in the same order; those
        that do not write pass ``keep=False``, drop each tensor once gathered and get None)."""
        weights = None
        if self.trainable_only:
            weights = {}
            for n, p in self.module.named_parameters():
                if p.requires_grad:
                    whole = full_tensor(p).detach()
                    if keep:
                        weights[n] = whole.contiguous().cpu()
        optim = optimizer_state(self.optimizer, keep) if self.optimizer is not None else None
        return {"weights": weights, "optimizer": optim} if keep else None

    def save(self, folder: Path, gathered: dict[str, Any]) -> None:
        """Write this part into checkpoint folder ``folder``, from :meth:`gather`'s result
        (gathered by every process when the part is sharded; the main one writes)."""
        sub = Path(folder) / self.name
        sub.mkdir(parents=True, exist_ok=True)
        if gathered["weights"] is not None:
            save_file(gathered["weights"], str(sub / self.weights_file))
        else:
            save_weights(self.module, sub / self.weights_file)
        if gathered["optimizer"] is not None:
            save_optimizer(gathered["optimizer"], sub)

    def load(self, folder: Path) -> None:
        sub = Path(folder) / self.name
        if self.trainable_only:
            load_trainable(self.module, sub / self.weights_file)
        else:
            load_weights(self.module, sub / self.weights_file)
        if self.optimizer is not None:
            load_optimizer(self.optimizer, sub)


def load_trainable(module: nn.Module, path: str | Path) -> None:
    """Load a ``trainable.safetensors`` into a module prepared the way it was trained (sharded
    by FSDP or not, under any number of processes)."""
    path = Path(path)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise DataError(f"{path}: corrupt or unreadable checkpoint file ({exc})") from exc
    params = dict(module.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in state]
    unexpected = [n for n in state if n not in params]
    if unexpected or missing:
        raise DataError(
            f"{path}: checkpoint does not match the model (unexpected "
            f"{unexpected[:3]}, missing {missing[:3]}); was it trained with another "
            "mode or model?"
        )
    with torch.no_grad():
        for name, value in state.items():
            param = params[name]
            if value.shape != param.shape:
                raise DataError(
                    f"{path}: {name} has shape {tuple(value.shape)}, the model "
                    f"{tuple(param.shape)}; was it trained with another model config?"
                )
            param.copy_(local_share(value, param))


# ----------------------------------------------------------------------------- folders


def checkpoint_dirs(out_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run folder, oldest first."""
    root = Path(out_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    done = [p for p in root.glob("step-*") if (p / STATE_FILE).is_file()]
    return sorted(done, key=lambda p: int(p.name.split("-")[1]))


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of ``out_dir``, or None."""
    dirs = checkpoint_dirs(out_dir)
    return dirs[-1] if dirs else None


def read_state(folder: str | Path) -> dict[str, Any]:
    """A checkpoint's ``state.json`` (read before any tensor, to check configs)."""
    path = Path(folder) / STATE_FILE
    state = read_json(path)
    if not isinstance(state, dict) or "step" not in state:
        raise DataError(f"{path}: not an lmrec checkpoint state (no 'step' key)")
    return state


def _refuse_old_layout(out_dir: Path) -> None:
    """A run folder checkpointed by lmrec before the one loop would otherwise start again from
    step 0 and overwrite its results: say so instead."""
    old = [out_dir / "checkpoint" / "trainer_state.json"]  # domain models' single checkpoint
    for step in (out_dir / CHECKPOINTS).glob("step-*"):  # LLM and BDLM runs' older files
        old += [step / "trainable.safetensors", step / "sharing.safetensors"]
    found = [p for p in old if p.is_file()]
    if found:
        raise DataError(
            f"{found[0].parent}: a checkpoint in the layout of an older lmrec; its finished "
            "results (best.safetensors, metrics.json) still load, but it cannot be resumed: "
            "train into a new folder"
        )


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA memory on GPU; peak resident set size of the process on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# ----------------------------------------------------------------------------- loop


class Loop:
    """Steps, epochs, checkpoints and resume of one training run (see the module docstring).

    Parameters
    ----------
    parts:
        What is trained and saved.
    config:
        The run's training config (a dataclass): saved in every checkpoint and checked on
        resume.
    steps_per_epoch, epochs, max_steps:
        The schedule; ``max_steps`` > 0 caps the total.
    out_dir:
        The run folder (checkpoints go under ``checkpoints/``); None trains without saving.
    seed, num_threads, save_every, keep, progress, desc:
        See the module docstring; ``desc`` labels the progress bar.
    config_name:
        How errors name ``config`` (``"train config"``, ``"joint config"``).
    distributed:
        The step function shards its work across the processes of a multi-process launch
        (:mod:`lmrec.utils.distributed`); a trainer that does not is refused under one.
    state:
        Extra keys the caller keeps in the saved state (e.g. early-stopping counters), with
        their initial values; a resume restores them.
    device:
        The device training computes on, when the parameters may sit elsewhere (FSDP's CPU
        offload); the parameters' device by default.
    lean_memory:
        The run trades time for memory (gradient checkpointing): on CPU, the allocator keeps
        the smaller heap (:data:`lmrec.utils.memory.LEAN_POLICY`) instead of the faster one.
    """

    def __init__(
        self,
        parts: list[Part],
        config: Any,
        *,
        steps_per_epoch: int,
        epochs: int,
        max_steps: int = 0,
        out_dir: str | Path | None = None,
        seed: int = 0,
        num_threads: int = 0,
        save_every: int = 0,
        keep: int = 1,
        progress: bool = True,
        desc: str = "train",
        config_name: str = "train config",
        distributed: bool = False,
        state: dict[str, Any] | None = None,
        device: torch.device | None = None,
        lean_memory: bool = False,
    ) -> None:
        if not distributed:
            require_one_process(f"{desc} training")
        self.procs = processes()
        self.config_name = config_name
        self.parts = parts
        self.config = config
        self.per_epoch = max(1, steps_per_epoch)
        total = steps_per_epoch * epochs
        self.total = min(total, max_steps) if max_steps else total
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.seed = seed
        self.num_threads = num_threads
        self.save_every = save_every
        self.keep = keep
        self.progress = progress and self.procs.is_main
        self.desc = desc
        self.state: dict[str, Any] = {
            "step": 0,
            "epoch": 0,  # completed epochs
            "stopped": False,  # an epoch hook asked to stop (early stopping)
            "history": [],  # one entry per finished epoch
            "epoch_sums": {},
            "epoch_count": 0,
            "recent": [],  # the last RECENT steps' losses
            **(state or {}),
        }
        self.lean_memory = lean_memory
        self._started: int | None = None
        # the device training computes on (a trainer whose engine offloads parameters to the
        # CPU passes it; otherwise the parameters' device)
        self.device = device or next(
            (p.device for part in parts for p in part.module.parameters()), torch.device("cpu")
        )

    # ------------------------------------------------------------------------- files

    def save(self) -> Path:
        """Write the checkpoint of the current step (the main process writes the full state,
        the others wait for it); returns its folder."""
        assert self.out_dir is not None
        final = self.out_dir / CHECKPOINTS / f"step-{self.state['step']:07d}"
        sharded = any(self.procs.sharded(part.module) for part in self.parts)
        if not self.procs.is_main and not sharded:
            self.procs.barrier()
            return final
        # sharded parts are gathered by every process together; the main one writes them
        gathered = [part.gather(keep=self.procs.is_main) for part in self.parts]
        if not self.procs.is_main:
            self.procs.barrier()
            return final
        self.state["recent"] = [{k: float(v) for k, v in r.items()} for r in self.state["recent"]]
        self.state["epoch_sums"] = {k: float(v) for k, v in self.state["epoch_sums"].items()}
        with atomic_folder(final) as tmp:
            for part, got in zip(self.parts, gathered, strict=True):
                part.save(tmp, got)
            state = {**self.state, "config": to_dict(self.config), "rng": rng_state()}
            write_json(tmp / STATE_FILE, state)
        for old in checkpoint_dirs(self.out_dir)[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        self.procs.barrier()
        return final

    def start(self) -> int:
        """Set threads and the allocator, seed, and resume; returns the step training starts
        from. :meth:`run` calls it; a trainer that must look at the resumed state first (to
        repair a file written after the checkpoint) calls it before :meth:`run`."""
        if self._started is not None:
            return self._started
        if self.num_threads:
            torch.set_num_threads(self.num_threads)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            # reuse freed activations between steps (lmrec.utils.memory)
            configure_malloc(LEAN_POLICY if self.lean_memory else None)
        seed_everything(self.seed)
        self._started = self.resume()
        return self._started

    def resume(self) -> int:
        """Load the newest checkpoint of ``out_dir`` (if any); returns the step it reached."""
        if self.out_dir is None:
            return 0
        # temporary folders of a checkpoint whose writing was killed (never complete ones)
        if self.procs.is_main:
            for stale in (self.out_dir / CHECKPOINTS).glob(".step-*"):
                shutil.rmtree(stale, ignore_errors=True)
        _refuse_old_layout(self.out_dir)
        ckpt = latest_checkpoint(self.out_dir)
        if ckpt is None:
            return 0
        saved = read_state(ckpt)
        check_resumable(saved.get("config", {}), self.config, ckpt, self.config_name)
        for part in self.parts:
            part.load(ckpt)
        if saved.get("rng"):
            set_rng_state(saved["rng"])
        self.state.update({k: v for k, v in saved.items() if k not in ("config", "rng")})
        return int(self.state["step"])

    # ------------------------------------------------------------------------- run

    def run(
        self,
        step_fn: StepFn,
        *,
        on_epoch_end: EpochHook | None = None,
        after_checkpoint: EpochHook | None = None,
        on_step: Callable[[int, Mapping[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Train to the end of the schedule (or until a hook stops it), resuming first.

        ``on_step(done, losses)`` is called after every step and its checkpoint (steps count
        from 1 there); raising from it, or from ``after_checkpoint``, stops training with the
        checkpoint intact.

        Returns
        -------
        dict
            ``steps``, ``resumed_from``, ``seconds``, ``steps_per_s``, ``peak_memory_mb``,
            ``history`` and ``final`` (each loss averaged over the last :data:`RECENT` steps).
        """
        start = self.start()
        st = self.state
        t0 = epoch_t0 = time.perf_counter()
        steps = range(start, self.total) if not st["stopped"] else range(0)
        bar = tqdm(
            steps, desc=self.desc, initial=start, total=self.total, disable=not self.progress
        )
        for step in bar:
            losses = step_fn(step)
            for key, value in losses.items():
                value = value.detach() if isinstance(value, torch.Tensor) else value
                st["epoch_sums"][key] = st["epoch_sums"].get(key, 0.0) + value
            st["epoch_count"] += 1
            st["recent"] = (st["recent"] + [dict(losses)])[-RECENT:]
            done = st["step"] = step + 1
            if self.progress and (done % RECENT == 0 or done == self.total or done == start + 1):
                bar.set_postfix({k.split("/")[-1]: f"{v:.4f}" for k, v in self._final().items()})
            # an epoch closes at its boundary only: a run capped mid-epoch (max_steps) keeps the
            # partial sums in its checkpoint and closes the epoch when it goes on
            epoch_end = done % self.per_epoch == 0
            if epoch_end:
                entry = self._close_epoch(done)
                if on_epoch_end is not None and on_epoch_end(entry):
                    st["stopped"] = True
                entry["seconds"] = time.perf_counter() - epoch_t0
                st["history"].append(entry)
                epoch_t0 = time.perf_counter()
            if self.out_dir is not None and (
                epoch_end or done == self.total or (self.save_every and done % self.save_every == 0)
            ):
                self.save()
            if epoch_end and after_checkpoint is not None:
                after_checkpoint(st["history"][-1])
            if on_step is not None:
                on_step(done, losses)
            if st["stopped"]:
                break
        bar.close()
        for part in self.parts:
            part.module.eval()
        seconds = time.perf_counter() - t0
        ran = st["step"] - start
        return {
            "steps": st["step"],
            "resumed_from": start,
            "seconds": seconds,
            "steps_per_s": ran / seconds if seconds > 0 and ran else 0.0,
            "peak_memory_mb": peak_memory_mb(self.device),
            "history": st["history"],
            "final": self._final(),
        }

    def _close_epoch(self, done: int) -> dict[str, Any]:
        st = self.state
        count = max(st["epoch_count"], 1)
        entry = {"epoch": -(-done // self.per_epoch)}
        entry.update({k: float(v) / count for k, v in st["epoch_sums"].items()})
        st["epoch"] = entry["epoch"]
        st["epoch_sums"], st["epoch_count"] = {}, 0
        return entry

    def _final(self) -> dict[str, float]:
        recent = self.state["recent"]
        keys = {k for r in recent for k in r}
        return {k: float(np.mean([float(r[k]) for r in recent if k in r])) for k in sorted(keys)}


__all__ = [
    "CHECKPOINTS",
    "RECENT",
    "Loop",
    "Part",
    "checkpoint_dirs",
    "latest_checkpoint",
    "load_trainable",
    "peak_memory_mb",
    "read_state",
]
