"""What a BDLM run is built from, for training and for reloading a finished run.

- :func:`domain_model`: the trained domain model of ``bdlm.domain`` (an ``lmrec train`` folder,
  trained first when the run has none yet).
- :func:`preloaded_sides`: the LLM with one token per user and item, its rows pre-loaded from
  the domain model (BDLM 4.1.2; steps 2-5 of :mod:`lmrec.bdlm.run`), and M.
- :func:`load_bdlm_run`: a finished run folder back in memory (the LLM at its last checkpoint,
  the cascade with its refitted head), for ``lmrec serve`` and re-scoring. It rebuilds the
  sides with the same two functions the run used, so the reloaded model is the trained one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmrec.bdlm.sharing import SharingModule
from lmrec.errors import ConfigError, DataError
from lmrec.llm.run import build_llm
from lmrec.utils.io import read_json


def preloaded_sides(cfg, dataset: str, prepared, out: Path):
    """``(llm, tokenizer, ids, domain, sharing, record)`` of a BDLM config on ``prepared``.

    ``record`` is what ``preload.json`` holds (norms, scale, projection). ``domain`` is the
    trained domain model the rows come from (trained into ``out/domain`` when needed).
    """
    ds = prepared.dataset
    # the LLM, with random user/item rows for now
    llm, tok, ids, _ = build_llm(
        cfg.llm, ds.n_users, ds.n_items, ds.titles(), rows_seed=cfg.llm.seed
    )
    width = int(llm.get_input_embeddings().weight.shape[1])
    device = next(llm.parameters()).device

    domain = domain_model(cfg, dataset, prepared, out / "domain", width).to(device)
    with torch.no_grad():
        p_u, q_i = (t.detach().float().cpu() for t in domain.user_item_embeddings())
    if cfg.projection != "copy" and p_u.shape[1] > width:
        raise ConfigError(
            f"bdlm.projection {cfg.projection} maps a narrower domain model into the LLM; the "
            f"domain model is {p_u.shape[1]} wide and the LLM {width}"
        )
    sharing, record = None, {"id_tokens": ids is not None}
    if ids is not None:
        from lmrec.llm.tokens import preload_id_tokens

        # the one pre-loading of LLM runs too; BDLM scales copied rows like projected ones so
        # one scale serves M, and w/o PE (preload: false) keeps random rows but needs the map
        done = preload_id_tokens(
            llm,
            tok,
            ids,
            p_u,
            q_i,
            cfg.projection,
            ds.titles(),
            seed=cfg.llm.seed,
            scale_copy=True,
            write=cfg.preload,
        )
        record.update(done.record, init="domain" if cfg.preload else "random")
        sharing = SharingModule.from_tables(
            p_u,
            q_i,
            done.scale,
            cfg.joint.write_rate,
            cfg.joint.mutual_reduction,
            done.projection,
            done.offset,
        ).to(device)

    return llm, tok, ids, domain, sharing, record


def domain_model(cfg, dataset: str, prepared, folder: Path, width: int):
    """The trained domain model of ``cfg.domain``, of width ``width`` (trained if needed)."""
    from lmrec.train.run import domain_model_in

    spec = cfg.domain
    dim = spec.model_config.get("dim", width)
    if dim != width and cfg.projection == "copy":
        raise ConfigError(
            f"bdlm.domain.model_config.dim is {dim} but the LLM is {width} wide; M needs one "
            f"width on both sides (BDLM sets the domain model's width to the LLM's): set dim "
            f"to {width} or leave it out, or set bdlm.projection: orthogonal"
        )
    run = Path(spec.run) if spec.run else folder
    train = (
        {}
        if spec.run
        else {  # a folder named by the config is only read
            "model": spec.model,
            "model_config": {**spec.model_config, "dim": dim},
            "train_config": {"seed": cfg.joint.seed, **spec.train_config},
            "data_dir": cfg.data_dir,
        }
    )
    model = domain_model_in(run, dataset, prepared, **train)
    if getattr(model.config, "dim", width) != width and cfg.projection == "copy":
        raise ConfigError(
            f"{run}: the domain model is {model.config.dim} wide but the LLM {width}; train it "
            f"with model_config.dim = {width}, or set bdlm.projection: orthogonal"
        )
    return model


@dataclass
class BDLMRun:
    """A finished BDLM run in memory (see :func:`load_bdlm_run`)."""

    config: Any  # BDLMConfig
    dataset: str
    prepared: Any
    llm: Any
    tokenizer: Any
    ids: Any
    builder: Any
    cascade: Any


def load_bdlm_run(run_dir: str | Path, data_dir: str | Path | None = None) -> BDLMRun:
    """Reload a finished BDLM run folder: the LLM at its newest checkpoint, the cascade as saved.

    The data, split and the domain model are rebuilt from ``config.json`` (the cache makes that
    quick); the id maps must equal the saved ones, else the weights no longer line up.
    """
    from lmrec.bdlm.cascade import Cascade
    from lmrec.bdlm.config import BDLMConfig, saved_llm_side
    from lmrec.bdlm.run import CONFIG_FILE
    from lmrec.config import from_dict
    from lmrec.llm.modes import apply_mode
    from lmrec.llm.prompts import PromptBuilder
    from lmrec.protocol.prepare import prepare
    from lmrec.train.checkpoint import load_weights
    from lmrec.train.loop import latest_checkpoint, load_trainable
    from lmrec.train.run import check_id_maps

    run = Path(run_dir)
    saved = read_json(run / CONFIG_FILE)
    if "bdlm" not in saved or "dataset" not in saved:
        raise DataError(f"{run / CONFIG_FILE}: not a BDLM run (no 'bdlm' and 'dataset' keys)")
    section = dict(saved["bdlm"])
    section["llm"] = saved_llm_side(section.get("llm") or {})
    cfg = from_dict(BDLMConfig, section, f"{run / CONFIG_FILE}: bdlm")
    cfg.domain.run = _domain_folder(cfg.domain.run, run)
    if not (run / "drs.safetensors").is_file():
        raise DataError(f"{run}: no drs.safetensors; the run has not finished training")
    prepared = prepare(
        saved["dataset"],
        data_dir=data_dir if data_dir is not None else cfg.data_dir,
        preprocess=cfg.preprocess or None,
        candidates=cfg.candidates or None,
    )
    check_id_maps(run, prepared.dataset)
    llm, tok, ids, domain, _, _ = preloaded_sides(cfg, saved["dataset"], prepared, run)
    ds = prepared.dataset
    builder = PromptBuilder(cfg.llm.prompt, ds.titles(), ids, tok)
    torch.manual_seed(cfg.joint.seed)
    llm = apply_mode(llm, cfg.llm.mode, ids, tok)
    ckpt = latest_checkpoint(run)
    if ckpt is not None and cfg.joint.epochs > 0:
        load_trainable(llm, ckpt / "llm" / "trainable.safetensors")
    width = int(llm.get_input_embeddings().weight.shape[1])
    cascade = Cascade(domain, width, cfg.cascade).to(next(llm.parameters()).device)
    load_weights(cascade, run / "drs.safetensors")
    llm.eval()
    cascade.eval()
    return BDLMRun(cfg, saved["dataset"], prepared, llm, tok, ids, builder, cascade)


def _domain_folder(given: str | None, run: Path) -> str | None:
    """``bdlm.domain.run`` as saved (relative to where the run started, e.g. an experiment's
    ``runs/...``), found from here or from a folder above the run folder."""
    if given is None or Path(given).is_absolute() or Path(given).is_dir():
        return given
    for parent in run.resolve().parents:
        if (parent / given).is_dir():
            return str(parent / given)
    raise DataError(
        f"{run}: its domain model folder {given!r} is not found from here nor above the run"
    )


__all__ = ["BDLMRun", "domain_model", "load_bdlm_run", "preloaded_sides"]
