"""grounded.web.service without Gradio: results, table, zip bundle, refine state, input checks."""

from __future__ import annotations

import base64
import io
import json
import threading
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from grounded.io.annotate import annotate, class_color
from grounded.io.export import detections_to_dict
from grounded.web import service, views
from grounded.web.service import Click, PipelineProvider, SegmentOptions

OPTIONS = SegmentOptions(box_threshold=0.3, text_threshold=0.2, nms_iou=0.5, max_detections=8)


@pytest.fixture(scope="module")
def session(provider: PipelineProvider, cat: np.ndarray) -> service.Session:
    result = service.segment(provider, cat, "Cat. dog", preset=None, options=OPTIONS,
                             image_name="chelsea.png")
    assert len(result.detections) >= 3, "the fixed-seed tiny model finds several boxes at these thresholds"
    return result


def test_result_json_is_the_shared_schema_plus_model_fields(session, tiny_app_pipe, cat):
    result = service.result_json(session)
    assert set(result) == {"image", "classes", "detections", "untrained", "model", "edited"}
    assert result["edited"] is False
    assert result["image"] == {"width": 451, "height": 300}
    assert result["classes"] == ["cat", "dog"]
    assert result["untrained"] is True and result["model"]["preset"] == "tiny-random"
    # the resolved device and dtype of each model (tiny-random pins float32 on every machine)
    assert {k: result["model"][k] for k in ("device", "detector_dtype", "sam_dtype")} == {
        "device": "cpu", "detector_dtype": "float32", "sam_dtype": "float32"}
    assert service.precision_note(session.models) == "cpu · detector float32 · SAM float32"
    direct = tiny_app_pipe.predict(cat, "cat. dog", **OPTIONS.predict_kwargs())
    expected = detections_to_dict(direct, image_size=(300, 451), classes=["cat", "dog"])
    assert {k: result[k] for k in expected} == expected  # the Python API's JSON, field for field
    json.dumps(result)  # plain JSON types only
    for i, row in enumerate(result["detections"]):
        assert set(row) == {"label", "class_id", "score", "mask_score", "box_xyxy", "area", "mask"}
        decoded = mask_utils.decode({"size": row["mask"]["size"], "counts": row["mask"]["counts"].encode()})
        assert decoded.shape == (300, 451)
        np.testing.assert_array_equal(decoded.astype(bool), session.detections.mask[i])
        assert row["area"] == int(decoded.sum())


def test_table_rows_are_plain_values_per_detection(session):
    rows = service.table_rows(session.detections)
    det = session.detections
    assert len(rows) == len(det) and all(len(row) == len(service.TABLE_HEADERS) for row in rows)
    for i, (index, label, score, mask_score, box, area) in enumerate(rows):
        assert index == i and label == det.data["class_name"][i]
        assert score == pytest.approx(float(det.confidence[i]), abs=5e-4)
        assert mask_score == pytest.approx(float(det.data["mask_score"][i]), abs=5e-4)
        np.testing.assert_allclose([float(v) for v in box.split(",")], det.xyxy[i], atol=0.051)
        assert area == int(det.mask[i].sum())


def test_annotated_value_has_one_labeled_mask_per_instance(session):
    (image, annotations), colors = service.annotated_value(session)
    det = session.detections
    annotations = list(annotations)  # produced one at a time for gradio
    assert image is session.image and len(annotations) == len(det)
    for i, (mask, label) in enumerate(annotations):
        assert label == f"#{i} {det.data['class_name'][i]} {det.confidence[i]:.2f}"  # the table's "#"
        assert mask.shape == (300, 451)
        np.testing.assert_array_equal(mask > 0, det.mask[i])
        assert colors[label] == class_color(int(det.class_id[i]))


def test_large_images_are_previewed_small_with_full_resolution_downloads(provider, monkeypatch):
    big = np.random.default_rng(2).integers(0, 256, (900, 1600, 3), dtype=np.uint8)
    session = service.segment(provider, big, "cat. dog", preset=None, options=OPTIONS)
    assert len(session.detections) >= 1
    monkeypatch.setattr(views, "PREVIEW_MAX_PIXELS", 360_000)  # 1600 x 900 -> 800 x 450
    scale = service.preview_scale(session.image_size)
    assert scale == pytest.approx(0.5)
    (image, annotations), _ = service.annotated_value(session)
    assert image.shape == (450, 800, 3)
    for i, (mask, _label) in enumerate(annotations):
        assert mask.shape == (450, 800)
        # nearest-neighbour downscale of the full-resolution mask
        np.testing.assert_array_equal(mask > 0, session.detections.mask[i][::2, ::2])
    assert service.overlay_preview(session).shape == (450, 800, 3)
    # the JSON keeps full-resolution masks
    assert service.result_json(session)["detections"][0]["mask"]["size"] == [900, 1600]


