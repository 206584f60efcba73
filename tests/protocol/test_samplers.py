import numpy as np
import pytest

from lmrec.errors import ConfigError, DataError
from lmrec.protocol.samplers import SAMPLERS, SamplingContext, SeenItems, make_sampler


def _ctx(seen_by_user, n_items, popularity=None, embeddings=None, **kw):
    users = [u for u, items in seen_by_user.items() for _ in items]
    items = [i for its in seen_by_user.values() for i in its]
    seen = SeenItems.from_pairs(np.array(users), np.array(items), len(seen_by_user), n_items)
    pop = np.ones(n_items) if popularity is None else np.asarray(popularity, dtype=float)
    return SamplingContext(seen, pop, embeddings, **kw)


def _circle(n_items, step=0.1):
    """Unit vectors at angles 0, step, 2 step...: item j's nearest are j+-1, then j+-2, ..."""
    a = np.arange(n_items) * step
    return np.stack([np.cos(a), np.sin(a)], axis=1).astype(np.float32)


def test_registry_names():
    assert SAMPLERS.names() == ["mixed", "popularity", "textsim", "uniform"]
    with pytest.raises(ConfigError, match="choose one of"):
        SAMPLERS.get("nope")


def test_seen_items_contains():
    seen = SeenItems.from_pairs(np.array([0, 0, 1, 0]), np.array([2, 0, 1, 2]), 3, 4)
    got = seen.contains(np.array([0, 1, 2]), np.array([[0, 1, 2], [0, 1, -1], [3, 2, 0]]))
    assert got.tolist() == [[True, False, True], [False, True, False], [False, False, False]]
    assert seen.counts(np.array([0, 1, 2])).tolist() == [2, 1, 0]
    assert seen.items_of(0).tolist() == [0, 2]


def test_uniform_only_choice_is_the_unseen_items():
    # user 0 saw 0, 1, 2 of 6 items; 3 negatives must be exactly {3, 4, 5}
    ctx = _ctx({0: [0, 1, 2]}, 6)
    neg = make_sampler("uniform", ctx).sample(
        np.array([0]), np.array([2]), 3, np.random.default_rng(0)
    )
    assert sorted(neg.items[0].tolist()) == [3, 4, 5]
    assert neg.counts == {"uniform": 3}


def test_not_enough_unseen_items_is_a_clear_error():
    ctx = _ctx({0: [0, 1, 2, 3]}, 6)
    with pytest.raises(DataError, match="interacted with 4 of 6 items"):
        make_sampler("uniform", ctx).sample(
            np.array([0]), np.array([3]), 3, np.random.default_rng(0)
        )


def test_popularity_follows_counts():
    # unseen items 3 (count 1) and 5 (count 3); item 4 has no train interaction
    ctx = _ctx({0: [0, 1, 2]}, 6, popularity=[9, 9, 9, 1, 0, 3])
    rows = 4000
    neg = make_sampler("popularity", ctx).sample(
        np.zeros(rows, int), np.full(rows, 2), 1, np.random.default_rng(1)
    )
    share5 = (neg.items[:, 0] == 5).mean()
    assert set(np.unique(neg.items)) == {3, 5}  # zero weight never drawn when not needed
    assert abs(share5 - 0.75) < 0.03
    # two negatives: both weighted items, distinct
    neg2 = make_sampler("popularity", ctx).sample(
        np.zeros(50, int), np.full(50, 2), 2, np.random.default_rng(2)
    )
    assert (np.sort(neg2.items, axis=1) == [3, 5]).all()


def test_popularity_alpha_zero_is_uniform_over_unseen():
    ctx = _ctx({0: [0, 1, 2]}, 6, popularity=[9, 9, 9, 1, 0, 3], popularity_alpha=0.0)
    neg = make_sampler("popularity", ctx).sample(
        np.zeros(3000, int), np.full(3000, 2), 1, np.random.default_rng(0)
    )
    shares = np.bincount(neg.items[:, 0], minlength=6)[3:] / 3000
    assert np.allclose(shares, 1 / 3, atol=0.04)


def test_popularity_fills_with_zero_weight_items_when_needed():
    # only items 3 and 5 have weight; a third negative can only be item 4
    ctx = _ctx({0: [0, 1, 2]}, 6, popularity=[9, 9, 9, 1, 0, 3])
    neg = make_sampler("popularity", ctx).sample(
        np.array([0]), np.array([2]), 3, np.random.default_rng(0)
    )
    assert sorted(neg.items[0].tolist()) == [3, 4, 5]


