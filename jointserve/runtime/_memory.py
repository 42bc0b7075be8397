"""Heap that a load freed, handed back to the operating system.

Loading a model version (download, sha256, unpack, an onnxruntime session and its warm-up)
or running an evaluation frees most of what it allocated, but glibc keeps freed pages in
its arenas for reuse, so an idle process stays at its peak. `malloc_trim(0)` returns every
whole free page: measured under `make serve`, 5-8 MiB of PSS per Serve replica. It walks
the arenas under their locks (about a millisecond here), so callers use it after a load or
a pass, never per request. Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl, macOS): nothing to trim this way
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim.argtypes = [ctypes.c_size_t]
        trim.restype = ctypes.c_int
    return trim


def release_free_memory() -> bool:
    """Give the heap's free pages back to the OS; True if any were released."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
