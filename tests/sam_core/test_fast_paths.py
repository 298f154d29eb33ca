"""sam_core.fast: the opt-in speed-ups keep the embedding close to float32 and refuse bad combinations.

(``compile=True`` is not exercised here: inductor's first compile takes minutes on a small CPU; the
benchmark's ``ours-compile`` variant measures it.)
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

from sam_core import SamPredictor, build_sam
from sam_core.fast import enable_fast_path, quantize_encoder_int8


def _embedding(sam, image: np.ndarray) -> torch.Tensor:
    predictor = SamPredictor(sam)
    predictor.set_image(image)
    return predictor.features.float().flatten()


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=0))


def test_int8_encoder_stays_close_to_float32(tiny, image) -> None:
    reference = _embedding(tiny.sam, image)
    sam = enable_fast_path(build_sam(tiny.config, tiny.folder, device="cpu"), quantize_int8=True)
    linears = [m for m in sam.image_encoder.modules() if isinstance(m, DynamicLinear)]
    assert len(linears) == 4 * tiny.config.encoder_depth  # qkv, proj, lin1, lin2 per block
    assert all(type(m) is nn.Linear for m in sam.mask_decoder.modules() if isinstance(m, nn.Linear))
    got = _embedding(sam, image)
    assert 0.99 < _cosine(got, reference) < 1.0  # quantised: close, but really changed
    # Masks from the int8 embedding agree with float32 on almost every pixel.
    boxes = np.array([[10, 12, 80, 70]], dtype=np.float32)
    masks = []
    for model in (tiny.sam, sam):
        predictor = SamPredictor(model)
        predictor.set_image(image)
        masks.append(predictor.predict(box=boxes[0], multimask_output=False)[0])
    assert (masks[0] == masks[1]).mean() > 0.95


def test_int8_refuses_reduced_precision(tiny) -> None:
    sam = build_sam(tiny.config, tiny.folder, device="cpu", dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="float32"):
        quantize_encoder_int8(sam)


def test_dtype_option_converts_and_keeps_constants_float32(tiny, image) -> None:
    reference = _embedding(tiny.sam, image)
    sam = enable_fast_path(build_sam(tiny.config, tiny.folder, device="cpu"), dtype=torch.bfloat16)
    assert sam.dtype == torch.bfloat16 and sam.pixel_mean.dtype == torch.float32
    assert sam.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix.dtype == torch.float32
    assert _cosine(_embedding(sam, image), reference) > 0.99
    with pytest.raises(ValueError, match="dtype"):
        enable_fast_path(sam, dtype=torch.int8)


def test_global_attention_in_row_blocks_equals_one_block(tiny, image, monkeypatch) -> None:
    import sam_core.image_encoder as image_encoder

    whole = _embedding(tiny.sam, image)
    calls = []
    sdpa = image_encoder.F.scaled_dot_product_attention
    # 2 heads x 8 x 64 bias entries per query row of the global 8 x 8 grid: 3 rows per block
    monkeypatch.setattr(image_encoder, "_BIAS_ELEMENTS", 3 * 2 * 8 * 64)

    def spy(q, *args, **kwargs):
        calls.append(tuple(q.shape))
        return sdpa(q, *args, **kwargs)

    monkeypatch.setattr(image_encoder.F, "scaled_dot_product_attention", spy)
    blocks = _embedding(tiny.sam, image)
    # windowed block: 4 windows of 4 x 4 in one call; global block: rows 3 + 3 + 2 of the 8 x 8 grid
    assert calls == [(4, 2, 16, 16), (1, 2, 24, 16), (1, 2, 24, 16), (1, 2, 16, 16)]
    torch.testing.assert_close(blocks, whole, atol=1e-5, rtol=1e-5)
