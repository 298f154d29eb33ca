"""``SAM2ImagePredictor``: a drop-in for Meta's ``sam2.sam2_image_predictor.SAM2ImagePredictor``.

Adapted from Meta's sam2/sam2_image_predictor.py (Apache-2.0), single-image API: ``set_image``
(expensive, cached), then ``predict`` as often as needed. Several boxes (N x 4) decode in ONE
decoder call against one embedding. Preprocessing is SAM 2's: resize to image_size squared (aspect
ratio not kept), pixels / 255, ImageNet mean/std; masks are resized back to the original image.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

from ..validation import check_image
from .model import Sam2

__all__ = ["SAM2ImagePredictor"]


class SAM2ImagePredictor:
    """Embed an image once, then predict masks for points, boxes and mask prompts."""

    def __init__(
        self,
        sam_model: Sam2,
        mask_threshold: float = 0.0,
        max_hole_area: float = 0.0,
        max_sprinkle_area: float = 0.0,
    ) -> None:
        if max_hole_area > 0 or max_sprinkle_area > 0:
            raise ValueError(
                "max_hole_area / max_sprinkle_area (hole filling, needing Meta's CUDA extension) are not "
                "supported; leave them at 0 (Meta's default)"
            )
        self.model = sam_model
        self.mask_threshold = mask_threshold
        self.transform = sam_model.make_input_transform()
        self.reset_predictor()

    @classmethod
    def from_pretrained(cls, model_id: str, **kwargs: object) -> SAM2ImagePredictor:
        """A predictor for a Hub id (e.g. "facebook/sam2.1-hiera-tiny") or a local checkpoint;
        ``device`` / ``dtype`` keyword arguments go to ``build_sam2``, the rest to the predictor."""
        from .build import build_sam2

        build_kwargs = {k: kwargs.pop(k) for k in ("device", "dtype") if k in kwargs}
        model_type = str(kwargs.pop("model_type", "auto"))
        return cls(build_sam2(model_type, os.fspath(model_id), **build_kwargs), **kwargs)  # type: ignore[arg-type]

    @property
    def device(self) -> torch.device:
        return self.model.device

    # ------------------------------------------------------------------ image
    @torch.no_grad()
    def set_image(self, image: np.ndarray | Image.Image) -> None:
        """Embed an H x W x 3 uint8 RGB array (or a PIL image)."""
        if isinstance(image, Image.Image):
            image = np.array(image.convert("RGB"))
        image = check_image(image, "RGB")
        self.reset_predictor()
        self._orig_hw = [tuple(int(v) for v in image.shape[:2])]
        x = torch.as_tensor(np.ascontiguousarray(image), device=self.device).permute(2, 0, 1)[
            None
        ]  # 1 x 3 x H x W
        x = self.model.preprocess(self.transform.apply_image_torch(x))  # 1 x 3 x S x S
        embedding, high_res = self.model.encode_image(x)
        self._features = {"image_embed": embedding, "high_res_feats": list(high_res)}
        self._is_image_set = True

    def get_image_embedding(self) -> torch.Tensor:
        """The current image's 1 x C x h x w embedding (stride 16, with ``no_mem_embed``)."""
        self._require_image("to generate an embedding")
        return self._features["image_embed"]

    def reset_predictor(self) -> None:
        """Forget the current image."""
        self._is_image_set = False
        self._features: dict[str, object] | None = None
        self._orig_hw: list[tuple[int, int]] | None = None
        self._is_batch = False

    def _require_image(self, purpose: str = "before mask prediction") -> None:
        if not self._is_image_set:
            raise RuntimeError(f"An image must be set with .set_image(...) {purpose}.")

    # ------------------------------------------------------------------ prompts
    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for the prompts; N boxes (N x 4 xyxy) give N masks sets in one decoder call.

        Args:
            point_coords: P x 2 (or N x P x 2) (x, y); point_labels: P (or N x P), 1 fg / 0 bg.
            box: 4 or N x 4 xyxy. mask_input: 1 x m x m (or N x 1 x m x m) low-res logits (m = 256).
            normalize_coords: True: coordinates are pixels of the original image; False: already
                normalised to 0..1 of its width and height.

        Returns:
            masks (C x H x W, or N x C x H x W for N > 1 prompts; float32 0/1, or logits with
            return_logits), iou_predictions (C or N x C), low_res_masks (C x m x m or N x C x m x m,
            logits clamped to +-32), all float32 numpy.
        """
        self._require_image()
        coords, labels, boxes, masks = self._prep_prompts(
            point_coords, point_labels, box, mask_input, normalize_coords
        )
        out = self._predict(coords, labels, boxes, masks, multimask_output, return_logits)
        return tuple(t.squeeze(0).float().cpu().numpy() for t in out)  # type: ignore[return-value]

    def _prep_prompts(
        self,
        point_coords: np.ndarray | None,
        point_labels: np.ndarray | None,
        box: np.ndarray | None,
        mask_logits: np.ndarray | None,
        normalize_coords: bool,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """Numpy prompts -> tensors in the model's input frame (pixels of the S x S square)."""
        hw = self._orig_hw[0]
        size = float(self.model.image_size)
        scale = torch.tensor(
            [size / hw[1], size / hw[0]] if normalize_coords else [size, size], device=self.device
        )
        coords = labels = boxes = masks = None
        if point_coords is not None:
            if point_labels is None:
                raise ValueError("point_labels must be supplied if point_coords is supplied.")
            coords = torch.as_tensor(np.asarray(point_coords), dtype=torch.float, device=self.device) * scale
            labels = torch.as_tensor(np.asarray(point_labels), dtype=torch.int, device=self.device)
            if coords.ndim == 2:
                coords, labels = coords[None], labels[None]  # 1 x P x 2, 1 x P
            if coords.ndim != 3 or coords.shape[-1] != 2 or labels.shape != coords.shape[:2]:
                raise ValueError(
                    f"point_coords {tuple(coords.shape)} and point_labels {tuple(labels.shape)} do not match"
                )
        if box is not None:
            if np.asarray(box).shape[-1:] != (4,):
                raise ValueError(f"box must be 4 or N x 4 xyxy, got shape {np.asarray(box).shape}")
            boxes = torch.as_tensor(np.asarray(box), dtype=torch.float, device=self.device).reshape(-1, 2, 2)
            boxes = (boxes * scale).reshape(-1, 4)  # N x 4
        if mask_logits is not None:
            masks = torch.as_tensor(np.asarray(mask_logits), dtype=torch.float, device=self.device)
            if masks.ndim == 3:
                masks = masks[None]  # 1 x 1 x m x m
        return coords, labels, boxes, masks

    @torch.no_grad()
    def _predict(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        mask_input: torch.Tensor | None,
        multimask_output: bool,
        return_logits: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Prompts in the model's input frame -> (masks B x C x H x W, iou B x C, low-res B x C x m x m)."""
        points = None
        if point_coords is not None:
            if boxes is not None and point_coords.shape[0] == 1 and boxes.shape[0] > 1:
                point_coords = point_coords.expand(boxes.shape[0], -1, -1)  # the same clicks for every box
                point_labels = point_labels.expand(boxes.shape[0], -1)
            points = (point_coords, point_labels)
        sparse, dense = self.model.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
        out = self.model.mask_decoder.decode(
            image_embeddings=self._features["image_embed"],  # 1 x C x h x w, shared by all prompts
            image_pe=self.model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
            high_res_features=self._features["high_res_feats"],
        )
        masks = self.model.postprocess_masks(out.masks, self._orig_hw[0], self._orig_hw[0])  # B x C x H x W
        low_res = out.masks.clamp(-32.0, 32.0)
        if not return_logits:
            masks = masks > self.mask_threshold
        return masks, out.iou_predictions, low_res
