"""``grounded.web.gradio_patches.limit_stored_input_values``: what Gradio may keep per session."""

from __future__ import annotations

import json

import gradio as gr
import pytest
from gradio import state_holder

from grounded.web import gradio_patches
from grounded.web.gradio_patches import STORED_VALUE_LIMIT, _size_at_least


def test_a_long_string_is_too_large_to_keep():
    assert _size_at_least({"url": "data:image/png;base64," + "A" * STORED_VALUE_LIMIT}, STORED_VALUE_LIMIT)


def test_many_numbers_are_too_large_to_keep_though_no_string_is_long():
    """A result JSON of run-length counts: 3000 short lists of ints, no string over 10 characters.
    In Python that is ~3000 * 5 * (28 + 8) = 540 KB; its strings hold only 42 KB."""
    result = {"detections": [{"label": "dog", "counts": [1000 + i, 7, 3, 12, 9]} for i in range(3000)]}
    strings = sum(len(k) + (len(v) if isinstance(v, str) else 0)
                  for d in result["detections"] for k, v in d.items())
    assert strings < STORED_VALUE_LIMIT
    assert _size_at_least(result, STORED_VALUE_LIMIT)


def test_a_json_output_is_measured_inside_its_pydantic_model():
    """Gradio passes a ``gr.JSON`` output's value as ``JsonData`` (a pydantic root model), not a dict."""
    result = {"annotations": [{"segmentation": {"counts": "x" * 1000}} for _ in range(100)]}
    processed = gr.JSON().postprocess(result)
    assert not isinstance(processed, dict)
    assert _size_at_least(processed, STORED_VALUE_LIMIT)
    assert not _size_at_least(gr.JSON().postprocess({"a": [1, 2]}), STORED_VALUE_LIMIT)


def test_a_small_update_is_kept():
    value = {"label": "dog", "confidences": [{"label": "dog", "confidence": 0.9}]}
    assert len(json.dumps(value)) < 200
    assert not _size_at_least(value, STORED_VALUE_LIMIT)


@pytest.mark.parametrize("value", [
    {"rle": list(range(20000))},  # numbers only
    "x" * (STORED_VALUE_LIMIT + 1),  # text only
])
def test_the_patched_session_keeps_none_for_large_values_and_the_value_for_small_ones(value, monkeypatch):
    stored: dict[int, object] = {}

    def original(self, key, new):
        stored[key] = new

    monkeypatch.setattr(state_holder.SessionState, "_update_value_in_config", original)
    assert gradio_patches.limit_stored_input_values()
    patched = state_holder.SessionState._update_value_in_config
    patched(object(), 1, value)
    patched(object(), 2, {"small": [1, 2, 3]})
    assert stored == {1: None, 2: {"small": [1, 2, 3]}}
