"""A fake cell kind whose metrics are known from (method, seed), and a grid config using it."""

from pathlib import Path
from types import SimpleNamespace

import pytest

from lmrec.experiment.cell import CELL_KINDS
from lmrec.utils.io import write_json

# Calls per cell id, and cell ids that raise on their first call (a simulated crash).
CALLS: dict[str, int] = {}
FAIL_FIRST: set[str] = set()
BASE = {"a": 0.2, "b": 0.5}


def fake_cell(cell, out_dir: Path) -> dict[str, float]:
    """HR@1 = BASE[method] + 0.1 * seed, F1 = 0.6 + 0.01 * seed; writes protocol.json."""
    CALLS[cell.id] = CALLS.get(cell.id, 0) + 1
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "progress.txt").write_text(f"call {CALLS[cell.id]}\n")
    if cell.id in FAIL_FIRST and CALLS[cell.id] == 1:
        raise RuntimeError(f"simulated crash in {cell.id}")
    write_json(
        out_dir / "protocol.json",
        {"dataset": {"dataset": cell.dataset, "users": 3, "items": 4, "interactions": 6,
                     "sparsity": 0.5}},
    )  # fmt: skip
    hr1 = BASE[cell.method.name] + 0.1 * cell.seed
    return {
        "topk/HR@1": hr1,
        "topk/HR@2": hr1 + 0.1,
        "interaction/precision": 0.7,
        "interaction/recall": 0.5 + 0.01 * cell.seed,
        "interaction/F1": 0.6 + 0.01 * cell.seed,
        "full/HR@10": 0.3,
        "full/NDCG@10": 0.2,
        "full/Recall@10": 0.3,
        "train/seed_seen": float(cell.method.train_config["seed"]),
    }


if "fake" not in CELL_KINDS:
    CELL_KINDS.add("fake", fake_cell)


def grid_config(**over) -> dict:
    """Two datasets x two methods x three seeds = 12 cells, run in this process."""
    cfg = {
        "name": "toy grid",
        "datasets": ["toy", {"name": "json:/tmp/other", "label": "other"}],
        "methods": [
            {"name": "a", "kind": "fake", "label": "LightGCN"},
            {"name": "b", "kind": "fake", "train_config": {"lr": 0.1}},
        ],
        "seeds": [0, 1, 2],
        "isolate": False,
    }
    cfg.update(over)
    return cfg


@pytest.fixture
def fake():
    """The fake kind's call counts, its crash set and the grid config (conftest is not importable
    by name)."""
    CALLS.clear()
    FAIL_FIRST.clear()
    yield SimpleNamespace(calls=CALLS, fail_first=FAIL_FIRST, config=grid_config, base=BASE)
    CALLS.clear()
    FAIL_FIRST.clear()
