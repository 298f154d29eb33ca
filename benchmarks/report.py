"""Turn raw per-variant results into ratios, target checks, a console table and a README section."""

from __future__ import annotations

from typing import Any

from benchmarks.efficiency import efficiency_markdown

__all__ = ["summarize", "table_rows", "format_table", "markdown"]

# The targets on the reference CPU.
SAM_ENCODER_SPEEDUP = 5.0
SAM_COSINE = 0.995
DINO_SPEEDUP = 3.0
DINO_PARITY = 1e-4
DINO_TOP_K_IOU = 0.99
DECODER_MS_PER_BOX = 25.0
RETHRESHOLD_S = 0.1
SAM2_ENCODER_SPEEDUP = 1.5
SAM2_PARITY = 1e-4


def _median(result: dict | None, *path: str) -> float | None:
    node: Any = result
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node if isinstance(node, (int, float)) else None


def _speedups(variants: dict[str, dict], reference: str) -> dict[str, float]:
    """reference median / variant median, for every variant that ran."""
    ref = _median(variants.get(reference), "timing", "median_s")
    if not ref:
        return {}
    return {name: ref / t for name, r in variants.items() if (t := _median(r, "timing", "median_s"))}


def summarize(cases: dict[str, dict[str, dict]], comparisons: dict[str, dict]) -> dict[str, Any]:
    """Speed-ups vs the reference and each target's verdict (``met`` True/False, or None if not run)."""
    summary: dict[str, Any] = {}
    enc = cases.get("sam_encoder", {})
    speedups = _speedups(enc, "hf-eager")
    cosines = {
        name: c.get("cosine_vs_ours_fp32")
        for name, c in comparisons.get("sam_encoder", {}).items()
        if isinstance(c, dict)
    }
    accurate = [n for n in speedups if n.startswith("ours") and (cosines.get(n) or 0) >= SAM_COSINE]
    best = max(accurate, key=lambda n: speedups[n], default=None)
    summary["sam_encoder"] = {
        "speedup_vs_hf_eager": speedups,
        "speedup_vs_hf_sdpa": _speedups(enc, "hf-sdpa"),
        "speedup_vs_hf_eager_same_allocator": _speedups(enc, "hf-eager+malloc"),
        "cosine_vs_ours_fp32": cosines,
        "fastest_accurate_variant": best,
        "target": f">= {SAM_ENCODER_SPEEDUP}x vs hf-eager with cosine >= {SAM_COSINE}",
        "met": None if best is None else speedups[best] >= SAM_ENCODER_SPEEDUP,
    }

    dec = cases.get("sam_decoder", {}).get("ours-fp32")
    per_box = _median(dec, "boxes_32", "per_box_ms")
    summary["sam_decoder"] = {
        "ours_ms_per_box": {k: v.get("per_box_ms") for k, v in (dec or {}).items() if isinstance(v, dict)},
        "target": f"one call for all boxes, <= {DECODER_MS_PER_BOX} ms per box at 32 boxes",
        "met": None if per_box is None else per_box <= DECODER_MS_PER_BOX,
    }

    sam2 = cases.get("sam2_encoder", {})
    sam2_speed = _speedups(sam2, "hf-sdpa").get("ours-fp32")
    bf16_speed = _speedups(sam2, "hf-sdpa-bf16").get("ours-bf16")
    sam2_parity = comparisons.get("sam2_encoder", {}).get("ours-fp32", {})
    summary["sam2_encoder"] = {
        "speedup_vs_hf_sdpa": _speedups(sam2, "hf-sdpa"),
        "speedup_bf16_vs_hf_sdpa_bf16": bf16_speed,
        "speedup_vs_hf_sdpa_same_allocator": _speedups(sam2, "hf-sdpa+malloc"),
        "speedup_vs_ours_sam1_vit_b": _speedups(sam2, "ours-sam1-vit_b"),
        "fp32_parity": sam2_parity,
        "target": (
            f"sam2.1_hiera_tiny encoder >= {SAM2_ENCODER_SPEEDUP}x vs transformers Sam2Model in the same "
            "dtype (met: fp32; bf16_met: bf16)"
        ),
        "met": None if sam2_speed is None else sam2_speed >= SAM2_ENCODER_SPEEDUP,
        "bf16_met": None if bf16_speed is None else bf16_speed >= SAM2_ENCODER_SPEEDUP,
        "parity_met": None if not sam2_parity else max(sam2_parity.values()) <= SAM2_PARITY,
    }

    dino = {k: v for k, v in cases.get("dino", {}).items() if not k.startswith("mm-")}
    mm_dino = {k: v for k, v in cases.get("dino", {}).items() if k.startswith("mm-")}
    speedups = _speedups(dino, "hf-eager")
    parity = comparisons.get("dino", {}).get("ours-fp32", {})
    parity_ok = (
        None
        if "logits_max_abs" not in parity
        else parity["logits_max_abs"] <= DINO_PARITY and parity["boxes_max_abs"] <= DINO_PARITY
    )
    # Only variants that keep the reference's top boxes count for the speed target (int8 does not).
    dino_cmp = comparisons.get("dino", {})
    accurate_dino = [
        n
        for n in speedups
        if n.startswith("ours")
        and isinstance(dino_cmp.get(n), dict)
        and (dino_cmp[n].get("top_k_mean_iou") or 0) >= DINO_TOP_K_IOU
    ]
    best_dino = max(accurate_dino, key=lambda n: speedups[n], default=None)
    summary["dino"] = {
        "speedup_vs_hf_eager": speedups,
        "speedup_vs_hf_default": _speedups(dino, "hf-default"),
        "speedup_vs_hf_eager_same_allocator": _speedups(dino, "hf-eager+malloc"),
        "mm_speedup_vs_mm_hf_eager": _speedups(mm_dino, "mm-hf-eager"),
        "mm_speedup_vs_mm_hf_default": _speedups(mm_dino, "mm-hf-default"),
        "mm_fp32_parity": comparisons.get("dino", {}).get("mm-ours-fp32", {}),
        "fp32_parity": parity,
        "fastest_accurate_variant": best_dino,
        "target": (
            f">= {DINO_SPEEDUP}x vs hf-eager (variants whose top boxes match the reference's at mean IoU"
            f" >= {DINO_TOP_K_IOU}); fp32 logits and boxes within {DINO_PARITY}"
        ),
        "speed_met": None if best_dino is None else speedups[best_dino] >= DINO_SPEEDUP,
        "parity_met": parity_ok,
    }

    e2e = cases.get("e2e", {}).get("ours-fp32")
    rethreshold = _median(e2e, "rethreshold", "timing", "median_s")
    encoder_calls = _median(e2e, "new_prompt", "model_calls", "sam_encoder_calls")
    summary["e2e"] = {
        "target": f"re-threshold <= {RETHRESHOLD_S} s; a new prompt on a cached image runs no SAM encoder",
        "rethreshold_met": None if rethreshold is None else rethreshold <= RETHRESHOLD_S,
        "new_prompt_skips_encoder": None if encoder_calls is None else encoder_calls == 0,
    }
    return summary


