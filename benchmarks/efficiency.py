"""Each stage against the machine's own limit: achieved GFLOP/s and fraction of the matmul peak of the
dtype it ran in (``benchmarks.peak``), next to the ratios against the references (``report``).

FLOPs are counted once per case by the variant that records ``flops`` (our float32 model: the same
arithmetic as every other variant of the case); every timed variant of the case is divided by it.
"""

from __future__ import annotations

from typing import Any

from benchmarks.peak import efficiency

__all__ = [
    "TARGETS",
    "efficiency_markdown",
    "efficiency_rows",
    "format_efficiency",
    "summarize_efficiency",
    "variant_dtype",
]

# The targets on a CPU with native bf16 (fractions of the peak of the dtype the stage ran in).
TARGETS = {
    "sam_encoder_auto_fraction_bf16": 0.50,  # ViT-B encoder, dtype auto = bf16
    "sam_encoder_fp32_fraction": 0.70,  # CPUs without native bf16 (auto = fp32)
    "sam_encoder_speedup_vs_hf_eager": 8.0,
    "sam_encoder_cosine": 0.999,
    "dino_speedup_vs_hf_eager": 6.0,
    "decoder_ms_per_box_32": 10.0,
    "e2e_cold_s": 4.0,
    "e2e_peak_rss_mb": 2048.0,
}
_TIMED = {  # case -> (path to the timed figure, path to the FLOP count), within one variant's result
    "sam_encoder": (("timing", "median_s"), ("flops",)),
    "sam2_encoder": (("timing", "median_s"), ("flops",)),
    "dino": (("timing", "median_s"), ("flops",)),
    "sam_decoder": (("boxes_32", "timing", "median_s"), ("boxes_32", "flops")),
}


