"""The LLM side's configs, composed from component configs.

- :class:`LLMSideConfig`: what any run needs to build, prompt, fine-tune and score an LLM
  recommender (model, precision, id tokens, training mode, prompts, SFT prompt kinds, the
  optimiser, evaluation settings). BDLM's ``llm`` section is this.
- :class:`LLMRunConfig`: a stand-alone LLM run (``lmrec llm train``): the side, plus where its
  user/item rows start (:class:`PreloadConfig`), the SFT schedule
  (:class:`~lmrec.llm.finetune.FinetuneConfig` in ``train``) and the data settings.

Every section is checked by its own dataclass when the config is built, so a typo fails before
any work, with its dotted path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lmrec.config import build_sections
from lmrec.errors import ConfigError
from lmrec.llm.finetune import FinetuneConfig, LLMOptimConfig
from lmrec.llm.modes import ModeConfig
from lmrec.llm.prompts import PromptConfig
from lmrec.llm.resolve import DEFAULT_LLM
from lmrec.llm.sft import ExampleConfig
from lmrec.utils.precision import PRECISIONS

TASKS = ("topk", "interaction")


@dataclass
class PreloadConfig:
    """Where the user/item token rows of a stand-alone LLM run start.

    Attributes
    ----------
    init:
        ``"domain"``: from a domain model's ``user_item_embeddings()`` (BDLM pre-loading);
        ``"random"``: random rows with the vocabulary's norm (ablation *w/o PE*).
    domain_run:
        A domain-model run folder (``lmrec train`` output) to read the tables from.
    domain_model:
        Or a registered domain model to train on the spot into ``<out_dir>/domain`` (with
        ``domain_config`` / ``domain_train`` as its model and train configs).
    projection:
        ``auto``, ``copy``, ``orthogonal`` or ``linear``
        (:func:`lmrec.llm.tokens.preload_id_tokens`).
    seed:
        Seeds the random rows and the orthogonal projection.
    """

    init: str = "random"
    domain_run: str | None = None
    domain_model: str | None = None
    domain_config: dict = field(default_factory=dict)
    domain_train: dict = field(default_factory=dict)
    projection: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.init not in ("domain", "random"):
            raise ConfigError(f"preload.init must be 'domain' or 'random', got {self.init!r}")
        if self.init == "domain" and not (self.domain_run or self.domain_model):
            raise ConfigError(
                "preload.init=domain needs preload.domain_run (a trained domain-model folder) "
                "or preload.domain_model (a model name to train first)"
            )


@dataclass
class LLMSideConfig:
    """The LLM side of a run: everything but where its rows start, its schedule and its data.

    Attributes
    ----------
    model, device, dtype, precision:
        The LLM (:func:`lmrec.llm.resolve.load_llm`), where it runs, the weights' dtype, and
        the compute precision (``auto``: bf16 where the processor has it).
    id_tokens:
        Add one token per user and item (false: text-only prompts, *w/o ET*).
    mode:
        What is trained (:class:`lmrec.llm.modes.ModeConfig`).
    prompt:
        The prompt templates (:class:`lmrec.llm.prompts.PromptConfig`).
    examples:
        The SFT prompt kinds (:class:`lmrec.llm.sft.ExampleConfig`).
    train:
        The optimiser (:class:`lmrec.llm.finetune.LLMOptimConfig`).
    tasks, few_shot, eval_batch_size, eval_limit:
        What is evaluated, demonstrations per prompt, prompts per forward pass, and the first
        this many users only (0: every user).
    compile:
        Compile the decoder layers, for training and scoring
        (:func:`lmrec.llm.scoring.compile_layers`): in bf16 on 2 CPU cores with AMX, SFT
        1.46x and top-K scoring 1.32x faster, after ~40 s of compiling on an empty compile
        cache (a few seconds once cached); needs a C++ compiler
        on a CPU (without one the model runs eagerly, with a warning). Not under FSDP.
    num_threads:
        CPU threads (0: the machine's).
    seed:
        Seeds the model's random parts and the few-shot draw.
    """

    model: str = DEFAULT_LLM
    device: str = "auto"
    dtype: str | None = None
    precision: str = "auto"
    id_tokens: bool = True
    mode: ModeConfig = field(default_factory=ModeConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    examples: ExampleConfig = field(default_factory=ExampleConfig)
    train: LLMOptimConfig = field(default_factory=LLMOptimConfig)
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    few_shot: int = 0
    eval_batch_size: int = 8
    eval_limit: int = 0
    compile: bool = False
    num_threads: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        build_sections(self, "llm")  # sections given as dicts, by their annotated class
        bad = [t for t in self.tasks if t not in TASKS]
        if bad or not self.tasks:
            raise ConfigError(f"llm.tasks must be a non-empty subset of topk, interaction: {bad}")
        if self.few_shot < 0 or self.eval_limit < 0:
            raise ConfigError("llm.few_shot and llm.eval_limit must be >= 0")
        if self.eval_batch_size < 1:
            raise ConfigError(f"llm.eval_batch_size must be >= 1, got {self.eval_batch_size}")
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"llm.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )


@dataclass
class LLMRunConfig(LLMSideConfig):
    """A stand-alone LLM run (``lmrec llm train``): the side (:class:`LLMSideConfig`), where
    its rows start (``preload``), its SFT schedule (``train`` is a
    :class:`~lmrec.llm.finetune.FinetuneConfig`) and the data settings (as for every method:
    :func:`lmrec.protocol.prepare.prepare`)."""

    train: FinetuneConfig = field(default_factory=FinetuneConfig)
    preload: PreloadConfig = field(default_factory=PreloadConfig)
    preprocess: dict = field(default_factory=dict)
    candidates: dict = field(default_factory=dict)
    data_dir: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.id_tokens and self.preload.init == "domain":
            raise ConfigError("llm.preload.init=domain needs id_tokens: true (rows to pre-load)")


__all__ = ["TASKS", "LLMRunConfig", "LLMSideConfig", "PreloadConfig"]
