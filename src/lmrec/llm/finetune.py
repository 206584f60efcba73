"""LLM fine-tuning: the SFT step, the listwise loss and the LLM optimiser, run on the one loop.

One step function serves every training mode (:mod:`lmrec.llm.modes` decides what is
trainable) and runs on :class:`lmrec.train.loop.Loop`, whose checkpoints keep the trainable
parameters (``llm/trainable.safetensors``) and the optimiser state. Batches are left padded, so
every answer sits at the end of its row and only the last few positions' logits are computed
(``logits_to_keep``): the vocabulary projection of the prompt, which is most of the memory with
50k+ tokens, is never materialised. The per-epoch shuffles are seeded by ``(seed, epoch)``, so a
resumed run sees exactly the batches the interrupted one would have.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lmrec.config import RESUMABLE
from lmrec.errors import ConfigError, DataError, check_ints
from lmrec.llm.modes import param_groups
from lmrec.llm.prompts import Prompt
from lmrec.llm.scoring import forward, model_device
from lmrec.llm.sft import IGNORE, SFTCollator, answer_loss, answer_tokens, encode_example
from lmrec.train.loop import CHECKPOINTS, Loop, Part
from lmrec.utils.distributed import processes
from lmrec.utils.modules import base_model


@dataclass
class LLMOptimConfig:
    """The LLM side's optimiser (:class:`LLMOptimizer`), shared by SFT and BDLM's joint trainer.

    Attributes
    ----------
    lr, lr_tokens:
        AdamW's rate for the LM's trainable weights and for the new user/item token rows.
    weight_decay, warmup_steps, grad_clip:
        AdamW's decoupled decay, the linear warm-up's length in steps, the gradient-norm clip
        (0: none).
    max_length:
        Tokens a training prompt keeps (longer ones lose their beginning).
    gradient_checkpointing:
        Recompute activations in the backward pass (less memory, more time).
    """

    lr: float = 1e-4
    lr_tokens: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 10
    grad_clip: float = 1.0
    max_length: int = 1024
    gradient_checkpointing: bool = field(default=False, metadata=RESUMABLE)

    def __post_init__(self) -> None:
        check_ints("train", self, {"warmup_steps": 0, "max_length": 2})
        if self.lr <= 0 or self.lr_tokens <= 0:
            raise ConfigError("train.lr and train.lr_tokens must be > 0")


@dataclass
class FinetuneConfig(LLMOptimConfig):
    """:func:`train_sft`'s settings: the optimiser's (:class:`LLMOptimConfig`) and the schedule.

    Attributes
    ----------
    epochs, batch_size:
        Passes over the training prompts, and prompts per optimiser step (over all processes).
    max_steps:
        Stop after this many steps (0: no cap).
    save_every, keep_checkpoints:
        Also checkpoint every this many steps (0: at epoch ends only); newest checkpoints kept.
    seed:
        Seeds the shuffles and dropout.
    accumulation_steps:
        Micro-batches a process splits its share of each step's batch into.
    """

    epochs: int = field(default=1, metadata=RESUMABLE)
    batch_size: int = 8
    max_steps: int = field(default=0, metadata=RESUMABLE)
    save_every: int = field(default=0, metadata=RESUMABLE)
    keep_checkpoints: int = field(default=1, metadata=RESUMABLE)
    seed: int = 0
    # memory, not math: the step's loss is normalised by the whole batch's answer tokens, as
    # with one process. May change on resume, as the number of processes may: the step stays the
    # same mean, but padding and dropout masks follow the micro-batch split, so the last bits
    # can differ
    accumulation_steps: int = field(default=1, metadata=RESUMABLE)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ints(
            "train",
            self,
            {
                "epochs": 1,
                "batch_size": 1,
                "max_steps": 0,  # 0: no cap (a negative cap used to train nothing)
                "save_every": 0,
                "keep_checkpoints": 1,
                "accumulation_steps": 1,
            },
        )


def batch_loss(
    model, batch: dict[str, torch.Tensor], return_logits: bool = False, reduction: str = "mean"
):
    """Answer-only cross-entropy of one left-padded batch, computing only the answers' logits.

    With ``return_logits`` returns ``(loss, logits, labels)``: the logits of the last positions
    and the labels aligned with them (what :func:`listwise_loss` reads). ``reduction``: see
    :func:`lmrec.llm.sft.answer_loss`.
    """
    labels = batch["labels"]
    labelled = (labels != IGNORE).long()
    # first labelled column of the batch; the logit predicting it sits one position earlier
    first = int(labelled.argmax(1).min()) if labelled.any() else labels.shape[1] - 1
    keep = labels.shape[1] - first + 1
    out = forward(model, batch["input_ids"], batch["attention_mask"], keep)
    loss = answer_loss(out.logits, labels[:, -keep:], reduction)
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

    def __init__(self, model, config: LLMOptimConfig) -> None:
        groups = param_groups(model, config.lr, config.lr_tokens, config.weight_decay)
        if not groups:
            raise ConfigError(
                "nothing to train: the model has no trainable parameters (mode 'none'?)"
            )
        self.config = config
        self.model = model
        self.params = [p for g in groups for p in g["params"]]
        # one fused kernel for the whole update where PyTorch has one (CPU and CUDA tensors):
        # the element-wise foreach AdamW over 135M weights was ~15% of a bf16 SFT step on 2
        # cores, the fused one ~6%. It does not count its writes in the weights' _version, so
        # finish() counts the steps on the model (the BDLM feature cache keys on both).
        fused = all(p.device.type in ("cpu", "cuda") for p in self.params)
        self.opt = torch.optim.AdamW(groups, fused=fused)
        self.base_lrs = [g["lr"] for g in self.opt.param_groups]

    def step(self, loss: torch.Tensor, step: int) -> None:
        """Backpropagate ``loss`` and take optimiser step ``step`` (counted from 0)."""
        self.zero_grad()
        loss.backward()
        self.finish(step)

    def zero_grad(self) -> None:
        self.opt.zero_grad(set_to_none=True)

    def finish(self, step: int) -> None:
        """Clip the accumulated gradients, warm the rates up, take optimiser step ``step``."""
        cfg = self.config
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
        warm = min(1.0, (step + 1) / max(1, cfg.warmup_steps))  # linear warm-up, then flat
        for g, lr in zip(self.opt.param_groups, self.base_lrs, strict=True):
            g["lr"] = lr * warm
        self.opt.step()
        self.model.lmrec_updates = getattr(self.model, "lmrec_updates", 0) + 1


def train_sft(
    model,
    tokenizer,
    examples: list[Prompt],
    config: FinetuneConfig,
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
    tokens = np.array([answer_tokens(r) for r in rows])
    collate = SFTCollator(tokenizer.pad_token_id)
    per_epoch = math.ceil(len(rows) / config.batch_size)
    if out_dir is not None and not resume:
        shutil.rmtree(Path(out_dir) / CHECKPOINTS, ignore_errors=True)
    procs = processes()
    if config.gradient_checkpointing:
        enable_checkpointing(model)
    model.train()
    # DDP under several processes (FSDP2 in place under an FSDP launch), the model itself
    # otherwise; the optimiser is made after, over the parameters the engine trains
    engine = procs.wrap(model, shard=True)
    stepper = LLMOptimizer(model, config)
    loop = Loop(
        [Part("llm", model, stepper.opt, trainable_only=True)],
        config,
        steps_per_epoch=per_epoch,
        epochs=config.epochs,
        max_steps=config.max_steps,
        out_dir=out_dir,
        seed=config.seed,
        save_every=config.save_every,
        keep=config.keep_checkpoints,
        progress=progress,
        desc="llm sft",
        distributed=True,
        device=device,
        lean_memory=config.gradient_checkpointing,
    )

    def step_fn(step: int) -> dict[str, float]:
        epoch, k = divmod(step, per_epoch)
        order = np.random.default_rng([config.seed, epoch]).permutation(len(rows))
        idx = order[k * config.batch_size : (k + 1) * config.batch_size]
        total = int(tokens[idx].sum())  # the whole batch's answer tokens, on every process
        mine = procs.shard(idx)
        # a process with no rows still joins the gradient all-reduce, with a zero-weight row
        weight = 1.0 if len(mine) else 0.0
        mine = mine if len(mine) else idx[:1]
        micro = _micro_batches(mine, config.accumulation_steps, weight)
        # every process runs as many micro-batches as the largest share makes (the first: shards
        # are split in rank order), the extra ones a zero-weight row: FSDP's forwards and
        # backwards are collectives, which every process must join equally often
        most = min(config.accumulation_steps, len(np.array_split(idx, procs.world)[0]))
        micro += [(idx[:1], 0.0)] * (most - len(micro))
        stepper.zero_grad()
        local = 0.0
        for j, (part, weight) in enumerate(micro):
            # dropout masks seeded by (step, micro-batch of the whole batch): the same after a
            # resume, and the same whichever process or micro-batch slot computes a shard
            slot = procs.rank * config.accumulation_steps + j
            torch.manual_seed(config.seed * 1_000_003 + step + slot * 7_919_993)
            batch = {n: t.to(device) for n, t in collate([rows[i] for i in part]).items()}
            with procs.no_sync(engine, skip=j < len(micro) - 1):
                summed = batch_loss(engine, batch, reduction="sum")
                # the engine averages gradients over processes: scale so they add up to the
                # mean over the whole batch's tokens, the gradient one process computes
                (summed * (weight * procs.world / max(total, 1))).backward()
            local += weight * summed.item()
        stepper.finish(step)
        return {"loss": procs.sum(local) / max(total, 1)}

    stats = loop.run(step_fn)
    procs.for_evaluation(model)  # FSDP: the weights gathered whole for scoring
    trained = (stats["steps"] - stats["resumed_from"]) * config.batch_size
    seconds = stats["seconds"]
    return {
        "steps": stats["steps"],
        "resumed_from": stats["resumed_from"],
        "examples": len(rows),
        "seconds": seconds,
        "samples_per_s": trained / seconds if seconds > 0 and trained else 0.0,
        # the mean of the last RECENT steps, which a checkpoint carries: a resumed run reports
        # what the same run reports uninterrupted
        "final_loss": stats["final"].get("loss"),
        "peak_memory_mb": stats["peak_memory_mb"],
        "processes": procs.world,
        "engine": procs.engine_of(model),
    }


def _micro_batches(rows: np.ndarray, steps: int, weight: float) -> list[tuple[np.ndarray, float]]:
    """``rows`` in up to ``steps`` micro-batches of near-equal size, each with ``weight``."""
    return [(m, weight) for m in np.array_split(rows, steps) if len(m)]


def enable_checkpointing(model) -> None:
    """Recompute each layer's activations in the backward pass instead of keeping them.

    Activations, not weights, dominate training memory with long prompts (ML-1M prompts with
    titles: ~16 GB at batch 8 without it); this costs about one extra forward pass.
    """
    base = base_model(model)
    kwargs = {"use_reentrant": False}
    if hasattr(base, "activation_checkpointing_enable"):  # transformers 5.24 renamed it
        base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    base.config.use_cache = False
