"""Command-line flags and environment variables of ``python app.py`` (no gradio import)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

__all__ = ["parse_args"]


def _env(*names: str, default: str | None = None) -> str | None:
    return next((os.environ[name] for name in names if os.environ.get(name)), default)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Grounded SAM web app (Gradio).")
    parser.add_argument("--config", default=_env("GSAM_CONFIG", default="default"),
                        help="preset (default, quality, tiny-random) or YAML path [GSAM_CONFIG]")
    parser.add_argument("--detector", default=_env("GSAM_DETECTOR"),
                        help="replace the config's detector: a preset (mm-grounding-dino-tiny, llmdet-tiny, "
                             "...), Hub id, folder or IDEA .pth [GSAM_DETECTOR]")
    parser.add_argument("--host", default=_env("GSAM_HOST", "GRADIO_SERVER_NAME", default="127.0.0.1"),
                        help="bind address; 0.0.0.0 to serve the network [GSAM_HOST, GRADIO_SERVER_NAME]")
    parser.add_argument("--port", type=int,
                        default=int(_env("GSAM_PORT", "GRADIO_SERVER_PORT", default="7860")),
                        help="port [GSAM_PORT, GRADIO_SERVER_PORT]")
    parser.add_argument("--share", action="store_true",
                        default=_env("GSAM_SHARE", default="0").lower() in ("1", "true", "yes"),
                        help="create a public gradio.live link [GSAM_SHARE=1]")
    parser.add_argument("--device", default=_env("GSAM_DEVICE"),
                        help="cpu, cuda, mps (default: auto) [GSAM_DEVICE]")
    parser.add_argument("--queue-size", type=int, default=int(_env("GSAM_QUEUE_SIZE", default="16")),
                        help="max waiting requests [GSAM_QUEUE_SIZE]")
    parser.add_argument("--concurrency", type=int, default=int(_env("GSAM_CONCURRENCY", default="1")),
                        help="model events running at once [GSAM_CONCURRENCY]")
    parser.add_argument("--max-sessions", type=int, default=int(_env("GSAM_MAX_SESSIONS", default="256")),
                        help="sessions whose state is kept (LRU) [GSAM_MAX_SESSIONS]")
    parser.add_argument("--request-memory-mb", type=float,
                        default=float(_env("GSAM_REQUEST_MEMORY", default="2048")),
                        help="largest projected memory of one request [GSAM_REQUEST_MEMORY]")
    parser.add_argument("--tune-allocator", action="store_true",
                        default=_env("GSAM_TUNE_ALLOCATOR", default="0").lower() in ("1", "true", "yes"),
                        help="keep freed activation memory for reuse: faster, but the process holds its "
                             "peak heap [GSAM_TUNE_ALLOCATOR=1]")
    parser.add_argument("--session-memory-mb", type=float,
                        default=float(_env("GSAM_SESSION_MEMORY", default="1024")),
                        help="all tabs' kept results together (LRU) [GSAM_SESSION_MEMORY]")
    parser.add_argument("--max-file-size-mb", type=float,
                        default=float(_env("GSAM_MAX_FILE_SIZE", default="25")),
                        help="largest accepted image file in MB [GSAM_MAX_FILE_SIZE]")
    return parser.parse_args(argv)
