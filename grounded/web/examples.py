"""The page's example photos: bundled with scikit-image (no download), written once as PNGs."""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

__all__ = ["write_examples"]

_LOG = logging.getLogger("grounded.app")

# Photos bundled inside scikit-image (no download) and prompts that fit them.
_EXAMPLES = (
    ("chelsea", "cat."),
    ("astronaut", "person. rocket. flag."),
    ("coffee", "cup. saucer. spoon."),
    ("rocket", "rocket. tree. building."),
    ("stereo_motorcycle", "motorcycle. helmet."),
)


def write_examples(folder: str | os.PathLike[str]) -> list[list[str]]:
    """Write the example photos as PNGs into ``folder`` (once); ``[path, prompt]`` pairs.

    Images this scikit-image install cannot load offline (fetchers needing pooch) are skipped.
    """
    import numpy as np
    import skimage.data
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    examples = []
    for name, prompt in _EXAMPLES:
        path = folder / f"{name}.png"
        if not path.is_file():
            try:
                image = getattr(skimage.data, name)()
            except Exception:  # noqa: BLE001 - needs a download here: leave this example out
                _LOG.info("example %s is not bundled with scikit-image here; skipped", name)
                continue
            image = image[0] if isinstance(image, tuple) else image  # stereo pair -> left view
            tmp = folder / f".{name}.{uuid.uuid4().hex}.png"
            Image.fromarray(np.asarray(image, dtype=np.uint8)).save(tmp)
            os.replace(tmp, path)
        examples.append([str(path), prompt])
    return examples
