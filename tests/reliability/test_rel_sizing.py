"""Issue 12's sizing proof: the measured peak memory of a request stays within the documented formula
(``grounded.web.budget``, README "Sizing"), and admission control refuses what would not fit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from grounded.web import service
from grounded.web.budget import BASE_BYTES, BYTES_PER_DETECTION, BYTES_PER_PIXEL, projected_request_bytes

PROBE = Path(__file__).resolve().parent / "sizing_probe.py"
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.parametrize(("height", "width", "detections"),
                         [(1000, 1000, 30), (3000, 4000, 30), (5000, 6000, 5)])
def test_measured_peak_stays_within_the_documented_formula(height, width, detections):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, str(PROBE), str(height), str(width), str(detections)],
                            capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["detections"] == detections  # the tiny detector filled the cap
    bound = projected_request_bytes(measured["pixels"], measured["detections"])
    assert measured["peak_bytes"] <= bound, (measured, bound)


def test_the_formula_is_what_the_readme_says():
    readme = (REPO / "README.md").read_text()
    assert f"{BASE_BYTES // 2**20} MiB + {BYTES_PER_PIXEL} bytes × pixels + " \
           f"{BYTES_PER_DETECTION // 2**20} MiB × detections" in readme


def test_admission_control_refuses_before_any_model_runs(rel_pipe):
    tiny_pipe = rel_pipe
    provider = service.PipelineProvider.from_pipeline(tiny_pipe)
    before = tiny_pipe.stats.detector_calls, tiny_pipe.stats.sam_encoder_calls
    image = np.zeros((300, 400, 3), dtype=np.uint8)
    options = service.SegmentOptions(0.3, 0.2, 0.5, 100)
    need = projected_request_bytes(300 * 400, 100)
    refusal = r"400×300 = 0\.1 MP with up to 100 detections.*lower max_detections"
    with pytest.raises(ValueError, match=refusal):
        service.segment(provider, image, "cat", preset=None, options=options, request_bytes=need - 1)
    assert (tiny_pipe.stats.detector_calls, tiny_pipe.stats.sam_encoder_calls) == before
    service.segment(provider, image, "cat", preset=None, options=options, request_bytes=need)  # fits