def table_rows(cases: dict[str, dict[str, dict]], comparisons: dict[str, dict]) -> list[list[str]]:
    """Rows: case, variant, median s, speed-up vs the case's reference, accuracy, peak RSS MiB."""
    rows: list[list[str]] = []
    for case, variants in cases.items():
        eager = _median(variants.get("hf-eager"), "timing", "median_s")
        fast_ref = "hf-default" if case == "dino" else "hf-sdpa"
        sdpa = _median(variants.get(fast_ref), "timing", "median_s")
        for name, r in variants.items():
            mem = f"{r.get('peak_rss_mb', 0):.0f}"
            if "skipped" in r:
                rows.append([case, name, "skipped", "", r["skipped"], mem])
            elif "error" in r:
                rows.append([case, name, "error", "", r["error"].splitlines()[0], mem])
            elif "accuracy_only" in r:
                acc = _accuracy(case, comparisons.get(case, {}).get(name, {}))
                rows.append([case, name, "n/a", "", f"{acc} (bf16 emulated, accuracy only)", mem])
            elif case == "sam_decoder":
                for key in ("boxes_1", "boxes_8", "boxes_32"):
                    t = _median(r, key, "timing", "median_s")
                    if t is None:
                        continue
                    n = key.split("_")[1]
                    acc = comparisons.get(case, {}).get(name, {}).get(f"max_abs_masks_{n}")
                    rows.append(
                        [
                            case,
                            f"{name} x{n}",
                            f"{t:.3f}",
                            f"{1000 * t / int(n):.1f} ms/box",
                            "" if acc is None else f"mask logits max Δ {acc:.1e}",
                            mem,
                        ]
                    )
            elif case == "e2e":
                for step in ("cold", "rethreshold", "new_prompt"):
                    t = _median(r, step, "timing", "median_s")
                    calls = r.get(step, {}).get("model_calls")
                    note = ""
                    if calls is not None:
                        counts = ", ".join(f"{k.removesuffix('_calls')} {v}" for k, v in calls.items())
                        note = f"model runs over {r.get('calls_per_step')} calls: {counts}"
                    dets = r.get(step, {}).get("detections")
                    note += f"; detections {dets}" if dets else ""
                    rows.append([case, f"{name} {step}", f"{t:.3f}" if t is not None else "", "", note, mem])
            else:
                t = _median(r, "timing", "median_s")
                pairs = ((eager, "eager"), (sdpa, fast_ref.removeprefix("hf-")))
                if name.startswith("mm-"):  # MM-Grounding-DINO: against transformers' MM model
                    pairs = tuple((_median(variants.get(f"mm-hf-{k}"), "timing", "median_s"), f"mm {k}")
                                  for k in ("eager", "default"))
                speed = " / ".join(f"{ref / t:.2f}x {label}" for ref, label in pairs if ref and t)
                rows.append(
                    [
                        case,
                        name,
                        f"{t:.3f}",
                        speed,
                        _accuracy(case, comparisons.get(case, {}).get(name, {})),
                        mem,
                    ]
                )
                same = _median(r, "same_image_timing", "median_s")
                if same is not None:
                    rows.append([case, f"{name} (cached image+text)", f"{same:.3f}", "", "", ""])
    return rows


