"""GroundingDinoDetector: preprocessing and post-processing parity with transformers, chunked prompts,
the tiny untrained model, and loading (local folder, warm offline cache, cold cache fails fast)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from huggingface_hub import constants
from spies import connection_log_env, network_attempts, read_connection_log
from transformers.image_transforms import get_size_with_aspect_ratio
from transformers.models.grounding_dino.image_processing_pil_grounding_dino import (
    GroundingDinoImageProcessorPil,
)
from transformers.models.grounding_dino.processing_grounding_dino import GroundingDinoProcessor

from grounded.detectors.grounding_dino import GroundingDinoDetector, ModelUnavailableError, RawDetections
from grounded.detectors.preprocess import DetectorPreprocessor
from grounded.detectors.prompt import build_caption
from grounded.detectors.scoring import select_detections
from grounded.detectors.tiny import build_tiny_detector

CLASSES = ["cat", "dog", "traffic light"]
# One grey level after normalisation by the smallest ImageNet std (see grounded/detectors/preprocess.py).
PIXEL_TOLERANCE = 1.0 / (255 * 0.224) + 1e-6


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Run this module's model passes on one thread, restoring the setting afterwards.

    The test machine's 2 cores are shared with other jobs; OpenMP's 2-thread spin-waiting then makes
    each tiny-model pass 5-20x slower (0.14 s -> 1-4 s), which times the scheduler, not the code.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def detector() -> GroundingDinoDetector:
    return build_tiny_detector(0)


@pytest.fixture(scope="module")
def cat() -> np.ndarray:
    return skimage.data.chelsea()  # 300 x 451 x 3 uint8 photo


# ---------------------------------------------------------------- preprocessing


@pytest.mark.parametrize("image_name", ["chelsea", "astronaut", "wide", "large"])
def test_preprocessing_matches_transformers_pil_processor(image_name):
    images = {
        "chelsea": skimage.data.chelsea,  # upscaled to 800 x 1202
        "astronaut": skimage.data.astronaut,  # square, 512 -> 800
        "wide": lambda: np.concatenate([skimage.data.chelsea()] * 3, axis=1),  # capped by the 1333 edge
        "large": lambda: np.kron(skimage.data.coffee(), np.ones((3, 3, 1), np.uint8)),  # downscaled
    }
    image = images[image_name]()
    reference = GroundingDinoImageProcessorPil()(images=image, return_tensors="pt")
    pixel_values, pixel_mask = DetectorPreprocessor()(image)
    assert pixel_values.shape == reference["pixel_values"].shape
    assert torch.equal(pixel_mask, reference["pixel_mask"])
    diff = (pixel_values - reference["pixel_values"]).abs()
    assert diff.max() <= PIXEL_TOLERANCE
    assert diff.mean() < 0.01 * PIXEL_TOLERANCE  # off by a grey level on under 1% of values


def test_batch_padding_and_pixel_mask_match_transformers():
    images = [skimage.data.chelsea(), skimage.data.astronaut()]
    reference = GroundingDinoImageProcessorPil()(images=images, return_tensors="pt")
    pixel_values, pixel_mask = DetectorPreprocessor()(images)
    assert pixel_values.shape == reference["pixel_values"].shape == (2, 3, 800, 1202)
    assert torch.equal(pixel_mask, reference["pixel_mask"])
    assert pixel_mask[1, :, 800:].sum() == 0 and pixel_mask[1, :, :800].all()
    assert (pixel_values - reference["pixel_values"]).abs().max() <= PIXEL_TOLERANCE


def test_output_size_matches_transformers_formula():
    pre = DetectorPreprocessor()
    for height, width in [(300, 451), (800, 800), (480, 640), (1080, 1920), (5000, 300), (2, 3), (1, 1)]:
        assert pre.output_size(height, width) == get_size_with_aspect_ratio((height, width), 800, 1333)
    assert pre.output_size(1, 5000) == (1, 1333)  # transformers would give a 0-px height


@pytest.mark.parametrize(
    "image",
    [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 4), np.uint8), np.zeros((10, 10, 3), np.float32)],
)
def test_non_rgb_uint8_input_is_refused(detector, image):
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        detector.detect(image, CLASSES)


# ---------------------------------------------------------------- post-processing parity


def test_detections_equal_transformers_post_processing_on_the_same_logits(detector, cat):
    caption = build_caption(CLASSES)
    encoded = detector.tokenizer([caption], return_tensors="pt")
    pixel_values, pixel_mask = detector.preprocessor(cat)
    with torch.inference_mode():
        outputs = detector.model(pixel_values=pixel_values, pixel_mask=pixel_mask, **encoded)
    processor = GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessorPil(), tokenizer=detector.tokenizer
    )
    height, width = cat.shape[:2]
    (reference,) = processor.post_process_grounded_object_detection(
        outputs,
        input_ids=encoded["input_ids"],
        threshold=0.35,
        text_threshold=0.25,
        target_sizes=[(height, width)],
    )

    raw = detector.detect(cat, CLASSES)
    assert (
        raw.boxes.shape == (30, 4) and raw.class_scores.shape == (30, 3) and raw.image_size == (height, width)
    )
    # text_threshold 0: transformers keeps every box over the box threshold whatever its text
    ours = select_detections(
        raw, CLASSES, box_threshold=0.35, text_threshold=0.0, nms_iou=None, max_detections=1000
    )
    assert 0 < len(ours) < 30  # the tiny model keeps some queries and drops others
    order = torch.argsort(reference["scores"], descending=True, stable=True)
    ref_boxes = reference["boxes"][order].numpy()
    ref_boxes = np.clip(ref_boxes, 0, [width, height, width, height])  # we clip at select time
    np.testing.assert_allclose(ours.confidence, reference["scores"][order].numpy(), atol=1e-6)
    np.testing.assert_allclose(ours.xyxy, ref_boxes, atol=1e-3)

    # Our single label is the phrase holding the query's best phrase token; where transformers'
    # overall top token is a phrase token, that is the same phrase.
    logits = outputs.logits[0]  # Q x max_text_len
    (chunk,) = detector.captions(CLASSES)
    phrase_positions = np.flatnonzero(chunk.token_class >= 0)
    kept = np.flatnonzero(raw.box_scores > 0.35)[
        np.argsort(-raw.box_scores[raw.box_scores > 0.35], kind="stable")
    ]
    best_phrase_token = phrase_positions[logits[kept][:, phrase_positions].argmax(-1).numpy()]
    assert ours.class_id.tolist() == chunk.token_class[best_phrase_token].tolist()
    top_token = logits[kept].argmax(-1).numpy()
    on_phrase = chunk.token_class[top_token] >= 0
    assert on_phrase.sum() >= 3
    assert (ours.class_id[on_phrase] == chunk.token_class[top_token[on_phrase]]).all()

    # With the text threshold, transformers' label text may merge phrases ("cat. dog. traffic");
    # ours is exactly one class, and a word of it appears in transformers' label for that box.
    labelled = select_detections(raw, CLASSES, box_threshold=0.35, text_threshold=0.25, nms_iou=None)
    reference_labels = [reference["text_labels"][i] for i in order.tolist()]
    by_score = {round(float(s), 6): label for s, label in zip(ours.confidence, reference_labels, strict=True)}
    assert any(len(set(label.replace(".", " ").split()) & set(CLASSES)) > 1 for label in reference_labels)
    for score, name in zip(labelled.confidence, labelled.data["class_name"], strict=True):
        assert name in CLASSES
        assert set(name.split()) & set(by_score[round(float(score), 6)].replace(".", " ").split())


# ---------------------------------------------------------------- tiny model and chunking


def test_tiny_detector_is_small_deterministic_and_labelled_untrained(detector, cat, monkeypatch):
    attempts = network_attempts(monkeypatch)
    again = build_tiny_detector(0)
    assert attempts == []  # built in-process from code: no download, no Hub lookup
    assert "untrained" in again.model_id and again.model_id != build_tiny_detector(1).model_id
    # Cheap by construction, whatever the machine: ~0.2 M parameters (grounding-dino-tiny has 172 M),
    # and a 640 x 480 image reaches the model at 256 x 341 (a 256 px shortest edge instead of 800).
    assert sum(p.numel() for p in again.model.parameters()) < 1_000_000
    inputs: list[tuple[int, ...]] = []
    hook = again.model.register_forward_pre_hook(
        lambda module, args, kwargs: inputs.append(tuple(kwargs["pixel_values"].shape)), with_kwargs=True
    )
    image = np.random.default_rng(0).integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    try:
        first = again.detect(image, CLASSES)
    finally:
        hook.remove()
    assert inputs and all(shape[-2:] == (256, 341) for shape in inputs)
    second = detector.detect(image, CLASSES)
    np.testing.assert_array_equal(first.boxes, second.boxes)
    np.testing.assert_array_equal(first.class_scores, second.class_scores)
    other = build_tiny_detector(1).detect(image, CLASSES)
    assert not np.allclose(first.class_scores, other.class_scores)
    # non-degenerate outputs: boxes have area, scores spread across the default thresholds
    assert ((first.boxes[:, 2:] - first.boxes[:, :2]) > 1).all()
    assert (first.box_scores > 0.35).any() and (first.box_scores <= 0.35).any()
    assert (first.box_scores >= first.class_scores.max(axis=1) - 1e-6).all()


@pytest.mark.parametrize("shape", [(1, 1, 3), (64, 64, 3), (7, 900, 3)])
def test_tiny_and_odd_images_give_boxes_in_their_frame(detector, shape):
    image = np.full(shape, 128, np.uint8)
    raw = detector.detect(image, ["cat"])
    assert raw.image_size == shape[:2]
    det = select_detections(raw, ["cat"], box_threshold=0.0, text_threshold=0.0, nms_iou=None)
    assert len(det) == 30
    assert (det.xyxy[:, [2]] <= shape[1]).all() and (det.xyxy[:, [3]] <= shape[0]).all()


def test_long_prompt_runs_one_pass_per_chunk_and_merges_class_indexes(detector, cat):
    classes = [
        "person",
        "bicycle",
        "car",
        "motorcycle",
        "airplane",
        "bus",
        "train",
        "truck",
        "boat",
        "traffic light",
        "fire hydrant",
        "stop sign",
        "parking meter",
        "bench",
    ]
    chunks = detector.captions(classes)
    assert len(chunks) == 2
    raw = detector.detect(cat, classes)
    assert raw.class_scores.shape == (30 * len(chunks), len(classes))
    for k, chunk in enumerate(chunks):
        rows = slice(30 * k, 30 * (k + 1))
        outside = np.setdiff1d(np.arange(len(classes)), chunk.class_indexes)
        assert (raw.class_scores[rows][:, outside] == 0).all()
        assert (raw.class_scores[rows][:, chunk.class_indexes] > 0).all()
        # the same rows as detecting that chunk's classes alone: merged indexes point at the right class
        alone = detector.detect(cat, [classes[i] for i in chunk.class_indexes])
        np.testing.assert_allclose(
            raw.class_scores[rows][:, chunk.class_indexes], alone.class_scores, atol=1e-6
        )
        np.testing.assert_allclose(raw.boxes[rows], alone.boxes, atol=1e-4)
        np.testing.assert_allclose(raw.box_scores[rows], alone.box_scores, atol=1e-6)
    # labels come from both passes, each box's label is its best class, names follow the indexes
    det = select_detections(
        raw, classes, box_threshold=0.0, text_threshold=0.0, nms_iou=None, max_detections=1000
    )
    assert len(det) == raw.class_scores.shape[0]
    assert (det.class_id < len(chunks[0].class_indexes)).any() and (
        det.class_id >= len(chunks[0].class_indexes)
    ).any()
    assert (det.data["class_name"] == np.asarray(classes)[det.class_id]).all()
    order = np.argsort(-raw.box_scores, kind="stable")
    assert det.class_id.tolist() == raw.class_scores[order].argmax(axis=1).tolist()


def test_a_phrase_longer_than_the_text_limit_is_named(detector, cat):
    with pytest.raises(ValueError, match="'abcdefghijklmnopqrstuvwxyzabcdef' is 32 tokens long"):
        detector.detect(cat, ["cat", "abcdefghijklmnopqrstuvwxyzabcdef"])


def test_raw_detections_bytes(detector, cat):
    raw = detector.detect(cat, CLASSES)
    assert isinstance(raw, RawDetections)
    assert raw.nbytes() == 30 * 4 * 4 + 30 * 3 * 4 + 30 * 4


# ---------------------------------------------------------------- loading


@pytest.fixture(scope="module")
def saved_tiny(detector, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-gd")
    detector.model.save_pretrained(folder)
    detector.tokenizer.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(
        json.dumps({"size": {"shortest_edge": 256, "longest_edge": 427}})
    )
    return folder


def test_local_folder_loads_the_same_detector(detector, saved_tiny, cat):
    loaded = GroundingDinoDetector.from_pretrained(str(saved_tiny))
    assert loaded.preprocessor == detector.preprocessor
    assert loaded.model_id == str(saved_tiny.resolve())
    a, b = detector.detect(cat, CLASSES), loaded.detect(cat, CLASSES)
    np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-4)
    np.testing.assert_allclose(a.class_scores, b.class_scores, atol=1e-6)


def test_warm_cache_loads_offline(detector, saved_tiny, cat, tmp_path, monkeypatch):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--acme--tiny-gd"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for file in saved_tiny.iterdir():
        (snapshot / file.name).write_bytes(file.read_bytes())
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # any Hub request would now raise
    loaded = GroundingDinoDetector.from_pretrained("acme/tiny-gd")
    assert loaded.model_id == "acme/tiny-gd"
    np.testing.assert_allclose(
        loaded.detect(cat, CLASSES).class_scores, detector.detect(cat, CLASSES).class_scores, atol=1e-6
    )


def test_folder_missing_files_names_them(saved_tiny, tmp_path):
    (tmp_path / "config.json").write_bytes((saved_tiny / "config.json").read_bytes())
    with pytest.raises(
        ModelUnavailableError,
        match="lacks model.safetensors or model.safetensors.index.json, "
        "tokenizer_config.json, tokenizer.json or vocab.txt",
    ):
        GroundingDinoDetector.from_pretrained(str(tmp_path))


@pytest.mark.parametrize("network", ["offline", "unreachable"])
def test_cold_cache_fails_fast_with_an_actionable_message(tmp_path, network):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env["HF_HOME"] = str(tmp_path / "hf")
    if network == "offline":
        env["HF_HUB_OFFLINE"] = "1"
    else:
        env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # nothing listens: connection refused, like no network
    env = connection_log_env(env, tmp_path / "net")
    script = (
        "from grounded.detectors.grounding_dino import GroundingDinoDetector, ModelUnavailableError\n"
        "try:\n"
        "    GroundingDinoDetector.from_pretrained('IDEA-Research/grounding-dino-tiny')\n"
        "except ModelUnavailableError as error:\n"
        "    assert isinstance(error, ValueError)\n"
        "    print(error)\n"
    )
    repo_root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=repo_root, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    message = result.stdout
    # Fast without a stopwatch: the attempts the process made. Offline makes none. Unreachable makes
    # one round, not huggingface_hub's download retries with back-off (hf_hub_download: 6 HEADs over
    # ~25 s): the Hub metadata request plus huggingface_hub's own one-off user-agent request.
    attempts = read_connection_log(tmp_path / "net")
    connects = [line for line in attempts if line.startswith("connect ")]
    if network == "offline":
        assert attempts == []
    else:
        assert 1 <= len(connects) <= 2 and set(connects) == {"connect 127.0.0.1:9"}, attempts
    for needle in (
        "'IDEA-Research/grounding-dino-tiny'",
        "config.json",
        "model.safetensors",
        str(tmp_path / "hf" / "hub"),
        "HF_HUB_OFFLINE=1",
        "hf download IDEA-Research/grounding-dino-tiny",
        "local folder",
    ):
        assert needle in message
    assert ("HF_HUB_OFFLINE=1 is set" in message) == (network == "offline")
