"""Several processes on one run, through HF Accelerate (DDP; the launchers set it up).

A run started by ``torchrun --nproc_per_node N`` or ``accelerate launch`` carries the launcher's
environment (``WORLD_SIZE``, ``RANK``, ...). :func:`processes` then joins the process group
through Accelerate's :class:`~accelerate.PartialState` (gloo on CPU, NCCL on GPUs), and every
process runs the same code on its share of the work:

- training (:mod:`lmrec.train.loop`): each step's global batch is split into one contiguous
  shard per process, the model is wrapped by Accelerate (``Accelerator.prepare_model``: DDP),
  so gradients are averaged across processes, and losses are normalised by the global batch's
  token count, so N processes compute the step one process computes;
- evaluation (:func:`lmrec.eval.evaluator.score_candidates`): each process scores its shard of
  the users and the shards are gathered in order, so every user is scored exactly once;
- files: only the main process writes (checkpoints hold the full state, so a run resumes under
  any number of processes); the others wait at a barrier.

Without a launcher there is one process and none of this costs anything.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import torch

from lmrec.errors import ConfigError


def launched() -> bool:
    """Whether this process was started by a multi-process launcher."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@dataclass(frozen=True)
class Processes:
    """The processes of this run: how many, which one this is, and collective helpers."""

    world: int = 1
    rank: int = 0
    cpu: bool = True

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, items: np.ndarray) -> np.ndarray:
        """This process's contiguous share of ``items`` (shards in rank order cover them once)."""
        if self.world == 1:
            return items
        return np.array_split(np.asarray(items), self.world)[self.rank]

    def gather(self, local: np.ndarray) -> np.ndarray:
        """Every process's :meth:`shard` result, concatenated in rank order, on every process."""
        if self.world == 1:
            return local
        from accelerate.utils import gather_object

        parts = gather_object([np.asarray(local)])
        return np.concatenate(parts, axis=0)

    def sum(self, value: float) -> float:
        """The sum of ``value`` over the processes, on every process."""
        if self.world == 1:
            return float(value)
        # NCCL reduces CUDA tensors only; gloo (CPU) takes CPU ones
        device = "cpu" if self.cpu else torch.device("cuda", torch.cuda.current_device())
        t = torch.tensor([float(value)], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(t)
        return float(t.item())

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model as the engine trains it: wrapped for DDP by Accelerate when there are
        several processes, unchanged otherwise."""
        if self.world == 1:
            return model
        from accelerate.utils import DistributedType

        accelerator = _accelerator(self.cpu)
        if accelerator.distributed_type not in (
            DistributedType.MULTI_CPU,
            DistributedType.MULTI_GPU,
        ):
            raise ConfigError(
                f"the launch asks for {accelerator.distributed_type.value}; lmrec's training "
                "loop drives DDP (MULTI_CPU / MULTI_GPU) so far: FSDP and DeepSpeed need the "
                "optimiser and checkpoints handed to the engine, which the loop does not do yet"
            )
        return accelerator.prepare_model(model)

    @contextlib.contextmanager
    def no_sync(self, model: torch.nn.Module, skip: bool) -> Iterator[None]:
        """Accumulate this backward's gradients locally (``skip``) instead of all-reducing."""
        if self.world == 1 or not skip:
            yield
            return
        with model.no_sync():
            yield


@cache
def _accelerator(cpu: bool) -> Any:
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    # BDLM's cascade may hold a head weight a run does not use (no h_LLM feature): let DDP
    # find the parameters a step leaves without a gradient instead of failing
    # mixed_precision "no": lmrec's own `precision` setting decides autocast, also when a
    # launch config (or its environment) asks Accelerate for bf16
    return Accelerator(
        cpu=cpu,
        mixed_precision="no",
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )


@cache
def processes() -> Processes:
    """This run's :class:`Processes` (joins the process group on first use under a launcher)."""
    if not launched():
        return Processes()
    from accelerate import PartialState

    cpu = not torch.cuda.is_available()
    state = PartialState(cpu=cpu)
    return Processes(world=state.num_processes, rank=state.process_index, cpu=cpu)


def require_one_process(what: str) -> None:
    """Refuse clearly where a trainer does not shard its work across processes yet."""
    if launched():
        raise ConfigError(
            f"{what} runs in one process; launch it without torchrun / accelerate launch "
            "(multi-process training covers LLM fine-tuning and BDLM's joint training; train "
            "the domain model first, in one process)"
        )


__all__ = ["Processes", "launched", "processes", "require_one_process"]
