"""The LLM training loop: seeded, resumable SFT over encoded prompts, with checkpoints.

One loop serves every training mode (:mod:`lmrec.llm.modes` decides what is trainable). Batches
are left padded, so every answer sits at the end of its row and only the last few positions'
logits are computed (``logits_to_keep``): the vocabulary projection of the prompt, which is most
of the memory with 50k+ tokens, is never materialised.

Checkpoints (``out_dir/checkpoints/step-NNNNNNN/``) hold the trainable parameters
(``trainable.safetensors``), the optimizer moments (``optimizer.safetensors`` +
``optimizer.json``) and ``state.json`` (step, loss); they are written to a temporary folder and
renamed. :func:`train_sft` resumes from the newest one: the per-epoch shuffles are seeded, so the
resumed run sees exactly the batches the interrupted one would have.
"""

from __future__ import annotations

import math
import resource
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from lmrec.config import RESUMABLE, check_resumable, to_dict
from lmrec.errors import ConfigError, DataError, check_ints
from lmrec.llm.modes import param_groups, trainable_state
from lmrec.llm.prompts import Prompt
from lmrec.llm.scoring import forward, model_device
from lmrec.llm.sft import IGNORE, SFTCollator, answer_loss, encode_example
from lmrec.utils.io import atomic_folder, read_json, write_json
from lmrec.utils.memory import configure_malloc


@dataclass
class TrainConfig:
    """Optimisation settings of :func:`train_sft`."""

    epochs: int = field(default=1, metadata=RESUMABLE)
    batch_size: int = 8
    lr: float = 1e-4
    lr_tokens: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 10
    grad_clip: float = 1.0
    max_steps: int = field(default=0, metadata=RESUMABLE)
    save_every: int = field(default=0, metadata=RESUMABLE)
    keep_checkpoints: int = field(default=1, metadata=RESUMABLE)
    max_length: int = 1024
    gradient_checkpointing: bool = field(default=False, metadata=RESUMABLE)
    seed: int = 0

    def __post_init__(self) -> None:
        check_ints(
            "train",
            self,
            {
                "epochs": 1,
                "batch_size": 1,
                "warmup_steps": 0,
                "max_steps": 0,  # 0: no cap (a negative cap used to train nothing)
                "save_every": 0,
                "keep_checkpoints": 1,
                "max_length": 2,
            },
        )
        if self.lr <= 0 or self.lr_tokens <= 0:
            raise ConfigError("train.lr and train.lr_tokens must be > 0")
        if self.keep_checkpoints < 1:
            raise ConfigError("train.keep_checkpoints must be >= 1")


def batch_loss(model, batch: dict[str, torch.Tensor], return_logits: bool = False):
    """Answer-only cross-entropy of one left-padded batch, computing only the answers' logits.

    With ``return_logits`` returns ``(loss, logits, labels)``: the logits of the last positions
    and the labels aligned with them (what :func:`listwise_loss` reads).
    """
    labels = batch["labels"]
    labelled = (labels != IGNORE).long()
    # first labelled column of the batch; the logit predicting it sits one position earlier
    first = int(labelled.argmax(1).min()) if labelled.any() else labels.shape[1] - 1
    keep = labels.shape[1] - first + 1
    out = forward(model, batch["input_ids"], batch["attention_mask"], keep)
    loss = answer_loss(out.logits, labels[:, -keep:])
    if return_logits:
        return loss, out.logits, labels[:, -keep:]
    return loss


def listwise_loss(
    logits: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor, candidate_ids: torch.Tensor
) -> torch.Tensor:
    """Softmax cross-entropy over each top-K prompt's candidates' item-token logits.

    ``logits`` (B, T, V) and ``labels`` (B, T) from :func:`batch_loss`; ``rows`` (R,) the batch
    rows that are top-K prompts; ``candidate_ids`` (R, C) their candidates' token ids, the
    target in column 0. The logit that predicts a row's first answer token (the item token) is
    read at the position before it, restricted to the C candidates: the ranking the evaluation
    makes, trained directly.
    """
    first = (labels[rows] != IGNORE).long().argmax(1)  # first answer column of each row
    at = logits[rows, first - 1].float()  # (R, V)
    scores = at.gather(1, candidate_ids.to(at.device))  # (R, C)
    target = torch.zeros(len(rows), dtype=torch.long, device=at.device)
    return torch.nn.functional.cross_entropy(scores, target)