def test_session_store_is_bounded_by_bytes_and_releases_idle_sessions(session):
    from grounded.web.sessions import SessionExpiredError, SessionStore

    now = [0.0]
    size = session.nbytes()
    assert size >= session.image.nbytes
    store = SessionStore(int(size * 2.5), ttl_s=60, clock=lambda: now[0])
    first, second = store.put(session), store.put(session)
    store.get(first)  # first is now the most recently used
    third = store.put(session)  # over budget: the least recently used (second) goes
    assert store.get(first) is session and store.get(third) is session
    with pytest.raises(SessionExpiredError, match="press Run again"):
        store.get(second)
    assert store.nbytes <= store.max_bytes and len(store) == 2
    now[0] = 61.0  # idle past the TTL: released
    store.sweep()
    assert len(store) == 0 and store.nbytes == 0
    with pytest.raises(ValueError, match="MiB of session memory"):
        SessionStore(size - 1).put(session)


def test_zip_bundle_holds_coco_lossless_masks_and_overlay(session, tmp_path):
    overlay = annotate(session.image, session.detections)
    path = service.write_bundle(session, overlay, tmp_path)
    det = session.detections
    with zipfile.ZipFile(path) as bundle:
        names = bundle.namelist()
        mask_names = sorted(n for n in names if n.startswith("masks/"))
        assert {"coco.json", "result.json", "overlay.png"} <= set(names)
        assert len(mask_names) == len(det)
        for i, name in enumerate(mask_names):
            assert name.startswith(f"masks/{i:03d}_{det.data['class_name'][i]}")
            png = np.array(Image.open(io.BytesIO(bundle.read(name))))
            np.testing.assert_array_equal(png, np.where(det.mask[i], 255, 0))  # lossless
        np.testing.assert_array_equal(np.array(Image.open(io.BytesIO(bundle.read("overlay.png")))), overlay)
        (tmp_path / "coco.json").write_bytes(bundle.read("coco.json"))
        assert json.loads(bundle.read("result.json"))["untrained"] is True
    coco = COCO(str(tmp_path / "coco.json"))
    assert "untrained" in coco.dataset["info"]["description"].lower()
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["cat", "dog"]
    annotations = coco.loadAnns(coco.getAnnIds())
    assert len(annotations) == len(det)
    for i, annotation in enumerate(annotations):
        np.testing.assert_array_equal(coco.annToMask(annotation).astype(bool), det.mask[i])


def test_refilter_runs_no_model_and_equals_a_fresh_predict(session, provider, tiny_app_pipe, cat):
    before = (tiny_app_pipe.stats.detector_calls, tiny_app_pipe.stats.sam_encoder_calls)
    stricter = SegmentOptions(box_threshold=0.5, text_threshold=0.2, nms_iou=0.5, max_detections=8)
    result = service.refilter(provider, session, stricter)
    assert (tiny_app_pipe.stats.detector_calls, tiny_app_pipe.stats.sam_encoder_calls) == before
    assert len(result.detections) < len(session.detections)
    assert (result.detections.confidence > 0.5).all()
    direct = tiny_app_pipe.predict(cat, "cat. dog", **stricter.predict_kwargs())
    np.testing.assert_array_equal(result.detections.xyxy, direct.xyxy)
    np.testing.assert_array_equal(result.detections.mask, direct.mask)
    assert result.options == stricter and result.clicks == {}