def _accuracy(case: str, comp: dict[str, float]) -> str:
    if case == "sam_encoder" and comp:
        return f"cos vs fp32 {comp.get('cosine_vs_ours_fp32', float('nan')):.6f}"
    if case == "dino" and comp:
        parts = []
        if "logits_max_abs" in comp:
            parts.append(
                f"vs {comp['reference']}: logits max Δ {comp['logits_max_abs']:.1e} "
                f"(scale {comp['logit_scale']:.0f}), boxes max Δ {comp['boxes_max_abs']:.1e}"
            )
        parts.append(
            f"top{int(comp['top_k'])} IoU {comp['top_k_mean_iou']:.4f} score max Δ "
            f"{comp['top_k_max_score_diff']:.1e}"
        )
        return "; ".join(parts)
    return ""


_HEADER = ["case", "variant", "median s", "speed-up / per box", "accuracy", "peak RSS MiB"]


def format_table(rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [_HEADER, *rows]) for i in range(len(_HEADER))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in [_HEADER, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown(report: dict[str, Any]) -> str:
    """The README section: machine, command, table, target verdicts."""
    m = report["machine"]
    out = [
        "## Benchmarks",
        "",
        f"`python -m benchmarks.run` (`make bench`), {report['settings']['mode']} run: "
        f"warm-up {report['settings']['warmup']}, median of {report['settings']['repeats']}; "
        "random weights saved once and loaded by every variant; each variant in its own process "
        "(peak RSS = that process's `ru_maxrss`, including ~"
        f"{report['settings'].get('rss_baseline_mb', 0):.0f} MiB of imported libraries).",
        "",
        f"Machine: {m['cpu']} ({m['cpu_capability']}, native bf16: {m['native_bf16']}), "
        f"{m['cpu_count']} cores, torch {m['torch']}, transformers {m['transformers']}; "
        f"load average at start {m['load_avg']}, at end {report.get('load_avg_end')}.",
        "",
        "| " + " | ".join(_HEADER) + " |",
        "|" + "|".join("---" for _ in _HEADER) + "|",
    ]
    out += [
        "| " + " | ".join(str(c) for c in row) + " |"
        for row in table_rows(report["cases"], report["comparisons"])
    ]
    out += efficiency_markdown(report)
    out += ["", "Targets:", ""]
    for case, s in report["summary"].items():
        verdicts = {k: v for k, v in s.items() if k.endswith("met") or k == "new_prompt_skips_encoder"}
        out.append(f"- {case}: {s['target']} -> " + ", ".join(f"{k}={v}" for k, v in verdicts.items()))
    return "\n".join(out) + "\n"
