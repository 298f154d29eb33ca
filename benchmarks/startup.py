"""Start-up: seconds from a fresh ``python`` to ``import grounded`` done, and from ``python app.py`` to
the web app answering HTTP, each the best of ``repeats`` fresh processes.

The app is started with ``--config tiny-random`` (untrained toy models, nothing to download): a proxy
for "cached weights" that measures imports, Gradio's start-up and model building, not reading 1 GB
of real weights from disk (add ~1 s per GB at SSD speed for those). ``import grounded``'s heaviest
imports are listed from ``python -X importtime`` (cumulative microseconds, top rows).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ["import_time", "app_start_time", "heaviest_imports", "measure_startup"]

_ROOT = Path(__file__).resolve().parent.parent
# ``import grounded`` is lazy (names resolve on first use); this is what the pipeline's first use costs.
_PIPELINE_IMPORT = "from grounded import GroundedSAM"


def _env() -> dict[str, str]:
    env = dict(
        os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", TRANSFORMERS_VERBOSITY="error"
    )
    env["PYTHONPATH"] = str(_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def import_time(code: str = "import grounded", *, repeats: int = 3) -> float:
    """Best wall seconds of ``python -c CODE`` (interpreter start included)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=_env(), cwd=_ROOT)
        best = min(best, time.perf_counter() - start)
    return best


def heaviest_imports(code: str = _PIPELINE_IMPORT, top: int = 8) -> list[tuple[str, float]]:
    """(package, cumulative seconds) of the slowest imports two levels deep under ``python -c CODE``."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=_ROOT,
        check=True,
    )
    rows = []
    for line in proc.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            name = parts[2].rstrip()
            if len(name) - len(name.lstrip()) <= 3:  # top-level modules and their direct imports
                rows.append((name.strip(), int(parts[1]) / 1e6))
    return sorted(rows, key=lambda r: -r[1])[:top]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def app_start_time(*, config: str = "tiny-random", timeout: float = 300) -> float:
    """Wall seconds from ``python app.py --config CONFIG`` to its first HTTP 200 on ``/``."""
    port = _free_port()
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "app.py", "--config", config, "--port", str(port)],
        env=_env(),
        cwd=_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while time.perf_counter() - start < timeout:
            if proc.poll() is not None:
                raise RuntimeError(f"app.py exited with {proc.returncode} before serving")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as response:
                    if response.status == 200:
                        return time.perf_counter() - start
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"app.py did not serve within {timeout} s")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def measure_startup(*, repeats: int = 3, app: bool = True) -> dict[str, Any]:
    """``import grounded`` and app start-up seconds (best of ``repeats``), and the heaviest imports."""
    result: dict[str, Any] = {
        "python_s": import_time("import sys", repeats=repeats),
        "import_grounded_s": import_time("import grounded", repeats=repeats),
        "import_pipeline_s": import_time(_PIPELINE_IMPORT, repeats=repeats),
        "import_sam_core_s": import_time("import sam_core", repeats=repeats),
        "heaviest_imports_s": heaviest_imports(),
    }
    if app:
        result["app_to_serving_s"] = min(app_start_time() for _ in range(repeats))
        result["app_note"] = (
            "--config tiny-random: imports + Gradio + building toy models; no weight files read"
        )
    return result


if __name__ == "__main__":
    import json

    print(json.dumps(measure_startup(), indent=2))
