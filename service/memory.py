"""Freed memory back to the system when a step loop goes idle (glibc's `malloc_trim`).

A long translation flood leaves tens of MiB of freed heap in the process (the searches'
attention rows and the answers, many small blocks that glibc keeps for reuse), so resident
memory stays at its high-water mark after the work is gone. Trimming once the loop has
nothing left to do returns it, at no cost to work in flight. Lowering glibc's mmap threshold
instead (every large array from fresh pages) cost translation a third of its throughput.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim with
        return None


def trim_heap() -> bool:
    """Return the heap's free pages to the system; False where the C library cannot."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
