import numpy as np
import pytest

from lmrec.eval.significance import (
    bootstrap_interval,
    mcnemar_exact,
    paired_comparison,
    positive_ranks,
    read_ranks,
    write_ranks,
)


def test_positive_ranks_are_pessimistic_on_ties():
    scores = np.array([[0.5, 0.9, 0.1], [0.5, 0.5, 0.1], [0.9, 0.1, 0.2], [0.0, 0.0, 0.0]])
    labels = np.array([[1, 0, 0], [1, 0, 0], [1, 0, 0], [0, 0, 1]])
    assert positive_ranks(scores, labels).tolist() == [2, 2, 1, 3]
    with pytest.raises(ValueError, match="exactly one positive"):
        positive_ranks(scores, np.zeros_like(labels))


def test_mcnemar_exact_matches_the_binomial_by_hand():
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    assert mcnemar_exact(1, 9) == pytest.approx(2 * 11 / 1024)
    assert mcnemar_exact(9, 1) == pytest.approx(2 * 11 / 1024)
    assert mcnemar_exact(3, 3) == 1.0
    assert mcnemar_exact(0, 0) == 1.0
    # large n stays finite: 600 vs 400 discordant pairs is far past p = 1e-9
    assert 0 < mcnemar_exact(600, 400) < 1e-9


def test_bootstrap_interval_width_matches_the_binomial_standard_error():
    rng = np.random.default_rng(0)
    hits = (rng.random(2000) < 0.3).astype(float)
    mean, low, high = bootstrap_interval([hits], n_boot=4000)
    se = np.sqrt(mean * (1 - mean) / len(hits))
    assert mean == pytest.approx(hits.mean())
    assert high - low == pytest.approx(2 * 1.96 * se, rel=0.1)
    assert bootstrap_interval([np.ones(50)]) == (1.0, 1.0, 1.0)
    # two seeds: the mean of the seeds' means
    assert bootstrap_interval([np.ones(10), np.zeros(30)])[0] == pytest.approx(0.5)


def test_paired_comparison_on_known_pairs():
    # 100 users; A right on users 0-39, B right on users 10-34: A only 15 (0-9, 35-39), B only 0
    a = {(0, u): (1 if u < 40 else 5) for u in range(100)}
    b = {(0, u): (1 if 10 <= u < 35 else 3) for u in range(100)}
    b[(0, 999)] = 1  # a user only B scored is ignored
    out = paired_comparison(a, b)
    assert out["n"] == 100 and out["a"] == 0.4 and out["b"] == 0.25
    assert out["diff"] == pytest.approx(0.15)
    assert out["only_a"] == 15 and out["only_b"] == 0
    assert out["p"] == pytest.approx(2 / 2**15)
    assert out["low"] > 0 and out["high"] < 0.3
    # HR@5: A's misses are rank 5, so A hits everyone; B's rank-3 misses are hits too
    assert paired_comparison(a, b, k=5)["diff"] == 0


def test_ranks_file_round_trip(tmp_path):
    write_ranks(tmp_path / "r.json", np.array([3, 1]), np.array([2, 7]), 20)
    assert read_ranks(tmp_path / "r.json") == {3: 2, 1: 7}
