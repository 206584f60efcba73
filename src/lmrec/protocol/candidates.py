"""Candidate sets: the saved, shared evaluation items of the two BDLM tasks.

A ``CandidateSet`` is built once per (dataset, preprocessing, split, sampler, seed), saved with
its config and a content hash, and reused by every method, so every number in a table is scored
on the same candidates. The positive sits in column 0; metrics rank ties pessimistically, so a
model that cannot tell candidates apart gains nothing from that position.

Four sets are built together, keyed by ``(task, stage)``:

- ``("topk", stage)``: each evaluated user's held-out item plus ``n_negatives`` (19) negatives,
  ranked (HR@1, HR@2, NDCG, MRR);
- ``("interaction", stage)``: the held-out item plus ``n_interaction_negatives`` (1) negative,
  each classified on its own (precision, recall, F1, AUC);

for ``stage`` in ``("valid", "test")``; the valid sets use the valid item as positive. Negatives
come from :mod:`lmrec.protocol.samplers` and are never items the user interacted with in any
split (so the test item is never a valid-stage negative).

Saving, loading, the cache and CSV export live in :mod:`lmrec.protocol.candidate_files`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from lmrec.config import from_dict, to_dict
from lmrec.data.interactions import Dataset
from lmrec.errors import ConfigError, DataError
from lmrec.protocol.samplers import SAMPLERS, SamplingContext, SeenItems
from lmrec.protocol.split import Split
from lmrec.protocol.text_encoder import EncoderConfig, encode_titles
from lmrec.utils.io import atomic_write, read_json, write_json

TASKS = ("topk", "interaction")
STAGES = ("valid", "test")
ARRAYS_FILE = "arrays.safetensors"
META_FILE = "candidates.json"

Key = tuple[str, str]


@dataclass
class CandidateSet:
    """Candidates of one task and stage.

    Attributes
    ----------
    task:
        ``"topk"`` (1 positive + n negatives per user, ranked) or ``"interaction"`` (each
        held-out positive paired with sampled negatives, classified one by one).
    stage:
        ``"valid"`` or ``"test"``.
    users:
        (n_users,) int64 user indices.
    items:
        (n_users, n_candidates) int64 item indices; column 0 is the held-out positive.
    labels:
        (n_users, n_candidates) int8, 1 for the positive.
    meta:
        The config that built it (dataset, preprocessing, split, sampler, seed), how many
        negatives each sampler contributed (``negatives_by_sampler``) and its ``content_hash``.
    """

    task: str
    stage: str
    users: np.ndarray
    items: np.ndarray
    labels: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")
        if self.items.shape != self.labels.shape or self.items.shape[0] != len(self.users):
            raise ValueError(
                f"shape mismatch: users {self.users.shape}, items {self.items.shape}, "
                f"labels {self.labels.shape}"
            )

    @property
    def n_candidates(self) -> int:
        return int(self.items.shape[1])

    def __len__(self) -> int:
        return len(self.users)

    def head(self, limit: int) -> CandidateSet:
        """The first ``limit`` users (all of them when ``limit`` is 0 or covers every user)."""
        if not limit or len(self.users) <= limit:
            return self
        n = int(limit)
        return CandidateSet(
            self.task, self.stage, self.users[:n], self.items[:n], self.labels[:n], dict(self.meta)
        )

    def compute_hash(self) -> str:
        """sha256 of the arrays (as little-endian int64/int8) and the meta, minus the hash."""
        h = hashlib.sha256()
        for arr, dtype in ((self.users, "<i8"), (self.items, "<i8"), (self.labels, "i1")):
            a = np.ascontiguousarray(arr, dtype=dtype)
            h.update(repr(a.shape).encode())
            h.update(a.tobytes())
        meta = {k: v for k, v in self.meta.items() if k != "content_hash"}
        h.update(json.dumps([self.task, self.stage, meta], sort_keys=True, default=str).encode())
        return h.hexdigest()

    def describe(self) -> dict[str, Any]:
        """A short summary: size, sampler, seed and how many negatives each sampler drew."""
        cfg = self.meta.get("config", {})
        return {
            "task": self.task,
            "stage": self.stage,
            "users": len(self),
            "candidates": self.n_candidates,
            "sampler": cfg.get("sampler"),
            "seed": cfg.get("seed"),
            "negatives_by_sampler": self.meta.get("negatives_by_sampler", {}),
            "content_hash": self.meta.get("content_hash"),
        }

    def save(self, directory: str | Path) -> None:
        """Write ``arrays.safetensors`` then ``candidates.json``, each atomically."""
        from safetensors.numpy import save_file

        directory = Path(directory)
        meta = dict(self.meta, content_hash=self.compute_hash())
        arrays = {
            "users": np.ascontiguousarray(self.users, dtype=np.int64),
            "items": np.ascontiguousarray(self.items, dtype=np.int64),
            "labels": np.ascontiguousarray(self.labels, dtype=np.int8),
        }
        atomic_write(directory / ARRAYS_FILE, lambda p: save_file(arrays, str(p)))
        # the JSON goes last: it names the hash the arrays must match
        write_json(directory / META_FILE, {"task": self.task, "stage": self.stage, "meta": meta})
        self.meta = meta

    @classmethod
    def load(cls, directory: str | Path) -> CandidateSet:
        """Read a saved set and verify its content hash.

        Raises
        ------
        DataError
            A file is missing or corrupt, or the arrays do not match the saved hash.
        """
        from safetensors.numpy import load_file

        directory = Path(directory)
        fix = f"delete {directory} to rebuild it"
        doc = read_json(directory / META_FILE)
        if not isinstance(doc, dict) or not {"task", "stage", "meta"} <= set(doc):
            raise DataError(f"{directory / META_FILE}: not an lmrec candidate set; {fix}")
        try:
            arrays = load_file(str(directory / ARRAYS_FILE))
            cset = cls(
                doc["task"], doc["stage"], arrays["users"], arrays["items"], arrays["labels"]
            )
        except FileNotFoundError:
            raise DataError(f"{directory / ARRAYS_FILE} is missing; {fix}") from None
        except Exception as exc:  # safetensors raises several types for a damaged file
            raise DataError(f"{directory / ARRAYS_FILE} is corrupt ({exc}); {fix}") from exc
        cset.meta = doc["meta"]
        saved = cset.meta.get("content_hash")
        if saved != cset.compute_hash():
            raise DataError(
                f"{directory}: content hash mismatch (saved {str(saved)[:12]}..., files give "
                f"{cset.compute_hash()[:12]}...): the set was changed or damaged; {fix}"
            )
        return cset


@dataclass
class CandidateConfig:
    """How candidate sets are sampled.

    Attributes
    ----------
    sampler:
        A registered sampler: ``uniform``, ``popularity``, ``textsim`` or ``mixed``.
    seed:
        Seeds every draw; the same seed gives the same sets.
    n_negatives:
        Negatives per top-K row (19: 20 candidates, as in BDLM).
    n_interaction_negatives:
        Negatives per positive for interaction prediction (1: balanced classes).
    textsim_top:
        Text-similarity negatives are drawn among this many nearest non-interacted items.
    mix_popularity:
        Share of ``mixed`` negatives drawn by popularity; the rest by text similarity.
    popularity_alpha:
        Popularity weights are ``train_count ** popularity_alpha``.
    encoder:
        The sentence encoder for item titles (text samplers only).
    """

    sampler: str = "mixed"
    seed: int = 0
    n_negatives: int = 19
    n_interaction_negatives: int = 1
    textsim_top: int = 50
    mix_popularity: float = 0.5
    popularity_alpha: float = 1.0
    encoder: EncoderConfig = field(default_factory=EncoderConfig)

    def __post_init__(self) -> None:
        sampler = SAMPLERS.get(self.sampler)  # unknown name: ConfigError listing the choices
        for name in ("seed", "n_negatives", "n_interaction_negatives", "textsim_top"):
            v = getattr(self, name)
            low = 0 if name == "seed" else 1
            if not isinstance(v, int | np.integer) or isinstance(v, bool) or v < low:
                raise ConfigError(f"candidates.{name} must be an integer >= {low}, got {v!r}")
            setattr(self, name, int(v))
        n_max = max(self.n_negatives, self.n_interaction_negatives)
        if sampler.needs_text and self.textsim_top < n_max:
            raise ConfigError(
                f"candidates.textsim_top ({self.textsim_top}) must be at least the number of "
                f"negatives per row ({n_max})"
            )
        if not isinstance(self.mix_popularity, int | float) or not 0 <= self.mix_popularity <= 1:
            raise ConfigError(
                f"candidates.mix_popularity must be in [0, 1], got {self.mix_popularity!r}"
            )
        if not isinstance(self.popularity_alpha, int | float) or self.popularity_alpha < 0:
            raise ConfigError(
                f"candidates.popularity_alpha must be >= 0, got {self.popularity_alpha!r}"
            )
        if isinstance(self.encoder, Mapping):
            self.encoder = from_dict(EncoderConfig, dict(self.encoder), "candidates.encoder")

    def identity(self) -> dict[str, Any]:
        """The fields that decide the candidates (the encoder's model, not its batch size)."""
        d = to_dict(self)
        d["encoder"] = (
            {"model": self.encoder.model} if SAMPLERS.get(self.sampler).needs_text else None
        )
        return d


def item_texts(dataset: Dataset) -> list[str]:
    """One string per item for the encoder: its title, or its raw id when it has none."""
    titles = dataset.titles()
    return [t if t.strip() else raw for t, raw in zip(titles, dataset.items.raw, strict=True)]


def build_candidates(
    dataset: Dataset,
    split: Split,
    cfg: CandidateConfig | None = None,
    *,
    embeddings: np.ndarray | None = None,
    preprocess: Mapping[str, Any] | None = None,
) -> dict[Key, CandidateSet]:
    """Build the top-K and interaction candidate sets of the valid and test stages.

    Parameters
    ----------
    dataset, split:
        The re-indexed dataset and its leave-one-out split.
    cfg:
        Sampler, seed and sizes; defaults to BDLM's (mixed sampler, 19 + 1 negatives).
    embeddings:
        (n_items, dim) L2-normalised item vectors for the text samplers. ``None`` encodes the
        titles with ``cfg.encoder`` (cached) when the sampler needs them.
    preprocess:
        The preprocessing config, recorded in each set's meta.

    Returns
    -------
    dict
        ``{(task, stage): CandidateSet}`` for task in ``("topk", "interaction")`` and stage in
        ``("valid", "test")``.
    """
    cfg = cfg or CandidateConfig()
    sampler = make_candidate_sampler(dataset, split, cfg, embeddings)
    base_meta = {
        "dataset": dataset.stats(),
        "preprocess": dict(preprocess) if preprocess is not None else None,
        "split": _split_meta(split),
        "config": cfg.identity(),
    }

    out: dict[Key, CandidateSet] = {}
    keys = [(t, s) for t in TASKS for s in STAGES]
    for task, stage in tqdm(keys, desc="candidate sets", leave=False):
        n = cfg.n_negatives if task == "topk" else cfg.n_interaction_negatives
        held = split.stage(stage)
        users = held["user"].to_numpy(np.int64)
        positives = held["item"].to_numpy(np.int64)
        # one stream per (task, stage): a set does not depend on which others were built
        rng = np.random.default_rng([cfg.seed, TASKS.index(task), STAGES.index(stage)])
        neg = sampler.sample(users, positives, n, rng)
        # mixed returns text then popularity negatives; shuffle so a column says nothing of
        # the sampler that filled it (prompts list candidates in column order)
        negatives = rng.permuted(neg.items, axis=1)
        items = np.concatenate([positives[:, None], negatives], axis=1)
        labels = np.zeros(items.shape, dtype=np.int8)
        labels[:, 0] = 1
        meta = dict(base_meta, negatives_by_sampler={k: int(v) for k, v in neg.counts.items()})
        cset = CandidateSet(task, stage, users, items, labels, meta)
        cset.meta["content_hash"] = cset.compute_hash()
        out[(task, stage)] = cset
    return out


def make_candidate_sampler(
    dataset: Dataset,
    split: Split,
    cfg: CandidateConfig | None = None,
    embeddings: np.ndarray | None = None,
):
    """The negative sampler of ``cfg`` over this split: what builds the candidate sets.

    Its negatives are never an item the user interacted with in any split. BDLM's LLM side
    draws its training candidates with it too, so training lists look like test lists.
    """
    cfg = cfg or CandidateConfig()
    _check_split(dataset, split)
    frames = [dataset.inter, split.train, split.valid, split.test]
    seen = SeenItems.from_pairs(
        np.concatenate([f["user"].to_numpy() for f in frames]),
        np.concatenate([f["item"].to_numpy() for f in frames]),
        dataset.n_users,
        dataset.n_items,
    )
    popularity = np.bincount(split.train["item"].to_numpy(), minlength=dataset.n_items)
    sampler_cls = SAMPLERS.get(cfg.sampler)
    if sampler_cls.needs_text and embeddings is None:
        embeddings = encode_titles(item_texts(dataset), cfg.encoder)
    if embeddings is not None:
        embeddings = np.asarray(embeddings, dtype=np.float32)
    ctx = SamplingContext(
        seen,
        popularity.astype(np.float64),
        embeddings,
        popularity_alpha=float(cfg.popularity_alpha),
        textsim_top=cfg.textsim_top,
        mix_popularity=float(cfg.mix_popularity),
    )
    return sampler_cls(ctx)


def _check_split(dataset: Dataset, split: Split) -> None:
    if (split.n_users, split.n_items) != (dataset.n_users, dataset.n_items):
        raise DataError(
            f"the split has {split.n_users} users and {split.n_items} items but dataset "
            f"{dataset.name!r} has {dataset.n_users} and {dataset.n_items}; split this dataset"
        )


def _split_meta(split: Split) -> dict[str, Any]:
    return {
        "method": "leave_one_out",
        "train": len(split.train),
        "valid": len(split.valid),
        "test": len(split.test),
    }


# ---------------------------------------------------------------------------------------------
# collections on disk and the cache


# ---------------------------------------------------------------------------------------------
# CSV in raw ids, for other tools


__all__ = [
    "CandidateConfig",
    "CandidateSet",
    "build_candidates",
    "item_texts",
]
