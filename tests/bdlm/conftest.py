"""Tiny BDLM pieces: a 2-layer random Llama (width 48), a LightGCN of the same width, 4 users."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from lmrec.bdlm.aligned import AlignedBatches
from lmrec.bdlm.cascade import Cascade, CascadeConfig
from lmrec.bdlm.config import JointConfig
from lmrec.bdlm.features import FeatureCache
from lmrec.bdlm.joint import JointSides, JointTrainer
from lmrec.bdlm.sharing import SharingModule
from lmrec.llm.finetune import FinetuneConfig
from lmrec.llm.modes import ModeConfig, apply_mode
from lmrec.llm.prompts import PromptBuilder, PromptConfig
from lmrec.llm.resolve import load_llm
from lmrec.llm.sft import ExampleConfig
from lmrec.llm.tokens import add_id_tokens, set_id_token_rows
from lmrec.models import LightGCN, LightGCNConfig
from lmrec.protocol.split import Split

WIDTH = 48  # the tiny Llama's hidden size
TITLES = [f"Movie {j}" for j in range(10)]


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


def tiny_split() -> Split:
    """4 users, 10 items; train histories u0 [0 1 2 3], u1 [4 5 6], u2 [1 7 8], u3 [2 9 0]."""
    users = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    items = [0, 1, 2, 3, 4, 5, 6, 1, 7, 8, 2, 9, 0]
    times = [1, 2, 3, 4, 1, 2, 3, 1, 2, 3, 1, 2, 3]
    train = pd.DataFrame(
        {"user": users, "item": items, "timestamp": times, "rating": np.ones(13, np.float32)}
    )
    valid = pd.DataFrame({"user": [0, 1], "item": [4, 7], "timestamp": [5, 4]})
    test = pd.DataFrame({"user": [0, 1], "item": [5, 8], "timestamp": [6, 5]})
    return Split(train, valid, test, n_users=4, n_items=10)


@pytest.fixture
def split() -> Split:
    return tiny_split()


def build_sides(
    split: Split, *, cascade: CascadeConfig | None = None, write_rate: float = 1.0
) -> JointSides:
    """Fresh, identically initialised sides: pre-loaded tiny Llama (LoRA), LightGCN, M."""
    torch.manual_seed(0)
    domain = LightGCN(split.n_users, split.n_items, LightGCNConfig(dim=WIDTH, n_layers=1))
    domain.set_graph(split.train["user"].to_numpy(), split.train["item"].to_numpy())
    with torch.no_grad():
        p_u, q_i = (t.detach().clone() for t in domain.user_item_embeddings())
    llm, tok = load_llm("tiny-llama", device="cpu")
    ids = add_id_tokens(llm, tok, split.n_users, split.n_items)
    scale = 0.5  # pre-loaded rows are the domain rows / scale, as run_bdlm does
    set_id_token_rows(llm, ids, "user", p_u / scale)
    set_id_token_rows(llm, ids, "item", q_i / scale)
    torch.manual_seed(0)
    llm = apply_mode(llm, ModeConfig(mode="lora"), ids, tok)
    prompts = PromptConfig(topk="id-topk", interaction="id-interaction", max_history=3)
    builder = PromptBuilder(prompts, TITLES, ids, tok)
    sharing = SharingModule.from_tables(p_u, q_i, llm_scale=scale, write_rate=write_rate)
    return JointSides(
        llm, tok, ids, builder, Cascade(domain, WIDTH, cascade), sharing, FeatureCache()
    )


def build_trainer(split: Split, out_dir=None, sides: JointSides | None = None, **joint):
    """A JointTrainer over the tiny split (2 rows per step, 4 steps per epoch)."""
    sides = sides or build_sides(split)
    cfg = JointConfig(**{"batch_size": 2, "rows_per_epoch": 8, "progress": False, **joint})
    batches = AlignedBatches(split, cfg.batch_size, cfg.seed, cfg.rows_per_epoch)
    llm_train = FinetuneConfig(lr=1e-2, lr_tokens=1e-1, warmup_steps=1)
    examples = ExampleConfig(n_candidates=4, negatives="uniform")
    return JointTrainer(sides, batches, cfg, llm_train, examples, out_dir)


@pytest.fixture
def make_sides():
    """``make_sides(split, cascade=None, write_rate=1.0)``: see :func:`build_sides`."""
    return build_sides


@pytest.fixture
def make_trainer():
    """``make_trainer(split, out_dir=None, sides=None, **joint)``: see :func:`build_trainer`."""
    return build_trainer
