"""How many threads calibration uses, and the two pools it runs on.

ONNX2TRT_CALIB_THREADS overrides the count; by default the histogram work uses the CPUs this
process may run on and ONNX Runtime the physical cores among them (its own default rule). Two pools, so that a tensor-pool worker never waits on work queued behind itself: the tensor
pool bins whole tensors side by side (and runs the KL searches); the histogram engine's own pool
(histogram._pool) splits one big array.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

_TENSOR_POOLS: dict[int, ThreadPoolExecutor] = {}


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask: taskset, containers), not the machine's."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # no affinity API (macOS, Windows)
        return os.cpu_count() or 1


def physical_cores(cpus: set[int] | None = None, *, sysfs: str = "/sys/devices/system/cpu") -> int:
    """Distinct physical cores among `cpus` (default: the usable ones); hyperthreads share one.

    What ONNX Runtime sizes its pool by, restricted to the affinity mask. Reads Linux sysfs;
    elsewhere, or when the topology cannot be read, it is the number of CPUs.
    """
    if cpus is None:
        try:
            cpus = set(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            return usable_cpus()

    def core_of(cpu: int) -> tuple[str, ...]:
        folder = Path(sysfs) / f"cpu{cpu}" / "topology"
        return tuple(
            (folder / leaf).read_text().strip() for leaf in ("physical_package_id", "core_id")
        )

    try:
        cores = {core_of(cpu) for cpu in cpus}
    except OSError:
        return len(cpus) or 1
    return len(cores) or 1


def _override() -> int | None:
    env = os.environ.get("ONNX2TRT_CALIB_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else None


def ort_threads() -> int:
    """ONNX Runtime's intra-op threads: ONNX2TRT_CALIB_THREADS, or the usable physical cores."""
    return _override() or physical_cores()


def num_threads() -> int:
    """ONNX2TRT_CALIB_THREADS, or the usable CPUs."""
    return _override() or usable_cpus()


def overlap_threads() -> tuple[int, int]:
    """(ONNX Runtime threads, binning threads) when ORT runs batch k+1 while batch k is binned.

    The two run at the same time, so they share the usable CPUs instead of each taking all of
    them: ORT keeps the larger half of the physical cores (its work is the larger part, the
    floor), binning gets the rest of the usable CPUs, at least one each.
    """
    cpus = num_threads()
    ort = max(1, min(ort_threads(), cpus - cpus // 2))
    return ort, max(1, cpus - ort)


def tensor_pool(threads: int | None = None) -> tuple[ThreadPoolExecutor | None, int]:
    """(workers for whole tensors, their number); no pool when there is one thread.

    `threads`: a pool of that size (overlap_threads' share) instead of num_threads()."""
    threads = threads or num_threads()
    if threads <= 1:
        return None, 1
    if threads not in _TENSOR_POOLS:  # one per size, kept: sizes alternate between runs
        _TENSOR_POOLS[threads] = ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="calib-tensors"
        )
    return _TENSOR_POOLS[threads], threads
