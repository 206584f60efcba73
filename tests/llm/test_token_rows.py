import copy

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from lmrec.llm.finetune import batch_loss
from lmrec.llm.modes import ModeConfig, apply_mode
from lmrec.llm.prompts import Prompt
from lmrec.llm.sft import SFTCollator, encode_example
from lmrec.llm.token_rows import use_row_lookup
from lmrec.llm.tokens import add_id_tokens
from lmrec.utils.precision import set_precision

EXAMPLES = [
    Prompt("User <u_0> has watched <i_1>. Candidates: <i_0>, <i_2>. Answer:", "<i_2>"),
    Prompt("User <u_1> has watched <i_2>, <i_0>. Will he watch <i_1>? Answer:", " Yes"),
    Prompt("User <u_1> has watched <i_0>. Candidates: <i_1>, <i_2>. Answer:", "<i_1>"),
]


def _layers(model):
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

    return [m for m in model.modules() if isinstance(m, TrainableTokensLayer)]


def _peft_forward(model):
    """Back to peft's own forward (the merged copy of the vocabulary)."""
    for layer in _layers(model):
        layer.__dict__.pop("forward_adapters", None)


def _loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(0)  # LoRA's dropout draws the same masks in both runs
    loss = batch_loss(model, batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def _model(tiny, mode):
    model, tok = tiny
    ids = add_id_tokens(model, tok, 2, 3)
    model = apply_mode(model, ModeConfig(mode=mode), ids, tok)
    batch = SFTCollator(tok.pad_token_id)([encode_example(tok, p) for p in EXAMPLES])
    return model, ids, batch


@pytest.mark.parametrize("mode", ["full", "lora", "extra"])
def test_row_lookup_gives_the_merged_weights_loss_and_gradients(tiny, mode):
    model, ids, batch = _model(tiny, mode)
    assert len(_layers(model)) >= 1
    assert all("forward_adapters" in layer.__dict__ for layer in _layers(model))
    rows = next(p for n, p in model.named_parameters() if "trainable_tokens_delta" in n)
    with torch.no_grad():  # trained rows unlike the rows they replace
        rows.add_(torch.randn_like(rows))
    loss, grads = _loss_and_grads(model, batch)
    _peft_forward(model)
    want, want_grads = _loss_and_grads(model, batch)
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-6)
    assert grads.keys() == want_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, want_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    # the id rows get their gradient; the base matrix none at their rows (they are overridden)
    assert grads[next(n for n in grads if "trainable_tokens_delta" in n)].abs().sum() > 0
    base = [g for n, g in grads.items() if "embed_tokens.base_layer" in n]
    assert len(base) == (mode == "full")  # the vocabulary trains in full fine-tuning only
    for g in base:
        assert g[ids.first_id : ids.end_id].abs().sum() == 0
        assert g[: ids.first_id].abs().sum() > 0


def test_row_lookup_under_bf16_autocast_matches_the_merged_weights(tiny):
    model, _, batch = _model(tiny, "full")
    set_precision(model, torch.bfloat16)
    loss, grads = _loss_and_grads(model, batch)
    _peft_forward(model)
    want, want_grads = _loss_and_grads(model, batch)
    torch.testing.assert_close(loss, want, rtol=2e-2, atol=1e-2)
    for name, grad in grads.items():
        scale = want_grads[name].abs().max().clamp_min(1e-6)
        assert (grad - want_grads[name]).abs().max() / scale < 5e-2, name


class _BigTensors(TorchDispatchMode):
    """Records the operators that write a new tensor as large as the vocabulary matrix."""

    def __init__(self, numel: int) -> None:
        super().__init__()
        self.numel, self.ops = numel, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor) and out.numel() >= self.numel:
            inputs = [a.untyped_storage().data_ptr() for a in args if isinstance(a, torch.Tensor)]
            if out.untyped_storage().data_ptr() not in inputs:  # views (``t``) copy nothing
                self.ops.append(str(func))
        return out


def test_the_forward_makes_no_copy_of_the_vocabulary(tiny):
    model, _, batch = _model(tiny, "full")
    weight = model.get_input_embeddings().base_layer.weight
    with torch.no_grad(), _BigTensors(weight.numel()) as seen:
        batch_loss(model, batch)
    assert seen.ops == []
    _peft_forward(model)  # what the lookup saves: peft merges a copy for embedding and head
    with torch.no_grad(), _BigTensors(weight.numel()) as seen:
        batch_loss(model, batch)
    assert seen.ops.count("aten.index_copy.default") == 2


def test_merged_or_disabled_adapters_and_a_padding_row_among_the_ids_use_pefts_forward(tiny):
    model, ids, batch = _model(tiny, "extra")
    emb = model.get_input_embeddings()
    x = batch["input_ids"]
    with torch.no_grad():
        rows = next(p for n, p in model.named_parameters() if "trainable_tokens_delta" in n)
        rows.add_(1.0)
        looked_up = emb(x)
        with model.disable_adapter():
            plain = emb(x)
        assert not torch.equal(looked_up, plain)
        torch.testing.assert_close(plain, emb.base_layer(x))
        emb.base_layer.padding_idx = ids.first_id  # a padding row among the trained rows
        assert torch.equal(emb(x), type(emb).forward_adapters(emb, x, emb.active_adapters))
        emb.base_layer.padding_idx = None
        emb.merge()
        assert torch.equal(emb(x), emb.base_layer(x))


def test_a_deep_copy_looks_up_its_own_rows(tiny):
    model, ids, batch = _model(tiny, "extra")
    twin = copy.deepcopy(model)
    for layer in _layers(twin):
        assert layer.forward_adapters.__self__ is layer
    with torch.no_grad():
        rows = next(p for n, p in twin.named_parameters() if "trainable_tokens_delta" in n)
        rows.add_(1.0)
        token = torch.tensor([[ids.first_id]])
        assert not torch.equal(
            model.get_input_embeddings()(token), twin.get_input_embeddings()(token)
        )


def test_use_row_lookup_counts_the_layers_it_gives_the_lookup(tiny):
    model, _, _ = _model(tiny, "full")
    assert use_row_lookup(model) == len(_layers(model)) >= 1
    assert use_row_lookup(torch.nn.Linear(2, 2)) == 0


def test_a_frozen_head_is_cast_once_and_again_after_a_write(tiny):
    model, _, batch = _model(tiny, "lora")
    set_precision(model, torch.bfloat16)
    head = model.get_output_embeddings().token_adapter  # peft's layer in its wrapper
    model.eval()
    with torch.no_grad():
        first = batch_loss(model, batch)
        kept = head.__dict__["_lmrec_cast"][1]
        assert kept.dtype == torch.bfloat16
        assert torch.equal(kept, head.base_layer.weight.to(torch.bfloat16))
        assert torch.equal(batch_loss(model, batch), first)
        assert head.__dict__["_lmrec_cast"][1] is kept  # not cast again
        _peft_forward(model)
        assert torch.equal(batch_loss(model, batch), first)  # autocast's own cast, same loss
        use_row_lookup(model)
        head.base_layer.weight.mul_(2.0)  # the tied matrix changes: the head casts it again
        moved = batch_loss(model, batch)
        assert head.__dict__["_lmrec_cast"][1] is not kept
        _peft_forward(model)
        assert torch.equal(batch_loss(model, batch), moved)
