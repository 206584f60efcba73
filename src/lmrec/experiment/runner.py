"""Run an experiment: expand the grid into cells, run the unfinished ones, write the report.

``run_experiment("configs/baselines.yaml")`` runs every (dataset, method, seed) cell in its own
folder ``<out>/cells/<dataset>/<method>/seed-<s>/`` (see :mod:`lmrec.experiment.cell`):

- a cell whose ``metrics.json`` exists is finished and skipped, so running the same command
  again only does what is left;
- an interrupted or failed cell is run again on the same folder, and its kind resumes from its
  own checkpoint (``train_run`` continues after its last completed epoch);
- a cell whose saved ``spec.json`` differs from the config (other than labels and cosmetic
  keys such as ``progress``) raises, instead of mixing two configs in one row.

By default every cell runs in a fresh Python process (``isolate: true``): the peak RSS recorded in
its ``cell.json`` is then that cell's own, not the high-water mark of everything before it, and a
crash, a leak or a global torch setting cannot carry over to the next cell.

Under a multi-process launcher (``torchrun --nproc_per_node N -m lmrec.cli experiment ...`` or
``accelerate launch``) every process runs the same cells in the same order, in-process, so the
cells of the kinds that shard their work (:data:`LAUNCHED_KINDS`: LLM fine-tuning, BDLM's joint
training) train and evaluate on all of them; only the main process writes the cell files and the
report. The other kinds train in one process: their cells must have finished before the launch
(run the same command without the launcher first, e.g. with ``--only`` those methods), and the
launch says which ones are missing before any work.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from lmrec.config import to_dict
from lmrec.errors import ConfigError, LmrecError
from lmrec.experiment.cell import (
    CELL_FILE,
    CELL_KINDS,
    CHILD_COMMAND,
    KIND_TARGETS,
    LOG_FILE,
    METRICS_FILE,
    SPEC_FILE,
    Cell,
    CellError,
    check_cell,
    execute_cell,
    now_iso,
    read_spec,
    record_attempt,
    resolve_kind,
    save_spec,
    target_of,
)
from lmrec.experiment.config import ExperimentConfig, experiment_from_dict, load_experiment
from lmrec.experiment.grid import CELLS_DIR, cell_dir, expand, select_cells
from lmrec.experiment.paired import paired_markdown
from lmrec.experiment.report import write_report
from lmrec.experiment.tables import same_users_markdown, table3_rich
from lmrec.utils.io import read_json, write_json

__all__ = ["CELL_KINDS", "KIND_TARGETS", "expand", "run_experiment", "select_cells"]

EXPERIMENT_FILE = "experiment.json"
# cell kinds whose training and evaluation shard across the processes of a launch
LAUNCHED_KINDS = ("llm", "bdlm")
LOCK_FILE = ".lock"
LOG_TAIL = 2000  # characters of a failed isolated cell's log quoted in the error


def run_experiment(
    config: str | Path | ExperimentConfig | dict,
    out_dir: str | Path | None = None,
    *,
    only: str | Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    console: Console | None = None,
) -> Path:
    """Run the unfinished cells of an experiment and write its report.

    Parameters
    ----------
    config:
        Path of a YAML/JSON experiment config, an :class:`ExperimentConfig`, or its dict form.
    out_dir:
        Output folder; default: the config's ``out``.
    only:
        Run only the cells matching these patterns (see :func:`select_cells`). The report still
        covers every finished cell of the grid.
    seeds:
        Replace the config's seeds (``--seeds 0,1,2``); cells of seeds already run are reused.
    console:
        Where the progress and the final table go (default: a new rich console).

    Returns
    -------
    Path
        ``<out>/report.md``. Beside it: ``results.json``, ``results.csv`` and the PNG charts.

    Raises
    ------
    CellError
        After the report is written, when any cell failed (or at the first failure with
        ``fail_fast``); running the same command again retries the failed cells.
    """
    source = None
    if isinstance(config, str | Path):
        source = str(config)
        cfg = load_experiment(config)
    elif isinstance(config, dict):
        cfg = experiment_from_dict(config)
    else:
        cfg = config
    if seeds is not None:
        cfg = experiment_from_dict({**to_dict(cfg), "seeds": [int(s) for s in seeds]})
    out = Path(out_dir if out_dir is not None else cfg.out)
    console = console or Console()

    cells = expand(cfg)
    chosen = select_cells(cells, only)
    names = {m.name for m in cfg.methods}
    checked = set()
    for cell in chosen:  # every config is built now: a typo fails before any cell trains
        resolve_kind(cell.method.kind)
        key = (cell.dataset, cell.method.name)
        if key in checked:
            continue
        checked.add(key)
        source_method = ((cell.method.options or {}).get("domain") or {}).get("from_method")
        if source_method is not None and source_method not in names:
            raise ConfigError(
                f"method {cell.method.name!r}: options.domain.from_method {source_method!r} is "
                f"not a method of this experiment ({', '.join(sorted(names))})"
            )
        check_cell(cell)
    isolate = cfg.isolate
    from lmrec.utils.distributed import launched, processes

    if launched():
        command = f"lmrec experiment {source or '<config>'}"
        if out_dir is not None:
            command += f" --out {out_dir}"
        if seeds is not None:
            command += f" --seeds {','.join(str(int(s)) for s in seeds)}"
        _check_launchable(out, chosen, command)
        isolate = False  # every process runs the cells in-process, in the one process group
        if not processes().is_main:  # the main process holds the folder and writes the files
            return _run(cfg, out, chosen, source, Console(quiet=True), isolate)
    with _exclusive(out):
        return _run(cfg, out, chosen, source, console, isolate)


def _check_launchable(out: Path, chosen: list[Cell], command: str) -> None:
    """Under a launcher, refuse (before any work) cells that train in one process only and have
    not finished yet, naming them and the command that runs them, and launched-kind cells that
    would train a domain model inside the cell."""
    from lmrec.experiment.kinds import bdlm_config, llm_cell_config

    waiting, inside = [], []
    for c in chosen:
        if c.method.kind not in LAUNCHED_KINDS:
            if not (cell_dir(out, c) / METRICS_FILE).exists():
                waiting.append(c)
        elif c.method.kind == "bdlm":
            _, config, from_method = bdlm_config(c)
            if from_method is None and not config["domain"].get("run"):
                inside.append(c)
        else:
            preload = llm_cell_config(c).get("preload") or {}
            if preload.get("init") == "domain" and not preload.get("domain_run"):
                inside.append(c)
    if waiting:
        names = ",".join(dict.fromkeys(c.method.name for c in waiting))
        raise ConfigError(
            f"under a multi-process launch only the {' and '.join(LAUNCHED_KINDS)} cells run "
            "(they shard across the processes); these cells train in one process and have not "
            f"finished: {', '.join(c.id for c in waiting)}. Run them first without the launcher: "
            f"{command} --only {names}"
        )
    if inside:
        raise ConfigError(
            f"cells {', '.join(c.id for c in inside)} would train their domain model inside the "
            "cell, which runs in one process only: under a launch give bdlm methods "
            "options.domain.from_method (a method of this experiment) or options.domain.run, "
            "and llm methods options.preload.domain_run (a finished `lmrec train` folder)"
        )


def _run(
    cfg: ExperimentConfig,
    out: Path,
    chosen: list[Cell],
    source: str | None,
    console: Console,
    isolate: bool,
) -> Path:
    from lmrec.utils.distributed import processes

    procs = processes()
    if procs.is_main:
        write_json(out / EXPERIMENT_FILE, {"source": source, "config": to_dict(cfg)})

    failures: list[tuple[Cell, BaseException]] = []
    with Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task(cfg.name, total=len(chosen))
        for cell in chosen:
            folder = cell_dir(out, cell)
            progress.update(task, description=f"{cfg.name}: {cell.id}")
            if _prepare_folder(cell, folder):
                progress.console.print(f"[dim]{cell.id}: finished earlier, skipped[/]")
                progress.advance(task)
                continue
            try:
                _run_cell(cell, folder, isolate)
            except Exception as exc:  # CellError, or an in-process kind's own error
                if procs.world > 1:
                    # a rank that failed alone would meet the others' collectives at the next
                    # cell's barrier: stop the launch (the launcher ends every process); the
                    # attempt is recorded and the same command resumes the cell
                    raise
                failures.append((cell, exc))
                progress.console.print(f"[red]{cell.id}: failed[/] ({_first_line(exc)})")
                if cfg.fail_fast:
                    break
            else:
                if procs.is_main:
                    wall = read_json(folder / CELL_FILE)["attempts"][-1]["wall_s"]
                    progress.console.print(f"[green]{cell.id}[/]: done in {wall:.1f} s")
            progress.advance(task)

    procs.barrier()
    if not procs.is_main:  # the main process writes and prints the report
        return out / "report.md"
    report = write_report(cfg, out, source=source)
    results = read_json(out / "results.json")
    console.print(table3_rich(results))
    same = same_users_markdown(results)
    if same:  # rows scored on a subset of users, beside their domain model on those users
        from rich.markdown import Markdown

        console.print("On the same users (methods scored on a subset, beside their domain model):")
        console.print(Markdown(same))
    if results.get("paired"):
        from rich.markdown import Markdown

        console.print("HR@1 with 95% intervals, paired against the reference on the same users:")
        console.print(Markdown(paired_markdown(cfg, results["paired"])))
    console.print(f"report: {report}")
    if failures:
        lines = "\n".join(f"- {c.id}: {_first_line(e)}" for c, e in failures)
        raise CellError(
            f"{len(failures)} of {len(chosen)} cells failed (details in each cell's "
            f"{CELL_FILE} and {LOG_FILE} under {out / CELLS_DIR}):\n{lines}\n"
            f"The report covers the finished cells; run the same command again to retry "
            "the failed ones (they resume from their checkpoints)."
        ) from failures[0][1]
    return report


@contextlib.contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """Hold ``<out>/.lock`` while running: two runs on one folder would write the same
    checkpoints. The OS drops the lock when the process dies, so a crash leaves no stale lock."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOCK_FILE, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LmrecError(
                f"another run is using {out} (it holds {out / LOCK_FILE}); wait for it to end "
                "or give this one another output folder"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _prepare_folder(cell: Cell, folder: Path) -> bool:
    """Save or check the cell's spec; True when the cell is already finished.

    Under a launcher every process checks, and the main one saves."""
    from lmrec.utils.distributed import processes

    procs = processes()
    procs.barrier()  # the previous cell's files are written
    if (folder / SPEC_FILE).exists():
        saved, _ = read_spec(folder)
        if saved.comparable() != cell.comparable():
            diff = _diff(saved.comparable(), cell.comparable())
            raise ConfigError(
                f"{folder / SPEC_FILE}: cell {cell.id} was run with a different config "
                f"({diff}); delete {folder} to rerun it, or give the method a new name"
            )
    if (folder / METRICS_FILE).exists():
        return True
    fn = resolve_kind(cell.method.kind)
    if procs.is_main:
        save_spec(cell, folder, KIND_TARGETS.get(cell.method.kind) or _target_or_none(fn))
    procs.barrier()
    return False


