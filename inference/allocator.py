"""How the C allocator treats the large, short-lived tensors of training and evaluation (glibc only).

A training step, and each chunk of an evaluation, allocates and frees the same
tensors again and again. glibc's ``malloc`` serves a block larger than its mmap
threshold with fresh ``mmap`` pages and returns it to the system when freed, and it
gives the top of its heap back once more than its trim threshold is free there: each
step or chunk then touches new pages and pays a page fault per 4 KiB. Two settings
keep the memory instead (the same arithmetic on the same numbers; no result changes):

- :func:`keep_freed_memory` (process-wide, once; the training loop's): blocks up to
  32 MiB come from the heap, and up to 256 MiB of freed memory stays there.
- :func:`reuse_large_blocks` (a context; the benchmark runner's evaluation on the CPU):
  every block comes from the heap and nothing is given back until the context ends,
  when the freed memory goes back to the system (``malloc_trim``). An evaluation chunk
  of a batched job holds tensors of hundreds of megabytes (at most 8 MiB per replica,
  so 2 GiB at R = 240), far above glibc's largest mmap threshold.

Both are settings of the whole process. The context holds for blocks of the main
thread's heap: glibc serves another thread's blocks above its per-thread heap size
(64 MiB) with ``mmap`` whatever ``M_MMAP_MAX`` says (the runner evaluates on the main
thread). Contexts may nest, also across threads: the settings are applied when the
first one is entered and restored when the last one exits. Restoring sets glibc's
defaults for ``M_MMAP_MAX`` and :func:`keep_freed_memory`'s thresholds, over whatever
``GLIBC_TUNABLES`` or ``MALLOC_*_`` set (glibc offers no way to read them back).

Linux with glibc only: elsewhere, when ``mallopt`` refuses, or with the environment
variable ``BNN_PRIORS_KEEP_FREED_MEMORY=0``, both leave the allocator alone.

Imports: the standard library only.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import platform
import sys
import threading
from collections.abc import Iterator

#: glibc ``mallopt`` parameters (``malloc.h``).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest: blocks up to this size come from the heap
TRIM_THRESHOLD = 256 * 2**20  # free memory kept at the top of the heap before it goes back to the system
MMAP_MAX = 65536  # glibc's default number of blocks served by mmap at once
NEVER_TRIM = -1  # mallopt(M_TRIM_THRESHOLD, -1) turns trimming off (mallopt(3))

#: Environment variable that turns both settings off (``0``).
KEEP_FREED_MEMORY_ENV = "BNN_PRIORS_KEEP_FREED_MEMORY"


@functools.cache
def _libc():
    """glibc's handle, or ``None`` where these settings do not apply."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def _enabled() -> bool:
    return os.environ.get(KEEP_FREED_MEMORY_ENV, "1") != "0" and _libc() is not None


@functools.cache
def keep_freed_memory() -> bool:
    """Let the C allocator keep freed tensors' memory for the next step instead of returning it (once per process).

    On this project's machine, MC dropout at R = 240 (boston's shape), one 10-epoch fit
    in a fresh process, had 4,150 minor faults per step and 26.8 ms per step with
    glibc's defaults, 82 and 19.6 ms with these settings; in
    ``benchmarks/replica_throughput.py``, where earlier fits of the same process have
    already moved glibc's adaptive threshold, the gain was 4-14 %. Sets
    ``M_MMAP_THRESHOLD`` to 32 MiB and ``M_TRIM_THRESHOLD`` to 256 MiB: the process
    keeps up to 256 MiB of freed memory. Returns whether the settings were applied.
    """
    if not _enabled():
        return False
    mallopt = _libc().mallopt
    return mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1


#: Open :func:`reuse_large_blocks` contexts (the settings hold while there is one) and whether they apply.
_open = 0
_applied = False
_lock = threading.Lock()


@contextlib.contextmanager
def reuse_large_blocks() -> Iterator[bool]:
    """Inside: every block of the main thread comes from the heap (``M_MMAP_MAX`` 0) and no freed memory goes back
    (no trimming).

    On exit of the last open context the settings are :func:`keep_freed_memory`'s (it
    is applied first) and ``malloc_trim(0)`` returns the freed memory to the system, so
    the context's peak is not kept. Yields whether the settings are applied. Measured
    (``benchmarks/evaluation_memory.py``, this project's 2-core machine beside two
    benchmark jobs): 164 points at R = 60, 1000 draws, width 50 (41 points a chunk,
    469 MiB a tensor), a process's second evaluation: 13.1 s with 2.1 million minor
    faults with the training loop's setting (:func:`keep_freed_memory`; blocks this
    large are mmap'd all the same), 3.7 s with 1 inside the context (its first, which
    grows the heap: 15.0 s and 7.7 s); the metrics equal bit for bit.
    """
    global _open, _applied
    with _lock:
        if _open == 0:
            _applied = keep_freed_memory() and _libc().mallopt(_M_MMAP_MAX, 0) == 1 \
                and _libc().mallopt(_M_TRIM_THRESHOLD, NEVER_TRIM) == 1
        _open += 1
        applied = _applied
    try:
        yield applied
    finally:
        with _lock:
            _open -= 1
            if _open == 0 and _applied:
                _libc().mallopt(_M_MMAP_MAX, MMAP_MAX)
                _libc().mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
                _libc().malloc_trim(0)
                _applied = False
