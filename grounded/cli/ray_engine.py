"""The Ray engine of ``grounded-sam predict`` (``--engine ray``): many workers, one output folder.

Ray Data streams the image list through a pool of actors (``map_batches`` with ``concurrency=N``).
Each actor builds the pipeline once and runs ``image_job.render_image`` on its images, exactly what
the local engine runs, and sends back the encoded outputs. The driver, this process, writes every
file through ``run_folder.RunFolder`` as results arrive, so resuming, stems, the skip report and
``annotations.json`` (sorted by image) are those of the local engine.

Faults: a worker process that dies is restarted by Ray and its unfinished batch is run again
(``max_restarts`` / ``max_task_retries``); the driver commits an image at most once. A killed driver
loses nothing: re-running the command resumes from ``predictions.jsonl``.

Ray is imported only here, and only when ``--engine ray`` runs: the core install does not need it.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.contrib.logging import logging_redirect_tqdm

from grounded.cli.batch import progress_bar, record_outcome
from grounded.cli.image_job import RenderedImage, render_image
from grounded.cli.options import BatchOptions, BatchResult
from grounded.cli.run_folder import open_run_folder
from grounded.io.sources import ImageSource

__all__ = ["FAULT_ENV", "PipelineSpec", "RayOptions", "RayRunError", "import_ray", "run_ray"]

logger = logging.getLogger(__name__)

FAULT_ENV = "GROUNDED_SAM_RAY_FAULT"
"""Fault injection for tests: ``"N:MARKER"`` makes the worker that reaches its N-th image exit hard
(``os._exit(1)``) once, when the file MARKER does not exist yet (it is created first)."""

INSTALL_HINT = "pip install 'grounded-sam[ray]'"


class RayRunError(RuntimeError):
    """Ray could not run the job (no cluster at the address, workers dying past their retries)."""


@dataclass(frozen=True)
class PipelineSpec:
    """How every worker builds its pipeline: ``GroundedSAM.from_config(config, device=, dtype=)``."""

    config: str
    device: str | None = None
    dtype: str | None = None


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide the Ray run is.

    Attributes:
        address: ``None`` starts a local Ray cluster on this machine for the run; ``"auto"`` joins the
            cluster this machine belongs to (``ray start``); ``"ray://HOST:PORT"`` uses Ray Client.
        workers: actors, each holding one pipeline; ``None``: one per ``gpus_per_worker`` share of the
            cluster's GPUs, or on CPUs one per 4 CPUs (at least 1).
        gpus_per_worker: GPUs reserved per actor (``0.5`` puts two actors on one GPU).
        batch_size: images per actor call (and per result block sent back).
        max_restarts: how often Ray restarts a dead worker (its batch is retried as often).
    """

    address: str | None = None
    workers: int | None = None
    gpus_per_worker: float = 0.0
    batch_size: int = 4
    max_restarts: int = 8


