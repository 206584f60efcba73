import math

import pytest
import torch

from lmrec.llm import dropout as dropout_mod
from lmrec.llm.dropout import KeepMaskDropout, keep_mask, use_keep_mask_dropout
from lmrec.llm.modes import ModeConfig, apply_mode
from lmrec.llm.tokens import add_id_tokens


@pytest.mark.parametrize("p", [0.05, 0.2, 0.5])
def test_each_element_is_dropped_independently_with_probability_p(p):
    torch.manual_seed(0)
    masks = torch.stack(
        [keep_mask(torch.empty(37, 1001), torch.tensor(p)) for _ in range(40)]
    )  # odd sizes
    assert masks.dtype == torch.bool and masks.shape == (40, 37, 1001)
    dropped = ~masks.view(40, -1)
    n = dropped.numel()
    sd = math.sqrt(p * (1 - p) / n)
    assert abs(dropped.float().mean().item() - p) < 5 * sd
    # neighbours independent: both dropped with probability p^2
    both = (dropped[:, 1:] & dropped[:, :-1]).float().mean().item()
    assert abs(both - p * p) < 5 * math.sqrt(p * p / n)
    # the same rate at the beginning and at the end of the mask (no drift along the gaps)
    head, tail = dropped[:, :2000].float().mean().item(), dropped[:, -2000:].float().mean().item()
    assert abs(head - tail) < 6 * math.sqrt(2 * p * (1 - p) / 80000)
    # the same mask again under the same seed
    torch.manual_seed(0)
    assert torch.equal(keep_mask(torch.empty(37, 1001), torch.tensor(p)), masks[0])


def test_gap_sampling_covers_a_mask_longer_than_its_first_draws(monkeypatch):
    # the first batch of gaps runs out before the end: the rest is drawn from where it stopped
    calls = []

    def few(rest, p):
        calls.append(rest)
        return max(1, int(rest * p / 3))

    monkeypatch.setattr(dropout_mod, "_draws", few)
    torch.manual_seed(1)
    dropped = ~keep_mask(torch.empty(200_000), torch.tensor(0.05))
    assert abs(dropped.float().mean().item() - 0.05) < 5 * math.sqrt(0.05 * 0.95 / 200_000)
    assert dropped[-20_000:].any() and len(calls) > 3


def test_the_module_scales_kept_inputs_and_passes_their_gradient():
    torch.manual_seed(0)
    drop = KeepMaskDropout(0.1).train()
    x = torch.randn(64, 300, requires_grad=True)
    y = drop(x)
    kept = y != 0
    assert torch.allclose(y[kept], x[kept] / 0.9)
    y.sum().backward()
    assert torch.equal(x.grad != 0, kept) and torch.allclose(x.grad[kept], torch.tensor(1 / 0.9))
    assert torch.equal(drop.eval()(x), x)
    assert torch.equal(KeepMaskDropout(0.0).train()(x), x)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        KeepMaskDropout(1.0)


def test_compiled_graphs_draw_one_mask_per_adapter():
    # a custom operator tagged non-deterministic: never merged with its twin on the same input
    torch.manual_seed(0)
    drops = torch.nn.ModuleList(KeepMaskDropout(0.3).train() for _ in range(3))

    def f(x):
        return [d(x) for d in drops]

    x = torch.randn(8, 16)
    outs = torch.compile(f, dynamic=True)(x)
    kept = [o != 0 for o in outs]
    assert not torch.equal(kept[0], kept[1]) and not torch.equal(kept[1], kept[2])
    for o, k in zip(outs, kept, strict=True):
        assert torch.allclose(o[k], x[k] / 0.7)
    # the backward pass uses the forward's mask, not a fresh draw
    x.requires_grad_(True)
    y = torch.compile(lambda v: drops[0](v) * 2.0, dynamic=True)(x)
    y.sum().backward()
    assert torch.equal(x.grad != 0, y != 0)


def test_lora_layers_get_the_module_with_their_rate(tiny):
    model, tok = tiny
    ids = add_id_tokens(model, tok, 2, 3)
    lora = apply_mode(model, ModeConfig(mode="lora", lora_dropout=0.05), ids, tok)
    drops = [m for m in lora.modules() if isinstance(m, KeepMaskDropout)]
    assert drops and all(d.p == 0.05 for d in drops)
    assert not any(type(m) is torch.nn.Dropout for m in lora.modules())
    assert use_keep_mask_dropout(lora) == 0  # nothing left to replace


