"""How many threads calibration uses, and the two pools it runs on.

ONNX2TRT_CALIB_THREADS overrides the count; by default it is the CPUs this process may run on.
Two pools, so that a tensor-pool worker never waits on work queued behind itself: the tensor
pool bins whole tensors side by side (and runs the KL searches); the histogram engine's own pool
(histogram._pool) splits one big array.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

_TENSOR_POOL: ThreadPoolExecutor | None = None
_TENSOR_POOL_SIZE = 0


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask: taskset, containers), not the machine's."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # no affinity API (macOS, Windows)
        return os.cpu_count() or 1


def num_threads() -> int:
    """ONNX2TRT_CALIB_THREADS, or the usable CPUs."""
    env = os.environ.get("ONNX2TRT_CALIB_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return usable_cpus()


def tensor_pool() -> tuple[ThreadPoolExecutor | None, int]:
    """(workers for whole tensors, their number); no pool when there is one thread."""
    global _TENSOR_POOL, _TENSOR_POOL_SIZE
    threads = num_threads()
    if threads <= 1:
        return None, 1
    if _TENSOR_POOL is None or _TENSOR_POOL_SIZE != threads:
        _TENSOR_POOL = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="calib-tensors")
        _TENSOR_POOL_SIZE = threads
    return _TENSOR_POOL, threads
