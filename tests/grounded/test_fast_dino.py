"""grounded.detectors.fast_path: each fast re-formulation equals transformers' module on identical inputs, the
swapped-in model equals the original, and the caches skip exactly the work they claim to."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from transformers import GroundingDinoForObjectDetection
from transformers.models.grounding_dino.modeling_grounding_dino import (
    GroundingDinoBiMultiHeadAttention,
    MultiScaleDeformableAttention,
)

import grounded.detectors.fast_feed_forward as dino_feed_forward
import grounded.detectors.fast_path as fast_dino
from grounded.detectors.fast_path import (
    FastMultiScaleDeformableAttention,
    clear_fast_path_caches,
    enable_dino_fast_path,
    fused_bi_attention_forward,
    is_fast_path_enabled,
    multi_scale_deformable_attention,
)
from grounded.detectors.grounding_dino import GroundingDinoDetector
from grounded.detectors.tiny import _tiny_config, build_tiny_detector

CLASSES = ["cat", "dog", "traffic light"]


def _reference_msda(value, shapes, locations, weights):
    spatial = torch.tensor(shapes)
    starts = torch.cat([spatial.new_zeros(1), spatial.prod(1).cumsum(0)[:-1]])
    return MultiScaleDeformableAttention()(value, spatial, shapes, starts, locations, weights, 64)


@pytest.mark.parametrize("chunk", [10_000, 7])  # 7: several query chunks, the last one partial
def test_deformable_attention_equals_transformers_grid_sample_loop(monkeypatch, chunk):
    monkeypatch.setattr(fast_dino, "_QUERY_CHUNK", chunk)
    gen = torch.Generator().manual_seed(0)
    shapes = [(9, 13), (5, 7), (3, 4), (1, 2)]  # non-square levels, one of width 2
    B, Q, H, D, P = 2, 23, 4, 8, 3
    value = torch.randn(B, sum(h * w for h, w in shapes), H, D, generator=gen)
    # Locations well outside [0, 1] too: corners off the map must contribute zero, as in grid_sample.
    locations = torch.rand(B, Q, H, len(shapes), P, 2, generator=gen) * 1.6 - 0.3
    weights = torch.rand(B, Q, H, len(shapes), P, generator=gen)
    expected = _reference_msda(value, shapes, locations, weights)
    got = multi_scale_deformable_attention(value, shapes, locations, weights)
    assert got.shape == (B, Q, H * D)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_deformable_attention_checks_the_shapes():
    with pytest.raises(ValueError, match="do not add up"):
        multi_scale_deformable_attention(
            torch.zeros(1, 10, 2, 4), [(3, 3)], torch.zeros(1, 5, 2, 1, 2, 2), torch.zeros(1, 5, 2, 1, 2)
        )


def test_fused_fusion_attention_equals_the_original():
    torch.manual_seed(0)
    config = _tiny_config(vocab_size=64)
    config.encoder_ffn_dim, config.encoder_attention_heads = 64, 8  # 4 fusion heads of width 8
    module = GroundingDinoBiMultiHeadAttention(config).eval()
    with torch.no_grad():
        for param in module.parameters():
            param.normal_(std=0.3)
    vision, text = torch.randn(2, 37, config.d_model), torch.randn(2, 6, config.d_model)
    vision_pad = torch.zeros(2, 37, dtype=torch.bool)
    vision_pad[1, 30:] = True  # padding pixels of the second image
    text_pad = torch.zeros(2, 6, dtype=torch.bool)
    text_pad[0, 4:] = True  # padding tokens of the first caption
    with torch.no_grad():
        (v_ref, va_ref), (t_ref, ta_ref) = module(vision, text, vision_pad, text_pad)
        fused = fused_bi_attention_forward(module, vision, text, vision_pad, text_pad)
    (v_out, va_out), (t_out, ta_out) = fused
    for got, ref in ((v_out, v_ref), (t_out, t_ref), (va_out, va_ref), (ta_out, ta_ref)):
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def pair():
    """An unmodified tiny Grounding DINO (random sampling offsets) and a fast-path deep copy."""
    detector = build_tiny_detector(0, fast_path=False)
    reference = detector.model
    with torch.no_grad():
        for module in reference.modules():
            if hasattr(module, "sampling_offsets"):
                module.sampling_offsets.weight.normal_(std=0.05)
    return reference, enable_dino_fast_path(copy.deepcopy(reference)), detector.tokenizer


def _inputs(tokenizer, seed=1, classes=CLASSES):
    gen = torch.Generator().manual_seed(seed)
    pixels = torch.randn(2, 3, 160, 200, generator=gen)
    mask = torch.ones(2, 160, 200, dtype=torch.long)
    mask[1, 120:, :] = 0  # the second image is padded
    text = tokenizer([" . ".join(classes) + " ."] * 2, return_tensors="pt")
    return {"pixel_values": pixels, "pixel_mask": mask, **text}


@pytest.mark.parametrize("ffn_chunk", [1024, 37])  # 37: the encoder feed-forward in many chunks
def test_fast_model_equals_transformers(pair, monkeypatch, ffn_chunk):
    monkeypatch.setattr(dino_feed_forward, "_FFN_CHUNK", ffn_chunk)
    reference, fast, tokenizer = pair
    inputs = _inputs(tokenizer)
    with torch.inference_mode():
        ref, got = reference(**inputs), fast(**inputs)
    torch.testing.assert_close(
        got.encoder_last_hidden_state_vision, ref.encoder_last_hidden_state_vision, atol=1e-4, rtol=1e-4
    )
    # Compare queries by their two-stage proposal (a near-tie may legitimately swap query order).
    for b in range(2):
        distance = torch.cdist(ref.init_reference_points[b], got.init_reference_points[b])
        order = distance.argmin(1)
        unique = (distance < 1e-5).sum(1) == 1
        assert unique.float().mean() > 0.8
        finite = torch.isfinite(ref.logits[b][unique])
        torch.testing.assert_close(
            got.logits[b][order][unique][finite], ref.logits[b][unique][finite], atol=1e-4, rtol=1e-4
        )
        boxes = got.pred_boxes[b][order][unique]
        torch.testing.assert_close(boxes, ref.pred_boxes[b][unique], atol=1e-4, rtol=0)


def test_feed_forward_in_chunks_equals_the_layer_math(monkeypatch):
    monkeypatch.setattr(dino_feed_forward, "_FFN_CHUNK", 5)
    gen = torch.Generator().manual_seed(3)
    fc1, fc2, norm = torch.nn.Linear(16, 64), torch.nn.Linear(64, 16), torch.nn.LayerNorm(16)
    x = torch.randn(2, 23, 16, generator=gen)  # 46 rows: 9 full chunks and a partial one
    with torch.inference_mode():
        for act in (torch.nn.ReLU(), torch.nn.GELU()):
            expected = norm(x + fc2(act(fc1(x))))
            got = fast_dino.feed_forward_in_chunks(x, fc1, act, fc2, norm)
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_fast_path_keeps_parameters_and_is_idempotent(pair):
    reference, fast, _ = pair
    assert is_fast_path_enabled(fast) and not is_fast_path_enabled(reference)
    assert fast.state_dict().keys() == reference.state_dict().keys()
    assert enable_dino_fast_path(fast) is fast
    with pytest.raises(ValueError, match="Grounding DINO"):
        enable_dino_fast_path(torch.nn.Linear(2, 2))


def test_fast_path_counts_what_it_patches_and_refuses_a_renamed_class(pair):
    reference, fast, _ = pair
    config = reference.config
    patched = [m for m in fast.modules() if isinstance(m, FastMultiScaleDeformableAttention)]
    assert len(patched) == config.encoder_layers + config.decoder_layers
    # a transformers release that renames a layer class: refused by name, nothing half-patched
    renamed = copy.deepcopy(reference)
    layer = renamed.model.encoder.layers[0].fusion_layer.attn
    layer.__class__ = type("GroundingDinoBiAttentionRenamed", (type(layer),), {})
    with pytest.raises(RuntimeError, match="renamed or restructured") as info:
        enable_dino_fast_path(renamed)
    assert "'BiMultiHeadAttention': " + str(config.encoder_layers - 1) in str(info.value)
    assert not is_fast_path_enabled(renamed)
    assert not any(isinstance(m, FastMultiScaleDeformableAttention) for m in renamed.modules())


def _count_calls(module: torch.nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_text_and_backbone_caches_skip_repeated_work(pair):
    reference, _, tokenizer = pair
    fast = enable_dino_fast_path(copy.deepcopy(reference))
    bert = _count_calls(fast.model.text_backbone.encoder)
    swin = _count_calls(fast.model.backbone.conv_encoder)
    inputs = _inputs(tokenizer)
    with torch.inference_mode():
        first = fast(**inputs)
        again = fast(**inputs)  # same caption, same image: neither BERT nor Swin runs
        assert (bert[0], swin[0]) == (1, 1)
        torch.testing.assert_close(again.logits, first.logits, atol=0, rtol=0)
        fast(**_inputs(tokenizer, classes=["bird"]))  # new caption, same image: BERT only
        assert (bert[0], swin[0]) == (2, 1)
        fast(**_inputs(tokenizer, seed=2))  # new image, old caption: Swin only
        assert (bert[0], swin[0]) == (2, 2)
        clear_fast_path_caches(fast)
        fast(**_inputs(tokenizer, seed=2))
        assert (bert[0], swin[0]) == (3, 3)
        with torch.no_grad():  # new weights invalidate the cached outputs
            fast.model.text_backbone.embeddings.word_embeddings.weight.mul_(1.5)
        fast(**_inputs(tokenizer, seed=2))
        assert bert[0] == 4
    with torch.enable_grad():  # gradients flow: caches are bypassed
        fast(**_inputs(tokenizer, seed=2))
    assert (bert[0], swin[0]) == (5, 4)


def test_detector_fast_path_matches_the_plain_detector():
    image = np.random.default_rng(0).integers(0, 256, size=(150, 220, 3), dtype=np.uint8)
    plain = build_tiny_detector(3, fast_path=False).detect(image, CLASSES)
    fast = build_tiny_detector(3).detect(image, CLASSES)
    np.testing.assert_allclose(fast.class_scores, plain.class_scores, atol=1e-4)
    np.testing.assert_allclose(fast.boxes, plain.boxes, atol=1e-2)  # pixels


def test_int8_and_bf16_options_run_and_stay_close(pair):
    reference, _, tokenizer = pair
    inputs = _inputs(tokenizer)
    int8_model = enable_dino_fast_path(copy.deepcopy(reference), quantize_int8=True)
    bf16_model = enable_dino_fast_path(copy.deepcopy(reference), dtype=torch.bfloat16)
    with torch.inference_mode():
        ref, int8, bf16 = reference(**inputs), int8_model(**inputs), bf16_model(**inputs)
    assert bf16_model.model.encoder.layers[0].deformable_layer.fc1.weight.dtype == torch.bfloat16
    assert bf16_model.model.encoder.layers[0].deformable_layer.final_layer_norm.weight.dtype == torch.float32
    for out in (int8, bf16):
        # Encoder features stay close; reduced precision may reorder near-tied proposals downstream.
        vision = out.encoder_last_hidden_state_vision.float().flatten()
        ref_vision = ref.encoder_last_hidden_state_vision.flatten()
        cosine = torch.nn.functional.cosine_similarity(vision, ref_vision, dim=0)
        assert cosine > 0.99
    with pytest.raises(ValueError, match="quantize_int8"):
        enable_dino_fast_path(copy.deepcopy(reference), dtype=torch.bfloat16, quantize_int8=True)


def test_detector_rejects_int8_without_fast_path():
    model = GroundingDinoForObjectDetection(_tiny_config(vocab_size=64))
    with pytest.raises(ValueError, match="fast_path"):
        GroundingDinoDetector(model, tokenizer=None, fast_path=False, quantize_int8=True)


def test_gradients_use_transformers_modules_and_match(pair):
    reference, fast, tokenizer = pair
    inputs = _inputs(tokenizer)
    grads = []
    for model in (reference, fast):
        model.zero_grad()
        out = model(**inputs)
        out.encoder_last_hidden_state_vision.square().mean().backward()
        grads.append(model.model.encoder.layers[0].deformable_layer.self_attn.sampling_offsets.weight.grad)
    assert grads[1] is not None and grads[1].abs().sum() > 0
    torch.testing.assert_close(grads[1], grads[0], atol=1e-5, rtol=1e-3)
