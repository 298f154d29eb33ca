"""``python -m benchmarks.scale_out [--images 40] [--size 96 128]``: images per second of
``grounded-sam predict``, local engine vs Ray engine with 1 and 2 workers, in one run on this machine.

Every engine labels the same synthetic folder into its own output folder with the ``tiny-random``
config (untrained, built in-process: no weights, no network), so the figures measure the engines'
overheads and the scaling over CPU cores, not the real models' speed. Two figures per engine:

* ``steady_img_s``: images per second between the first and the last committed image (model loading
  and worker start-up excluded): what a long run sustains;
* ``wall_s``: the whole call, including building the pipeline, or starting the Ray workers;
* ``driver_write_ms``: median time the driver spends committing one image (mask and overlay files,
  the fsync'ed record, its COCO entry): ``1000 / driver_write_ms`` images/s is the ceiling of one
  driver, whatever the number of workers.

``local`` uses torch's default thread count, ``local 1thr`` one thread (as each Ray worker with
one CPU): with tiny models on a busy machine, extra threads can cost more than they give.

The Ray runs share one local cluster with all this machine's CPUs; a Ray worker gets
``CPUs / workers`` CPUs and as many torch threads. Results go to ``benchmarks/results/scale_out.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from benchmarks.measure import machine_info
from grounded.cli import run_folder
from grounded.cli.batch import run_batch
from grounded.cli.options import BatchOptions
from grounded.config import load_config
from grounded.io.sources import expand_sources

__all__ = ["main"]

_OPTIONS = BatchOptions(classes=["cat", "dog"], box_threshold=0.0, text_threshold=0.0, max_detections=3)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--size", type=int, nargs=2, default=(96, 128), metavar=("H", "W"))
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/scale_out.json"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="scale_out_") as tmp:
        root = Path(tmp)
        images = _make_images(root / "images", args.images, tuple(args.size))
        rows = [_timed("local", lambda out: _local(images, out), root / "local")]
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            rows.append(_timed("local 1thr", lambda out: _local(images, out), root / "local1"))
        finally:
            torch.set_num_threads(threads)
        import ray

        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 object_store_memory=400 * 1024**2)
        try:
            for workers in args.workers:
                rows.append(_timed(f"ray x{workers}", lambda out, w=workers: _ray(images, out, w),
                                   root / f"ray{workers}"))
        finally:
            ray.shutdown()
    report = {"machine": machine_info(), "images": args.images, "size_hw": list(args.size),
              "config": "tiny-random", "rows": rows,
              "note": "measured on a shared machine (other jobs were running); compare rows of one run"}
    print(f"{'engine':<10} {'steady img/s':>13} {'wall s':>8} {'driver write ms/img':>20}")
    for row in rows:
        print(f"{row['engine']:<10} {row['steady_img_s']:>13.2f} {row['wall_s']:>8.1f} "
              f"{row['driver_write_ms']:>20.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def _make_images(folder: Path, count: int, size: tuple[int, int]) -> list[Any]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / f"{index:05d}.png")
    return expand_sources([folder])


def _local(images: list[Any], out: Path) -> None:
    from grounded.pipeline import GroundedSAM

    run_batch(GroundedSAM.from_config("tiny-random", device="cpu"), images, out, _OPTIONS, progress=False)


def _ray(images: list[Any], out: Path, workers: int) -> None:
    from grounded.cli.ray_engine import PipelineSpec, RayOptions, run_ray

    identity = run_folder.run_identity(load_config("tiny-random"), _OPTIONS)
    run_ray(PipelineSpec("tiny-random", device="cpu"), images, out, _OPTIONS,
            RayOptions(workers=workers, batch_size=2), identity=identity, progress=False)


def _timed(engine: str, run: Callable[[Path], None], out: Path) -> dict[str, Any]:
    """Run one engine; timestamps every committed image by wrapping ``RunFolder.commit``."""
    stamps: list[float] = []
    writing: list[float] = []  # seconds the driver spent writing each image (files, record, COCO)
    commit = run_folder.RunFolder.commit

    def timed_commit(self: Any, *args: Any, **kwargs: Any) -> Any:
        begin = time.perf_counter()
        record = commit(self, *args, **kwargs)
        stamps.append(time.perf_counter())
        writing.append(stamps[-1] - begin)
        return record

    run_folder.RunFolder.commit = timed_commit  # type: ignore[method-assign]
    start = time.perf_counter()
    try:
        run(out)
    finally:
        run_folder.RunFolder.commit = commit  # type: ignore[method-assign]
    wall = time.perf_counter() - start
    steady = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else float("nan")
    return {"engine": engine, "images": len(stamps), "steady_img_s": round(steady, 3),
            "wall_s": round(wall, 2), "driver_write_ms": round(1000 * float(np.median(writing)), 2)}


if __name__ == "__main__":
    main()
