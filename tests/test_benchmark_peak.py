"""benchmarks.peak / benchmarks.efficiency: FLOP counting and fractions of peak (arithmetic only;
no assertion depends on this machine's speed)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks.efficiency import summarize_efficiency, variant_dtype
from benchmarks.peak import count_flops, cpu_flags, efficiency, matmul_peak


def test_count_flops_counts_matmuls_and_attention() -> None:
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    assert count_flops(lambda: a @ b) == 2 * 8 * 16 * 4
    q = k = v = torch.randn(1, 2, 10, 8)  # B x heads x N x hd
    # two products per head: q k^T (10 x 8 x 10) and p v (10 x 10 x 8)
    assert count_flops(lambda: F.scaled_dot_product_attention(q, k, v)) == 2 * (2 * 2 * 10 * 8 * 10)


def test_matmul_peak_reports_its_shape_and_threads() -> None:
    peak = matmul_peak(torch.float32, n=64, repeats=2)
    assert peak["n"] == 64 and peak["threads"] == torch.get_num_threads()
    assert peak["gflops"] == 2 * 64**3 / peak["best_s"] / 1e9


def test_efficiency_uses_the_peak_of_the_dtype_it_ran_in() -> None:
    peaks = {"float32": {"gflops": 100.0}, "bfloat16": {"gflops": 400.0}}
    assert efficiency(200e9, 1.0, "bfloat16", peaks)["fraction_of_peak"] == 0.5
    assert efficiency(50e9, 1.0, "float32", peaks)["fraction_of_peak"] == 0.5
    assert efficiency(50e9, 1.0, "int8", peaks)["peak_dtype"] == "float32"
    assert "fraction_of_peak" not in efficiency(50e9, 1.0, "bfloat16", {"float32": {"gflops": 1.0}})
    assert efficiency(None, 1.0, "float32", peaks) == {}


def test_summary_divides_each_variant_by_the_case_flop_count() -> None:
    report = {
        "peak": {"best": {"float32": {"gflops": 100.0}, "bfloat16": {"gflops": 200.0}}},
        "cases": {
            "sam_encoder": {
                "hf-eager": {"timing": {"median_s": 4.0}},
                "ours-fp32": {"timing": {"median_s": 2.0}, "flops": 100e9, "dtype": "float32"},
                "ours-auto": {"timing": {"median_s": 1.0}, "dtype": "bfloat16"},
            }
        },
        "comparisons": {"sam_encoder": {"ours-auto": {"cosine_vs_ours_fp32": 0.9995}}},
    }
    summary = summarize_efficiency(report)
    rows = summary["per_case"]["sam_encoder"]
    assert rows["hf-eager"]["fraction_of_peak"] == 0.25 and rows["ours-auto"]["fraction_of_peak"] == 0.5
    targets = summary["targets"]
    assert targets["sam_encoder_auto_fraction_bf16"]["met"] is True
    assert targets["sam_encoder_speedup_vs_hf_eager"]["value"] == 4.0
    assert targets["sam_encoder_speedup_vs_hf_eager"]["met"] is False
    assert "sam_encoder_fp32_fraction" not in targets  # auto ran bf16 here


def test_variant_dtype_from_result_or_name() -> None:
    assert variant_dtype("ours-auto", {"dtype": "bfloat16"}) == "bfloat16"
    assert variant_dtype("ours-bf16", {}) == "bfloat16"
    assert variant_dtype("ours-int8", {}) == "int8"
    assert variant_dtype("hf-eager", {}) == "float32"


def test_cpu_flags_reads_the_model_and_the_matmul_flags_from_cpuinfo(tmp_path, monkeypatch) -> None:
    """A fake /proc/cpuinfo: the model name, and only the matmul-relevant flags, in a fixed order."""
    import benchmarks.peak as peak

    fake = tmp_path / "cpuinfo"
    fake.write_text("processor : 0\nmodel name : Fake Xeon 9999\n"
                    "flags : fpu sse2 amx_bf16 avx2 ht avx512f avx512_bf16 amx_tile\n"
                    "processor : 1\nmodel name : Other\nflags : fpu\n")
    real_open = open
    monkeypatch.setattr(peak, "open", lambda path, *a, **k: real_open(fake, *a, **k), raising=False)
    assert cpu_flags() == {"cpu": "Fake Xeon 9999",
                           "flags": ["avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"]}


def test_a_variants_own_peak_and_cpu_time_are_preferred() -> None:
    run_peak = {"float32": {"gflops": 1000.0, "gflops_per_cpu_s": 500.0}}
    local = {"float32": {"gflops": 100.0, "gflops_per_cpu_s": 50.0}}  # measured under load, after it
    report = {
        "peak": {"best": run_peak},
        "cases": {
            "sam_encoder": {
                "ours-fp32": {"timing": {"median_s": 2.0, "cpu_s": 4.0}, "flops": 100e9, "local_peak": local},
                "ours-auto": {"timing": {"median_s": 2.0, "cpu_s": 4.0}, "dtype": "float32"},
            }
        },
    }
    summary = summarize_efficiency(report)
    fp32, auto = (
        summary["per_case"]["sam_encoder"]["ours-fp32"],
        summary["per_case"]["sam_encoder"]["ours-auto"],
    )
    assert fp32["fraction_of_peak"] == 0.5 and fp32["fraction_of_peak_cpu"] == 0.5
    assert auto["fraction_of_peak"] == 0.05 and auto["fraction_of_peak_cpu"] == 0.05
    assert summary["targets"]["sam_encoder_fp32_fraction"]["met"] is False  # auto ran float32
