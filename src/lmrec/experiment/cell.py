"""One cell of an experiment: (dataset, method, seed) -> metrics, timed and measured.

A cell kind is a function ``(cell: Cell, out_dir: Path) -> dict[str, float]`` registered in
:data:`CELL_KINDS`. It trains/evaluates one method on one dataset with one seed, keeps its files
in ``out_dir``, and must resume when called again on the same ``out_dir`` after an
interruption (``train_run`` does). A kind may also write ``protocol.json`` with a ``dataset``
entry (the dataset statistics), as ``train_run`` does; the report reads it.

Registering a kind::

    from lmrec.experiment.cell import CELL_KINDS

    @CELL_KINDS.register("llm")
    def run_llm_cell(cell, out_dir):
        ...
        return metrics

Register a module-level function: an isolated cell runs in a fresh Python process, which finds
the function again by its module and name (``"pkg.module:function"``). Kinds that no module has
registered yet can be named that way in :data:`KIND_TARGETS`, so they load only when used.

A cell folder holds ``spec.json`` (what the cell is), ``run/`` (the kind's own files),
``cell.json`` (attempts with wall time and peak memory), ``log.txt`` (an isolated cell's
output) and, once finished, ``metrics.json``: its presence is what marks the cell done.
"""

from __future__ import annotations

import importlib
import resource
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lmrec.config import from_dict, to_dict
from lmrec.errors import ConfigError, LmrecError
from lmrec.experiment.config import MethodSpec
from lmrec.registry import Registry
from lmrec.utils.io import read_json, write_json

SPEC_FILE = "spec.json"
CELL_FILE = "cell.json"
METRICS_FILE = "metrics.json"
LOG_FILE = "log.txt"
RUN_DIR = "run"

# argv of an isolated cell's process, followed by the cell folder.
CHILD_COMMAND = (
    sys.executable,
    "-c",
    "import sys; from lmrec.experiment.cell import main; sys.exit(main(sys.argv[1:]))",
)

CellFn = Callable[["Cell", Path], dict[str, float]]
CELL_KINDS: Registry[CellFn] = Registry("cell kind")

# Kinds loaded on first use, as "module:function" (the module need not be imported before).
# The LLM side and BDLM add their lines here when their cell functions exist.
KIND_TARGETS: dict[str, str] = {
    "domain": "lmrec.experiment.cell:run_domain_cell",
    "llm": "lmrec.experiment.kinds:run_llm_cell",
    "bdlm": "lmrec.experiment.kinds:run_bdlm_cell",
    "gpt4sm": "lmrec.experiment.kinds:run_gpt4sm_cell",
}

# What builds a kind's configs without doing any work (see :func:`check_cell`).
KIND_CHECKS: dict[str, str] = {
    "domain": "lmrec.experiment.cell:check_domain_cell",
    "llm": "lmrec.experiment.kinds:check_llm_cell",
    "bdlm": "lmrec.experiment.kinds:check_bdlm_cell",
    "gpt4sm": "lmrec.experiment.kinds:check_gpt4sm_cell",
}

# Config keys that change how a cell runs, not what it computes: a finished cell stays valid.
COSMETIC_KEYS = {"progress", "num_threads", "device"}


class CellError(LmrecError):
    """A cell failed; the message names its folder and the end of its log."""


@dataclass
class Cell:
    """Everything one cell needs, saved as ``spec.json`` (a kind reads only this).

    Attributes
    ----------
    dataset, dataset_label:
        The dataset's name (or spec string) and its folder-safe label.
    method:
        The method, with ``train_config["seed"]`` already set to ``seed``.
    seed:
        The cell's seed.
    preprocess, candidates:
        The resolved preprocessing and candidate-set configs (dataset overrides applied).
    data_dir:
        Local folder to load the dataset from, or None for the usual sources.
    """

    dataset: str
    dataset_label: str
    method: MethodSpec
    seed: int
    preprocess: dict[str, Any] = field(default_factory=dict)
    candidates: dict[str, Any] = field(default_factory=dict)
    data_dir: str | None = None

    @property
    def id(self) -> str:
        """``<dataset>/<method>/seed-<s>``: the cell's folder under ``cells/``."""
        return f"{self.dataset_label}/{self.method.name}/seed-{self.seed}"

    def comparable(self) -> dict[str, Any]:
        """The spec without what cannot change the result (labels, cosmetic train keys)."""
        d = to_dict(self)
        d["method"].pop("label", None)
        for key in COSMETIC_KEYS:
            d["method"]["train_config"].pop(key, None)
        return d


