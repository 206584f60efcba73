"""BDLM's configs, composed from component configs: :class:`JointConfig` (the joint schedule and
the domain side's optimiser), :class:`DomainSpec` (the domain model), the cascade and refit
configs, and :class:`BDLMConfig` over them with the LLM side's
:class:`~lmrec.llm.config.LLMSideConfig` (the stand-alone LLM run's config less its rows'
start, schedule and data, which BDLM owns). Every field is checked when the config is built, so
a typo fails before any work.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lmrec.bdlm.aligned import ROW_SCHEDULES
from lmrec.bdlm.cascade import CascadeConfig
from lmrec.bdlm.refit import RefitConfig
from lmrec.config import RESUMABLE, build_sections, to_dict
from lmrec.errors import ConfigError, DataError, check_ints, check_numbers
from lmrec.llm.config import LLMRunConfig, LLMSideConfig
from lmrec.llm.finetune import FinetuneConfig
from lmrec.llm.run import saved_llm


@dataclass
class JointConfig:
    """The schedule and the domain side's optimiser of :class:`lmrec.bdlm.joint.JointTrainer`.

    The LLM side's optimiser is the LLM config's ``train`` section
    (:class:`lmrec.llm.finetune.LLMOptimConfig`).

    Attributes
    ----------
    lam:
        lambda of eq. 9, the weight of the mutual-learning losses; 0 is *w/o JL*.
    epochs:
        Passes over the aligned rows; 0 trains nothing (tuning-free: the pre-loaded LLM and the
        domain model are scored as they are, i.e. zero-shot prompting with pre-loaded tokens).
    batch_size:
        Aligned rows per joint step (each gives 3 SFT prompts with both tasks).
    rows_per_epoch:
        Rows per epoch (the first of each shuffled epoch); 0 = every train interaction.
    lr_drs, weight_decay_drs:
        Adam's learning rate and L2 for the domain model (the paper: 1e-4).
    lr_head:
        Adam's learning rate for the cascade head (it starts from the domain model's output
        layer, with zero weight on h_LLM, and has to learn that part from few rows).
    native_weight:
        Weight of the domain model's own loss (BPR / BCE) in L_DRS, beside the cascade's BCE.
    write_rate:
        How much of its rows a side writes into M (1: overwrite).
    mutual_reduction:
        What the mutual MSE averages over: ``"element"`` (torch's ``mse_loss``, the paper's
        equations literally) or ``"row"`` (squared distance per row, d times larger; see
        :mod:`lmrec.bdlm.sharing`).
    train_llm, train_drs:
        Switch one side off (it is then neither stepped nor written into M).
    seed:
        Seeds every stream (rows, negatives, dropout of each side).
    save_every:
        Also checkpoint every this many steps (0: at the end of each epoch only).
    keep_checkpoints:
        Newest checkpoints kept.
    feature_batch_size:
        Prompt groups per forward pass when computing h_LLM.
    rows:
        The aligned rows' schedule (:mod:`lmrec.bdlm.aligned`): ``random`` (the domain model's
        own rows) or ``recent`` (every user every epoch, the e-th most recent train item as the
        target in epoch e: the test task's shape).
    listwise_weight:
        Weight of the listwise loss over the top-K prompts' candidate item-token logits
        (:func:`lmrec.llm.finetune.listwise_loss`) added to the SFT loss; 0 leaves SFT alone.
    progress:
        Show a tqdm bar.
    """

    lam: float = 0.1
    epochs: int = field(default=1, metadata=RESUMABLE)
    batch_size: int = 4
    rows_per_epoch: int = 0
    lr_drs: float = 1e-4
    lr_head: float = 1e-3
    weight_decay_drs: float = 0.0
    native_weight: float = 1.0
    write_rate: float = 1.0
    mutual_reduction: str = "element"
    train_llm: bool = True
    train_drs: bool = True
    seed: int = 0
    save_every: int = field(default=0, metadata=RESUMABLE)
    keep_checkpoints: int = 1
    feature_batch_size: int = 8
    progress: bool = field(default=True, metadata=RESUMABLE)
    num_threads: int = field(default=0, metadata=RESUMABLE)
    rows: str = "random"
    listwise_weight: float = 0.0

    def __post_init__(self) -> None:
        check_ints(
            "joint",
            self,
            {
                "epochs": 0,
                "batch_size": 1,
                "rows_per_epoch": 0,
                "save_every": 0,
                "keep_checkpoints": 1,
                "feature_batch_size": 1,
                "num_threads": 0,
            },
        )
        check_numbers(
            "joint",
            self,
            ("lam", "lr_drs", "lr_head", "weight_decay_drs", "native_weight", "listwise_weight"),
        )
        if self.rows not in ROW_SCHEDULES:
            raise ConfigError(f"joint.rows must be one of {ROW_SCHEDULES}, got {self.rows!r}")
        if self.lr_drs == 0 or self.lr_head == 0:
            raise ConfigError("joint.lr_drs and joint.lr_head must be > 0")
        if not 0 < self.write_rate <= 1:
            raise ConfigError(f"joint.write_rate must be in (0, 1], got {self.write_rate!r}")
        if self.mutual_reduction not in ("element", "row"):
            raise ConfigError(
                f"joint.mutual_reduction must be 'element' or 'row', got {self.mutual_reduction!r}"
            )
        if not (self.train_llm or self.train_drs):
            raise ConfigError("joint.train_llm and joint.train_drs are both off: nothing to train")


SIDES = ("llm", "drs")


PROJECTIONS = ("copy", "orthogonal", "linear")


# Where the settings of a stand-alone LLM run that BDLM owns itself go in a BDLM config; a BDLM
# config that gives them in its llm section is told where they belong.
_SAME_DATA = "{where}.{name} at the top level of the BDLM config (both sides use the same data)"
_OWNED = {
    "preload": "{where}.preload (true/false) and {where}.domain: BDLM pre-loads from its own "
    "domain model",
    "preprocess": _SAME_DATA,
    "candidates": _SAME_DATA,
    "data_dir": _SAME_DATA,
}
_SCHEDULE = {
    "epochs": "joint.epochs",
    "batch_size": "joint.batch_size",
    "max_steps": "joint.rows_per_epoch",
    "save_every": "joint.save_every",
    "keep_checkpoints": "joint.keep_checkpoints",
    "seed": "joint.seed",
    "accumulation_steps": "joint.batch_size (each process computes its shard in one pass)",
}


def _check_llm_section(llm: dict, where: str) -> None:
    """Name where a stand-alone LLM run's setting goes when a BDLM llm section has it."""
    for name, goes in _OWNED.items():
        if name in llm:
            raise ConfigError(
                f"{where}.llm.{name}: not a setting of BDLM's LLM side; use "
                + goes.format(where=where, name=name)
            )
    train = llm.get("train")
    for name, goes in _SCHEDULE.items():
        if isinstance(train, dict) and name in train:
            raise ConfigError(
                f"{where}.llm.train.{name}: the joint trainer owns the schedule; set {goes}"
            )


def saved_llm_side(llm: dict) -> dict:
    """A BDLM run's saved ``llm`` section as today's code reads it.

    Runs written before the LLM side had its own config class saved a whole stand-alone LLM
    run config there, whose rows' start, schedule and data settings BDLM refused to be set:
    they are dropped when they hold those refused defaults (anything else is kept, so the
    config check names it).
    """
    out = saved_llm(llm)
    if "preload" in out and out.get("seed", 0) != 0:
        # the random rows and the projection were seeded by llm.preload.seed (always 0) then,
        # by llm.seed now: rebuilt with this seed they would not be the saved run's
        raise DataError(
            f"this BDLM run was saved with llm.seed {out['seed']} by an older lmrec, which "
            "seeded the token rows with 0; it cannot be reloaded as it was trained"
        )
    run_defaults = to_dict(LLMRunConfig())
    schedule_defaults = to_dict(FinetuneConfig())
    for name in _OWNED:
        if name in out and out[name] == run_defaults[name]:
            out.pop(name)
    if isinstance(out.get("train"), dict):
        train = dict(out["train"])
        for name in _SCHEDULE:
            if name in train and train[name] == schedule_defaults[name]:
                train.pop(name)
        out["train"] = train
    return out


@dataclass
class DomainSpec:
    """The domain model BDLM pairs the LLM with.

    Attributes
    ----------
    model:
        A registered model with user and item tables: ``lightgcn`` (the paper's main choice),
        ``neumf`` (NCF, the paper's Table 4), ``gmf`` or ``mf``.
    model_config:
        Its config; ``dim`` defaults to the LLM's hidden size and must equal it.
    train_config:
        Its :class:`lmrec.train.TrainConfig` for pre-training (``seed`` defaults to
        ``joint.seed``).
    run:
        A finished ``lmrec train`` folder of such a model to use instead of training one.
    """

    model: str = "lightgcn"
    model_config: dict = field(default_factory=dict)
    train_config: dict = field(default_factory=dict)
    run: str | None = None


@dataclass
class BDLMConfig:
    """Everything one BDLM run needs.

    Attributes
    ----------
    llm:
        The LLM side (:class:`lmrec.llm.config.LLMSideConfig`): model, device, ``id_tokens``
        (false: text-only prompts, *w/o ET*), training mode, prompts, SFT prompt kinds
        (``examples``), optimiser (``train``; the schedule is ``joint``'s), and the evaluation
        settings (``tasks``, ``eval_limit``, ``eval_batch_size``) both sides use. Its ``seed``
        also seeds the random user/item rows (*w/o PE*) and the orthogonal projection.
    domain:
        The domain model (:class:`DomainSpec`).
    joint:
        The joint trainer (:class:`JointConfig`), with lambda as ``lam``.
    cascade:
        The domain side's head (:class:`lmrec.bdlm.cascade.CascadeConfig`).
    cascade_refit:
        Refit that head on held-out interactions after joint training
        (:class:`lmrec.bdlm.refit.RefitConfig`; off by default).
    preload:
        Pre-load the user/item tokens from the domain model (false: *w/o PE*).
    projection:
        How domain rows reach the LLM's width: ``copy`` (the domain model is as wide as the
        LLM, the paper's setting), ``orthogonal`` (a narrower domain model, e.g. LightGCN at its
        best width 64, mapped by a fixed seeded matrix with orthonormal rows and rescaled to the
        LM's embedding norm) or ``linear`` (a map with bias fitted by ridge least squares from
        the item rows to the LM embedding of their titles, so items land near their words);
        M stays in the domain width (:mod:`lmrec.bdlm.sharing`).
    share_prefix:
        Compute h_LLM of prompts with a common beginning from one encoding of it.
    evaluate:
        Which sides to score: ``llm`` (BDLM-llm), ``drs`` (BDLM-drs).
    preprocess, candidates, data_dir:
        As for every method (:func:`lmrec.protocol.prepare.prepare`).
    """

    llm: LLMSideConfig = field(default_factory=LLMSideConfig)
    domain: DomainSpec = field(default_factory=DomainSpec)
    joint: JointConfig = field(default_factory=JointConfig)
    cascade: CascadeConfig = field(default_factory=CascadeConfig)
    cascade_refit: RefitConfig = field(default_factory=RefitConfig)
    preload: bool = True
    projection: str = "copy"
    share_prefix: bool = True
    evaluate: list[str] = field(default_factory=lambda: list(SIDES))
    preprocess: dict = field(default_factory=dict)
    candidates: dict = field(default_factory=dict)
    data_dir: str | None = None

    @staticmethod
    def check_raw(data: dict, where: str) -> None:
        """Called by :func:`lmrec.config.from_dict` before the sections are built."""
        if isinstance(data.get("llm"), dict):
            _check_llm_section(data["llm"], where)

    def __post_init__(self) -> None:
        if isinstance(self.llm, dict):
            _check_llm_section(self.llm, "bdlm")
        build_sections(self, "bdlm")  # sections given as dicts, by their annotated class
        if self.cascade_refit.rows == "lists" and (
            self.cascade.hidden or not self.cascade.use_llm_score
        ):
            raise ConfigError(
                "bdlm.cascade_refit.rows 'lists' fits the head's LLM-score column: it needs "
                "cascade.hidden 0 and cascade.use_llm_score true"
            )
        if self.cascade_refit.rows == "valid" and (
            self.cascade.hidden or not self.cascade.use_llm_feature
        ):
            raise ConfigError(
                "bdlm.cascade_refit refits the paper's linear head over [f_DRS ; h_LLM]: it needs "
                "cascade.hidden 0 and cascade.use_llm_feature true"
            )
        if (
            self.joint.listwise_weight > 0
            and "topk" in self.llm.examples.tasks
            and (not self.llm.id_tokens or self.llm.prompt.template("topk").answer != "item_token")
        ):
            raise ConfigError(
                "bdlm.joint.listwise_weight reads the candidates' item-token logits: it needs "
                "llm.id_tokens true and a top-K template that answers with an item token "
                "(e.g. id-topk or bdlm-topk)"
            )
        if self.cascade.use_llm_score and self.cascade_refit.rows != "lists":
            raise ConfigError(
                "bdlm.cascade.use_llm_score: the LLM-score column is fitted only by "
                "cascade_refit.rows 'lists' (joint training feeds it 0); set both"
            )
        if self.projection not in PROJECTIONS:
            raise ConfigError(
                f"bdlm.projection must be one of {PROJECTIONS}, got {self.projection!r}"
            )
        bad = [s for s in self.evaluate if s not in SIDES]
        if bad:
            raise ConfigError(f"bdlm.evaluate must be a subset of {SIDES}, got {bad}")
        llm = self.llm
        if not llm.id_tokens and (self.preload or self.joint.lam > 0):
            raise ConfigError(
                "bdlm.llm.id_tokens is false (text-only, w/o ET): there are no token rows to "
                "pre-load or share; set bdlm.preload: false and bdlm.joint.lam: 0"
            )


__all__ = [
    "PROJECTIONS",
    "SIDES",
    "BDLMConfig",
    "DomainSpec",
    "JointConfig",
    "saved_llm_side",
]
