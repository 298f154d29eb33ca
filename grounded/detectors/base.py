"""What the pipeline needs from any open-vocabulary detector, and the raw result every detector returns.

A detector turns an image and the prompt's class list into :class:`RawDetections`: every candidate
box with its score for every class, before any threshold. Everything after that (thresholds, one
class per box, NMS, the cap: ``grounded.detectors.scoring``) and the caching that lets new thresholds
run no model (``grounded.pipeline``) is shared, so each detector implements only
:class:`OpenVocabularyDetector`. ``grounded.detectors.registry`` picks the implementation for a
``detector`` config value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch

__all__ = ["OpenVocabularyDetector", "RawDetections"]


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
        masks: optional Q x H x W bool, for detectors that predict masks themselves; ``None`` (the
            Grounding DINO family) means SAM makes the masks from the boxes. The pipeline does not
            read it yet: today every mask comes from SAM (a mask-predicting detector is future work).
    Q = num_queries x number of caption chunks (900 per chunk for the released Grounding DINO models).
    """

    boxes: np.ndarray
    class_scores: np.ndarray
    box_scores: np.ndarray
    image_size: tuple[int, int]
    masks: np.ndarray | None = None

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

    @property
    def num_classes(self) -> int:
        return int(self.class_scores.shape[1])

    def nbytes(self) -> int:
        """Memory held by the arrays (for byte-bounded caches)."""
        masks = 0 if self.masks is None else self.masks.nbytes
        return int(self.boxes.nbytes + self.class_scores.nbytes + self.box_scores.nbytes + masks)


@runtime_checkable
class OpenVocabularyDetector(Protocol):
    """Text-prompted boxes: the seam between the pipeline and a detector implementation.

    Attributes:
        model_id: names the weights ("IDEA-Research/grounding-dino-tiny", a folder, a ``.pth`` file).
        precision: the dtype matrix products run in (``float32``, ``bfloat16``, ``float16``, ``int8``).
        untrained: True when the weights are random (test models): outputs are meaningless.
        cache_key: identifies this detector instance's outputs in the pipeline's caches (weights and
            preprocessing); two detectors share cached results only if their keys are equal.
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
