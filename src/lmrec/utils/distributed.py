"""Several processes on one run: DDP through HF Accelerate, or FSDP (the launchers set it up).

A run started by ``torchrun --nproc_per_node N`` or ``accelerate launch`` carries the launcher's
environment (``WORLD_SIZE``, ``RANK``, ...). :func:`processes` then joins the process group
through Accelerate's :class:`~accelerate.PartialState` (gloo on CPU, NCCL on GPUs), and every
process runs the same code on its share of the work:

- training (:mod:`lmrec.train.loop`): each step's global batch is split into one contiguous
  shard per process, the model is wrapped by Accelerate (``Accelerator.prepare_model``: DDP),
  so gradients are averaged across processes, and losses are normalised by the global batch's
  token count, so N processes compute the step one process computes;
- FSDP (a launch whose environment says ``ACCELERATE_USE_FSDP=true``, as ``accelerate launch
  --config_file configs/accelerate/fsdp_full_shard.yaml`` sets it): the LLM is sharded by
  PyTorch's FSDP2 (``fully_shard``, one unit per decoder layer and one for the rest), with the
  options Accelerate's :class:`~accelerate.utils.FullyShardedDataParallelPlugin` reads from
  that environment (reshard after forward, CPU offload). Accelerate itself enables FSDP on GPUs
  only; calling ``fully_shard`` (the function Accelerate's own FSDP2 path calls) lets the same
  code run on CPU processes over gloo, where CI tests it. Parameters and optimiser state are
  DTensors: a checkpoint gathers them whole (every process takes part, the main one writes),
  a resume cuts its share out of the whole tensors (:func:`local_share`), and after training
  :meth:`Processes.for_evaluation` gathers the weights once so evaluation's forwards need no
  collective;
- DeepSpeed launches are refused with a clear error (ZeRO-3's nearest equivalent here is FSDP
  full-shard);
- evaluation (:func:`lmrec.eval.evaluator.score_candidates`): each process scores its shard of
  the users and the shards are gathered in order, so every user is scored exactly once;
- files: only the main process writes (checkpoints hold the full state, so a run resumes under
  any number of processes); the others wait at a barrier.

Without a launcher there is one process and none of this costs anything.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any, NoReturn

import numpy as np
import torch

from lmrec.errors import ConfigError
from lmrec.utils.modules import base_model, decoder_layers


def launched() -> bool:
    """Whether this process was started by a multi-process launcher."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@dataclass(frozen=True)
class Processes:
    """The processes of this run: how many, which one this is, and collective helpers."""

    world: int = 1
    rank: int = 0
    cpu: bool = True
    engine: str = "ddp"  # "ddp" or "fsdp" (see the module docstring)

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

    def wrap(self, model: torch.nn.Module, shard: bool = False) -> torch.nn.Module:
        """The model as the engine trains it: wrapped for DDP by Accelerate when there are
        several processes, unchanged otherwise. ``shard``: under an FSDP launch, shard it with
        FSDP2 instead (in place: the returned module is ``model``); create its optimiser after
        this call, since sharding replaces the parameters."""
        if self.world == 1:
            return model
        if self.engine == "fsdp":
            if shard:
                return _fully_shard(model)
            # a small module beside the sharded one (BDLM's domain side): plain DDP
            device_ids = None if self.cpu else [torch.cuda.current_device()]
            return torch.nn.parallel.DistributedDataParallel(
                model, device_ids=device_ids, find_unused_parameters=True
            )
        from accelerate.utils import DistributedType

        accelerator = _accelerator(self.cpu)
        if accelerator.distributed_type not in (
            DistributedType.MULTI_CPU,
            DistributedType.MULTI_GPU,
        ):
            raise ConfigError(
                f"the launch asks for {accelerator.distributed_type.value}; lmrec drives DDP "
                "(configs/accelerate/ddp_cpu.yaml, ddp_gpus.yaml) and FSDP "
                "(fsdp_full_shard.yaml) only"
            )
        return accelerator.prepare_model(model)

    @contextlib.contextmanager
    def no_sync(self, model: torch.nn.Module, skip: bool) -> Iterator[None]:
        """Accumulate this backward's gradients locally (``skip``) instead of all-reducing."""
        if self.world == 1 or not skip:
            yield
            return
        if _is_fsdp(model):
            model.set_requires_gradient_sync(False)
            try:
                yield
            finally:
                model.set_requires_gradient_sync(True)
            return
        with model.no_sync():
            yield

    def sharded(self, model: torch.nn.Module) -> bool:
        """Whether ``model`` is sharded by FSDP (its forwards are collectives)."""
        return _is_fsdp(model)

    def engine_of(self, model: torch.nn.Module) -> str:
        """How ``model`` was trained: ``fsdp``, ``ddp`` or ``single`` (one process)."""
        if _is_fsdp(model):
            return "fsdp"
        return "ddp" if self.world > 1 else "single"

    @contextlib.contextmanager
    def gathered(self, model: torch.nn.Module) -> Iterator[None]:
        """The FSDP model's own unit (the parameters outside its decoder layers: embedding,
        final norm, head) gathered whole for reads outside a forward; every process enters it
        together. Nothing to do for other models."""
        if not _is_fsdp(model):
            yield
            return
        model.unshard()
        try:
            yield
        finally:
            model.reshard()

    def keep_gathered(self, model: torch.nn.Module) -> None:
        """Gather the FSDP model's own unit whole (as :meth:`gathered`) and leave it so until
        the next backward, which reduces the gradients of its whole parameters (also those a
        read outside the forward added) and reshards it. Nothing to do for other models."""
        if _is_fsdp(model):
            model.unshard()

    def for_evaluation(self, model: torch.nn.Module) -> torch.nn.Module:
        """After training: an FSDP-sharded model's weights gathered whole on every process and
        kept so (no resharding after a forward), so each process scores its own share of users
        with forwards that need no collective. Other models are returned as they are."""
        if not _is_fsdp(model):
            return model
        from torch.distributed.fsdp import FSDPModule

        units = [m for m in model.modules() if isinstance(m, FSDPModule)]
        for unit in units:
            unit.set_reshard_after_forward(False, recurse=False)
        for unit in units:
            unit.unshard()
        return model


