"""Benchmark of the LLM side with SmolLM2-135M on the CPU (or the GPU when there is one).

Measurements, each in its own process (so peak memory and CPU times are that job's alone):

0. ``flops`` (the headline table): top-K scoring in users/s and SFT (full fine-tuning, and
   LoRA in bf16 with its dropout drawn by lmrec and, before, by torch) in samples/s on the
   main job's prompts (ML-100K, pure-id top-20 prompts, 10 history items), in
   fp32 and in bf16 (autocast, where the processor has it), eager and with the decoder layers
   compiled (``llm.compile``), bf16 scoring also as it was before lmrec stored the weights in
   bf16 (autocast casting each weight at every forward), each as min / median / max over
   ``--repeats`` timed passes; the matrix-multiply FLOPs those passes did (counted from the
   model's shapes and each prompt's own token count, so padding is not counted as work), as
   GFLOP/s and as a fraction of the machine's peak, which the same run measures with a
   2048^3 matrix product in each dtype; the first call's seconds (compiling included); peak
   resident memory; user and system CPU seconds. ``--rows flops-lora`` runs only those rows.

   ``rows``: full-fine-tuning and LoRA SFT steps (bf16, compiled layers) with the new id
   tokens' rows looked up beside the vocabulary (:mod:`lmrec.llm.token_rows`) and merged into
   a copy of it (peft's own forward), in turn in one process on the same batches, steady
   state (one optimiser, ``--steps`` rounds of 6 steps).

1. ``score``: top-20 scoring throughput in users/s on ML-100K test candidate sets (the paper's
   prompt with ids and titles). One pass (the 20 item-token log-probs read from one forward
   pass) against ranking by generation: the 20 item tokens generated one after another
   (constrained), and the 20 titles generated as text, one per line (constrained). Target:
   one pass at least 10x faster, with the same top-1 where both give one.
2. ``train``: SFT samples/s of each training mode (full, lora, extra, prompt), batch 8, pure-id
   top-K prompts (the SPEC probe's), a few steps after one warm-up step.
3. ``memory``: peak memory of LoRA training on ML-1M (6,040 + 3,706 = 9,746 new tokens) at
   batch 8 (the paper's prompt with titles). Target: under 6 GB.
4. ``quality`` (opt-in, about an hour on 2 busy cores): on ML-100K's shared candidate sets,
   LoRA SFT (new rows trainable at a higher lr) with pre-loaded id tokens (LightGCN rows,
   orthogonal projection) against zero-shot prompting with the same rows and against the same
   SFT with random rows (w/o PE); pure-id top-K prompts as in the SPEC probe; ``--sft-steps``
   batches of 8 and the first ``--eval-users`` test users. Runs go to ``--out``.

    nice .venv/bin/python bench/bench_llm.py [--threads 2] [--users 16] [--steps 3]
    nice .venv/bin/python bench/bench_llm.py --only quality --out /tmp/llm_quality
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def _setup(threads: int):
    import torch

    torch.set_num_threads(threads)
    return torch


def _builder(
    dataset: str, template: str, max_history: int = 10, interaction: str = "bdlm-interaction"
):
    from lmrec.llm.prompts import PromptBuilder, PromptConfig, histories
    from lmrec.llm.resolve import load_llm
    from lmrec.llm.tokens import add_id_tokens
    from lmrec.protocol.prepare import prepare

    prepared = prepare(dataset)
    ds = prepared.dataset
    model, tok = load_llm("smollm2-135m")
    ids = add_id_tokens(model, tok, ds.n_users, ds.n_items)
    cfg = PromptConfig(topk=template, interaction=interaction, max_history=max_history)
    builder = PromptBuilder(cfg, ds.titles(), ids, tok)
    hist = histories(prepared.split.history_before("test"), ds.n_users)
    return prepared, model, tok, ids, builder, hist


def _test_prompts(template: str, n_users: int):
    """The first ``n_users`` ML-100K test lists as top-K prompts of ``template``."""
    prepared, model, tok, ids, builder, hist = _builder("ml-100k", template)
    cands = prepared.sets[("topk", "test")]
    users, items = cands.users[:n_users], cands.items[:n_users]
    prompts = [
        builder.prompt("topk", int(u), hist[int(u)], candidates=r).text
        for u, r in zip(users, items, strict=True)
    ]
    return model, tok, builder, prompts, items, ids.token_ids("item", items)


def worker_score(args) -> dict:
    _setup(args.threads)
    from lmrec.llm.generate import generate_ranking, generate_text_ranking
    from lmrec.llm.scoring import score_token_candidates

    model, tok, builder, prompts, items, tok_ids = _test_prompts("bdlm-topk", args.users)
    score_token_candidates(model, tok, prompts[:2], tok_ids[:2])  # warm-up
    t0 = time.perf_counter()
    one = score_token_candidates(model, tok, prompts, tok_ids, batch_size=8).numpy()
    t_one = time.perf_counter() - t0
    n_gen = max(2, args.users // 4)
    t0 = time.perf_counter()
    gen = generate_ranking(model, tok, prompts[:n_gen], tok_ids[:n_gen], batch_size=4)
    t_gen = time.perf_counter() - t0
    titles = [[builder.titles[int(j)] for j in row] for row in items[:n_gen]]
    plain = [
        p.removesuffix("Answer:") + "Answer (one title per line, best first):\n"
        for p in prompts[:n_gen]
    ]
    t0 = time.perf_counter()
    text = generate_text_ranking(model, tok, plain, titles, batch_size=4)
    t_text = time.perf_counter() - t0
    top1 = one.argmax(1)
    return {
        "prompt_tokens": float(sum(len(tok(p)["input_ids"]) for p in prompts) / len(prompts)),
        "one_pass_users_s": len(prompts) / t_one,
        "gen_tokens_users_s": n_gen / t_gen,
        "gen_text_users_s": n_gen / t_text,
        "top1_agree_tokens": float((gen[:, 0] == top1[:n_gen]).mean()),
        "top1_agree_text": float((text[:, 0] == top1[:n_gen]).mean()),
        "text_complete": float((text >= 0).all(1).mean()),
    }


def decoder_flops(config, vocab: int, lengths, kept) -> float:
    """Matrix-multiply FLOPs of one forward of a Llama-style decoder over unpadded rows.

    Per token: the block weights (q, k, v, o, gate, up, down) at 2 FLOPs per weight; per row of
    n tokens: attention scores and their weighted sum, 2 * 2 * n^2/2 * width per layer
    (causal); per kept position: the vocabulary projection.
    """
    d, layers = config.hidden_size, config.num_hidden_layers
    head = getattr(config, "head_dim", None) or d // config.num_attention_heads
    dq, dkv = config.num_attention_heads * head, config.num_key_value_heads * head
    per_token = 2 * layers * (d * dq + 2 * d * dkv + dq * d + 3 * d * config.intermediate_size)
    total = 0.0
    for n, k in zip(lengths, kept, strict=True):
        total += per_token * n + layers * 2 * n * n * dq + 2 * d * vocab * k
    return total


def _usage() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def _faults() -> int:
    """Minor page faults of this process so far (memory the kernel had to map in)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def worker_peak(args) -> dict:
    """Best GFLOP/s of a 2048^3 matrix product in fp32 and bf16 on ``--threads`` threads."""
    torch = _setup(args.threads)
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.randn(2048, 2048, dtype=dtype)
        b = torch.randn(2048, 2048, dtype=dtype)
        a @ b  # warm-up
        best = 0.0
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(3):
                a @ b
            best = max(best, 3 * 2 * 2048**3 / (time.perf_counter() - t0) / 1e9)
        out[name] = best
    return out


