"""What the pipeline needs from any open-vocabulary detector, and the raw result every detector returns.

A detector turns an image and the prompt's class list into :class:`RawDetections`: every candidate
box with its score for every class, before any threshold. Everything after that (thresholds, one
class per box, NMS, the cap: ``grounded.detectors.scoring``) and the caching that lets new thresholds
run no model (``grounded.pipeline``) is shared, so each detector implements only
:class:`OpenVocabularyDetector`. ``grounded.detectors.registry`` picks the implementation for a
``detector`` config value.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch

__all__ = ["ExemplarBoxes", "OpenVocabularyDetector", "RawDetections"]


@dataclass(frozen=True)
class RawDetections:
    """All detector candidates for one image and one class list, before thresholds.

    Attributes:
        boxes: Q x 4 float32, xyxy in absolute pixels of the original image, not clipped.
        class_scores: Q x C float32 in [0, 1]; candidate q's score for class c (for the Grounding DINO
            family: max sigmoid logit over the tokens of class c's phrase, 0 for classes that were in
            another caption chunk).
        box_scores: Q float32 in [0, 1]; the score ``box_threshold`` is compared with (Grounding DINO:
            max sigmoid logit over all tokens of the query's caption, ``[CLS]``/``.``/``[SEP]`` included).
        image_size: (H, W) of the original image.
        masks: optional Q x H x W bool full-resolution masks, for detectors that predict masks.
        mask_logits: optional Q x h x w float32 low-resolution mask logits (SAM 3: 288 x 288), the
            compact alternative to ``masks``: :meth:`instance_masks` upsamples only the instances kept
            after thresholds and NMS. ``None`` for both (the Grounding DINO family) means SAM makes
            the masks from the boxes.
    Q = num_queries x number of caption chunks (900 per chunk for the released Grounding DINO models).
    """

    boxes: np.ndarray
    class_scores: np.ndarray
    box_scores: np.ndarray
    image_size: tuple[int, int]
    masks: np.ndarray | None = None
    mask_logits: torch.Tensor | None = None

    def __post_init__(self) -> None:
        num = self.boxes.shape[0]
        if self.boxes.shape != (num, 4) or self.class_scores.ndim != 2 or self.class_scores.shape[0] != num:
            raise ValueError(
                f"RawDetections needs boxes Q x 4 and class_scores Q x C; got {self.boxes.shape} and "
                f"{self.class_scores.shape}"
            )
        if self.box_scores.shape != (num,):
            raise ValueError(f"box_scores must have shape ({num},), got {self.box_scores.shape}")
        if self.masks is not None and self.masks.shape != (num, *self.image_size):
            raise ValueError(
                f"masks must have shape ({num}, {self.image_size[0]}, {self.image_size[1]}), got "
                f"{self.masks.shape}"
            )
        if self.mask_logits is not None and (self.mask_logits.ndim != 3 or self.mask_logits.shape[0] != num):
            shape = tuple(self.mask_logits.shape)
            raise ValueError(f"mask_logits must have shape ({num}, h, w), got {shape}")

    @property
    def num_classes(self) -> int:
        return int(self.class_scores.shape[1])

    @property
    def has_masks(self) -> bool:
        """True when the detector predicted masks (``masks`` or ``mask_logits``)."""
        return self.masks is not None or self.mask_logits is not None

    def instance_masks(
        self, index: np.ndarray, *, mask_threshold: float = 0.5, chunk: int = 8
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Full-resolution masks of the queries ``index`` (N ints), a few at a time.

        Yields ``(start, masks)`` with ``masks`` n x H x W bool for ``index[start:start + n]``. From
        ``mask_logits``: sigmoid, bilinear resize to (H, W) (``align_corners=False``), then
        ``> mask_threshold``, in that order, as transformers' ``Sam3Processor.
        post_process_instance_segmentation`` does; only these N are ever upsampled.
        """
        if not self.has_masks:
            raise ValueError("this detector predicted no masks; a SAM model makes them from the boxes")
        for start in range(0, len(index), chunk):
            rows = np.asarray(index[start : start + chunk], dtype=np.int64)  # n
            if self.masks is not None:
                yield start, self.masks[rows]
                continue
            probs = self.mask_logits[torch.from_numpy(rows)].float().sigmoid()  # n x h x w
            upsampled = torch.nn.functional.interpolate(
                probs[None], size=self.image_size, mode="bilinear", align_corners=False
            )[0]  # n x H x W
            yield start, (upsampled > mask_threshold).cpu().numpy()

    def nbytes(self) -> int:
        """Memory held by the arrays (for byte-bounded caches)."""
        masks = 0 if self.masks is None else self.masks.nbytes
        if self.mask_logits is not None:
            masks += self.mask_logits.numel() * self.mask_logits.element_size()
        return int(self.boxes.nbytes + self.class_scores.nbytes + self.box_scores.nbytes + masks)


@dataclass(frozen=True)
class ExemplarBoxes:
    """Example boxes that show the detector what to find (SAM 3's geometric prompts).

    Attributes:
        boxes: K x 4 float32, xyxy in absolute pixels of the original image.
        labels: K bool, True = positive example (find things like this), False = negative.
    """

    boxes: np.ndarray
    labels: np.ndarray

    @classmethod
    def from_lists(
        cls, positive: Sequence[Sequence[float]] | np.ndarray | None = None,
        negative: Sequence[Sequence[float]] | np.ndarray | None = None,
    ) -> ExemplarBoxes | None:
        """Positive and negative boxes (each K x 4 xyxy pixels) -> ``ExemplarBoxes``; None if both empty."""
        pos = _box_array("positive", positive)
        neg = _box_array("negative", negative)
        if len(pos) + len(neg) == 0:
            return None
        labels = np.concatenate([np.ones(len(pos), dtype=bool), np.zeros(len(neg), dtype=bool)])
        return cls(np.concatenate([pos, neg]).astype(np.float32), labels)

    def check_image(self, height: int, width: int) -> None:
        """Refuse boxes with x1 <= x0 or y1 <= y0, or lying wholly outside the image."""
        x0, y0, x1, y1 = self.boxes.T  # each K
        bad = (x1 <= x0) | (y1 <= y0) | (x1 <= 0) | (y1 <= 0) | (x0 >= width) | (y0 >= height)
        if bad.any():
            first = self.boxes[np.flatnonzero(bad)[0]].tolist()
            raise ValueError(
                f"exemplar box {first} is empty or outside the {width}x{height} image; give boxes as "
                "[x0, y0, x1, y1] in pixels with x0 < x1 and y0 < y1"
            )

    def cache_token(self) -> bytes:
        """Identifies these boxes in cache keys."""
        return self.boxes.tobytes() + self.labels.tobytes()


def _box_array(name: str, boxes: Sequence[Sequence[float]] | np.ndarray | None) -> np.ndarray:
    if boxes is None:
        return np.zeros((0, 4), dtype=np.float32)
    try:
        array = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} exemplar boxes must be numbers [[x0, y0, x1, y1], ...]") from None
    if array.size == 0:
        return np.zeros((0, 4), dtype=np.float32)
    if array.ndim == 1 and array.shape[0] == 4:
        array = array[None]
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(
            f"{name} exemplar boxes must be K x 4 [[x0, y0, x1, y1], ...], got shape {array.shape}"
        )
    if not np.isfinite(array).all():
        raise ValueError(f"{name} exemplar boxes must be finite numbers")
    return array.astype(np.float32)


