"""BERT4Rec: a bidirectional transformer trained by the cloze task (Sun et al., CIKM 2019).

Training masks random items of the sequence with a [MASK] token and predicts them from both
sides (cross-entropy over all items); scoring appends [MASK] after the history and reads the
prediction there. The output layer is tied to the item embeddings, with a dense + GELU +
layer-norm transform and a per-item bias, as in the paper and RecBole.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmrec.errors import ConfigError
from lmrec.models._checks import check_positive, check_probability
from lmrec.models._sequence import last_items, positions
from lmrec.models.base import Recommender


@dataclass
class BERT4RecConfig:
    """BERT4Rec hyper-parameters (the paper's ML-1M setting).

    Attributes
    ----------
    dim:
        Width of embeddings and transformer (BDLM sets it to the LLM hidden size).
    max_len:
        Longest sequence read, [MASK] included when scoring (200 for ML-1M in the paper).
    n_layers, n_heads:
        Transformer layers and attention heads (``dim % n_heads == 0``).
    dropout:
        Dropout on embeddings, attention weights and sub-layer outputs.
    mask_prob:
        Probability that a training item is replaced by [MASK] (0.2 for ML-1M).
    init_std:
        Standard deviation of the normal initialisation of all matrices (BERT's 0.02).
    """

    dim: int = 64
    max_len: int = 200
    n_layers: int = 2
    n_heads: int = 2
    dropout: float = 0.1
    mask_prob: float = 0.2
    init_std: float = 0.02

    def __post_init__(self) -> None:
        check_positive(self, "dim", "max_len", "n_layers", "n_heads")
        check_probability(self, "dropout")
        if not 0 < self.mask_prob < 1:
            raise ConfigError(f"BERT4RecConfig.mask_prob must be in (0, 1), got {self.mask_prob!r}")
        if self.dim % self.n_heads:
            raise ConfigError(
                f"BERT4RecConfig.dim ({self.dim}) must be divisible by n_heads ({self.n_heads})"
            )
        if self.max_len < 2:
            raise ConfigError("BERT4RecConfig.max_len must be >= 2: one item plus [MASK]")


class _Layer(nn.Module):
    """A post-norm transformer layer as in BERT: x <- LN(x + Attn(x)); x <- LN(x + FFN(x))."""

    def __init__(self, dim: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attn_out = nn.Linear(dim, dim)
        self.attn_norm = nn.LayerNorm(dim, eps=1e-12)
        self.ffn = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.ffn_norm = nn.LayerNorm(dim, eps=1e-12)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        B, L, D = x.shape
        H = self.n_heads
        q, k, v = self.qkv(x).view(B, L, 3, H, D // H).permute(2, 0, 3, 1, 4)  # (B, H, L, D/H)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        x = self.attn_norm(x + self.drop(self.attn_out(y.transpose(1, 2).reshape(B, L, D))))
        return self.ffn_norm(x + self.drop(self.ffn(x)))


class BERT4Rec(Recommender):
    """Bidirectional cloze model; ``batch_kind = "sequence"`` (it masks ``seq`` itself).

    Item rows ``0..n_items-1`` are items, row ``n_items`` is PAD and row ``n_items + 1`` is
    [MASK]. A training row is the whole train sequence: ``seq`` plus its final next item
    ``pos[:, -1]``. ``neg`` is not used. Users are ignored.
    """

    batch_kind = "sequence"

    def __init__(self, n_users: int, n_items: int, config: BERT4RecConfig | None = None) -> None:
        super().__init__(n_users, n_items)
        cfg = self.config = config or BERT4RecConfig()
        self.max_len = cfg.max_len
        self.pad, self.mask_token = n_items, n_items + 1
        self.item_emb = nn.Embedding(n_items + 2, cfg.dim, padding_idx=self.pad)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.dim)
        self.emb_norm = nn.LayerNorm(cfg.dim, eps=1e-12)
        self.emb_drop = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(
            _Layer(cfg.dim, cfg.n_heads, cfg.dropout) for _ in range(cfg.n_layers)
        )
        self.head = nn.Sequential(
            nn.Linear(cfg.dim, cfg.dim), nn.GELU(), nn.LayerNorm(cfg.dim, eps=1e-12)
        )
        self.out_bias = nn.Parameter(torch.zeros(n_items))
        for name, param in self.named_parameters():
            if param.dim() == 2:
                nn.init.normal_(param, std=cfg.init_std)
            elif name.endswith("bias"):
                nn.init.zeros_(param)
        with torch.no_grad():
            self.item_emb.weight[self.pad].zero_()

    def encode(self, seq: Tensor) -> Tensor:
        """Hidden states (B, L, d) of a left-padded (B, L) sequence that may hold [MASK]."""
        B, L = seq.shape
        real = seq != self.pad  # (B, L)
        x = self.item_emb(seq) + self.pos_emb(positions(L, self.max_len, seq.device))
        x = self.emb_drop(self.emb_norm(x))
        # Attend to every non-padding position; a padding query also to itself, so that no
        # row of the mask is empty (its output is never read).
        diagonal = torch.eye(L, dtype=torch.bool, device=seq.device)
        mask = (real.unsqueeze(1) | diagonal).unsqueeze(1)  # (B, 1, L, L)
        for layer in self.layers:
            x = layer(x, mask)
        return x

    def _logits(self, h: Tensor) -> Tensor:
        return self.head(h) @ self.item_emb.weight[: self.n_items].T + self.out_bias  # (.., N)

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        seq = batch["seq"]
        full = last_items(torch.cat([seq, batch["pos"][:, -1:]], 1), self.max_len, self.pad, "seq")
        real = full != self.pad
        masked = (torch.rand(full.shape, device=full.device) < self.config.mask_prob) & real
        # A row that drew no mask would teach nothing: mask its newest item, which is also
        # the position scoring asks about.
        unlucky = ~masked.any(1) & real[:, -1]
        masked[:, -1] |= unlucky
        h = self.encode(full.masked_fill(masked, self.mask_token))  # (B, L, d)
        return F.cross_entropy(self._logits(h[masked]), full[masked])

    def _user_state(self, history: Tensor | None) -> Tensor:
        if history is None:
            raise ValueError("BERT4Rec scores from histories: pass history (B, L), left-padded")
        history = last_items(history, self.max_len - 1, self.pad)
        mask_col = history.new_full((len(history), 1), self.mask_token)
        return self.encode(torch.cat([history, mask_col], 1))[:, -1]  # (B, d)

    def full_scores(self, users: Tensor, history: Tensor | None = None) -> Tensor:
        return self._logits(self._user_state(history))  # (B, N)

    def score(self, users: Tensor, items: Tensor, history: Tensor | None = None) -> Tensor:
        h = self.head(self._user_state(history)).unsqueeze(1)  # (B, 1, d)
        return (h * self.item_emb(items)).sum(-1) + self.out_bias[items]  # (B, C)

    def user_item_embeddings(self) -> tuple[Tensor | None, Tensor]:
        """No user table (a user is their history); the item table without PAD and [MASK]."""
        return None, self.item_emb.weight[: self.n_items]
