"""GRU4Rec: a GRU over the item sequence (Hidasi et al., ICLR 2016; RecBole's variant).

The GRU state after item t, projected to the embedding width, scores the item at t + 1 by a dot
product with the item table; the loss is cross-entropy over all items at every position that
has a next item (RecBole trains on every prefix of a history, which is the same objective).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from lmrec.models._checks import check_positive, check_probability
from lmrec.models._sequence import NextItemRecommender, last_items


@dataclass
class GRU4RecConfig:
    """GRU4Rec hyper-parameters (RecBole defaults).

    Attributes
    ----------
    dim:
        Item embedding width (BDLM sets it to the LLM hidden size).
    hidden_size:
        GRU state width.
    n_layers:
        Stacked GRU layers.
    dropout:
        Dropout on the item embeddings fed to the GRU.
    max_len:
        Longest history read; older items are dropped.
    """

    dim: int = 64
    hidden_size: int = 128
    n_layers: int = 1
    dropout: float = 0.3
    max_len: int = 50

    def __post_init__(self) -> None:
        check_positive(self, "dim", "hidden_size", "n_layers", "max_len")
        check_probability(self, "dropout")


class GRU4Rec(NextItemRecommender):
    """GRU next-item model with a full-softmax loss; ``batch_kind = "sequence"``.

    Item rows ``0..n_items-1`` are items; row ``n_items`` is PAD. Users are ignored.
    """

    def __init__(self, n_users: int, n_items: int, config: GRU4RecConfig | None = None) -> None:
        super().__init__(n_users, n_items)
        cfg = self.config = config or GRU4RecConfig()
        self.max_len = cfg.max_len
        self.pad = n_items
        self.item_emb = nn.Embedding(n_items + 1, cfg.dim, padding_idx=self.pad)
        self.emb_drop = nn.Dropout(cfg.dropout)
        self.gru = nn.GRU(cfg.dim, cfg.hidden_size, cfg.n_layers, batch_first=True)
        self.proj = nn.Linear(cfg.hidden_size, cfg.dim)
        nn.init.xavier_normal_(self.item_emb.weight)
        with torch.no_grad():
            self.item_emb.weight[self.pad].zero_()

    def encode(self, seq: Tensor) -> Tensor:
        """States (B, L, d) of a left-padded (B, L) sequence; padded positions hold garbage.

        A GRU read left to right would run over the padding first and start each history from
        a state that depends on how much padding there is. So rows are shifted to start at
        column 0, packed to their true lengths, run, and shifted back.
        """
        B, L = seq.shape
        n_pad = (seq == self.pad).sum(1)  # (B,)
        cols = torch.arange(L, device=seq.device)
        to_front = (cols + n_pad.unsqueeze(1)) % L  # (B, L): left-aligned column -> source
        x = self.emb_drop(self.item_emb(seq.gather(1, to_front)))  # (B, L, d)
        lengths = (L - n_pad).clamp(min=1).cpu()  # an all-PAD row runs one step; it is unused
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=L)  # (B, L, H)
        back = (cols - n_pad.unsqueeze(1)) % L
        out = out.gather(1, back.unsqueeze(-1).expand(-1, -1, out.shape[-1]))
        return self.proj(out)  # (B, L, d)

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        seq = last_items(batch["seq"], self.max_len, self.pad, "seq")
        pos = batch["pos"][:, -seq.shape[1] :]
        target = pos != self.pad
        h = self.encode(seq)[target]  # (M, d)
        logits = h @ self.item_emb.weight[: self.n_items].T  # (M, N)
        return F.cross_entropy(logits, pos[target])
