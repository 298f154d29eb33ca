"""GroundedSAM: text prompt -> detector boxes -> SAM masks (or the detector's own), as ``sv.Detections``.

Expensive work is cached per image content and model, bounded by bytes:
- the detector's raw queries per (image, detector, classes, exemplars): new thresholds re-run no model;
- a mask-predicting detector's (SAM 3's) vision features per (image, detector): a new prompt on the
  same image skips its vision encoder;
- the SAM image embedding per (image, SAM): a new prompt on the same image skips the SAM encoder;
- SAM's low-resolution mask logits per (image, SAM, box): boxes seen before are not decoded again.
Each model is guarded by its own lock, so concurrent callers never run one model at the same time.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import supervision as sv
import torch

from grounded.cache import ByteLRUCache
from grounded.config import PipelineConfig, load_config
from grounded.detectors.base import ExemplarBoxes, OpenVocabularyDetector, RawDetections
from grounded.detectors.prompt import parse_prompt
from grounded.detectors.scoring import select_detections
from grounded.io.images import image_content_hash, load_image
from grounded.masks import CompactMask, compact_masks, compact_nbytes
from grounded.models import build_detector, build_sam_model, model_dtypes
from grounded.sam_prompts import SamPrompts
from sam_core import ImageEmbedding, Sam, SamPredictor
from sam_core.allocator import tune_cpu_allocator

__all__ = ["GroundedSAM", "PipelineStats"]



@dataclass
class PipelineStats:
    """How often each model ran; tests use these to prove what the caches saved."""

    detector_calls: int = 0
    detector_encoder_calls: int = 0  # vision encoder runs of detectors that cache features (SAM 3)
    sam_encoder_calls: int = 0
    sam_decoder_calls: int = 0


@dataclass(frozen=True)
class _Decoded:
    low_res: torch.Tensor  # 1 x h x w logits (h = w = image_size // 4): float32, or bfloat16 when exact
    score: float  # SAM's predicted IoU for this mask

    def nbytes(self) -> int:
        return self.low_res.numel() * self.low_res.element_size() + 8


@dataclass(frozen=True)
class _FullMask:
    """A cached full-resolution mask (bit-packed crop) and SAM's score for it: re-thresholding the
    same image re-uses it instead of upsampling the low-res logits again."""

    mask: CompactMask  # one mask
    score: float

    def nbytes(self) -> int:
        return compact_nbytes(self.mask) + 8


class GroundedSAM(SamPrompts):
    """Text-prompted instance segmentation.

    Args:
        detector: any ``OpenVocabularyDetector`` (``grounded.detectors.registry``): raw boxes and per-class
            scores for the prompt's classes; thresholds, one class per box, NMS and caching are applied here.
        sam: a ``sam_core.Sam`` (masks from boxes), or ``None`` to use the detector's own masks
            (``sam: none``; only for detectors that predict masks, such as SAM 3).
        config: thresholds, caps and cache budget; ``PipelineConfig()`` when omitted.
    """

    def __init__(
        self, detector: OpenVocabularyDetector, sam: Sam | None, *, config: PipelineConfig | None = None
    ):
        self.config = config or PipelineConfig()
        if sam is None and not getattr(detector, "predicts_masks", False):
            raise ValueError(
                f"detector {detector.model_id!r} predicts no masks, so this pipeline needs a SAM model; "
                "set sam to a SAM preset (vit_b, ...) instead of none"
            )
        self.detector = detector
        self.sam = sam
        self._predictor = None if sam is None else SamPredictor(sam)
        self._cache = ByteLRUCache(self.config.cache_bytes)
        self._detector_lock = threading.Lock()
        self._sam_lock = threading.Lock()
        self.stats = PipelineStats()
        self._sam_id = f"sam:{self.config.sam.model_type}:{self.config.sam.checkpoint}:{id(sam)}"
        self._detector_id = f"det:{detector.cache_key}"

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(
        cls,
        name_or_path: str | os.PathLike[str] | PipelineConfig = "default",
        *,
        device: str | None = None,
        dtype: str | None = None,
        **overrides: Any,
    ) -> GroundedSAM:
        """Build from a preset name (``default``, ``quality``, ``tiny-random``) or a YAML path.

        ``device``/``dtype`` and any other ``PipelineConfig`` field given as a keyword override the
        file. Real presets fetch weights through the Hugging Face cache; without network or cache they
        fail fast with a message naming the missing files and the ``HF_HUB_OFFLINE``/local-path options.
        """
        config = load_config(name_or_path)
        if device is not None:
            overrides["device"] = device
        if dtype is not None:
            overrides["dtype"] = dtype
        if overrides:
            config = dataclasses.replace(config, **overrides)
        torch_device = _resolve_device(config.device)
        if config.tune_allocator and torch_device.type == "cpu":
            tune_cpu_allocator()
        dtypes = model_dtypes(config, torch_device)
        detector = build_detector(config, device=torch_device, dtype=dtypes["detector"])
        sam = build_sam_model(config, device=torch_device, dtype=dtypes["sam"])  # None for sam: none
        return cls(detector, sam, config=config)

    # ------------------------------------------------------------------ public API
    @property
    def is_untrained(self) -> bool:
        """True when a model is random (tiny-random): outputs are meaningless and must be labelled as such."""
        return self.config.untrained or bool(self.detector.untrained)

    def describe(self) -> dict[str, Any]:
        """The models this pipeline runs, resolved: ``{"preset", "untrained", "detector": {"model",
        "device", "dtype"}, "sam": {"model_type", "checkpoint", "device", "dtype"}}`` (plain JSON).
        ``dtype`` is what ``dtype: auto`` became on this machine (see ``grounded.models``). With
        ``sam: none`` the ``sam`` entry says ``model_type: none`` and the masks come from the detector."""
        if self.sam is None:
            sam = {"model_type": "none", "checkpoint": None, "device": None, "dtype": None}
        else:
            sam = {"model_type": self.config.sam.model_type, "checkpoint": self.config.sam.checkpoint,
                   "device": str(self.sam.device),
                   "dtype": "int8" if self.config.sam.int8 else str(self.sam.dtype).removeprefix("torch.")}
        return {
            "preset": self.config.name,
            "untrained": self.is_untrained,
            "detector": self.detector.describe(),
            "sam": sam,
        }

    @staticmethod
    def classes_of(prompt: str | Sequence[str]) -> list[str]:
        """The class list a prompt stands for; ``class_id`` indexes into it."""
        return parse_prompt(prompt)

    def predict(
        self,
        image: Any,
        prompt: str | Sequence[str],
        *,
        box_threshold: float | None = None,
        text_threshold: float | None = None,
        nms_iou: float | None = None,
        multimask: bool | None = None,
        max_detections: int | None = None,
        class_agnostic_nms: bool | None = None,
        positive_boxes: np.ndarray | Sequence[Sequence[float]] | None = None,
        negative_boxes: np.ndarray | Sequence[Sequence[float]] | None = None,
    ) -> sv.Detections:
        """Segment every instance of the prompt's classes in one image.

        Args:
            image: path, bytes, PIL image or HxWx3 uint8 RGB array (other modes are converted).
            prompt: ``"cat. dog"``, ``"cat, dog"`` or ``["cat", "dog"]``.
            box_threshold, text_threshold, nms_iou, multimask, max_detections, class_agnostic_nms:
                override the config for this call (``None`` keeps it; ``nms_iou=1.0`` disables NMS).
            positive_boxes, negative_boxes: exemplar boxes (K x 4 xyxy, absolute pixels of the
                original image) showing what to find and what not to; SAM 3's geometric prompts,
                applied to every class of the prompt. Detectors without exemplar support refuse them.

        Returns:
            ``sv.Detections`` with ``xyxy`` (N x 4 float32, absolute pixels of the original image,
            clipped), ``mask`` (N x H x W bool), ``confidence`` (detector score), ``class_id`` (index
            into ``classes_of(prompt)``), ``data["class_name"]`` and ``data["mask_score"]`` (SAM's
            predicted IoU; with ``sam: none`` the detector's score). No detections gives an empty
            ``Detections`` with the same fields.
        """
        detections = self.predict_compact(
            image, prompt, box_threshold=box_threshold, text_threshold=text_threshold, nms_iou=nms_iou,
            multimask=multimask, max_detections=max_detections, class_agnostic_nms=class_agnostic_nms,
            positive_boxes=positive_boxes, negative_boxes=negative_boxes,
        )
        detections.mask = detections.mask.to_dense()  # N x H x W bool
        return detections

    def predict_compact(
        self,
        image: Any,
        prompt: str | Sequence[str],
        *,
        box_threshold: float | None = None,
        text_threshold: float | None = None,
        nms_iou: float | None = None,
        multimask: bool | None = None,
        max_detections: int | None = None,
        class_agnostic_nms: bool | None = None,
        positive_boxes: np.ndarray | Sequence[Sequence[float]] | None = None,
        negative_boxes: np.ndarray | Sequence[Sequence[float]] | None = None,
    ) -> sv.Detections:
        """``predict`` with ``mask`` as supervision's ``CompactMask`` (crop run-lengths): what a server
        uses. Memory grows with the masks' run-length codes, not N x H x W; ``mask[i]`` expands one
        frame, supervision's annotators draw it crop by crop, the exports encode it mask by mask."""
        exemplars = ExemplarBoxes.from_lists(positive_boxes, negative_boxes)
        if exemplars is not None and not getattr(self.detector, "accepts_exemplars", False):
            raise ValueError(
                f"detector {self.detector.model_id!r} cannot use exemplar boxes (only SAM 3 can); "
                "drop positive_boxes/negative_boxes or choose detector: sam3"
            )
        rgb = load_image(image, max_pixels=self.config.max_pixels)
        classes = parse_prompt(prompt)
        if exemplars is not None:
            exemplars.check_image(rgb.shape[0], rgb.shape[1])
        image_key = image_content_hash(rgb)
        raw = self._raw_detections(rgb, image_key, classes, exemplars)
        cfg = self.config
        detections = select_detections(
            raw,
            classes,
            box_threshold=cfg.box_threshold if box_threshold is None else box_threshold,
            text_threshold=cfg.text_threshold if text_threshold is None else text_threshold,
            nms_iou=cfg.nms_iou if nms_iou is None else nms_iou,
            class_agnostic_nms=cfg.class_agnostic_nms if class_agnostic_nms is None else class_agnostic_nms,
            max_detections=cfg.max_detections if max_detections is None else max_detections,
        )
        query_index = detections.data.pop("query_index")  # N rows of ``raw``
        if self.sam is None:
            return self._add_detector_masks(raw, detections, query_index)
        use_multimask = cfg.multimask if multimask is None else multimask
        return self._add_masks(rgb, image_key, detections, multimask=use_multimask)

    def predict_batch(
        self, images: Iterable[Any], prompt: str | Sequence[str], **kwargs: Any
    ) -> list[sv.Detections]:
        """``predict`` for each image, with the same prompt and options (text parsed once)."""
        classes = parse_prompt(prompt)
        return [self.predict(image, classes, **kwargs) for image in images]

    def clear_cache(self) -> None:
        self._cache.clear()

    # ------------------------------------------------------------------ cached stages
    def _raw_detections(
        self, rgb: np.ndarray, image_key: str, classes: list[str], exemplars: ExemplarBoxes | None = None
    ) -> RawDetections:
        token = None if exemplars is None else exemplars.cache_token()
        key = ("detector", self._detector_id, image_key, tuple(classes), token)
        raw = self._cache.get(key)
        if raw is None:
            with self._detector_lock:
                raw = self._cache.get(key)
                if raw is None:
                    if hasattr(self.detector, "encode_image"):  # features cached per image (SAM 3)
                        features = self._detector_features(rgb, image_key)
                        raw = self.detector.detect_from_features(features, classes, exemplars)
                    elif exemplars is not None:
                        raw = self.detector.detect(rgb, classes, exemplars)
                    else:
                        raw = self.detector.detect(rgb, classes)
                    self.stats.detector_calls += 1
                    self._cache.put(key, raw, raw.nbytes())
        return raw

    def _detector_features(self, rgb: np.ndarray, image_key: str) -> Any:
        """The detector's vision features for this image (the caller holds the detector lock)."""
        key = ("detector-features", self._detector_id, image_key)
        features = self._cache.get(key)
        if features is None:
            features = self.detector.encode_image(rgb)
            self.stats.detector_encoder_calls += 1
            self._cache.put(key, features, features.nbytes())
        return features

    def _add_detector_masks(
        self, raw: RawDetections, detections: sv.Detections, query_index: np.ndarray
    ) -> sv.Detections:
        """``sam: none``: the detector's masks for the kept queries only (upsampled a few at a time,
        compacted); ``data["mask_score"]`` is the detector's score."""
        height, width = raw.image_size
        compact = [compact_masks(masks, (height, width)) for _, masks in raw.instance_masks(query_index)]
        detections.mask = CompactMask.merge(compact) if compact else compact_masks([], (height, width))
        detections.data["mask_score"] = detections.confidence.astype(np.float32).copy()
        return detections

    def _embedding(self, rgb: np.ndarray, image_key: str) -> ImageEmbedding:
        key = ("embedding", self._sam_id, image_key)
        embedding = self._cache.get(key)
        if embedding is None:
            with self._sam_lock:
                embedding = self._cache.get(key)
                if embedding is None:
                    self._predictor.set_image(rgb)
                    embedding = self._predictor.embedding
                    self.stats.sam_encoder_calls += 1
                    self._cache.put(key, embedding, embedding.nbytes())
        return embedding

    def _decode(self, rgb: np.ndarray, image_key: str, xyxy: np.ndarray, multimask: bool) -> list[_Decoded]:
        """Low-res logits for every box, decoding only boxes not seen before, all in ONE call."""
        keys = [("mask", self._sam_id, image_key, multimask, box.tobytes()) for box in xyxy]
        decoded: list[_Decoded | None] = [self._cache.get(key) for key in keys]
        missing = [i for i, item in enumerate(decoded) if item is None]
        if missing:
            embedding = self._embedding(rgb, image_key)
            with self._sam_lock:
                self._predictor.set_embedding(embedding)
                device = self._predictor.device
                boxes = self._predictor.transform.apply_boxes_torch(
                    torch.as_tensor(xyxy[missing], device=device), embedding.original_size
                )  # M x 4 in the model's input frame
                scores, low_res = self._predictor.predict_low_res_torch(
                    None, None, boxes=boxes, multimask_output=multimask
                )  # scores: M x C, low_res: M x C x h x w (C = 3 with multimask, else 1)
                self.stats.sam_decoder_calls += 1
            best = scores.argmax(dim=1)  # M
            rows = torch.arange(len(missing), device=scores.device)
            best_low_res = low_res[rows, best].float().cpu()  # M x h x w
            # A bf16 SAM's logits are bf16 values: kept as such they cost half (100 boxes: 13 MB
            # less per image), exactly the same numbers once widened again.
            narrow = best_low_res.to(torch.bfloat16)
            if torch.equal(narrow.float(), best_low_res):
                best_low_res = narrow
            best_scores = scores[rows, best].float().cpu()  # M
            for j, i in enumerate(missing):
                item = _Decoded(best_low_res[j : j + 1].clone(), float(best_scores[j]))
                self._cache.put(keys[i], item, item.nbytes())
                decoded[i] = item
        return [item for item in decoded if item is not None]

    def _add_masks(
        self, rgb: np.ndarray, image_key: str, detections: sv.Detections, *, multimask: bool
    ) -> sv.Detections:
        """Sets ``mask`` (an ``sv.CompactMask``) and ``data["mask_score"]``."""
        masks, scores = self._masks_for_boxes(rgb, image_key, detections.xyxy, multimask=multimask)
        detections.mask = masks
        detections.data["mask_score"] = scores
        return detections

    def _masks_for_boxes(
        self, rgb: np.ndarray, image_key: str, xyxy: np.ndarray, *, multimask: bool
    ) -> tuple[CompactMask, np.ndarray]:
        """N full-resolution masks (``sv.CompactMask``) and N scores; a box seen before on this image
        costs a cache lookup. No N x H x W array is ever built: masks are upsampled a few at a time
        and compacted."""
        height, width = rgb.shape[:2]
        if len(xyxy) == 0:
            return compact_masks([], (height, width)), np.zeros(0, dtype=np.float32)
        xyxy = np.ascontiguousarray(xyxy, dtype=np.float32)  # N x 4
        keys = [("fullmask", self._sam_id, image_key, multimask, box.tobytes()) for box in xyxy]
        full: list[_FullMask | None] = [self._cache.get(key) for key in keys]
        missing = [i for i, item in enumerate(full) if item is None]
        if missing:
            decoded = self._decode(rgb, image_key, xyxy[missing], multimask)
            embedding = self._embedding(rgb, image_key)
            low_res = torch.stack([d.low_res.float() for d in decoded])  # M x 1 x h x w, float32
            low_res = low_res.to(embedding.features.device)
            chunks = self._predictor.iter_upsampled(
                low_res, input_size=embedding.input_size, original_size=embedding.original_size
            )
            for start, binary in chunks:  # n x 1 x H x W bool, a few boxes at a time
                for j, mask in enumerate(binary[:, 0].cpu().numpy()):
                    i = missing[start + j]
                    item = _FullMask(compact_masks([mask], (height, width)), decoded[start + j].score)
                    self._cache.put(keys[i], item, item.nbytes())
                    full[i] = item
        items = [item for item in full if item is not None]
        scores = np.array([item.score for item in items], dtype=np.float32)
        return CompactMask.merge([item.mask for item in items]), scores


def _resolve_device(name: str) -> torch.device:
    from sam_core.device import resolve_device

    return resolve_device(None if name == "auto" else name)
