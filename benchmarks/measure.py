"""Timing and memory measurement, and a description of the machine the numbers come from."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

__all__ = ["Timing", "machine_info", "measure", "peak_rss_mb", "current_rss_mb"]


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of the timed runs (warm-up runs excluded); ``median_s`` is the headline."""

    median_s: float
    min_s: float
    max_s: float
    runs_s: tuple[float, ...]
    cpu_s: float  # median process CPU time per run (all threads): less sensitive to other load

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure(fn: Callable[[], Any], *, warmup: int = 1, repeats: int = 3) -> Timing:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times timed (>= 1)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        fn()
    walls, cpus = [], []
    for _ in range(repeats):
        start_cpu, start = time.process_time(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - start_cpu)
    return Timing(
        median_s=statistics.median(walls),
        min_s=min(walls),
        max_s=max(walls),
        runs_s=tuple(walls),
        cpu_s=statistics.median(cpus),
    )


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB (``ru_maxrss`` is KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if platform.system() == "Darwin" else peak / 1024


def current_rss_mb() -> float:
    """Resident set size now, MiB (Linux ``/proc``; falls back to the peak elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


def machine_info() -> dict[str, Any]:
    """CPU model, ISA level torch dispatches to, native bf16, threads, load, library versions."""
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    from sam_core.device import cpu_has_native_bf16

    native_bf16 = cpu_has_native_bf16()  # AVX512_BF16 or AMX, not oneDNN's emulated AVX-512 path
    import transformers

    return {
        "cpu": model,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": native_bf16,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_avg": [round(v, 2) for v in os.getloadavg()],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.cuda.is_available(),
        "python": platform.python_version(),
    }
