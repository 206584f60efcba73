"""Loading a run folder for the service: which kind of run it is (`lmrec train`, BDLM, `lmrec llm
train`), its files checked (no pickles), and the :class:`~lmrec.serve.engine.Engine` built for it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from lmrec.errors import DataError
from lmrec.serve.engine import Engine, Reranker
from lmrec.utils.io import read_json

# Files a run folder may hold weights in; anything that unpickles is refused (never loaded).
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz")


def check_run_folder(run_dir: Path) -> None:
    """Refuse a folder that is not a run, or that holds weight files in a pickle format."""
    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: no such run folder")
    if not (run_dir / "config.json").is_file():
        raise DataError(f"{run_dir}: no config.json; is it a run folder of lmrec?")
    bad = sorted(p for p in run_dir.rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES)
    if bad:
        raise DataError(
            f"{bad[0]}: the run folder holds weights in a format that unpickles "
            f"({len(bad)} such file(s)); lmrec serves safetensors and JSON only. Remove them."
        )


def _test_histories(split) -> list[np.ndarray]:
    from lmrec.llm.prompts import histories

    return histories(split.history_before("test"), split.n_users)


def load_engine(
    run_dir: str | Path,
    *,
    side: str | None = None,
    retriever: str | Path | None = None,
    data_dir: str | Path | None = None,
    batch_size: int = 32,
    precision: str = "run",
    compile: bool | None = None,
) -> Engine:
    """An :class:`Engine` over a finished run folder (see the module docstring).

    ``side`` for a BDLM run: ``drs`` (default when the run trained the cascade) or ``llm``.
    ``retriever``: an ``lmrec train`` folder an LLM run retrieves with (default popularity).
    ``precision``: ``run`` (the LLM computes as it did when the run was evaluated, so answers
    equal the offline ones) or ``auto`` / ``fp32`` / ``bf16`` (:mod:`lmrec.utils.precision`).
    ``compile``: run the LLM's decoder layers compiled (:func:`lmrec.llm.scoring.compile_layers`;
    None: as the run's ``llm.compile`` says); the graph is built here, before the engine is
    returned, so no request waits for it.
    """
    run = Path(run_dir)
    check_run_folder(run)
    saved = read_json(run / "config.json")
    if "bdlm" in saved:
        return _load_bdlm(run, side, data_dir, batch_size, precision, compile)
    if "llm" in saved:
        return _load_llm(run, retriever, data_dir, batch_size, precision, compile)
    if "model" in saved:
        from lmrec.train.run import load_domain_run
        from lmrec.train.trainer import history_len

        model, prepared, cfg = load_domain_run(run, data_dir=data_dir)
        split = prepared.split
        return Engine(
            kind="domain",
            side="domain",
            users=prepared.dataset.users,
            items=prepared.dataset.items,
            titles=prepared.dataset.titles(),
            histories=_test_histories(split),
            domain=model,
            max_len=history_len(model, cfg),
            run_dir=run,
        )
    raise DataError(f"{run / 'config.json'}: not a run of lmrec train, lmrec llm train or BDLM")


def _scoring_llm(llm, tokenizer, precision: str, compile: bool):
    """The loaded LLM with ``precision`` (``run``: the run's own), ready for scoring; compiled
    layers are compiled now, on one small batch."""
    from lmrec.llm.modes import ready_for_scoring
    from lmrec.llm.scoring import score_token_candidates

    if precision != "run":
        from lmrec.utils.modules import base_model
        from lmrec.utils.precision import resolve_precision, set_precision

        device = next(llm.parameters()).device
        set_precision(base_model(llm), resolve_precision(precision, device))
    llm = ready_for_scoring(llm, compile)  # scored as the run's evaluation scored it
    if compile:  # one batch of two, one of one (compiling specialises size 1 on its own)
        score_token_candidates(llm, tokenizer, ["warm up the graph", "warm up"], [[0], [1]])
        score_token_candidates(llm, tokenizer, ["warm up"], [[0]])
    return llm


def _load_bdlm(
    run: Path,
    side: str | None,
    data_dir,
    batch_size: int,
    precision: str = "run",
    compile: bool | None = None,
) -> Engine:
    from lmrec.bdlm.setup import load_bdlm_run

    loaded = load_bdlm_run(run, data_dir=data_dir)
    side = side or ("drs" if "drs" in loaded.config.evaluate else "llm")
    if side not in ("llm", "drs"):
        raise DataError(f"side must be llm or drs for a BDLM run, got {side!r}")
    ds = loaded.prepared.dataset
    if compile is None:
        compile = loaded.config.llm.compile
    llm = _scoring_llm(loaded.llm, loaded.tokenizer, precision, compile)
    reranker = Reranker(
        llm, loaded.tokenizer, loaded.builder, loaded.ids, batch_size, loaded.cascade
    )
    return Engine(
        kind="bdlm",
        side=side,
        users=ds.users,
        items=ds.items,
        titles=ds.titles(),
        histories=_test_histories(loaded.prepared.split),
        domain=loaded.cascade.domain,
        max_len=None,
        reranker=reranker,
        run_dir=run,
    )


def _load_llm(
    run: Path,
    retriever,
    data_dir,
    batch_size: int,
    precision: str = "run",
    compile: bool | None = None,
) -> Engine:
    from lmrec.llm.prompts import PromptBuilder
    from lmrec.llm.run import _prepare, load_llm_run
    from lmrec.models import build_model
    from lmrec.train.run import check_id_maps

    model, tok, ids, cfg, dataset = load_llm_run(run)
    if ids is None or cfg.prompt.template("topk").answer != "item_token":
        raise DataError(
            f"{run}: the service re-ranks with item-token scores; this LLM run has no item "
            "tokens (a text-only run)"
        )
    model = _scoring_llm(model, tok, precision, cfg.compile if compile is None else compile)
    if data_dir is not None:
        cfg = dataclasses.replace(cfg, data_dir=str(data_dir))
    prepared = _prepare(dataset, cfg)
    ds, split = prepared.dataset, prepared.split
    check_id_maps(run, ds)
    max_len = None
    if retriever is not None:
        from lmrec.train.run import load_domain_run
        from lmrec.train.trainer import history_len

        domain, other, tcfg = load_domain_run(retriever, data_dir=data_dir)
        if other.dataset.items.raw != ds.items.raw or other.dataset.users.raw != ds.users.raw:
            raise DataError(f"{retriever}: the retriever was trained on other users or items")
        max_len = history_len(domain, tcfg)
    else:
        domain = build_model("popularity", split.n_users, split.n_items)
        domain.prepare(split.train["user"].to_numpy(), split.train["item"].to_numpy())
    builder = PromptBuilder(cfg.prompt, ds.titles(), ids, tok)
    return Engine(
        kind="llm",
        side="llm",
        users=ds.users,
        items=ds.items,
        titles=ds.titles(),
        histories=_test_histories(split),
        domain=domain,
        max_len=max_len,
        reranker=Reranker(model, tok, builder, ids, batch_size),
        run_dir=run,
    )


__all__ = ["PICKLE_SUFFIXES", "check_run_folder", "load_engine"]