_CACHED_RUN = """
import sys, torch
import lmrec.llm.dropout as dropout
from lmrec.llm.finetune import enable_checkpointing
from lmrec.llm.modes import ModeConfig, apply_mode
from lmrec.llm.resolve import load_llm
from lmrec.llm.scoring import compile_layers
from lmrec.llm.tokens import add_id_tokens

model, tok = load_llm("tiny-llama", device="cpu")
ids = add_id_tokens(model, tok, 2, 3)
model = apply_mode(model, ModeConfig(mode="lora", lora_dropout=float(sys.argv[1])), ids, tok)
assert compile_layers(model)
enable_checkpointing(model)  # as in training: checkpointing around compiled layers
seen, draws = [], dropout._draws
dropout._draws = lambda rest, p: seen.append(p) or draws(rest, p)
model.train()
prompts = ["User <u_0> has watched <i_1>. Answer:", "User <u_1> liked <i_2>"]
batch = tok(prompts, return_tensors="pt", padding=True)
model(**batch, labels=batch["input_ids"], use_cache=False).loss.backward()
print(len(seen), *sorted(set(round(p, 6) for p in seen)))
"""


def test_a_compiled_graph_cached_for_one_rate_does_not_serve_another(tmp_path):
    # PyTorch caches compiled graphs on disk; the rate must be an input of the graph, not a
    # constant that a later process with another lora_dropout would reuse (it was, under
    # activation checkpointing, while the rate was a float argument)
    import os
    import subprocess
    import sys

    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "cache")}
    for p in ("0.1", "0.2"):
        out = subprocess.run(
            [sys.executable, "-c", _CACHED_RUN, p], env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr[-2000:]
        calls, *rates = out.stdout.split()
        # 2 layers x 7 adapters, forward and recomputation; every draw at this run's rate
        assert int(calls) == 28 and rates == [p], out.stdout


def test_compiled_checkpointed_lora_draws_the_masks_eager_lora_draws(tiny):
    # the same seed gives the same masks to the same adapters: compiled graphs call the
    # operator in the eager order, save its masks for the backward pass, and activation
    # checkpointing's recomputation replays them
    import copy

    from lmrec.llm.finetune import enable_checkpointing
    from lmrec.llm.scoring import compile_layers

    model, tok = tiny
    ids = add_id_tokens(model, tok, 3, 5)
    model = apply_mode(model, ModeConfig(mode="lora", lora_dropout=0.1), ids, tok)
    with torch.no_grad():  # adapters that are not zero, so every mask shows in the loss
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    eager = copy.deepcopy(model)
    assert compile_layers(model)
    enable_checkpointing(model)
    prompts = ["User <u_0> has watched <i_1>, <i_2>. Answer:", "User <u_1> liked <i_0>. <i_2>"]
    batch = tok(prompts, return_tensors="pt", padding=True)
    labels = torch.full_like(batch["input_ids"], -100)
    labels[:, -3:] = batch["input_ids"][:, -3:]
    losses, grads = [], []
    for m in (model, eager):
        m.train()
        torch.manual_seed(5)
        loss = m(**batch, labels=labels, use_cache=False).loss
        loss.backward()
        losses.append(loss.item())
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters() if p.grad is not None]))
    torch.manual_seed(6)  # another seed, other masks: the loss moves
    other = eager(**batch, labels=labels, use_cache=False).loss.item()
    assert losses[0] == pytest.approx(losses[1], abs=1e-5) and abs(other - losses[1]) > 1e-4
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)


def test_a_transposed_input_compiles_to_the_eager_mask():
    # the operator's fake output must have the real mask's (contiguous) layout, whatever the
    # input's strides; copying them (empty_like) failed the compiled call's stride check
    drop = KeepMaskDropout(0.3).train()
    x = torch.randn(64, 48)
    compiled = torch.compile(lambda v: drop(v.t()) * 2.0, dynamic=True)
    torch.manual_seed(0)
    y = compiled(x)
    torch.manual_seed(0)
    assert torch.equal(y, drop(x.t()) * 2.0)
