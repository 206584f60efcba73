"""The information-sharing module M = (M_U, M_I) and the mutual-learning losses (BDLM eqs. 7-8).

M holds one row per user and per item, of the same width d as the LLM's user/item token rows
(E_U, E_I) and the domain model's tables (P_U, Q_I). It is not trained by gradient: the two
sides take turns, and after its optimiser step each side *writes* its current rows of the batch's
users and items into M (the "portion" of M it updates, paper 4.3). The next step of the other
side is then pulled towards those rows by its mutual-learning loss::

    L_mut_LLM = MSE(s * E_U[u], M_U[u]) + MSE(s * E_I[i], M_I[i])      (eq. 7)
    L_mut_DRS = MSE(P_U[u],     M_U[u]) + MSE(Q_I[i],     M_I[i])      (eq. 8)

so M carries information both ways.

``reduction`` says what "MSE" averages over: ``"element"`` (default) is torch's ``mse_loss``, the
mean over rows and embedding dimensions, the paper's equations taken literally; ``"row"`` is the
squared distance per row averaged over rows, i.e. d times larger. With d = 576 and embeddings of
norm ~1 the element mean is ~1e-5 of the SFT loss, so under Adam lambda in {1e-3 ... 10} barely
moves anything; ``"row"`` puts that grid on a scale where it does (the choice is the config's,
and is saved with M).

M lives in the domain model's space and starts as its tables (``from_tables``). When the domain
model is narrower than the LLM (LightGCN at its best width, 64, against SmolLM2's 576), BDLM
pre-loads through a map ``E = (P_U W + b) / s`` with W (d, width) of full row rank: a fixed
matrix with orthonormal rows (``orthogonal``, b = 0) or a ridge fit of the item rows to the LM
embeddings of their titles (``linear``). The LLM's rows meet M as ``(s * E - b) W^+`` (W^+ the
pseudo-inverse, W^T for orthonormal rows): their component in the pre-loaded subspace, mapped
back to the domain width. M, both sides' rows and the mutual losses then live in one d-wide
space, and SFT stays free in the other width - d directions. The LLM's rows
are compared after a fixed scalar ``s`` (``scales["llm"]``): BDLM pre-loads E as the domain
rows rescaled to the LM's embedding norm (``E = P / s``, see :mod:`lmrec.bdlm.run`), so that new
tokens look like words to the first layer norm; ``s * E`` then equals P at the start, and the
mutual losses start at zero. With equal norms ``s`` is 1 and this is the paper's plain MSE.

Saved as safetensors: ``users`` (n_users, d), ``items`` (n_items, d), ``scales`` (2,) in the
order of :data:`SIDES`, plus ``write_rate`` in the metadata.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from lmrec.errors import ConfigError, DataError
from lmrec.utils.io import atomic_write

SIDES = ("llm", "drs")
REDUCTIONS = ("element", "row")


class SharingModule(nn.Module):
    """M = (M_U, M_I): buffers that each side reads (mutual loss) and writes (after its step).

    Parameters
    ----------
    users, items:
        Initial M_U (n_users, d) and M_I (n_items, d); copied.
    scales:
        Fixed factor per side applied to its rows before they meet M (default 1 for both).
    write_rate:
        How much of a side's rows a write puts into M: ``M <- (1 - r) M + r rows``. 1 (the
        default) overwrites, as in the paper's alternating updates; smaller values keep a
        running average of both sides.
    reduction:
        ``"element"`` (mean squared error over all elements) or ``"row"`` (squared distance
        per row, averaged over rows); see the module docstring.
    """

    def __init__(
        self,
        users: Tensor,
        items: Tensor,
        scales: dict[str, float] | None = None,
        write_rate: float = 1.0,
        reduction: str = "element",
        llm_projection: Tensor | None = None,
        llm_offset: Tensor | None = None,
    ) -> None:
        super().__init__()
        if users.ndim != 2 or items.ndim != 2 or users.shape[1] != items.shape[1]:
            raise ConfigError(
                f"M needs two tables of one width, got users {tuple(users.shape)} and items "
                f"{tuple(items.shape)}"
            )
        if not 0.0 < write_rate <= 1.0:
            raise ConfigError(f"sharing write_rate must be in (0, 1], got {write_rate}")
        if reduction not in REDUCTIONS:
            raise ConfigError(f"sharing reduction must be one of {REDUCTIONS}, got {reduction!r}")
        scales = {**dict.fromkeys(SIDES, 1.0), **(scales or {})}
        unknown = sorted(set(scales) - set(SIDES))
        if unknown:
            raise ConfigError(f"sharing scales: unknown side(s) {unknown}; sides are {SIDES}")
        self.register_buffer("users", users.detach().float().clone())
        self.register_buffer("items", items.detach().float().clone())
        self.register_buffer("scales", torch.tensor([float(scales[s]) for s in SIDES]))
        self.write_rate = float(write_rate)
        self.reduction = reduction
        if llm_projection is not None and llm_projection.shape[0] != users.shape[1]:
            raise ConfigError(
                f"llm_projection maps to width {llm_projection.shape[0]}, but M is "
                f"{users.shape[1]} wide"
            )
        self.llm_projection: Tensor | None
        proj = None if llm_projection is None else llm_projection.detach().float().clone()
        self.register_buffer("llm_projection", proj)
        offset = None
        if proj is not None:
            offset = torch.zeros(proj.shape[1]) if llm_offset is None else llm_offset.float()
        self.register_buffer("llm_offset", offset)
        back = None  # (width, d): W^T when W has orthonormal rows (exactly), else W^+
        if proj is not None:
            eye = torch.eye(proj.shape[0])
            orthonormal = torch.allclose(proj @ proj.T, eye, atol=1e-5)
            back = proj.T.clone() if orthonormal else torch.linalg.pinv(proj)
        self.register_buffer("llm_back", back, persistent=False)

    def _comparable(self, side: str, rows: Tensor) -> Tensor:
        """A side's rows in M's space: the LLM's are mapped back through ``W^+``."""
        if side == "llm" and self.llm_projection is not None:
            return (rows - self.llm_offset.to(rows)) @ self.llm_back.to(rows)
        return rows

    @classmethod
    def from_tables(
        cls,
        users: Tensor,
        items: Tensor,
        llm_scale: float = 1.0,
        write_rate: float = 1.0,
        reduction: str = "element",
        llm_projection: Tensor | None = None,
        llm_offset: Tensor | None = None,
    ) -> SharingModule:
        """M initialised from the domain model's ``user_item_embeddings()`` (P_U, Q_I)."""
        return cls(
            users,
            items,
            {"llm": llm_scale, "drs": 1.0},
            write_rate,
            reduction,
            llm_projection,
            llm_offset,
        )

    @property
    def dim(self) -> int:
        return int(self.users.shape[1])

    def scale(self, side: str) -> Tensor:
        """The fixed factor of ``side`` ("llm" or "drs")."""
        if side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, got {side!r}")
        return self.scales[SIDES.index(side)]

    def mutual_loss(
        self, side: str, users: Tensor, items: Tensor, user_rows: Tensor, item_rows: Tensor
    ) -> Tensor:
        """MSE(rows_U, M_U[users]) + MSE(rows_I, M_I[items]) for one side (eq. 7 or 8).

        ``user_rows`` (U, d) and ``item_rows`` (I, d) are the side's current, differentiable
        rows of ``users`` (U,) and ``items`` (I,); M is a constant target (no gradient).
        """
        s = self.scale(side).to(user_rows.dtype)
        user_rows = self._comparable(side, user_rows)
        item_rows = self._comparable(side, item_rows)
        target_u = self.users[users.to(self.users.device)].to(user_rows)
        target_i = self.items[items.to(self.items.device)].to(item_rows)
        loss = F.mse_loss(s * user_rows, target_u) + F.mse_loss(s * item_rows, target_i)
        return loss * self.dim if self.reduction == "row" else loss

    @torch.no_grad()
    def write(
        self, side: str, users: Tensor, items: Tensor, user_rows: Tensor, item_rows: Tensor
    ) -> None:
        """Write ``side``'s current rows of ``users`` / ``items`` into M (its "portion")."""
        s = self.scale(side)
        r = self.write_rate
        for table, idx, rows in ((self.users, users, user_rows), (self.items, items, item_rows)):
            idx = idx.to(table.device)
            new = s * self._comparable(side, rows.detach().to(table))
            table[idx] = new if r == 1.0 else (1.0 - r) * table[idx] + r * new

    @torch.no_grad()
    def distance(self, side: str, users: Tensor, items: Tensor, user_rows, item_rows) -> float:
        """The mutual loss of ``side`` as a float (for logs and tests)."""
        return float(self.mutual_loss(side, users, items, user_rows, item_rows))

    # ------------------------------------------------------------------------------ files

    def save(self, path: str | Path) -> None:
        """Write M to ``path`` (safetensors, atomically)."""
        tensors = {
            "users": self.users.detach().cpu().contiguous(),
            "items": self.items.detach().cpu().contiguous(),
            "scales": self.scales.detach().cpu().contiguous(),
        }
        if self.llm_projection is not None:
            tensors["llm_projection"] = self.llm_projection.detach().cpu().contiguous()
            tensors["llm_offset"] = self.llm_offset.detach().cpu().contiguous()
        meta = {
            "write_rate": repr(self.write_rate),
            "reduction": self.reduction,
            "sides": ",".join(SIDES),
        }
        atomic_write(Path(path), lambda p: save_file(tensors, str(p), metadata=meta))

    @classmethod
    def load(cls, path: str | Path) -> SharingModule:
        """Read a module written by :meth:`save`."""
        path = Path(path)
        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = dict(fh.metadata() or {})
                tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
        except (SafetensorError, OSError) as exc:
            raise DataError(f"{path}: not a readable sharing-module file ({exc})") from exc
        missing = {"users", "items", "scales"} - set(tensors)
        if missing:
            raise DataError(f"{path}: missing tensor(s) {sorted(missing)}; not a BDLM M file")
        scales = dict(zip(SIDES, tensors["scales"].tolist(), strict=True))
        return cls(
            tensors["users"],
            tensors["items"],
            scales,
            float(meta.get("write_rate", 1)),
            meta.get("reduction", "element"),
            tensors.get("llm_projection"),
            tensors.get("llm_offset"),
        )

    def load_state(self, other: SharingModule) -> None:
        """Copy M and the scales of ``other`` into this module in place (resume)."""
        if other.users.shape != self.users.shape or other.items.shape != self.items.shape:
            raise DataError(
                f"saved M has shapes {tuple(other.users.shape)}/{tuple(other.items.shape)}, "
                f"expected {tuple(self.users.shape)}/{tuple(self.items.shape)}"
            )
        with torch.no_grad():
            self.users.copy_(other.users)
            self.items.copy_(other.items)
            self.scales.copy_(other.scales)
            if (self.llm_projection is None) != (other.llm_projection is None):
                raise DataError("saved M and this run disagree on the LLM projection")
            if self.llm_projection is not None:
                self.llm_projection.copy_(other.llm_projection)
                self.llm_offset.copy_(other.llm_offset)
                self.llm_back.copy_(other.llm_back)
        self.write_rate = other.write_rate
        self.reduction = other.reduction


def unique_ids(*arrays) -> Tensor:
    """Sorted unique int64 ids of the given arrays/tensors (a batch's users or items)."""
    flat = [torch.as_tensor(a).reshape(-1).long().cpu() for a in arrays]
    return torch.unique(torch.cat(flat)) if flat else torch.zeros(0, dtype=torch.long)
