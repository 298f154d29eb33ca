"""``detector`` config value -> builder: a registry entry per detector kind, no branch in the pipeline.

The kind is read from what the value names (as transformers' Auto classes read ``config.json``):

- ``tiny-random`` / ``tiny-random-sam3`` -> the untrained in-process test models;
- an IDEA ``.pth`` (a local file or ``owner/repo/file.pth`` on the Hub) -> ``idea-grounding-dino``;
- a folder or Hub id -> its ``config.json`` ``model_type`` (``grounding-dino``, ``mm-grounding-dino``,
  ``sam3``).

A new detector registers a builder under a new kind (``register_detector``) and, if its files are
recognised differently, extends :func:`detector_kind`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from grounded.config import TINY_RANDOM_SAM3, DetectorSpec
from grounded.detectors.base import OpenVocabularyDetector
from grounded.detectors.loading import ModelUnavailableError, checkpoint_model_type, resolve_model_folder

__all__ = ["DETECTOR_BUILDERS", "BuildOptions", "build_detector", "detector_kind", "register_detector"]


@dataclass(frozen=True)
class BuildOptions:
    """Where and how to build: the resolved device and dtype, and the seed of untrained models."""

    device: torch.device
    dtype: torch.dtype
    seed: int = 0


DetectorBuilder = Callable[[DetectorSpec, BuildOptions], OpenVocabularyDetector]


def _tiny(spec: DetectorSpec, options: BuildOptions) -> OpenVocabularyDetector:
    from grounded.detectors.tiny import build_tiny_detector

    return build_tiny_detector(
        options.seed, device=options.device, dtype=options.dtype, quantize_int8=spec.int8
    )


def _tiny_sam3(spec: DetectorSpec, options: BuildOptions) -> OpenVocabularyDetector:
    from grounded.detectors.tiny_sam3 import build_tiny_sam3

    _no_int8(spec)
    return build_tiny_sam3(options.seed, device=options.device, dtype=options.dtype)


def _sam3(spec: DetectorSpec, options: BuildOptions) -> OpenVocabularyDetector:
    from grounded.detectors.sam3 import Sam3Detector

    _no_int8(spec)
    return Sam3Detector.from_pretrained(spec.model, device=options.device, dtype=options.dtype)


def _no_int8(spec: DetectorSpec) -> None:
    if spec.int8:
        raise ValueError(f"detector {spec.model!r}: int8 applies to the Grounding DINO family, not SAM 3")


def _grounding_dino(spec: DetectorSpec, options: BuildOptions) -> OpenVocabularyDetector:
    from grounded.detectors.grounding_dino import GroundingDinoDetector

    return GroundingDinoDetector.from_pretrained(
        spec.model, device=options.device, dtype=options.dtype, quantize_int8=spec.int8
    )


def _mm_grounding_dino(spec: DetectorSpec, options: BuildOptions) -> OpenVocabularyDetector:
    from grounded.detectors.mm_grounding_dino import MMGroundingDinoDetector

    return MMGroundingDinoDetector.from_pretrained(
        spec.model, device=options.device, dtype=options.dtype, quantize_int8=spec.int8
    )


def _idea(spec: DetectorSpec, options: BuildOptions) -> OpenVocabularyDetector:
    from grounded.detectors.idea_loading import load_idea_detector

    return load_idea_detector(
        spec.model,
        tokenizer=spec.tokenizer,
        config_file=spec.config_file,
        device=options.device,
        dtype=options.dtype,
        quantize_int8=spec.int8,
    )


DETECTOR_BUILDERS: dict[str, DetectorBuilder] = {
    "tiny-random": _tiny,
    TINY_RANDOM_SAM3: _tiny_sam3,
    "sam3": _sam3,
    "grounding-dino": _grounding_dino,
    "mm-grounding-dino": _mm_grounding_dino,
    "idea-grounding-dino": _idea,
}


def register_detector(kind: str, builder: DetectorBuilder) -> None:
    """Add (or replace) the builder for ``kind``."""
    DETECTOR_BUILDERS[kind] = builder


def detector_kind(spec: DetectorSpec) -> str:
    """The registry key for ``spec`` (see the module docstring); resolves Hub ids through the cache."""
    from grounded.detectors.idea_loading import is_idea_checkpoint

    if spec.untrained:
        return spec.model
    if is_idea_checkpoint(spec.model):
        return "idea-grounding-dino"
    if spec.tokenizer is not None or spec.config_file is not None:
        raise ValueError(
            f"detector {spec.model!r}: tokenizer and config_file apply to IDEA .pth checkpoints only; "
            "a transformers folder or Hub id carries its own"
        )
    return checkpoint_model_type(resolve_model_folder(spec.model))


def build_detector(spec: DetectorSpec, options: BuildOptions) -> OpenVocabularyDetector:
    """The detector ``spec`` names, built by its registry entry."""
    kind = detector_kind(spec)
    if kind not in DETECTOR_BUILDERS:
        raise ModelUnavailableError(
            f"detector {spec.model!r} is a {kind!r} checkpoint; supported kinds: {sorted(DETECTOR_BUILDERS)}"
        )
    return DETECTOR_BUILDERS[kind](spec, options)