def test_click_refines_only_the_chosen_instance_and_reset_restores_it(session, provider, tiny_app_pipe):
    det = session.detections
    x0, y0, x1, y1 = det.xyxy[1]
    inside = ((x0 + x1) / 2, (y0 + y1) / 2)
    one = service.add_click(provider, session, index=1, x=inside[0], y=inside[1], positive=True)
    two = service.add_click(provider, one, index=1, x=10.0, y=20.0, positive=False)
    assert two.clicks == {1: (Click(inside[0], inside[1], True), Click(10.0, 20.0, False))}
    expected = tiny_app_pipe.refine(session.image, one.detections, 1, [inside, (10.0, 20.0)], [1, 0])
    np.testing.assert_array_equal(two.detections.mask[1], expected.mask[1])
    others = [i for i in range(len(det)) if i != 1]
    np.testing.assert_array_equal(two.detections.mask[others], det.mask[others])
    assert session.clicks == {} and session.detections is det  # sessions are never mutated
    back = service.reset_instance(two, 1)
    np.testing.assert_array_equal(back.detections.mask, session.predicted.mask)
    assert back.detections.data["mask_score"][1] == session.predicted.data["mask_score"][1]
    assert back.clicks == {}


@pytest.mark.parametrize("index", [None, -1, 99, True, "0"])
def test_click_needs_a_valid_instance(session, provider, index):
    with pytest.raises(ValueError, match="instance"):
        service.add_click(provider, session, index=index, x=5, y=5, positive=True)


def test_click_outside_the_image_is_refused(session, provider):
    with pytest.raises(ValueError, match="outside the 451 x 300 image"):
        service.add_click(provider, session, index=0, x=451, y=5, positive=True)


def test_overlay_with_clicks_marks_each_click(session):
    overlay = np.zeros((300, 451, 3), np.uint8)
    assert service.overlay_with_clicks(overlay, {}) is overlay
    marked = service.overlay_with_clicks(overlay, {0: (Click(100, 50, True),), 2: (Click(300, 200, False),)})
    assert tuple(marked[50, 100]) == (40, 200, 60) and tuple(marked[200, 300]) == (230, 40, 40)
    assert not overlay.any()


def test_no_detection_gives_an_empty_result_and_the_plain_image(provider, cat, tmp_path):
    nothing = SegmentOptions(box_threshold=1.0, text_threshold=1.0, nms_iou=0.5, max_detections=8)
    empty = service.segment(provider, cat, "cat", preset=None, options=nothing)
    assert service.result_json(empty)["detections"] == [] and service.table_rows(empty.detections) == []
    (image, annotations), _ = service.annotated_value(empty)
    assert list(annotations) == [] and image is empty.image
    with zipfile.ZipFile(service.write_bundle(empty, annotate(cat, empty.detections), tmp_path)) as bundle:
        assert json.loads(bundle.read("coco.json"))["annotations"] == []
        np.testing.assert_array_equal(np.array(Image.open(io.BytesIO(bundle.read("overlay.png")))), cat)


@pytest.mark.parametrize("prompt, message", [("  . ,", "prompt is empty"), ("x" * 2001, "limit is 2000")])
def test_bad_prompts_are_refused_clearly(provider, cat, prompt, message):
    with pytest.raises(ValueError, match=message):
        service.segment(provider, cat, prompt, preset=None, options=OPTIONS)


@pytest.mark.parametrize("values, name", [
    ((1.5, 0.2, 0.5, 8), "box_threshold"), ((0.3, -0.1, 0.5, 8), "text"), ((0.3, 0.2, 2, 8), "nms_iou"),
    ((0.3, 0.2, 0.5, 0), "max_det"), ((0.3, 0.2, 0.5, 2.5), "max_det"), (("a", 0.2, 0.5, 8), "box"),
])
def test_options_outside_their_range_are_refused(values, name):
    with pytest.raises(ValueError, match=name):
        SegmentOptions(*values)


def test_resolve_image_accepts_uploads_and_data_urls_only(tmp_path):
    upload_dir, outside = tmp_path / "uploads", tmp_path / "secret"
    upload_dir.mkdir(), outside.mkdir()
    png = io.BytesIO()
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(png, "PNG")
    (upload_dir / "a.png").write_bytes(png.getvalue())
    (outside / "b.png").write_bytes(png.getvalue())
    (upload_dir / "link.png").symlink_to(outside / "b.png")

    def resolve(payload: Any, limit: int = 10_000) -> str | bytes:
        return service.resolve_image(payload, upload_dir=upload_dir, max_bytes=limit)

    assert resolve({"path": str(upload_dir / "a.png")}) == str((upload_dir / "a.png").resolve())
    data_url = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
    assert resolve({"url": data_url, "path": None}) == png.getvalue()
    assert resolve(data_url) == png.getvalue()
    for bad in ({"path": str(outside / "b.png")}, {"path": str(upload_dir / "link.png")}, "/etc/passwd",
                {"path": str(upload_dir / ".." / "secret" / "b.png")}):
        with pytest.raises(ValueError, match="not a file uploaded to this app"):
            resolve(bad)
    with pytest.raises(ValueError, match="upload an image"):
        resolve(None)
    with pytest.raises(ValueError, match="base64"):
        resolve({"url": "data:image/png,rawbytes"})
    with pytest.raises(ValueError, match="the limit is"):
        resolve(data_url, limit=10)
    with pytest.raises(ValueError, match="the limit is"):
        resolve({"path": str(upload_dir / "a.png")}, limit=10)


