"""The experiment config: one YAML file describes a whole comparison (datasets x methods x seeds).

Example (``configs/smoke.yaml``)::

    name: smoke
    out: runs/smoke
    seeds: [0]
    candidates: {sampler: mixed, seed: 0}
    datasets: [ml-100k]
    methods:
      - {name: popularity, model: popularity}
      - {name: mf, model: mf, train_config: {epochs: 1}}

Every section is a typed dataclass; an unknown key raises :class:`~lmrec.errors.ConfigError`
naming its dotted path (``experiment.methods[1].train_confg``). Shared settings are written once
with YAML anchors and merge keys rather than a second inheritance mechanism; top-level keys
starting with ``x-`` hold the anchors and are otherwise ignored::

    x-train: &train {num_threads: 2, patience: 5}
    methods:
      - {name: mf, train_config: {<<: *train, epochs: 40}}
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmrec.config import from_dict, load_file
from lmrec.errors import ConfigError

# The sections of a method that MethodSpec.per_dataset may override.
OVERRIDABLE = ("model_config", "train_config", "options")
# Folder names of cells: datasets may be spec strings ("atomic:/data/x"), which are not.
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def slug(text: str) -> str:
    """A folder-safe version of ``text`` (runs of other characters become ``_``)."""
    return _SAFE.sub("_", text).strip("_") or "_"


def default_label(name: str) -> str:
    """A short report label for a dataset name or spec string (see :class:`DatasetSpec`)."""
    prefix, colon, rest = name.partition(":")
    if colon and ("/" in rest or "\\" in rest or "." in rest.partition("?")[0]):
        stem = Path(rest.partition("?")[0]).name.split(".")[0]
        return slug(stem)
    return slug(name)


@dataclass
class DatasetSpec:
    """One dataset of the grid.

    Attributes
    ----------
    name:
        A name or spec string :func:`lmrec.data.load_dataset` knows (``ml-100k``,
        ``amazon2014:Grocery_and_Gourmet_Food``, ...).
    label:
        Folder name and column-group title in the report; default: a name made folder-safe, or
        for a spec string with a path (``csv:data/lastfm/plays.dat?...``, ``json:dir/name``,
        ``atomic:dir/name``) the file's stem (``plays``).
    preprocess:
        :class:`~lmrec.data.PreprocessConfig` fields for this dataset, over the experiment's
        ``preprocess`` defaults.
    data_dir:
        Local folder to load the dataset from (else the usual sources).
    """

    name: str
    label: str = ""
    preprocess: dict[str, Any] = field(default_factory=dict)
    data_dir: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError("dataset name must be a non-empty string")
        self.label = self.label or default_label(self.name)
        if slug(self.label) != self.label:
            raise ConfigError(
                f"dataset label {self.label!r} must be folder-safe (letters, digits, . _ -); "
                f"try {slug(self.label)!r}"
            )
        _check_mapping("preprocess", self.preprocess)


@dataclass
class MethodSpec:
    """One method (a row of the tables).

    Attributes
    ----------
    name:
        Unique, folder-safe identifier of the method (``lightgcn``, ``bdlm-drs-wo-jl``).
    kind:
        The registered cell kind that runs it: ``domain`` (a model of :mod:`lmrec.models`
        trained by :func:`lmrec.train.run.train_run`), ``llm`` or ``bdlm`` (registered by their
        own modules), or any kind added to :data:`lmrec.experiment.cell.CELL_KINDS`.
    model:
        What the kind builds: a registered domain model for ``domain`` (default: ``name``), an
        LLM name or path for the other kinds.
    model_config, train_config:
        The kind's model and training configs as mappings, built and checked for every cell
        before the first cell runs (:func:`lmrec.experiment.cell.check_cell`), so a typo fails
        at once with its method and field. The experiment seed overrides ``train_config.seed``.
    label:
        Row title in the report; default: ``name``. Also matched, case-insensitively, against
        the paper's rows to print its figures beside ours.
    options:
        Anything else the kind reads (e.g. the LLM's prompt mode); ``domain`` takes none.
    per_dataset:
        Settings for one dataset only, by dataset label: ``{ml-1m: {train_config: {batch_size:
        16384}}}``. Each of ``model_config``, ``train_config`` and ``options`` given there is
        merged over the method's own (key by key).
    """

    name: str
    kind: str = "domain"
    model: str = ""
    model_config: dict[str, Any] = field(default_factory=dict)
    train_config: dict[str, Any] = field(default_factory=dict)
    label: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    per_dataset: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or slug(self.name) != self.name:
            raise ConfigError(
                f"method name {self.name!r} must be a non-empty folder-safe string "
                "(letters, digits, . _ -)"
            )
        if not isinstance(self.kind, str) or not self.kind:
            raise ConfigError(f"method {self.name!r}: kind must be a string such as 'domain'")
        self.model = self.model or self.name
        self.label = self.label or self.name
        for name in ("model_config", "train_config", "options"):
            _check_mapping(name, getattr(self, name))
        _check_mapping("per_dataset", self.per_dataset)
        for label, over in self.per_dataset.items():
            _check_mapping(f"per_dataset.{label}", over)
            unknown = sorted(set(over) - set(OVERRIDABLE))
            if unknown:
                raise ConfigError(
                    f"per_dataset.{label}: unknown key(s) {', '.join(unknown)}; valid keys: "
                    f"{', '.join(OVERRIDABLE)}"
                )
            for name, value in over.items():
                _check_mapping(f"per_dataset.{label}.{name}", value)

    def for_dataset(self, label: str) -> MethodSpec:
        """This method with its ``per_dataset[label]`` settings merged in (and none left)."""
        over = self.per_dataset.get(label, {})
        merged = {k: {**getattr(self, k), **over.get(k, {})} for k in OVERRIDABLE}
        return dataclasses.replace(self, per_dataset={}, **merged)


@dataclass
class AblationSpec:
    """Methods compared in the ablation chart (bars per method, one group per dataset).

    Issue 5 fills this with BDLM and its variants (w/o JL, w/o PE, w/o ET); here it only names
    methods of the grid.
    """

    methods: list[str] = field(default_factory=list)
    metric: str = "topk/HR@1"


@dataclass
class LambdaSweepSpec:
    """Methods that differ only in BDLM's lambda, for the lambda curve (one line per dataset).

    ``methods[i]`` was trained with ``lambdas[i]``; lambda 0 is drawn on the symlog axis.
    ``series`` adds more lines over the same lambdas, each a name -> one method per lambda
    (e.g. BDLM-llm beside BDLM-drs); ``label`` names the line of ``methods`` when there are more.
    """

    methods: list[str] = field(default_factory=list)
    lambdas: list[float] = field(default_factory=list)
    metric: str = "topk/HR@1"
    label: str = ""
    series: dict[str, list[str]] = field(default_factory=dict)

    def lines(self) -> dict[str, list[str]]:
        """Every line of the curve: ``label`` -> ``methods``, then ``series``."""
        return {self.label: list(self.methods), **self.series}

    def __post_init__(self) -> None:
        for name, methods in {"methods": self.methods, **self.series}.items():
            if not isinstance(methods, list) or len(methods) != len(self.lambdas):
                n = len(methods) if isinstance(methods, list) else methods
                raise ConfigError(
                    f"lambda_sweep ({name}): {n} methods but {len(self.lambdas)} lambdas; "
                    "give one lambda per method"
                )
        for lam in self.lambdas:
            if isinstance(lam, bool) or not isinstance(lam, int | float) or lam < 0:
                raise ConfigError(f"lambda_sweep.lambdas must be numbers >= 0, got {lam!r}")


@dataclass
class ExperimentConfig:
    """A whole comparison: every dataset x every method x every seed is one cell.

    Attributes
    ----------
    name:
        Title of the report.
    datasets, methods:
        The grid (see :class:`DatasetSpec`, :class:`MethodSpec`). A dataset may be written as
        its name alone.
    seeds:
        Training seeds; the report shows mean +- std over them. ``[0, 1, 2]`` for the paper's
        protocol of several seeds.
    candidates:
        :class:`~lmrec.protocol.candidates.CandidateConfig` fields, the same for every cell, so
        every number of a dataset is on the same saved candidate sets.
    seed_candidates:
        Also draw the candidate sets with each cell's seed (their variance then enters the std).
        Default False: seeds vary training only and every method is scored on one protocol.
    preprocess:
        :class:`~lmrec.data.PreprocessConfig` defaults for every dataset.
    out:
        Output folder (relative to the working directory); ``run_experiment(out_dir=...)`` wins.
    isolate:
        Run each cell in its own Python process (default): its peak memory is then its own, and
        a crash or leak cannot touch the next cell. False runs cells in this process (tests,
        kinds defined in a script); peak memory is then the process's high-water mark so far.
    fail_fast:
        Stop at the first failed cell; default False runs the others and raises at the end.
    paper_reference:
        Print the BDLM paper's Table 3 (ML-1M) beside our ML-1M figures.
    ablation, lambda_sweep:
        Optional charts.
    reference:
        The method every top-K row is compared with on the same users in the report's paired
        test (e.g. ``lightgcn``); None picks the first domain-model method other than
        popularity, if any.
    """

    name: str
    datasets: list[DatasetSpec]
    methods: list[MethodSpec]
    seeds: list[int] = field(default_factory=lambda: [0])
    candidates: dict[str, Any] = field(default_factory=dict)
    seed_candidates: bool = False
    preprocess: dict[str, Any] = field(default_factory=dict)
    out: str = "runs/experiment"
    isolate: bool = True
    fail_fast: bool = False
    paper_reference: bool = True
    ablation: AblationSpec | None = None
    lambda_sweep: LambdaSweepSpec | None = None
    reference: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError("experiment.name must be a non-empty string")
        if not self.datasets:
            raise ConfigError("experiment.datasets must list at least one dataset")
        if not self.methods:
            raise ConfigError("experiment.methods must list at least one method")
        if (
            not isinstance(self.seeds, list)
            or not self.seeds
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.seeds)
        ):
            raise ConfigError(
                f"experiment.seeds must be a non-empty list of integers >= 0, got {self.seeds!r}"
            )
        for what, names in (
            ("seeds", self.seeds),
            ("datasets (labels)", [d.label for d in self.datasets]),
            ("methods (names)", [m.name for m in self.methods]),
        ):
            dupes = sorted({str(n) for n in names if names.count(n) > 1})
            if dupes:
                raise ConfigError(f"experiment.{what}: duplicated {', '.join(dupes)}")
        _check_mapping("experiment.candidates", self.candidates)
        _check_mapping("experiment.preprocess", self.preprocess)
        labels = {d.label for d in self.datasets}
        for m in self.methods:
            extra = sorted(set(m.per_dataset) - labels)
            if extra:
                raise ConfigError(
                    f"experiment.methods ({m.name}).per_dataset: {', '.join(extra)} not among "
                    f"the dataset labels ({', '.join(sorted(labels))})"
                )
        known = {m.name for m in self.methods}
        if self.reference is not None and self.reference not in known:
            raise ConfigError(
                f"experiment.reference: {self.reference!r} is not among the methods "
                f"({', '.join(sorted(known))})"
            )
        for section in ("ablation", "lambda_sweep"):
            spec = getattr(self, section)
            named = list(spec.methods) if spec else []
            for extra in getattr(spec, "series", {}).values():
                named += extra
            missing = [m for m in named if m not in known]
            if missing:
                raise ConfigError(
                    f"experiment.{section}.methods: {', '.join(missing)} not among the methods "
                    f"({', '.join(sorted(known))})"
                )

    def reference_method(self) -> str | None:
        """The paired test's reference (``reference``, else the first domain model)."""
        if self.reference is not None:
            return self.reference
        for m in self.methods:
            if m.kind == "domain" and m.model != "popularity":
                return m.name
        return None

    def method(self, name: str) -> MethodSpec:
        """The method called ``name``."""
        for m in self.methods:
            if m.name == name:
                return m
        raise ConfigError(f"no method {name!r}; methods: {', '.join(m.name for m in self.methods)}")


def experiment_from_dict(data: dict[str, Any], where: str = "experiment") -> ExperimentConfig:
    """Build an :class:`ExperimentConfig` from a plain dict (the parsed YAML).

    The lists of datasets and methods are built item by item, so an error names the item
    (``experiment.methods[2].model_confg``).
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: must be a mapping, got {type(data).__name__}")
    # Top-level "x-..." keys only hold YAML anchors for the sections below (as in
    # docker-compose); anything else unknown still raises.
    data = {k: v for k, v in data.items() if not (isinstance(k, str) and k.startswith("x-"))}
    for key in ("datasets", "methods"):
        if key not in data:
            raise ConfigError(f"{where}: missing required key {key!r}")
        if not isinstance(data[key], list):
            raise ConfigError(f"{where}.{key} must be a list, got {type(data[key]).__name__}")
    data["datasets"] = [
        _item(DatasetSpec, d, f"{where}.datasets[{i}]") for i, d in enumerate(data["datasets"])
    ]
    data["methods"] = [
        _item(MethodSpec, m, f"{where}.methods[{i}]") for i, m in enumerate(data["methods"])
    ]
    return from_dict(ExperimentConfig, data, where)


def load_experiment(path: str | Path) -> ExperimentConfig:
    """Read an experiment config from a YAML or JSON file (errors name the file and the key)."""
    return experiment_from_dict(load_file(path), where=f"{path}: experiment")


def _item(cls: type, value: Any, where: str) -> Any:
    if isinstance(value, str) and cls is DatasetSpec:
        value = {"name": value}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: must be a mapping, got {type(value).__name__}")
    if "name" not in value:
        raise ConfigError(f"{where}: missing required key 'name'")
    try:
        return from_dict(cls, value, where)
    except ConfigError as exc:
        msg = str(exc)
        # __post_init__ messages do not know their position in the file; add it.
        raise ConfigError(msg if msg.startswith(where) else f"{where}: {msg}") from None


def _check_mapping(name: str, value: Any) -> None:
    if not isinstance(value, dict):
        raise ConfigError(f"{name} must be a mapping, got {type(value).__name__}")
