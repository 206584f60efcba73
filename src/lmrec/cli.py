"""The ``lmrec`` command line. Thin: it parses arguments, then calls library functions.

Heavy imports happen inside the commands so ``lmrec --help`` stays instant.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from lmrec.errors import ConfigError, LmrecError

app = typer.Typer(
    help="lmrec: recommendation with pre-trained language models.", no_args_is_help=True
)
data_app = typer.Typer(help="Datasets: statistics and saved candidate sets.", no_args_is_help=True)
llm_app = typer.Typer(help="The LLM side: fine-tune and evaluate.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(llm_app, name="llm")
bdlm_app = typer.Typer(
    help="BDLM: the LLM and a domain model trained together.", no_args_is_help=True
)
app.add_typer(bdlm_app, name="bdlm")
# Outside a terminal (CI logs, pipes) rich wraps at 80 columns; results tables are wider.
console = Console(width=None if Console().is_terminal else 160)

DataDir = Annotated[
    Path | None,
    typer.Option(help="Folder with the raw files (else $LMREC_DATA_DIR, cache, shipped wheels)."),
]
Threshold = Annotated[
    float | None, typer.Option(help="Keep ratings >= this (implicit feedback); default keeps all.")
]
UserCore = Annotated[int, typer.Option(help="k-core: minimum interactions per user.")]
ItemCore = Annotated[int, typer.Option(help="k-core: minimum interactions per item.")]


def _preprocess(threshold: float | None, user_core: int, item_core: int):
    from lmrec.data import PreprocessConfig

    return PreprocessConfig(rating_threshold=threshold, user_core=user_core, item_core=item_core)


@data_app.command("stats")
def data_stats(
    dataset: Annotated[str, typer.Argument(help="ml-100k, ml-1m, amazon-office, or a spec.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    data_dir: DataDir = None,
    rating_threshold: Threshold = None,
    user_core: UserCore = 0,
    item_core: ItemCore = 0,
) -> None:
    """Users, items, interactions and sparsity (the BDLM paper's Table 1)."""
    from lmrec.data import load_dataset
    from lmrec.report import stats_table

    ds = load_dataset(
        dataset,
        data_dir=data_dir,
        preprocess=_preprocess(rating_threshold, user_core, item_core),
    )
    stats = ds.stats()
    if as_json:
        typer.echo(json.dumps(stats, indent=2))
    else:
        console.print(stats_table([stats]))


@data_app.command("candidates")
def data_candidates(
    dataset: Annotated[str, typer.Argument(help="Dataset name or spec.")],
    out: Annotated[Path, typer.Option(help="Folder for the saved sets and candidates.csv.")],
    sampler: Annotated[str, typer.Option(help="uniform, popularity, textsim or mixed.")] = "mixed",
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    data_dir: DataDir = None,
    rating_threshold: Threshold = None,
    user_core: UserCore = 0,
    item_core: ItemCore = 0,
) -> None:
    """Build (or reuse) the saved candidate sets of both tasks and export them as CSV."""
    from lmrec.protocol.prepare import prepare

    prep = prepare(
        dataset,
        data_dir=data_dir,
        preprocess=_preprocess(rating_threshold, user_core, item_core),
        candidates={"sampler": sampler, "seed": seed},
    )
    paths = prep.export(out)
    for p in paths:
        console.print(f"wrote {p}")


@app.command("evaluate")
def evaluate(
    run: Annotated[
        Path | None, typer.Option(help="Re-evaluate a saved run folder (from `lmrec train`).")
    ] = None,
    dataset: Annotated[str, typer.Option(help="Dataset for the popularity baseline.")] = "ml-100k",
    sampler: Annotated[str, typer.Option(help="Negative sampler of the candidate sets.")] = "mixed",
    seed: Annotated[int, typer.Option(help="Candidate sampling seed.")] = 0,
    out: Annotated[Path | None, typer.Option(help="Folder for metrics.json.")] = None,
    data_dir: DataDir = None,
) -> None:
    """Evaluate a saved run, or (without --run) the popularity baseline on both tasks."""
    from lmrec.report import metrics_table
    from lmrec.train.run import evaluate_run, train_run

    if run is not None:
        metrics = evaluate_run(run)
        name = run.name
    else:
        out = out or Path("runs") / f"popularity-{dataset}-{sampler}-{seed}"
        metrics = train_run(
            "popularity",
            dataset,
            out_dir=out,
            data_dir=data_dir,
            candidates={"sampler": sampler, "seed": seed},
        )
        name = f"popularity on {dataset}"
    console.print(metrics_table({name: metrics}))


@app.command("train")
def train(
    model: Annotated[str, typer.Argument(help="A registered model: mf, lightgcn, sasrec, ...")],
    dataset: Annotated[str, typer.Option(help="Dataset name or spec.")],
    out: Annotated[Path, typer.Option(help="Run folder: checkpoint, config, metrics.json.")],
    config: Annotated[
        Path | None, typer.Option(help="YAML with model/train/preprocess/candidates sections.")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Train a domain model (resuming from OUT's last checkpoint, if any), then evaluate it."""
    from lmrec.config import load_file
    from lmrec.report import metrics_table
    from lmrec.train.run import train_run

    sections = load_file(config) if config else {}
    metrics = train_run(model, dataset, out_dir=out, data_dir=data_dir, **_sections(sections))
    console.print(metrics_table({f"{model} on {dataset}": metrics}))


def _sections(cfg: dict) -> dict:

    allowed = {"model", "train", "preprocess", "candidates"}
    unknown = sorted(set(cfg) - allowed)
    if unknown:
        raise ConfigError(
            f"config: unknown section(s) {', '.join(unknown)}; valid: {', '.join(sorted(allowed))}"
        )
    return {f"{k}_config" if k in ("model", "train") else k: v for k, v in cfg.items()}


@llm_app.command("train")
def llm_train_cmd(
    dataset: Annotated[str, typer.Option(help="Dataset name or spec.")],
    out: Annotated[Path, typer.Option(help="Run folder: adapters/weights, config, metrics.json.")],
    mode: Annotated[
        str | None, typer.Option(help="full, lora, extra, prompt, or none (zero/few-shot).")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="YAML in the form of LLMRunConfig.")] = None,
) -> None:
    """Fine-tune an LLM recommender (resuming from OUT's last checkpoint) and evaluate it."""
    from lmrec.config import load_file
    from lmrec.llm import llm_train
    from lmrec.report import metrics_table

    metrics = llm_train(dataset, mode, out, load_file(config) if config else None)
    console.print(metrics_table({f"llm ({mode or 'config'}) on {dataset}": metrics}))


@bdlm_app.command("train")
def bdlm_train_cmd(
    dataset: Annotated[str, typer.Option(help="Dataset name or spec.")],
    out: Annotated[Path, typer.Option(help="Run folder: checkpoints, M, cascade, metrics.json.")],
    config: Annotated[Path | None, typer.Option(help="YAML in the form of BDLMConfig.")] = None,
) -> None:
    """Train BDLM (resuming from OUT's last checkpoint) and evaluate both sides; runs under
    torchrun / accelerate launch on several processes too."""
    from lmrec.bdlm.run import run_bdlm
    from lmrec.config import load_file
    from lmrec.report import metrics_table
    from lmrec.utils.distributed import processes

    metrics = run_bdlm(dataset, load_file(config) if config else None, out)
    if processes().is_main:
        rows = {f"BDLM-{side} on {dataset}": metrics[side] for side in ("llm", "drs", "domain")
                if side in metrics}  # fmt: skip
        console.print(metrics_table(rows))


@llm_app.command("evaluate")
def llm_evaluate_cmd(
    run: Annotated[
        Path | None, typer.Option(help="A run folder written by `lmrec llm train`.")
    ] = None,
    dataset: Annotated[
        str | None, typer.Option(help="Without --run: evaluate the model untrained on this.")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="YAML in the form of LLMRunConfig.")] = None,
    out: Annotated[Path | None, typer.Option(help="Folder for metrics.json.")] = None,
) -> None:
    """Evaluate a saved LLM run, or an untrained (zero-/few-shot) LLM on a dataset."""
    from lmrec.config import load_file
    from lmrec.errors import ConfigError
    from lmrec.llm import llm_evaluate
    from lmrec.report import metrics_table

    if run is None and dataset is None:
        raise ConfigError("give --run DIR (a trained run) or --dataset NAME (zero-/few-shot)")
    target = (
        run if run is not None else {"dataset": dataset, "llm": load_file(config) if config else {}}
    )
    metrics = llm_evaluate(target, out)
    console.print(metrics_table({str(run or dataset): metrics}))


@llm_app.command("prompts")
def llm_prompts_cmd(
    dataset: Annotated[str, typer.Argument(help="Dataset name or spec.")],
    out: Annotated[Path, typer.Option(help="The JSON-lines file to write.")],
    split: Annotated[str, typer.Option(help="train, valid or test.")] = "test",
    task: Annotated[str, typer.Option(help="topk or interaction.")] = "topk",
    config: Annotated[
        Path | None, typer.Option(help="YAML of PromptConfig fields (templates, max_history).")
    ] = None,
    sampler: Annotated[str, typer.Option(help="Candidate sampler of the saved sets.")] = "mixed",
    epoch: Annotated[int, typer.Option(help="Training epoch (train split).")] = 1,
    seed: Annotated[int, typer.Option(help="Training seed (train split).")] = 0,
    batch_size: Annotated[
        int, typer.Option(help="The joint trainer's batch size (train split).")
    ] = 16,
    data_dir: DataDir = None,
) -> None:
    """Write the prompts exactly as the LLM sees them, one JSON object a line."""
    from lmrec.config import load_file
    from lmrec.llm.dump import write_prompts

    prompt = load_file(config) if config else {"topk": "id-topk", "interaction": "id-interaction"}
    n = write_prompts(
        dataset,
        split,
        task,
        out,
        prompt=prompt,
        candidates={"sampler": sampler},
        data_dir=data_dir,
        epoch=epoch,
        seed=seed,
        batch_size=batch_size,
    )
    console.print(f"{n} {task} prompts of the {split} split written to {out}")


@app.command("experiment")
def experiment(
    config: Annotated[Path, typer.Argument(help="Experiment YAML (datasets x methods x seeds).")],
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default: from the config).")
    ] = None,
    only: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated cells to run: method names or labels, dataset labels, or "
            "globs over cell ids like '*/sasrec/*' (default all)."
        ),
    ] = None,
    seeds: Annotated[
        str | None,
        typer.Option(help="Comma-separated seeds replacing the config's (e.g. 0,1,2)."),
    ] = None,
) -> None:
    """Run a whole comparison; finished cells are skipped, an interrupted one resumes."""
    from lmrec.experiment.runner import run_experiment

    only_list = [m.strip() for m in only.split(",")] if only else None
    seed_list = None
    if seeds:
        try:
            seed_list = [int(s) for s in seeds.split(",") if s.strip()]
        except ValueError:
            raise ConfigError(f"--seeds takes comma-separated integers, got {seeds!r}") from None
    report_dir = run_experiment(config, out, only=only_list, seeds=seed_list, console=console)
    from lmrec.utils.distributed import processes

    if processes().is_main:
        console.print(f"report written to {report_dir}")


