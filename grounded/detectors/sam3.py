"""SAM 3 (transformers' ``Sam3Model``) as a text-prompted detector that also predicts instance masks.

SAM 3 takes one text phrase per forward pass. For a prompt of C classes, :meth:`Sam3Detector.detect`
runs the vision encoder once (:meth:`encode_image`, cached by the pipeline per image content) and the
DETR encoder/decoder and mask head once per class, C classes as one batch over the same vision
features (expanded, not copied). Query q of class c scores ``sigmoid(logit) * sigmoid(presence)``
(transformers' ``post_process_instance_segmentation``); in :class:`RawDetections` that query's row
holds the score in column c and 0 elsewhere, so ``grounded.detectors.scoring`` gives each instance
exactly one class from the user's list and applies the same thresholds, NMS and cap as for the other
detectors (for SAM 3 the query score is both the box and the class score).

Memory: SAM 3 predicts 200 queries per class with 288 x 288 mask logits (66 MB per class in
float32). Queries scoring at most ``min_score`` (0.05, far below any useful threshold) are dropped
before anything is stored, and the kept ones keep their low-resolution logits: only the instances that
survive thresholds, NMS and ``max_detections`` are upsampled to full size
(``RawDetections.instance_masks``). A threshold below ``min_score`` therefore behaves as ``min_score``.

Preprocessing is ours in plain torch (no torchvision): resize to the model's square input
(1008 x 1008) bilinear with antialiasing, scale to [0, 1], normalise with mean = std = 0.5, as
``Sam3ImageProcessor`` does. Text: the CLIP tokenizer padded to 32 tokens, as ``Sam3Processor`` does.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from grounded.detectors.base import ExemplarBoxes, RawDetections

__all__ = ["SAM3_TEXT_LENGTH", "Sam3Detector", "Sam3ImageFeatures"]

# Sam3Processor pads every phrase to 32 CLIP tokens.
SAM3_TEXT_LENGTH = 32
# Classes decoded in one batch (bounds activation memory for long prompts).
_CLASS_BATCH = 8


@dataclass(frozen=True)
class Sam3ImageFeatures:
    """What a new prompt on the same image re-uses: the vision encoder's FPN levels for one image.

    Only what ``Sam3Model.forward`` reads is kept: the first three FPN levels (1 x 256 x 288 x 288,
    144 x 144, 72 x 72 at 1008 px: 111 MB in float32) and their sine position encodings, which depend
    only on the shapes and are shared by every image (not counted in :meth:`nbytes`). The ViT's last
    hidden state and the lowest-resolution level, which the forward drops, are not stored.

    Attributes:
        levels: per-image FPN levels, each 1 x C x h x w.
        positions: the matching position encodings (shared).
        image_size: the original (H, W).
    """

    levels: tuple[torch.Tensor, ...]
    positions: tuple[torch.Tensor, ...]
    image_size: tuple[int, int]

    def nbytes(self) -> int:
        return int(sum(t.numel() * t.element_size() for t in self.levels))

    def expanded(self, batch: int) -> Any:
        """The features as transformers' ``Sam3VisionEncoderOutput``, a batch of ``batch`` views (no copy)."""
        from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

        def grow(tensors: tuple[torch.Tensor, ...]) -> tuple[Any, ...]:
            # 1 x C x h x w -> batch x C x h x w; the forward drops the last level ([:-1]): a placeholder
            return (*(t.expand(batch, *t.shape[1:]) for t in tensors), None)

        return Sam3VisionEncoderOutput(
            fpn_hidden_states=grow(self.levels), fpn_position_encoding=grow(self.positions)
        )


