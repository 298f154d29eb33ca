"""Typed pipeline configuration: presets live here in Python; YAML files only select and override them.

A YAML file (see ``configs/``) looks like::

    detector: grounding-dino-tiny   # a key of DETECTOR_PRESETS, or a mapping {preset: ..., model: ...}
    sam: vit_b                      # a key of SAM_PRESETS, or a mapping {preset: ..., checkpoint: ...}
    box_threshold: 0.35             # any other PipelineConfig field

Unknown keys are refused with their names, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "DetectorSpec",
    "SamSpec",
    "PipelineConfig",
    "DETECTOR_PRESETS",
    "SAM_PRESETS",
    "PIPELINE_PRESETS",
    "load_config",
    "config_to_dict",
    "with_detector",
]

TINY_RANDOM = "tiny-random"
TINY_RANDOM_SAM3 = "tiny-random-sam3"
NO_SAM = "none"


@dataclass(frozen=True)
class DetectorSpec:
    """Which open-vocabulary detector to load (``grounded.detectors.registry`` picks the loader).

    ``model`` is a Hugging Face Hub id or a local folder with ``config.json`` + weights (its
    ``model_type``: ``grounding-dino``, ``mm-grounding-dino`` (e.g. LLMDet) or ``sam3``), an
    IDEA-Research ``.pth`` (a local file, or ``owner/repo/file.pth`` on the Hub), or ``"tiny-random"``
    / ``"tiny-random-sam3"`` for the untrained in-process models used by tests and offline smoke runs.
    """

    model: str = "IDEA-Research/grounding-dino-tiny"
    # Dynamically quantised int8 linears (CPU, float32 activations): faster, moves boxes a little
    # (README "Precision"). Opt-in.
    int8: bool = False
    # IDEA .pth only: the BERT tokenizer (folder or Hub id; default google-bert/bert-base-uncased, as
    # IDEA's code uses) and IDEA's Python config file (read without executing it; optional: the
    # architecture is read from the checkpoint's shapes, the file adds heads/points and is checked).
    tokenizer: str | None = None
    config_file: str | None = None

    @property
    def untrained(self) -> bool:
        return self.model in (TINY_RANDOM, TINY_RANDOM_SAM3)


@dataclass(frozen=True)
class SamSpec:
    """Which SAM to build and where its weights come from.

    ``model_type`` is a ``sam_core.SAM_CONFIGS`` key (``vit_b``/``vit_l``/``vit_h``, ``vit_t``
    (MobileSAM), ``hq_vit_b``/``hq_vit_l``/``hq_vit_h``/``hq_vit_tiny`` (SAM-HQ),
    ``sam2.1_hiera_{tiny,small,base_plus,large}`` and ``sam2_hiera_*`` (SAM 2), ``tiny``).
    ``checkpoint`` is a released weights file (Meta's/SysCV's ``.pth``, ``mobile_sam.pt``), a Hugging
    Face SAM folder, a Hub id, or ``hf://OWNER/REPO/FILE``; ``None`` means random initialisation,
    which only the untrained ``tiny`` architecture is allowed to use. ``model_type`` ``"none"``
    (``sam: none``) loads no SAM at all: the detector's own masks are used (SAM 3 only).
    """

    model_type: str = "vit_b"
    checkpoint: str | None = "facebook/sam-vit-base"
    # Dynamically quantised int8 linears in the image encoder (CPU, float32): faster; embedding cosine
    # ~0.999 vs float32 (README "Precision"). Opt-in.
    int8: bool = False

    @property
    def untrained(self) -> bool:
        return self.checkpoint is None and self.enabled

    @property
    def enabled(self) -> bool:
        """False for ``sam: none``: no SAM model is built."""
        return self.model_type != NO_SAM


@dataclass(frozen=True)
class PipelineConfig:
    """Everything a ``GroundedSAM`` needs; frozen so a cache key can include it safely."""

    name: str = "default"
    detector: DetectorSpec = field(default_factory=DetectorSpec)
    sam: SamSpec = field(default_factory=SamSpec)
    # GroundingDINO's own defaults: a query is kept when its best token beats box_threshold and its
    # class phrase beats text_threshold.
    box_threshold: float = 0.35
    text_threshold: float = 0.25
    # Class-aware NMS by default: GroundingDINO emits near-duplicate boxes for one object.
    nms_iou: float | None = 0.5
    class_agnostic_nms: bool = False
    # Caps memory and decoder time for prompts like "thing." on a busy image.
    max_detections: int = 100
    # SAM returns 3 candidate masks per box when True; we keep the one with the best predicted IoU.
    multimask: bool = False
    # "auto" picks cuda > mps > cpu. dtype "auto" is bf16 (fp16 without bf16) on CUDA and on CPUs
    # with native bf16 (AVX512-BF16/AMX), float32 elsewhere, per model as grounded.models.AUTO_BF16
    # says; "float32" is exact everywhere. describe() tells what each model ran in.
    device: str = "auto"
    dtype: str = "auto"
    # Byte budget of the per-image caches (SAM embeddings, detector outputs, decoded masks).
    cache_bytes: int = 512 * 1024 * 1024
    # Refuse images with more pixels than this before decoding them (decompression bombs).
    max_pixels: int = 40_000_000
    # Seed for the untrained tiny models (ignored by pretrained presets).
    seed: int = 0
    # Linux/glibc: keep freed activation memory for reuse instead of page-faulting it in again on
    # every call (``sam_core.allocator``; ~1.4x faster detector on a small VM). Process-wide.
    tune_allocator: bool = True

    def __post_init__(self) -> None:
        for name in ("box_threshold", "text_threshold"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if self.nms_iou is not None and not 0.0 <= self.nms_iou <= 1.0:
            raise ValueError(f"nms_iou must be in [0, 1] or null, got {self.nms_iou}")
        if self.max_detections < 1:
            raise ValueError(f"max_detections must be at least 1, got {self.max_detections}")
        if self.max_pixels < 1 or self.cache_bytes < 0:
            raise ValueError("max_pixels must be at least 1 and cache_bytes at least 0")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be auto, float32, bfloat16 or float16, got {self.dtype!r}")

    @property
    def untrained(self) -> bool:
        """True when any model is randomly initialised: its outputs are meaningless (tests only)."""
        return self.detector.untrained or self.sam.untrained


DETECTOR_PRESETS: dict[str, DetectorSpec] = {
    "grounding-dino-tiny": DetectorSpec("IDEA-Research/grounding-dino-tiny"),
    "grounding-dino-base": DetectorSpec("IDEA-Research/grounding-dino-base"),
    "mm-grounding-dino-tiny": DetectorSpec("openmmlab-community/mm_grounding_dino_tiny_o365v1_goldg_v3det"),
    "mm-grounding-dino-large": DetectorSpec("openmmlab-community/mm_grounding_dino_large_o365v2_oiv6_goldg"),
    "llmdet-tiny": DetectorSpec("iSEE-Laboratory/llmdet_tiny"),
    # IDEA's original releases (the same weights as grounding-dino-tiny/-base, in IDEA's .pth layout).
    "groundingdino-swint-ogc": DetectorSpec("ShilongLiu/GroundingDINO/groundingdino_swint_ogc.pth"),
    "groundingdino-swinb-cogcoor": DetectorSpec("ShilongLiu/GroundingDINO/groundingdino_swinb_cogcoor.pth"),
    # SAM 3 (gated: accept Meta's licence on https://huggingface.co/facebook/sam3, then `hf auth login`).
    "sam3": DetectorSpec("facebook/sam3"),
    TINY_RANDOM: DetectorSpec(TINY_RANDOM),
    TINY_RANDOM_SAM3: DetectorSpec(TINY_RANDOM_SAM3),
}

SAM_PRESETS: dict[str, SamSpec] = {
    "vit_b": SamSpec("vit_b", "facebook/sam-vit-base"),
    "vit_l": SamSpec("vit_l", "facebook/sam-vit-large"),
    "vit_h": SamSpec("vit_h", "facebook/sam-vit-huge"),
    # MobileSAM (TinyViT-5M encoder): the released mobile_sam.pt, mirrored on the Hub.
    "vit_t": SamSpec("vit_t", "hf://dhkim2810/MobileSAM/mobile_sam.pt"),
    # SAM-HQ: transformers' SamHQModel folders for ViT-B/L/H; SysCV's .pth for the TinyViT one.
    "hq_vit_b": SamSpec("hq_vit_b", "syscv-community/sam-hq-vit-base"),
    "hq_vit_l": SamSpec("hq_vit_l", "syscv-community/sam-hq-vit-large"),
    "hq_vit_h": SamSpec("hq_vit_h", "syscv-community/sam-hq-vit-huge"),
    "hq_vit_tiny": SamSpec("hq_vit_tiny", "hf://lkeab/hq-sam/sam_hq_vit_tiny.pth"),
    # SAM 2.1 (Hiera) image models: transformers' Sam2Model folders of Meta's Hub repositories.
    **{f"sam2.1_hiera_{size}": SamSpec(f"sam2.1_hiera_{size}", f"facebook/sam2.1-hiera-{repo}")
       for size, repo in (("tiny", "tiny"), ("small", "small"), ("base_plus", "base-plus"),
                          ("large", "large"))},
    TINY_RANDOM: SamSpec("tiny", None),
    # No SAM: the detector's own masks (SAM 3).
    NO_SAM: SamSpec(NO_SAM, None),
}

PIPELINE_PRESETS: dict[str, PipelineConfig] = {
    # CPU-friendly: the smallest real detector and SAM.
    "default": PipelineConfig(name="default"),
    # Best masks and boxes; wants a GPU.
    "quality": PipelineConfig(
        name="quality",
        detector=DETECTOR_PRESETS["grounding-dino-base"],
        sam=SAM_PRESETS["vit_h"],
    ),
    # Fastest: the smallest detector + MobileSAM (a ~10x cheaper image encoder than ViT-B).
    "fast": PipelineConfig(name="fast", sam=SAM_PRESETS["vit_t"]),
    # Finer masks (hair, thin structures): Grounding DINO-T + SAM-HQ ViT-B.
    "hq": PipelineConfig(name="hq", sam=SAM_PRESETS["hq_vit_b"]),
    # SAM 2.1: Grounding DINO-T + SAM 2.1 Hiera-T (Grounded-SAM-2's pairing at its smallest).
    "sam2": PipelineConfig(name="sam2", sam=SAM_PRESETS["sam2.1_hiera_tiny"]),
    # MM-Grounding-DINO-T (zero-shot COCO 50.6 AP vs 48.4 for Grounding DINO-T) with SAM ViT-B.
    "mm-tiny": PipelineConfig(name="mm-tiny", detector=DETECTOR_PRESETS["mm-grounding-dino-tiny"]),
    # LLMDet-T (MM-Grounding-DINO architecture, trained with an LLM's supervision) with SAM ViT-B.
    "llmdet-tiny": PipelineConfig(name="llmdet-tiny", detector=DETECTOR_PRESETS["llmdet-tiny"]),
    # SAM 3 alone: text -> instance masks, boxes and scores from one model (no SAM loaded). Its query
    # score is both the box and the class score, so text_threshold 0 leaves box_threshold in charge.
    # Gated weights, wants a GPU (README "SAM 3").
    "sam3": PipelineConfig(
        name="sam3", detector=DETECTOR_PRESETS["sam3"], sam=SAM_PRESETS[NO_SAM],
        box_threshold=0.5, text_threshold=0.0,
    ),
    # Untrained tiny architectures built in-process from a fixed seed: tests and offline smoke runs.
    TINY_RANDOM_SAM3: PipelineConfig(
        name=TINY_RANDOM_SAM3,
        detector=DETECTOR_PRESETS[TINY_RANDOM_SAM3],
        sam=SAM_PRESETS[NO_SAM],
        box_threshold=0.25,
        text_threshold=0.0,
        cache_bytes=64 * 1024 * 1024,
        dtype="float32",
    ),
    TINY_RANDOM: PipelineConfig(
        name=TINY_RANDOM,
        detector=DETECTOR_PRESETS[TINY_RANDOM],
        sam=SAM_PRESETS[TINY_RANDOM],
        cache_bytes=64 * 1024 * 1024,
        dtype="float32",  # tests compare against float32 references on any machine
    ),
    # The same tiny architectures from another seed: a second untrained model for the page's model
    # picker (its tests switch between two models offline).
    "tiny-random-b": PipelineConfig(
        name="tiny-random-b",
        detector=DETECTOR_PRESETS[TINY_RANDOM],
        sam=SAM_PRESETS[TINY_RANDOM],
        cache_bytes=64 * 1024 * 1024,
        dtype="float32",
        seed=1,
    ),
}

# configs/ at the repository root in a source checkout; grounded/configs/ inside an installed wheel.
_HERE = Path(__file__).resolve().parent
_CONFIG_DIRS = (_HERE / "configs", _HERE.parent / "configs")


def _named_config(name: str) -> Path | None:
    """``configs/NAME.yaml`` from the wheel or the checkout, if there is one."""
    for folder in _CONFIG_DIRS:
        if (folder / f"{name}.yaml").is_file():
            return folder / f"{name}.yaml"
    return None


def _spec(kind: str, value: Any, presets: dict[str, Any], cls: type) -> Any:
    """A preset name, or a mapping ``{preset: NAME, <field>: value, ...}``, becomes a spec dataclass."""
    if isinstance(value, str):
        if value not in presets:
            raise ValueError(f"unknown {kind} preset {value!r}; choose one of {sorted(presets)}")
        return presets[value]
    if isinstance(value, dict):
        value = dict(value)
        base = presets[value.pop("preset")] if "preset" in value else cls()
        _check_keys(kind, value, cls)
        return dataclasses.replace(base, **value)
    raise ValueError(f"{kind} must be a preset name or a mapping, got {type(value).__name__}")


def _check_keys(kind: str, values: dict[str, Any], cls: type) -> None:
    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ValueError(f"unknown {kind} key(s) {unknown}; allowed: {sorted(allowed)}")


def _from_mapping(values: dict[str, Any], *, name: str) -> PipelineConfig:
    values = dict(values)
    base = PIPELINE_PRESETS[values.pop("preset")] if "preset" in values else PipelineConfig(name=name)
    if "detector" in values:
        values["detector"] = _spec("detector", values["detector"], DETECTOR_PRESETS, DetectorSpec)
    if "sam" in values:
        values["sam"] = _spec("sam", values["sam"], SAM_PRESETS, SamSpec)
    values.setdefault("name", name)
    _check_keys("config", values, PipelineConfig)
    return dataclasses.replace(base, **values)


def load_config(name_or_path: str | os.PathLike[str] | PipelineConfig = "default") -> PipelineConfig:
    """A preset name (``default``, ``quality``, ``tiny-random``), a YAML path, or a config as is."""
    if isinstance(name_or_path, PipelineConfig):
        return name_or_path
    text = str(name_or_path)
    if text in PIPELINE_PRESETS:
        return PIPELINE_PRESETS[text]
    path = Path(text)
    if not path.is_file() and _named_config(text) is not None:
        path = _named_config(text)
    if not path.is_file():
        raise ValueError(f"config {text!r} is neither a preset ({sorted(PIPELINE_PRESETS)}) nor a YAML file")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"config {path} is not valid YAML: {exc}") from None
    if not isinstance(values, dict):
        raise ValueError(f"config {path} must hold a mapping of settings, got {type(values).__name__}")
    return _from_mapping(values, name=path.stem)


def with_detector(config: PipelineConfig, detector: str) -> PipelineConfig:
    """``config`` with its detector replaced: a ``DETECTOR_PRESETS`` key, or a model as ``DetectorSpec.model``
    takes it (Hub id, folder, IDEA ``.pth``). The CLI's ``--detector``."""
    if not detector.strip():
        raise ValueError(f"detector must be a preset ({sorted(DETECTOR_PRESETS)}) or a model path/Hub id")
    spec = DETECTOR_PRESETS.get(detector) or DetectorSpec(model=detector, int8=config.detector.int8)
    return dataclasses.replace(config, detector=spec)


def config_to_dict(config: PipelineConfig) -> dict[str, Any]:
    """Plain-JSON view of a config (for logs, the UI and exported metadata)."""
    return dataclasses.asdict(config)
