"""Load ``app.py`` and launch its demo on loopback: shared by tests/app and tests/reliability.

``app.py`` sits at the repository root (Hugging Face Spaces runs it as a script), so it is loaded by
file path rather than through ``sys.path``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def load_app() -> ModuleType:
    """Import ``app.py`` once, as module ``app``."""
    if "app" not in sys.modules:
        spec = importlib.util.spec_from_file_location("app", REPO / "app.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["app"] = module
        spec.loader.exec_module(module)
    return sys.modules["app"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def launched(app_module: ModuleType, demo: Any, **kwargs: Any) -> Iterator[str]:
    """Launch ``demo`` on 127.0.0.1 with the app's own launch settings; yield its URL; close it."""
    app_module.launch_demo(demo, host="127.0.0.1", port=free_port(), prevent_thread_lock=True, **kwargs)
    try:
        yield demo.local_url
    finally:
        demo.close()
