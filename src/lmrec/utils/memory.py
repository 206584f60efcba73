"""Keep the resident memory of CPU training close to what its tensors need.

PyTorch on CPU allocates tensors with the C library's ``malloc``. glibc serves a large block
with ``mmap`` (returned to the OS on ``free``) only while it is above a threshold that glibc
raises, by default, every time such a block is freed, up to 32 MiB. After the first few layers of
a transformer's forward pass every activation of an LLM batch is below the raised threshold, so
it lands in the heap, and the heap keeps the memory after the tensor dies: on SmolLM2 with
ML-1M prompts (batch 8, ~440 tokens, gradient checkpointing) the process reached 5.8 GB of
resident memory after one forward pass whose saved tensors were ~0.3 GB. Fixing the threshold
(``M_MMAP_THRESHOLD``), which also switches the raising off, brought the same forward pass to
1.7 GB. This is what the ``MALLOC_MMAP_THRESHOLD_`` environment variable does, set from inside
the process so that a library call gets it too.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
DEFAULT_THRESHOLD = 128 * 1024  # glibc's own starting value


@functools.cache
def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt  # noqa: B018 - musl and other C libraries may not have it
    except (OSError, AttributeError):
        return None
    return libc


def fix_malloc_threshold(threshold: int = DEFAULT_THRESHOLD) -> bool:
    """Serve blocks of ``threshold`` bytes and more with ``mmap`` from now on (glibc only).

    Returns True when the setting was applied, False where there is no glibc ``mallopt`` (other
    systems, other C libraries), in which case nothing changes. Safe to call more than once.
    """
    libc = _libc()
    if libc is None:
        return False
    ok = libc.mallopt(M_MMAP_THRESHOLD, int(threshold)) == 1
    # Trim the heap top back to the OS as soon as this much of it is free.
    ok &= libc.mallopt(M_TRIM_THRESHOLD, int(threshold)) == 1
    return bool(ok)
