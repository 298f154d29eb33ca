"""Subprocess entry point: prepare the weights, or run ONE (case, variant) and print its result.

``python -m benchmarks.worker prepare WORKDIR --size full``
``python -m benchmarks.worker run CASE VARIANT WORKDIR --size full --warmup 1 --repeats 3``

The result is the last stdout line, ``RESULT_PREFIX`` + JSON. One process per variant makes each
variant's peak resident memory (``ru_maxrss``) its own, and keeps variants from sharing caches.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

__all__ = ["RESULT_PREFIX", "MALLOC_SUFFIX", "CASES", "main", "run_variant"]

RESULT_PREFIX = "BENCHMARK_RESULT "
MALLOC_SUFFIX = "+malloc"


def _cases() -> dict[str, dict[str, Callable]]:
    from benchmarks.cases_dino import DINO_VARIANTS
    from benchmarks.cases_e2e import E2E_VARIANTS
    from benchmarks.cases_sam import DECODER_VARIANTS, ENCODER_VARIANTS
    from benchmarks.cases_sam2 import SAM2_ENCODER_VARIANTS
    from benchmarks.cases_sam3 import SAM3_VARIANTS
    from benchmarks.cases_sam_variants import VARIANT_DECODERS, VARIANT_ENCODERS

    return {
        "sam_encoder": {**ENCODER_VARIANTS, **VARIANT_ENCODERS},  # + MobileSAM / SAM-HQ (speed only)
        "sam_decoder": {**DECODER_VARIANTS, **VARIANT_DECODERS},
        "sam2_encoder": SAM2_ENCODER_VARIANTS,
        "dino": DINO_VARIANTS,
        "e2e": E2E_VARIANTS,
        "sam3": SAM3_VARIANTS,
    }


CASES = ("sam_encoder", "sam_decoder", "sam2_encoder", "dino", "e2e", "sam3")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.worker")
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare")
    prep.add_argument("workdir", type=Path)
    prep.add_argument("--size", choices=("full", "tiny"), default="full")
    run = sub.add_parser("run")
    run.add_argument("case", choices=CASES)
    run.add_argument("variant")
    run.add_argument("workdir", type=Path)
    run.add_argument("--size", choices=("full", "tiny"), default="full")
    run.add_argument("--warmup", type=int, default=1)
    run.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    if args.command == "prepare":
        from benchmarks.weights import prepare_weights

        result: dict = {"folders": prepare_weights(args.workdir, size=args.size)}
    else:
        result = _run(args)
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


def run_variant(case: str, variant: str, ctx) -> dict:
    """Run one (case, variant) in this process: its result dict, or ``{"skipped": reason}``."""
    from benchmarks.context import Skipped
    from sam_core.allocator import allocator_tuned, tune_cpu_allocator

    variants = _cases()[case]
    if variant not in variants:
        raise ValueError(f"unknown variant {variant!r} for {case}; choose from {sorted(variants)}")
    # Our variants run with the allocator setting GroundedSAM applies by default; "+malloc" runs a
    # reference with the same setting, so its share of the speed-up is reported separately.
    if variant.startswith("ours") or variant.endswith(MALLOC_SUFFIX):
        tune_cpu_allocator()
    try:
        result = variants[variant](ctx, variant)
    except Skipped as reason:
        return {"skipped": str(reason)}
    result["allocator_tuned"] = allocator_tuned()
    return result


def _run(args: argparse.Namespace) -> dict:
    # Import everything any variant needs first, so the baseline RSS is "libraries loaded, no model".
    import torch  # noqa: F401
    import transformers  # noqa: F401

    import grounded.detectors.grounding_dino  # noqa: F401
    import sam_core  # noqa: F401
    from benchmarks.context import Context
    from benchmarks.measure import current_rss_mb, peak_rss_mb

    baseline = current_rss_mb()
    ctx = Context(workdir=args.workdir, size=args.size, warmup=args.warmup, repeats=args.repeats)
    result = run_variant(args.case, args.variant, ctx)
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)  # before the peak's matrices below
    if args.size == "full" and "skipped" not in result:
        # The limit right after this variant, in its process: same load as its timing, minutes apart
        # from the run-level peaks (benchmarks.efficiency prefers this one).
        from benchmarks.peak import machine_peaks

        result["local_peak"] = machine_peaks(repeats=3)
    result["rss_baseline_mb"] = round(baseline, 1)
    return result


if __name__ == "__main__":
    sys.exit(main())
