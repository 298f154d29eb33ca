"""``python -m benchmarks.profile [--stage sam_encoder|dino] [--dtype auto|float32]``: torch.profiler's
top rows (self CPU time) for one warm call of a stage on its default path, written to
``benchmarks/results/profile_<stage>_<dtype>.txt``. Random full-size weights (no files needed).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from benchmarks.peak import count_flops, cpu_flags, machine_peaks

__all__ = ["main", "profile_stage"]


def _sam_encoder(dtype: torch.dtype, *, prepack: bool = True):
    from sam_core import build_sam
    from sam_core.fast import enable_fast_path

    sam = enable_fast_path(build_sam("vit_b", device="cpu", dtype=dtype, seed=0), prepack=prepack)
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(0)).to(dtype)
    return lambda: sam.image_encoder(x)


def _dino(dtype: torch.dtype, workdir: Path):
    from benchmarks.cases_dino import CLASSES, dino_image
    from benchmarks.weights import DINO_DIR, prepare_weights
    from grounded.detectors.fast_path import clear_fast_path_caches
    from grounded.detectors.grounding_dino import GroundingDinoDetector

    if not (workdir / DINO_DIR).is_dir():
        prepare_weights(workdir, size="full")
    detector = GroundingDinoDetector.from_pretrained(str(workdir / DINO_DIR), device="cpu", dtype=dtype)
    image = dino_image("full")
    return lambda: (clear_fast_path_caches(detector.model), detector.detect(image, CLASSES))


def profile_stage(stage: str, dtype: torch.dtype, *, rows: int = 25, workdir: Path | None = None) -> str:
    """Header (machine, peak, FLOPs, seconds, fraction) + the profiler's table sorted by self CPU."""
    run = (
        _sam_encoder(dtype)
        if stage == "sam_encoder"
        else _dino(dtype, workdir or Path("/tmp/grounded-bench"))
    )
    with torch.inference_mode():
        run()  # warm-up
        start = time.perf_counter()
        run()
        seconds = time.perf_counter() - start
        with torch.profiler.profile() as prof:
            run()
        # oneDNN's prepacked linear has no FLOP formula: count on the plain model (same arithmetic)
        flops = count_flops(_sam_encoder(dtype, prepack=False) if stage == "sam_encoder" else run)
    name = str(dtype).removeprefix("torch.")
    peak = machine_peaks()[name if name in ("float32", "bfloat16") else "float32"]["gflops"]
    info = cpu_flags()
    header = (
        f"{stage} ({name}), {info['cpu']} [{' '.join(info['flags'])}], {torch.get_num_threads()} threads\n"
        f"{flops / 1e9:.0f} GFLOP in {seconds:.2f} s (unprofiled) = {flops / seconds / 1e9:.0f} GFLOP/s = "
        f"{flops / seconds / 1e9 / peak:.0%} of the {name} matmul peak {peak:.0f} GFLOP/s\n"
    )
    return header + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__)
    parser.add_argument("--stage", choices=("sam_encoder", "dino"), default="sam_encoder")
    parser.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto")
    parser.add_argument("--workdir", type=Path, default=None, help="where the DINO weights are/go")
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    from sam_core.device import resolve_dtype

    dtype = resolve_dtype(args.dtype, "cpu")
    text = profile_stage(args.stage, dtype, workdir=args.workdir)
    path = args.out_dir / f"profile_{args.stage}_{str(dtype).removeprefix('torch.')}.txt"
    path.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
