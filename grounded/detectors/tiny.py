"""An untrained, tiny Grounding DINO + WordPiece tokenizer, built in-process for tests and offline demos.

It has the real architecture (Swin backbone, BERT text encoder, deformable encoder/decoder,
transformers' ``GroundingDinoForObjectDetection``) at toy sizes, with random weights from a fixed seed.
Its boxes and labels mean nothing; it exists so the whole pipeline runs with no download.
"""

from __future__ import annotations

import string

import torch

from grounded.detectors.grounding_dino import GroundingDinoDetector
from grounded.detectors.preprocess import DetectorPreprocessor

__all__ = ["TINY_MAX_TEXT_LEN", "build_tiny_detector", "tiny_vocab"]

# Small on purpose: an ordinary 6-10 class prompt already needs two caption chunks, so the
# long-prompt split/merge path runs in every test that uses this model.
TINY_MAX_TEXT_LEN = 32

# Added to every token logit of the untrained model (see build_tiny_detector).
_LOGIT_SHIFT = -2.0

# Grounding DINO's text masks hard-code BERT-uncased ids for [CLS], [SEP], "." and "?"
# (``SPECIAL_TOKENS`` in modeling_grounding_dino.py); [PAD] = 0 and [UNK] = 100 as in BERT.
_FIXED_IDS = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]", 1012: ".", 1029: "?"}

_COCO_WORDS = """person bicycle car motorcycle airplane bus train truck boat traffic light fire hydrant stop
sign parking meter bench bird cat dog horse sheep cow elephant bear zebra giraffe backpack umbrella handbag
tie suitcase frisbee skis snowboard sports ball kite baseball bat glove skateboard surfboard tennis racket
bottle wine glass cup fork knife spoon bowl banana apple sandwich orange broccoli carrot hot pizza donut
cake chair couch potted plant bed dining table toilet tv laptop mouse remote keyboard cell phone microwave
oven toaster sink refrigerator book clock vase scissors teddy hair drier toothbrush a an the of and with
thing object animal face hand tree building sky road grass water window door wheel box shirt""".split()


def tiny_vocab() -> list[str]:
    """WordPiece vocabulary (index = token id) that tokenises any lowercase ASCII word.

    Special tokens sit at BERT's ids; then punctuation, digits, letters, ``##`` continuation pieces for
    every letter/digit (so an unseen word splits into characters) and common COCO class words.
    """
    pieces = list(
        dict.fromkeys(
            [c for c in string.punctuation if c not in ".?"]
            + list(string.digits + string.ascii_lowercase)
            + [f"##{c}" for c in string.digits + string.ascii_lowercase]
            + _COCO_WORDS
        )
    )
    size = max(max(_FIXED_IDS) + 1, len(_FIXED_IDS) + len(pieces))
    vocab: list[str] = []
    free = iter(pieces)
    for index in range(size):
        vocab.append(_FIXED_IDS.get(index) or next(free, None) or f"[unused{index}]")
    return vocab


def _tiny_tokenizer():
    from transformers import BertTokenizer

    vocab = {token: index for index, token in enumerate(tiny_vocab())}
    return BertTokenizer(vocab=vocab, do_lower_case=True)


def _tiny_config(vocab_size: int):
    from transformers import BertConfig, GroundingDinoConfig, SwinConfig

    backbone = SwinConfig(
        embed_dim=8,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 1, 1],
        window_size=4,
        patch_size=4,
        out_features=["stage2", "stage3", "stage4"],
    )
    text = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=TINY_MAX_TEXT_LEN,
    )
    return GroundingDinoConfig(
        backbone_config=backbone,
        text_config=text,
        use_timm_backbone=False,
        d_model=32,  # GroupNorm(32, d_model) in the input projections needs a multiple of 32
        encoder_layers=1,
        decoder_layers=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_n_points=2,
        decoder_n_points=2,
        num_queries=30,
        max_text_len=TINY_MAX_TEXT_LEN,
        num_feature_levels=4,
    )


def build_tiny_detector(
    seed: int = 0,
    *,
    device: torch.device | str | None = None,
    fast_path: bool = True,
    dtype: torch.dtype | None = None,
    quantize_int8: bool = False,
) -> GroundingDinoDetector:
    """A randomly initialised tiny Grounding DINO detector; same ``seed`` -> same weights and outputs.

    Builds in well under a second (after the transformers import) and detects on a 640 x 480 image in
    tens of milliseconds on CPU: images are resized to a 256 px shortest edge (427 px longest) instead
    of 800/1333. ``model_id`` says the model is untrained. ``fast_path``, ``dtype`` and
    ``quantize_int8`` as in ``GroundingDinoDetector`` (weights are drawn in float32 first, so the
    seed gives the same model).
    """
    from transformers import GroundingDinoForObjectDetection

    tokenizer = _tiny_tokenizer()
    config = _tiny_config(len(tokenizer))
    with torch.random.fork_rng():  # seed locally; the caller's RNG streams are left untouched
        torch.manual_seed(seed)
        model = GroundingDinoForObjectDetection(config)
        with torch.no_grad():
            # Test-only scaffolding, not a claim of quality. Random init makes the query/token dot
            # products ~N(0, 32): nearly every sigmoid score would be ~0 or ~1. Shrink the decoder's
            # output norm (logits ~ N(0, 1.1^2)) and shift every logit by _LOGIT_SHIFT through the two
            # LayerNorm biases along the all-ones direction (LayerNorm outputs are orthogonal to it,
            # so logit = 0.2 * <h, t> + _LOGIT_SHIFT exactly): default thresholds then keep some
            # boxes and drop others.
            direction = torch.ones(config.d_model) / config.d_model**0.5
            model.model.decoder.layer_norm.weight.fill_(0.2)
            model.model.decoder.layer_norm.bias.copy_(direction * (-_LOGIT_SHIFT) ** 0.5)
            text_norm = model.model.encoder.layers[-1].text_enhancer_layer.layer_norm_after
            text_norm.bias.copy_(direction * -((-_LOGIT_SHIFT) ** 0.5))
            # transformers zero-inits the last box-delta layer (boxes = fixed anchor grid); small
            # random weights give varied box sizes (the tensor is shared by all decoder layers).
            model.bbox_embed[0].layers[-1].weight.normal_(std=0.05)
    return GroundingDinoDetector(
        model,
        tokenizer,
        model_id=f"tiny-random-seed{seed} (untrained)",
        device=device,
        dtype=dtype,
        preprocessor=DetectorPreprocessor(shortest_edge=256, longest_edge=427),
        fast_path=fast_path,
        quantize_int8=quantize_int8,
        untrained=True,
    )
