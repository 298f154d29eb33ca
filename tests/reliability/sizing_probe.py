"""Run one web request (tiny-random models) in a fresh process and print its peak memory as JSON.

``python sizing_probe.py HEIGHT WIDTH DETECTIONS``: the server's path (``service.segment``, the JSON
result, the overlay and the page's mask previews), after a warm-up request on a small image; the peak
is the process's maximum RSS growth over that warm state.
"""

from __future__ import annotations

import gc
import io
import json
import resource
import sys

import numpy as np
from PIL import Image

from grounded import GroundedSAM
from grounded.web import service


def _peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _request(provider: service.PipelineProvider, image: object, options: service.SegmentOptions) -> int:
    words = " . ".join(f"thing{i}" for i in range(40))  # enough classes for the tiny detector's queries
    session = service.segment(provider, image, words, preset=None, options=options)
    service.result_json(session)
    service.overlay_preview(session)
    for _ in service.annotated_value(session)[0][1]:  # gradio consumes the previews one at a time
        pass
    service.table_rows(session.detections)
    return len(session.detections)


def main() -> None:
    height, width, count = (int(v) for v in sys.argv[1:4])
    pipe = GroundedSAM.from_config("tiny-random", tune_allocator=False)
    provider = service.PipelineProvider.from_pipeline(pipe)
    options = service.SegmentOptions(0.0, 0.0, 1.0, count)
    _request(provider, np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8), options)
    rng = np.random.default_rng(1)
    blocks = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
    encoded = io.BytesIO()
    Image.fromarray(blocks.repeat(16, 0).repeat(16, 1)[:height, :width]).save(encoded, format="PNG")
    data = encoded.getvalue()
    del blocks
    gc.collect()
    base = _peak()
    detections = _request(provider, data, options)
    print(json.dumps({"pixels": height * width, "detections": detections, "peak_bytes": _peak() - base}))


if __name__ == "__main__":
    main()