class Sam3Detector:
    """Text (and optional exemplar boxes) -> boxes, scores and masks, from a transformers ``Sam3Model``.

    Args:
        model: a ``Sam3Model`` (put in eval mode here).
        tokenizer: its CLIP tokenizer.
        model_id: names the weights in cache keys ("facebook/sam3", a folder, ...).
        device, dtype: move/cast the model; ``None`` keeps where and how it is.
        min_score: queries scoring at most this are dropped before caching (see the module docstring).
        untrained: the weights are random (test models): outputs are meaningless.
    """

    model_type: ClassVar[str] = "sam3"
    predicts_masks: ClassVar[bool] = True
    accepts_exemplars: ClassVar[bool] = True

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        model_id: str = "custom",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        min_score: float = 0.05,
        untrained: bool = False,
    ) -> None:
        from grounded.detectors.roi_align import install_roi_align

        # Exemplar boxes need roi_align; no torchvision here. (importlib: transformers' lazy
        # ``from transformers.models.sam3 import modeling_sam3`` refuses without torchvision.)
        install_roi_align(importlib.import_module("transformers.models.sam3.modeling_sam3"))
        if device is not None or dtype is not None:
            model = model.to(device=device, dtype=dtype)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.min_score = float(min_score)
        self.untrained = untrained
        self._dtype = next(model.parameters()).dtype
        self.precision = str(self._dtype).removeprefix("torch.")
        size = model.config.vision_config.image_size
        self.input_size = (size, size) if isinstance(size, int) else tuple(size)
        self._positions: tuple[Any, tuple[torch.Tensor, ...]] | None = None  # shared by all images

    @property
    def cache_key(self) -> str:
        return f"{type(self).__name__}:{self.model_id}:{self.precision}:{self.min_score}:{id(self)}"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    def describe(self) -> dict[str, str]:
        return {"model": self.model_id, "device": str(self.device), "dtype": self.precision}

    @classmethod
    def from_pretrained(
        cls, name_or_path: str, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Sam3Detector:
        """Load a ``sam3`` folder or Hub id (``facebook/sam3``: gated, see the README) strictly."""
        from grounded.detectors.loading import load_transformers_model, resolve_model_folder

        folder = resolve_model_folder(name_or_path)
        from transformers import AutoTokenizer

        model = load_transformers_model(folder, dtype=dtype, model_type=cls.model_type)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        is_local = Path(name_or_path).expanduser().is_dir()
        model_id = str(folder.resolve()) if is_local else name_or_path
        return cls(model, tokenizer, model_id=model_id, device=device, dtype=dtype)

    # ------------------------------------------------------------------ inputs
    def pixel_values(self, image: np.ndarray) -> torch.Tensor:
        """H x W x 3 uint8 RGB -> 1 x 3 x S x S normalised (S = the model's input size, 1008)."""
        if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3
                and image.dtype == np.uint8):
            shape = getattr(image, "shape", None)
            raise ValueError(
                f"SAM 3 input must be an H x W x 3 uint8 RGB array, got shape {shape}; "
                "convert it with grounded.io.images.load_image"
            )
        if not (image.flags.c_contiguous and image.flags.writeable):
            image = np.array(image, order="C")  # torch wants a writable, contiguous buffer
        tensor = torch.from_numpy(image).permute(2, 0, 1)[None]  # 1 x 3 x H x W uint8
        if tuple(image.shape[:2]) != self.input_size:
            tensor = F.interpolate(tensor, size=self.input_size, mode="bilinear", antialias=True)
        pixels = tensor.to(device=self.device, dtype=torch.float32) / 255.0  # 1 x 3 x S x S
        return ((pixels - 0.5) / 0.5).to(self._dtype)

    def text_inputs(self, classes: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """C phrases -> input_ids, attention_mask (C x 32 each), as ``Sam3Processor`` tokenises them."""
        encoded = self.tokenizer(
            list(classes), padding="max_length", max_length=SAM3_TEXT_LENGTH, truncation=True,
            return_tensors="pt",
        )
        return encoded["input_ids"].to(self.device), encoded["attention_mask"].to(self.device)

    @staticmethod
    def box_inputs(
        exemplars: ExemplarBoxes, image_size: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel xyxy exemplars -> (1 x K x 4 normalised cxcywh, 1 x K labels 1/0), as ``Sam3Processor``."""
        height, width = image_size
        scale = torch.tensor([width, height, width, height], dtype=torch.float32)
        xyxy = torch.from_numpy(exemplars.boxes).float() / scale  # K x 4 in [0, 1]
        cxcywh = torch.stack(
            [(xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2,
             xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]], dim=-1,
        )  # K x 4
        labels = torch.from_numpy(exemplars.labels.astype(np.int64))  # K
        return cxcywh[None], labels[None]

    # ------------------------------------------------------------------ model
    @torch.inference_mode()
    def encode_image(self, image: np.ndarray) -> Sam3ImageFeatures:
        """The vision encoder on ``image`` (H x W x 3 uint8): the expensive, prompt-independent part."""
        vision = self.model.get_vision_features(pixel_values=self.pixel_values(image))
        levels = tuple(vision.fpn_hidden_states[:-1])  # what Sam3Model.forward reads
        positions = tuple(vision.fpn_position_encoding[:-1])
        shapes = tuple((t.shape, t.dtype, t.device) for t in positions)
        if self._positions is None or self._positions[0] != shapes:
            self._positions = (shapes, positions)  # sine encodings: a function of the shapes only
        return Sam3ImageFeatures(levels, self._positions[1], (int(image.shape[0]), int(image.shape[1])))

    def detect(
        self, image: np.ndarray, classes: Sequence[str], exemplars: ExemplarBoxes | None = None
    ) -> RawDetections:
        """``encode_image`` + ``detect_from_features`` (no cache)."""
        return self.detect_from_features(self.encode_image(image), classes, exemplars)

    @torch.inference_mode()
    def detect_from_features(
        self, features: Sam3ImageFeatures, classes: Sequence[str], exemplars: ExemplarBoxes | None = None
    ) -> RawDetections:
        """Every query scoring above ``min_score`` for each of the C ``classes``, with mask logits.

        Returns:
            RawDetections: rows grouped by class; ``class_scores`` Q x C (the query's score in its
            class's column, 0 elsewhere), ``box_scores`` the same score, boxes xyxy in pixels of
            the original image, ``mask_logits`` Q x 288 x 288 (low resolution, float32).
        """
        if not classes:
            raise ValueError("SAM 3 needs at least one class phrase")
        height, width = features.image_size
        if exemplars is not None:
            exemplars.check_image(height, width)
        scale = torch.tensor([width, height, width, height], dtype=torch.float32)
        boxes, scores, owners, logits = [], [], [], []
        for start in range(0, len(classes), _CLASS_BATCH):
            batch = list(classes[start : start + _CLASS_BATCH])
            input_ids, attention_mask = self.text_inputs(batch)  # B x 32 each
            extra: dict[str, torch.Tensor] = {}
            if exemplars is not None:
                box, label = self.box_inputs(exemplars, features.image_size)  # 1 x K x 4, 1 x K
                extra = {"input_boxes": box.expand(len(batch), -1, -1).to(self.device, self._dtype),
                         "input_boxes_labels": label.expand(len(batch), -1).to(self.device)}
            out = self.model(vision_embeds=features.expanded(len(batch)), input_ids=input_ids,
                             attention_mask=attention_mask, **extra)
            score = out.pred_logits.float().sigmoid() * out.presence_logits.float().sigmoid()  # B x Q
            keep = score > self.min_score  # B x Q
            rows, queries = keep.nonzero(as_tuple=True)  # K each
            boxes.append(out.pred_boxes.float()[rows, queries].cpu() * scale)  # K x 4 pixels
            scores.append(score[rows, queries].cpu())  # K
            owners.append(rows.cpu() + start)  # K class index
            logits.append(out.pred_masks.float()[rows, queries].cpu())  # K x h x w
        score = torch.cat(scores)  # Q
        owner = torch.cat(owners)  # Q
        class_scores = torch.zeros(len(score), len(classes))  # Q x C
        class_scores[torch.arange(len(score)), owner] = score
        return RawDetections(
            boxes=torch.cat(boxes).numpy(),
            class_scores=class_scores.numpy(),
            box_scores=score.numpy(),
            image_size=(height, width),
            mask_logits=torch.cat(logits),
        )