def cell_from_dict(data: dict[str, Any], where: str = "cell") -> Cell:
    """Rebuild a :class:`Cell` from its ``spec.json`` contents."""
    return from_dict(Cell, data, where)


def resolve_kind(kind: str) -> CellFn:
    """The function of cell kind ``kind``: registered, or loaded from :data:`KIND_TARGETS`."""
    if kind not in CELL_KINDS and kind in KIND_TARGETS:
        fn = load_target(KIND_TARGETS[kind])
        if kind not in CELL_KINDS:  # importing the module may have registered it already
            CELL_KINDS.add(kind, fn)
    if kind not in CELL_KINDS:
        choices = sorted(set(CELL_KINDS.names()) | set(KIND_TARGETS))
        raise ConfigError(
            f"unknown cell kind {kind!r}; choose one of: {', '.join(choices)} (the 'llm' and "
            "'bdlm' kinds exist once their modules register them)"
        )
    return CELL_KINDS.get(kind)


def target_of(fn: CellFn) -> str:
    """``"module:function"`` for a module-level function, so another process can import it."""
    module, name = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not module or module == "__main__" or "<locals>" in name:
        raise ConfigError(
            f"cell kind function {name or fn!r} is not importable from another process (defined "
            f"in {module or 'an unknown module'}); define it at module level in an importable "
            "module, or set 'isolate: false' to run cells in this process"
        )
    return f"{module}:{name}"


def load_target(target: str) -> CellFn:
    """Import ``"module:function"``."""
    module, _, name = target.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot load cell kind function {target!r}: {exc}") from exc
    return obj


def check_cell(cell: Cell) -> None:
    """Build every config ``cell`` would build, doing no work: a typo fails at once, naming its
    method and field, instead of after the cells before it have trained. Kinds without a check
    in :data:`KIND_CHECKS` (user-registered ones) are checked when they run."""
    target = KIND_CHECKS.get(cell.method.kind)
    if target is not None:
        load_target(target)(cell)


def no_options(cell: Cell, kind: str) -> None:
    if cell.method.options:
        raise ConfigError(
            f"method {cell.method.name!r}: the {kind} kind takes no options, got "
            f"{', '.join(sorted(cell.method.options))}"
        )


def check_domain_cell(cell: Cell) -> None:
    """The model config and the training config of a ``domain`` cell."""
    from lmrec.models import model_config_class
    from lmrec.train.defaults import train_defaults
    from lmrec.train.trainer import TrainConfig

    no_options(cell, "domain")
    where = f"method {cell.method.name!r}"
    model_cls = model_config_class(cell.method.model)
    from_dict(model_cls, dict(cell.method.model_config or {}), f"{where}: model_config")
    train = train_defaults(cell.method.model, dict(cell.method.train_config or {}))
    from_dict(TrainConfig, train, f"{where}: train_config")


def run_domain_cell(cell: Cell, out_dir: Path) -> dict[str, float]:
    """The ``domain`` kind: :func:`lmrec.train.run.train_run` (which resumes ``out_dir``)."""
    from lmrec.train.run import train_run

    no_options(cell, "domain")
    return train_run(
        cell.method.model,
        cell.dataset,
        out_dir=out_dir,
        model_config=cell.method.model_config,
        train_config=cell.method.train_config,
        preprocess=cell.preprocess,
        candidates=cell.candidates,
        data_dir=cell.data_dir,
    )


