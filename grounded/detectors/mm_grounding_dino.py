"""MM-Grounding-DINO and LLMDet (transformers' ``MMGroundingDinoForObjectDetection``) as a box detector.

OpenMMLab's MM-Grounding-DINO re-trains Grounding DINO's architecture; LLMDet fine-tunes it with a
language model's supervision and ships inference weights in the same format. In transformers both run
through ``GroundingDinoModel.forward``; what differs from Grounding DINO is the contrastive class head
(a learned scalar ``bias`` added to every query-token logit) and that the class heads of the decoder
layers may be separate modules (``decoder_cls_embed_share``). Logits stay sigmoid scores per token, so
prompt chunking, per-class scores and thresholds are exactly Grounding DINO's
(``GroundingDinoDetector``), and the fast path applies unchanged: the classes it patches
(``MMGroundingDino{MultiscaleDeformableAttention,BiMultiHeadAttention,DeformableLayer}``) are
transformers' generated copies of the Grounding DINO ones, and the class head it does not touch.
"""

from __future__ import annotations

from typing import ClassVar

from grounded.detectors.grounding_dino import GroundingDinoDetector

__all__ = ["MMGroundingDinoDetector"]


class MMGroundingDinoDetector(GroundingDinoDetector):
    """``GroundingDinoDetector`` for checkpoints whose ``config.json`` says ``mm-grounding-dino``.

    ``from_pretrained("openmmlab-community/mm_grounding_dino_tiny_o365v1_goldg_v3det")`` or
    ``from_pretrained("iSEE-Laboratory/llmdet_tiny")`` (Hub ids through the one Hub policy) or a folder.
    """

    model_type: ClassVar[str] = "mm-grounding-dino"