def _is_fsdp(model: torch.nn.Module) -> bool:
    if not torch.distributed.is_available():
        return False
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def _fully_shard(model: torch.nn.Module) -> torch.nn.Module:
    """FSDP2 over ``model``: one unit per decoder layer (the classes transformers marks
    ``_no_split_modules``), one for the rest, with the launch's FSDP options."""
    from torch.distributed.fsdp import fully_shard

    options = fsdp_options()
    layers = decoder_layers(model)
    if not layers:
        raise ConfigError(
            f"FSDP: {type(base_model(model)).__name__} names no decoder layer class "
            "(_no_split_modules) to shard by"
        )
    for layer in reversed(layers):  # innermost first: FSDP2 shards bottom-up
        fully_shard(layer, **options)
    fully_shard(model, **options)
    return model


def fsdp_options() -> dict[str, Any]:
    """``fully_shard``'s options from the launch's FSDP environment, as Accelerate's plugin
    reads it (``accelerate launch`` writes it from the config's ``fsdp_config``)."""
    from accelerate.utils import FullyShardedDataParallelPlugin
    from torch.distributed.fsdp import CPUOffloadPolicy

    plugin = FullyShardedDataParallelPlugin()  # reads the launch's FSDP_* environment
    if plugin.fsdp_version != 2:
        raise ConfigError(
            f"the launch asks for FSDP version {plugin.fsdp_version}; lmrec shards with FSDP2: "
            "set fsdp_version: 2 in the accelerate config (or FSDP_VERSION=2)"
        )
    # options lmrec would otherwise ignore, where ignoring them changes the run
    if plugin.cpu_ram_efficient_loading:
        raise ConfigError(
            "fsdp_cpu_ram_efficient_loading: true makes transformers load the weights on the "
            "main process only, and lmrec's FSDP2 sharding does not broadcast them: set it to "
            "false (every process loads the model, then keeps its shard)"
        )
    if plugin.activation_checkpointing:
        raise ConfigError(
            "fsdp_activation_checkpointing: lmrec's own switch is train.gradient_checkpointing "
            "(llm.train.gradient_checkpointing for BDLM): set that and leave this false"
        )
    options: dict[str, Any] = {"reshard_after_forward": plugin.reshard_after_forward is not False}
    if isinstance(plugin.cpu_offload, CPUOffloadPolicy):
        options["offload_policy"] = plugin.cpu_offload
    return options


def full_tensor(value: Any) -> Any:
    """A sharded (DTensor) value gathered whole (a collective: every process calls it, in the
    same order); anything else as it is."""
    if not torch.distributed.is_available():
        return value
    from torch.distributed.tensor import DTensor

    return value.full_tensor() if isinstance(value, DTensor) else value


def local_share(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """This process's share of the whole tensor ``full``, laid out as the DTensor ``like``
    (no communication: every process holds ``full``); ``full`` itself when ``like`` is a
    plain tensor."""
    if not torch.distributed.is_available():
        return full
    from torch.distributed.tensor import DTensor, distribute_tensor

    if not isinstance(like, DTensor):
        return full
    full = full.to(device=like.device, dtype=like.dtype)
    return distribute_tensor(full, like.device_mesh, like.placements, src_data_rank=None)


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

    if _flag("ACCELERATE_USE_DEEPSPEED"):
        raise ConfigError(
            "the launch asks for DeepSpeed, which lmrec does not drive; for ZeRO-3's sharding "
            "of parameters, gradients and optimiser state launch with "
            "configs/accelerate/fsdp_full_shard.yaml (FSDP full shard)"
        )
    cpu = not torch.cuda.is_available()
    state = PartialState(cpu=cpu)
    # leave the process group before the interpreter exits: its communication threads,
    # still running at exit, abort the process ("terminate called without an active
    # exception") after the run's work is done
    atexit.register(_leave_process_group)
    engine = "fsdp" if _flag("ACCELERATE_USE_FSDP") else "ddp"
    return Processes(world=state.num_processes, rank=state.process_index, cpu=cpu, engine=engine)


def _leave_process_group() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def exit_launched(code: int) -> NoReturn:
    """End one process of a launch once its command is done: leave the process group, flush
    the logs and the console, and exit with ``code`` without the interpreter's teardown.

    Leaving the group at exit (``atexit``) was not enough: about one two-process run in ten
    still aborted in teardown ("terminate called without an active exception", a C++ thread
    destroyed while joinable) after its results were written, and the launcher then reported
    the whole run failed. Everything a command writes is closed before it returns.
    """
    import logging
    import sys

    _leave_process_group()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(int(code or 0))


def _flag(name: str) -> bool:
    return os.environ.get(name, "false").strip().lower() in ("1", "true", "yes")


def require_one_process(what: str) -> None:
    """Refuse clearly where a trainer does not shard its work across processes yet."""
    if launched():
        raise ConfigError(
            f"{what} runs in one process; launch it without torchrun / accelerate launch "
            "(multi-process training covers LLM fine-tuning and BDLM's joint training; train "
            "the domain model first, in one process)"
        )


__all__ = [
    "Processes",
    "full_tensor",
    "launched",
    "local_share",
    "processes",
    "require_one_process",
]
