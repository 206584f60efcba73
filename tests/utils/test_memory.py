"""fix_malloc_threshold: freed blocks go back to the OS instead of staying in the heap."""

import subprocess
import sys

import pytest

SCRIPT = """
import sys
import psutil
import torch
from lmrec.utils.memory import configure_malloc, fix_malloc_threshold
if sys.argv[1] == "fixed":
    assert fix_malloc_threshold()
elif sys.argv[1] != "default":
    assert configure_malloc(sys.argv[1])
big = torch.ones(16 * 2**20 // 4)  # a 16 MB block, freed: glibc raises its mmap threshold
del big
blocks = [torch.ones(2**20 // 4) for _ in range(200)]  # 200 x 1 MB
before = psutil.Process().memory_info().rss
del blocks[::2]  # free every other block: holes the heap cannot trim
after = psutil.Process().memory_info().rss
print((before - after) / 2**20)
"""


def _released_mb(mode: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_fixed_threshold_returns_freed_blocks_to_the_os():
    from lmrec.utils.memory import _libc

    if _libc() is None:
        pytest.skip("no glibc mallopt here")
    # 100 MB freed in 1 MB holes: kept by the default heap, returned with the fixed threshold.
    assert _released_mb("default") < 20
    assert _released_mb("fixed") > 80
    assert _released_mb("release") > 80
    # reuse: 1 MB holes stay in the heap for the next step's tensors
    assert _released_mb("reuse") < 20
    # thresholds given in MiB: 1 MiB blocks are mmapped at a 1 MiB threshold, kept at 4 MiB
    assert _released_mb("1,1") > 80
    assert _released_mb("4,128") < 20


def test_malloc_policy_names_are_checked(monkeypatch):
    from lmrec.utils.memory import configure_malloc

    with pytest.raises(ValueError, match="reuse, release, heap, off"):
        configure_malloc("fast")
    with pytest.raises(ValueError, match="MMAP_MIB,TRIM_MIB"):
        configure_malloc("16,lots")
    with pytest.raises(ValueError, match=r"MMAP_MIB must be in \[0, 32\]"):
        configure_malloc("64,128")  # glibc would refuse it and keep its own threshold
    monkeypatch.setenv("LMREC_MALLOC", "off")
    assert configure_malloc("release") is False  # the environment wins: nothing applied


BIG = """
import sys
import psutil
import torch
from lmrec.utils.memory import configure_malloc
for policy in sys.argv[1:]:
    assert configure_malloc(policy)
blocks = [torch.ones(64 * 2**20 // 4) for _ in range(4)]  # 64 MB each: past glibc's 32 MiB cap
keep = torch.ones(2**20 // 4)  # allocated last, above the big blocks: the heap cannot trim them
before = psutil.Process().memory_info().rss
del blocks
after = psutil.Process().memory_info().rss
print((before - after) / 2**20)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_heap_policy_keeps_even_the_largest_blocks_for_reuse():
    from lmrec.utils.memory import _libc

    if _libc() is None:
        pytest.skip("no glibc mallopt here")

    def released(*policies):
        out = subprocess.run(
            [sys.executable, "-c", BIG, *policies], capture_output=True, text=True, check=True
        )
        return float(out.stdout.strip().splitlines()[-1])

    assert released("reuse") > 200  # mmapped, unmapped when freed
    assert released("heap") < 20  # served from the heap, kept for the next step
    assert released("heap", "reuse") > 200  # a later policy turns mmap back on
