"""Every detector kind behind the one seam: MM-Grounding-DINO parity with transformers, its fast path, the
registry, and the pipeline's rules (chunking, thresholds, one class per box, NMS, cap, caching) for
tiny Grounding DINO, tiny MM-Grounding-DINO and a tiny IDEA-layout file alike."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import skimage.data
import torch
from detector_kinds import save_tiny_mm, tiny_mm_model, write_idea_files
from transformers.models.grounding_dino.image_processing_pil_grounding_dino import (
    GroundingDinoImageProcessorPil,
)
from transformers.models.grounding_dino.processing_grounding_dino import GroundingDinoProcessor

from grounded.config import PIPELINE_PRESETS, DetectorSpec
from grounded.detectors.base import OpenVocabularyDetector
from grounded.detectors.fast_path import enable_dino_fast_path
from grounded.detectors.loading import ModelUnavailableError
from grounded.detectors.mm_grounding_dino import MMGroundingDinoDetector
from grounded.detectors.preprocess import DetectorPreprocessor
from grounded.detectors.prompt import build_caption
from grounded.detectors.registry import BuildOptions, build_detector, detector_kind
from grounded.detectors.scoring import select_detections
from grounded.detectors.tiny import _tiny_tokenizer
from grounded.pipeline import GroundedSAM
from sam_core import build_sam

CLASSES = ["cat", "dog", "traffic light"]
# Twelve classes: more than one caption chunk at the tiny models' 32-token text limit.
LONG = [
    "cat",
    "dog",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "sports ball",
    "baseball bat",
    "tennis racket",
    "wine glass",
    "potted plant",
    "dining table",
]
CPU = BuildOptions(device=torch.device("cpu"), dtype=torch.float32)
SMALL = DetectorPreprocessor(shortest_edge=256, longest_edge=427)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cat() -> np.ndarray:
    return skimage.data.chelsea()[::2, ::2].copy()  # 150 x 226 x 3


@pytest.fixture(scope="module")
def mm_folder(tmp_path_factory):
    return save_tiny_mm(tmp_path_factory.mktemp("tiny-mm"))


@pytest.fixture(scope="module")
def idea_files(tmp_path_factory):
    return write_idea_files(tmp_path_factory.mktemp("tiny-idea"))


@pytest.fixture(scope="module", params=["grounding-dino", "mm-grounding-dino", "idea-grounding-dino"])
def kind_and_detector(request, mm_folder, idea_files):
    specs = {
        "grounding-dino": DetectorSpec("tiny-random"),
        "mm-grounding-dino": DetectorSpec(str(mm_folder)),
        "idea-grounding-dino": DetectorSpec(
            str(idea_files.checkpoint),
            tokenizer=str(idea_files.tokenizer),
            config_file=str(idea_files.config_file),
        ),
    }
    detector = build_detector(specs[request.param], CPU)
    detector.preprocessor = SMALL  # IDEA's loader uses the released 800/1333 size; keep the tests fast
    return request.param, detector


# ---------------------------------------------------------------- MM-Grounding-DINO


def test_mm_detections_equal_transformers_post_processing(mm_folder, cat):
    detector = build_detector(DetectorSpec(str(mm_folder)), CPU)
    assert type(detector) is MMGroundingDinoDetector and detector.preprocessor == SMALL
    reference_model = tiny_mm_model(0)  # the same weights, transformers' modules unchanged
    encoded = detector.tokenizer([build_caption(CLASSES)], return_tensors="pt")
    pixel_values, pixel_mask = detector.preprocessor(cat)
    with torch.inference_mode():
        outputs = reference_model(pixel_values=pixel_values, pixel_mask=pixel_mask, **encoded)
    processor = GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessorPil(), tokenizer=detector.tokenizer
    )
    height, width = cat.shape[:2]
    (reference,) = processor.post_process_grounded_object_detection(
        outputs,
        input_ids=encoded["input_ids"],
        threshold=0.3,
        text_threshold=0.0,
        target_sizes=[(height, width)],
    )
    raw = detector.detect(cat, CLASSES)
    ours = select_detections(
        raw, CLASSES, box_threshold=0.3, text_threshold=0.0, nms_iou=None, max_detections=1000
    )
    assert 0 < len(ours) < 30
    order = torch.argsort(reference["scores"], descending=True, stable=True)
    np.testing.assert_allclose(ours.confidence, reference["scores"][order].numpy(), atol=1e-5)
    ref_boxes = np.clip(reference["boxes"][order].numpy(), 0, [width, height, width, height])
    np.testing.assert_allclose(ours.xyxy, ref_boxes, atol=1e-3)
    # One class per box: the phrase holding the box's best phrase token.
    (chunk,) = detector.captions(CLASSES)
    phrase = np.flatnonzero(chunk.token_class >= 0)
    kept = np.flatnonzero(raw.box_scores > 0.3)[
        np.argsort(-raw.box_scores[raw.box_scores > 0.3], kind="stable")
    ]
    best = phrase[outputs.logits[0][kept][:, phrase].argmax(-1).numpy()]
    assert ours.class_id.tolist() == chunk.token_class[best].tolist()


@pytest.mark.parametrize("share", [True, False], ids=["shared-heads", "per-layer-heads"])
def test_fast_path_on_mm_grounding_dino_matches_transformers(share):
    reference = tiny_mm_model(3, share=share)
    model = enable_dino_fast_path(copy.deepcopy(reference))  # counts and patches the MMGroundingDino* layers
    image = np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    pixel_values, pixel_mask = SMALL(image)
    text = _tiny_tokenizer()(["cat . dog . traffic light ."], return_tensors="pt")
    with torch.inference_mode():
        expected = reference(pixel_values=pixel_values, pixel_mask=pixel_mask, **text)
        ours = model(pixel_values=pixel_values, pixel_mask=pixel_mask, **text)
    finite = expected.logits.isfinite()
    assert torch.equal(ours.logits.isfinite(), finite)
    assert (ours.logits[finite] - expected.logits[finite]).abs().max() <= 1e-4
    assert (ours.pred_boxes - expected.pred_boxes).abs().max() <= 1e-4


def test_a_grounding_dino_folder_is_not_loaded_as_mm(tmp_path):
    from grounded.detectors.tiny import build_tiny_detector

    tiny = build_tiny_detector(0)
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    assert detector_kind(DetectorSpec(str(tmp_path))) == "grounding-dino"
    with pytest.raises(ModelUnavailableError, match="'grounding-dino' checkpoint, not 'mm-grounding-dino'"):
        MMGroundingDinoDetector.from_pretrained(str(tmp_path))


# ---------------------------------------------------------------- every kind, the same rules


def test_each_kind_implements_the_interface(kind_and_detector):
    kind, detector = kind_and_detector
    assert isinstance(detector, OpenVocabularyDetector)
    assert detector.untrained == (kind == "grounding-dino")  # tiny-random; the saved files are "real"
    assert detector.describe() == {"model": detector.model_id, "device": "cpu", "dtype": "float32"}
    assert detector.cache_key != build_detector(DetectorSpec("tiny-random"), CPU).cache_key


def test_long_prompts_are_chunked_and_merged_for_every_kind(kind_and_detector, cat):
    _, detector = kind_and_detector
    chunks = detector.captions(LONG)
    assert len(chunks) >= 2
    raw = detector.detect(cat, LONG)
    queries = detector.model.config.num_queries
    rows_total = queries * len(chunks)
    assert raw.boxes.shape == (rows_total, 4) and raw.class_scores.shape == (rows_total, len(LONG))
    for index, chunk in enumerate(chunks):
        rows = slice(index * queries, (index + 1) * queries)
        alone = detector.detect(cat, [LONG[i] for i in chunk.class_indexes])
        np.testing.assert_allclose(raw.boxes[rows], alone.boxes, atol=1e-4)
        np.testing.assert_allclose(
            raw.class_scores[rows][:, chunk.class_indexes], alone.class_scores, atol=1e-6
        )
        others = np.setdiff1d(np.arange(len(LONG)), chunk.class_indexes)
        assert (raw.class_scores[rows][:, others] == 0).all()


def test_thresholds_nms_cap_and_cache_hold_for_every_kind(kind_and_detector, cat):
    _, detector = kind_and_detector
    config = PIPELINE_PRESETS["tiny-random"]
    pipe = GroundedSAM(detector, build_sam("tiny", seed=0), config=config)
    loose = pipe.predict(
        cat, LONG, box_threshold=0.05, text_threshold=0.05, nms_iou=None, max_detections=1000
    )
    calls = pipe.stats.detector_calls
    assert calls == 1 and len(loose) > 3
    strict = pipe.predict(
        cat, LONG, box_threshold=0.6, text_threshold=0.05, nms_iou=None, max_detections=1000
    )
    assert set(map(tuple, strict.xyxy.tolist())) <= set(map(tuple, loose.xyxy.tolist()))
    assert (strict.confidence > 0.6).all()
    suppressed = pipe.predict(
        cat, LONG, box_threshold=0.05, text_threshold=0.05, nms_iou=0.3, max_detections=1000
    )
    capped = pipe.predict(cat, LONG, box_threshold=0.05, text_threshold=0.05, nms_iou=0.3, max_detections=2)
    assert pipe.stats.detector_calls == calls  # new thresholds, NMS and caps ran no model
    assert len(suppressed) <= len(loose) and len(capped) == min(2, len(suppressed))
    np.testing.assert_array_equal(capped.xyxy, suppressed.xyxy[:2])
    # exactly one class per box, from the prompt; no two same-class boxes overlap beyond the NMS IoU
    assert suppressed.class_id.shape == (len(suppressed),)
    assert list(suppressed.data["class_name"]) == [LONG[i] for i in suppressed.class_id]
    for c in np.unique(suppressed.class_id):
        boxes = suppressed.xyxy[suppressed.class_id == c]
        iou = _iou(boxes, boxes)
        assert (iou[np.triu_indices(len(boxes), 1)] <= 0.3 + 1e-6).all()
    assert pipe.is_untrained  # the tiny SAM is random in every case


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])  # N x M x 2
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)  # N x M
    area = lambda x: np.prod(x[:, 2:] - x[:, :2], axis=-1)
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)
