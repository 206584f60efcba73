"""The one contract test, run over every registered trainable model on tiny planted data.

CF models (pairwise, pointwise) see a block structure: the users of a block like that block's
items, and each user's one withheld block item must come out top-1 among the items they have
not seen. Sequential models see sequences that follow ``item t -> item t + 1 (mod n)``, and the
item after each history must come out top-1 among the items not in it (evaluation masks seen
items too). Each model trains a few full-batch steps, in a plain loop, as the trainer would.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from lmrec.models import MODELS, build_model

TRAINABLE = [name for name in MODELS.names() if MODELS.get(name).model.batch_kind != "none"]

N_BLOCKS, BLOCK = 3, 4  # CF data: 3 blocks of 4 users x 4 items
CF_USERS = CF_ITEMS = N_BLOCKS * BLOCK
SEQ_USERS, SEQ_ITEMS, SEQ_LEN = 50, 10, 7  # sequence data; SEQ_LEN is batch width and max_len

# name -> (tiny config, Adam learning rate, steps): enough to learn the planted pattern on every
# seed tried (6 each), and small enough for the whole file to run in seconds. BERT4Rec's cloze
# task learns slowest; a wider init gets it going within the budget.
SETUP: dict[str, tuple[dict, float, int]] = {
    "mf": ({"dim": 8}, 0.01, 150),
    "lightgcn": ({"dim": 8, "n_layers": 2}, 0.01, 150),
    "gmf": ({"dim": 8}, 0.01, 150),
    "neumf": ({"dim": 8, "mlp_dim": 8, "mlp_hidden": [16, 8]}, 0.005, 150),
    "sasrec": ({"dim": 16, "max_len": SEQ_LEN}, 0.02, 150),
    "gru4rec": ({"dim": 16, "hidden_size": 16, "max_len": SEQ_LEN}, 0.02, 150),
    "bert4rec": (
        {"dim": 16, "max_len": SEQ_LEN, "mask_prob": 0.3, "dropout": 0.0, "init_std": 0.1},
        0.005,
        200,
    ),
    # built from features (an LLM's, in real runs): here one-hot rows, so ids are all it knows
    "gpt4sm": ({"dim": 8, "hidden": 16, "dropout": 0.0}, 0.01, 150),
}


def model_inputs(name: str) -> dict[str, torch.Tensor]:
    """The tensors a model is built from besides its config (``ModelEntry.inputs``)."""
    if not MODELS.get(name).inputs:
        return {}
    one_hot = torch.eye(CF_USERS + CF_ITEMS)
    return {"user_feats": one_hot[:CF_USERS], "item_feats": one_hot[CF_USERS:]}


# --- block data for CF models ----------------------------------------------------------------
def block_data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train pairs (users, items) and each user's withheld item, shape (CF_USERS,)."""
    users, items, withheld = [], [], []
    for u in range(CF_USERS):
        start = (u // BLOCK) * BLOCK
        held = start + u % BLOCK
        withheld.append(held)
        for i in range(start, start + BLOCK):
            if i != held:
                users.append(u)
                items.append(i)
    return np.array(users), np.array(items), np.array(withheld)


def sample_unseen(rng: np.random.Generator, users: np.ndarray) -> np.ndarray:
    """A uniform item per user among those not in train (the withheld one included)."""
    train_users, train_items, _ = block_data()
    seen = np.zeros((CF_USERS, CF_ITEMS), dtype=bool)
    seen[train_users, train_items] = True
    neg = rng.integers(0, CF_ITEMS, len(users))
    while (bad := seen[users, neg]).any():
        neg[bad] = rng.integers(0, CF_ITEMS, int(bad.sum()))
    return neg


def cf_batch(kind: str, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    users, items, _ = block_data()
    if kind == "pairwise":
        batch = {"users": users, "pos": items, "neg": sample_unseen(rng, users)}
    else:  # pointwise: each positive with 4 sampled negatives, as in NCF
        neg_users = np.repeat(users, 4)
        batch = {
            "users": np.concatenate([users, neg_users]),
            "items": np.concatenate([items, sample_unseen(rng, neg_users)]),
        }
    out = {k: torch.from_numpy(v).long() for k, v in batch.items()}
    if kind == "pointwise":
        out["labels"] = torch.cat([torch.ones(len(users)), torch.zeros(4 * len(users))])
    return out


# --- cyclic sequences for sequential models --------------------------------------------------
def sequences() -> list[list[int]]:
    """User u's items s, s+1, ... (mod n): every start s with every length 3..7.

    The longest history fills the whole ``max_len`` window, so the positions scoring reads
    are positions training has seen.
    """
    return [[(u + t) % SEQ_ITEMS for t in range(3 + u // SEQ_ITEMS)] for u in range(SEQ_USERS)]


def left_pad(rows: list[list[int]]) -> torch.Tensor:
    return torch.tensor([[SEQ_ITEMS] * (SEQ_LEN - len(r)) + r for r in rows])  # PAD = n_items


def seq_batch(rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """The documented "sequence" layout: seq, next item pos, a negative per position."""
    seqs = sequences()
    seq, pos = left_pad([s[:-1] for s in seqs]), left_pad([s[1:] for s in seqs])
    seen = torch.zeros(SEQ_USERS, SEQ_ITEMS + 1, dtype=torch.bool)
    seen.scatter_(1, left_pad(seqs), True)
    neg = torch.from_numpy(rng.integers(0, SEQ_ITEMS, pos.shape))
    while (bad := seen.gather(1, neg)).any():
        neg[bad] = torch.from_numpy(rng.integers(0, SEQ_ITEMS, int(bad.sum())))
    neg[pos == SEQ_ITEMS] = SEQ_ITEMS
    return {"users": torch.arange(SEQ_USERS), "seq": seq, "pos": pos, "neg": neg}


# --- helpers -----------------------------------------------------------------------------------
def is_sequential(name: str) -> bool:
    return MODELS.get(name).model.batch_kind == "sequence"


def make(name: str):
    """A fresh model, prepared with its train data, and its batch maker ``rng -> batch``."""
    config = SETUP[name][0]
    if is_sequential(name):
        model = build_model(name, SEQ_USERS, SEQ_ITEMS, config)
        seqs = sequences()
        model.prepare(np.repeat(np.arange(SEQ_USERS), [len(s) for s in seqs]), np.concatenate(seqs))
        return model, seq_batch
    users, items, _ = block_data()
    model = build_model(name, CF_USERS, CF_ITEMS, config, **model_inputs(name))
    model.prepare(users, items)
    kind = model.batch_kind
    return model, lambda rng: cf_batch(kind, rng)


def eval_inputs(name: str) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Users, histories (None for CF), a (B, N) mask of seen items, and the expected top-1."""
    if is_sequential(name):
        seqs = sequences()
        history = left_pad(seqs)
        seen = torch.zeros(SEQ_USERS, SEQ_ITEMS + 1, dtype=torch.bool).scatter_(1, history, True)
        expected = torch.tensor([(s[-1] + 1) % SEQ_ITEMS for s in seqs])
        return torch.arange(SEQ_USERS), history, seen[:, :SEQ_ITEMS], expected
    users, items, withheld = block_data()
    seen = torch.zeros(CF_USERS, CF_ITEMS, dtype=torch.bool)
    seen[torch.from_numpy(users), torch.from_numpy(items)] = True
    return torch.arange(CF_USERS), None, seen, torch.from_numpy(withheld)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: more threads only add overhead, and contention on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=TRAINABLE)
def trained(request):
    """(name, trained model in eval mode, fixed batch, loss on it before training, losses)."""
    name = request.param
    _, lr, steps = SETUP[name]
    torch.manual_seed(0)
    model, batches = make(name)
    fixed = batches(np.random.default_rng(123))
    torch.manual_seed(1)  # the same dropout and cloze masks for the loss before and after
    before = model.loss(fixed).item()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(steps):
        loss = model.loss(batches(rng))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    return name, model, fixed, before, losses


# --- the contract ------------------------------------------------------------------------------
def test_every_trainable_model_has_a_setup():
    assert set(TRAINABLE) == set(SETUP), "give each registered trainable model a SETUP entry"


def test_loss_is_finite_and_falls(trained):
    name, model, fixed, before, losses = trained
    assert np.isfinite(losses).all(), f"{name}: non-finite loss while training"
    model.train()
    torch.manual_seed(1)
    after = model.loss(fixed).item()
    model.eval()
    assert after < 0.5 * before, f"{name}: loss {before:.4f} -> {after:.4f} did not fall"


def test_planted_pattern_is_recovered(trained):
    name, model, *_ = trained
    users, history, seen, expected = eval_inputs(name)
    with torch.no_grad():
        scores = model.full_scores(users, history).masked_fill(seen, -torch.inf)
    top1 = scores.argmax(1)
    assert torch.equal(top1, expected), f"{name}: top-1 {top1.tolist()} != {expected.tolist()}"


def test_score_has_shape_b_c_and_equals_gathered_full_scores(trained):
    name, model, *_ = trained
    users, history, _, _ = eval_inputs(name)
    gen = torch.Generator().manual_seed(0)
    items = torch.randint(0, model.n_items, (len(users), 5), generator=gen)  # (B, C)
    with torch.no_grad():
        full = model.full_scores(users, history)
        some = model.score(users, items, history)
    assert full.shape == (len(users), model.n_items)
    assert some.shape == (len(users), 5)
    torch.testing.assert_close(some, full.gather(1, items), rtol=1e-5, atol=1e-5)


def test_user_item_embeddings_have_the_model_width(trained):
    name, model, *_ = trained
    user_table, item_table = model.user_item_embeddings()
    dim = SETUP[name][0]["dim"]
    assert item_table.shape == (model.n_items, dim)
    if is_sequential(name):
        assert user_table is None
    else:
        assert user_table is not None and user_table.shape == (model.n_users, dim)


def test_weights_round_trip_through_safetensors(trained, tmp_path):
    name, model, *_ = trained
    path = str(tmp_path / "model.safetensors")
    save_file(model.state_dict(), path)
    again, _ = make(name)  # fresh weights, prepared with the same train data
    again.load_state_dict(load_file(path))
    again.eval()
    users, history, _, _ = eval_inputs(name)
    with torch.no_grad():
        expected = model.full_scores(users, history)
        torch.testing.assert_close(again.full_scores(users, history), expected)