class LLMOptimizer:
    """AdamW over the trainable parameter groups of :func:`lmrec.llm.modes.param_groups` (new
    token rows at their own rate), with gradient clipping and a linear warm-up: the LLM's step in
    :func:`train_sft` and in BDLM's joint trainer alike."""

    def __init__(self, model, config: TrainConfig) -> None:
        groups = param_groups(model, config.lr, config.lr_tokens, config.weight_decay)
        if not groups:
            raise ConfigError(
                "nothing to train: the model has no trainable parameters (mode 'none'?)"
            )
        self.config = config
        self.params = [p for g in groups for p in g["params"]]
        self.opt = torch.optim.AdamW(groups)
        self.base_lrs = [g["lr"] for g in self.opt.param_groups]

    def step(self, loss: torch.Tensor, step: int) -> None:
        """Backpropagate ``loss`` and take optimiser step ``step`` (counted from 0)."""
        cfg = self.config
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
        warm = min(1.0, (step + 1) / max(1, cfg.warmup_steps))  # linear warm-up, then flat
        for g, lr in zip(self.opt.param_groups, self.base_lrs, strict=True):
            g["lr"] = lr * warm
        self.opt.step()


def train_sft(
    model,
    tokenizer,
    examples: list[Prompt],
    config: TrainConfig,
    out_dir: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
) -> dict:
    """Fine-tune ``model`` on prompt/answer pairs; returns throughput and loss statistics.

    Parameters
    ----------
    model:
        Already prepared by :func:`lmrec.llm.modes.apply_mode` (its trainable parameters are the
        ones optimised).
    examples:
        Prompts with answers (:func:`lmrec.llm.sft.training_examples`).
    out_dir:
        Where checkpoints go; ``None`` trains without saving.
    resume:
        Continue from the newest checkpoint in ``out_dir`` when there is one.
    """
    if not examples:
        raise DataError("no training examples: does the split have users with >= 2 train items?")
    device = model_device(model)
    rows = [encode_example(tokenizer, e, config.max_length) for e in examples]
    collate = SFTCollator(tokenizer.pad_token_id)
    per_epoch = math.ceil(len(rows) / config.batch_size)
    total = per_epoch * config.epochs
    if config.max_steps:
        total = min(total, config.max_steps)
    stepper = LLMOptimizer(model, config)
    opt = stepper.opt

    start, losses = 0, []
    ckpt = latest_checkpoint(out_dir) if (out_dir is not None and resume) else None
    if ckpt is not None:
        state = read_json(ckpt / "state.json")
        check_resumable(state.get("config", {}), config, ckpt, "train config")
        start = load_checkpoint(ckpt, model, opt)
        # the losses the final figure averages over: a resumed run reports what the same run
        # reports uninterrupted
        losses = [float(v) for v in state.get("recent_losses", [])]

    if config.gradient_checkpointing:
        enable_checkpointing(model)
    model.train()
    t0 = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        configure_malloc()  # reuse freed activations (lmrec.utils.memory)
    bar = tqdm(
        range(start, total), desc="llm sft", disable=not progress, initial=start, total=total
    )
    for step in bar:
        epoch, k = divmod(step, per_epoch)
        order = np.random.default_rng([config.seed, epoch]).permutation(len(rows))
        idx = order[k * config.batch_size : (k + 1) * config.batch_size]
        batch = {n: t.to(device) for n, t in collate([rows[i] for i in idx]).items()}
        torch.manual_seed(config.seed * 1_000_003 + step)  # dropout masks: same after a resume
        loss = batch_loss(model, batch)
        stepper.step(loss, step)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        done = step + 1
        if out_dir is not None and (
            done == total or (config.save_every and done % config.save_every == 0)
        ):
            extra = {
                "loss": losses[-1],
                "recent_losses": losses[-RECENT:],
                "config": to_dict(config),
            }
            save_checkpoint(out_dir, model, opt, done, extra)
            prune_checkpoints(out_dir, config.keep_checkpoints)
    model.eval()
    seconds = time.perf_counter() - t0
    trained = (total - start) * config.batch_size
    return {
        "steps": total,
        "resumed_from": start,
        "examples": len(rows),
        "seconds": seconds,
        "samples_per_s": trained / seconds if seconds > 0 and trained else 0.0,
        "final_loss": float(np.mean(losses[-RECENT:])) if losses else None,
        "peak_memory_mb": peak_memory_mb(device),
    }


