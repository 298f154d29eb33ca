"""Shared helpers for the reliability tests (imported by name: pytest puts this folder on ``sys.path``).

Everything here is loopback-only and bounded: servers bind 127.0.0.1 on a free port, every wait has
a deadline, and every process started here is stopped by its own id.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from app_launch import free_port, launched, load_app  # noqa: F401 - re-exported to the tests
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
SERVE_APP = Path(__file__).resolve().parent / "serve_app.py"

# Records (and blocks) every non-loopback DNS lookup or connection of a Python process that has the
# folder holding this file on its PYTHONPATH; NETLOG names the log file. Off when NETLOG is unset.
NETWORK_RECORDER = '''\
import os, socket, traceback
_LOG = os.environ.get("NETLOG")
_connect, _getaddrinfo = socket.socket.connect, socket.getaddrinfo
def _loopback(host):
    host = host.decode() if isinstance(host, bytes) else str(host)
    return host in ("localhost", "::1", "0.0.0.0", "") or host.startswith("127.")
def _record(kind, host):
    with open(_LOG, "a", encoding="utf-8") as log:
        log.write(f"{kind} {host}\\n" + "".join(traceback.format_stack(limit=30)) + "\\n")
def connect(self, address):
    if isinstance(address, tuple) and not _loopback(address[0]):
        _record("connect", address[0])
        raise OSError("non-loopback network blocked by the reliability tests")
    return _connect(self, address)
def getaddrinfo(host, *args, **kwargs):
    if host is not None and not _loopback(host):
        _record("getaddrinfo", host)
        raise socket.gaierror("non-loopback network blocked by the reliability tests")
    return _getaddrinfo(host, *args, **kwargs)
if _LOG:
    socket.socket.connect = connect
    socket.getaddrinfo = getaddrinfo
'''


# ------------------------------------------------------------------------------------ the app module
# --------------------------------------------------------------------------------- server processes
@contextlib.contextmanager
def app_process(args: list[str], *, workdir: Path, env: Mapping[str, str], startup_s: float = 240
                ) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run ``serve_app.py ARGS`` (``app.main``) on a free loopback port; yield (url, process).

    Output goes to ``workdir/server.log``. The process is stopped (SIGTERM, then SIGKILL) on exit.
    """
    port = free_port()
    log = open(workdir / "server.log", "wb")  # noqa: SIM115 - closed in finally
    process = subprocess.Popen(
        [sys.executable, str(SERVE_APP), *args, "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO, env=dict(env), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + startup_s
        while True:
            if process.poll() is not None:
                raise AssertionError(f"app exited ({process.returncode}):\n{tail(workdir / 'server.log')}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no answer in {startup_s} s:\n{tail(workdir / 'server.log')}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=5).status_code == 200:
                    break
            time.sleep(0.5)
        yield url, process
    finally:
        stop(process)
        log.close()


def stop(process: subprocess.Popen, *, grace_s: float = 15) -> None:
    """Stop one process started by these tests, by its own id."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(grace_s)


def tail(path: Path, chars: int = 3000) -> str:
    return path.read_text("utf-8", errors="replace")[-chars:] if path.exists() else "(no log)"


def server_env(site_dir: Path, netlog: Path, temp_dir: Path, **extra: str) -> dict[str, str]:
    """Environment of a server subprocess: network recorder on, own Gradio cache folder, offline Hub.

    ``GRADIO_ANALYTICS_ENABLED`` is removed so the server behaves as ``python app.py`` does for a user.
    """
    site_dir.mkdir(parents=True, exist_ok=True)
    (site_dir / "sitecustomize.py").write_text(NETWORK_RECORDER, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("GRADIO_ANALYTICS_ENABLED", "PYTHONPATH")}
    env.update(PYTHONPATH=str(site_dir), NETLOG=str(netlog), GRADIO_TEMP_DIR=str(temp_dir),
               HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", **extra)
    return env


def network_attempts(netlog: Path) -> list[str]:
    """First line ("getaddrinfo HOST" / "connect HOST") of every recorded non-loopback attempt."""
    if not netlog.exists():
        return []
    lines = netlog.read_text("utf-8").splitlines()
    return [line for line in lines if line.startswith(("connect ", "getaddrinfo "))]


# ------------------------------------------------------------------------------------------- images
def random_rgb(seed: int, height: int, width: int) -> np.ndarray:
    """H x W x 3 uint8 noise with a few flat blocks (so detectors and PNG both have structure)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    for _ in range(3):
        y, x = rng.integers(0, max(1, height // 2)), rng.integers(0, max(1, width // 2))
        image[y : y + height // 3, x : x + width // 3] = rng.integers(0, 256, 3, dtype=np.uint8)
    return image


def png_bytes(image: np.ndarray | Image.Image) -> bytes:
    buffer = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A valid 1-bit PNG of ``width`` x ``height`` black pixels, a few tens of kB (built row by row)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + bytes((width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit gray, no interlace
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def bad_image_files(folder: Path) -> dict[str, str]:
    """Write broken inputs into ``folder``: file name -> the words its error message must contain."""
    folder.mkdir(parents=True, exist_ok=True)
    full = png_bytes(random_rgb(41, 64, 64))
    (folder / "cut.png").write_bytes(full[: len(full) // 2])
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.png").write_text("not a picture\n", encoding="utf-8")
    (folder / "logo.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>')
    (folder / "bomb.png").write_bytes(bomb_png())
    return {"cut.png": "truncated", "empty.png": "empty", "notes.png": "text file", "logo.svg": "SVG",
            "bomb.png": "20000×20000 = 400.0 MP; the limit is 40.0 MP"}


def exif_rotated_jpeg(path: Path, stored: np.ndarray, orientation: int = 6) -> Path:
    """Save ``stored`` (H x W x 3) as a JPEG whose EXIF says: rotate to display (6 = 90° clockwise)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    return path


def rle_masks(result: Mapping[str, Any]) -> np.ndarray:
    """N x H x W bool masks of a shared-schema result dict (decoded with pycocotools directly)."""
    from pycocotools import mask as mask_utils

    height, width = result["image"]["height"], result["image"]["width"]
    masks = [mask_utils.decode({"size": row["mask"]["size"], "counts": row["mask"]["counts"].encode("ascii")})
             for row in result["detections"]]
    return np.stack(masks).astype(bool) if masks else np.zeros((0, height, width), bool)
