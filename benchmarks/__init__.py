"""Benchmarks: SAM encoder/decoder, Grounding DINO and the end-to-end pipeline against transformers.

Run ``python -m benchmarks.run [--quick] [--out benchmarks/results/latest.json]`` (``make bench``).
Every (case, variant) runs in its own subprocess on random weights saved once with
``save_pretrained``, so all variants see identical weights and each one's peak resident memory is its
own process's ``ru_maxrss``. Timings are medians of several runs after warm-up.
"""

from benchmarks.measure import Timing, machine_info, measure

__all__ = ["Timing", "machine_info", "measure"]
