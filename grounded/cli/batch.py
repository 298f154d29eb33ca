"""The local engine of ``grounded-sam predict``: every image in this process, one after another.

The output folder (layout, resume records, ``annotations.json``, stems) is ``run_folder.py``; one
image's work is ``image_job.py``. The Ray engine (``ray_engine.py``) shares both, so the two engines
write the same files for the same inputs.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from grounded.cli.image_job import RenderedImage, render_image
from grounded.cli.options import FORMATS, BatchOptions, BatchResult
from grounded.cli.run_folder import OutputConflictError, check_output_dir, open_run_folder, run_identity
from grounded.io.sources import ImageSource, shown

__all__ = [
    "FORMATS",
    "BatchOptions",
    "BatchResult",
    "OutputConflictError",
    "check_output_dir",
    "progress_bar",
    "record_outcome",
    "run_batch",
    "run_identity",
]

logger = logging.getLogger(__name__)


def run_batch(pipe: Any, images: Sequence[ImageSource], out_dir: str | os.PathLike[str],
              options: BatchOptions, *, progress: bool = True) -> BatchResult:
    """Predict every image not yet finished in ``out_dir`` and write the requested formats.

    Args:
        pipe: a ``GroundedSAM`` (loaded once by the caller).
        images: from ``grounded.io.sources.expand_sources`` (and ``select_shard``), in sorted order.
        out_dir: the output folder, created if missing.
        options: classes, formats, threshold overrides, ``overwrite``.
        progress: show a tqdm bar on stderr (only when it is a terminal).

    Raises:
        OutputConflictError: ``out_dir`` holds another run's outputs (different prompt, config or
            formats) or foreign files with our names, and ``options.overwrite`` is False.
    """
    result = BatchResult(selected=len(images))
    with open_run_folder(out_dir, run_identity(pipe.config, options), classes=options.classes,
                         formats=options.formats, models=pipe.describe(),
                         overwrite=options.overwrite) as folder:
        todo = folder.plan(images)
        result.already_done = len(images) - len(todo)
        if result.already_done:
            logger.info("%d of %d images already done in %s; %d to do",
                        result.already_done, len(images), folder.out, len(todo))
        with logging_redirect_tqdm(), progress_bar(len(images), result.already_done, progress) as bar:
            for image, stem in todo:
                record_outcome(folder, render_image(pipe, image, options), stem, result)
                bar.update(1)
    return result


def record_outcome(folder: Any, rendered: RenderedImage, stem: str, result: BatchResult) -> None:
    """Commit a finished image to ``folder`` (a ``RunFolder``), or report a skipped one; count it."""
    if rendered.error is not None:
        result.failed.append((rendered.name, rendered.error))
        logger.warning("skipping %s: %s", shown(rendered.name), shown(rendered.error))
        return
    record = folder.commit(rendered, stem)
    result.succeeded += 1
    result.instances += len(record["detections"])


def progress_bar(total: int, done: int, enabled: bool) -> tqdm:
    """One bar for the whole data set on stderr: images done / total and images per second."""
    return tqdm(total=total, initial=done, unit="img", file=sys.stderr, disable=None if enabled else True,
                dynamic_ncols=True, smoothing=0.1)
