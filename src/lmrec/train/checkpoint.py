"""Checkpoint pieces without pickle: weights and optimiser tensors in safetensors, the rest in
JSON, and the RNG states as JSON lists. :mod:`lmrec.train.loop` assembles them into the one
checkpoint folder format.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from lmrec.errors import DataError
from lmrec.utils.distributed import full_tensor, local_share
from lmrec.utils.io import atomic_write, read_json, write_json

OPTIM_TENSORS = "optimizer.safetensors"
OPTIM_JSON = "optimizer.json"


def _corrupt(path: Path, exc: BaseException) -> DataError:
    return DataError(
        f"{path}: corrupt or unreadable checkpoint file ({exc}); delete it (or the whole run "
        "folder) to start again"
    )


# ----------------------------------------------------------------------------- weights


def save_weights(model: nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write ``model``'s state dict to ``path`` (safetensors, atomically; tied weights once)."""
    atomic_write(Path(path), lambda p: save_model(model, str(p), metadata=metadata))


def load_weights(model: nn.Module, path: Path) -> dict[str, str]:
    """Load ``path`` into ``model`` (strict: every key must match); returns the file's metadata."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist; was the run trained to the end?")
    device = next((t.device for t in model.state_dict().values()), torch.device("cpu"))
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = dict(fh.metadata() or {})
        load_model(model, path, strict=True, device=str(device))
    except (SafetensorError, OSError) as exc:
        raise _corrupt(path, exc) from exc
    except RuntimeError as exc:  # key or shape mismatch: a different model or config
        raise DataError(
            f"{path}: weights do not fit this model ({exc}); was it saved with another model "
            "config?"
        ) from exc
    return metadata


def weights_metadata(path: Path) -> dict[str, str]:
    """The metadata stored in a safetensors file, without loading its tensors."""
    try:
        with safe_open(str(path), framework="pt") as fh:
            return dict(fh.metadata() or {})
    except (SafetensorError, OSError) as exc:
        raise _corrupt(Path(path), exc) from exc


# ----------------------------------------------------------------------------- optimiser


def optimizer_state(optimizer: torch.optim.Optimizer, keep: bool = True) -> dict[str, Any] | None:
    """``optimizer.state_dict()`` with its tensors on the CPU, sharded (FSDP) ones gathered
    whole. Gathering is a collective where the parameters are sharded: every process calls
    this, and those that do not write (``keep=False``) drop each tensor once gathered and get
    None, so no process holds more than one whole tensor on its device at a time."""
    sd = optimizer.state_dict()
    state: dict[int, dict[str, Any]] = {}
    for idx, values in sorted(sd["state"].items()):
        state[idx] = {}
        for name, value in values.items():
            value = full_tensor(value)
            if isinstance(value, torch.Tensor):
                value = value.detach().cpu() if keep else None
            state[idx][name] = value
    return {**sd, "state": state} if keep else None


def save_optimizer(sd: dict[str, Any], folder: Path) -> None:
    """Split an optimiser's state dict (:func:`optimizer_state`'s result) into tensors
    (safetensors) and everything else (JSON)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, state in sd["state"].items():
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    folder = Path(folder)
    atomic_write(folder / OPTIM_TENSORS, lambda p: save_file(tensors, str(p)))
    groups = [
        {k: list(v) if isinstance(v, tuple) else v for k, v in g.items()}
        for g in sd["param_groups"]
    ]
    write_json(folder / OPTIM_JSON, {"param_groups": groups, "scalars": scalars})


def load_optimizer(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """Inverse of :func:`save_optimizer`; tensors are moved to the parameters' device by torch,
    and cut to this process's share where the parameters are sharded (FSDP), so a state saved
    under any number of processes loads under any other."""
    folder = Path(folder)
    meta = read_json(folder / OPTIM_JSON)
    if not isinstance(meta, dict) or "param_groups" not in meta:
        raise DataError(
            f"{folder / OPTIM_JSON}: not an optimiser state of this lmrec version (no "
            "'param_groups'); delete the run's checkpoints to train it again"
        )
    try:
        tensors = load_file(str(folder / OPTIM_TENSORS))
    except (SafetensorError, OSError) as exc:
        raise _corrupt(folder / OPTIM_TENSORS, exc) from exc
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    for idx, values in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(values)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for idx, values in state.items():
        if idx < len(params):
            like = params[idx]
            for name, value in values.items():
                # moments shaped like their parameter; a 0-d "step" stays as it is
                if isinstance(value, torch.Tensor) and value.ndim and value.shape == like.shape:
                    values[name] = local_share(value, like)
    # JSON turned tuples (Adam's betas) into lists; torch's own state dict has tuples.
    groups = [
        {k: v if k == "params" or not isinstance(v, list) else tuple(v) for k, v in g.items()}
        for g in meta["param_groups"]
    ]
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError) as exc:
        raise DataError(
            f"{folder / OPTIM_JSON}: optimiser state does not fit this model ({exc})"
        ) from exc


# ----------------------------------------------------------------------------- RNG


def rng_state() -> dict[str, Any]:
    """The python, numpy (global) and torch RNG states as JSON-serialisable values."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    np_state = {
        **np_state,
        "state": {**np_state["state"], "key": np_state["state"]["key"].tolist()},
    }
    cuda = [s.tolist() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else []
    return {
        "python": [version, list(internal), gauss],
        "numpy": np_state,
        "torch": torch.get_rng_state().tolist(),
        "cuda": cuda,
    }


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's global generator and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    key = np.asarray(np_state["state"]["key"], dtype=np.uint32)
    np.random.set_state({**np_state, "state": {**np_state["state"], "key": key}})
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])
