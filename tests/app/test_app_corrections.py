"""Correcting a result without Gradio: add (box, point, candidates), delete, relabel, refine, undo/redo,
re-thresholding with edits, the download of the edited set, and every bad input refused clearly."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import numpy as np
import pytest
from PIL import Image

from grounded.io.annotate import annotate
from grounded.web import service
from grounded.web.service import PipelineProvider, SegmentOptions

OPTIONS = SegmentOptions(box_threshold=0.3, text_threshold=0.2, nms_iou=0.5, max_detections=8)
STRICT = SegmentOptions(box_threshold=0.5, text_threshold=0.2, nms_iou=0.5, max_detections=8)
BOX = (40.0, 30.0, 260.0, 220.0)


@pytest.fixture(scope="module")
def session(provider, cat) -> service.Session:
    result = service.segment(provider, cat, "cat. dog", preset=None, options=OPTIONS)
    strict = service.segment(provider, cat, "cat. dog", preset=None, options=STRICT)
    assert 2 <= len(strict.detections) < len(result.detections), "the thresholds must matter for these tests"
    return result


def _names(session: service.Session) -> list[str]:
    return [str(name) for name in session.detections.data["class_name"]]


def test_add_by_box_decodes_one_instance_of_the_chosen_class(session, provider, tiny_app_pipe, cat):
    added = service.add_box(provider, session, BOX, "dog")
    assert len(added.detections) == len(session.detections) + 1 == len(session.keys) + 1
    np.testing.assert_array_equal(added.detections.xyxy[-1], BOX)
    assert _names(added)[-1] == "dog" and int(added.detections.class_id[-1]) == 1
    assert added.detections.confidence[-1] == 1.0  # added by hand
    expected, _ = tiny_app_pipe.segment_boxes(cat, [BOX])  # the batched box path gives the same mask
    np.testing.assert_array_equal(added.detections.mask[-1], expected[0])
    rows = service.table_rows(added.detections)
    assert rows[-1][0] == len(session.detections) and rows[-1][1] == "dog"
    result = service.result_json(added)
    assert result["edited"] is True and len(result["detections"]) == len(rows)
    # corners in any order give the same box; the session it came from is unchanged
    flipped = service.add_box(provider, session, (BOX[2], BOX[3], BOX[0], BOX[1]), "dog")
    np.testing.assert_array_equal(flipped.detections.mask[-1], expected[0])
    assert not session.edits and len(session.detections) == len(added.detections) - 1


def test_a_box_drawn_with_two_clicks_adds_its_object(session, provider):
    first = service.box_corner(provider, session, BOX[0], BOX[1], "cat")
    assert first.corner == (BOX[0], BOX[1]) and len(first.detections) == len(session.detections)
    assert not np.array_equal(service.overlay_preview(first), service.overlay_preview(session))  # a cross
    done = service.box_corner(provider, first, BOX[2], BOX[3], "cat")
    assert done.corner is None and len(done.detections) == len(session.detections) + 1
    np.testing.assert_array_equal(done.detections.xyxy[-1], BOX)


@pytest.mark.parametrize(("tool", "expected", "note"), [
    (0, "refine", "instance #1 refined (or pick one of SAM's candidates)"),
    (1, "refine", "instance #1 refined (or pick one of SAM's candidates)"),
    (2, "point", "added a dog from a click"), (3, "corner", "box: now click its opposite corner"),
])
def test_a_click_on_the_overlay_does_what_its_tool_says(session, provider, tool, expected, note):
    new, said, selected = service.apply_click(provider, session, tool, index=1, x=200.0, y=150.0,
                                              class_name="dog")
    assert said == note
    count = len(session.detections)
    if expected == "refine":
        assert new.clicks[1][-1] == service.Click(200.0, 150.0, tool == 0) and selected == 1
    elif expected == "point":
        assert len(new.detections) == count + 1 and selected == count
        assert new.detections.data["class_name"][-1] == "dog" and new.candidates is not None
    else:
        assert new.corner == (200.0, 150.0) and len(new.detections) == count and selected == 1
        done, said, selected = service.apply_click(provider, new, 3, index=1, x=20.0, y=10.0, class_name=None)
        assert said == "added a cat from a box" and selected == count  # no class chosen: the first one
        np.testing.assert_array_equal(done.detections.xyxy[-1], (20.0, 10.0, 200.0, 150.0))
    with pytest.raises(ValueError, match="unknown click tool 7"):
        service.apply_click(provider, session, 7, index=1, x=1.0, y=1.0, class_name="dog")


def test_add_by_point_offers_three_candidates_best_first(session, provider, tiny_app_pipe, cat):
    added = service.add_point(provider, session, 200.0, 150.0, "cat")
    masks, scores = tiny_app_pipe.segment_prompt(cat, points_xy=[[200, 150]], point_labels=[1],
                                                 multimask=True)
    offer = added.candidates
    assert offer is not None and len(offer.scores) == 3
    assert list(offer.scores) == sorted(offer.scores, reverse=True)
    np.testing.assert_allclose(offer.scores, scores, rtol=1e-6)
    np.testing.assert_array_equal(added.detections.mask[-1], masks[0])
    assert added.clicks == {len(added.detections) - 1: (service.Click(200.0, 150.0, True),)}
    third = service.choose_candidate(added, 2)
    np.testing.assert_array_equal(third.detections.mask[-1], masks[2])
    rows, cols = np.nonzero(masks[2])
    box = [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
    np.testing.assert_array_equal(third.detections.xyxy[-1], box)
    assert third.candidates.chosen == 2 and len(third.detections) == len(added.detections)
    assert service.undo(third).detections.mask[-1].sum() == masks[0].sum()  # a choice is undoable
    for bad in (3, -1, True, "1"):
        with pytest.raises(ValueError, match="choose candidate 1..3"):
            service.choose_candidate(added, bad)
    with pytest.raises(ValueError, match="no candidate masks"):
        service.choose_candidate(session, 0)


def test_delete_relabel_undo_redo(session, provider):
    deleted = service.delete_instance(session, 0)
    assert len(deleted.detections) == len(session.detections) - 1 and session.keys[0] not in deleted.keys
    np.testing.assert_array_equal(deleted.detections.xyxy, session.detections.xyxy[1:])
    relabeled = service.relabel_instance(deleted, 0, "dog" if _names(deleted)[0] == "cat" else "cat")
    assert _names(relabeled)[0] != _names(deleted)[0] and _names(relabeled)[1:] == _names(deleted)[1:]
    assert int(relabeled.detections.class_id[0]) == ["cat", "dog"].index(_names(relabeled)[0])
    added = service.add_box(provider, relabeled, BOX, "cat")
    gone = service.delete_instance(added, len(added.detections) - 1)  # an instance added by hand
    assert gone.keys == relabeled.keys

    back = service.undo(service.undo(service.undo(service.undo(gone))))
    assert back.keys == session.keys and _names(back) == _names(session) and not back.edits
    with pytest.raises(ValueError, match="nothing to undo"):
        service.undo(back)
    again = service.redo(service.redo(back))
    assert again.keys == relabeled.keys and _names(again) == _names(relabeled)
    assert service.redo(service.redo(again)).keys == gone.keys
    branched = service.delete_instance(service.undo(again), 0)  # a new edit clears the redo steps
    with pytest.raises(ValueError, match="nothing to redo"):
        service.redo(branched)


def test_edits_survive_threshold_changes(session, provider):
    strict = service.segment(provider, session.image, "cat. dog", preset=None, options=STRICT)
    survivor = session.keys.index(strict.keys[0])  # kept by both thresholds
    dropped = next(i for i, key in enumerate(session.keys) if key not in strict.keys)  # only at 0.3
    edited = service.delete_instance(session, survivor)
    dropped = dropped - (dropped > survivor)
    other = "dog" if _names(edited)[dropped] == "cat" else "cat"
    edited = service.add_box(provider, service.relabel_instance(edited, dropped, other), BOX, "dog")

    stricter = service.refilter(provider, edited, STRICT)
    assert strict.keys[0] not in stricter.keys  # still deleted
    relabeled_key = edited.keys[dropped]
    assert relabeled_key in stricter.keys  # an edited instance is kept where the threshold drops it
    assert _names(stricter)[stricter.keys.index(relabeled_key)] == other
    assert stricter.keys[-1] == edited.keys[-1] and _names(stricter)[-1] == "dog"  # the added box stays
    assert set(stricter.keys) == (set(strict.keys) - {strict.keys[0]}) | {relabeled_key, edited.keys[-1]}
    restored = service.refilter(provider, stricter, OPTIONS)
    assert restored.keys == edited.keys and _names(restored) == _names(edited)
    assert service.undo(restored).keys == service.undo(edited).keys  # the undo steps survive too


def test_a_first_refine_click_offers_sams_three_candidates_and_keeps_the_detector_box(
        session, provider, tiny_app_pipe, cat):
    box = tuple(session.detections.xyxy[1])
    refined = service.add_click(provider, session, index=1, x=150.0, y=100.0, positive=True)
    prompt = {"points_xy": [[150.0, 100.0]], "point_labels": [1], "box_xyxy": box}
    single, _ = tiny_app_pipe.segment_prompt(cat, **prompt)
    masks, scores = tiny_app_pipe.segment_prompt(cat, **prompt, multimask=True)
    np.testing.assert_array_equal(refined.detections.mask[1], single[0])  # applied: the single-mask output
    offer = refined.candidates
    assert offer is not None and offer.key == session.keys[1] and offer.chosen is None
    kept = [i for i in range(3) if masks[i].any()]
    np.testing.assert_allclose(offer.scores, scores[kept], rtol=1e-6)
    np.testing.assert_array_equal(offer.masks.to_dense(), masks[kept])
    second = service.choose_candidate(refined, len(kept) - 1)
    np.testing.assert_array_equal(second.detections.mask[1], masks[kept[-1]])
    np.testing.assert_array_equal(second.detections.xyxy[1], box)  # a detected instance keeps its box
    assert second.clicks == {1: (service.Click(150.0, 100.0, True),)}
    assert second.candidates.chosen == len(kept) - 1
    np.testing.assert_array_equal(service.undo(second).detections.mask[1], single[0])
    again = service.add_click(provider, second, index=1, x=20.0, y=20.0, positive=False)
    assert again.candidates is None  # two clicks are no longer ambiguous: no offer
    with pytest.raises(ValueError, match="no candidate masks to choose from"):
        service.choose_candidate(again, 0)
    _, note, _ = service.apply_click(provider, session, 0, index=1, x=150.0, y=100.0, class_name=None)
    assert note == "instance #1 refined (or pick one of SAM's candidates)"


def test_refine_clicks_reset_and_the_download_hold_the_edited_set(session, provider, cat, tmp_path):
    refined = service.add_click(provider, session, index=1, x=150.0, y=100.0, positive=True)
    refined = service.add_click(provider, refined, index=1, x=20.0, y=20.0, positive=False)
    assert refined.clicks == {1: (service.Click(150.0, 100.0, True), service.Click(20.0, 20.0, False))}
    edited = service.relabel_instance(service.delete_instance(refined, 0), 0, "dog")
    edited = service.add_box(provider, edited, BOX, "cat")
    with zipfile.ZipFile(service.write_bundle(edited, annotate(cat, edited.detections), tmp_path)) as bundle:
        coco = json.loads(bundle.read("coco.json"))
        result = json.loads(bundle.read("result.json"))
        masks = sorted(name for name in bundle.namelist() if name.startswith("masks/"))
        last = np.array(Image.open(io.BytesIO(bundle.read(masks[-1])))) > 0
    assert len(coco["annotations"]) == len(result["detections"]) == len(masks) == len(edited.detections)
    assert [a["category_id"] - 1 for a in coco["annotations"]] == edited.detections.class_id.tolist()
    assert result["detections"][0]["label"] == "dog" and result["edited"] is True
    np.testing.assert_array_equal(last, edited.detections.mask[-1])
    reset = service.reset_instance(refined, 1)
    assert reset.clicks == {} and not reset.edits
    np.testing.assert_array_equal(reset.detections.mask[1], session.detections.mask[1])
    with pytest.raises(ValueError, match="added by hand"):
        service.reset_instance(edited, len(edited.detections) - 1)
    with pytest.raises(ValueError, match="no changes to reset"):
        service.reset_instance(session, 0)


@pytest.mark.parametrize("action", ["delete", "relabel"])
@pytest.mark.parametrize("index", [None, -1, 99, True, "0"])
def test_edits_need_a_valid_instance(session, action, index):
    with pytest.raises(ValueError, match=f"pick an instance to {action}"):
        if action == "delete":
            service.delete_instance(session, index)
        else:
            service.relabel_instance(session, index, "dog")


def test_bad_additions_are_refused_clearly(session, provider):
    with pytest.raises(ValueError, match=r"choose a class from the prompt's list \['cat', 'dog'\]"):
        service.add_box(provider, session, BOX, "horse")
    with pytest.raises(ValueError, match="choose a class"):
        service.box_corner(provider, session, 5, 5, None)  # refused at the first corner already
    with pytest.raises(ValueError, match="outside the 451 x 300 image"):
        service.add_box(provider, session, (10, 10, 500, 100), "cat")
    with pytest.raises(ValueError, match="at least 2 px"):
        service.add_box(provider, session, (10, 10, 11, 100), "cat")
    with pytest.raises(ValueError, match="outside"):
        service.add_point(provider, session, -1, 10, "cat")
    with pytest.raises(ValueError, match="needs numbers"):
        service.add_point(provider, session, "a", 10, "cat")
    with pytest.raises(ValueError, match="already is 'cat'"):
        service.relabel_instance(session, _names(session).index("cat"), "cat")


def test_zero_area_instances_are_dropped_not_painted(provider, cat):
    tiny = cat[:1, :1].copy()
    assert len(provider.get().predict(tiny, "cat. dog", box_threshold=0.3, text_threshold=0.2)) > 0
    one = service.segment(provider, tiny, "cat. dog", preset=None, options=OPTIONS)
    assert len(one.detections) == 0 and one.dropped_empty > 0
    np.testing.assert_array_equal(service.overlay_preview(one), tiny)  # nothing painted over the pixel


@pytest.mark.parametrize("prompt, message", [
    (" . , ; ", "prompt is empty"), ("?!", "no letters or digits"), ("-- ... ##", "no letters or digits")])
def test_prompts_without_letters_or_digits_are_refused(provider, cat, prompt, message):
    with pytest.raises(ValueError, match=message):
        service.segment(provider, cat, prompt, preset=None, options=OPTIONS)


def test_new_lines_separate_classes(provider, cat):
    result = service.segment(provider, cat, "cat\ndog\r\nbig red car; ?", preset=None, options=OPTIONS)
    assert result.classes == ("cat", "dog", "big red car")


def test_uploads_that_are_not_images_are_refused_at_upload(tmp_path):
    fake = tmp_path / "notes.png"
    fake.write_text("shopping list: eggs, milk\n")
    with pytest.raises(ValueError, match="notes.png.*text file"):
        service.check_upload({"path": str(fake)}, upload_dir=tmp_path, max_bytes=10**6)
    real = tmp_path / "real.png"
    Image.new("RGB", (7, 5)).save(real)
    assert service.check_upload({"path": str(real)}, upload_dir=tmp_path, max_bytes=10**6) == (7, 5)
    with pytest.raises(ValueError, match="limit is"):
        service.check_upload({"path": str(real)}, upload_dir=tmp_path, max_bytes=10**6, max_pixels=20)


def test_long_labels_are_shortened_in_the_legend_and_overlay_only(provider, cat):
    name = "striped tabby cat on a wooden chair"  # 35 characters, within the detector's text limit
    result = service.segment(provider, cat, name, preset=None, options=OPTIONS)
    assert len(result.detections) >= 1
    label = service.instance_choices(result.detections)[0][0]
    assert label.startswith("#0 striped tabby cat on a…") and len(label) < 40
    assert service.table_rows(result.detections)[0][1] == name
    assert service.result_json(result)["detections"][0]["label"] == name


def test_selected_instance_is_outlined_and_markers_scale_with_the_image(session):
    plain = service.overlay_preview(session)
    picked = service.overlay_preview(session, selected=1)
    x0, y0, x1, y1 = (int(round(v)) for v in session.detections.xyxy[1])
    yellow = np.all(picked == (255, 214, 0), axis=2)
    assert yellow.sum() > 2 * (x1 - x0) and not np.all(plain == (255, 214, 0), axis=2).any()
    assert yellow[y0, x0:x1].mean() > 0.5 and yellow[y0:y1, x0].mean() > 0.5  # its box is traced
    big = np.zeros((2000, 3000, 3), np.uint8)
    marked = service.overlay_with_clicks(big, {0: (service.Click(1500, 1000, True),)})
    assert tuple(marked[1000, 1500 + 45]) == (40, 200, 60)  # radius 3000 / 60 = 50 px
    small = service.overlay_with_clicks(np.zeros((100, 100, 3), np.uint8),
                                        {0: (service.Click(50, 50, False),)})
    assert tuple(small[50, 55]) == (230, 40, 40) and not small[50, 62].any()  # at least 6 px, ring included


def test_session_memory_counts_edits_and_undo_steps(session, provider):
    from grounded.masks import compact_nbytes

    added = service.add_point(provider, session, 200.0, 150.0, "cat")
    mask = added.edits.overrides[added.keys[-1]].mask
    assert added.nbytes() > session.nbytes() + compact_nbytes(added.candidates.masks) + compact_nbytes(mask)
    gone = service.delete_instance(added, len(added.detections) - 1)
    assert gone.nbytes() > session.nbytes() + compact_nbytes(mask)  # its undo step still holds the mask


def test_model_picker_lists_states_and_loads_the_second_model_on_first_use(cat):
    provider = PipelineProvider.from_config("tiny-random", device="cpu", max_detections=8)
    assert [name for _, name in provider.choices()] == ["tiny-random", "tiny-random-sam3", "tiny-random-b"]
    assert all(label.endswith("loads on first use") for label, _ in provider.choices())
    result = service.segment(provider, cat, "cat", preset="tiny-random-b", options=OPTIONS)
    assert provider.is_loaded("tiny-random-b") and not provider.is_loaded("tiny-random")
    assert dict((name, label) for label, name in provider.choices())["tiny-random-b"].endswith("· loaded")
    assert result.preset == "tiny-random-b" and "preset tiny-random-b" in service.models_note(result)
    assert "(float32)" in service.models_note(result) and "on cpu" in service.models_note(result)
    with pytest.raises(ValueError, match="unknown preset 'nope'"):
        service.segment(provider, cat, "cat", preset="nope", options=OPTIONS)


def test_an_unavailable_model_is_explained_in_one_line():
    def missing() -> Any:
        raise OSError("LocalEntryNotFoundError: /srv/hf/models--x not found and HF_HUB_OFFLINE=1")

    def gated() -> Any:
        raise OSError("401 Client Error: access to model facebook/x is restricted (gated repo)")

    provider = PipelineProvider({"a": missing, "b": gated})
    for name in ("a", "b"):
        with pytest.raises(service.PresetUnavailableError):
            provider.get(name)
    states = {name: label for label, name in provider.choices()}
    assert states["a"].endswith("unavailable: weights not on this server (not in its Hugging Face cache, "
                                "and it cannot download them)")
    assert "gated on the Hugging Face Hub" in states["b"] and "/srv" not in states["a"] + states["b"]
    assert all("\n" not in label for label in states.values())


def test_offline_presets_missing_from_the_cache_are_unavailable_before_any_load(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE=1: a preset whose Hub weights are not cached says so in the picker, without a load."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    built: list[str] = []
    provider = PipelineProvider.from_config("default", device="cpu")
    provider._builders = {name: (lambda n=name: built.append(n)) for name in provider.names}  # count loads
    states = {name: label for label, name in provider.choices()}
    assert states["default"].endswith(f"unavailable: {service.OFFLINE_MISSING}")
    assert states["fast"].endswith(f"unavailable: {service.OFFLINE_MISSING}")
    # put DINO-T's and SAM ViT-B's config.json into the cache as huggingface_hub lays it out
    for repo in ("IDEA-Research/grounding-dino-tiny", "facebook/sam-vit-base"):
        folder = tmp_path / f"models--{repo.replace('/', '--')}"
        (folder / "refs").mkdir(parents=True)
        (folder / "refs" / "main").write_text("abc123")
        (folder / "snapshots" / "abc123").mkdir(parents=True)
        (folder / "snapshots" / "abc123" / "config.json").write_text("{}")
    states = {name: label for label, name in provider.choices()}
    assert states["default"].endswith("loads on first use")
    assert states["fast"].endswith("unavailable: " + service.OFFLINE_MISSING)  # MobileSAM: not cached
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert {name: label for label, name in provider.choices()}["fast"].endswith("loads on first use")
    assert built == []
