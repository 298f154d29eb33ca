"""GroundedSAM end to end on the untrained tiny preset: shapes, labels, caching, refine, batch."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from spies import network_attempts
from supervision.detection.compact_mask import CompactMask

from grounded import GroundedSAM, load_config
from grounded.config import PipelineConfig

PROMPT = "cat. dog. traffic light"
LOW = {"box_threshold": 0.0, "text_threshold": 0.0}  # keep every query of the untrained detector


@pytest.fixture(scope="module")
def pipe() -> GroundedSAM:
    return GroundedSAM.from_config("tiny-random")


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(96, 144, 3), dtype=np.uint8)


def fresh(pipe: GroundedSAM) -> GroundedSAM:
    """Same models, empty caches and counters."""
    return GroundedSAM(pipe.detector, pipe.sam, config=pipe.config)


def test_tiny_preset_is_marked_untrained(pipe):
    assert pipe.is_untrained
    assert "untrained" in pipe.detector.model_id


def test_predict_returns_typed_detections_aligned_to_the_image(pipe, image):
    det = pipe.predict(image, PROMPT, **LOW, max_detections=7)
    classes = pipe.classes_of(PROMPT)
    assert classes == ["cat", "dog", "traffic light"]
    assert 1 <= len(det) <= 7
    assert det.mask.shape == (len(det), 96, 144) and det.mask.dtype == bool
    assert det.xyxy.shape == (len(det), 4)
    assert (det.xyxy[:, [0, 2]] >= 0).all() and (det.xyxy[:, [0, 2]] <= 144).all()
    assert (det.xyxy[:, [1, 3]] >= 0).all() and (det.xyxy[:, [1, 3]] <= 96).all()
    assert (det.xyxy[:, 2] >= det.xyxy[:, 0]).all() and (det.xyxy[:, 3] >= det.xyxy[:, 1]).all()
    # exactly one class from the user's list per box, consistent id and name
    names = det.data["class_name"]
    assert set(names) <= set(classes)
    assert [classes[i] for i in det.class_id] == list(names)
    assert det.data["mask_score"].shape == (len(det),)
    assert det.confidence.shape == (len(det),)


def test_masks_equal_sam_predictor_on_the_same_boxes(pipe, image):
    from sam_core import SamPredictor

    det = pipe.predict(image, PROMPT, **LOW, max_detections=5)
    predictor = SamPredictor(pipe.sam)
    predictor.set_image(image)
    for k in range(len(det)):
        masks, scores, _ = predictor.predict(box=det.xyxy[k], multimask_output=False)
        assert (masks[0] == det.mask[k]).mean() >= 0.999
        assert abs(float(scores[0]) - float(det.data["mask_score"][k])) < 1e-4


def test_thresholds_filter_monotonically(pipe, image):
    loose = pipe.predict(image, PROMPT, **LOW, nms_iou=1.0)
    strict = pipe.predict(
        image, PROMPT, box_threshold=float(np.median(loose.confidence)), text_threshold=0.0, nms_iou=1.0
    )
    assert 0 < len(strict) < len(loose)
    assert (strict.confidence > float(np.median(loose.confidence))).all()


def test_no_detections_gives_an_empty_result_with_all_fields(pipe, image):
    det = pipe.predict(image, PROMPT, box_threshold=1.0)
    assert len(det) == 0
    assert det.mask.shape == (0, 96, 144)
    assert det.data["class_name"].shape == (0,) and det.data["mask_score"].shape == (0,)


def test_rethreshold_runs_no_model_and_new_prompt_skips_the_sam_encoder(pipe, image):
    p = fresh(pipe)
    first = p.predict(image, PROMPT, **LOW, max_detections=10)
    assert (p.stats.detector_calls, p.stats.sam_encoder_calls, p.stats.sam_decoder_calls) == (1, 1, 1)

    # stricter thresholds select a subset of boxes already decoded: no model at all (not even a layer
    # runs: every module of both models counts its forward calls; the 0.1 s target is in benchmarks/)
    forwards: list[str] = []
    hooks = [
        module.register_forward_pre_hook(lambda module, args: forwards.append(type(module).__name__))
        for module in [*p.detector.model.modules(), *p.sam.modules()]
    ]
    try:
        again = p.predict(
            image, PROMPT, box_threshold=float(np.median(first.confidence)), text_threshold=0.0,
            max_detections=10,
        )
    finally:
        for hook in hooks:
            hook.remove()
    assert (p.stats.detector_calls, p.stats.sam_encoder_calls, p.stats.sam_decoder_calls) == (1, 1, 1)
    assert forwards == []
    assert len(again) <= len(first)

    # same pixels through another input kind hit the same cache
    p.predict(Image.fromarray(image), PROMPT, **LOW, max_detections=10)
    assert p.stats.detector_calls == 1 and p.stats.sam_encoder_calls == 1

    # a new prompt runs the detector again but not the SAM image encoder
    p.predict(image, "person. bicycle", **LOW)
    assert p.stats.detector_calls == 2 and p.stats.sam_encoder_calls == 1

    # a different image runs both
    p.predict(image[::-1].copy(), PROMPT, **LOW)
    assert p.stats.detector_calls == 3 and p.stats.sam_encoder_calls == 2


def test_rethreshold_reuses_full_size_masks_bit_for_bit(pipe, image, monkeypatch):
    p = fresh(pipe)
    first = p.predict(image, PROMPT, **LOW, max_detections=10, nms_iou=1.0)
    assert len(first) >= 4 and first.mask.any()
    upsampled: list[int] = []
    original = p.sam.postprocess_masks
    monkeypatch.setattr(p.sam, "postprocess_masks", lambda m, *a: upsampled.append(len(m)) or original(m, *a))
    cut = float(np.sort(first.confidence)[len(first) // 2])
    again = p.predict(image, PROMPT, box_threshold=cut, text_threshold=0.0, max_detections=10, nms_iou=1.0)
    assert upsampled == []  # every mask came from the cache, none was upsampled again
    keep = first.confidence > cut
    np.testing.assert_array_equal(again.xyxy, first.xyxy[keep])
    np.testing.assert_array_equal(again.mask, first.mask[keep])
    np.testing.assert_array_equal(again.data["mask_score"], first.data["mask_score"][keep])
    # a cold pipeline on the same boxes gives the same masks
    cold_masks, _ = fresh(pipe).segment_boxes(image, again.xyxy)
    np.testing.assert_array_equal(cold_masks, again.mask)


def test_predict_compact_gives_the_same_masks_without_building_them_all(pipe, image, monkeypatch):
    p = fresh(pipe)
    dense = p.predict(image, PROMPT, **LOW, max_detections=8)
    assert len(dense) > 1
    built = []
    original = np.zeros

    def zeros(shape, *args, **kwargs):
        built.append(tuple(shape) if isinstance(shape, tuple) else (shape,))
        return original(shape, *args, **kwargs)

    monkeypatch.setattr(np, "zeros", zeros)
    detections = fresh(pipe).predict_compact(image, PROMPT, **LOW, max_detections=8)
    monkeypatch.undo()
    assert isinstance(detections.mask, CompactMask) and len(detections) == len(dense)
    np.testing.assert_array_equal(detections.mask.to_dense(), dense.mask)
    np.testing.assert_array_equal(detections.xyxy, dense.xyxy)
    assert not [shape for shape in built if len(shape) == 3 and shape[0] > 1], "no N x H x W array"


def test_all_boxes_of_an_image_go_through_one_decoder_call(pipe, image):
    p = fresh(pipe)
    det = p.predict(image, PROMPT, **LOW, max_detections=20, nms_iou=1.0)
    assert len(det) > 1
    assert p.stats.sam_decoder_calls == 1


def test_input_kinds_agree(pipe, image, tmp_path):
    path = tmp_path / "img.png"
    Image.fromarray(image).save(path)
    reference = pipe.predict(image, PROMPT, **LOW, max_detections=5)
    for source in (str(path), path, path.read_bytes(), Image.fromarray(image)):
        det = pipe.predict(source, PROMPT, **LOW, max_detections=5)
        np.testing.assert_array_equal(det.xyxy, reference.xyxy)
        np.testing.assert_array_equal(det.mask, reference.mask)


def test_rgba_and_16bit_inputs_give_aligned_masks(pipe):
    rgba = np.zeros((40, 60, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    det = pipe.predict(rgba, "cat", **LOW, max_detections=3)
    assert det.mask.shape[1:] == (40, 60)
    buffer = io.BytesIO()
    Image.fromarray(np.arange(50 * 70, dtype=np.uint16).reshape(50, 70) * 10).save(buffer, format="PNG")
    det = pipe.predict(buffer.getvalue(), "cat", **LOW, max_detections=3)
    assert det.mask.shape[1:] == (50, 70)


def test_predict_batch_equals_single_predictions(pipe, image):
    other = image[:, ::-1].copy()
    batch = pipe.predict_batch([image, other], PROMPT, **LOW, max_detections=4)
    for single_image, det in zip([image, other], batch, strict=True):
        single = pipe.predict(single_image, PROMPT, **LOW, max_detections=4)
        np.testing.assert_array_equal(det.xyxy, single.xyxy)
        np.testing.assert_array_equal(det.mask, single.mask)


def test_segment_boxes_matches_predict_masks(pipe, image):
    det = pipe.predict(image, PROMPT, **LOW, max_detections=4)
    masks, scores = pipe.segment_boxes(image, det.xyxy)
    np.testing.assert_array_equal(masks, det.mask)
    np.testing.assert_allclose(scores, det.data["mask_score"], atol=1e-6)
    empty_masks, empty_scores = pipe.segment_boxes(image, np.zeros((0, 4)))
    assert empty_masks.shape == (0, 96, 144) and empty_scores.shape == (0,)


def test_refine_redecodes_one_instance_from_the_cached_embedding(pipe, image):
    p = fresh(pipe)
    det = p.predict(image, PROMPT, **LOW, max_detections=3)
    encoder_calls = p.stats.sam_encoder_calls
    x0, y0, x1, y1 = det.xyxy[0]
    point = [[(x0 + x1) / 2, (y0 + y1) / 2]]
    refined = p.refine(image, det, 0, point, [0])
    assert p.stats.sam_encoder_calls == encoder_calls
    assert refined.mask.shape == det.mask.shape
    np.testing.assert_array_equal(refined.mask[1:], det.mask[1:])
    assert (
        not np.array_equal(refined.mask[0], det.mask[0])
        or refined.data["mask_score"][0] != det.data["mask_score"][0]
    )
    # the input detections are not modified
    np.testing.assert_array_equal(det.mask, p.predict(image, PROMPT, **LOW, max_detections=3).mask)
    with pytest.raises(ValueError, match="out of range"):
        p.refine(image, det, 99, point, [1])
    with pytest.raises(ValueError, match="point labels"):
        p.refine(image, det, 0, point, [1, 0])


@pytest.mark.parametrize(
    "kwargs, message",
    [({"box_threshold": 1.5}, "box_threshold"), ({"text_threshold": -0.1}, "text_threshold")],
)
def test_bad_thresholds_are_refused(pipe, image, kwargs, message):
    with pytest.raises(ValueError, match=message):
        pipe.predict(image, PROMPT, **kwargs)


@pytest.mark.parametrize("prompt", ["", "   ", " . , "])
def test_empty_prompt_is_refused(pipe, image, prompt):
    with pytest.raises(ValueError, match="empty"):
        pipe.predict(image, prompt)


def test_cache_is_bounded_by_bytes(pipe):
    small = GroundedSAM(
        pipe.detector,
        pipe.sam,
        config=PipelineConfig(
            **{**{f: getattr(pipe.config, f) for f in ("detector", "sam", "seed")}, "cache_bytes": 2_000_000}
        ),
    )
    rng = np.random.default_rng(1)
    for _ in range(6):
        small.predict(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), PROMPT, **LOW)
    assert small._cache.nbytes <= 2_000_000


def test_real_preset_without_weights_fails_fast_with_an_actionable_message(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"), raising=False)
    attempts = network_attempts(monkeypatch)
    with pytest.raises((ValueError, RuntimeError, OSError)) as info:
        GroundedSAM.from_config(load_config("default"), device="cpu")
    assert attempts == []  # offline means offline: failed without a lookup, a connection or a retry
    message = str(info.value)
    assert "HF_HUB_OFFLINE" in message
    assert "grounding-dino-tiny" in message or "sam-vit-base" in message


def test_presets_pick_the_fast_dtype_and_tiny_random_stays_float32():
    from grounded.config import PIPELINE_PRESETS

    assert PIPELINE_PRESETS["default"].dtype == "auto" and PIPELINE_PRESETS["quality"].dtype == "auto"
    assert PIPELINE_PRESETS["tiny-random"].dtype == "float32"


def test_describe_names_each_model_with_its_resolved_device_and_dtype(pipe):
    described = pipe.describe()
    assert described == {
        "preset": "tiny-random",
        "untrained": True,
        "detector": {"model": pipe.detector.model_id, "device": "cpu", "dtype": "float32"},
        "sam": {"model_type": "tiny", "checkpoint": None, "device": "cpu", "dtype": "float32"},
    }


def test_bfloat16_pipeline_gives_typed_results_close_to_float32(pipe, image):
    import torch

    bf16 = GroundedSAM.from_config("tiny-random", dtype="bfloat16")
    assert next(bf16.sam.image_encoder.parameters()).dtype == torch.bfloat16
    described = bf16.describe()
    assert described["sam"]["dtype"] == "bfloat16" and described["detector"]["dtype"] == "bfloat16"
    det = bf16.predict(image, PROMPT, **LOW, max_detections=5)
    assert len(det) >= 1
    assert det.mask.dtype == bool and det.xyxy.dtype == np.float32 and det.confidence.dtype == np.float32
    # on the same boxes, bf16 masks agree with float32 ones on nearly every pixel
    fp32_masks, fp32_scores = fresh(pipe).segment_boxes(image, det.xyxy)
    bf16_masks, bf16_scores = bf16.segment_boxes(image, det.xyxy)
    assert (fp32_masks == bf16_masks).mean() >= 0.95
    np.testing.assert_allclose(bf16_scores, fp32_scores, atol=0.05)


def test_auto_dtype_is_decided_per_model_and_int8_is_an_opt_in_config(monkeypatch):
    import dataclasses

    import torch

    from grounded import models
    from grounded.config import PIPELINE_PRESETS
    from sam_core.device import NATIVE_BF16_ENV

    cpu = torch.device("cpu")
    auto = dataclasses.replace(PIPELINE_PRESETS["tiny-random"], dtype="auto")
    monkeypatch.setenv(NATIVE_BF16_ENV, "0")  # a CPU without native bf16: float32 for both
    assert models.model_dtypes(auto, cpu) == {"detector": torch.float32, "sam": torch.float32}
    monkeypatch.setenv(NATIVE_BF16_ENV, "1")
    monkeypatch.setattr(models, "AUTO_BF16", {"detector": False, "sam": True})
    assert models.model_dtypes(auto, cpu) == {"detector": torch.float32, "sam": torch.bfloat16}
    forced = dataclasses.replace(auto, dtype="bfloat16")  # an explicit dtype applies to both
    assert models.model_dtypes(forced, cpu) == {"detector": torch.bfloat16, "sam": torch.bfloat16}
    int8 = dataclasses.replace(auto, sam=dataclasses.replace(auto.sam, int8=True))
    assert models.model_dtypes(int8, cpu)["sam"] == torch.float32
    with pytest.raises(ValueError, match="int8 .* cannot be combined with dtype 'bfloat16'"):
        models.model_dtypes(dataclasses.replace(int8, dtype="bfloat16"), cpu)

    monkeypatch.setenv(NATIVE_BF16_ENV, "0")
    sam_int8 = dataclasses.replace(auto.sam, int8=True)
    both = dataclasses.replace(auto, sam=sam_int8, detector=dataclasses.replace(auto.detector, int8=True))
    pipe = GroundedSAM.from_config(both)
    assert pipe.describe()["sam"]["dtype"] == "int8" and pipe.describe()["detector"]["dtype"] == "int8"
    quantized = [m for m in pipe.sam.image_encoder.modules() if "quantized" in type(m).__module__]
    assert quantized, "the SAM encoder's linears are int8"


def test_the_pipeline_runs_a_sam2_model_like_sam1(pipe, image):
    """Grounding DINO boxes prompt a SAM 2 model through the same pipeline: one decoder call for all
    boxes, masks equal to SAM2ImagePredictor's on the same boxes, cached embedding for new thresholds."""
    from sam_core import SAM2ImagePredictor, build_sam

    sam2 = build_sam("sam2_test", device="cpu", seed=0)
    p = GroundedSAM(pipe.detector, sam2, config=pipe.config)
    det = p.predict(image, PROMPT, **LOW, max_detections=6, nms_iou=1.0)
    assert len(det) > 1 and p.stats.sam_decoder_calls == 1 and p.stats.sam_encoder_calls == 1
    predictor = SAM2ImagePredictor(sam2)
    predictor.set_image(image)
    masks, _, _ = predictor.predict(box=det.xyxy, multimask_output=False)  # N x 1 x H x W
    assert (masks[:, 0].astype(bool) == det.mask).mean() >= 0.999
    p.predict(image, PROMPT, box_threshold=0.1, text_threshold=0.1, max_detections=6)
    assert p.stats.sam_encoder_calls == 1 and p.describe()["sam"]["dtype"] == "float32"
