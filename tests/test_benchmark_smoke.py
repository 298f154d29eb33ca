"""The benchmark command on toy models, in-process: it must run end to end so ``make bench`` can't rot.

Tiny random-weight versions of every architecture go through the same code as the real benchmark
(save_pretrained -> load by each variant -> time -> compare -> summarise -> JSON + Markdown).
"""

from __future__ import annotations

import json

import pytest

from benchmarks.run import main

pytestmark = pytest.mark.slow  # every benchmark case on toy models: ~30 s

VARIANTS = "hf-eager,hf-default,ours-fp32,hf-sdpa,ours-vit_t-fp32,ours-hq_vit_b-fp32"


def test_benchmark_command_runs_on_tiny_models(tmp_path, capsys) -> None:
    out, md = tmp_path / "latest.json", tmp_path / "bench.md"
    code = main(
        ["--size", "tiny", "--quick", "--in-process", "--variants", VARIANTS, "--warmup", "0"]
        + ["--workdir", str(tmp_path / "work"), "--out", str(out), "--markdown", str(md)]
    )
    assert code == 0
    report = json.loads(out.read_text())
    cases, comparisons, summary = report["cases"], report["comparisons"], report["summary"]
    assert set(cases) == {"sam_encoder", "sam_decoder", "sam2_encoder", "dino", "e2e"}
    assert report["machine"]["cpu_capability"] and "native_bf16" in report["machine"]

    # SAM encoder: reference and ours timed; same weights -> same embedding.
    assert cases["sam_encoder"]["hf-eager"]["timing"]["median_s"] > 0
    assert comparisons["sam_encoder"]["ours-fp32"]["cosine_vs_reference"] > 0.99999
    # SAM decoder: every box count timed; our one-call decoder equals transformers' repeat-the-embedding.
    for n in (1, 8, 32):
        assert cases["sam_decoder"]["ours-fp32"][f"boxes_{n}"]["per_box_ms"] > 0
        assert comparisons["sam_decoder"]["ours-fp32"][f"max_abs_masks_{n}"] < 1e-4
    # MobileSAM / SAM-HQ speed cases: encoder (+ SAM-HQ's per-image HQ features) and decoder timed.
    for name in ("ours-vit_t-fp32", "ours-hq_vit_b-fp32"):
        assert cases["sam_encoder"][name]["timing"]["median_s"] > 0
        assert cases["sam_decoder"][name]["boxes_32"]["per_box_ms"] > 0
    # SAM 2 encoder: transformers' Sam2Model and ours on the same weights, same features.
    assert cases["sam2_encoder"]["ours-fp32"]["timing"]["median_s"] > 0
    assert summary["sam2_encoder"]["parity_met"] is True
    # Grounding DINO: fast path vs transformers on identical inputs, and top-box agreement.
    parity = comparisons["dino"]["ours-fp32"]
    assert parity["reference"] == "hf-default"
    assert parity["logits_max_abs"] < 1e-4 and parity["boxes_max_abs"] < 1e-4
    assert parity["top_k_mean_iou"] > 0.99
    assert summary["dino"]["parity_met"] is True
    # End to end: re-thresholding runs no model; a new prompt runs the detector but not the SAM encoder.
    e2e = cases["e2e"]["ours-fp32"]
    assert all(v == 0 for v in e2e["rethreshold"]["model_calls"].values())
    assert e2e["new_prompt"]["model_calls"]["sam_encoder_calls"] == 0
    assert e2e["new_prompt"]["model_calls"]["detector_calls"] == e2e["calls_per_step"]
    assert summary["e2e"]["new_prompt_skips_encoder"] is True

    # Against the machine's own limit: the fp32 matmul peak measured in the same run, FLOPs counted
    # once per case and every timed variant set against the peak of the dtype it ran in.
    assert report["peak"]["best"]["float32"]["gflops"] > 0
    efficiency = report["efficiency"]["per_case"]
    assert efficiency["sam_encoder"]["ours-fp32"]["flops"] > 0
    assert efficiency["sam_encoder"]["hf-eager"]["flops"] == efficiency["sam_encoder"]["ours-fp32"]["flops"]
    assert 0 < efficiency["sam_encoder"]["ours-fp32"]["fraction_of_peak"]
    assert efficiency["dino"]["ours-fp32"]["peak_dtype"] == "float32"
    assert "of float32" in md.read_text()

    table = capsys.readouterr().out
    assert "sam_encoder" in table and "ours-fp32" in table
    text = md.read_text()
    assert text.startswith("## Benchmarks") and "| case | variant |" in text
    assert report["machine"]["cpu_capability"] in text
