"""The `sam3` benchmark case on the tiny model, in-process: `python -m benchmarks.run --cases sam3`
must run end to end, outside the default case list (it is heavy at full size)."""

from __future__ import annotations

import json

import pytest

from benchmarks.run import DEFAULT_CASES, main

pytestmark = pytest.mark.slow  # benchmark smoke: ~10 s


def test_sam3_case_runs_on_the_tiny_model_and_is_not_a_default_case(tmp_path) -> None:
    assert "sam3" not in DEFAULT_CASES
    out = tmp_path / "sam3.json"
    code = main(["--cases", "sam3", "--size", "tiny", "--quick", "--in-process", "--warmup", "0",
                 "--workdir", str(tmp_path / "work"), "--out", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert set(report["cases"]) == {"sam3"}
    hf, ours = report["cases"]["sam3"]["hf"], report["cases"]["sam3"]["ours"]
    assert hf["timing"]["median_s"] > 0 and ours["timing"]["median_s"] > 0
    assert ours["new_prompt"]["median_s"] > 0
    # warm-up 0 + 1 timed cold run + the saved cold run: 2 encoder runs; the new prompts add none
    assert ours["encoder_calls"] == 2
    assert report["comparisons"]["sam3"]["ours"]["same_count"] is True
    assert not (tmp_path / "work" / "hf_sam").exists()  # no shared weights prepared for this case