def import_ray() -> Any:
    """The ``ray`` module with Ray Data, or ``RayRunError`` saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401 - the engine needs Ray Data, not only Ray Core
    except ImportError as exc:
        raise RayRunError(f"--engine ray needs Ray Data, which is not installed ({exc}); install it with "
                          f"{INSTALL_HINT}") from None
    return ray


def run_ray(spec: PipelineSpec, images: Sequence[ImageSource], out_dir: str | os.PathLike[str],
            options: BatchOptions, ray_options: RayOptions, *, identity: dict[str, Any],
            progress: bool = True) -> BatchResult:
    """Like ``batch.run_batch``, with the predictions computed by a pool of Ray actors.

    Args:
        identity: ``run_folder.run_identity`` of the config the workers load (the driver loads no model).

    Raises:
        OutputConflictError: as ``run_batch``.
        RayRunError: Ray is missing, unreachable, or the job failed (finished images are kept).
    """
    ray = import_ray()
    result = BatchResult(selected=len(images))
    with open_run_folder(out_dir, identity, classes=options.classes, formats=options.formats,
                         models=None, overwrite=options.overwrite) as folder:
        todo = folder.plan(images)
        result.already_done = len(images) - len(todo)
        if result.already_done:
            logger.info("%d of %d images already done in %s; %d to do",
                        result.already_done, len(images), folder.out, len(todo))
        if not todo:
            return result
        stems = {image.location: stem for image, stem in todo}
        position = {image.location: index for index, (image, _) in enumerate(todo)}
        failures: list[tuple[int, str, str]] = []
        started = _connect(ray, ray_options.address)
        try:
            results = _dataset(ray, spec, [image for image, _ in todo], options, ray_options)
            with logging_redirect_tqdm(), progress_bar(len(images), result.already_done, progress) as bar:
                for row in results.iter_rows():
                    rendered = RenderedImage.unpack(row["meta"], row["blob"])
                    if rendered.source not in stems:  # a retried batch sent it again: commit once
                        continue
                    stem = stems.pop(rendered.source)
                    if rendered.error is not None:
                        failures.append((position[rendered.source], rendered.name, rendered.error))
                        logger.warning("skipping %s: %s", rendered.name, rendered.error)
                    else:
                        record_outcome(folder, rendered, stem, result)
                    bar.update(1)
        except ray.exceptions.RayError as exc:
            raise RayRunError(f"the Ray job failed: {_root_cause(exc)}") from None
        finally:
            result.failed = [(name, reason) for _, name, reason in sorted(failures)]
            if started:
                ray.shutdown()
        if stems:  # Ray finished without some images: never silently
            raise RayRunError(f"the Ray job ended without results for {len(stems)} images; re-run the "
                              "same command to do them")
    return result


def _root_cause(exc: BaseException) -> str:
    """The worker's own error (e.g. models that cannot load), not Ray's wrapping and traceback."""
    cause = exc
    while getattr(cause, "cause", None) is not None:
        cause = cause.cause  # RayTaskError and Ray Data's wrappers keep the original here
    if cause is not exc:
        return f"{type(cause).__name__}: {cause}"
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(exc).__name__


def _connect(ray: Any, address: str | None) -> bool:
    """Start (no address) or join a Ray cluster unless this process already has one; True if we did."""
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise RayRunError(f"could not {'start' if address is None else 'join'} a Ray cluster"
                          f"{'' if address is None else f' at {address!r}'}: {exc}") from None
    return True


def _dataset(ray: Any, spec: PipelineSpec, images: Sequence[ImageSource], options: BatchOptions,
             ray_options: RayOptions) -> Any:
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # ours is the one bar
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its per-run info lines would break our bar
    resources = ray.cluster_resources()
    workers, cpus = _pool_size(resources, ray_options)
    gpus = f", {ray_options.gpus_per_worker:g} GPU" if ray_options.gpus_per_worker else ""
    logger.info("Ray: %d worker(s) (%d CPU%s each) on a cluster of %d CPUs, %d GPUs", workers, cpus, gpus,
                int(resources.get("CPU", 0)), int(resources.get("GPU", 0)))
    items = [{"name": image.name, "path": str(image.path), "uri": image.uri or ""} for image in images]
    # About one block per batch, so results stream back batch by batch (the bar moves, the driver writes
    # steadily), capped so a million images do not become a million tiny blocks.
    blocks = max(1, min(-(-len(items) // ray_options.batch_size), 100 * workers))
    dataset = ray.data.from_items(items, override_num_blocks=blocks)
    kwargs = {"fn_constructor_kwargs": {"spec": spec, "options": options, "fault": os.environ.get(FAULT_ENV)},
              "batch_size": ray_options.batch_size, "compute": ray.data.ActorPoolStrategy(size=workers),
              "num_cpus": cpus, "num_gpus": ray_options.gpus_per_worker or None}
    # Ray Data's actor pools default to endless restarts and retries; a bounded count stops an image
    # that kills its worker every time from looping forever. Ray 2.60 takes them only as (deprecated)
    # remote arguments; a Ray without those keeps its defaults.
    retries = {"max_restarts": ray_options.max_restarts, "max_task_retries": ray_options.max_restarts}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return dataset.map_batches(_Worker, **kwargs, **retries)
        except TypeError:
            return dataset.map_batches(_Worker, **kwargs)


def _pool_size(resources: dict[str, float], ray_options: RayOptions) -> tuple[int, int]:
    """(actors, CPUs per actor). On CPUs, an actor's CPUs are also its torch threads (Ray sets
    ``OMP_NUM_THREADS``), so the cluster's CPUs are shared out among the actors."""
    total_cpus = max(1, int(resources.get("CPU", 1)))
    if ray_options.gpus_per_worker > 0:
        workers = ray_options.workers or max(1, int(resources.get("GPU", 0) // ray_options.gpus_per_worker))
        return workers, 1
    workers = ray_options.workers or max(1, total_cpus // 4)
    return workers, max(1, total_cpus // workers)


class _Worker:
    """One Ray actor: the pipeline, built once; each call predicts a batch of images."""

    def __init__(self, spec: PipelineSpec, options: BatchOptions, fault: str | None) -> None:
        from grounded.pipeline import GroundedSAM

        self.pipe = GroundedSAM.from_config(spec.config, device=spec.device, dtype=spec.dtype)
        self.models = self.pipe.describe()
        self.options = options
        self.fault = fault
        self.seen = 0

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        metas, blobs = [], []
        for name, path, uri in zip(batch["name"], batch["path"], batch["uri"], strict=True):
            self._maybe_fail()
            image = ImageSource(name=str(name), path=Path(str(path)), uri=str(uri) or None)
            meta, blob = replace(render_image(self.pipe, image, self.options), models=self.models).pack()
            metas.append(meta)
            blobs.append(blob)
        return {"meta": np.array(metas, dtype=object), "blob": np.array(blobs, dtype=object)}

    def _maybe_fail(self) -> None:
        self.seen += 1
        if not self.fault:
            return
        count, _, marker = self.fault.partition(":")
        if self.seen == int(count):
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return
            os._exit(1)  # the test's killed worker: no clean-up, like a crash or an OOM kill
