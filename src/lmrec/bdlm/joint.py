"""The joint trainer of BDLM (paper 4.3, Algorithm 1): the LLM and the domain model take turns.

Total loss (eq. 9)::

    L = L_LLM + L_DRS + lambda * (L_mut_LLM + L_mut_DRS)

The two models share no parameter and M is not trained by gradient, so minimising L in turns is
one optimiser step per side on its own part, on the same aligned rows
(:class:`lmrec.bdlm.aligned.AlignedBatches`):

1. **LLM step**: answer-only cross-entropy of the rows' SFT prompts (:func:`lmrec.llm.finetune.
   batch_loss`, BDLM eqs. 3-4) + lambda * MSE of its user/item token rows to M (eq. 7); AdamW on
   the parameter groups of :func:`lmrec.llm.modes.param_groups` (new rows at their own rate),
   linear warm-up and gradient clipping as in :func:`lmrec.llm.finetune.train_sft`. Then the
   LLM writes its rows of the batch's users and items into M.
2. **Domain step**: binary cross-entropy of the cascade on (user, positive) / (user, negative)
   with the h_LLM of their interaction prompts (eq. 6; features from the LLM as it is after
   step 1, through :class:`~lmrec.bdlm.features.FeatureCache`) + ``native_weight`` x the domain
   model's own loss on the same rows (BPR for LightGCN, BCE for GMF/NeuMF) + lambda * MSE of its
   tables' rows to M (eq. 8); Adam, with the head at its own learning rate. Then the domain
   model writes its rows into M.

Randomness comes in separate streams, each seeded from ``(seed, epoch, batch)`` or ``(seed,
side, step)`` only: the rows, the LLM's extra negatives, the LLM's dropout and the domain
model's dropout. So with lambda = 0 each side trains exactly as it does when the other side is
switched off (``train_llm`` / ``train_drs``) - up to what the cascade reads from the LLM: with
the LLM feature on, the domain side sees the LLM's current state, and a run that does not train
the LLM feeds it the initial LLM instead. And a resumed run ends bit for bit where an
uninterrupted one would.

Training runs on the one loop (:class:`lmrec.train.loop.Loop`); its checkpoints hold one folder
per part: ``llm/`` (trainable weights and AdamW state), ``drs/`` (the cascade and its Adam
state) and ``sharing/`` (M), beside ``state.json``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lmrec.bdlm.aligned import AlignedBatches, Rows
from lmrec.bdlm.cascade import Cascade
from lmrec.bdlm.config import JointConfig
from lmrec.bdlm.features import FeatureCache
from lmrec.bdlm.sharing import SharingModule, unique_ids
from lmrec.errors import ConfigError
from lmrec.llm.finetune import (
    LLMOptimConfig,
    LLMOptimizer,
    batch_loss,
    enable_checkpointing,
    listwise_loss,
)
from lmrec.llm.prompts import PromptBuilder
from lmrec.llm.scoring import model_device
from lmrec.llm.sft import ExampleConfig, SFTCollator, answer_tokens, encode_example
from lmrec.llm.tokens import IdTokens, id_token_rows
from lmrec.train.loop import Loop, Part
from lmrec.utils.distributed import processes

# Keys of JointConfig that may change when a run is resumed (they change nothing computed).
_STREAMS = {"llm": 1, "drs": 2}


@dataclass
class JointSides:
    """Everything a joint step touches.

    Attributes
    ----------
    llm, tokenizer:
        The LLM as prepared by :func:`lmrec.llm.modes.apply_mode`, and its tokenizer.
    ids:
        Its user/item tokens, or None for a text-only LLM (*w/o ET*: nothing to share).
    builder:
        The prompt builder of both sides' prompts.
    cascade:
        The domain model and its head.
    sharing:
        M, or None when nothing is shared (text-only LLM).
    features:
        The h_LLM cache the cascade reads through.
    """

    llm: Any
    tokenizer: Any
    ids: IdTokens | None
    builder: PromptBuilder
    cascade: Cascade
    sharing: SharingModule | None
    features: FeatureCache


class DomainStep(nn.Module):
    """The domain side's differentiable outputs of one joint step, computed in one forward
    call so that DDP (which hooks ``forward``) synchronises the cascade's gradients: the
    cascade's BCE on the rows' (user, positive) / (user, negative) pairs, the domain model's
    own loss on the rows, and its table rows of the batch's users and items (for M)."""

    def __init__(self, cascade: Cascade) -> None:
        super().__init__()
        self.cascade = cascade

    def forward(
        self, rows: Rows, h: torch.Tensor | None, users: torch.Tensor, items: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        cascade = self.cascade
        dev = users.device
        tables = cascade.tables()
        u, pos, neg = rows.tensors(dev)
        pairs = torch.stack([pos, neg], 1)  # (B, 2)
        labels = torch.tensor([[1.0, 0.0]], device=dev).expand(len(rows), 2)
        bce = cascade.loss(u.unsqueeze(1), pairs, labels, h, tables)
        native = cascade.domain.loss(
            AlignedBatches.domain_batch(rows, cascade.domain.batch_kind, dev)
        )
        p_u = None if tables[0] is None else tables[0][users]
        return bce, native, p_u, tables[1][items]


def _stream_seed(seed: int, side: str, step: int) -> int:
    return (seed * 1_000_003 + step) * 4 + _STREAMS[side]


class JointTrainer:
    """Alternating updates of the LLM side and the domain side on aligned rows.

    Parameters
    ----------
    sides:
        The models (:class:`JointSides`).
    batches:
        The aligned rows.
    config:
        Schedule and domain-side optimiser (:class:`JointConfig`).
    llm_train:
        The LLM side's optimiser settings (:class:`lmrec.llm.finetune.LLMOptimConfig`).
    examples:
        Which SFT prompts the LLM trains on (``tasks``, ``n_candidates``, ``negatives``).
    out_dir:
        Where checkpoints go; None trains without saving.
    """

    def __init__(
        self,
        sides: JointSides,
        batches: AlignedBatches,
        config: JointConfig,
        llm_train: LLMOptimConfig,
        examples: ExampleConfig,
        out_dir: str | Path | None = None,
    ) -> None:
        self.sides = sides
        self.batches = batches
        self.cfg = config
        self.llm_cfg = llm_train
        self.examples = examples
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.device = model_device(sides.llm)
        self.collate = SFTCollator(sides.tokenizer.pad_token_id)
        # several processes (torchrun / accelerate launch): each takes a contiguous shard of
        # every step's rows; both sides are wrapped for DDP by Accelerate (under an FSDP launch
        # the LLM is sharded by FSDP2 instead and the domain side wrapped by torch's DDP), so
        # their gradients are averaged, and every loss is scaled so the average is the
        # one-process gradient
        self.procs = processes()
        if self.procs.world > config.batch_size:
            raise ConfigError(
                f"joint.batch_size {config.batch_size} is smaller than the {self.procs.world} "
                "processes: every process needs rows"
            )
        self.llm_opt = self.llm_stepper = self.llm_engine = None
        if config.train_llm:
            if llm_train.gradient_checkpointing:
                enable_checkpointing(sides.llm)
            # wrapped first: FSDP replaces the parameters the optimiser is made over
            self.llm_engine = self.procs.wrap(sides.llm, shard=True)
            self.llm_stepper = LLMOptimizer(sides.llm, llm_train)  # as train_sft's
            self.llm_opt = self.llm_stepper.opt
        self.drs_opt = None
        if config.train_drs:
            cascade = sides.cascade
            self.drs_opt = torch.optim.Adam(
                [
                    {
                        "params": list(cascade.domain.parameters()),
                        "lr": config.lr_drs,
                        "weight_decay": config.weight_decay_drs,
                    },
                    {"params": list(cascade.head.parameters()), "lr": config.lr_head},
                ]
            )
        self.drs_engine = self.procs.wrap(DomainStep(sides.cascade)) if config.train_drs else None
        self.step = 0
        self.history: list[dict[str, Any]] = []  # one entry per finished epoch

    # ----------------------------------------------------------------------------- steps

    @property
    def total_steps(self) -> int:
        return self.batches.n_batches() * self.cfg.epochs

    def rows(self, step: int) -> tuple[Rows, int, int]:
        """The aligned rows of global step ``step`` (from 0), its epoch (from 1) and batch."""
        epoch, k = divmod(step, self.batches.n_batches())
        return self.batches.batch(epoch + 1, k), epoch + 1, k

    def _shared(self, rows: Rows) -> tuple[torch.Tensor, torch.Tensor]:
        return unique_ids(rows.users), unique_ids(rows.pos, rows.neg)

    def _local(self, rows: Rows) -> tuple[np.ndarray, float]:
        """The indices of the rows this process computes (all of them in one process) and
        their weight: a process left without rows (an epoch's short last batch) computes the
        first row with weight 0, so it still joins the gradient all-reduce."""
        local = self.procs.shard(np.arange(len(rows)))
        if len(local):
            return local, 1.0
        return np.arange(1), 0.0

    def llm_step(self, rows: Rows, step: int, epoch: int, k: int) -> dict[str, float]:
        """One optimiser step of the LLM side on the rows' prompts, then its write into M.

        Every process draws the whole batch's prompts (they are seeded by the batch), encodes
        its shard of rows, and scales its losses by its share of the batch (answer tokens for
        SFT, rows for the listwise loss); the mutual loss is over the whole batch's users and
        items on every process, so the engine's average of the gradients (DDP's all-reduce,
        FSDP's reduce-scatter) is one process's gradient.
        """
        s = self.sides
        procs = self.procs
        cands = None
        if "topk" in self.examples.tasks:  # drawn once: the prompts and the listwise loss
            cands = self.batches.topk_candidates(rows, self.examples, epoch, k)
        prompts = self.batches.llm_prompts(rows, s.builder, self.examples, epoch, k, cands)
        per_row = len(prompts) // len(rows)  # each row's prompts, the top-K prompt first
        local, weight = self._local(rows)
        mine = [prompts[r * per_row + j] for r in local for j in range(per_row)]
        encoded = [encode_example(s.tokenizer, p, self.llm_cfg.max_length) for p in mine]
        tokens = weight * sum(answer_tokens(e) for e in encoded)
        all_tokens = procs.sum(tokens)
        batch = {n: t.to(self.device) for n, t in self.collate(encoded).items()}
        torch.manual_seed(_stream_seed(self.cfg.seed, "llm", step))  # dropout masks
        s.llm.train()
        listwise = self.cfg.listwise_weight > 0 and "topk" in self.examples.tasks
        engine = self.llm_engine
        if listwise:
            sft, logits, labels = batch_loss(engine, batch, return_logits=True)
            ranked = listwise_loss(
                logits,
                labels,
                torch.arange(0, len(mine), per_row, device=logits.device),
                s.ids.token_ids("item", torch.as_tensor(cands[local])),
            )
        else:
            sft = batch_loss(engine, batch)
        # the whole batch's means are sums of the processes' shares; the engine divides by world
        world = procs.world
        loss = sft * (world * tokens / max(all_tokens, 1))
        out = {"llm/sft": procs.sum(sft.item() * tokens) / max(all_tokens, 1)}
        if listwise:
            share = weight * len(local) / len(rows)
            loss = loss + self.cfg.listwise_weight * ranked * (world * share)
            out["llm/listwise"] = procs.sum(ranked.item() * share)
        users, items = self._shared(rows)
        shares = s.sharing is not None and s.ids is not None
        if shares:  # FSDP: the embedding whole until the backward reduces its gradient
            procs.keep_gathered(s.llm)
        if shares and self.cfg.lam > 0:
            mut = s.sharing.mutual_loss(
                "llm", users, items, *self._llm_rows(users, items, grad=True)
            )
            loss = loss + self.cfg.lam * mut
            out["llm/mut"] = mut.item()
        elif shares:
            out["llm/mut"] = s.sharing.distance("llm", users, items, *self._llm_rows(users, items))
        self.llm_stepper.step(loss, step)
        if shares:  # the same rows on every process: the LLM's weights are the same everywhere
            with self.procs.gathered(s.llm):  # FSDP: the embedding was resharded by the step
                s.sharing.write("llm", users, items, *self._llm_rows(users, items))
        return out

    def _llm_rows(self, users, items, grad: bool = False):
        """E_U / E_I rows of the batch's ids. Under FSDP, read them while the model's own
        parameters (the embedding's unit) are whole: after :meth:`Processes.keep_gathered` and
        before the backward (which reduces the mutual loss's gradient with the rest), or
        inside :meth:`Processes.gathered`."""
        s = self.sides
        with torch.enable_grad() if grad else torch.no_grad():
            return (
                id_token_rows(s.llm, s.ids, "user", users.to(self.device)),
                id_token_rows(s.llm, s.ids, "item", items.to(self.device)),
            )

    def llm_features(self, rows: Rows, local: np.ndarray | None = None) -> torch.Tensor | None:
        """h_LLM of the rows' (user, positive) and (user, negative) prompts: (B, 2, d); with
        ``local``, of those rows only. Under FSDP every forward is a collective, so every
        process computes (and caches) the features of all rows, then keeps its own."""
        s = self.sides
        if not s.cascade.h_dim:
            return None
        sharded = self.llm_engine is not None and self.procs.sharded(s.llm)
        if local is not None and not sharded:
            rows = rows.subset(local)
        texts = self.batches.feature_prompts(rows, s.builder)
        h = s.features.features(s.llm, s.tokenizer, texts).view(len(rows), 2, -1)
        return h[torch.as_tensor(local)] if local is not None and sharded else h

    def drs_step(self, rows: Rows, step: int) -> dict[str, float]:
        """One optimiser step of the domain side (cascade + native loss), then its write.

        Under several processes each computes its shard of the rows (scaled by its share) and
        the mutual loss over the whole batch's ids, as :meth:`llm_step` does.
        """
        s = self.sides
        procs = self.procs
        cascade = s.cascade
        dev = next(cascade.parameters()).device
        local, weight = self._local(rows)
        mine = rows if procs.world == 1 else rows.subset(local)
        h = self.llm_features(rows, None if procs.world == 1 else local)
        torch.manual_seed(_stream_seed(self.cfg.seed, "drs", step))  # dropout masks
        cascade.train()
        users, items_u = self._shared(rows)
        bce, native, p_u, q_i = self.drs_engine(
            mine, None if h is None else h.to(dev), users.to(dev), items_u.to(dev)
        )
        share = weight * len(mine) / len(rows)
        scale = procs.world * share
        loss = bce * scale
        out = {"drs/bce": procs.sum(bce.item() * share)}
        if self.cfg.native_weight:
            loss = loss + self.cfg.native_weight * native * scale
            out["drs/native"] = procs.sum(native.item() * share)
        if s.sharing is not None:
            if self.cfg.lam > 0:
                mut = s.sharing.mutual_loss("drs", users, items_u, p_u, q_i)
                loss = loss + self.cfg.lam * mut
                out["drs/mut"] = mut.item()
            else:
                out["drs/mut"] = s.sharing.distance("drs", users, items_u, p_u, q_i)
        self.drs_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.drs_opt.step()
        if s.sharing is not None:
            with torch.no_grad():
                p_table, q_table = cascade.tables()
                s.sharing.write(
                    "drs", users, items_u, p_table[users.to(dev)], q_table[items_u.to(dev)]
                )
        return out

    def joint_step(self, step: int) -> dict[str, float]:
        """Step ``step``: the LLM side, then the domain side, on the same rows."""
        rows, epoch, k = self.rows(step)
        out: dict[str, float] = {}
        if self.cfg.train_llm:
            out.update(self.llm_step(rows, step, epoch, k))
        if self.cfg.train_drs:
            out.update(self.drs_step(rows, step))
        return out

    # ----------------------------------------------------------------------------- loop

    def loop(self) -> Loop:
        """The run on :class:`lmrec.train.loop.Loop`: the LLM side, the domain side and M are
        its parts (a side that is switched off is neither trained nor saved)."""
        s = self.sides
        parts = []
        if self.llm_opt is not None:
            parts.append(Part("llm", s.llm, self.llm_opt, trainable_only=True))
        if self.drs_opt is not None:
            parts.append(Part("drs", s.cascade, self.drs_opt))
        if s.sharing is not None:
            parts.append(Part("sharing", s.sharing))
        return Loop(
            parts,
            self.cfg,
            steps_per_epoch=self.batches.n_batches(),
            epochs=self.cfg.epochs,
            out_dir=self.out_dir,
            seed=self.cfg.seed,
            num_threads=self.cfg.num_threads,
            save_every=self.cfg.save_every,
            keep=self.cfg.keep_checkpoints,
            progress=self.cfg.progress,
            desc="bdlm joint",
            config_name="joint config",
            distributed=True,
            device=self.device,
            lean_memory=self.llm_cfg.gradient_checkpointing,
        )

    def _check_sharing(self) -> str:
        """M's checksum, checked equal on every process (each writes the whole batch's rows
        from weights the engine keeps equal, so M never needs sending); raises if they drifted."""
        m = self.sides.sharing
        digest = hashlib.sha256()
        for t in (m.users, m.items, m.scales):
            digest.update(t.detach().cpu().contiguous().numpy().tobytes())
        mine = digest.hexdigest()
        every = self.procs.gather(np.array([int(mine[:15], 16)]))
        if len(set(every.tolist())) != 1:
            raise RuntimeError(f"M differs across processes after training: {every.tolist()}")
        return mine

    def fit(self, on_step: Callable[[int, dict[str, float]], None] | None = None) -> dict:
        """Train to ``epochs``, resuming from the newest checkpoint in ``out_dir``.

        ``on_step(step, losses)`` is called after every step (steps count from 1) and its
        checkpoint; raising from it stops training with the checkpoint intact.

        Returns
        -------
        dict
            ``steps``, ``resumed_from``, ``seconds``, ``steps_per_s``, ``peak_memory_mb``, the
            per-epoch mean losses (``history``) and the feature-cache counters.
        """
        loop = self.loop()
        stats = loop.run(self.joint_step, on_step=on_step)
        self.procs.for_evaluation(self.sides.llm)  # FSDP: the weights gathered for scoring
        if self.sides.sharing is not None:
            stats["sharing_checksum"] = self._check_sharing()
        self.step = stats["steps"]
        self.history = stats["history"]
        self.sides.cascade.eval()
        cache = self.sides.features
        return {
            "steps": stats["steps"],
            "resumed_from": stats["resumed_from"],
            "rows_per_step": self.cfg.batch_size,
            "seconds": stats["seconds"],
            "steps_per_s": stats["steps_per_s"],
            "peak_memory_mb": stats["peak_memory_mb"],
            "history": stats["history"],
            "processes": self.procs.world,
            "engine": self.procs.engine_of(self.sides.llm),
            "sharing_checksum": stats.get("sharing_checksum"),
            "feature_cache": {
                "hits": cache.hits,
                "misses": cache.misses,
                "invalidations": cache.invalidations,
            },
        }


__all__ = ["JointSides", "JointTrainer"]
