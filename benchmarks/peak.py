"""The machine's own limit: its matmul peak per dtype, the CPU's flags, and a model stage's FLOPs.

Each stage's speed is reported as achieved GFLOP/s = FLOPs / median seconds and as a fraction of the
peak of the dtype it ran in, measured in the same run at the same thread count, so a figure from a
2-core shared VM and one from a 64-core server read the same way.

- Peak: best of ``repeats`` ``torch.mm`` of two ``n x n`` matrices (4096: large enough that oneDNN
  reaches its steady rate, small enough to take ~1 s in fp32 on 2 cores). bf16 only where the CPU
  multiplies it natively (``sam_core.device.cpu_has_native_bf16``); elsewhere its "peak" would be an
  emulation's and the fraction meaningless.
- FLOPs: counted once per stage with ``torch.utils.flop_counter.FlopCounterMode`` (2 per multiply-add
  of matmuls, convolutions and attention), with SDPA forced to its math backend while counting so
  attention's two matrix products are counted whichever kernel runs when timed (the CPU flash kernel
  has no FLOP formula registered).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["PEAK_SIZE", "cpu_flags", "count_flops", "efficiency", "machine_peaks", "matmul_peak"]

PEAK_SIZE = 4096
# The flags that decide which kernels oneDNN can use (reported in the README next to the figures).
_FLAGS_OF_INTEREST = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)


def cpu_flags() -> dict[str, Any]:
    """CPU model name and which of the matmul-relevant flags /proc/cpuinfo lists (Linux; else empty)."""
    model, flags = "unknown", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model == "unknown":
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {"cpu": model, "flags": [f for f in _FLAGS_OF_INTEREST if f in flags]}


def matmul_peak(dtype: torch.dtype, *, n: int = PEAK_SIZE, repeats: int = 5) -> dict[str, float]:
    """Best-of-``repeats`` GFLOP/s of an ``n x n @ n x n`` ``torch.mm`` in ``dtype`` (one warm-up)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(dtype)
    b = torch.randn(n, n, generator=gen).to(dtype)
    out = torch.empty(n, n, dtype=dtype)
    torch.mm(a, b, out=out)
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        start_cpu, start = time.process_time(), time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - start_cpu)
    flops = 2 * n**3
    return {
        "gflops": flops / best / 1e9,
        "best_s": best,
        # per second of process CPU time (all threads): a rate that other jobs' load hardly moves
        "gflops_per_cpu_s": flops / best_cpu / 1e9,
        "n": n,
        "threads": torch.get_num_threads(),
    }


def machine_peaks(*, repeats: int = 5) -> dict[str, dict[str, float]]:
    """``{"float32": matmul_peak(...), "bfloat16": ...}``; bfloat16 only where native (see above)."""
    from sam_core.device import cpu_has_native_bf16

    peaks = {"float32": matmul_peak(torch.float32, repeats=repeats)}
    if cpu_has_native_bf16():
        peaks["bfloat16"] = matmul_peak(torch.bfloat16, repeats=repeats)
    return peaks


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of ``fn`` (no grad), attention counted through SDPA's math backend."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), sdpa_kernel([SDPBackend.MATH]), counter:
        fn()
    return int(counter.get_total_flops())


def efficiency(
    flops: int | None,
    seconds: float | None,
    dtype: str,
    peaks: dict[str, dict],
    *,
    cpu_s: float | None = None,
) -> dict[str, Any]:
    """Achieved GFLOP/s and the fraction of the ``dtype`` peak ({} when something is unknown).

    ``fraction_of_peak``: wall-clock rate / the peak's wall-clock rate. ``fraction_of_peak_cpu``
    (with ``cpu_s``, the stage's process CPU seconds): the same with CPU time on both sides, which
    other jobs on a shared machine distort far less (neither side counts the time it waited).
    int8 and float16 stages are set against the float32 peak (the CPU has no separate figure here);
    a dtype without a measured peak (bf16 on a CPU without native bf16) gets GFLOP/s only.
    """
    if not flops or not seconds:
        return {}
    gflops = flops / seconds / 1e9
    row: dict[str, Any] = {"gflops": round(gflops, 1), "dtype": dtype}
    peak_dtype = "float32" if dtype in ("int8", "float16") else dtype
    peak = peaks.get(peak_dtype)
    if peak:
        row["fraction_of_peak"] = round(gflops / peak["gflops"], 3)
        row["peak_dtype"] = peak_dtype
        if cpu_s and peak.get("gflops_per_cpu_s"):
            row["fraction_of_peak_cpu"] = round(flops / cpu_s / 1e9 / peak["gflops_per_cpu_s"], 3)
    return row