def _get(node: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def variant_dtype(name: str, result: dict) -> str:
    """The dtype a variant ran in: what it recorded, else read from its name (bf16/int8/float32)."""
    if isinstance(result.get("dtype"), str):
        return result["dtype"]
    if "bf16" in name and "emulated" not in name:
        return "bfloat16"
    return "int8" if "int8" in name else "float32"


def _case_efficiency(case: str, variants: dict[str, dict], peaks: dict) -> dict[str, dict]:
    time_path, flop_path = _TIMED[case]
    flops = next((f for r in variants.values() if (f := _get(r, flop_path))), None)
    out = {}
    for name, result in variants.items():
        seconds = _get(result, time_path)
        cpu_s = _get(result, (*time_path[:-1], "cpu_s"))
        local = result.get("local_peak") if isinstance(result, dict) else None
        row = efficiency(flops, seconds, variant_dtype(name, result), local or peaks, cpu_s=cpu_s)
        if row:
            row["peak_source"] = "variant's process, right after it" if local else "run (best of start/end)"
            out[name] = {"flops": flops, "gflop": round(flops / 1e9, 1), "seconds": round(seconds, 4), **row}
    return out


def summarize_efficiency(report: dict[str, Any]) -> dict[str, Any]:
    """Per case and variant: GFLOP, seconds, GFLOP/s, fraction of peak; plus the targets' verdicts."""
    peaks = report.get("peak", {}).get("best", {})
    cases = report.get("cases", {})
    per_case = {case: _case_efficiency(case, cases[case], peaks) for case in _TIMED if case in cases}
    enc = per_case.get("sam_encoder", {})
    enc_times = {n: _get(r, ("timing", "median_s")) for n, r in cases.get("sam_encoder", {}).items()}
    cos = {
        n: c.get("cosine_vs_ours_fp32")
        for n, c in report.get("comparisons", {}).get("sam_encoder", {}).items()
        if isinstance(c, dict)
    }
    verdicts: dict[str, Any] = {}
    auto = enc.get("ours-auto")
    if auto and auto.get("peak_dtype") == "bfloat16":
        verdicts["sam_encoder_auto_fraction_bf16"] = _verdict(auto["fraction_of_peak"], ">=", 0.50)
        if "fraction_of_peak_cpu" in auto:
            verdicts["sam_encoder_auto_fraction_bf16_cpu_time"] = _verdict(
                auto["fraction_of_peak_cpu"], ">=", 0.50
            )
        verdicts["sam_encoder_cosine"] = _verdict(cos.get("ours-auto"), ">=", TARGETS["sam_encoder_cosine"])
    fp32 = enc.get("ours-auto") if auto and auto.get("peak_dtype") == "float32" else None
    if fp32 and "fraction_of_peak" in fp32:  # auto = float32: a CPU without native bf16 (or forced)
        verdicts["sam_encoder_fp32_fraction"] = _verdict(fp32["fraction_of_peak"], ">=", 0.70)
        if "fraction_of_peak_cpu" in fp32:
            verdicts["sam_encoder_fp32_fraction_cpu_time"] = _verdict(
                fp32["fraction_of_peak_cpu"], ">=", 0.70
            )
    if enc_times.get("hf-eager") and enc_times.get("ours-auto"):
        ratio = _ratio(cases["sam_encoder"]["hf-eager"], cases["sam_encoder"]["ours-auto"])
        verdicts["sam_encoder_speedup_vs_hf_eager"] = _verdict(
            ratio, ">=", TARGETS["sam_encoder_speedup_vs_hf_eager"]
        )
    dino = cases.get("dino", {})
    dino_best = [
        n for n in ("ours-auto", "ours-bf16", "ours-fp32") if _get(dino.get(n), ("timing", "median_s"))
    ]
    if dino_best and _get(dino.get("hf-eager"), ("timing", "median_s")):
        ratio = _ratio(dino["hf-eager"], dino[dino_best[0]])
        verdicts[f"dino_speedup_vs_hf_eager ({dino_best[0]})"] = _verdict(ratio, ">=", 6.0)
    dec = cases.get("sam_decoder", {})
    dec_name = next((n for n in ("ours-auto", "ours-fp32") if n in dec and "boxes_32" in dec[n]), None)
    if dec_name:
        ms = dec[dec_name]["boxes_32"]["per_box_ms"]
        verdicts[f"decoder_ms_per_box_32 ({dec_name})"] = _verdict(ms, "<=", TARGETS["decoder_ms_per_box_32"])
    e2e = cases.get("e2e", {})
    e2e_name = next(
        (n for n in ("ours-auto", "ours-fp32") if _get(e2e.get(n), ("cold", "timing", "median_s"))), None
    )
    if e2e_name:
        verdicts[f"e2e_cold_s ({e2e_name})"] = _verdict(
            e2e[e2e_name]["cold"]["timing"]["median_s"], "<=", 4.0
        )
        verdicts[f"e2e_peak_rss_mb ({e2e_name})"] = _verdict(e2e[e2e_name].get("peak_rss_mb"), "<=", 2048.0)
    return {"per_case": per_case, "targets": verdicts}


def _ratio(reference: dict, ours: dict) -> float:
    """Speed-up by wall time and by process CPU time; the smaller (a reference that waited for the CPU
    under other jobs' load looks slow by wall time only)."""
    wall = reference["timing"]["median_s"] / ours["timing"]["median_s"]
    ref_cpu, our_cpu = reference["timing"].get("cpu_s"), ours["timing"].get("cpu_s")
    return min(wall, ref_cpu / our_cpu) if ref_cpu and our_cpu else wall


def _verdict(value: float | None, op: str, limit: float) -> dict[str, Any]:
    if value is None:
        return {"value": None, "target": f"{op} {limit}", "met": None}
    met = value >= limit if op == ">=" else value <= limit
    return {"value": round(value, 4), "target": f"{op} {limit}", "met": met}


def efficiency_rows(summary: dict[str, Any]) -> list[list[str]]:
    """Table rows: case, variant, dtype, GFLOP, seconds, GFLOP/s, fraction of the dtype's peak."""
    rows = []
    for case, variants in summary.get("per_case", {}).items():
        for name, r in variants.items():
            frac, frac_cpu = r.get("fraction_of_peak"), r.get("fraction_of_peak_cpu")
            rows.append(
                [
                    case,
                    name,
                    r["dtype"],
                    f"{r['gflop']:.1f}",
                    f"{r['seconds']:.3f}",
                    f"{r['gflops']:.0f}",
                    "" if frac is None else f"{100 * frac:.0f} % of {r['peak_dtype']}",
                    "" if frac_cpu is None else f"{100 * frac_cpu:.0f} %",
                ]
            )
    return rows


EFFICIENCY_HEADER = [
    "case",
    "variant",
    "dtype",
    "GFLOP",
    "median s",
    "GFLOP/s",
    "of peak (wall)",
    "of peak (CPU time)",
]


def _peak_line(report: dict[str, Any]) -> str:
    m, peak = report.get("machine", {}), report.get("peak", {}).get("best", {})
    peaks = ", ".join(f"{d} {p['gflops']:.0f} GFLOP/s" for d, p in peak.items())
    threads = next(iter(peak.values()), {}).get("threads", "?")
    return (
        f"{m.get('cpu', '?')}, flags {' '.join(m.get('flags', [])) or 'n/a'}; "
        f"matmul peak ({PEAK_LABEL}, {threads} threads): {peaks or 'not measured'}"
    )


PEAK_LABEL = "best of 5 torch.mm 4096 x 4096, before and after the cases"


def format_efficiency(report: dict[str, Any]) -> str:
    """Console text: the peak line, the efficiency table, the target verdicts."""
    summary = report.get("efficiency", {})
    rows = efficiency_rows(summary)
    widths = [max(len(str(r[i])) for r in [EFFICIENCY_HEADER, *rows]) for i in range(len(EFFICIENCY_HEADER))]
    lines = [_peak_line(report)]
    lines += [
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in [EFFICIENCY_HEADER, *rows]
    ]
    lines += [f"{k}: {v}" for k, v in summary.get("targets", {}).items()]
    return "\n".join(lines)


def efficiency_markdown(report: dict[str, Any]) -> list[str]:
    """README lines: the machine's limit, each stage's fraction of it, the verdicts."""
    summary = report.get("efficiency", {})
    out = [
        "",
        "Against the machine's own limit: " + _peak_line(report) + ".",
        "",
        "| " + " | ".join(EFFICIENCY_HEADER) + " |",
        "|" + "|".join("---" for _ in EFFICIENCY_HEADER) + "|",
    ]
    out += ["| " + " | ".join(row) + " |" for row in efficiency_rows(summary)]
    out += ["", "Targets against the limit:", ""]
    out += [
        f"- {k}: {v['value']} (target {v['target']}) -> met={v['met']}"
        for k, v in summary.get("targets", {}).items()
    ]
    startup = report.get("startup")
    if startup:
        out += [
            "",
            f"Start-up (best of 3 fresh processes): python {startup['python_s']:.2f} s, `import grounded` "
            f"{startup['import_grounded_s']:.2f} s (lazy), `from grounded import GroundedSAM` "
            f"{startup['import_pipeline_s']:.2f} s, `import sam_core` {startup['import_sam_core_s']:.2f} s, "
            f"`python app.py` to serving {startup.get('app_to_serving_s', float('nan')):.1f} s "
            f"({startup.get('app_note', '')}).",
        ]
    return out


def merge_reports(paths: list[str]) -> dict[str, Any]:
    """Later reports' variants replace earlier ones' (same case and name); summaries recomputed.

    For re-running a few variants after a long run; each variant keeps its own ``local_peak``, so its
    fraction of peak stays self-consistent, while ratios across runs are marked by ``merged_from``.
    """
    import json

    from benchmarks.report import summarize

    reports = [json.loads(open(p).read()) for p in paths]
    merged = dict(reports[0], merged_from=list(paths))
    cases: dict[str, dict] = {}
    comparisons: dict[str, dict] = {}
    for report in reports:
        for case, variants in report.get("cases", {}).items():
            cases.setdefault(case, {}).update(variants)
        for case, rows in report.get("comparisons", {}).items():
            comparisons.setdefault(case, {}).update(rows if isinstance(rows, dict) else {})
        merged.update({k: report[k] for k in ("startup",) if k in report})
    merged.update(cases=cases, comparisons=comparisons, summary=summarize(cases, comparisons))
    merged["efficiency"] = summarize_efficiency(merged)
    return merged


if __name__ == "__main__":
    import argparse
    import json
    from pathlib import Path

    from benchmarks.report import markdown

    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.efficiency", description=merge_reports.__doc__
    )
    parser.add_argument("reports", nargs="+")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args()
    report = merge_reports(args.reports)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    if args.markdown is not None:
        args.markdown.write_text(markdown(report))
    print(format_efficiency(report))
