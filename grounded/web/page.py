"""The page's static parts: tools, keyboard shortcuts (and their documentation), CSS and script.

``app.py`` passes :data:`CSS` and :data:`HEAD` to ``launch``; the shortcut script only clicks the page's
own buttons and radio options (by ``elem_id``), so every shortcut does exactly what its button does.
"""

from __future__ import annotations

import json

__all__ = [
    "CSS", "HEAD", "INTRO", "SHORTCUTS", "SHORTCUTS_MARKDOWN", "TOOLS", "UNTRAINED_WARNING", "counter_js",
    "preset_info",
]

# What a click on the overlay does.
TOOLS = ["refine: add (+)", "refine: remove (−)", "add object: point", "add object: box (2 clicks)"]

# key (as KeyboardEvent.key, lowercased; "ctrl+" = Ctrl or Cmd) -> (what it clicks, what it does)
SHORTCUTS: dict[str, tuple[str, str]] = {
    "ctrl+z": ("#undo", "undo"),
    "ctrl+shift+z": ("#redo", "redo"),
    "ctrl+y": ("#redo", "redo"),
    "delete": ("#delete", "delete the selected instance"),
    "backspace": ("#delete", "delete the selected instance"),
    "+": (f"#tool input[value='{TOOLS[0]}']", "tool: refine, add"),
    "-": (f"#tool input[value='{TOOLS[1]}']", "tool: refine, remove"),
    "a": (f"#tool input[value='{TOOLS[2]}']", "tool: add an object with a point"),
    "b": (f"#tool input[value='{TOOLS[3]}']", "tool: add an object with a box"),
    "1": ("#candidates label:nth-of-type(1) input", "use SAM's candidate mask 1"),
    "2": ("#candidates label:nth-of-type(2) input", "use candidate mask 2"),
    "3": ("#candidates label:nth-of-type(3) input", "use candidate mask 3"),
}

SHORTCUTS_MARKDOWN = (
    "**Keyboard** (outside text fields): `Ctrl+Z` undo · `Ctrl+Shift+Z` / `Ctrl+Y` redo · `Del` delete the "
    "selected instance · `+` / `-` refine tools · `A` add by point · `B` add by box · `1` `2` `3` pick "
    "SAM's candidate mask · `Enter` in the prompt runs."
)

_SCRIPT = """<script>
(() => {
  if (window.gsamShortcuts) return;  // the page may run its head scripts more than once
  window.gsamShortcuts = true;
  const keys = KEYS;
  document.addEventListener("keydown", (event) => {
    const target = event.target;
    const tag = target && target.tagName;  // radio buttons and checkboxes take shortcuts; text fields don't
    const typing = ["TEXTAREA", "SELECT"].includes(tag)
      || (tag === "INPUT" && !["radio", "checkbox", "button", "submit"].includes(target.type));
    if (typing || (target && target.isContentEditable)) return;
    let key = event.key.toLowerCase();
    if (event.ctrlKey || event.metaKey) key = (event.shiftKey ? "ctrl+shift+" : "ctrl+") + key;
    const selector = keys[key];
    const element = selector && document.querySelector(selector);
    if (!element || element.disabled) return;
    event.preventDefault();
    element.click();
  });
})();
</script>"""
HEAD = _SCRIPT.replace("KEYS", json.dumps({key: selector for key, (selector, _) in SHORTCUTS.items()}))


def counter_js(limit: int) -> str:
    """Client-side: show the prompt's length against ``limit`` (code points, as the server counts)."""
    return ("(text) => { const el = document.querySelector('#prompt-counter');"
            " const n = [...(text || '')].length;"
            f" if (el) {{ el.textContent = `${{n}} / {limit} characters`;"
            f" el.classList.toggle('at-limit', n >= {limit}); }} return []; }}")


CSS = """
#prompt-counter { font-size: var(--text-sm); color: var(--body-text-color-subdued); text-align: right;
                  margin-top: -8px; }
#prompt-counter.at-limit { color: var(--error-text-color, #c00); font-weight: 600; }
#detections { overflow-x: auto; max-width: 100%; }
#detections table { min-width: 560px; }
#instance input, #edit-class input, #preset input { padding-right: 2.4em !important;
                                                   text-overflow: ellipsis; }
#shortcuts { font-size: var(--text-sm); }
/* desktop: inputs above the sliders on the left, results on the right; phone: inputs, results, sliders */
#main-row { display: grid !important; grid-template-columns: minmax(0, 2fr) minmax(0, 3fr);
            grid-template-rows: auto 1fr; grid-template-areas: "inputs results" "controls results";
            align-items: start; }
#inputs-col { grid-area: inputs; }
#results-col { grid-area: results; }
#controls-col { grid-area: controls; }
#main-row > * { min-width: 0 !important; width: auto !important; }
#examples button { font-size: var(--text-sm); }
@media (max-width: 720px) {
  #main-row { grid-template-columns: minmax(0, 1fr); grid-template-rows: none;
              grid-template-areas: "inputs" "results" "controls"; }
  #edit-buttons { flex-direction: row !important; flex-wrap: wrap !important; }
  #edit-buttons > * { flex: 1 1 30% !important; min-width: 96px !important; }
}
"""


# The page's texts.
UNTRAINED_WARNING = (
    "> ⚠️ **Untrained model.** This server runs the *tiny-random* preset: randomly initialised "
    "models for tests and smoke runs. Its boxes, labels and masks are **meaningless**; every result "
    "is marked `\"untrained\": true`. Start it with `--config default` for real weights."
)
INTRO = (
    "# Grounded SAM\nType what to find (`dog. frisbee. person`): the detector finds the boxes and SAM "
    "cuts one mask per instance. Sliders re-filter from cache. **Correct any result**: pick an instance "
    "(list, legend or table row), then click the overlay to refine it (green adds, red removes), add a "
    "missed object by a point or a box, delete or relabel it; undo/redo; your edits survive new "
    "thresholds and go into the table, the JSON and the download."
)
_PRESET_INFO = ("default: DINO-T + SAM ViT-B; fast: + MobileSAM; hq: + SAM-HQ; sam2: + SAM 2.1-T; "
                "quality: DINO-B + SAM ViT-H; mm-tiny / llmdet-tiny: better detectors; sam3: SAM 3 alone "
                "(gated weights) (loaded on first use)")


def preset_info(names: list[str], untrained: bool) -> str:
    """The model picker's hint: which presets this server offers and how they load."""
    if len(names) == 1:
        return "This server offers one preset (start it with another --config to change models)."
    known = ("tiny-random-b: the untrained tiny models, another seed; tiny-random-sam3: an untrained tiny "
             "SAM 3 (no SAM: adding and refining are off). ") if untrained else _PRESET_INFO + ". "
    return known + "A preset loads on first use; its label says whether it is loaded or unavailable."
