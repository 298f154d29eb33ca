"""The page as an annotation tool, in headless Chromium: ↺ re-filters, add by box, delete, relabel,
undo/redo (buttons and keys), edits kept over a threshold change, the zip holds the edited set, and
the model picker loads a second model.

One server and one page for the module; the tests run in file order, each from where the last left
the page, reading counts and labels from the page itself. Chromium missing FAILS (see test_app_browser).
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from app_helpers import NO_CHROMIUM, REPO, chromium_page, chromium_path, launched
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from grounded.config import PIPELINE_PRESETS
from grounded.pipeline import GroundedSAM
from grounded.web.service import PipelineProvider

pytestmark = pytest.mark.browser

ARTIFACTS = REPO / "artifacts"


@pytest.fixture(scope="module")
def page(app_module, tiny_app_pipe, examples) -> Iterator[Any]:
    if not chromium_path():
        pytest.fail(NO_CHROMIUM)
    second = dataclasses.replace(PIPELINE_PRESETS["tiny-random-b"], device="cpu", max_detections=8)
    provider = PipelineProvider(
        {"tiny-random": lambda: tiny_app_pipe, "tiny-random-b": lambda: GroundedSAM.from_config(second)},
        configs={"tiny-random": tiny_app_pipe.config, "tiny-random-b": second})
    with (launched(app_module, app_module.build_demo(provider)) as url,
          chromium_page(url, width=1280, height=1100) as page):
        page.wait_for_selector("#input-image input[type=file]", state="attached", timeout=60_000)
        page.set_input_files("#input-image input[type=file]", examples[0][0])
        page.fill("#prompt textarea", "cat. dog")
        page.click("#run")
        _wait(page, "instances")
        yield page
        assert page.errors == []


# The status text without gradio's progress tracker ("queue: 1/1 | 0.1s"), or "" while an event runs.
STATUS_JS = """() => { const status = document.querySelector('#status'); if (!status) return '';
    const tracker = status.querySelector('[data-testid=status-tracker]');
    if (tracker && !tracker.classList.contains('hide')) return '';
    const copy = status.cloneNode(true);
    copy.querySelectorAll('[data-testid=status-tracker]').forEach((node) => node.remove());
    return copy.textContent.trim(); }"""


def _status(page: Any) -> str:
    return page.evaluate(STATUS_JS)


def _wait(page: Any, text: str, *, old: str | None = None) -> str:
    """The status once it includes ``text`` and differs from ``old``, no event still running on it."""
    handle = page.wait_for_function(
        f"([text, old]) => {{ const s = ({STATUS_JS})(); return s.includes(text) && s !== old && s; }}",
        arg=[text, old], timeout=60_000)
    return handle.json_value()


def _act(page: Any, action: Any, text: str) -> int:
    """Do ``action``, wait for a new status holding ``text``; the instance count it shows."""
    old = _status(page)
    action()
    count = _count(_wait(page, text, old=old))
    page.wait_for_function(  # the table and the legend render after the status
        "(n) => document.querySelectorAll('#detections [role=row]').length === n + 1"
        " && document.querySelectorAll('#instances .legend-item').length === n", arg=count)
    return count


def _count(status: str) -> int:
    return int(re.search(r"(\d+) instances?", status).group(1))


def _labels(page: Any) -> list[str]:
    rows = page.locator("#detections [role=row]")
    return [rows.nth(i).locator("[role=gridcell]").nth(1).inner_text().strip()
            for i in range(1, rows.count())]  # header row first


def _choose(page: Any, elem_id: str, text: str) -> None:
    page.click(f"#{elem_id} input")
    page.locator(f"#{elem_id} ul.option-list li", has_text=text).first.click()


def _click_overlay(page: Any, fx: float, fy: float) -> None:
    image = page.locator("#overlay img")
    box = image.bounding_box()
    image.click(position={"x": box["width"] * fx, "y": box["height"] * fy})


def _set_slider(page: Any, elem_id: str, value: float) -> None:
    """Type ``value`` into the slider's number box: one change event."""
    page.fill(f"#{elem_id} input[type=number]", str(value))
    page.press(f"#{elem_id} input[type=number]", "Enter")


def test_reset_buttons_of_the_sliders_update_the_results(page):
    start = _count(_wait(page, "instances"))
    stricter = _act(page, lambda: _set_slider(page, "box-threshold", 0.65), "re-filtered")
    assert stricter < start
    assert _act(page, lambda: page.click("#box-threshold button.reset-button"), "re-filtered") == start
    assert page.input_value("#box-threshold input[type=number]") == "0.35"
    assert page.locator("#instances .legend-item").count() == start == len(_labels(page))


def test_add_by_box_adds_one_instance_of_the_chosen_class(page):
    start = _count(_wait(page, "instances"))
    page.locator("#tool label", has_text="add object: box").click()
    _choose(page, "edit-class", "dog")
    _act(page, lambda: _click_overlay(page, 0.2, 0.2), "click its opposite corner")
    assert _act(page, lambda: _click_overlay(page, 0.6, 0.7), "added a dog from a box") == start + 1
    assert _labels(page)[-1] == "dog" and page.locator("#instances .legend-item").count() == start + 1
    assert page.locator("#instances .legend-item").last.inner_text().startswith(f"#{start} dog")
    page.wait_for_function(f"document.querySelector('#instance input').value.startsWith('#{start} ')")


