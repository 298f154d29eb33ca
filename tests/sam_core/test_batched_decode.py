"""B prompts decode in ONE call, equal to B single calls, without B copies of the image embedding."""

from __future__ import annotations

import torch

BOXES_XYXY = torch.tensor(
    [[10.0, 10.0, 60.0, 70.0], [0.0, 5.0, 100.0, 50.0], [50.0, 30.0, 119.0, 89.0], [5.0, 60.0, 40.0, 88.0]]
    * 2
)  # 8 boxes, original-image pixels


def _boxes(predictor):
    return predictor.transform.apply_boxes_torch(BOXES_XYXY, (90, 120))  # 8 x 4 input frame


def test_batched_boxes_equal_single_calls(predictor) -> None:
    boxes = _boxes(predictor)
    points = predictor.transform.apply_coords_torch(torch.tensor([[[30.0, 40.0]]]), (90, 120)).expand(
        8, -1, -1
    )
    labels = torch.ones(8, 1, dtype=torch.int)
    for kwargs in ({}, {"point_coords": points, "point_labels": labels}):
        masks, iou, low_res = predictor.predict_torch(
            kwargs.get("point_coords"), kwargs.get("point_labels"), boxes, return_logits=True
        )
        assert low_res.shape == (8, 3, 32, 32) and masks.shape == (8, 3, 90, 120)
        for i in range(len(boxes)):
            one = {k: v[i : i + 1] for k, v in kwargs.items()}
            iou_i, low_i = predictor.predict_low_res_torch(
                one.get("point_coords"), one.get("point_labels"), boxes[i : i + 1]
            )
            assert (low_i[0] - low_res[i]).abs().max() <= 1e-5
            assert (iou_i[0] - iou[i]).abs().max() <= 1e-5
        last = {k: v[-1:] for k, v in kwargs.items()}
        m_last, _, _ = predictor.predict_torch(
            last.get("point_coords"), last.get("point_labels"), boxes[-1:], return_logits=True
        )
        assert (m_last[0] - masks[-1]).abs().max() <= 1e-4  # full-size logits too


def test_decoder_never_copies_the_image_embedding_per_prompt(predictor, monkeypatch) -> None:
    decoder = predictor.model.mask_decoder
    seen: dict[str, tuple[int, ...]] = {}

    def record(name):
        def hook(module, args):
            seen[name] = tuple(args[0].shape)

        return hook

    handles = [
        decoder.transformer.register_forward_pre_hook(record("transformer image input")),
        decoder.transformer.layers[0].cross_attn_token_to_image.k_proj.register_forward_pre_hook(
            record("first token->image keys")
        ),
    ]

    def forbidden(*args, **kwargs):
        raise AssertionError("repeat_interleave copies the image embedding per prompt")

    monkeypatch.setattr(torch, "repeat_interleave", forbidden)
    monkeypatch.setattr(torch.Tensor, "repeat_interleave", forbidden)
    try:
        _, _, low_res = predictor.predict_torch(None, None, _boxes(predictor))
    finally:
        for handle in handles:
            handle.remove()
    assert low_res.shape[0] == 8
    # 8 prompts, yet the image enters the decoder once and its keys are projected once.
    assert seen["transformer image input"] == (1, 32, 8, 8)
    assert seen["first token->image keys"] == (1, 64, 32)


def test_shared_mask_prompt_broadcasts(predictor) -> None:
    boxes = _boxes(predictor)[:3]
    mask = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    _, iou, low_res = predictor.predict_torch(None, None, boxes, mask_input=mask)
    _, iou_rep, low_rep = predictor.predict_torch(
        None, None, boxes, mask_input=mask.expand(3, -1, -1, -1).clone()
    )
    assert (low_res - low_rep).abs().max() <= 1e-5 and (iou - iou_rep).abs().max() <= 1e-5