def _precision(model, name: str):
    """``name`` (fp32 or bf16) as lmrec runs it: :func:`lmrec.utils.precision.set_precision`."""
    from lmrec.utils.precision import resolve_precision, set_precision

    set_precision(model, resolve_precision(name, next(model.parameters()).device))


def _measured(rates, flop_per_item: float, lengths, usage0, model) -> dict:
    """One flops job's record: rates, work per item, CPU time and minor page faults since
    ``usage0`` (user s, system s, faults), peak memory."""
    from lmrec.train.loop import peak_memory_mb

    u1, s1 = _usage()
    return {
        "rates": rates,
        "gflop_per_item": flop_per_item / 1e9,
        "mean_tokens": sum(lengths) / len(lengths),
        "user_s": u1 - usage0[0],
        "sys_s": s1 - usage0[1],
        "minor_faults": _faults() - usage0[2],
        "peak_mb": peak_memory_mb(next(model.parameters()).device),
    }


def worker_flops_score(args) -> dict:
    """One-pass top-K scoring of the first ``--users`` test users, ``--repeats`` times."""
    _setup(args.threads)
    from lmrec.llm.scoring import score_token_candidates

    model, tok, _, prompts, _, tok_ids = _test_prompts("id-topk", args.users)
    _precision(model, args.precision)
    model.requires_grad_(False)
    lengths = [len(x) for x in tok(prompts)["input_ids"]]
    vocab = model.get_output_embeddings().weight.shape[0]
    flops = decoder_flops(model.config, vocab, lengths, [1] * len(prompts))
    t0 = time.perf_counter()
    if args.variant != "autocast":  # as lmrec scores after training
        from lmrec.llm.modes import ready_for_scoring

        model = ready_for_scoring(model, compile=args.variant == "compiled")
    score_token_candidates(model, tok, prompts[:16], tok_ids[:16], batch_size=16)  # warm-up
    warm_s = time.perf_counter() - t0
    u0, s0, f0 = *_usage(), _faults()
    rates = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        score_token_candidates(model, tok, prompts, tok_ids, batch_size=16)
        rates.append(len(prompts) / (time.perf_counter() - t0))
    return {
        **_measured(rates, flops / len(prompts), lengths, (u0, s0, f0), model),
        "warm_s": warm_s,
    }


