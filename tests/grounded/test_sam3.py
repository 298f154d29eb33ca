"""SAM 3 as a detector: parity with transformers' own pipeline (one and several classes, exemplar
boxes), one class per instance, the caches (a new prompt skips the vision encoder, new thresholds run
no model), ``sam: none`` and re-segmentation with a SAM, folders whose config.json says ``sam3``."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import skimage.data
import torch

from benchmarks.sam3_reference import reference_instances
from grounded.config import PIPELINE_PRESETS, SAM_PRESETS, DetectorSpec, load_config
from grounded.detectors.base import ExemplarBoxes
from grounded.detectors.registry import BuildOptions, build_detector, detector_kind
from grounded.detectors.tiny_sam3 import build_tiny_sam3, save_tiny_sam3
from grounded.pipeline import GroundedSAM

THRESHOLD = 0.25
# Parity settings: transformers' post-processing keeps every query above the threshold (no NMS, no cap).
PARITY = {"box_threshold": THRESHOLD, "text_threshold": 0.0, "nms_iou": 1.0, "max_detections": 1000}


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.ascontiguousarray(skimage.data.chelsea()[::3, ::3])  # 100 x 151 x 3: not square


@pytest.fixture(scope="module")
def pipe() -> GroundedSAM:
    return GroundedSAM.from_config("tiny-random-sam3", device="cpu")


def reference(pipe: GroundedSAM, image: np.ndarray, phrase: str, **boxes) -> dict:
    detector = pipe.detector
    size = (image.shape[0], image.shape[1])
    return reference_instances(detector.model, detector.tokenizer, detector.pixel_values(image), size, phrase,
                               threshold=THRESHOLD, **boxes)


def assert_same_instances(ours, theirs: dict, image_size: tuple[int, int]) -> None:
    """Our detections (any order) == transformers' result (query order): scores, clipped boxes, masks."""
    order = np.argsort(-theirs["scores"].numpy(), kind="stable")
    height, width = image_size
    boxes = theirs["boxes"].numpy()[order].clip(0, [width, height, width, height])  # we clip to the image
    assert len(ours) == len(order) > 0
    np.testing.assert_allclose(ours.confidence, theirs["scores"].numpy()[order], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours.xyxy, boxes, atol=1e-3)
    mismatched = (np.asarray(ours.mask) != theirs["masks"].numpy()[order].astype(bool)).sum()
    assert mismatched == 0
    assert 0 < np.asarray(ours.mask).sum() < ours.mask.size  # masks that are neither empty nor full


def test_one_class_equals_transformers_post_processing(pipe, image):
    ours = pipe.predict(image, "cat", **PARITY)
    theirs = reference(pipe, image, "cat")
    assert 0 < len(theirs["scores"]) < 20, "the threshold keeps some of the 20 queries and drops others"
    assert_same_instances(ours, theirs, image.shape[:2])
    assert ours.mask.shape == (len(ours), *image.shape[:2])
    np.testing.assert_array_equal(ours.data["mask_score"], ours.confidence)


def test_several_classes_give_each_instance_one_class_and_equal_per_class_results(pipe, image):
    classes = ["cat", "dog", "hot dog"]
    ours = pipe.predict(image, "cat. dog. hot dog", **PARITY)
    assert set(ours.data["class_name"]) <= set(classes)
    np.testing.assert_array_equal(np.asarray(classes)[ours.class_id], ours.data["class_name"])
    for class_id, phrase in enumerate(classes):
        mine = ours[ours.class_id == class_id]
        assert_same_instances(mine, reference(pipe, image, phrase), image.shape[:2])


def test_exemplar_boxes_equal_transformers_geometric_prompts(pipe, image):
    positive, negative = [[10.0, 20.0, 70.0, 90.0]], [[90.0, 5.0, 150.0, 60.0]]
    ours = pipe.predict(image, "cat", positive_boxes=positive, negative_boxes=negative, **PARITY)
    theirs = reference(pipe, image, "cat", boxes=positive + negative, labels=[1, 0])
    assert_same_instances(ours, theirs, image.shape[:2])
    plain = pipe.predict(image, "cat", **PARITY)
    assert len(plain) != len(ours) or not np.allclose(plain.confidence, ours.confidence)  # boxes matter