def test_provider_builds_each_preset_once_lazily(tiny_app_pipe):
    calls: list[str] = []

    def build(name: str) -> Any:
        def builder() -> Any:
            calls.append(name)
            return tiny_app_pipe
        return builder

    provider = PipelineProvider({"fast": build("fast"), "quality": build("quality")})
    assert calls == [] and provider.names == ["fast", "quality"] and provider.default == "fast"
    threads = [threading.Thread(target=provider.get, args=("quality",)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert provider.get("quality") is tiny_app_pipe and calls == ["quality"]
    with pytest.raises(ValueError, match=r"unknown preset 'huge'; choose one of \['fast', 'quality'\]"):
        provider.get("huge")


def test_a_preset_that_fails_to_load_is_a_clear_error_keeping_the_cause():
    def missing() -> Any:
        raise OSError("no file /srv/hf/model.safetensors")

    provider = PipelineProvider({"quality": missing})
    with pytest.raises(service.PresetUnavailableError, match="preset 'quality' could not be loaded") as info:
        provider.get("quality")
    assert isinstance(info.value, ValueError) and "/srv/hf" not in str(info.value)
    assert isinstance(info.value.__cause__, OSError)  # the operator's details, for the log and the CLI


def test_provider_from_config_offers_fast_and_quality_or_only_untrained_presets():
    real = PipelineProvider.from_config("default")  # builds nothing: no weights needed here
    assert real.names[0] == real.default == "default"
    assert {"fast", "hq", "quality"} <= set(real.names) and "tiny-random" not in real.names
    assert real.config("default").detector.model == "IDEA-Research/grounding-dino-tiny"
    assert real.config("quality").sam.model_type == "vit_h"
    assert real.config("fast").sam.model_type == "vit_t" and real.config("hq").sam.model_type == "hq_vit_b"
    tiny = PipelineProvider.from_config("tiny-random")
    # an untrained config is offered with the other untrained preset only, never beside real models
    assert tiny.names == ["tiny-random", "tiny-random-sam3", "tiny-random-b"]
    assert all(tiny.config(name).untrained for name in tiny.names)


def test_image_name_comes_from_the_upload_without_folders():
    assert service.image_name_of({"orig_name": "../../x/cat.jpg"}) == "cat.jpg"
    assert service.image_name_of({"path": "/tmp/a.png"}) == "image.png"
    assert service.image_name_of(None) == "image.png"
    assert Path(service.image_name_of({"orig_name": "a b.png"})).name == "a b.png"


def test_gradio_sweep_workaround_applies_only_to_releases_with_the_race(monkeypatch):
    import gradio
    from gradio import route_utils

    from grounded.web import gradio_patches

    assert gradio_patches.has_sweep_race("6.31.0") and gradio_patches.has_sweep_race("6.20.1")
    assert not gradio_patches.has_sweep_race("6.32.0") and not gradio_patches.has_sweep_race("5.49.1")
    current = route_utils.delete_files_created_by_app  # maybe already patched by an app built earlier
    original = getattr(current, "__wrapped__", current)
    monkeypatch.setattr(route_utils, "delete_files_created_by_app", original)
    monkeypatch.setattr(gradio, "__version__", "6.99.0")
    assert gradio_patches.fix_temp_file_sweep() is False
    assert route_utils.delete_files_created_by_app is original  # a fixed release is left alone
    monkeypatch.setattr(gradio, "__version__", "6.31.0")
    assert gradio_patches.fix_temp_file_sweep() is True
    assert route_utils.delete_files_created_by_app is not original