def _sft_model(args, mode: str):
    """The main job's SFT setup: SmolLM2 with ML-100K's id tokens in ``mode`` at
    ``--precision``, and its pure-id top-20 training examples. ``--variant`` ending in
    ``torch-dropout`` puts back peft's own ``nn.Dropout`` (LoRA as before lmrec's)."""
    import torch

    from lmrec.llm.modes import ModeConfig, apply_mode
    from lmrec.llm.sft import ExampleConfig, training_examples

    prepared, model, tok, ids, builder, _ = _builder("ml-100k", "id-topk")
    _precision(model, args.precision)
    examples = training_examples(
        prepared.split, builder, ExampleConfig(tasks=["topk"], n_candidates=20)
    )
    model = apply_mode(model, ModeConfig(mode=mode), ids, tok)
    if args.variant.endswith("torch-dropout"):
        for module in model.modules():
            drops = getattr(module, "lora_dropout", None)
            if isinstance(drops, torch.nn.ModuleDict):
                for name, drop in list(drops.items()):
                    drops[name] = torch.nn.Dropout(drop.p)
    return model, tok, examples


def _sft_start(args, model):
    """Compiled layers where ``--variant`` says so, train mode, and lmrec's optimiser as
    ``train_sft`` makes it for batches of 16."""
    from lmrec.llm.finetune import FinetuneConfig, LLMOptimizer

    if args.variant.startswith("compiled"):
        from lmrec.llm.scoring import compile_layers

        compile_layers(model)
    model.train()
    return LLMOptimizer(model, FinetuneConfig(batch_size=16, warmup_steps=1, max_length=256))


