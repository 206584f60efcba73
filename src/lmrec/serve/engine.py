"""What the service computes: a saved run in memory, retrieval by the domain model, LLM re-ranking.

:func:`lmrec.serve.load.load_engine` reads any finished run folder:

=============  ===============================  =============================================
run folder     retrieves with                   re-ranks with
=============  ===============================  =============================================
``lmrec train``  the model itself                nothing (the domain model's own order)
BDLM           its jointly trained domain model  BDLM-drs (the cascade over the domain score and
                                                 the LLM's candidate score) or BDLM-llm
``lmrec llm``  ``retriever`` (an ``lmrec train``  the LLM's item-token scores in the top-K prompt
               folder) or popularity
=============  ===============================  =============================================

A user is seen as the offline test evaluation sees them: their train and validation
interactions, in order (:meth:`lmrec.protocol.split.Split.history_before` ``("test")``), so
``POST /score`` on a user's test candidates returns the scores ``lmrec`` computes offline.
A request may instead give a history of raw item ids and no user: the domain side then
scores with the mean of the history's item rows (LightGCN, MF) or the sequence model over the
history, and the prompt says "User without an id".

Every method takes a batch of queries: the micro-batcher (:mod:`lmrec.serve.batcher`) hands
over whatever requests arrived together, and one forward pass of each model serves them all.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lmrec.errors import DataError, LmrecError


class RequestError(LmrecError):
    """A request the engine cannot serve; ``field`` names the part of the request at fault."""

    def __init__(self, message: str, field: str, status: int = 422) -> None:
        super().__init__(message)
        self.field, self.status = field, status


@dataclass
class Query:
    """One request's user: ``user`` a dense index (None: history only), ``history`` dense items."""

    user: int | None
    history: np.ndarray
    warnings: list[str] = field(default_factory=list)


@dataclass
class Ranked:
    """Items of one answer, best first, with the scores that ranked them."""

    items: np.ndarray  # dense indices
    score: np.ndarray  # the final score
    domain: np.ndarray  # the domain model's score
    llm: np.ndarray | None  # the LLM's score (None when the run has no LLM)

    def head(self, k: int) -> Ranked:
        """The first ``k`` entries."""
        return Ranked(
            self.items[:k],
            self.score[:k],
            self.domain[:k],
            None if self.llm is None else self.llm[:k],
        )


class Reranker:
    """The LLM side: top-K prompt scores of candidate lists, and BDLM's cascade when given."""

    def __init__(self, llm, tokenizer, builder, ids, batch_size: int, cascade=None) -> None:
        self.llm, self.tok, self.builder, self.ids = llm, tokenizer, builder, ids
        self.batch_size, self.cascade = batch_size, cascade

    @torch.no_grad()
    def llm_scores(self, queries: Sequence[Query], cands: np.ndarray) -> np.ndarray:
        """(B, C) item-token log-probabilities after each query's top-K prompt (one pass)."""
        from lmrec.llm.scoring import score_token_candidates

        prompts = [
            self.builder.prompt("topk", _prompt_user(q), q.history, candidates=row).text
            for q, row in zip(queries, cands, strict=True)
        ]
        token_ids = self.ids.token_ids("item", cands)
        return score_token_candidates(
            self.llm, self.tok, prompts, token_ids, self.batch_size
        ).numpy()

    @torch.no_grad()
    def cascade_scores(
        self, queries: Sequence[Query], cands: np.ndarray, llm: np.ndarray, tables
    ) -> np.ndarray:
        """(B, C) BDLM-drs logits: the head over f_DRS, h_LLM (if it reads it) and the LLM score."""
        from lmrec.bdlm.features import FeatureCache

        cascade = self.cascade
        device = next(cascade.parameters()).device
        h = None
        if cascade.h_dim:
            prompts = [
                self.builder.prompt("interaction", _prompt_user(q), q.history, target=int(j)).text
                for q, row in zip(queries, cands, strict=True)
                for j in row
            ]
            h = FeatureCache(self.batch_size).features(self.llm, self.tok, prompts)
            h = h.view(*cands.shape, -1).to(device)
        if tables is not None:  # one row per query: index them in order
            users = torch.arange(len(queries), device=device).unsqueeze(1)
        else:  # GMF, NeuMF: users with ids only (Engine.validate)
            users = torch.as_tensor([q.user for q in queries], device=device).unsqueeze(1)
        items = torch.as_tensor(cands, dtype=torch.long, device=device)
        s = torch.as_tensor(llm, dtype=torch.float32, device=device) if cascade.s_dim else None
        return cascade(users, items, h, tables, s).float().cpu().numpy()


