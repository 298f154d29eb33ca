"""``python -m benchmarks.run [--quick] [--out benchmarks/results/latest.json]``: run every case, print a
table, write JSON (and optionally a Markdown README section).

Each (case, variant) runs in its own ``python -m benchmarks.worker`` process on weights prepared once
in a temporary folder; the parent only orchestrates and compares saved outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.context import Context
from benchmarks.efficiency import format_efficiency, summarize_efficiency
from benchmarks.measure import machine_info
from benchmarks.peak import cpu_flags, machine_peaks
from benchmarks.report import format_table, markdown, summarize, table_rows
from benchmarks.startup import measure_startup
from benchmarks.weights import prepare_weights
from benchmarks.worker import CASES, RESULT_PREFIX, run_variant

__all__ = ["main", "run_benchmarks", "DEFAULT_CASES", "DEFAULT_VARIANTS", "QUICK_VARIANTS"]

# Cases run without --cases: all but sam3 (a ~0.85 B-parameter model; run it alone with --cases sam3).
DEFAULT_CASES = tuple(case for case in CASES if case != "sam3")
# Cases that build their own random-weight models (no prepared weights folder needed).
SELF_CONTAINED_CASES = frozenset({"sam3"})

DEFAULT_VARIANTS: dict[str, tuple[str, ...]] = {
    "sam_encoder": (
        "hf-eager",
        "hf-eager+malloc",
        "hf-sdpa",
        "ours-fp32",
        "ours-auto",
        "ours-int8",
        "ours-bf16",
        "ours-bf16-emulated",
        "ours-vit_t-fp32",
        "ours-hq_vit_b-fp32",
    ),
    "sam_decoder": ("hf-sdpa", "ours-fp32", "ours-auto", "ours-vit_t-fp32", "ours-hq_vit_b-fp32"),
    "sam2_encoder": (
        "hf-sdpa",
        "hf-sdpa+malloc",
        "ours-fp32",
        "hf-sdpa-bf16",
        "ours-bf16",
        "ours-sam1-vit_b",
    ),
    "dino": (
        "hf-eager",
        "hf-eager+malloc",
        "hf-default",
        "ours-plain",
        "ours-fp32",
        "ours-int8",
        "ours-bf16",
        "ours-auto",
        "ours-bf16-emulated",
        "mm-hf-eager",
        "mm-hf-default",
        "mm-ours-plain",
        "mm-ours-fp32",
        "idea-ours-fp32",
    ),
    "e2e": ("ours-fp32", "ours-auto", "ours-plain"),
    "sam3": ("hf", "ours"),
}
QUICK_VARIANTS: dict[str, tuple[str, ...]] = {
    "sam_encoder": ("hf-eager", "ours-fp32", "ours-auto"),
    "sam_decoder": ("hf-sdpa", "ours-fp32", "ours-auto"),
    "sam2_encoder": ("hf-sdpa", "ours-fp32", "ours-sam1-vit_b"),
    "dino": ("hf-eager", "hf-default", "ours-fp32", "ours-auto"),
    "e2e": ("ours-fp32", "ours-auto"),
    "sam3": ("hf", "ours"),
}
_COMPARE = {
    "sam_encoder": ("benchmarks.cases_sam", "compare_encoder"),
    "sam_decoder": ("benchmarks.cases_sam", "compare_decoder"),
    "sam2_encoder": ("benchmarks.cases_sam2", "compare_sam2_encoder"),
    "dino": ("benchmarks.cases_dino", "compare_dino"),
    "sam3": ("benchmarks.cases_sam3", "compare_sam3"),
}


def _worker(args: list[str], *, timeout: float) -> dict[str, Any]:
    """Run ``python -m benchmarks.worker ARGS``; its last ``RESULT_PREFIX`` line parsed as JSON."""
    env = dict(os.environ, TRANSFORMERS_VERBOSITY="error", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.worker", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=root,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout)[-3000:]
        return {"error": f"worker {' '.join(args[:3])} failed (exit {proc.returncode}):\n{tail}"}
    return json.loads(lines[-1][len(RESULT_PREFIX) :])


def run_benchmarks(
    *,
    size: str = "full",
    quick: bool = False,
    cases: tuple[str, ...] = DEFAULT_CASES,
    variants: dict[str, tuple[str, ...]] | None = None,
    workdir: Path | None = None,
    warmup: int | None = None,
    repeats: int | None = None,
    timeout: float = 3600,
    isolate: bool = True,
    log: Any = print,
    checkpoint: Any = None,
    startup: bool = False,
) -> dict[str, Any]:
    """Prepare weights, run each selected (case, variant), compare, summarise.

    The machine's matmul peaks (``benchmarks.peak``) are measured before and after the variants, at
    this process's thread count (the workers inherit it); the best of the two is the reference for
    every fraction of peak. ``startup=True`` also times imports and the web app's start-up.

    ``isolate=True`` runs every variant in its own subprocess (the benchmark proper: per-variant
    peak memory, no shared state); ``False`` runs them in this process (the smoke test: fast, but
    memory figures are then the whole process's). ``checkpoint(partial_results)`` is called after
    every variant, so a long run that fails late keeps what it measured.
    """
    warmup = 1 if warmup is None else warmup
    repeats = (1 if quick else 3) if repeats is None else repeats
    chosen = variants or (QUICK_VARIANTS if quick else DEFAULT_VARIANTS)
    with tempfile.TemporaryDirectory(prefix="grounded-bench-") as tmp:
        root = Path(workdir) if workdir is not None else Path(tmp)
        started = time.perf_counter()
        machine = {**machine_info(), **cpu_flags()}
        log(f"measuring the matmul peak at {torch.get_num_threads()} threads ...")
        peaks_start = machine_peaks()
        log(f"preparing {size} random-weight models in {root} ...")
        ctx = Context(workdir=root, size=size, warmup=warmup, repeats=repeats)
        if set(cases) <= SELF_CONTAINED_CASES:
            pass  # these cases build their models themselves
        elif isolate:
            prepared = _worker(["prepare", str(root), "--size", size], timeout=timeout)
            if "error" in prepared:
                raise RuntimeError(prepared["error"])
        else:
            prepare_weights(root, size=size)
        results: dict[str, dict[str, dict]] = {}
        for case in cases:
            for name in chosen.get(case, ()):
                log(f"running {case} / {name} ...")
                if isolate:
                    args = ["run", case, name, str(root), "--size", size]
                    args += ["--warmup", str(warmup), "--repeats", str(repeats)]
                    results.setdefault(case, {})[name] = _worker(args, timeout=timeout)
                else:
                    results.setdefault(case, {})[name] = run_variant(case, name, ctx)
                if "error" in results[case][name]:
                    log(results[case][name]["error"])
                if checkpoint is not None:
                    checkpoint({"machine": machine, "partial": True, "cases": results})
        comparisons: dict[str, Any] = {}
        for case, (module, function) in _COMPARE.items():
            if case in results:
                compare = getattr(__import__(module, fromlist=[function]), function)
                try:
                    comparisons[case] = compare(ctx)
                except Exception as error:  # keep the timings even if a comparison breaks
                    comparisons[case] = {"error": f"{type(error).__name__}: {error}"}
                    log(f"comparison of {case} failed: {comparisons[case]['error']}")
        peaks_end = machine_peaks()
    best = {d: max((peaks_start[d], peaks_end[d]), key=lambda p: p["gflops"]) for d in peaks_start}
    peak = {"start": peaks_start, "end": peaks_end, "best": best}
    baselines = [r["rss_baseline_mb"] for v in results.values() for r in v.values() if "rss_baseline_mb" in r]
    report: dict[str, Any] = {
        "machine": machine,
        "peak": peak,
        "load_avg_end": [round(v, 2) for v in os.getloadavg()],
        "settings": {
            "mode": "quick" if quick else "full",
            "size": size,
            "warmup": warmup,
            "repeats": repeats,
            "rss_baseline_mb": max(baselines, default=0.0),
            "wall_s": round(time.perf_counter() - started, 1),
            "memory_method": "each variant in its own process; peak_rss_mb = resource.getrusage(RUSAGE_SELF)"
            ".ru_maxrss at its end (imports + weights + runs); rss_baseline_mb = RSS after imports",
        },
        "cases": results,
        "comparisons": comparisons,
        "summary": summarize(results, comparisons),
    }
    report["efficiency"] = summarize_efficiency(report)
    if startup:
        log("timing start-up (imports, app.py) ...")
        report["startup"] = measure_startup()
    return report


def _write(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer variants, 1 warm-up + 1 timed run")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/latest.json"))
    parser.add_argument("--markdown", type=Path, default=None, help="also write a README section here")
    parser.add_argument("--cases", default=",".join(DEFAULT_CASES),
                        help=f"comma list of {', '.join(CASES)} (default: all but sam3)")
    parser.add_argument("--variants", default=None, help="comma list overriding the variant set")
    parser.add_argument("--size", choices=("full", "tiny"), default="full", help="tiny: smoke test")
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--workdir", type=Path, default=None, help="keep weights/outputs here")
    parser.add_argument("--startup", action="store_true", help="also time imports and app.py start-up")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="no subprocess per variant (smoke test; no per-variant memory)",
    )
    args = parser.parse_args(argv)

    cases = tuple(c for c in args.cases.split(",") if c)
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; choose from {list(CASES)}")
    variants = None
    if args.variants:
        wanted = set(args.variants.split(","))
        variants = {c: tuple(v for v in DEFAULT_VARIANTS[c] if v in wanted) for c in cases}
    report = run_benchmarks(
        size=args.size,
        quick=args.quick,
        cases=cases,
        variants=variants,
        workdir=args.workdir,
        warmup=args.warmup,
        repeats=args.repeats,
        isolate=not args.in_process,
        log=lambda msg: print(msg, file=sys.stderr, flush=True),
        checkpoint=lambda partial: _write(args.out, partial),
        startup=args.startup,
    )
    print(format_table(table_rows(report["cases"], report["comparisons"])))
    print(format_efficiency(report))
    print(json.dumps(report["summary"], indent=2))
    _write(args.out, report)
    if args.markdown is not None:
        args.markdown.write_text(markdown(report))
    errors = [f"{c}/{v}" for c, vs in report["cases"].items() for v, r in vs.items() if "error" in r]
    errors += [f"compare {c}" for c, r in report["comparisons"].items() if "error" in r]
    if errors:
        print(f"failed variants: {errors}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
