"""``SamPredictor``: embed an image once (expensive), then decode many prompts (cheap).

Adapted from Meta's segment_anything/predictor.py (Apache-2.0) with the same API, plus
``set_embedding``/``embedding`` to restore a cached embedding, and input checks that raise
``ValueError`` instead of asserting.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from .sam import Sam, check_hq_token_only
from .transforms import ResizeLongestSide
from .validation import check_box, check_image, check_mask_input, check_points, check_prompt_batch

__all__ = ["SamPredictor", "ImageEmbedding"]

# Prompts upsampled to full resolution at once: at most 16, and at most what keeps the float32
# logits plus the bool masks of one chunk (5 bytes per pixel per mask) under 64 MiB -- a 40 MP
# image goes one mask at a time, instead of 16 x 40 MP x 4 bytes = 2.6 GB.
_POSTPROCESS_CHUNK = 16
_POSTPROCESS_BYTES = 64 * 2**20


@dataclass(frozen=True, eq=False)
class ImageEmbedding:
    """What ``set_image`` computes, to cache per image and restore with ``set_embedding``.

    features: 1 x C x h x w in the model's dtype/device (C = prompt_embed_dim, h = w = image_size // 16).
    original_size: (H, W) of the original image. input_size: (h, w) after resize, before padding.
    early_features: SAM-HQ only: 1 x h' x w' x Ce, the encoder's early features (channels last; the
    ViT's tokens after its first global-attention block, or TinyViT's first attention stage); None
    for other models.
    high_res_features: SAM 2 only: (1 x C/8 x 4h x 4w, 1 x C/4 x 2h x 2w) decoder skip features.
    """

    features: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    early_features: torch.Tensor | None = None
    high_res_features: tuple[torch.Tensor, ...] = field(default=())

    def nbytes(self) -> int:
        """Bytes held by the feature tensors (SAM-HQ's early and SAM 2's high-resolution ones included)."""
        tensors = (self.features, self.early_features, *self.high_res_features)
        return sum(t.element_size() * t.nelement() for t in tensors if t is not None)


class SamPredictor:
    """Drop-in for ``segment_anything.SamPredictor``."""

    def __init__(self, sam_model: Sam) -> None:
        self.model = sam_model
        # SAM 2 resizes to a square without keeping the aspect ratio: its model supplies the transform
        make_transform = getattr(sam_model, "make_input_transform", None)
        self.transform = (
            make_transform() if make_transform else ResizeLongestSide(sam_model.image_encoder.img_size)
        )
        self.reset_image()

    # ------------------------------------------------------------------ image
    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Embed an H x W x 3 uint8 image (pixel values 0..255) in ``image_format`` ('RGB' or 'BGR')."""
        image = check_image(image, image_format)
        if image_format != self.model.image_format:
            image = image[..., ::-1]
        input_image = self.transform.apply_image(image)  # h x w x 3 uint8
        input_image_torch = torch.as_tensor(input_image, device=self.device)
        input_image_torch = input_image_torch.permute(2, 0, 1).contiguous()[None, :, :, :]  # 1 x 3 x h x w
        self.set_torch_image(input_image_torch, image.shape[:2])

    @torch.no_grad()
    def set_torch_image(self, transformed_image: torch.Tensor, original_image_size: tuple[int, ...]) -> None:
        """Embed a 1 x 3 x h x w image already resized with ``self.transform`` (pixel values 0..255)."""
        size = self.model.image_encoder.img_size
        shape = tuple(transformed_image.shape)
        if len(shape) != 4 or shape[0] != 1 or shape[1] != 3 or max(shape[2:]) != size:
            raise ValueError(
                f"set_torch_image expects 1 x 3 x h x w with longest side {size} "
                f"(use predictor.transform.apply_image_torch), got {shape}"
            )
        original = (int(original_image_size[0]), int(original_image_size[1]))
        expected = self.transform.get_preprocess_shape(original[0], original[1], size)
        if shape[2:] != expected:
            raise ValueError(
                f"an original image of {original} (H, W) resizes to {expected}, "
                f"but the transformed image is {shape[2:]}"
            )
        self.reset_image()
        self.original_size = original
        self.input_size = (shape[2], shape[3])
        input_image = self.model.preprocess(transformed_image.to(self.device))  # 1 x 3 x S x S float32
        encode = getattr(self.model, "encode_image", None)  # SAM 2: (embedding, high-res features)
        if encode is not None:
            self.features, self.high_res_features = encode(input_image)
        elif self.model.is_hq:
            # 1 x C x h x w, 1 x h' x w' x Ce
            self.features, self.early_features = self.model.image_encoder(input_image, return_early=True)
        else:
            self.features = self.model.image_encoder(input_image)  # 1 x C x h x w
        self.is_image_set = True

    def set_embedding(self, embedding: ImageEmbedding) -> None:
        """Restore an embedding from ``predictor.embedding`` (e.g. a cache) instead of re-encoding."""
        if not isinstance(embedding, ImageEmbedding):
            raise ValueError(f"set_embedding expects an ImageEmbedding, got {type(embedding).__name__}")
        grid = self.model.prompt_encoder.image_embedding_size
        expected = (1, self.model.prompt_encoder.embed_dim, grid[0], grid[1])
        if tuple(embedding.features.shape) != expected:
            raise ValueError(
                f"embedding features are {tuple(embedding.features.shape)} but this model needs "
                f"{expected}; was it made by another SAM?"
            )
        early = embedding.early_features
        if self.model.is_hq and early is None:
            raise ValueError(
                "this SAM-HQ model needs the embedding's early_features, but the embedding has none; "
                "was it made by a plain SAM? Re-run set_image with this model."
            )
        if early is not None and not self.model.is_hq:
            raise ValueError("the embedding carries SAM-HQ early features but this model is not a SAM-HQ")
        if early is not None:
            width = self.model.config.early_feature_dim if self.model.config is not None else early.shape[-1]
            if early.ndim != 4 or early.shape[0] != 1 or early.shape[-1] != width:
                raise ValueError(
                    f"embedding early_features are {tuple(early.shape)}; this model needs 1 x h x w x {width}"
                )
        H, W = embedding.original_size
        input_size = self.transform.get_preprocess_shape(H, W, self.transform.target_length)
        if tuple(embedding.input_size) != input_size:
            raise ValueError(
                f"embedding input_size {tuple(embedding.input_size)} does not match original_size "
                f"{(H, W)} resized to {input_size}"
            )
        expected_high_res = 2 if hasattr(self.model, "encode_image") else 0
        if len(embedding.high_res_features) != expected_high_res:
            raise ValueError(
                f"embedding has {len(embedding.high_res_features)} high-resolution feature maps but this "
                f"model needs {expected_high_res}; was it made by another SAM?"
            )
        self.reset_image()
        self.features = embedding.features.to(device=self.device, dtype=self.model.dtype)
        if early is not None:
            self.early_features = early.to(device=self.device, dtype=self.model.dtype)
        self.high_res_features = tuple(
            t.to(device=self.device, dtype=self.model.dtype) for t in embedding.high_res_features
        )
        self.original_size = (int(H), int(W))
        self.input_size = input_size
        self.is_image_set = True

    @property
    def embedding(self) -> ImageEmbedding:
        """The current image's embedding, to cache and later pass to ``set_embedding``."""
        self._require_image("to get its embedding")
        return ImageEmbedding(self.features, self.original_size, self.input_size, self.early_features,
                              self.high_res_features)

    def get_image_embedding(self) -> torch.Tensor:
        """The current image's 1 x C x h x w embedding."""
        self._require_image("to generate an embedding")
        return self.features

    def reset_image(self) -> None:
        """Forget the current image."""
        self.is_image_set = False
        self.features = None
        self.early_features: torch.Tensor | None = None  # SAM-HQ only
        self._hq_features: torch.Tensor | None = None  # SAM-HQ: computed at the first decode, per image
        self.high_res_features: tuple[torch.Tensor, ...] = ()
        self.original_size: tuple[int, int] | None = None
        self.input_size: tuple[int, int] | None = None
        self.orig_h = self.orig_w = self.input_h = self.input_w = None  # Meta's attributes

    @property
    def device(self) -> torch.device:
        return self.model.device

    def _require_image(self, purpose: str = "before mask prediction") -> None:
        if not self.is_image_set:
            raise RuntimeError(
                f"An image must be set with .set_image(...) (or .set_embedding(...)) {purpose}."
            )

    # ------------------------------------------------------------------ prompts
    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        hq_token_only: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for one prompt, all coordinates in pixels of the original image.

        Args:
            point_coords: N x 2 (x, y); point_labels: N (1 = foreground, 0 = background).
            box: xyxy, shape 4. mask_input: 1 x m x m low-res logits from a previous call (m = 256).
            multimask_output: 3 masks (ambiguous prompts) instead of 1. SAM-HQ returns 1 mask either
                way (SysCV): the best of the 3 by predicted IoU, or the single-mask output.
            return_logits: float logits instead of bool masks.
            hq_token_only: SAM-HQ only: the HQ token's mask alone instead of SAM's mask + HQ mask
                (``ValueError`` on a model without an HQ token).

        Returns:
            masks C x H x W (bool, or float32 logits), iou_predictions C (float32),
            low_res_logits C x m x m (float32).
        """
        self._require_image()
        coords_torch = labels_torch = box_torch = mask_input_torch = None
        if point_coords is not None or point_labels is not None:
            coords, labels = check_points(point_coords, point_labels, self.original_size)
            coords = self.transform.apply_coords(coords, self.original_size)
            coords_torch = torch.as_tensor(coords, dtype=torch.float, device=self.device)[
                None, :, :
            ]  # 1 x N x 2
            labels_torch = torch.as_tensor(labels, dtype=torch.int, device=self.device)[None, :]  # 1 x N
        if box is not None:
            box = self.transform.apply_boxes(check_box(box, self.original_size), self.original_size)  # 1 x 4
            box_torch = torch.as_tensor(box, dtype=torch.float, device=self.device)
        if mask_input is not None:
            mask = check_mask_input(mask_input, self.model.prompt_encoder.mask_input_size[0])
            mask_input_torch = torch.as_tensor(mask, device=self.device)[None, :, :, :]  # 1 x 1 x m x m
        masks, iou_predictions, low_res_masks = self.predict_torch(
            coords_torch,
            labels_torch,
            box_torch,
            mask_input_torch,
            multimask_output,
            return_logits=return_logits,
            hq_token_only=hq_token_only,
        )
        return masks[0].cpu().numpy(), iou_predictions[0].cpu().numpy(), low_res_masks[0].cpu().numpy()

    @torch.no_grad()
    def predict_torch(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        hq_token_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Masks for B prompts in ONE decoder call; coordinates in the transformed (input) frame.

        Args:
            point_coords: B x N x 2 (x, y) and point_labels: B x N, or None.
            boxes: B x 4 xyxy, or None. mask_input: B x 1 x m x m (or 1 x 1 x m x m shared), or None.
            hq_token_only: as in ``predict`` (SAM-HQ only).

        Returns:
            masks B x C x H x W (bool, or float32 logits with return_logits), iou_predictions B x C and
            low_res_logits B x C x m x m, float32.
        """
        iou_predictions, low_res_masks = self.predict_low_res_torch(
            point_coords, point_labels, boxes, mask_input, multimask_output, hq_token_only=hq_token_only
        )
        masks = self.upsample_masks(low_res_masks, return_logits=return_logits)
        return masks, iou_predictions, low_res_masks

    @torch.no_grad()
    def upsample_masks(
        self,
        low_res_masks: torch.Tensor,
        *,
        input_size: tuple[int, int] | None = None,
        original_size: tuple[int, int] | None = None,
        return_logits: bool = False,
    ) -> torch.Tensor:
        """Low-res logits B x C x m x m -> B x C x H x W masks of the original image (bool, or float32
        logits with ``return_logits``), a few prompts at a time so the float32 intermediate stays small.

        ``input_size``/``original_size`` default to the current image's (from ``set_image`` or a cached
        ``ImageEmbedding``); pass an embedding's to upsample without touching the predictor's state.
        """
        if input_size is None or original_size is None:
            self._require_image("before upsampling masks")
            input_size, original_size = self.input_size, self.original_size
        masks = torch.empty(
            (*low_res_masks.shape[:2], *original_size),
            dtype=torch.float32 if return_logits else torch.bool,
            device=low_res_masks.device,
        )  # B x C x H x W
        for start, chunk in self.iter_upsampled(low_res_masks, input_size=input_size,
                                                original_size=original_size, return_logits=return_logits):
            masks[start : start + len(chunk)] = chunk
        return masks

    @torch.no_grad()
    def iter_upsampled(
        self,
        low_res_masks: torch.Tensor,
        *,
        input_size: tuple[int, int],
        original_size: tuple[int, int],
        return_logits: bool = False,
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """``(start, masks[start : start + n])`` chunks of :meth:`upsample_masks`' result, so a caller
        can store each chunk compactly without ever holding all B x C x H x W masks."""
        per_prompt = 5 * low_res_masks.shape[1] * original_size[0] * original_size[1]  # bytes
        step = max(1, min(_POSTPROCESS_CHUNK, _POSTPROCESS_BYTES // max(per_prompt, 1)))
        for start in range(0, len(low_res_masks), step):
            chunk = self.model.postprocess_masks(
                low_res_masks[start : start + step], input_size, original_size
            )  # n x C x H x W float32 logits
            yield start, (chunk if return_logits else chunk > self.model.mask_threshold)

    @torch.no_grad()
    def predict_low_res_torch(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        hq_token_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``predict_torch`` without the full-resolution upsampling: (iou B x C, low-res B x C x m x m)."""
        check_hq_token_only(self.model, hq_token_only)
        self._require_image()
        mask_size = self.model.prompt_encoder.mask_input_size[0]
        boxes = check_prompt_batch(point_coords, point_labels, boxes, mask_input, mask_size)
        points = None
        if point_coords is not None:
            points = (point_coords.to(self.device), point_labels.to(self.device))
        sparse, dense = self.model.prompt_encoder(
            points=points,
            boxes=None if boxes is None else boxes.to(self.device),
            masks=None if mask_input is None else mask_input.to(self.device),
        )
        low_res_masks, iou_predictions = self.model.mask_decoder(
            image_embeddings=self.features,  # 1 x C x h x w, shared by all B prompts (never copied)
            image_pe=self.model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
            **self._hq_arguments(hq_token_only),
            **({"high_res_features": self.high_res_features} if self.high_res_features else {}),
        )
        return iou_predictions, low_res_masks

    def _hq_arguments(self, hq_token_only: bool) -> dict[str, object]:
        """SAM-HQ's extra decoder inputs (its per-image HQ features are computed once); {} for SAM."""
        if not getattr(self.model, "is_hq", False):  # SAM 1 and SAM 2
            return {}
        if self._hq_features is None:
            self._hq_features = self.model.mask_decoder.hq_features(self.features, self.early_features)
        return {"hq_features": self._hq_features, "hq_token_only": hq_token_only}
