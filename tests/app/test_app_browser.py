"""The real page in headless Chromium: upload, prompt, run, outputs, slider, legend, refine, download.

Needs Debian's Chromium at /usr/bin/chromium (``make browser`` installs it); without it this test
FAILS rather than skips, so a missing browser is never mistaken for a passing UI.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from app_helpers import NO_CHROMIUM, REPO, chromium_page, chromium_path, launched
from PIL import Image

pytestmark = pytest.mark.browser  # Playwright driving Chromium

SCREENSHOT = REPO / "artifacts" / "app_browser.png"
PROMPT = "<b id=injected>cat</b>"  # must show as text, never become an element


@pytest.fixture(scope="module")
def page_url(app_module, tiny_app_pipe) -> Iterator[str]:
    with launched(app_module, app_module.build_demo(tiny_app_pipe)) as url:
        yield url


@pytest.fixture()
def page(page_url) -> Iterator[Any]:
    """A fresh headless Chromium page on the app, or ``None`` when Chromium is missing (the test fails)."""
    if not chromium_path():
        yield None
        return
    with chromium_page(page_url, width=1400, height=1200) as page:
        yield page


def _wait_status(page: Any, text: str) -> str:
    page.wait_for_function(f"document.querySelector('#status')?.innerText.includes({text!r})", timeout=60_000)
    return page.inner_text("#status")


def _expected_count(pipe: Any, path: str, box_threshold: float) -> int:
    image = np.array(Image.open(path).convert("RGB"))
    return len(pipe.predict(image, PROMPT, box_threshold=box_threshold))  # the page's other defaults


def test_page_runs_a_prompt_filters_refines_and_downloads(page, examples, tiny_app_pipe):
    if page is None:
        pytest.fail(NO_CHROMIUM)
    path = examples[0][0]  # chelsea the cat
    page.wait_for_selector("#input-image input[type=file]", state="attached", timeout=60_000)
    assert "Untrained model" in page.inner_text("#untrained-warning")
    page.set_input_files("#input-image input[type=file]", path)
    page.fill("#prompt textarea", PROMPT)
    page.click("#run")
    status = _wait_status(page, "instances")
    count = int(re.search(r"(\d+) instances?", status).group(1))
    assert count == _expected_count(tiny_app_pipe, path, 0.35) >= 2 and "untrained" in status

    # outputs: one legend entry per instance, the overlay, and the table, all with the label as text
    legend = page.locator("#instances .legend-item")
    assert legend.count() == count
    assert legend.first.inner_text().startswith(f"#0 {PROMPT}")  # numbered as in the table
    assert page.locator("#overlay img").count() == 1
    assert PROMPT in page.inner_text("#detections")
    assert page.evaluate("document.querySelector('#injected')") is None

    # a threshold slider re-filters from the cache
    page.locator("#box-threshold input[type=range]").focus()
    for _ in range(30):  # 0.35 -> 0.65 in steps of 0.01: one event per step, drained "always_last"
        page.keyboard.press("ArrowRight")
    assert page.input_value("#box-threshold input[type=number]") == "0.65"
    expected = _expected_count(tiny_app_pipe, path, 0.65)
    assert 2 <= expected < count, "the stricter threshold must drop some (not all) instances"
    _wait_status(page, f"{expected} instance")
    _wait_status(page, "re-filtered")

    assert page.locator("#instances .legend-item").count() == expected

    # a legend entry or a table row selects that instance for refining
    page.locator("#instances .legend-item").nth(1).click()
    page.wait_for_function("document.querySelector('#instance input').value.startsWith('#1 ')")
    page.locator("#detections [role=row]").nth(3).locator("[role=gridcell]").nth(1).click()  # header + 2
    page.wait_for_function("document.querySelector('#instance input').value.startsWith('#2 ')")

    # a click on the overlay refines the selected instance from the cached embedding; Reset undoes it
    overlay = page.locator("#overlay img")
    size = overlay.bounding_box()
    overlay.click(position={"x": size["width"] * 0.5, "y": size["height"] * 0.5})
    _wait_status(page, "instance #2 refined (or pick one of SAM's candidates)")
    # a first click is ambiguous: SAM's candidates are offered beside its answer, none picked yet
    page.wait_for_selector("#candidates input", state="visible")
    assert page.locator("#candidates input:checked").count() == 0
    page.locator("#candidates label").first.click()
    _wait_status(page, "candidate mask 1 used")
    page.click("#reset")
    _wait_status(page, "instance #2 reset")
    overlay.click(position={"x": size["width"] * 0.4, "y": size["height"] * 0.6})
    _wait_status(page, "instance #2 refined")

    # the zip is built on demand, from the refined result
    page.click("#prepare-download")
    page.wait_for_function("!document.querySelector('#download').disabled")
    with page.expect_download() as download:
        page.click("#download")
    with zipfile.ZipFile(io.BytesIO(Path(download.value.path()).read_bytes())) as bundle:
        assert {"coco.json", "result.json", "overlay.png"} <= set(bundle.namelist())

    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.wait_for_timeout(500)  # let the last images paint
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert page.errors == []