RECENT = 20  # losses averaged into final_loss (and the progress bar)
# TrainConfig fields that may change when a run resumes: how long it runs and what it keeps,
# not what a step computes.


def enable_checkpointing(model) -> None:
    """Recompute each layer's activations in the backward pass instead of keeping them.

    Activations, not weights, dominate training memory with long prompts (ML-1M prompts with
    titles: ~16 GB at batch 8 without it); this costs about one extra forward pass.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    base.config.use_cache = False


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA memory on GPU; peak resident set size of the process on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# ---------------------------------------------------------------- checkpoints


def checkpoint_dirs(out_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first (a folder counts once its state.json exists)."""
    root = Path(out_dir) / "checkpoints"
    if not root.is_dir():
        return []
    done = [p for p in root.glob("step-*") if (p / "state.json").is_file()]
    return sorted(done, key=lambda p: int(p.name.split("-")[1]))


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    dirs = checkpoint_dirs(out_dir)
    return dirs[-1] if dirs else None


def save_checkpoint(out_dir, model, opt, step: int, extra: dict | None = None) -> Path:
    """Write trainable weights, optimizer state and ``state.json`` atomically (folder rename)."""
    root = Path(out_dir) / "checkpoints"
    final = root / f"step-{step:07d}"
    with atomic_folder(final) as tmp:
        weights = {n: t.contiguous().cpu() for n, t in trainable_state(model).items()}
        save_file(weights, tmp / "trainable.safetensors")
        if opt is not None:
            tensors, meta = optimizer_state(model, opt)
            save_file(tensors, tmp / "optimizer.safetensors")
            write_json(tmp / "optimizer.json", meta)
        write_json(tmp / "state.json", {"step": step, **(extra or {})})
    return final


def prune_checkpoints(out_dir, keep: int) -> None:
    for old in checkpoint_dirs(out_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def load_trainable(model, path: str | Path) -> None:
    """Load ``trainable.safetensors`` into a model prepared the same way it was trained."""
    state = load_file(str(path))
    missing = [n for n, p in model.named_parameters() if p.requires_grad and n not in state]
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys or missing:
        raise DataError(
            f"{path}: checkpoint does not match the model (unexpected "
            f"{result.unexpected_keys[:3]}, missing {missing[:3]}); was it trained with another "
            "mode or model?"
        )


def load_checkpoint(ckpt: Path, model, opt=None) -> int:
    """Restore weights (and optimizer moments) from ``ckpt``; returns the step reached."""
    load_trainable(model, ckpt / "trainable.safetensors")
    if opt is not None and (ckpt / "optimizer.safetensors").is_file():
        load_optimizer_state(
            model,
            opt,
            load_file(str(ckpt / "optimizer.safetensors")),
            read_json(ckpt / "optimizer.json"),
        )
    return int(read_json(ckpt / "state.json")["step"])


def optimizer_state(model, opt) -> tuple[dict[str, torch.Tensor], dict]:
    """AdamW moments keyed by parameter name (safetensors) + the step counts (JSON)."""
    names = {id(p): n for n, p in model.named_parameters()}
    tensors, steps = {}, {}
    for group in opt.param_groups:
        for p in group["params"]:
            st = opt.state.get(p, {})
            name = names[id(p)]
            for key in ("exp_avg", "exp_avg_sq"):
                if key in st:
                    tensors[f"{name}::{key}"] = st[key].contiguous().cpu()
            if "step" in st:
                steps[name] = float(st["step"])
    return tensors, {"steps": steps}


def load_optimizer_state(model, opt, tensors: dict, meta: dict) -> None:
    names = {id(p): n for n, p in model.named_parameters()}
    for group in opt.param_groups:
        for p in group["params"]:
            name = names[id(p)]
            if name not in meta["steps"]:
                continue
            opt.state[p] = {
                "step": torch.tensor(meta["steps"][name]),
                "exp_avg": tensors[f"{name}::exp_avg"].to(p),
                "exp_avg_sq": tensors[f"{name}::exp_avg_sq"].to(p),
            }
