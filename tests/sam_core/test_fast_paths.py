"""sam_core.fast: the opt-in speed-ups keep the embedding close to float32 and refuse bad combinations.

(``compile=True`` is not exercised here: inductor's first compile takes minutes on a small CPU; the
benchmark's ``ours-compile`` variant measures it.)
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
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


def test_decoder_groups_with_per_prompt_masks_equal_single_calls(predictor) -> None:
    # 9 prompts = groups of 4, 4 and 1; a per-prompt dense (mask) input is split with them.
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(9, 2, generator=gen) * 80
    boxes = predictor.transform.apply_boxes_torch(torch.cat([xy, xy + 30], dim=1), (90, 120))
    mask_input = torch.randn(9, 1, 32, 32, generator=gen)
    iou, low_res = predictor.predict_low_res_torch(None, None, boxes, mask_input=mask_input)
    for i in (0, 4, 8):
        one = slice(i, i + 1)
        iou_i, low_i = predictor.predict_low_res_torch(None, None, boxes[one], mask_input=mask_input[one])
        torch.testing.assert_close(low_i[0], low_res[i], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(iou_i[0], iou[i], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("input_size", "original_size"), [((96, 128), (90, 120)), ((128, 43), (300, 100))])
def test_postprocess_upsamples_only_the_kept_region_exactly(tiny, input_size, original_size) -> None:
    low_res = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    full = F.interpolate(low_res, (128, 128), mode="bilinear", align_corners=False)  # Meta's two steps
    expected = F.interpolate(
        full[..., : input_size[0], : input_size[1]], original_size, mode="bilinear", align_corners=False
    )
    torch.testing.assert_close(tiny.sam.postprocess_masks(low_res, input_size, original_size), expected)


@pytest.mark.parametrize("dtype, cosine", [(torch.float32, 0.999999), (torch.bfloat16, 0.999)])
def test_prepacked_encoder_equals_the_plain_one(tiny, image, dtype, cosine) -> None:
    from sam_core.prepack import PackedLinear, prepack_available

    if not prepack_available():
        pytest.skip("this torch build has no oneDNN prepacked linear")
    reference = _embedding(build_sam(tiny.config, tiny.folder, device="cpu", dtype=dtype), image)
    sam = enable_fast_path(build_sam(tiny.config, tiny.folder, device="cpu"), dtype=dtype, prepack=True)
    packed = [m for m in sam.image_encoder.modules() if isinstance(m, PackedLinear)]
    assert len(packed) == 4 * tiny.config.encoder_depth  # qkv, proj, lin1 (+GELU), lin2 per block
    assert sum(m.activation == "gelu" for m in packed) == tiny.config.encoder_depth
    got = _embedding(sam, image)
    assert _cosine(got, reference) > cosine
    if dtype == torch.float32:
        torch.testing.assert_close(got, reference, rtol=1e-4, atol=1e-4)


def test_prepacked_linear_refuses_another_dtype() -> None:
    from sam_core.prepack import PackedLinear, prepack_available

    if not prepack_available():
        pytest.skip("this torch build has no oneDNN prepacked linear")
    layer = PackedLinear(nn.Linear(8, 4))
    with pytest.raises(RuntimeError, match="packed in torch.float32"):
        layer(torch.zeros(2, 8, dtype=torch.bfloat16))


def test_prepack_leaves_other_encoders_alone(tiny) -> None:
    from sam_core.prepack import prepack_encoder

    assert prepack_encoder(nn.Sequential(nn.Linear(4, 4))) == 0


def test_prepacked_model_state_dict_round_trips(tiny) -> None:
    from sam_core.prepack import prepack_available

    if not prepack_available():
        pytest.skip("this torch build has no oneDNN prepacked linear")
    plain = build_sam(tiny.config, tiny.folder, device="cpu")
    packed = enable_fast_path(build_sam(tiny.config, tiny.folder, device="cpu"), prepack=True)
    saved = packed.state_dict()
    assert saved.keys() == plain.state_dict().keys()
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(saved[key], value, rtol=0, atol=0)
    # and a packed model loads a plain checkpoint (re-packing its linears)
    other = enable_fast_path(build_sam(tiny.config, None, device="cpu", seed=5), prepack=True)
    other.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, tiny.config.image_size, tiny.config.image_size)
    with torch.no_grad():
        torch.testing.assert_close(other.image_encoder(x), plain.image_encoder(x), rtol=1e-4, atol=1e-4)