def _prompt_user(q: Query) -> int:
    return -1 if q.user is None else q.user


class Engine:
    """A run folder in memory; see the module docstring.

    Parameters
    ----------
    kind:
        ``domain``, ``bdlm`` or ``llm``: what the folder was.
    side:
        What orders the answer: ``domain``, ``llm`` (BDLM-llm, an LLM run) or ``drs``.
    users, items:
        The run's :class:`lmrec.data.interactions.IdMap` s.
    titles:
        Item titles by dense index ("" when the dataset has none).
    histories:
        Per dense user, the items the model may see (train + validation), in order.
    domain:
        The retriever (a :class:`lmrec.models.base.Recommender`), in eval mode.
    max_len:
        History length the retriever reads (sequence models), None when it reads none.
    """

    def __init__(
        self,
        *,
        kind: str,
        side: str,
        users,
        items,
        titles: Sequence[str],
        histories: Sequence[np.ndarray],
        domain,
        max_len: int | None,
        reranker: Reranker | None = None,
        run_dir: Path | None = None,
    ) -> None:
        self.kind, self.side = kind, side
        self.users, self.items, self.titles = users, items, list(titles)
        self.histories = histories
        self.domain, self.max_len, self.reranker = domain, max_len, reranker
        self.run_dir = run_dir
        tensor = next(itertools.chain(domain.parameters(), domain.buffers()), None)
        self.device = tensor.device if tensor is not None else torch.device("cpu")

    @property
    def n_items(self) -> int:
        return len(self.items)

    # ------------------------------------------------------------------ requests -> queries
    def query(self, user: str | None, history: Sequence[str] | None) -> Query:
        """Resolve raw ids; unknown history items are dropped with a warning, never an error."""
        warnings: list[str] = []
        known = self._known_items(history or [], "history", warnings)
        if user is not None:
            try:
                u = self.users.index(str(user))
            except DataError as exc:
                raise RequestError(str(exc), "user", status=404) from None
            hist = known if history else np.asarray(self.histories[u], dtype=np.int64)
            return Query(u, hist, warnings)
        if history is None:
            raise RequestError("give a user id or a history of item ids", "user")
        if len(known) == 0:
            raise RequestError(
                "history has no item id this run knows; give at least one known item", "history"
            )
        return Query(None, known, warnings)

    def _known_items(self, raw: Sequence[str], name: str, warnings: list[str]) -> np.ndarray:
        out = []
        for r in raw:
            try:
                out.append(self.items.index(str(r)))
            except DataError:
                warnings.append(f"{name}: unknown item id {str(r)!r} ignored")
        return np.asarray(out, dtype=np.int64)

    def items_of(self, raw: Sequence[str], warnings: list[str]) -> np.ndarray:
        """Dense indices of the known ids of ``raw`` (unknown ones warned about and dropped)."""
        return self._known_items(raw, "items", warnings)

    # ------------------------------------------------------------------ domain side
    def _history_tensor(self, queries: Sequence[Query]) -> torch.Tensor:
        """(B, max_len) left-padded histories (pad = n_items), as the trainer builds them."""
        out = np.full((len(queries), self.max_len), self.n_items, dtype=np.int64)
        for r, q in enumerate(queries):
            h = q.history[-self.max_len :]
            if len(h):
                out[r, -len(h) :] = h
        return torch.from_numpy(out).to(self.device)

    @torch.no_grad()
    def domain_scores(self, queries: Sequence[Query], items: np.ndarray | None = None):
        """(B, N) scores over all items (``items`` None) or (B, C) over given candidates.

        Users without an id: sequence models read the given history; LightGCN and MF score
        with the mean of the history's item rows; popularity needs no user; other models
        (GMF, NeuMF) cannot serve them and say so.
        """
        for q in queries:
            self.validate(q)
        anonymous = any(q.user is None for q in queries)
        hist = self._history_tensor(queries) if self.max_len is not None else None
        if anonymous and hist is None and self.domain.user_item_embeddings()[0] is not None:
            tables = user_rows(self.domain, queries)
            full = tables[0] @ tables[1].T
            if items is None:
                return full.float().cpu().numpy()
            idx = torch.as_tensor(items, dtype=torch.long, device=full.device)
            return torch.gather(full, 1, idx).float().cpu().numpy()
        known = [0 if q.user is None else q.user for q in queries]
        users = torch.as_tensor(known, dtype=torch.long, device=self.device)
        if items is None:
            return self.domain.full_scores(users, hist).float().cpu().numpy()
        it = torch.as_tensor(items, dtype=torch.long, device=self.device)
        return self.domain.score(users, it, hist).float().cpu().numpy()

    def retrieve(self, queries: Sequence[Query], n: int, exclude_seen: bool | Sequence[bool]):
        """(B, n) best items over all items (seen ones masked) and their domain scores.

        ``exclude_seen``: one flag for all queries, or one per query.
        """
        full = self.domain_scores(queries)
        masked = full.copy()
        flags = [exclude_seen] * len(queries) if isinstance(exclude_seen, bool) else exclude_seen
        for r, q in enumerate(queries):
            if flags[r]:
                seen = q.history
                if q.user is not None:
                    seen = np.union1d(seen, self.histories[q.user])
                masked[r, seen.astype(np.int64)] = -np.inf
        n = min(n, self.n_items)
        top = np.argsort(-masked, axis=1, kind="stable")[:, :n]
        return top, np.take_along_axis(full, top, 1)

    # ------------------------------------------------------------------ answers
    def score(
        self, queries: Sequence[Query], cands: np.ndarray, domain: np.ndarray | None = None
    ) -> list[Ranked]:
        """Scores of given (B, C) candidate lists, in the lists' order (not sorted).

        ``domain``: the candidates' domain scores when the caller has them (retrieval does).
        """
        if domain is None:
            domain = self.domain_scores(queries, cands)
        llm = final = None
        if self.reranker is not None:
            llm = self.reranker.llm_scores(queries, cands)
            final = llm
            if self.side == "drs":
                final = self.reranker.cascade_scores(
                    queries, cands, llm, user_rows(self.reranker.cascade.domain, queries)
                )
        if final is None:
            final = domain
        return [
            Ranked(cands[r], final[r], domain[r], None if llm is None else llm[r])
            for r in range(len(queries))
        ]

    def recommend(
        self,
        queries: Sequence[Query],
        k: int,
        n_candidates: int,
        exclude_seen: bool | Sequence[bool] = True,
    ) -> list[Ranked]:
        """Retrieve ``n_candidates`` by the domain model, re-rank them, keep the best ``k``."""
        cands, domain = self.retrieve(queries, max(n_candidates, k), exclude_seen)
        out = []
        for r in self.score(queries, cands, domain):
            order = np.argsort(-r.score, kind="stable")[:k]
            llm = None if r.llm is None else r.llm[order]
            out.append(Ranked(r.items[order], r.score[order], r.domain[order], llm))
        return out

    def validate(self, query: Query) -> None:
        """Raise the :class:`RequestError` a batch would raise for ``query``, before queuing."""
        if query.user is not None or self.max_len is not None:
            return
        needs_user = self.domain.user_item_embeddings()[0] is not None
        if needs_user and not averages_history(self.domain):
            raise RequestError(
                f"this run's domain model ({type(self.domain).__name__}) needs a user id; "
                "give 'user'",
                "user",
            )
        if self.side == "drs" and not averages_history(self.reranker.cascade.domain):
            raise RequestError("this run's cascade needs a user id; give 'user'", "user")


def averages_history(domain) -> bool:
    """Whether ``domain`` can score a user without an id by the mean of their history's item
    rows: LightGCN and MF, which score a pair by the inner product of the two rows."""
    from lmrec.models import MF, LightGCN

    return isinstance(domain, MF | LightGCN)


@torch.no_grad()
def user_rows(domain, queries: Sequence[Query]):
    """``(U (B, d), Q (N, d))``: one user row per query (see :func:`averages_history`), or None
    for other models. A known user reads their own row, one without an id the mean of their
    history's item rows."""
    if not averages_history(domain):
        return None
    user_table, item_table = domain.user_item_embeddings()
    rows = []
    for q in queries:
        if q.user is not None:
            rows.append(user_table[q.user])
        else:
            idx = torch.as_tensor(q.history, dtype=torch.long, device=item_table.device)
            rows.append(item_table[idx].mean(0))
    return torch.stack(rows), item_table


# ---------------------------------------------------------------------- loading


__all__ = ["Engine", "Query", "Ranked", "RequestError", "Reranker"]
