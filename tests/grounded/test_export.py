"""RLE, the shared JSON schema, COCO datasets (loaded and evaluated by pycocotools) and mask PNGs."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import supervision as sv
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from grounded.io.export import (
    CocoBuilder,
    detections_from_dict,
    detections_to_dict,
    mask_to_rle,
    masks_to_rles,
    read_mask_png,
    rle_to_mask,
    save_mask_png,
)

RNG = np.random.default_rng(0)


def _detections(height: int = 37, width: int = 53, *, with_mask: bool = True) -> sv.Detections:
    masks = np.zeros((3, height, width), bool)
    masks[0, 2:10, 3:20] = True
    masks[1] = RNG.random((height, width)) > 0.7
    masks[2, 20:, 40:] = True
    return sv.Detections(
        xyxy=np.array([[3, 2, 20, 10], [0.25, 1.5, 52.75, 36.5], [40, 20, 53, 37]], np.float32),
        mask=masks if with_mask else None,
        confidence=RNG.random(3).astype(np.float32),
        class_id=np.array([0, 1, 0]),
        data={"class_name": np.array(["dog", "cat", "dog"]),
              "mask_score": RNG.random(3).astype(np.float32)},
    )


# ------------------------------------------------------------------------------ RLE


@pytest.mark.parametrize("shape", [(1, 1), (37, 53), (64, 1), (5, 128)])
def test_rle_round_trip_is_exact(shape):
    for mask in (RNG.random(shape) > 0.5, np.zeros(shape, bool), np.ones(shape, bool)):
        rle = mask_to_rle(mask)
        assert isinstance(rle["counts"], str) and rle["size"] == list(shape)
        json.dumps(rle)
        np.testing.assert_array_equal(rle_to_mask(rle), mask)
        reference = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        assert rle["counts"] == reference["counts"].decode() and mask_utils.area(reference) == mask.sum()
        np.testing.assert_array_equal(rle_to_mask({**rle, "counts": rle["counts"].encode()}), mask)


def test_masks_to_rles_matches_one_by_one():
    masks = RNG.random((5, 19, 23)) > 0.6
    rles = masks_to_rles(masks)
    assert [r["counts"] for r in rles] == [mask_to_rle(m)["counts"] for m in masks]
    np.testing.assert_array_equal(np.stack([rle_to_mask(r) for r in rles]), masks)
    assert masks_to_rles(np.zeros((0, 4, 4), bool)) == []
    with pytest.raises(ValueError, match="N x H x W"):
        masks_to_rles(masks[0])
    with pytest.raises(ValueError, match="one H x W mask"):
        mask_to_rle(masks)


def test_uncompressed_rle_is_column_major():
    # column-major runs of [[0, 1], [1, 1]]: one 0, then three 1s
    np.testing.assert_array_equal(rle_to_mask({"size": [2, 2], "counts": [1, 3]}), [[0, 1], [1, 1]])
    with pytest.raises(ValueError, match="not a COCO RLE"):
        rle_to_mask({"counts": "abc"})


# ------------------------------------------------------------------------------ JSON schema


def test_detections_to_dict_schema():
    det = _detections()
    d = detections_to_dict(det, image_size=(37, 53), classes=["dog", "cat"])
    assert json.loads(json.dumps(d)) == d  # plain JSON types only
    assert set(d) == {"image", "classes", "detections"}
    assert d["image"] == {"width": 53, "height": 37} and d["classes"] == ["dog", "cat"]
    row = d["detections"][1]
    assert set(row) == {"label", "class_id", "score", "mask_score", "box_xyxy", "area", "mask"}
    assert row["label"] == "cat" and row["class_id"] == 1
    assert type(row["score"]) is float and np.float32(row["score"]) == det.confidence[1]
    assert np.float32(row["mask_score"]) == det.data["mask_score"][1]
    assert row["box_xyxy"] == [0.25, 1.5, 52.75, 36.5]
    assert row["area"] == int(det.mask[1].sum()) and type(row["area"]) is int
    np.testing.assert_array_equal(rle_to_mask(row["mask"]), det.mask[1])
    assert detections_to_dict(det[:1], image_size=(37, 53), classes=["dog"])["detections"][0]["score"] == \
        float(str(det.confidence[0]))


def test_detections_to_dict_without_masks_or_mask_scores():
    det = _detections(with_mask=False)
    del det.data["mask_score"]
    rows = detections_to_dict(det, image_size=(37, 53), classes=["dog", "cat"])["detections"]
    assert [r["mask"] for r in rows] == [None] * 3 and [r["mask_score"] for r in rows] == [None] * 3
    assert rows[0]["area"] == 17 * 8  # box area
    with pytest.raises(ValueError, match="image_size"):
        detections_to_dict(_detections(), image_size=(40, 53), classes=["dog", "cat"])


def test_detections_dict_round_trip_is_exact():
    det = _detections()
    back = detections_from_dict(json.loads(json.dumps(
        detections_to_dict(det, image_size=(37, 53), classes=["dog", "cat"]))))
    np.testing.assert_array_equal(back.xyxy, det.xyxy)
    np.testing.assert_array_equal(back.mask, det.mask)
    np.testing.assert_array_equal(back.confidence, det.confidence)
    np.testing.assert_array_equal(back.class_id, det.class_id)
    np.testing.assert_array_equal(back.data["class_name"], det.data["class_name"])
    np.testing.assert_array_equal(back.data["mask_score"], det.data["mask_score"])
    assert back.xyxy.dtype == np.float32 and back.mask.dtype == bool


def test_empty_round_trip_and_bad_input():
    empty = detections_to_dict(sv.Detections.empty(), image_size=(4, 5), classes=["dog"])
    assert empty["detections"] == []
    back = detections_from_dict(empty)
    assert len(back) == 0 and back.xyxy.shape == (0, 4) and "class_name" in back.data
    with pytest.raises(ValueError, match="not a detections dict"):
        detections_from_dict({"detections": []})
    rows = detections_to_dict(_detections(), image_size=(37, 53), classes=["dog", "cat"])
    rows["detections"][0]["mask"] = None
    with pytest.raises(ValueError, match="every detection has a mask or none"):
        detections_from_dict(rows)


# ------------------------------------------------------------------------------ COCO


def test_coco_file_loads_and_evaluates_in_pycocotools(tmp_path):
    builder = CocoBuilder()
    assert builder.add_categories(["dog", "cat"]) == {"dog": 1, "cat": 2}
    first = builder.add_image("a.jpg", width=53, height=37)
    det_a = _detections()
    builder.add_detections(first, det_a)
    second = builder.add_image("b.jpg", width=30, height=20)
    mask = np.zeros((2, 20, 30), bool)
    mask[0, 5:15, 5:25] = True
    mask[1, 0:4, 0:4] = True
    det_b = sv.Detections(  # per-prompt class ids differ from image a: categories follow names
        xyxy=np.array([[5, 5, 25, 15], [-3, -2, 4, 4]], np.float32), mask=mask,
        confidence=np.array([0.9, 0.4], np.float32), class_id=np.array([0, 1]),
        data={"class_name": np.array(["cat", "bird"])},
    )
    builder.add_detections(second, det_b)
    path = builder.save(tmp_path / "out" / "coco.json")
    assert [p.name for p in path.parent.iterdir()] == ["coco.json"]  # no temporary file left behind

    coco = COCO(str(path))
    assert {c["name"]: c["id"] for c in coco.loadCats(coco.getCatIds())} == {"dog": 1, "cat": 2, "bird": 3}
    anns_a = coco.loadAnns(coco.getAnnIds(imgIds=[first]))
    assert [a["category_id"] for a in anns_a] == [1, 2, 1]
    for ann, m, box in zip(anns_a, det_a.mask, det_a.xyxy, strict=True):
        assert isinstance(ann["segmentation"]["counts"], str) and ann["iscrowd"] == 0
        np.testing.assert_array_equal(coco.annToMask(ann), m)
        assert ann["area"] == int(m.sum())
        assert ann["bbox"] == pytest.approx([box[0], box[1], box[2] - box[0], box[3] - box[1]], abs=0.005)
    anns_b = coco.loadAnns(coco.getAnnIds(imgIds=[second]))
    assert [a["category_id"] for a in anns_b] == [2, 3]
    assert anns_b[1]["bbox"] == [0.0, 0.0, 4.0, 4.0]  # box clipped to the image, then xywh
    assert anns_b[0]["score"] == pytest.approx(0.9)

    results = copy.deepcopy(json.loads(path.read_text())["annotations"])
    for kind in ("segm", "bbox"):
        evaluator = COCOeval(coco, coco.loadRes(copy.deepcopy(results)), kind)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
        assert evaluator.stats[0] == pytest.approx(1.0)  # predictions == ground truth


def test_coco_without_masks_and_errors(tmp_path):
    builder = CocoBuilder()
    image_id = builder.add_image("a.jpg", width=53, height=37)
    builder.add_detections(image_id, _detections(with_mask=False))
    (tmp_path / "c.json").write_text("stale")
    coco = COCO(str(builder.save(tmp_path / "c.json")))  # overwrites atomically
    ann = coco.loadAnns(coco.getAnnIds())[0]
    assert ann["area"] == 17 * 8 and ann["segmentation"] == [[3.0, 2.0, 20.0, 2.0, 20.0, 10.0, 3.0, 10.0]]
    with pytest.raises(ValueError, match="unknown image_id 7"):
        builder.add_detections(7, _detections())
    with pytest.raises(ValueError, match="masks are"):
        builder.add_detections(builder.add_image("b.jpg", width=10, height=10), _detections())


# ------------------------------------------------------------------------------ mask PNG


def test_mask_png_is_lossless(tmp_path):
    mask = RNG.random((41, 29)) > 0.5
    path = save_mask_png(mask, tmp_path / "m.png")
    with Image.open(path) as img:
        assert img.format == "PNG" and img.mode == "L"
        assert set(np.unique(np.array(img)).tolist()) == {0, 255}
    np.testing.assert_array_equal(read_mask_png(path), mask)
    with pytest.raises(ValueError, match="one H x W mask"):
        save_mask_png(mask[None], tmp_path / "bad.png")


def test_compact_masks_export_exactly_like_dense_ones():
    import supervision as sv

    from grounded.io.annotate import annotate
    from grounded.io.export import CocoBuilder, detections_to_dict
    from grounded.masks import compact_masks

    rng = np.random.default_rng(5)
    dense = np.zeros((3, 40, 60), dtype=bool)
    dense[0, 2:20, 3:30] = True
    dense[1, 10:39, 20:59] = rng.random((29, 39)) > 0.4
    xyxy = np.array([[3, 2, 30, 20], [20, 10, 59, 39], [0, 0, 5, 5]], dtype=np.float32)
    kwargs = {"xyxy": xyxy, "confidence": np.array([0.9, 0.8, 0.7], np.float32),
              "class_id": np.array([0, 1, 0]), "data": {"class_name": np.array(["cat", "dog", "cat"])}}
    as_dense = sv.Detections(mask=dense, **kwargs)
    as_compact = sv.Detections(mask=compact_masks(dense, (40, 60)), **kwargs)
    assert detections_to_dict(as_compact, image_size=(40, 60), classes=["cat", "dog"]) == detections_to_dict(
        as_dense, image_size=(40, 60), classes=["cat", "dog"])
    coco = [CocoBuilder(), CocoBuilder()]
    for builder, det in zip(coco, (as_dense, as_compact), strict=True):
        builder.add_detections(builder.add_image("a.png", 60, 40), det)
    assert coco[0].to_dict() == coco[1].to_dict()
    image = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    np.testing.assert_array_equal(annotate(image, as_compact), annotate(image, as_dense))
