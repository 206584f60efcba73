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
from pathlib import Path
from typing import Any

import torch

from lmrec.bdlm.aligned import AlignedBatches
from lmrec.bdlm.cascade import Cascade
from lmrec.bdlm.config import BDLMConfig, saved_llm_side
from lmrec.bdlm.features import FeatureCache
from lmrec.bdlm.inference import evaluate_cascade, evaluate_domain
from lmrec.bdlm.joint import JointSides, JointTrainer
from lmrec.bdlm.refit import RefitConfig, refit_on_lists, refit_on_valid
from lmrec.bdlm.setup import preloaded_sides
from lmrec.config import from_dict, to_dict
from lmrec.llm.evaluate import evaluate_llm
from lmrec.train.rundir import check_same_run
from lmrec.utils.distributed import processes
from lmrec.utils.io import read_json, write_json

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
# Keys that change how a run goes, not what it computes (a finished run stays valid).
_COSMETIC = {("joint", "progress"), ("joint", "num_threads"), ("joint", "save_every")}


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
    # under several processes (torchrun / accelerate launch) only the main one writes files
    main = processes().is_main
    ds = prepared.dataset
    if main:
        write_json(out / CONFIG_FILE, run_config)
        ds.users.save(out / "user_ids.json")
        ds.items.save(out / "item_ids.json")
        write_json(out / "protocol.json", prepared.protocol())

    llm, tok, ids, domain, sharing, record = preloaded_sides(cfg, dataset, prepared, out)
    width = int(llm.get_input_embeddings().weight.shape[1])
    device = next(llm.parameters()).device
    if main:
        if ids is not None:
            ids.save(out / "id_tokens.json")
        write_json(out / "preload.json", record)
        tok.save_pretrained(out / "tokenizer")

    from lmrec.llm.modes import apply_mode
    from lmrec.llm.prompts import PromptBuilder

    builder = PromptBuilder(cfg.llm.prompt, ds.titles(), ids, tok)
    torch.manual_seed(cfg.joint.seed)  # LoRA's A matrices start random
    llm = apply_mode(llm, cfg.llm.mode, ids, tok)
    if cfg.llm.compile:
        from lmrec.llm.scoring import compile_layers

        compile_layers(llm)  # training's graph; scoring reuses the patched layers
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
    from lmrec.llm.modes import ready_for_scoring

    llm = ready_for_scoring(llm, cfg.llm.compile)  # training is over: merged, weights stored
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
    from lmrec.train.checkpoint import save_weights

    if main:
        write_json(out / "train.json", stats)
        if sharing is not None:
            sharing.save(out / "sharing.safetensors")
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
    if main:
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
    from lmrec.llm.evaluate import LLMScorer
    from lmrec.llm.prompts import histories

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
        out["bdlm"]["llm"] = saved_llm_side(out["bdlm"]["llm"])
    for section, key in _COSMETIC:
        sec = dict(out["bdlm"].get(section, {}))
        sec.pop(key, None)
        out["bdlm"][section] = sec
    out["bdlm"].pop("data_dir", None)
    if out["bdlm"].get("cascade_refit") == to_dict(RefitConfig()):
        out["bdlm"].pop("cascade_refit")  # runs written before the option existed
    return out


def _check_same_run(out: Path, run_config: dict) -> None:
    check_same_run(out, run_config, _comparable, "BDLM run")