def _target_or_none(fn: Any) -> str | None:
    try:
        return target_of(fn)
    except ConfigError:
        return None  # only an in-process run can call it; _run_cell says so if isolated


def _run_cell(cell: Cell, folder: Path, isolate: bool) -> None:
    if not isolate:
        execute_cell(folder, resolve_kind(cell.method.kind), isolated=False)
        return
    target_of(resolve_kind(cell.method.kind))  # raises a clear error if not importable
    n_before = _n_attempts(folder)
    started, t0 = now_iso(), time.perf_counter()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(folder / LOG_FILE, "a", encoding="utf-8") as log:
        proc = subprocess.run(
            [*CHILD_COMMAND, str(folder)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            check=False,
        )
    if proc.returncode == 0:
        if not (folder / METRICS_FILE).exists():
            raise CellError(f"cell {cell.id} exited without writing {folder / METRICS_FILE}")
        return
    if _n_attempts(folder) == n_before:
        # Killed before it could write its own record (out of memory, a signal): record what
        # this side saw. Its peak memory is unknown.
        code = proc.returncode
        record_attempt(
            folder,
            {
                "started_at": started,
                "isolated": True,
                "status": "killed",
                "error": f"killed by signal {-code}" if code < 0 else f"exit status {code}",
                "wall_s": round(time.perf_counter() - t0, 3),
                "finished_at": now_iso(),
                "peak_rss_mb": None,
            },
        )
    tail = (folder / LOG_FILE).read_text(encoding="utf-8", errors="replace")[-LOG_TAIL:]
    raise CellError(
        f"cell {cell.id} exited with status {proc.returncode}; end of {folder / LOG_FILE}:\n{tail}"
    )


def _n_attempts(folder: Path) -> int:
    path = folder / CELL_FILE
    return len(read_json(path)["attempts"]) if path.exists() else 0


def _diff(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> str:
    parts = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            sub = _diff(a, b, f"{prefix}{key}.")
            if sub:
                parts.append(sub)
        elif a != b:
            parts.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return ", ".join(parts)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