def execute_cell(cell_dir: Path, fn: CellFn | None = None, *, isolated: bool = False) -> dict:
    """Run the cell saved in ``cell_dir``, appending one attempt to ``cell.json``.

    On success writes ``metrics.json`` (last, so it marks the cell finished) and returns the
    metrics. On failure records the error in the attempt and re-raises.

    ``isolated`` says this process runs only this cell, so its peak RSS is the cell's own;
    otherwise the figure is this process's high-water mark so far (an upper bound). Under a
    multi-process launch every process runs the cell and the main one writes its files.
    """
    from lmrec.utils.distributed import processes

    main = processes().is_main
    cell_dir = Path(cell_dir)
    cell, _ = read_spec(cell_dir)
    fn = fn or resolve_kind(cell.method.kind)
    attempt: dict[str, Any] = {
        "started_at": now_iso(),
        "isolated": isolated,
        "peak_rss_scope": "cell process" if isolated else "shared process, high-water so far",
    }
    t0 = time.perf_counter()
    try:
        metrics = fn(cell, cell_dir / RUN_DIR)
        if not isinstance(metrics, dict):
            raise CellError(
                f"cell kind {cell.method.kind!r} returned {type(metrics).__name__}, not a dict"
            )
        metrics = {str(k): float(v) for k, v in metrics.items()}
        attempt["status"] = "finished"
    except BaseException as exc:
        attempt["status"] = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        attempt["error"] = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        raise
    finally:
        attempt["wall_s"] = round(time.perf_counter() - t0, 3)
        attempt["finished_at"] = now_iso()
        attempt.update(_peak_memory())
        if main:
            record_attempt(cell_dir, attempt)
    if main:
        write_json(cell_dir / METRICS_FILE, metrics)
    return metrics


def record_attempt(cell_dir: Path, attempt: dict[str, Any]) -> None:
    """Append ``attempt`` to ``cell.json`` and refresh the totals over attempts."""
    path = Path(cell_dir) / CELL_FILE
    record = read_json(path) if path.exists() else {"attempts": []}
    record["attempts"].append(attempt)
    runs = record["attempts"]
    record["status"] = runs[-1].get("status", "failed")
    # A resumed cell's cost is the sum of its attempts; its peak, the highest of them.
    record["wall_s"] = round(sum(a.get("wall_s", 0.0) for a in runs), 3)
    peaks = [a["peak_rss_mb"] for a in runs if a.get("peak_rss_mb") is not None]
    record["peak_rss_mb"] = max(peaks) if peaks else None
    gpu = [a["peak_gpu_mb"] for a in runs if a.get("peak_gpu_mb") is not None]
    record["peak_gpu_mb"] = max(gpu) if gpu else None
    write_json(path, record)


def _peak_memory() -> dict[str, float | None]:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    mb = rss / 2**20 if sys.platform == "darwin" else rss / 2**10
    out: dict[str, float | None] = {"peak_rss_mb": round(mb, 1), "peak_gpu_mb": None}
    torch = sys.modules.get("torch")  # only if the cell used torch: never import it here
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def save_spec(cell: Cell, cell_dir: Path, target: str | None) -> None:
    """Write ``spec.json`` with the kind's import target for an isolated run."""
    write_json(Path(cell_dir) / SPEC_FILE, {**to_dict(cell), "_kind_target": target})


def read_spec(cell_dir: Path) -> tuple[Cell, str | None]:
    """The cell saved in ``cell_dir`` and its kind's import target (if saved)."""
    data = read_json(Path(cell_dir) / SPEC_FILE)
    target = data.pop("_kind_target", None)
    return cell_from_dict(data, str(Path(cell_dir) / SPEC_FILE)), target


def main(argv: list[str] | None = None) -> int:
    """Entry point of an isolated cell; the runner starts it as :data:`CHILD_COMMAND`.

    (Not ``python -m lmrec.experiment.cell``: that would load this module twice, as
    ``__main__`` and under its name, with two :data:`CELL_KINDS` registries.)
    """
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: main([CELL_DIR])", file=sys.stderr)
        return 2
    cell_dir = Path(argv[0])
    cell, target = read_spec(cell_dir)
    fn = load_target(target) if target else resolve_kind(cell.method.kind)
    try:
        execute_cell(cell_dir, fn, isolated=True)
    except Exception:
        traceback.print_exc()
        return 1
    return 0
