"""Give memory left over from start-up back to the system once the agent is connected and idle.

Start-up (imports, the runtime's preflight, dialling, key and token loading) leaves garbage and
freed-but-retained allocator pages behind. One full ``gc.collect()`` frees the garbage; glibc's
``malloc_trim(0)`` then returns free heap pages to the kernel. Elsewhere (musl, macOS) only the
collection runs. It is done once, after the platform accepted the first session.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import sys
import time
from collections.abc import Callable
from functools import cache

import structlog

from berth.agent.health import HealthState

log = structlog.get_logger("berth.agent.footprint")


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or ``None`` where the C library has none (musl, macOS, Windows).
    Looked up among the symbols the interpreter already has loaded (its C library's): not with
    ``ctypes.util.find_library``, whose imports (``shutil``, ``tempfile`` ...) stay resident and
    which runs ``ldconfig``."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_memory() -> bool:
    """Collect garbage, then hand free heap pages back; True when ``malloc_trim`` released some."""
    started = time.perf_counter()
    collected = gc.collect()
    trim = _malloc_trim()
    released = bool(trim(0)) if trim is not None else False
    log.debug(
        "memory_released",
        collected=collected,
        malloc_trim=trim is not None,
        trimmed=released,
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
    )
    return released


async def release_once_accepted(health: HealthState) -> None:
    """Wait until the platform accepted the session, then release start-up memory once."""
    while True:
        changed = health.changed
        if health.accepted:
            break
        await changed.wait()
    # off the event loop: malloc_trim runs without the GIL, and a collection of a large heap (or
    # on a busy machine) can take longer than a loop step should
    await asyncio.to_thread(release_memory)
