"""Task-specific user/item tokens (BDLM 4.1.1) and the mixed embedding layer (BDLM eq. 2).

One new token per user ``<u_i>`` and per item ``<i_j>`` is added with ``tokenizer.add_tokens`` and
``model.resize_token_embeddings``; ids are contiguous (users first, then items), so the map
token id <-> (kind, index) is two subtractions.

The mixed embedding layer is the resized embedding matrix itself: rows ``< first_id`` are the
natural-language vocabulary V, the next ``n_users`` rows are E_U, the next ``n_items`` rows E_I.
We chose this over a wrapper module with separate tables because

- pre-loading is a row copy (:func:`set_id_token_rows`) and saving is the model's own format;
- with tied embeddings (SmolLM2, Gemma-3, the tiny Llama) E_I is also the output head of the item
  tokens, so top-K scoring reads ``h . E_I[j]`` straight from the LM head;
- during training (:mod:`lmrec.llm.modes`) peft's ``TrainableTokens`` holds the new rows as their
  own parameter (it *replaces* those rows in the forward pass, it does not add a delta), which is
  what lets them have a separate, higher learning rate and stay trainable under LoRA.

:func:`id_token_rows` returns the current, differentiable E_U / E_I rows of any (wrapped) model,
which is what the BDLM mutual-learning loss reads.

Pre-loading (BDLM 4.1.2) fills the rows from a domain model's tables: an exact copy when widths
match, else one of two projections (see :func:`preload_id_tokens`, the one pre-loading of LLM
runs and BDLM). ``init="random"`` is the paper's ablation *w/o PE*; not adding tokens at all is
*w/o ET*.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from lmrec.errors import ConfigError
from lmrec.utils.io import read_json, write_json

KINDS = ("user", "item")
PROJECTIONS = ("auto", "copy", "orthogonal", "linear")


@dataclass(frozen=True)
class IdTokens:
    """Bidirectional map between token ids and (kind, index) for the new user/item tokens.

    Attributes
    ----------
    n_users, n_items:
        How many user and item tokens were added.
    first_id:
        Token id of ``<u_0>``; ``<u_i>`` is ``first_id + i`` and ``<i_j>`` is
        ``first_id + n_users + j``.
    """

    n_users: int
    n_items: int
    first_id: int
    user_format: str = "<u_{}>"
    item_format: str = "<i_{}>"

    @property
    def first_item_id(self) -> int:
        return self.first_id + self.n_users

    @property
    def end_id(self) -> int:
        """One past the last new token id."""
        return self.first_id + self.n_users + self.n_items

    @property
    def new_ids(self) -> list[int]:
        return list(range(self.first_id, self.end_id))

    def user_token(self, index: int) -> str:
        return self.user_format.format(int(index))

    def item_token(self, index: int) -> str:
        return self.item_format.format(int(index))

    def token_ids(self, kind: str, index):
        """Token id(s) of user/item index(es); works on ints, numpy arrays and tensors."""
        if kind == "user":
            n, base = self.n_users, self.first_id
        elif kind == "item":
            n, base = self.n_items, self.first_item_id
        else:
            raise ValueError(f"kind must be 'user' or 'item', got {kind!r}")
        if isinstance(index, Tensor):
            if index.numel() and (index.min() < 0 or index.max() >= n):
                raise IndexError(f"{kind} index out of range [0, {n})")
            return base + index
        arr = np.asarray(index, dtype=np.int64)
        if arr.size and (arr.min() < 0 or arr.max() >= n):
            raise IndexError(f"{kind} index out of range [0, {n})")
        return int(base + arr) if arr.ndim == 0 else base + arr

    def lookup(self, token_id: int) -> tuple[str, int]:
        """(kind, index) of a new token id; raises KeyError for any other token."""
        t = int(token_id)
        if self.first_id <= t < self.first_item_id:
            return "user", t - self.first_id
        if self.first_item_id <= t < self.end_id:
            return "item", t - self.first_item_id
        raise KeyError(f"token id {t} is not a user/item token")

    def save(self, path: Path) -> None:
        write_json(Path(path), asdict(self))

    @classmethod
    def load(cls, path: Path) -> IdTokens:
        return cls(**read_json(Path(path)))


def add_id_tokens(model, tokenizer, n_users: int, n_items: int, seed: int = 0) -> IdTokens:
    """Add ``<u_0>..<u_{n_users-1}>`` and ``<i_0>..<i_{n_items-1}>`` and resize the model.

    The tokens strip the whitespace on their left (``"watched <i_3>"`` -> ``watched``, ``<i_3>``),
    so prompts do not spend a space token before every id. New rows start random with the mean
    row norm of the existing vocabulary (seeded); pre-load them with :func:`preload_id_tokens`.
    Calling it on a tokenizer that already has the tokens (a saved run) only resizes the model.
    """
    from tokenizers import AddedToken

    ids = IdTokens(n_users, n_items, first_id=-1)
    names = [ids.user_token(i) for i in range(n_users)] + [
        ids.item_token(j) for j in range(n_items)
    ]
    first = tokenizer.convert_tokens_to_ids(names[0]) if names else len(tokenizer)
    if first is None or first == tokenizer.unk_token_id or first < 0:
        first = len(tokenizer)
        tokenizer.add_tokens([AddedToken(n, lstrip=True, normalized=False) for n in names])
    ids = IdTokens(n_users, n_items, first_id=int(first))
    got = tokenizer.convert_tokens_to_ids([names[0], names[-1]]) if names else []
    if names and got != [ids.first_id, ids.end_id - 1]:
        raise ConfigError(
            "user/item tokens did not receive contiguous ids (the tokenizer already had some of "
            "them); start from the base tokenizer"
        )
    old_rows = model.get_input_embeddings().weight.shape[0]
    if old_rows < ids.end_id:
        model.resize_token_embeddings(ids.end_id, mean_resizing=False)
        emb = model.get_input_embeddings().weight
        norm = emb[: min(old_rows, ids.first_id)].detach().float().norm(dim=1).mean()
        gen = torch.Generator().manual_seed(seed)
        rows = torch.randn(ids.end_id - ids.first_id, emb.shape[1], generator=gen)
        set_id_token_rows(model, ids, "all", rows * norm / rows.norm(dim=1, keepdim=True))
    return ids


def set_id_token_rows(model, ids: IdTokens, kind: str, rows: Tensor) -> None:
    """Write rows of E_U (``kind="user"``), E_I (``"item"``) or both (``"all"``) into the model.

    Writes the base input embedding and, for untied models, the same rows of the output head
    (a new token's output row starts equal to its input row). Call it before wrapping the model
    for training: a peft ``TrainableTokens`` wrapper keeps its own copy of these rows.
    """
    start, stop = {
        "user": (ids.first_id, ids.first_item_id),
        "item": (ids.first_item_id, ids.end_id),
        "all": (ids.first_id, ids.end_id),
    }[kind]
    if rows.shape[0] != stop - start:
        raise ValueError(f"{kind} rows: expected {stop - start} rows, got {rows.shape[0]}")
    weights = [model.get_input_embeddings().weight]
    out = model.get_output_embeddings()
    if out is not None and out.weight.data_ptr() != weights[0].data_ptr():
        weights.append(out.weight)
    with torch.no_grad():
        for w in weights:
            w[start:stop] = rows.to(device=w.device, dtype=w.dtype)


def id_token_rows(model, ids: IdTokens, kind: str, index: Tensor) -> Tensor:
    """Current, differentiable rows E_U[index] or E_I[index] of a (possibly peft-wrapped) model.

    Goes through the model's input embedding module, so it sees peft's trainable rows and any
    embedding scale the architecture applies (Gemma multiplies by sqrt(hidden)).
    """
    emb = model.get_input_embeddings()
    index = torch.as_tensor(index, device=_device_of(emb))
    return emb(ids.token_ids(kind, index))


def _device_of(module) -> torch.device:
    return next(module.parameters()).device


# ---------------------------------------------------------------- pre-loading


def orthogonal_projection(d: int, width: int, seed: int = 0) -> Tensor:
    """A fixed, seeded (d, width) matrix with orthonormal rows when d <= width (columns else).

    With d <= width, ``x @ P`` keeps every inner product of d-wide rows and ``(x @ P) @ P.T``
    gives ``x`` back: BDLM pre-loads through it and compares the LLM's rows with M through
    its transpose.
    """
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(max(d, width), min(d, width), generator=gen)
    q, _ = torch.linalg.qr(g)  # (max, min) orthonormal columns
    return (q.T if d <= width else q).contiguous()


def fit_linear_map(source: Tensor, target: Tensor) -> Tensor:
    """(d + 1, width): ridge least squares from ``source`` rows (plus a bias column) to
    ``target`` rows; the last row is the bias."""
    x = torch.cat([source.detach().float().cpu(), torch.ones(len(source), 1)], 1)
    y = target.detach().float().cpu()
    ridge = 1e-3 * torch.eye(x.shape[1])
    return torch.linalg.solve(x.T @ x + ridge, x.T @ y)


def title_embeddings(model, tokenizer, titles: list[str]) -> Tensor:
    """Mean input embedding of each title's tokens (n, width); empty titles give zeros."""
    weight = model.get_input_embeddings().weight.detach().float().cpu()
    out = torch.zeros(len(titles), weight.shape[1])
    for k, title in enumerate(titles):
        ids = tokenizer(title, add_special_tokens=False)["input_ids"]
        if ids:
            out[k] = weight[ids].mean(0)
    return out


@dataclass
class Preload:
    """What :func:`preload_id_tokens` did: the map from domain rows to LLM rows and its scale.

    ``llm_row = (domain_row @ projection + offset) / scale`` (``projection`` None: the row
    itself; ``offset`` None: no bias). BDLM's M compares the two sides through this map.
    """

    projection: Tensor | None
    offset: Tensor | None
    scale: float
    record: dict


def preload_id_tokens(
    model,
    tokenizer,
    ids: IdTokens,
    user_table: Tensor | None,
    item_table: Tensor,
    projection: str = "auto",
    titles: list[str] | None = None,
    seed: int = 0,
    *,
    scale_copy: bool = False,
    write: bool = True,
) -> Preload:
    """Initialise E_U and E_I from a domain model's ``user_item_embeddings()`` (BDLM 4.1.2): the
    one pre-loading of LLM runs and BDLM.

    Parameters
    ----------
    projection:
        ``copy`` (equal widths), ``orthogonal`` (a fixed seeded map with orthonormal rows, which
        keeps inner products), ``linear`` (ridge from item rows to their titles' mean LM
        embedding) or ``auto`` (copy when the widths match, else orthogonal).
    scale_copy:
        Scale copied rows to the LM's mean embedding norm as orthogonal rows are (BDLM does,
        so one scale serves M for both); LLM runs copy rows as they are. Linear rows are fitted
        into the LM's space and never rescaled.
    write:
        Set the token rows (False: only compute the map, for BDLM's w/o PE, whose rows stay
        random while M still needs the map).

    Models without a user table (sequence models) leave the user rows as they are (random).
    """
    weight = model.get_input_embeddings().weight
    width = weight.shape[1]
    if item_table.shape[0] != ids.n_items:
        raise ConfigError(f"item table has {item_table.shape[0]} rows, expected {ids.n_items}")
    if user_table is not None and user_table.shape[0] != ids.n_users:
        raise ConfigError(f"user table has {user_table.shape[0]} rows, expected {ids.n_users}")
    if projection not in PROJECTIONS:
        raise ConfigError(f"preload.projection must be one of {PROJECTIONS}, got {projection!r}")
    d = item_table.shape[1]
    method = projection if projection != "auto" else ("copy" if d == width else "orthogonal")
    lm_norm = float(weight[: ids.first_id].detach().float().norm(dim=1).mean())
    tables = [t.detach().float().cpu() for t in (user_table, item_table) if t is not None]
    rows = torch.cat(tables)  # one map and one scale for both, so user.item products survive
    proj = offset = None
    if method == "copy" and d != width:
        raise ConfigError(
            f"preload.projection=copy needs equal widths, but the domain table is {d} wide and "
            f"the LM {width}; use projection 'orthogonal' or 'linear'"
        )
    if method == "orthogonal":
        proj = orthogonal_projection(d, width, seed)
    elif method == "linear":
        if titles is None:
            raise ConfigError("preload.projection=linear needs item titles to fit to")
        w = fit_linear_map(tables[-1], title_embeddings(model, tokenizer, titles))
        proj, offset = w[:-1].contiguous(), w[-1].contiguous()
    lifted = rows if proj is None else rows @ proj + (0.0 if offset is None else offset)
    factor = 1.0
    domain_norm = float(lifted.norm(dim=1).mean().clamp_min(1e-12))
    if method == "orthogonal" or (method == "copy" and scale_copy):
        factor = lm_norm / domain_norm  # new rows then look like words to the first layer norm
    if write:
        out = lifted * factor
        if user_table is not None:
            set_id_token_rows(model, ids, "user", out[: ids.n_users])
        set_id_token_rows(model, ids, "item", out[-ids.n_items :])
    record = {
        "projection": method,
        "domain_width": int(d),
        "lm_width": int(width),
        "users_preloaded": user_table is not None and write,
        "lm_embedding_norm": lm_norm,
        "domain_norm": domain_norm,
        "llm_scale": 1.0 / factor,
    }
    return Preload(proj, offset, 1.0 / factor, record)