def test_a_new_prompt_skips_the_vision_encoder_and_new_thresholds_run_no_model(image, monkeypatch):
    pipe = GroundedSAM.from_config("tiny-random-sam3", device="cpu")
    vision_runs = []
    encoder = pipe.detector.model.vision_encoder
    original = encoder.forward
    monkeypatch.setattr(encoder, "forward", lambda *a, **k: vision_runs.append(1) or original(*a, **k))
    model_runs = []
    decoder = pipe.detector.model.detr_decoder
    original_decoder = decoder.forward
    monkeypatch.setattr(decoder, "forward", lambda *a, **k: model_runs.append(1) or original_decoder(*a, **k))

    first = pipe.predict(image, "cat. dog")
    assert (len(vision_runs), len(model_runs)) == (1, 1)  # two classes, one batched decoder pass
    pipe.predict(image, "bird")
    pipe.predict(image, "cat", positive_boxes=[[10, 10, 60, 60]])
    assert len(vision_runs) == 1 and len(model_runs) == 3
    assert (pipe.stats.detector_encoder_calls, pipe.stats.detector_calls) == (1, 3)
    lower = pipe.predict(image, "cat. dog", box_threshold=0.15, nms_iou=1.0)
    assert len(vision_runs) == 1 and len(model_runs) == 3  # thresholds: no model at all
    assert len(lower) > len(first)
    other = image[::-1].copy()
    pipe.predict(other, "cat")
    assert len(vision_runs) == 2  # new image content: the encoder runs again


def test_sam_none_loads_no_sam_and_a_sam_preset_resegments_the_boxes(pipe, image):
    assert pipe.sam is None and pipe.describe()["sam"]["model_type"] == "none"
    config = dataclasses.replace(load_config("tiny-random-sam3"), sam=SAM_PRESETS["tiny-random"])
    with_sam = GroundedSAM.from_config(config, device="cpu")
    ours = with_sam.predict(image, "cat. dog")
    alone = pipe.predict(image, "cat. dog")
    np.testing.assert_array_equal(ours.xyxy, alone.xyxy)  # same detector boxes
    assert with_sam.stats.sam_encoder_calls == 1 and with_sam.stats.sam_decoder_calls == 1
    masks, _ = with_sam.segment_boxes(image, ours.xyxy)
    np.testing.assert_array_equal(ours.mask, masks)  # the masks are SAM's, from those boxes
    with pytest.raises(ValueError, match="sam: none"):
        pipe.refine(image, alone, 0, [[10, 10]], [1])


def test_sam_none_with_a_detector_that_predicts_no_masks_is_refused():
    config = dataclasses.replace(load_config("tiny-random"), sam=SAM_PRESETS["none"])
    with pytest.raises(ValueError, match="predicts no masks"):
        GroundedSAM.from_config(config, device="cpu")


def test_exemplars_are_refused_clearly_by_detectors_that_cannot_use_them(image):
    dino = GroundedSAM.from_config("tiny-random", device="cpu")
    with pytest.raises(ValueError, match="cannot use exemplar boxes"):
        dino.predict(image, "cat", positive_boxes=[[0, 0, 10, 10]])


@pytest.mark.parametrize(
    ("positive", "message"),
    [([[10, 10, 5, 20]], "empty or outside"), ([[400, 400, 500, 500]], "empty or outside"),
     ([[1, 2, 3]], "K x 4"), ([[1, 2, float("nan"), 4]], "finite")],
)
def test_bad_exemplar_boxes_are_refused_with_what_to_send(pipe, image, positive, message):
    with pytest.raises(ValueError, match=message):
        pipe.predict(image, "cat", positive_boxes=positive)


def test_a_folder_whose_config_says_sam3_loads_as_sam3(tmp_path, image, pipe):
    folder = save_tiny_sam3(tmp_path / "sam3")
    spec = DetectorSpec(str(folder))
    assert detector_kind(spec) == "sam3"
    detector = build_detector(spec, BuildOptions(device=torch.device("cpu"), dtype=torch.float32))
    config = dataclasses.replace(load_config("tiny-random-sam3"), detector=spec)
    loaded = GroundedSAM(detector, None, config=config)
    assert not loaded.is_untrained  # a folder of weights, not the in-process random model
    ours, theirs = loaded.predict(image, "cat. dog"), pipe.predict(image, "cat. dog")
    np.testing.assert_allclose(ours.xyxy, theirs.xyxy, atol=1e-4)  # same seed: same weights
    np.testing.assert_array_equal(ours.mask, theirs.mask)


