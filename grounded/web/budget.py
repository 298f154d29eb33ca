"""Admission control: a request's projected peak memory, checked before any model runs.

What one request costs on top of the loaded models (measured by tests/reliability/test_rel_sizing.py,
which holds the code to this formula): a constant working set, bytes per pixel of the image (the
decoded RGB array, the overlay and its preview, one full-resolution mask at a time while encoding),
and bytes per detection (low-res logits, run-length masks, JSON). Masks are never ``N x H x W``: the
pipeline and the sessions keep them as ``sv.CompactMask``.
"""

from __future__ import annotations

__all__ = ["BASE_BYTES", "BYTES_PER_DETECTION", "BYTES_PER_PIXEL", "check_request", "projected_request_bytes"]

MiB = 2**20
BASE_BYTES = 160 * MiB  # includes the 64 MiB chunk in which masks are upsampled
BYTES_PER_PIXEL = 10
BYTES_PER_DETECTION = 3 * MiB


def projected_request_bytes(pixels: int, detections: int) -> int:
    """Upper bound of the memory one request adds while it runs (models excluded)."""
    return BASE_BYTES + BYTES_PER_PIXEL * int(pixels) + BYTES_PER_DETECTION * int(detections)


def check_request(height: int, width: int, max_detections: int, budget_bytes: int) -> None:
    """ValueError naming the numbers and the knobs when the projection exceeds ``budget_bytes``."""
    need = projected_request_bytes(height * width, max_detections)
    if need > budget_bytes:
        raise ValueError(
            f"this request could need {need / 2**30:.2f} GB ({width}×{height} = "
            f"{height * width / 1e6:.1f} MP "
            f"with up to {max_detections} detections); the server allows {budget_bytes / 2**30:.2f} GB per "
            "request: lower max_detections or send a smaller image (operators: --request-memory-mb)"
        )