@app.command("demo")
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the report.")] = Path("runs/demo"),
    datasets: Annotated[
        str, typer.Option(help="Comma-separated datasets.")
    ] = "ml-100k,ml-1m,amazon-office",
) -> None:
    """The main job on the offline defaults: statistics, candidate sets, baselines, report."""
    from lmrec.experiment.demo import run_demo

    run_demo([d.strip() for d in datasets.split(",") if d.strip()], out, console=console)
    console.print(f"report written to {out / 'report.md'}")


@app.command("serve")
def serve(
    run_dir: Annotated[Path, typer.Argument(help="A finished run folder (train, llm or BDLM).")],
    host: Annotated[str, typer.Option(help="Address to bind (loopback unless told).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(help="Processes (each loads the weights).")] = 1,
    side: Annotated[
        str | None, typer.Option(help="BDLM runs: drs (default) or llm re-ranks.")
    ] = None,
    retriever: Annotated[
        Path | None, typer.Option(help="LLM runs: an `lmrec train` folder that retrieves.")
    ] = None,
    data_dir: DataDir = None,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="LMREC_API_KEY", help="Require this X-API-Key (all but /health)."),
    ] = None,
    max_batch: Annotated[
        int, typer.Option(help="Requests per forward pass (1: no batching).")
    ] = 32,
    max_wait_ms: Annotated[float, typer.Option(help="How long a batch waits to fill.")] = 5.0,
    queue_size: Annotated[int, typer.Option(help="Waiting requests before 503.")] = 256,
    timeout_s: Annotated[float, typer.Option(help="Per-request timeout (504).")] = 30.0,
    precision: Annotated[
        str,
        typer.Option(help="LLM precision: run (as evaluated offline), auto, fp32 or bf16."),
    ] = "run",
    threads: Annotated[
        int, typer.Option(help="torch threads for scoring (0: the run's own setting).")
    ] = 0,
    compile: Annotated[
        bool | None,
        typer.Option(
            "--compile/--no-compile",
            help="LLM runs: decoder layers compiled (default: as the run's llm.compile).",
        ),
    ] = None,
) -> None:
    """Serve a saved run over HTTP: POST /recommend, POST /score, GET /items/{id}, /metrics."""
    import dataclasses
    import os

    import uvicorn

    from lmrec.serve.app import ServeConfig
    from lmrec.serve.load import check_run_folder

    check_run_folder(run_dir)  # refuse a wrong folder before binding a port
    config = ServeConfig(
        side=side,
        retriever=None if retriever is None else str(retriever),
        data_dir=None if data_dir is None else str(data_dir),
        api_key=api_key,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        queue_size=queue_size,
        timeout_s=timeout_s,
        precision=precision,
        threads=threads,
        compile=compile,
    )
    os.environ[SERVE_ENV] = json.dumps({"run_dir": str(run_dir), **dataclasses.asdict(config)})
    uvicorn.run("lmrec.serve.app:app_from_env", factory=True, host=host, port=port, workers=workers)


SERVE_ENV = "LMREC_SERVE"


def main(argv: list[str] | None = None) -> None:
    """Entry point; bad input ends with one clear line and exit status 2."""
    code = 0
    try:
        app(args=argv, standalone_mode=False)
    except LmrecError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        code = 2
    except typer.Exit as exc:
        code = exc.exit_code
    except Exception as exc:  # click usage errors
        import click

        if not isinstance(exc, click.exceptions.ClickException):
            raise
        exc.show()
        code = exc.exit_code
    from lmrec.utils.distributed import exit_launched, launched

    if launched():  # one of several processes: leave without the interpreter's teardown
        exit_launched(code)
    if code:
        raise SystemExit(code)


if __name__ == "__main__":
    main()