def worker_flops_train(args) -> dict:
    """SFT steps of 16 prompts (the main job's batch), ``--repeats`` times ``--steps`` steps:
    full fine-tuning (``flops-train``) or LoRA (``flops-lora``, lmrec's defaults: r 8, all
    linear layers, dropout 0.05).

    Steady state, as a run of many steps trains: one optimiser (lmrec's, as ``train_sft`` makes
    it) for all steps, the first (untimed) step creating its state; each step the loss and
    update ``train_sft`` takes (``batch_loss``, then clipping and AdamW); a second untimed step
    on another batch (the first to meet a new prompt length) before the timed ones. Until
    2026-12-01 each repeat was a ``train_sft`` call of its own, whose first step made a new
    optimiser and its 1 GB of state (full fine-tuning), a quarter of the timed steps at
    ``--steps 4``.
    """
    _setup(args.threads)
    from lmrec.llm.finetune import batch_loss
    from lmrec.llm.sft import SFTCollator, encode_example

    lora = args.mode == "flops-lora"
    model, tok, examples = _sft_model(args, "lora" if lora else "full")
    batch, steps = 16, args.steps
    collate = SFTCollator(tok.pad_token_id)
    encoded = [encode_example(tok, p, 256) for p in examples[: batch * (2 + args.repeats * steps)]]
    batches = [collate(encoded[i : i + batch]) for i in range(0, len(encoded), batch)]
    t0 = time.perf_counter()
    opt = _sft_start(args, model)
    opt.step(batch_loss(model, batches[0]), 0)
    warm_s = time.perf_counter() - t0
    opt.step(batch_loss(model, batches[1]), 1)  # a second length: dynamic shapes settle
    u0, s0, f0 = *_usage(), _faults()
    rates, flops = [], 0.0
    vocab = model.get_output_embeddings().weight.shape[0]
    # forward + backward: the activations' gradients (1x the forward) and, in full fine-tuning,
    # the weights' (another 1x); LoRA's own products are under 1% and not counted
    passes = 2 if lora else 3
    for r in range(args.repeats):
        t0 = time.perf_counter()
        for k in range(2 + r * steps, 2 + (r + 1) * steps):
            opt.step(batch_loss(model, batches[k]), k)
        rates.append(batch * steps / (time.perf_counter() - t0))
        part = encoded[batch * (2 + r * steps) : batch * (2 + (r + 1) * steps)]
        lengths = [len(e["input_ids"]) for e in part]
        answers = [sum(1 for t in e["labels"] if t != -100) for e in part]
        flops += passes * decoder_flops(model.config, vocab, lengths, answers)
    per_item = flops / (batch * steps * args.repeats)
    return {**_measured(rates, per_item, lengths, (u0, s0, f0), model), "warm_s": warm_s}


def worker_rows(args) -> dict:
    """Steady-state SFT steps with the id-token rows looked up (lmrec) and merged (peft).

    One process, one optimiser, the same 6 batches of 16 prompts; the two forwards take steps in
    turn (``--steps`` rounds of 6 each, after one untimed round), so both meet the same load and
    the same batches. ``--worker rows-full`` or ``rows-lora``; bf16 with ``--precision``,
    compiled layers with ``--variant compiled``.
    """
    _setup(args.threads)
    from lmrec.llm.finetune import batch_loss
    from lmrec.llm.sft import SFTCollator, encode_example
    from lmrec.llm.token_rows import use_row_lookup

    model, tok, examples = _sft_model(args, args.mode.removeprefix("rows-"))
    opt = _sft_start(args, model)
    collate = SFTCollator(tok.pad_token_id)
    layers = [m for m in model.modules() if "forward_adapters" in m.__dict__]
    batches = [
        collate([encode_example(tok, p, 256) for p in examples[16 * i : 16 * (i + 1)]])
        for i in range(6)
    ]
    times: dict[str, list[float]] = {"merged": [], "lookup": []}
    cpu: dict[str, list[float]] = {"merged": [0.0, 0.0], "lookup": [0.0, 0.0]}
    step = 0
    for r in range(args.steps + 1):
        for b in batches:
            for how in ("merged", "lookup"):
                for layer in layers:
                    layer.__dict__.pop("forward_adapters", None)
                if how == "lookup":
                    use_row_lookup(model)
                u0, t0 = _usage(), time.perf_counter()
                opt.step(batch_loss(model, b), step)
                dt, u1 = time.perf_counter() - t0, _usage()
                step += 1
                if r:
                    times[how].append(dt)
                    cpu[how] = [cpu[how][0] + u1[0] - u0[0], cpu[how][1] + u1[1] - u0[1]]
    return {"times": times, "cpu": cpu}