@runtime_checkable
class OpenVocabularyDetector(Protocol):
    """Text-prompted boxes: the seam between the pipeline and a detector implementation.

    Attributes:
        model_id: names the weights ("IDEA-Research/grounding-dino-tiny", a folder, a ``.pth`` file).
        precision: the dtype matrix products run in (``float32``, ``bfloat16``, ``float16``, ``int8``).
        untrained: True when the weights are random (test models): outputs are meaningless.
        cache_key: identifies this detector instance's outputs in the pipeline's caches (weights and
            preprocessing); two detectors share cached results only if their keys are equal.

    Optional capabilities, read by the pipeline with ``getattr`` (SAM 3 has all three):
    ``predicts_masks = True`` (``RawDetections`` carries masks, so ``sam: none`` is allowed);
    ``accepts_exemplars = True`` (``detect(image, classes, exemplars)`` takes :class:`ExemplarBoxes`);
    ``encode_image(image) -> features`` (with ``.nbytes()``) plus ``detect_from_features(features,
    classes, exemplars)``: the pipeline caches the features per image content, so a new prompt on the
    same image skips the expensive image encoder.
    """

    model_id: str
    precision: str
    untrained: bool

    @property
    def cache_key(self) -> str: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype: ...

    def describe(self) -> dict[str, str]:
        """``{"model", "device", "dtype"}`` (plain JSON, ``dtype`` = ``precision``)."""
        ...

    def detect(self, image: np.ndarray, classes: Sequence[str]) -> RawDetections:
        """Every candidate's box and class scores for ``classes`` (C names) on ``image`` (H x W x 3
        uint8 RGB). Prompts longer than the model's text limit are split by the detector itself."""
        ...
