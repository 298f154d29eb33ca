"""Run the real ``app.main()`` for the reliability tests' server subprocess.

Arguments and environment are exactly ``python app.py``'s. One test knob: ``GSAM_TEST_DELETE_CACHE=
"FREQUENCY,AGE"`` (seconds) shortens Gradio's cache retention (the app's own is ``(600, 3600)``), so
a soak test of a few minutes can observe temporary files being deleted.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def _load_app() -> Any:
    spec = importlib.util.spec_from_file_location("app", REPO / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["app"] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    app = _load_app()
    retention = os.environ.get("GSAM_TEST_DELETE_CACHE")
    if retention:
        frequency, age = (int(value) for value in retention.split(","))
        build_demo = app.build_demo

        def build_demo_with_short_retention(*args: Any, **kwargs: Any) -> Any:
            demo = build_demo(*args, **kwargs)
            demo.delete_cache = (frequency, age)
            return demo

        app.build_demo = build_demo_with_short_retention
    app.main(sys.argv[1:])


if __name__ == "__main__":
    main()
