"""Grounding DINO (transformers' ``GroundingDinoForObjectDetection``) as a text-prompted box detector.

``detect`` runs the model once per caption chunk and returns :class:`RawDetections`: every query's box
and its score for every class, before any threshold, so new thresholds (``grounded.detectors.scoring``) re-run
no model. Preprocessing is ours (``grounded.detectors.preprocess``, no torchvision); tokenisation and the
class <-> token map come from ``grounded.detectors.prompt``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from grounded.detectors.base import RawDetections
from grounded.detectors.fast_path import enable_dino_fast_path
from grounded.detectors.loading import ModelUnavailableError, load_grounding_dino, resolve_model_folder
from grounded.detectors.preprocess import DetectorPreprocessor
from grounded.detectors.prompt import TokenizedCaption, tokenize_classes

__all__ = ["GroundingDinoDetector", "ModelUnavailableError", "RawDetections", "scores_from_logits"]


def scores_from_logits(
    logits: torch.Tensor, token_class: np.ndarray, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class and per-box scores from Grounding DINO token logits.

    Args:
        logits: Q x L float, one row per query over the padded text positions (L = max_text_len;
            positions past the caption are ``-inf``).
        token_class: T int (T <= L), class index of each caption token, -1 for special tokens.
        num_classes: C, the number of class phrases in this caption.

    Returns:
        class_scores: Q x C float32, max over each phrase's tokens of sigmoid(logit).
        box_scores: Q float32, max over all positions of sigmoid(logit) (as transformers' post-processing).
    """
    probs = logits.float().sigmoid()  # Q x L
    box_scores = probs.max(dim=-1).values  # Q
    phrase_tokens = torch.from_numpy(np.flatnonzero(token_class >= 0)).to(probs.device)  # T_p
    owners = torch.from_numpy(token_class[token_class >= 0]).to(probs.device)  # T_p class index per token
    token_probs = probs[:, phrase_tokens]  # Q x T_p
    class_scores = torch.zeros(probs.shape[0], num_classes, device=probs.device)  # Q x C
    class_scores.scatter_reduce_(1, owners.expand_as(token_probs), token_probs, reduce="amax")
    return class_scores, box_scores


