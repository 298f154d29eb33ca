"""annotate: shape/dtype, no mutation, class colours stable and equal to class_color, empty input."""

from __future__ import annotations

import numpy as np
import pytest
import supervision as sv

from grounded.io.annotate import annotate, class_color, detection_labels

H, W = 120, 160


def _rgb(hex_colour: str) -> list[int]:
    return [int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)]


def _detections(class_ids=(0, 2), *, with_mask: bool = True) -> sv.Detections:
    masks = np.zeros((2, H, W), bool)
    masks[0, 30:90, 10:70] = True
    masks[1, 40:110, 90:150] = True
    return sv.Detections(
        xyxy=np.array([[10, 30, 70, 90], [90, 40, 150, 110]], np.float32),
        mask=masks if with_mask else None,
        confidence=np.array([0.874, 0.5], np.float32),
        class_id=np.array(class_ids),
        data={"class_name": np.array(["dog", "cat"])},
    )


def _image() -> np.ndarray:
    return np.full((H, W, 3), 90, np.uint8)


def test_shape_dtype_and_input_untouched():
    image = _image()
    before = image.copy()
    out = annotate(image, _detections())
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(image, before)
    assert not np.shares_memory(out, image)
    assert (out[60, 40] != image[60, 40]).any()  # inside mask 0: tinted
    np.testing.assert_array_equal(out[5, 155], image[5, 155])  # far from everything: unchanged


def test_mask_colour_is_class_color_and_stable_per_class():
    image = _image()
    out = annotate(image, _detections(), opacity=1.0)
    assert out[80, 40].tolist() == _rgb(class_color(0))  # mask interior, below the label
    assert out[100, 120].tolist() == _rgb(class_color(2))
    # the same class id keeps its colour in another call, whatever its position in the detections
    swapped = annotate(image, _detections(class_ids=(2, 0)), opacity=1.0)
    assert swapped[80, 40].tolist() == _rgb(class_color(2))
    assert swapped[100, 120].tolist() == _rgb(class_color(0))
    assert class_color(0) != class_color(2) and class_color(3) == class_color(3)
    half = annotate(image, _detections(), opacity=0.5)[80, 40].astype(int)
    expected = (np.array(_rgb(class_color(0))) + 90) / 2
    assert np.abs(half - expected).max() <= 1  # blended half way


def test_boxes_and_labels_without_masks():
    image = _image()
    out = annotate(image, _detections(with_mask=False))
    assert out[89, 40].tolist() == _rgb(class_color(0))  # bottom edge of box 0
    np.testing.assert_array_equal(out[60, 40], image[60, 40])  # interior untouched: no mask
    assert (out[20:30, 10:40] != image[20:30, 10:40]).any()  # label above box 0
    assert detection_labels(_detections()) == ["dog 0.87", "cat 0.50"]


def test_empty_detections_return_a_copy():
    image = _image()
    out = annotate(image, sv.Detections.empty())
    np.testing.assert_array_equal(out, image)
    assert out is not image and not np.shares_memory(out, image)


def test_clear_errors():
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        annotate(np.zeros((H, W), np.uint8), _detections())
    with pytest.raises(ValueError, match="masks are"):
        annotate(np.zeros((H + 1, W, 3), np.uint8), _detections())
    with pytest.raises(ValueError, match="opacity"):
        annotate(_image(), _detections(), opacity=2.0)
