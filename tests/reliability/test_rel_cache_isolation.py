"""Checklist 18 and 20 in-process: cache entries are keyed by image content and model, and one model
never runs two calls at once when many threads share a pipeline."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from rel_helpers import random_rgb

from grounded import GroundedSAM
from grounded.detectors.tiny import build_tiny_detector
from grounded.io.export import detections_to_dict
from sam_core import build_sam

LOW = {"box_threshold": 0.0, "text_threshold": 0.0, "max_detections": 4}
PROMPT = "cat. dog"


def fresh(pipe: GroundedSAM) -> GroundedSAM:
    """The same models with empty caches: a prediction no cache can have influenced."""
    return GroundedSAM(pipe.detector, pipe.sam, config=pipe.config)


def as_json(pipe: GroundedSAM, image: np.ndarray, prompt: str = PROMPT) -> dict[str, Any]:
    det = pipe.predict(image, prompt, **LOW)
    return detections_to_dict(det, image_size=image.shape[:2], classes=pipe.classes_of(prompt))


def test_two_images_with_the_same_prompt_never_share_results(rel_pipe):
    pipe = fresh(rel_pipe)
    a = random_rgb(1, 64, 80)
    b = a.copy()
    b[10, 10, 0] ^= 0xFF  # one pixel differs: a different image for the cache
    c = random_rgb(2, 64, 80)
    results = [as_json(pipe, image) for image in (a, b, c, a, b, c)]
    assert pipe.stats.sam_encoder_calls == 3 and pipe.stats.detector_calls == 3  # one entry per image
    for image, result in zip((a, b, c, a, b, c), results, strict=True):
        assert result == as_json(fresh(rel_pipe), image)  # equal to an uncached run on that image
    assert results[0] != results[2]


def test_the_cache_key_names_the_model(rel_pipe):
    """Two pipelines with different weights forced onto ONE cache still get their own results."""
    other = GroundedSAM(build_tiny_detector(seed=1), build_sam("tiny", device="cpu", seed=1),
                        config=rel_pipe.config)
    mine = fresh(rel_pipe)
    other._cache = mine._cache  # the worst case: a shared (e.g. process-wide) cache
    image = random_rgb(3, 64, 80)
    first, second = as_json(mine, image), as_json(other, image)
    assert second == as_json(GroundedSAM(other.detector, other.sam, config=other.config), image)
    assert first == as_json(fresh(rel_pipe), image) and first != second
    assert other.stats.detector_calls == 1 and other.stats.sam_encoder_calls == 1  # no hit on mine's entries


class _Overlap:
    """Counts how many calls of one model are running at once (max over the test)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = self.most = self.calls = 0

    def wrap(self, fn: Any) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            with self.lock:
                self.now += 1
                self.calls += 1
                self.most = max(self.most, self.now)
            try:
                time.sleep(0.002)  # widen the window in which an overlap would show
                return fn(*args, **kwargs)
            finally:
                with self.lock:
                    self.now -= 1

        return counted


def test_threads_sharing_a_pipeline_never_overlap_model_calls_and_get_their_own_results(
        rel_pipe, monkeypatch: pytest.MonkeyPatch):
    pipe = GroundedSAM(build_tiny_detector(seed=0), build_sam("tiny", device="cpu", seed=0),
                       config=rel_pipe.config)  # own model objects: the wrappers below stay local
    detector, encoder, decoder = _Overlap(), _Overlap(), _Overlap()
    monkeypatch.setattr(pipe.detector, "detect", detector.wrap(pipe.detector.detect))
    monkeypatch.setattr(pipe.sam.image_encoder, "forward", encoder.wrap(pipe.sam.image_encoder.forward))
    monkeypatch.setattr(pipe.sam.mask_decoder, "forward", decoder.wrap(pipe.sam.mask_decoder.forward))
    prompts = ["cat. dog", "car. bus", "tree"]
    jobs = [(random_rgb(10 + i, 48 + 4 * (i % 3), 64), prompts[i % 3]) for i in range(6)]
    expected = [as_json(fresh(rel_pipe), image, prompt) for image, prompt in jobs]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda job: as_json(pipe, *job), jobs * 2))
    assert got == expected * 2  # no crossed results
    for overlap in (detector, encoder, decoder):
        assert overlap.calls >= 6 and overlap.most == 1