class GroundingDinoDetector:
    """Text-prompted boxes from a transformers Grounding DINO model (an ``OpenVocabularyDetector``).

    The same code serves every model of the family that transformers runs through
    ``GroundingDinoModel.forward`` (Grounding DINO; MM-Grounding-DINO and LLMDet through the
    ``MMGroundingDinoDetector`` subclass): they differ only in weights and in the class head's bias.

    Args:
        model: a ``GroundingDinoForObjectDetection`` (put in eval mode here).
        tokenizer: its fast BERT tokenizer (``AutoTokenizer`` of the same folder).
        model_id: names the weights in cache keys ("IDEA-Research/grounding-dino-tiny", a folder, ...).
        device, dtype: move/cast the model; ``None`` keeps where and how it is.
        preprocessor: image resizing/normalisation; defaults to the released models' 800/1333 ImageNet.
        fast_path: swap in ``grounded.detectors.fast_path`` (vectorised deformable attention, re-associated
            fusion attention, text/backbone caches; float32 results equal transformers' to rounding).
            ``False`` runs transformers' modules unchanged.
        quantize_int8: (fast path, CPU, float32) dynamic int8 linears; faster, slightly less accurate.
        untrained: the weights are random (test models): outputs are meaningless.
    """

    # config.json ``model_type`` of the checkpoints this class loads (``from_pretrained`` refuses others).
    model_type: ClassVar[str] = "grounding-dino"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        model_id: str = "custom",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        preprocessor: DetectorPreprocessor | None = None,
        fast_path: bool = True,
        quantize_int8: bool = False,
        untrained: bool = False,
    ) -> None:
        if fast_path:
            # Exact re-formulations + caches (detectors.fast_path); a reduced dtype runs under autocast
            # with float32 norms and sampling locations, so inputs stay float32.
            if device is not None:
                model = model.to(device=device)
            enable_dino_fast_path(model, dtype=dtype, quantize_int8=quantize_int8)
            self._input_dtype = torch.float32
            self.precision = "int8" if quantize_int8 else _dtype_name(dtype or torch.float32)
        else:
            if quantize_int8:
                raise ValueError("quantize_int8 needs fast_path=True")
            if device is not None or dtype is not None:
                model = model.to(device=device, dtype=dtype)
            self._input_dtype = dtype or next(model.parameters()).dtype
            self.precision = _dtype_name(self._input_dtype)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.preprocessor = preprocessor or DetectorPreprocessor()
        self.max_text_len = int(model.config.max_text_len)
        self.untrained = untrained

    @property
    def cache_key(self) -> str:
        """This instance's outputs in the pipeline's caches: weights, precision, input size, identity."""
        size = f"{self.preprocessor.shortest_edge}x{self.preprocessor.longest_edge}"
        return f"{type(self).__name__}:{self.model_id}:{self.precision}:{size}:{id(self)}"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def describe(self) -> dict[str, str]:
        """Which weights, where, in which precision (``precision``: the dtype matrix products run in:
        ``float32``, ``bfloat16``, ``float16``, or ``int8`` for dynamically quantised linears)."""
        return {"model": self.model_id, "device": str(self.device), "dtype": self.precision}

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the pixel values fed to the model (float32 on the fast path, which autocasts)."""
        return self._input_dtype

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        fast_path: bool = True,
        quantize_int8: bool = False,
    ) -> GroundingDinoDetector:
        """Load from a Hub id (through the HF cache, honouring ``HF_HUB_OFFLINE``) or a local folder.

        Raises:
            ModelUnavailableError (a ``ValueError``): files missing from the folder, or not cached and
                not downloadable; the message names the files, the cache and the remedies.
        """
        folder = resolve_model_folder(name_or_path)
        # Imported here so that a missing model is reported before the slow transformers import.
        from transformers import AutoTokenizer

        # The fast path casts linear/conv weights itself and keeps norms in float32.
        load_dtype = torch.float32 if fast_path else dtype
        model = load_grounding_dino(folder, dtype=load_dtype, model_type=cls.model_type)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        preprocessor = None
        config_file = folder / "preprocessor_config.json"
        if config_file.is_file():
            preprocessor = DetectorPreprocessor.from_config_dict(json.loads(config_file.read_text()))
        is_local = Path(name_or_path).expanduser().is_dir()
        model_id = str(folder.resolve()) if is_local else name_or_path
        return cls(
            model,
            tokenizer,
            model_id=model_id,
            device=device,
            dtype=dtype,
            preprocessor=preprocessor,
            fast_path=fast_path,
            quantize_int8=quantize_int8,
        )

    def captions(self, classes: Sequence[str]) -> list[TokenizedCaption]:
        """The caption chunks ``detect`` runs for ``classes`` (one model pass each)."""
        return tokenize_classes(self.tokenizer, classes, max_tokens=self.max_text_len)

    @torch.inference_mode()
    def detect(self, image: np.ndarray, classes: Sequence[str]) -> RawDetections:
        """All queries' boxes and class scores for ``classes`` on ``image``.

        Args:
            image: H x W x 3 uint8 RGB.
            classes: class names (from ``parse_prompt``); C of them. Captions longer than the model's
                ``max_text_len`` are split into several passes whose queries are concatenated.

        Returns:
            RawDetections with Q = num_queries x passes rows and C class columns.
        """
        chunks = self.captions(classes)
        pixel_values, pixel_mask = self.preprocessor(image, device=self.device, dtype=self.dtype)
        height, width = image.shape[:2]
        scale = torch.tensor([width, height, width, height], device=self.device, dtype=torch.float32)

        boxes, class_scores, box_scores = [], [], []
        for chunk in chunks:
            outputs = self.model(
                pixel_values=pixel_values,
                pixel_mask=pixel_mask,
                input_ids=chunk.input_ids.to(self.device),
                attention_mask=chunk.attention_mask.to(self.device),
                token_type_ids=chunk.token_type_ids.to(self.device),
            )
            chunk_scores, chunk_box_scores = scores_from_logits(
                outputs.logits[0], chunk.token_class, len(chunk.class_indexes)
            )
            full_scores = torch.zeros(chunk_scores.shape[0], len(classes), device=self.device)  # Q x C
            full_scores[:, torch.from_numpy(chunk.class_indexes).to(self.device)] = chunk_scores
            cx, cy, w, h = outputs.pred_boxes[0].float().unbind(-1)  # each Q, normalised cxcywh
            xyxy = torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)  # Q x 4
            boxes.append(xyxy * scale)
            class_scores.append(full_scores)
            box_scores.append(chunk_box_scores)

        return RawDetections(
            boxes=torch.cat(boxes).cpu().numpy().astype(np.float32),
            class_scores=torch.cat(class_scores).cpu().numpy().astype(np.float32),
            box_scores=torch.cat(box_scores).cpu().numpy().astype(np.float32),
            image_size=(int(height), int(width)),
        )


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
