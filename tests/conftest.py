"""Fixtures every test folder may use."""

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture
def metrics_from_ranks():
    """``check(metrics, ranks_file)``: a run's reported top-K metrics must equal the ones
    computed here, by hand, from the per-user ranks it saved beside them (HR@k = share of users
    whose positive ranks <= k; NDCG@20 = mean 1 / log2(rank + 1); MRR = mean 1 / rank)."""
    from lmrec.eval.significance import read_ranks

    def check(metrics: dict, ranks_file: Path, users: int | None = None) -> np.ndarray:
        ranks = np.array(list(read_ranks(ranks_file).values()), dtype=float)
        assert len(ranks) > 0 and (users is None or len(ranks) == users)
        expected = {
            "topk/HR@1": np.mean(ranks <= 1),
            "topk/HR@2": np.mean(ranks <= 2),
            "topk/NDCG@20": np.mean(1 / np.log2(ranks + 1)),
            "topk/MRR": np.mean(1 / ranks),
        }
        for key, value in expected.items():
            if key in metrics:
                assert metrics[key] == pytest.approx(value, abs=1e-9), key
        assert "topk/HR@1" in metrics
        return ranks

    return check
