"""A whole BDLM run: data -> domain model -> pre-loaded LLM -> joint training -> metrics.

:func:`run_bdlm` is the library entry the ``bdlm`` experiment cell calls. Steps:

1. :func:`lmrec.protocol.prepare.prepare`: dataset, leave-one-out split, the saved candidate sets.
2. The LLM with one token per user and item (:func:`lmrec.llm.run.build_llm`).
3. The domain model, of the LLM's width d: a finished ``lmrec train`` folder (``domain.run``),
   or trained here into ``<out_dir>/domain`` by :func:`lmrec.train.run.train_run` (resumed).
4. Pre-loading (BDLM 4.1.2): E_U, E_I <- P_U / s, Q_I / s, the domain tables rescaled by one
   number ``s = mean row norm of the domain tables / mean row norm of the LM's vocabulary``
   (new tokens then look like words to the first layer norm; the directions, hence every
   inner product up to one factor, are the domain model's). ``preload: false`` keeps random
   rows of the vocabulary's norm (*w/o PE*).
5. M <- (P_U, Q_I) with the LLM side's factor ``s`` (:mod:`lmrec.bdlm.sharing`), the cascade
   (:mod:`lmrec.bdlm.cascade`), the training mode (:func:`lmrec.llm.modes.apply_mode`).
6. :class:`lmrec.bdlm.joint.JointTrainer` (resumes from ``<out_dir>/checkpoints``).
   With ``cascade_refit.rows: valid`` the cascade head is then refit on the validation
   interactions with the LLM frozen (:mod:`lmrec.bdlm.refit`, which says why).
7. BDLM-llm and BDLM-drs on the saved candidate sets, and the domain model alone on the same
   users (:mod:`lmrec.bdlm.inference`).

The run folder holds ``config.json``, ``user_ids.json``, ``item_ids.json``, ``protocol.json``,
``id_tokens.json``, ``preload.json``, ``tokenizer/``, ``domain/`` (when trained here),
``checkpoints/``, ``sharing.safetensors`` (M), ``drs.safetensors`` (cascade), ``train.json``
and ``metrics.json``::

    {"llm": {"topk/HR@1": ..., ...}, "drs": {...}, "domain": {...}, "train": {...}}

A folder whose ``metrics.json`` exists is finished: calling again returns it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lmrec.bdlm.aligned import AlignedBatches
from lmrec.bdlm.cascade import Cascade, CascadeConfig
from lmrec.bdlm.features import FeatureCache
from lmrec.bdlm.inference import evaluate_cascade, evaluate_domain
from lmrec.bdlm.joint import JointConfig, JointSides, JointTrainer
from lmrec.bdlm.refit import RefitConfig, refit_on_lists, refit_on_valid
from lmrec.bdlm.setup import preloaded_sides
from lmrec.config import from_dict, to_dict
from lmrec.errors import ConfigError
from lmrec.llm.finetune import FinetuneConfig
from lmrec.llm.run import LLMRunConfig, PreloadConfig, evaluate_llm, saved_llm
from lmrec.utils.io import read_json, write_json

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
SIDES = ("llm", "drs")
PROJECTIONS = ("copy", "orthogonal", "linear")
# llm.train fields that the joint schedule owns (JointConfig has them instead).
_SCHEDULE = {
    "epochs": "joint.epochs",
    "batch_size": "joint.batch_size",
    "max_steps": "joint.rows_per_epoch",
    "save_every": "joint.save_every",
    "keep_checkpoints": "joint.keep_checkpoints",
    "seed": "joint.seed",
}
# Keys that change how a run goes, not what it computes (a finished run stays valid).
_COSMETIC = {("joint", "progress"), ("joint", "num_threads"), ("joint", "save_every")}


@dataclass
class DomainSpec:
    """The domain model BDLM pairs the LLM with.

    Attributes
    ----------
    model:
        A registered model with user and item tables: ``lightgcn`` (the paper's main choice),
        ``neumf`` (NCF, the paper's Table 4), ``gmf`` or ``mf``.
    model_config:
        Its config; ``dim`` defaults to the LLM's hidden size and must equal it.
    train_config:
        Its :class:`lmrec.train.TrainConfig` for pre-training (``seed`` defaults to
        ``joint.seed``).
    run:
        A finished ``lmrec train`` folder of such a model to use instead of training one.
    """

    model: str = "lightgcn"
    model_config: dict = field(default_factory=dict)
    train_config: dict = field(default_factory=dict)
    run: str | None = None


@dataclass
class BDLMConfig:
    """Everything one BDLM run needs.

    Attributes
    ----------
    llm:
        The LLM side (:class:`lmrec.llm.run.LLMRunConfig`): model, device, ``id_tokens``
        (false: text-only prompts, *w/o ET*), training mode, prompts, SFT prompt kinds
        (``examples``), optimiser (``train``: only lr, lr_tokens, weight_decay, warmup_steps,
        grad_clip, max_length, gradient_checkpointing; the schedule is ``joint``'s), and the
        evaluation settings (``tasks``, ``eval_limit``, ``eval_batch_size``) both sides use.
    domain:
        The domain model (:class:`DomainSpec`).
    joint:
        The joint trainer (:class:`lmrec.bdlm.joint.JointConfig`), with lambda as ``lam``.
    cascade:
        The domain side's head (:class:`lmrec.bdlm.cascade.CascadeConfig`).
    cascade_refit:
        Refit that head on held-out interactions after joint training
        (:class:`lmrec.bdlm.refit.RefitConfig`; off by default).
    preload:
        Pre-load the user/item tokens from the domain model (false: *w/o PE*).
    projection:
        How domain rows reach the LLM's width: ``copy`` (the domain model is as wide as the
        LLM, the paper's setting), ``orthogonal`` (a narrower domain model, e.g. LightGCN at its
        best width 64, mapped by a fixed seeded matrix with orthonormal rows and rescaled to the
        LM's embedding norm) or ``linear`` (a map with bias fitted by ridge least squares from
        the item rows to the LM embedding of their titles, so items land near their words);
        M stays in the domain width (:mod:`lmrec.bdlm.sharing`).
    share_prefix:
        Compute h_LLM of prompts with a common beginning from one encoding of it.
    evaluate:
        Which sides to score: ``llm`` (BDLM-llm), ``drs`` (BDLM-drs).
    preprocess, candidates, data_dir:
        As for every method (:func:`lmrec.protocol.prepare.prepare`).
    """

    llm: LLMRunConfig = field(default_factory=LLMRunConfig)
    domain: DomainSpec = field(default_factory=DomainSpec)
    joint: JointConfig = field(default_factory=JointConfig)
    cascade: CascadeConfig = field(default_factory=CascadeConfig)
    cascade_refit: RefitConfig = field(default_factory=RefitConfig)
    preload: bool = True
    projection: str = "copy"
    share_prefix: bool = True
    evaluate: list[str] = field(default_factory=lambda: list(SIDES))
    preprocess: dict = field(default_factory=dict)
    candidates: dict = field(default_factory=dict)
    data_dir: str | None = None

    def __post_init__(self) -> None:
        for name, cls in (
            ("llm", LLMRunConfig),
            ("domain", DomainSpec),
            ("joint", JointConfig),
            ("cascade", CascadeConfig),
            ("cascade_refit", RefitConfig),
        ):
            if isinstance(getattr(self, name), dict):
                setattr(self, name, from_dict(cls, getattr(self, name), f"bdlm.{name}"))
        if self.cascade_refit.rows == "lists" and (
            self.cascade.hidden or not self.cascade.use_llm_score
        ):
            raise ConfigError(
                "bdlm.cascade_refit.rows 'lists' fits the head's LLM-score column: it needs "
                "cascade.hidden 0 and cascade.use_llm_score true"
            )
        if self.cascade_refit.rows == "valid" and (
            self.cascade.hidden or not self.cascade.use_llm_feature
        ):
            raise ConfigError(
                "bdlm.cascade_refit refits the paper's linear head over [f_DRS ; h_LLM]: it needs "
                "cascade.hidden 0 and cascade.use_llm_feature true"
            )
        if (
            self.joint.listwise_weight > 0
            and "topk" in self.llm.examples.tasks
            and (not self.llm.id_tokens or self.llm.prompt.template("topk").answer != "item_token")
        ):
            raise ConfigError(
                "bdlm.joint.listwise_weight reads the candidates' item-token logits: it needs "
                "llm.id_tokens true and a top-K template that answers with an item token "
                "(e.g. id-topk or bdlm-topk)"
            )
        if self.cascade.use_llm_score and self.cascade_refit.rows != "lists":
            raise ConfigError(
                "bdlm.cascade.use_llm_score: the LLM-score column is fitted only by "
                "cascade_refit.rows 'lists' (joint training feeds it 0); set both"
            )
        if self.projection not in PROJECTIONS:
            raise ConfigError(
                f"bdlm.projection must be one of {PROJECTIONS}, got {self.projection!r}"
            )
        bad = [s for s in self.evaluate if s not in SIDES]
        if bad:
            raise ConfigError(f"bdlm.evaluate must be a subset of {SIDES}, got {bad}")
        llm = self.llm
        if to_dict(llm.preload) != to_dict(PreloadConfig()):
            raise ConfigError(
                "bdlm.llm.preload: BDLM pre-loads from its own domain model; use bdlm.preload "
                "(true/false) and bdlm.domain instead"
            )
        for name in ("preprocess", "candidates", "data_dir"):
            if getattr(llm, name):
                raise ConfigError(
                    f"bdlm.llm.{name}: set {name} at the top level of the BDLM config (both "
                    "sides use the same data)"
                )
        defaults = to_dict(FinetuneConfig())
        for name, where in _SCHEDULE.items():
            if getattr(llm.train, name) != defaults[name]:
                raise ConfigError(
                    f"bdlm.llm.train.{name}: the joint trainer owns the schedule; set {where}"
                )
        if not llm.id_tokens and (self.preload or self.joint.lam > 0):
            raise ConfigError(
                "bdlm.llm.id_tokens is false (text-only, w/o ET): there are no token rows to "
                "pre-load or share; set bdlm.preload: false and bdlm.joint.lam: 0"
            )


def run_bdlm(dataset: str, config: dict | BDLMConfig | None, out_dir: str | Path) -> dict:
    """Train BDLM on ``dataset`` and evaluate both sides; returns ``metrics.json``'s contents.

    Parameters
    ----------
    dataset:
        A dataset :func:`lmrec.data.load_dataset` knows (``ml-100k``, ``ml-1m``,
        ``amazon2014:...``).
    config:
        The dict form of :class:`BDLMConfig` (unknown keys raise, naming them) or the config.
    out_dir:
        The run folder (module docstring); an interrupted run there resumes, a finished one is
        returned as it is.

    Returns
    -------
    dict
        ``{"llm": BDLM-llm metrics, "drs": BDLM-drs metrics, "domain": the domain model alone
        on the same users, "train": scalars of the joint training}``; metric keys as everywhere
        (``topk/HR@1``, ``topk/HR@2``, ..., ``interaction/F1``).
    """
    from lmrec.protocol.prepare import prepare

    cfg = config if isinstance(config, BDLMConfig) else from_dict(BDLMConfig, config, "bdlm")
    out = Path(out_dir)
    if cfg.joint.num_threads:
        torch.set_num_threads(cfg.joint.num_threads)
    prepared = prepare(
        dataset,
        data_dir=cfg.data_dir,
        preprocess=cfg.preprocess or None,
        candidates=cfg.candidates or None,
    )
    run_config = {"dataset": dataset, "bdlm": to_dict(cfg)}
    _check_same_run(out, run_config)
    if (out / METRICS_FILE).is_file():
        return read_json(out / METRICS_FILE)
    write_json(out / CONFIG_FILE, run_config)
    ds = prepared.dataset
    ds.users.save(out / "user_ids.json")
    ds.items.save(out / "item_ids.json")
    write_json(out / "protocol.json", prepared.protocol())

    llm, tok, ids, domain, sharing, record = preloaded_sides(cfg, dataset, prepared, out)
    width = int(llm.get_input_embeddings().weight.shape[1])
    device = next(llm.parameters()).device
    if ids is not None:
        ids.save(out / "id_tokens.json")
    write_json(out / "preload.json", record)
    tok.save_pretrained(out / "tokenizer")

    from lmrec.llm.modes import apply_mode
    from lmrec.llm.prompts import PromptBuilder

    builder = PromptBuilder(cfg.llm.prompt, ds.titles(), ids, tok)
    torch.manual_seed(cfg.joint.seed)  # LoRA's A matrices start random
    llm = apply_mode(llm, cfg.llm.mode, ids, tok)
    cascade = Cascade(domain, width, cfg.cascade).to(device)
    cache = FeatureCache(cfg.joint.feature_batch_size, cfg.share_prefix)
    sides = JointSides(llm, tok, ids, builder, cascade, sharing, cache)
    negatives = None
    if cfg.llm.examples.negatives == "candidates":
        from lmrec.protocol.candidates import make_candidate_sampler

        negatives = make_candidate_sampler(prepared.dataset, prepared.split, prepared.candidates)
    batches = AlignedBatches(
        prepared.split,
        cfg.joint.batch_size,
        cfg.joint.seed,
        cfg.joint.rows_per_epoch,
        rows=cfg.joint.rows,
        negatives=negatives,
    )
    trainer = JointTrainer(sides, batches, cfg.joint, cfg.llm.train, cfg.llm.examples, out)
    stats = trainer.fit()
    llm_scores = _llm_topk_scores(cfg, llm, tok, builder, prepared, ids)
    if cfg.cascade_refit.rows != "none" and "drs" in cfg.evaluate:
        lists = cfg.cascade_refit.rows == "lists"
        refit = refit_on_lists if lists else refit_on_valid
        scores = (llm_scores["valid"],) if lists else ()
        stats["cascade_refit"] = refit(
            cascade,
            llm,
            tok,
            builder,
            prepared,
            cache,
            *scores,
            cfg.cascade_refit,
            batch_size=cfg.llm.eval_batch_size,
            progress=cfg.joint.progress,
        )
    write_json(out / "train.json", stats)
    if sharing is not None:
        sharing.save(out / "sharing.safetensors")
    from lmrec.train.checkpoint import save_weights

    save_weights(cascade, out / "drs.safetensors")

    progress = cfg.joint.progress
    tasks = tuple(cfg.llm.tasks)
    limit = cfg.llm.eval_limit
    metrics: dict[str, Any] = {}
    test_table = llm_scores.get("test")
    if "llm" in cfg.evaluate:
        metrics["llm"] = evaluate_llm(
            llm,
            tok,
            builder,
            prepared,
            ids,
            cfg.llm,
            None,
            progress=progress,
            ranks_to=out / ranks_file("llm"),
            topk_scores=None if test_table is None else test_table.scores,
        )
    if "drs" in cfg.evaluate:
        metrics["drs"] = evaluate_cascade(
            cascade,
            llm,
            tok,
            builder,
            prepared,
            cache,
            tasks=tasks,
            limit=limit,
            batch_size=cfg.llm.eval_batch_size,
            progress=progress,
            ranks_to=out / ranks_file("drs"),
            llm_scores=llm_scores,
        )
    metrics["domain"] = evaluate_domain(
        cascade.domain,
        prepared,
        tasks=tasks,
        limit=limit,
        progress=progress,
        ranks_to=out / ranks_file("domain"),
    )
    metrics["train"] = {
        k: float(v)
        for k, v in stats.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }
    for key, value in (stats["history"][-1] if stats["history"] else {}).items():
        if key != "epoch":
            metrics["train"][f"last_epoch/{key}"] = float(value)
    refit = stats.get("cascade_refit")
    if refit:
        for key in (
            "l2",
            "bce_before",
            "bce_after",
            "ce_before",
            "ce_after",
            "domain_scale",
            "llm_weight_norm",
            "llm_score_weight",
        ):
            if key in refit:
                metrics["train"][f"refit/{key}"] = float(refit[key])
    write_json(out / METRICS_FILE, metrics)
    return metrics


def ranks_file(side: str) -> str:
    """Per-user top-K ranks of one side of a BDLM run (``llm``, ``drs``, ``domain``)."""
    return f"topk_ranks_{side}.json"


def _llm_topk_scores(cfg: BDLMConfig, llm, tok, builder, prepared, ids) -> dict:
    """The LLM's top-K scores, once, for what needs them: ``test`` for BDLM-llm and the
    cascade's score column, ``valid`` for the listwise refit ({} when nothing does)."""
    from lmrec.bdlm.inference import ScoreTable
    from lmrec.eval.evaluator import score_candidates
    from lmrec.llm.prompts import histories
    from lmrec.llm.run import LLMScorer

    wants = set()
    if "topk" in cfg.llm.tasks and ("llm" in cfg.evaluate or cfg.cascade.use_llm_score):
        wants.add("test")
    if cfg.cascade_refit.rows == "lists" and "drs" in cfg.evaluate:
        wants.add("valid")
    llm.eval()
    out = {}
    split = prepared.split
    for stage in sorted(wants, reverse=True):  # valid first: the refit reads it first
        hist = histories(split.history_before(stage), split.n_users)
        scorer = LLMScorer(llm, tok, builder, hist, ids, cfg.llm)
        cands = prepared.sets[("topk", stage)].head(cfg.llm.eval_limit)
        scores = score_candidates(scorer.topk, cands, cfg.llm.eval_batch_size, cfg.joint.progress)
        out[stage] = ScoreTable(cands.users, cands.items, scores)
    return out


def _comparable(run_config: dict) -> dict:
    out = {"dataset": run_config.get("dataset"), "bdlm": dict(run_config.get("bdlm", {}))}
    if isinstance(out["bdlm"].get("llm"), dict):
        out["bdlm"]["llm"] = saved_llm(out["bdlm"]["llm"])
    for section, key in _COSMETIC:
        sec = dict(out["bdlm"].get(section, {}))
        sec.pop(key, None)
        out["bdlm"][section] = sec
    out["bdlm"].pop("data_dir", None)
    if out["bdlm"].get("cascade_refit") == to_dict(RefitConfig()):
        out["bdlm"].pop("cascade_refit")  # runs written before the option existed
    return out


def _check_same_run(out: Path, run_config: dict) -> None:
    path = out / CONFIG_FILE
    if path.is_file() and _comparable(read_json(path)) != _comparable(run_config):
        raise ConfigError(f"{out} holds a BDLM run with another config; use a new out_dir")
