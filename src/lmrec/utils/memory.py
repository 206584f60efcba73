"""How glibc's malloc serves CPU tensors: reuse freed blocks, without letting the heap run away.

PyTorch on CPU allocates tensors with the C library's ``malloc``. glibc serves a block of at
least ``M_MMAP_THRESHOLD`` bytes with ``mmap`` (returned to the OS on ``free``) and smaller ones
from its heaps, and by default raises that threshold each time an mmapped block is freed (up to
32 MiB) and trims the heap top once more than twice that is free.

Two failure modes, both measured on SmolLM2-135M on 2 cores:

- The default's moving threshold kept freed activations in the heap (ML-1M prompts with titles,
  LoRA, batch 8: 7.4 GB resident where the live tensors were ~2 GB).
- lmrec's earlier fix, a fixed 128 KiB threshold with trimming at 128 KiB, bought that memory
  back with time: every activation was mmapped and unmapped at every step, and each page
  faulted in again (full fine-tuning on ~90-token prompts, batch 8: 1.1 million minor page
  faults and 2.2 s of system time per 4 s step; a third of ``make demo``'s CPU time went to the
  kernel).

``reuse`` fixes the mmap threshold at 16 MiB and trims the heap only past 128 MiB of free
top, so a training step reuses the blocks the previous step freed, while the largest blocks
(vocabulary-sized logits, the weights' gradients) are still mmapped and given back. Fixing the
threshold also switches off glibc's raising. ``release`` is the earlier 128 KiB policy
(smallest resident memory, most system time); ``heap`` (the default) mmaps nothing; ``off``
leaves glibc alone. ``LMREC_MALLOC`` overrides the policy for every call, without a code
change; it also takes ``MMAP_MIB,TRIM_MIB`` to try other thresholds.

Why 16 / 128 MiB (``bench/bench_malloc.py`` and ``bench/bench_llm.py --worker memory``, idle
2-core machine, 2026-11-30): the two workloads that pull apart are SASRec training on ML-100K
(many 2-30 MiB activations: system time) and LoRA training on ML-1M with titles and gradient
checkpointing (memory). System share of CPU time / LoRA peak resident memory, by
mmap,trim thresholds in MiB: 0.125,0.125 (``release``) 38.9% / 2.0 GB (the memory figure of
2026-11-23); 2,32 38.7% / 2.0 GB; 8,64 12.1% / 4.5 GB; 16,128 9.8% / 4.9 GB; 32,64 11.1% /
6.6 GB; 32,256 9.6% / 6.5 GB. 16,128 is the one setting under both targets (10% and 6 GB);
SASRec takes 17.6 s there against 27.3 s under ``release``. The SASRec figures other than
``release`` and 32,256 are single runs.

``heap`` mmaps nothing. glibc will not raise the threshold past 32 MiB, so under ``reuse``
vocabulary-sized blocks (SmolLM2's 49k x 576 embedding and head: 113 MB in fp32, 56 MB as a
bf16 cast, and their gradients) are mmapped and faulted in again at every forward and
backward. Measured 2026-12-01 (``reuse`` / ``heap``): SASRec 11.7% / 6.3% system (medians of
3), the demo's experiment 12.7% / 5.0% system and 5.36 / 5.66 GB, LoRA on ML-1M 14.3% / 4.2%
system and 4.99 / 6.28 GB. So ``heap`` is the default, and a run that asks for gradient
checkpointing (which says memory matters more than time) gets ``reuse``
(:data:`LEAN_POLICY`, applied by :class:`lmrec.train.loop.Loop`).

``heap`` trims the heap top once 1 GiB of it is free. Its first trim threshold, 256 MiB, was
crossed inside a full-fine-tuning step: the backward frees the vocabulary matrix's gradient,
its bf16 cast and the embedding's zeroed gradient (119 + 60 + 119 MB for SmolLM2 with ML-100K's
id tokens) at the top of the heap, glibc gave them back, and the next step faulted them in
again (22,000-58,000 minor faults a step in 3 of 4 processes; which ones depended on the heap's
layout). Steady-state full-fine-tuning SFT, bf16, compiled, batch 16, 2 cores
(``bench/bench_malloc.py --job sft``, 2026-12-01): see that benchmark's table in the README.
The peak resident memory is the same (it is reached inside the step); only the memory held
between steps grows.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
DEFAULT_MMAP_MAX = 65536  # glibc's own limit on the number of mmapped blocks
DEFAULT_THRESHOLD = 128 * 1024  # glibc's own starting value
POLICIES = {
    # policy: (mmap threshold, trim threshold) in bytes; None leaves glibc's defaults
    "reuse": (16 * 2**20, 128 * 2**20),
    "release": (DEFAULT_THRESHOLD, DEFAULT_THRESHOLD),
    "heap": (0, 2**30),  # nothing mmapped: least system time, most memory
    "off": None,
}


DEFAULT_POLICY = "heap"  # least system time
LEAN_POLICY = "reuse"  # for runs that trade time for memory (gradient checkpointing)


def configure_malloc(policy: str | None = None) -> bool:
    """Apply a malloc policy of :data:`POLICIES` (default :data:`DEFAULT_POLICY`;
    ``$LMREC_MALLOC`` wins).

    Returns True when glibc took the settings, False where there is no glibc ``mallopt`` or the
    policy is ``off`` (nothing changes then). Safe to call more than once.
    """
    import os

    policy = os.environ.get("LMREC_MALLOC") or policy or DEFAULT_POLICY
    if "," in policy:  # "MMAP_MIB,TRIM_MIB": the two thresholds in MiB (for measuring)
        try:
            mmap_mib, trim_mib = (float(x) for x in policy.split(","))
        except ValueError:
            raise ValueError(f"LMREC_MALLOC {policy!r}: expected 'MMAP_MIB,TRIM_MIB'") from None
        if not 0 <= mmap_mib <= 32 or trim_mib <= 0:
            # glibc refuses mmap thresholds above 32 MiB (HEAP_MAX_SIZE / 2 on 64 bits); 0
            # serves every block from the heap (no mmap at all)
            raise ValueError(f"LMREC_MALLOC {policy!r}: MMAP_MIB must be in [0, 32], TRIM_MIB > 0")
        return fix_malloc_threshold(int(mmap_mib * 2**20), int(trim_mib * 2**20))
    if policy not in POLICIES:
        raise ValueError(
            f"malloc policy must be one of {', '.join(POLICIES)}, got {policy!r} (LMREC_MALLOC?)"
        )
    values = POLICIES[policy]
    if values is None:
        return False
    return fix_malloc_threshold(*values)


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


def fix_malloc_threshold(threshold: int = DEFAULT_THRESHOLD, trim: int | None = None) -> bool:
    """Serve blocks of ``threshold`` bytes and more with ``mmap`` from now on (glibc only), and
    give the heap top back once ``trim`` bytes of it are free (default: ``threshold``).

    Returns True when the setting was applied, False where there is no glibc ``mallopt`` (other
    systems, other C libraries), in which case nothing changes. Safe to call more than once.
    """
    libc = _libc()
    if libc is None:
        return False
    # threshold 0: no block is mmapped (freed large blocks stay in the heap for reuse)
    ok = libc.mallopt(M_MMAP_MAX, 0 if threshold == 0 else DEFAULT_MMAP_MAX) == 1
    if threshold:
        ok &= libc.mallopt(M_MMAP_THRESHOLD, int(threshold)) == 1
    # Trim the heap top back to the OS as soon as this much of it is free.
    ok &= libc.mallopt(M_TRIM_THRESHOLD, int(threshold if trim is None else trim)) == 1
    return bool(ok)