def test_sam3_presets_and_nms_and_cap_apply_as_for_other_detectors(pipe, image):
    preset = PIPELINE_PRESETS["sam3"]
    assert preset.detector.model == "facebook/sam3" and not preset.sam.enabled and not preset.untrained
    capped = pipe.predict(image, "cat. dog", box_threshold=0.15, nms_iou=1.0, max_detections=3)
    assert len(capped) == 3
    everything = pipe.predict(image, "cat. dog", box_threshold=0.15, nms_iou=1.0)
    suppressed = pipe.predict(image, "cat. dog", box_threshold=0.15, nms_iou=0.5)
    assert len(suppressed) < len(everything)  # the random model's boxes overlap: NMS removes some


def test_only_kept_instances_are_upsampled(pipe, image, monkeypatch):
    sizes = []
    interpolate = torch.nn.functional.interpolate

    def spy(tensor, *args, **kwargs):
        if kwargs.get("size") == image.shape[:2]:
            sizes.append(tensor.shape[1])
        return interpolate(tensor, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "interpolate", spy)
    fresh = GroundedSAM.from_config("tiny-random-sam3", device="cpu")
    detections = fresh.predict(image, "cat. dog", box_threshold=0.15, nms_iou=1.0, max_detections=3)
    assert sum(sizes) == len(detections) == 3  # 3 masks upsampled, not all ~40 candidates


def test_exemplar_boxes_from_lists():
    boxes = ExemplarBoxes.from_lists([[1, 2, 3, 4]], [[5, 6, 7, 8], [0, 0, 2, 2]])
    assert boxes.labels.tolist() == [True, False, False]
    assert boxes.boxes.shape == (3, 4) and boxes.boxes.dtype == np.float32
    assert ExemplarBoxes.from_lists(None, []) is None


def test_build_tiny_sam3_is_deterministic(image):
    a, b = build_tiny_sam3(0), build_tiny_sam3(0)
    ra, rb = a.detect(image, ["cat"]), b.detect(image, ["cat"])
    np.testing.assert_array_equal(ra.box_scores, rb.box_scores)
    assert not np.array_equal(build_tiny_sam3(1).detect(image, ["cat"]).box_scores[:3], ra.box_scores[:3])


def test_bfloat16_sam3_gives_the_float32_instances_closely(pipe, image):
    half = GroundedSAM.from_config("tiny-random-sam3", device="cpu", dtype="bfloat16")
    assert half.describe()["detector"]["dtype"] == "bfloat16"
    ours = half.predict(image, "cat", box_threshold=0.15, nms_iou=1.0, max_detections=5,
                        positive_boxes=[[10, 20, 70, 90]])
    exact = pipe.predict(image, "cat", box_threshold=0.15, nms_iou=1.0, max_detections=5,
                         positive_boxes=[[10, 20, 70, 90]])
    assert len(ours) == len(exact) == 5
    np.testing.assert_allclose(np.sort(ours.confidence), np.sort(exact.confidence), atol=0.03)


def test_cached_features_hold_only_what_the_forward_reads_and_share_position_encodings(pipe, image):
    detector = pipe.detector
    first, second = detector.encode_image(image), detector.encode_image(image[::-1].copy())
    vision = detector.model.get_vision_features(pixel_values=detector.pixel_values(image))
    assert len(first.levels) == len(vision.fpn_hidden_states) - 1  # the dropped level is not stored
    for kept, full in zip(first.positions, vision.fpn_position_encoding, strict=False):
        torch.testing.assert_close(kept, full, rtol=0, atol=0)  # the shared encodings equal this image's
    assert all(a is b for a, b in zip(first.positions, second.positions, strict=True))
    assert first.nbytes() == sum(t.numel() * 4 for t in vision.fpn_hidden_states[:-1])


def test_a_yaml_config_selects_sam3_with_sam_none(tmp_path, image):
    path = tmp_path / "mine.yaml"
    path.write_text("preset: tiny-random\ndetector: tiny-random-sam3\nsam: none\nbox_threshold: 0.2\n")
    config = load_config(path)
    assert not config.sam.enabled and config.detector.model == "tiny-random-sam3"
    yaml_pipe = GroundedSAM.from_config(path, device="cpu")
    assert yaml_pipe.sam is None and len(yaml_pipe.predict(image, "cat")) > 0