def rows_table(args) -> None:
    """Token rows merged (peft) against looked up (lmrec), steady-state steps (``worker_rows``)."""
    print(
        f"\n## SFT steps with the id-token rows merged (peft) or looked up (lmrec), "
        f"{args.threads} threads, bf16 compiled layers, {args.steps} rounds of 6 steps each"
    )
    print(
        "| mode | rows | step s, min / median / max | samples/s (median) | speed-up "
        "| user CPU s | system CPU s |"
    )
    print("|---|---|---|---|---|---|---|")
    for mode in ("rows-full", "rows-lora"):
        r = run_worker(mode, args, precision="bf16", variant="compiled")
        if "error" in r:
            print(f"| {mode} | error: {r['error']} | | | | | |")
            continue
        base = statistics.median(r["times"]["merged"])
        for how in ("merged", "lookup"):
            t = r["times"][how]
            med = statistics.median(t)
            user, system = r["cpu"][how]
            print(
                f"| {mode.removeprefix('rows-')} | {how} | {min(t):.3f} / {med:.3f} / "
                f"{max(t):.3f} | {16 / med:.2f} | {base / med:.2f}x | {user:.1f} | "
                f"{system:.1f} |",
                flush=True,
            )


def worker_yesno(args) -> dict:
    """P(Yes) scoring with and without running each user's common prompt beginning once."""
    _setup(args.threads)
    from lmrec.llm.scoring import score_yes_no

    prepared, model, tok, _, builder, hist = _builder("ml-100k", "id-topk", 10, "id-interaction")
    _precision(model, args.precision)
    out = {}
    for name, (stage_task, per_user) in {
        "2 a user (the interaction sets)": (("interaction", "test"), 2),
        "20 a user (a top-K list as interaction prompts)": (("topk", "test"), 20),
    }.items():
        sets = prepared.sets[stage_task]
        n = max(1, args.users * 2 // per_user)
        prompts = [
            builder.prompt("interaction", int(u), hist[int(u)], target=int(j)).text
            for u, row in zip(sets.users[:n], sets.items[:n], strict=True)
            for j in row
        ]
        score_yes_no(model, tok, prompts[: per_user * 2], batch_size=16)  # warm-up
        rates, scores = {}, {}
        for share in (False, True):
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                scores[share] = score_yes_no(model, tok, prompts, batch_size=16, share_prefix=share)
                times.append(time.perf_counter() - t0)
            rates[share] = [len(prompts) / t for t in times]
        out[name] = {
            "prompts": len(prompts),
            "plain": rates[False],
            "shared": rates[True],
            "max_diff": float((scores[True] - scores[False]).abs().max()),
        }
    return out


def yesno_table(args) -> None:
    r = run_worker("yesno", args, precision=args.precision)
    print(f"\n## P(Yes) scoring, ML-100K test users, id prompts, {args.precision}, batch 16")
    if "error" in r:
        print("error:", r["error"])
        return
    print(
        "| interaction prompts | prompts | plain, prompts/s (min / median / max) "
        "| shared beginning, prompts/s | speed-up (medians) | largest score difference |"
    )
    print("|---|---|---|---|---|---|")
    for name, row in r.items():
        plain, shared = statistics.median(row["plain"]), statistics.median(row["shared"])
        print(
            f"| {name} | {row['prompts']} | {min(row['plain']):.1f} / {plain:.1f} / "
            f"{max(row['plain']):.1f} | {min(row['shared']):.1f} / {shared:.1f} / "
            f"{max(row['shared']):.1f} | {shared / plain:.2f}x | {row['max_diff']:.1e} |"
        )


def flops_table(args) -> None:
    """The headline table (module docstring, part 0)."""
    from lmrec.utils.precision import cpu_has_bf16

    peak = run_worker("peak", args)
    if "error" in peak:
        print("error:", peak["error"])
        return
    print(
        f"\n## Scoring and training against the machine's peak ({args.threads} threads, "
        f"bf16 in hardware: {cpu_has_bf16()})"
    )
    print(
        f"Measured peak (2048^3 matrix product, best of 5): fp32 {peak['fp32']:.0f} GFLOP/s, "
        f"bf16 {peak['bf16']:.0f} GFLOP/s. {args.repeats} timed passes per row: "
        f"scoring {args.users} test users, training {args.steps} steps of 16 prompts."
    )
    print(
        "| job | precision | how | tokens / prompt | GFLOP / prompt | first call s "
        "| per second, min / median / max | GFLOP/s (median) | of peak | peak RSS (MB) "
        "| user CPU s | system CPU s | system share |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for job, variant, precision in FLOPS_ROWS:
        if args.rows and job not in args.rows.split(","):
            continue
        r = run_worker(job, args, precision=precision, variant=variant)
        name = JOBS[job]
        unit = "users" if job == "flops-score" else "samples"
        how = VARIANTS[variant]
        if "error" in r:
            print(f"| {name} | {precision} | {how} | error: {r['error']} |")
            continue
        rates = r["rates"]
        med = statistics.median(rates)
        gflops = med * r["gflop_per_item"]
        cpu = r["user_s"] + r["sys_s"]
        print(
            f"| {name} | {precision} | {how} | {r['mean_tokens']:.0f} | "
            f"{r['gflop_per_item']:.1f} | {r['warm_s']:.1f} | "
            f"{min(rates):.2f} / {med:.2f} / {max(rates):.2f} {unit} | {gflops:.0f} | "
            f"{gflops / peak[precision]:.0%} | {r['peak_mb']:.0f} | {r['user_s']:.1f} | "
            f"{r['sys_s']:.1f} | {r['sys_s'] / cpu:.1%} |",
            flush=True,
        )


# (job, how, precision) of the headline table; "autocast" is scoring as lmrec did before
# it stored the weights cast (each forward casting every weight again)
FLOPS_ROWS = (
    ("flops-score", "stored", "fp32"),
    ("flops-score", "compiled", "fp32"),
    ("flops-score", "autocast", "bf16"),
    ("flops-score", "stored", "bf16"),
    ("flops-score", "compiled", "bf16"),
    ("flops-train", "stored", "fp32"),
    ("flops-train", "compiled", "fp32"),
    ("flops-train", "stored", "bf16"),
    ("flops-train", "compiled", "bf16"),
    ("flops-lora", "torch-dropout", "bf16"),
    ("flops-lora", "stored", "bf16"),
    ("flops-lora", "compiled-torch-dropout", "bf16"),
    ("flops-lora", "compiled", "bf16"),
)
JOBS = {
    "flops-score": "top-20 scoring, one pass",
    "flops-train": "SFT, full fine-tuning",
    "flops-lora": "SFT, LoRA",
}
VARIANTS = {
    "autocast": "eager, autocast casts the weights each forward",
    "stored": "eager (lmrec's default)",
    "compiled": "compiled layers (`llm.compile`)",
    "torch-dropout": "eager, LoRA dropout drawn by torch (before)",
    "compiled-torch-dropout": "compiled, LoRA dropout drawn in the graph (before)",
}


def worker_train(args) -> dict:
    torch = _setup(args.threads)
    from lmrec.llm.finetune import FinetuneConfig, train_sft
    from lmrec.llm.modes import ModeConfig, apply_mode
    from lmrec.llm.sft import ExampleConfig, training_examples
    from lmrec.train.loop import peak_memory_mb

    dataset = "ml-1m" if args.mode == "memory" else "ml-100k"
    template = "bdlm-topk" if args.mode == "memory" else "id-topk"
    prepared, model, tok, ids, builder, _ = _builder(dataset, template)
    examples = training_examples(prepared.split, builder, ExampleConfig(tasks=["topk"]))
    mode = "lora" if args.mode == "memory" else args.mode
    torch.manual_seed(0)
    model = apply_mode(model, ModeConfig(mode=mode), ids, tok)
    setup_mb = peak_memory_mb(next(model.parameters()).device)  # data + model, before training
    cfg = {"batch_size": 8, "warmup_steps": 1, "gradient_checkpointing": args.checkpointing}
    train_sft(
        model, tok, examples[:8], FinetuneConfig(max_steps=1, **cfg), progress=False
    )  # warm-up
    stats = train_sft(
        model, tok, examples[8:], FinetuneConfig(max_steps=args.steps, **cfg), progress=False
    )
    return {
        "dataset": dataset,
        "new_tokens": ids.end_id - ids.first_id,
        "samples_s": stats["samples_per_s"],
        "peak_mb": peak_memory_mb(next(model.parameters()).device),
        "setup_mb": setup_mb,
        "device": str(next(model.parameters()).device),
    }


def quality(args) -> None:
    """Pre-loaded SFT vs zero-shot vs random rows on ML-100K (see the module docstring)."""
    from pathlib import Path

    from lmrec.llm.run import llm_train
    from lmrec.train.run import train_run

    _setup(args.threads)
    root = Path(args.out)
    lgcn = root / "lightgcn"
    if not (lgcn / "metrics.json").is_file():
        train_run(
            "lightgcn",
            "ml-100k",
            out_dir=lgcn,
            train_config={
                "epochs": 60,
                "patience": 5,
                "num_threads": args.threads,
                "valid_metric": "topk/HR@1",
                "progress": False,
            },
        )
    domain = json.loads((lgcn / "metrics.json").read_text())
    common = {
        "prompt": {"topk": "id-topk", "interaction": "id-interaction", "max_history": 5},
        "tasks": ["topk"],
        "examples": {"tasks": ["topk"]},
        "mode": {"lora_r": 16, "lora_alpha": 32},
        "train": {"batch_size": 8, "lr": 5e-4, "lr_tokens": 1e-3, "max_steps": args.sft_steps},
        "eval_limit": args.eval_users,
        "num_threads": args.threads,
    }
    pre = {"init": "domain", "domain_run": str(lgcn)}
    runs = {
        "zero-shot": ("zero-shot, pre-loaded rows", "none", {**common, "preload": pre}),
        "sft-preload": ("SFT (LoRA + rows), pre-loaded rows", "lora", {**common, "preload": pre}),
        "sft-random": ("SFT (LoRA + rows), random rows (w/o PE)", "lora", common),
    }
    print(
        f"\n## ML-100K test (first {args.eval_users} users), 20 candidates (shared sets), "
        f"SmolLM2-135M, pure-id prompts, SFT {args.sft_steps} steps x 8 prompts"
    )
    print("| method | HR@1 | HR@2 | NDCG@20 | train s |")
    print("|---|---|---|---|---|")
    print(
        f"| LightGCN (the pre-loading source) | {domain['topk/HR@1']:.3f} | "
        f"{domain['topk/HR@2']:.3f} | {domain['topk/NDCG@20']:.3f} | - |"
    )
    for folder, (name, mode, cfg) in runs.items():
        m = llm_train("ml-100k", mode, root / folder, cfg)
        print(
            f"| {name} | {m['topk/HR@1']:.3f} | {m['topk/HR@2']:.3f} | "
            f"{m['topk/NDCG@20']:.3f} | {m.get('train/seconds', 0.0):.0f} |",
            flush=True,
        )


def run_worker(
    job: str, args, checkpointing: bool = False, precision: str = "fp32", variant: str = "stored"
) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        job,
        "--threads",
        str(args.threads),
        "--users",
        str(args.users),
        "--steps",
        str(args.steps),
        "--repeats",
        str(args.repeats),
        "--precision",
        precision,
        "--variant",
        variant,
        *(["--checkpointing"] if checkpointing else []),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        lines = [ln for ln in out.stderr.splitlines() if "Error" in ln] or ["exit code"]
        return {"error": f"{lines[-1]} (exit {out.returncode})"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--users", type=int, default=16)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--worker", default=None)
    p.add_argument("--checkpointing", action="store_true", help="gradient checkpointing")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per row (flops)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument(
        "--variant",
        default="stored",
        choices=tuple(VARIANTS),
        help="flops workers: scoring as before (autocast), as lmrec does, or compiled",
    )
    p.add_argument("--only", default="flops,rows,yesno,score,train,memory")
    p.add_argument(
        "--rows", default="", help="flops: only these jobs (flops-score,flops-train,flops-lora)"
    )
    p.add_argument("--out", default="/tmp/llm_quality")
    p.add_argument("--sft-steps", type=int, default=60)
    p.add_argument("--eval-users", type=int, default=300)
    args = p.parse_args()
    if args.worker:
        args.mode = args.worker
        workers = {
            "peak": worker_peak,
            "flops-score": worker_flops_score,
            "flops-train": worker_flops_train,
            "flops-lora": worker_flops_train,
            "rows-full": worker_rows,
            "rows-lora": worker_rows,
            "yesno": worker_yesno,
            "score": worker_score,
        }
        print(json.dumps(workers.get(args.worker, worker_train)(args)))
        return
    jobs = args.only.split(",")
    if "flops" in jobs:
        flops_table(args)
    if "rows" in jobs:
        rows_table(args)
    if "yesno" in jobs:
        yesno_table(args)
    if "quality" in jobs:
        quality(args)
    if "score" in jobs:
        r = run_worker("score", args)
        print("\n## top-20 scoring, SmolLM2-135M, ML-100K test, paper prompt (ids + titles)")
        if "error" in r:
            print("error:", r["error"])
        else:
            print(f"mean prompt tokens: {r['prompt_tokens']:.0f}")
            print("| method | users/s | speed-up of one pass | top-1 same as one pass |")
            print("|---|---|---|---|")
            print(f"| one pass (item-token logits) | {r['one_pass_users_s']:.2f} | 1x | - |")
            print(
                f"| generate 20 item tokens | {r['gen_tokens_users_s']:.3f} | "
                f"{r['one_pass_users_s'] / r['gen_tokens_users_s']:.1f}x | "
                f"{r['top1_agree_tokens']:.2f} |"
            )
            print(
                f"| generate 20 titles as text | {r['gen_text_users_s']:.3f} | "
                f"{r['one_pass_users_s'] / r['gen_text_users_s']:.1f}x | "
                f"{r['top1_agree_text']:.2f} "
                f"(complete lists: {r['text_complete']:.2f}) |"
            )
    if "train" in jobs:
        print("\n## SFT throughput, SmolLM2-135M, ML-100K pure-id top-K prompts, batch 8")
        print("| mode | samples/s | peak memory (MB) | device |")
        print("|---|---|---|---|")
        for mode in ("full", "lora", "extra", "prompt"):
            r = run_worker(mode, args)
            if "error" in r:
                print(f"| {mode} | error: {r['error']} | | |")
            else:
                print(f"| {mode} | {r['samples_s']:.2f} | {r['peak_mb']:.0f} | {r['device']} |")
    if "memory" in jobs:
        print("\n## LoRA training memory, ML-1M (paper prompt with titles), batch 8")
        print(
            "| gradient checkpointing | new tokens | peak memory (MB) | of which before training "
            "| < 6 GB | samples/s |"
        )
        print("|---|---|---|---|---|---|")
        for ckpt in (False, True):
            r = run_worker("memory", args, checkpointing=ckpt)
            if "error" in r:
                print(f"| {ckpt} | error: {r['error']} | | | | |")
                continue
            ok = "yes" if r["peak_mb"] < 6 * 1024 else "NO"
            print(
                f"| {ckpt} | {r['new_tokens']} | {r['peak_mb']:.0f} ({r['device']}) | "
                f"{r['setup_mb']:.0f} | {ok} | "
                f"{r['samples_s']:.3f} |"
            )


if __name__ == "__main__":
    main()
