"""A whole LLM run: data -> split -> candidates -> LLM with user/item tokens -> SFT -> metrics.

:func:`llm_train` is what ``lmrec llm train`` calls and :func:`llm_evaluate` what
``lmrec llm evaluate`` calls. A run folder holds:

- ``config.json``: dataset and the resolved :class:`LLMRunConfig`;
- ``user_ids.json``, ``item_ids.json``: the dataset's id maps; ``id_tokens.json``: token id <->
  (kind, index); ``tokenizer/``: the tokenizer with the new tokens;
- ``id_rows.safetensors``: the user/item token rows as initialised (pre-loaded or random), so the
  model can be rebuilt without the domain model; ``preload.json``: how they were made;
- ``checkpoints/step-N/``: trainable weights + optimizer (:mod:`lmrec.train.loop`);
- ``train.json`` (throughput, loss) and ``metrics.json`` (same keys as the domain models).

Evaluation scores the shared candidate sets stage by stage (the test prompt's history includes
the validation item, the validation prompt's does not); interaction prediction uses
log P(Yes) - log P(No) with the F1 threshold chosen on the validation set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from lmrec.config import from_dict, to_dict
from lmrec.errors import ConfigError, DataError
from lmrec.llm.config import LLMRunConfig, LLMSideConfig, PreloadConfig
from lmrec.llm.evaluate import evaluate_llm, few_shot_examples
from lmrec.llm.finetune import FinetuneConfig, train_sft
from lmrec.llm.modes import apply_mode, ready_for_scoring
from lmrec.llm.prompts import PromptBuilder
from lmrec.llm.resolve import load_llm
from lmrec.llm.scoring import compile_layers
from lmrec.llm.sft import training_examples
from lmrec.llm.tokens import IdTokens, add_id_tokens, preload_id_tokens, set_id_token_rows
from lmrec.train.loop import latest_checkpoint, load_trainable
from lmrec.train.rundir import check_same_run, without_resumable
from lmrec.utils.distributed import processes
from lmrec.utils.io import atomic_write, read_json, write_json
from lmrec.utils.precision import resolve_precision, set_precision

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
ROWS_FILE = "id_rows.safetensors"


# ---------------------------------------------------------------- building the model


def domain_tables(preload: PreloadConfig, dataset_name: str, out_dir: Path | None, prepared):
    """(user_table or None, item_table) of the configured domain model, trained if needed."""
    from lmrec.train.run import domain_model_in

    if preload.domain_run:
        model = domain_model_in(preload.domain_run, dataset_name, prepared)
    else:
        if out_dir is None:
            raise ConfigError("preload.domain_model needs an out_dir to train the domain model in")
        model = domain_model_in(
            Path(out_dir) / "domain",
            dataset_name,
            prepared,
            model=preload.domain_model,
            model_config=preload.domain_config,
            train_config=preload.domain_train,
        )
    with torch.no_grad():
        users, items = model.user_item_embeddings()
    return (None if users is None else users.detach().float().cpu()), items.detach().float().cpu()


def build_llm(
    cfg: LLMSideConfig,
    n_users: int,
    n_items: int,
    titles: list[str],
    tables=None,
    projection: str = "auto",
    rows_seed: int = 0,
):
    """Base model + tokenizer + user/item tokens (pre-loaded from ``tables`` when given).

    ``rows_seed`` seeds the random rows (and ``projection``'s map when ``tables`` are given).
    Returns ``(model, tokenizer, ids, preload_record)``; ``ids`` is None for text-only runs.
    """
    model, tok = load_llm(cfg.model, device=cfg.device, dtype=cfg.dtype, seed=cfg.seed)
    set_precision(model, resolve_precision(cfg.precision, next(model.parameters()).device))
    if not cfg.id_tokens:
        return model, tok, None, {"id_tokens": False}
    ids = add_id_tokens(model, tok, n_users, n_items, seed=rows_seed)
    record: dict[str, Any] = {"init": "random"}
    if tables is not None:
        record = {
            "init": "domain",
            **preload_id_tokens(
                model, tok, ids, tables[0], tables[1], projection, titles, seed=rows_seed
            ).record,
        }
    return model, tok, ids, record


def _build_preloaded(cfg: LLMRunConfig, dataset_name: str, out: Path | None, prepared):
    """:func:`build_llm` with the rows ``cfg.preload`` asks for (a domain model's, trained into
    ``out`` when needed, or random)."""
    ds = prepared.dataset
    tables = None
    if cfg.id_tokens and cfg.preload.init == "domain":
        tables = domain_tables(cfg.preload, dataset_name, out, prepared)
    return build_llm(
        cfg,
        ds.n_users,
        ds.n_items,
        ds.titles(),
        tables,
        projection=cfg.preload.projection,
        rows_seed=cfg.preload.seed,
    )


def id_rows(model, ids: IdTokens) -> torch.Tensor:
    """The user/item rows of the (base) input embedding: (n_users + n_items, width)."""
    return model.get_input_embeddings().weight[ids.first_id : ids.end_id].detach().float().cpu()


# ---------------------------------------------------------------- scoring


# ---------------------------------------------------------------- the library entry points


def _prepare(dataset_name: str, cfg: LLMRunConfig):
    from lmrec.protocol.prepare import prepare

    return prepare(
        dataset_name,
        data_dir=cfg.data_dir,
        preprocess=cfg.preprocess or None,
        candidates=cfg.candidates or None,
    )


def llm_train(
    dataset_name: str, mode: str | None, out_dir: str | Path, config: dict | None = None
) -> dict:
    """Build, fine-tune (``mode``) and evaluate an LLM recommender; returns ``metrics.json``.

    Parameters
    ----------
    dataset_name:
        A dataset :func:`lmrec.data.load_dataset` knows (``ml-100k``, ``ml-1m``, ...).
    mode:
        ``full``, ``lora``, ``extra``, ``prompt`` or ``none`` (zero/few-shot); overrides
        ``config["mode"]["mode"]`` when given.
    out_dir:
        The run folder (see the module docstring); an existing checkpoint there is resumed.
    config:
        The dict form of :class:`LLMRunConfig` (unknown keys raise).
    """
    config = dict(config or {})
    if mode is not None:
        config["mode"] = {**dict(config.get("mode") or {}), "mode": mode}
    cfg = from_dict(LLMRunConfig, config, "llm")
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    out = Path(out_dir)
    prepared = _prepare(dataset_name, cfg)
    ds = prepared.dataset
    run_config = {"dataset": dataset_name, "llm": to_dict(cfg)}
    check_same_run(out, run_config, lambda c: _resumable_view(saved_run(c)), "LLM run")
    # under several processes (torchrun / accelerate launch) only the main one writes files;
    # whether this is a resume is decided by every process before the main one writes any
    procs = processes()
    main = procs.is_main
    resuming = (out / ROWS_FILE).is_file()
    procs.barrier()
    if main:
        write_json(out / CONFIG_FILE, run_config)
        ds.users.save(out / "user_ids.json")
        ds.items.save(out / "item_ids.json")
        write_json(out / "protocol.json", prepared.protocol())

    if resuming:  # the rows were made (maybe from a domain model)
        model, tok, ids, _ = build_llm(
            cfg, ds.n_users, ds.n_items, ds.titles(), rows_seed=cfg.preload.seed
        )
        set_id_token_rows(model, ids, "all", load_file(str(out / ROWS_FILE))["rows"])
    else:
        model, tok, ids, record = _build_preloaded(cfg, dataset_name, out, prepared)
        if main and ids is not None:
            ids.save(out / "id_tokens.json")
            rows = {"rows": id_rows(model, ids)}
            atomic_write(out / ROWS_FILE, lambda p: save_file(rows, str(p)))
        if main:
            write_json(out / "preload.json", record)
    if main:
        tok.save_pretrained(out / "tokenizer")
    builder = PromptBuilder(cfg.prompt, ds.titles(), ids, tok)
    model = apply_mode(model, cfg.mode, ids, tok)
    if cfg.compile:
        compile_layers(model)  # training's graph; scoring reuses the patched layers

    stats: dict[str, Any] = {"mode": cfg.mode.mode}
    if cfg.mode.mode != "none":
        examples = training_examples(prepared.split, builder, cfg.examples)
        stats.update(train_sft(model, tok, examples, cfg.train, out))
    if main:
        write_json(out / "train.json", stats)
    from lmrec.eval.significance import RANKS_FILE

    model = ready_for_scoring(model, cfg.compile)  # training is over: merged, weights stored
    metrics = evaluate_llm(
        model,
        tok,
        builder,
        prepared,
        ids,
        cfg,
        few_shot_examples(prepared, builder, cfg),
        ranks_to=out / RANKS_FILE,
    )
    metrics.update(
        {
            f"train/{k}": float(v)
            for k, v in stats.items()
            if isinstance(v, int | float) and v is not None
        }
    )
    if main:
        write_json(out / METRICS_FILE, metrics)
    return metrics


def _resumable_view(run_config: dict) -> dict:
    """A run config without the training fields that may change when it resumes (how long it
    runs, what it keeps: :data:`lmrec.config.RESUMABLE` on :class:`FinetuneConfig`)."""
    return without_resumable(run_config, FinetuneConfig, "llm", "train")


def saved_llm(llm: dict) -> dict:
    """A saved ``llm`` config section as today's code reads it: a run written before
    ``precision`` existed computed in fp32, one written before ``accumulation_steps`` took one
    micro-batch a step, and one written before ``compile`` ran eagerly."""
    out = {**llm, "precision": llm.get("precision", "fp32"), "compile": llm.get("compile", False)}
    if isinstance(out.get("train"), dict):
        out["train"] = {"accumulation_steps": 1, **out["train"]}
    return out


def saved_run(run_config: dict) -> dict:
    """:func:`saved_llm` applied to a run folder's ``config.json`` (``{"dataset", "llm"}``)."""
    if isinstance(run_config.get("llm"), dict):
        return {**run_config, "llm": saved_llm(run_config["llm"])}
    return run_config


def load_llm_run(run_dir: str | Path):
    """Rebuild a saved run's model: base LM + tokens + saved rows + mode + latest checkpoint.

    Returns ``(model, tokenizer, ids, cfg, dataset_name)``.
    """
    run = Path(run_dir)
    saved = read_json(run / CONFIG_FILE)
    saved = saved_run(saved)
    cfg = from_dict(LLMRunConfig, saved["llm"], f"{run / CONFIG_FILE}: llm")
    n_users = len(read_json(run / "user_ids.json")["raw"])
    n_items = len(read_json(run / "item_ids.json")["raw"])
    model, tok, ids, _ = build_llm(
        cfg, n_users, n_items, [""] * n_items, rows_seed=cfg.preload.seed
    )
    if ids is not None:
        set_id_token_rows(model, ids, "all", load_file(str(run / ROWS_FILE))["rows"])
    model = apply_mode(model, cfg.mode, ids, tok)
    ckpt = latest_checkpoint(run)
    if cfg.mode.mode != "none":
        if ckpt is None:
            raise DataError(f"{run}: no checkpoint to evaluate; train the run first")
        weights = ckpt / "llm" / "trainable.safetensors"
        if not weights.is_file() and (ckpt / "trainable.safetensors").is_file():
            weights = ckpt / "trainable.safetensors"  # runs written before the one loop
        load_trainable(model, weights)
    model.eval()
    return model, tok, ids, cfg, saved["dataset"]


def llm_evaluate(run: str | Path | dict, out_dir: str | Path | None = None) -> dict:
    """Evaluate a saved run folder, or a config without training (zero-/few-shot).

    Parameters
    ----------
    run:
        A run folder written by :func:`llm_train`, or a dict ``{"dataset": name, "llm": {...}}``
        (mode ``none``: the model as loaded, e.g. LLM-Rec zero-shot).
    out_dir:
        Where to write ``metrics.json`` (default: the run folder; nowhere for a dict).
    """
    if isinstance(run, dict):
        unknown = set(run) - {"dataset", "llm"}
        if unknown or "dataset" not in run:
            raise ConfigError("llm_evaluate config needs keys 'dataset' and 'llm' only")
        cfg = from_dict(LLMRunConfig, {**run.get("llm", {}), "mode": {"mode": "none"}}, "llm")
        prepared = _prepare(run["dataset"], cfg)
        ds = prepared.dataset
        out = Path(out_dir) if out_dir is not None else None
        model, tok, ids, _ = _build_preloaded(cfg, run["dataset"], out, prepared)
    else:
        model, tok, ids, cfg, name = load_llm_run(run)
        prepared = _prepare(name, cfg)
        ds = prepared.dataset
        for kind, idmap in (("user", ds.users), ("item", ds.items)):
            if read_json(Path(run) / f"{kind}_ids.json").get("raw") != idmap.raw:
                raise DataError(
                    f"{run}: the {kind} ids of the reloaded dataset differ from the run's"
                )
        out_dir = out_dir or run
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    builder = PromptBuilder(cfg.prompt, ds.titles(), ids, tok)
    model = ready_for_scoring(model, cfg.compile)  # as the training run scored it
    metrics = evaluate_llm(
        model, tok, builder, prepared, ids, cfg, few_shot_examples(prepared, builder, cfg)
    )
    if out_dir is not None:
        write_json(Path(out_dir) / METRICS_FILE, metrics)
    return metrics