def test_delete_and_relabel_the_selected_instance(page):
    labels = _labels(page)
    page.locator("#detections [role=row]").nth(1).locator("[role=gridcell]").nth(1).click()  # row #0
    page.wait_for_function("document.querySelector('#instance input').value.startsWith('#0 ')")
    assert _act(page, lambda: page.click("#delete"), "instance #0 deleted") == len(labels) - 1
    assert _labels(page) == labels[1:]
    new = "dog" if labels[1] == "cat" else "cat"
    _choose(page, "edit-class", new)
    _act(page, lambda: page.click("#relabel"), f"instance #0 is now {new}")
    assert _labels(page) == [new, *labels[2:]]


def test_undo_and_redo_with_buttons_and_keys(page):
    edited = _labels(page)
    _act(page, lambda: page.click("#undo"), "undone")
    relabel_undone = _labels(page)
    assert relabel_undone[0] != edited[0] and relabel_undone[1:] == edited[1:]
    page.locator("h1").first.click()  # focus outside the text boxes: the shortcuts apply
    _act(page, lambda: page.keyboard.press("Control+z"), "undone")
    assert len(_labels(page)) == len(edited) + 1  # the deletion is undone too
    _act(page, lambda: page.keyboard.press("Control+Shift+z"), "redone")
    assert _labels(page) == relabel_undone
    _act(page, lambda: page.click("#redo"), "redone")
    assert _labels(page) == edited


def test_edits_survive_a_threshold_change(page):
    edited = _labels(page)
    _act(page, lambda: _set_slider(page, "box-threshold", 0.65), "edits kept")
    assert _labels(page)[-1] == "dog" and "edited" in _status(page)  # the added box stays
    assert _labels(page) != edited  # the stricter threshold did drop predicted instances
    assert _act(page, lambda: page.click("#box-threshold button.reset-button"), "edits kept") == len(edited)
    assert _labels(page) == edited  # the deleted one stays deleted, the relabeled one relabeled


def test_the_zip_holds_the_edited_set(page):
    labels = _labels(page)
    page.click("#prepare-download")
    page.wait_for_function("!document.querySelector('#download').disabled")
    with page.expect_download() as download:
        page.click("#download")
    with zipfile.ZipFile(io.BytesIO(Path(download.value.path()).read_bytes())) as bundle:
        coco = json.loads(bundle.read("coco.json"))
        result = json.loads(bundle.read("result.json"))
        masks = [name for name in bundle.namelist() if name.startswith("masks/")]
    names = {c["id"]: c["name"] for c in coco["categories"]}
    assert [names[a["category_id"]] for a in coco["annotations"]] == labels
    assert [d["label"] for d in result["detections"]] == labels and result["edited"] is True
    assert len(masks) == len(labels) and masks[-1].endswith("_dog.png")


def test_model_picker_lists_and_loads_a_second_model(page):
    page.evaluate("""() => { window.statuses = []; const status = document.querySelector('#status');
        new MutationObserver(() => window.statuses.push(status.innerText))
            .observe(status, {childList: true, subtree: true, characterData: true}); }""")
    page.click("#preset input")
    options = page.locator("#preset ul.option-list li")
    listed = [options.nth(i).inner_text().removeprefix("✓").strip() for i in range(options.count())]
    assert listed == ["tiny-random · tiny-random + SAM tiny · loaded",
                      "tiny-random-b · tiny-random + SAM tiny · loads on first use"]
    for _ in range(3):  # a click that lands while the list re-renders is lost: open the list and retry
        options.nth(1).click()
        try:
            page.wait_for_function("window.statuses.some((s) => s.includes('preset tiny-random-b'))",
                                   timeout=10_000)
            break
        except PlaywrightTimeout:
            page.click("#preset input")
    status = _wait(page, "preset tiny-random-b: detector")
    assert "re-run with preset tiny-random-b" in status and "(float32)" in status
    assert any("loading preset tiny-random-b" in s for s in page.evaluate("window.statuses"))
    picked = page.input_value("#preset input")
    assert picked.startswith("tiny-random-b") and picked.endswith("loaded")
    page.locator("#tool label", has_text="refine: add").click()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "app_browser_edits.png"), full_page=True)


def test_the_prompt_counter_and_a_non_image_upload(page, tmp_path):
    page.fill("#prompt textarea", "cat\ndog")
    page.wait_for_function("document.querySelector('#prompt-counter').innerText.startsWith('7 / 2000')")
    fake = tmp_path / "notes.png"
    fake.write_text("shopping list: eggs, milk\n")
    page.set_input_files("#input-image input[type=file]", str(fake))
    status = _wait(page, "upload refused")
    assert "notes.png" in status and "text file" in status
    page.wait_for_function("!document.querySelector('#input-image img')")  # the refused file is not kept