def test_textsim_picks_the_nearest_unseen_titles():
    # item 5's neighbours by angle: 4 and 6, then 3 and 7, ...; the user saw 4 and 5
    ctx = _ctx({0: [4, 5]}, 12, embeddings=_circle(12), textsim_top=3)
    neg = make_sampler("textsim", ctx).sample(
        np.zeros(200, int), np.full(200, 5), 2, np.random.default_rng(0)
    )
    # pool = first 3 unseen neighbours: 6 (0.1 away), then 3 and 7 (0.2 away)
    assert set(np.unique(neg.items)) == {3, 6, 7}
    assert (neg.items[:, 0] != neg.items[:, 1]).all()
    # with top == n the pool is the answer
    ctx1 = _ctx({0: [4, 5]}, 12, embeddings=_circle(12), textsim_top=2)
    neg1 = make_sampler("textsim", ctx1).sample(
        np.array([0]), np.array([5]), 2, np.random.default_rng(0)
    )
    assert sorted(neg1.items[0].tolist()) == [3, 6]


def test_textsim_heavy_user_uses_the_full_ranking():
    # 300 items on an arc; the window of nearest items (4 * top + 128 = 132) is all seen
    n_items = 300
    a = np.arange(n_items) * 0.01
    emb = np.stack([np.cos(a), np.sin(a)], axis=1).astype(np.float32)
    ctx = _ctx({0: list(range(0, 200))}, n_items, embeddings=emb, textsim_top=1)
    neg = make_sampler("textsim", ctx).sample(
        np.array([0]), np.array([0]), 1, np.random.default_rng(0)
    )
    assert neg.items.tolist() == [[200]]  # the nearest item the user has not seen


def test_textsim_needs_embeddings():
    with pytest.raises(ConfigError, match="embeddings"):
        make_sampler("textsim", _ctx({0: [1]}, 5))


@pytest.mark.parametrize("share, expected_pop", [(0.0, 0), (1.0, 19 * 7), (0.5, None)])
def test_mixed_splits_negatives_between_samplers(share, expected_pop):
    ctx = _ctx({u: [u] for u in range(7)}, 60, embeddings=_circle(60), mix_popularity=share)
    users = np.arange(7)
    neg = make_sampler("mixed", ctx).sample(users, users, 19, np.random.default_rng(0))
    assert neg.items.shape == (7, 19)
    assert sum(neg.counts.values()) == 7 * 19
    for row, u in zip(neg.items, users, strict=True):
        assert len(set(row.tolist())) == 19 and u not in row
    if expected_pop is not None:
        assert neg.counts["popularity"] == expected_pop
    else:  # 9.5 per row: each row gets 9 or 10
        assert 7 * 9 <= neg.counts["popularity"] <= 7 * 10


def test_mixed_text_part_comes_from_the_text_pool():
    # popularity weight only on far items 40..59; text pool of item 0 = items 1..5 (top 5)
    pop = np.zeros(60)
    pop[40:] = 1
    emb = _circle(60, step=0.04)  # no wrap-around: item 0's nearest are 1, 2, 3...
    ctx = _ctx({0: [0]}, 60, popularity=pop, embeddings=emb, textsim_top=5)
    neg = make_sampler("mixed", ctx).sample(
        np.array([0]), np.array([0]), 4, np.random.default_rng(3)
    )
    row = set(neg.items[0].tolist())
    assert len(row & set(range(1, 6))) == 2 and len(row & set(range(40, 60))) == 2


@pytest.mark.parametrize("name", ["uniform", "popularity", "textsim", "mixed"])
def test_negatives_are_never_seen_distinct_and_seeded(name):
    rng0 = np.random.default_rng(123)
    n_users, n_items, n = 25, 40, 5
    seen_by_user = {
        u: rng0.choice(n_items, size=int(rng0.integers(1, n_items - 10)), replace=False).tolist()
        for u in range(n_users)
    }
    pop = rng0.integers(0, 50, size=n_items)
    emb = rng0.normal(size=(n_items, 8))
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    ctx = _ctx(seen_by_user, n_items, popularity=pop, embeddings=emb, textsim_top=8)
    users = np.arange(n_users)
    positives = np.array([seen_by_user[u][-1] for u in users])
    sampler = make_sampler(name, ctx)
    for seed in range(30):
        items = sampler.sample(users, positives, n, np.random.default_rng(seed)).items
        for u in users:
            row = items[u].tolist()
            assert len(set(row)) == n
            assert not set(row) & set(seen_by_user[u])
            assert min(row) >= 0 and max(row) < n_items
    a = sampler.sample(users, positives, n, np.random.default_rng(7)).items
    b = sampler.sample(users, positives, n, np.random.default_rng(7)).items
    c = sampler.sample(users, positives, n, np.random.default_rng(8)).items
    assert (a == b).all() and not (a == c).all()


def test_mixed_fills_a_user_with_exactly_n_unseen_items():
    # 3 unseen items, 3 negatives, 1.5 by popularity: rows split 1+2 and 2+1 and both must work
    ctx = _ctx({0: list(range(7))}, 10, embeddings=_circle(10), textsim_top=3)
    rows = 40
    neg = make_sampler("mixed", ctx).sample(
        np.zeros(rows, int), np.full(rows, 6), 3, np.random.default_rng(0)
    )
    assert (np.sort(neg.items, axis=1) == [7, 8, 9]).all()
    assert 40 < neg.counts["popularity"] < 80  # both splits occurred
