"""SASRec: self-attentive sequential recommendation (Kang & McAuley, ICDM 2018).

A causal transformer over the user's item sequence; the hidden state at position t scores the
item at t + 1 by a dot product with the (shared) item embedding table. Trained with binary
cross-entropy on the next item against one sampled negative per position, as in the paper.
Follows the reference implementation: item embeddings scaled by sqrt(d), learned positions,
a timeline mask that zeroes padded positions after every sub-layer, pre-norm queries with
the residual added to them, a point-wise feed-forward network and a final layer norm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmrec.errors import ConfigError
from lmrec.models._checks import check_non_negative, check_positive, check_probability
from lmrec.models._sequence import NextItemRecommender, last_items, positions


@dataclass
class SASRecConfig:
    """SASRec hyper-parameters (the paper's ML-1M setting, with RecBole's width 64).

    Attributes
    ----------
    dim:
        Width of item and position embeddings and of the transformer (BDLM: LLM hidden size).
    max_len:
        Longest history read; older items are dropped (200 for ML-1M in the paper).
    n_blocks, n_heads:
        Transformer blocks and attention heads per block (``dim % n_heads == 0``).
    dropout:
        Dropout on embeddings, attention weights and the feed-forward network.
    l2_emb:
        L2 weight on the item embedding table added to the loss (the reference uses 0).
    """

    dim: int = 64
    max_len: int = 200
    n_blocks: int = 2
    n_heads: int = 1
    dropout: float = 0.2
    l2_emb: float = 0.0

    def __post_init__(self) -> None:
        check_positive(self, "dim", "max_len", "n_blocks", "n_heads")
        check_probability(self, "dropout")
        check_non_negative(self, "l2_emb")
        if self.dim % self.n_heads:
            raise ConfigError(
                f"SASRecConfig.dim ({self.dim}) must be divisible by n_heads ({self.n_heads})"
            )


class _Attention(nn.Module):
    """Multi-head attention whose queries and keys/values come from different tensors."""

    def __init__(self, dim: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, queries: Tensor, keys: Tensor, mask: Tensor) -> Tensor:
        B, L, D = queries.shape
        H = self.n_heads
        q = self.q(queries).view(B, L, H, D // H).transpose(1, 2)  # (B, H, L, D/H)
        k, v = self.kv(keys).view(B, L, 2, H, D // H).permute(2, 0, 3, 1, 4)  # (B, H, L, D/H)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        return self.out(y.transpose(1, 2).reshape(B, L, D))


class _Block(nn.Module):
    """One SASRec block: x <- LN(x); x <- q + Attn(q, x); x <- LN(x); x <- x + FFN(x)."""

    def __init__(self, dim: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim, eps=1e-8)
        self.attn = _Attention(dim, n_heads, dropout)
        self.ffn_norm = nn.LayerNorm(dim, eps=1e-8)
        self.ffn = nn.Sequential(
            nn.Linear(dim, dim),
            nn.Dropout(dropout),
            nn.ReLU(),
            nn.Linear(dim, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor, mask: Tensor, keep: Tensor) -> Tensor:
        q = self.attn_norm(x)
        # As in the reference: the normalised queries carry the residual, keys/values are raw.
        x = q + self.attn(q, x, mask)
        x = self.ffn_norm(x)
        x = x + self.ffn(x)
        return x * keep  # timeline mask: padded positions stay zero


class SASRec(NextItemRecommender):
    """Causal self-attention over item sequences; ``batch_kind = "sequence"``.

    Item rows ``0..n_items-1`` are items; row ``n_items`` is PAD (kept at zero). Users are
    ignored: a user is their history.
    """

    def __init__(self, n_users: int, n_items: int, config: SASRecConfig | None = None) -> None:
        super().__init__(n_users, n_items)
        cfg = self.config = config or SASRecConfig()
        self.max_len = cfg.max_len
        self.pad = n_items
        self.item_emb = nn.Embedding(n_items + 1, cfg.dim, padding_idx=self.pad)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.dim)
        self.emb_drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(
            _Block(cfg.dim, cfg.n_heads, cfg.dropout) for _ in range(cfg.n_blocks)
        )
        self.final_norm = nn.LayerNorm(cfg.dim, eps=1e-8)
        # The reference initialises every matrix (embeddings included) Xavier-normal.
        for name, param in self.named_parameters():
            if param.dim() == 2:
                nn.init.xavier_normal_(param)
            elif name.endswith("bias"):
                nn.init.zeros_(param)
        with torch.no_grad():
            self.item_emb.weight[self.pad].zero_()

    def encode(self, seq: Tensor) -> Tensor:
        """Hidden states (B, L, d) of a left-padded (B, L) item sequence; L <= max_len."""
        B, L = seq.shape
        keep = (seq != self.pad).unsqueeze(-1)  # (B, L, 1)
        x = self.item_emb(seq) * math.sqrt(self.config.dim)
        x = x + self.pos_emb(positions(L, self.max_len, seq.device))
        x = self.emb_drop(x) * keep
        # Causal, and no attending to padding, except a position to itself so that a padded
        # row (whose every key is padding) still has one key; its output is zeroed anyway.
        causal = torch.ones(L, L, dtype=torch.bool, device=seq.device).tril()
        diagonal = torch.eye(L, dtype=torch.bool, device=seq.device)
        mask = (causal & keep.transpose(1, 2)) | diagonal  # (B, L, L): query row, key column
        mask = mask.unsqueeze(1)  # (B, 1, L, L), shared by the heads
        for block in self.blocks:
            x = block(x, mask, keep)
        return self.final_norm(x)

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        seq = last_items(batch["seq"], self.max_len, self.pad, "seq")
        L = seq.shape[1]
        pos, neg = batch["pos"][:, -L:], batch["neg"][:, -L:]
        h = self.encode(seq)  # (B, L, d)
        target = pos != self.pad  # positions with a next item
        h = h[target]  # (M, d)
        pos_logits = (h * self.item_emb(pos[target])).sum(-1)  # (M,)
        neg_logits = (h * self.item_emb(neg[target])).sum(-1)
        loss = F.binary_cross_entropy_with_logits(
            pos_logits, torch.ones_like(pos_logits)
        ) + F.binary_cross_entropy_with_logits(neg_logits, torch.zeros_like(neg_logits))
        if self.config.l2_emb:
            loss = loss + self.config.l2_emb * self.item_emb.weight.pow(2).sum()
        return loss
