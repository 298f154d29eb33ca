"""Proofs of "fast" that do not depend on the machine: count the work that was done instead of timing it.

Imported by name (``tests/`` is on ``sys.path``, see ``tests/conftest.py``).

* :func:`pillow_decodes`: every Pillow pixel decode in this process. A file refused "from its header"
  leaves it empty; a full decode adds to it.
* :func:`model_calls`: a pipeline's detector / SAM encoder / SAM decoder call counters.
* :func:`network_attempts`: every DNS lookup and socket connect in this process.
* :func:`connection_log_env` + :func:`read_connection_log`: the same for a child Python process,
  through a ``sitecustomize`` on its ``PYTHONPATH`` (nothing is blocked, only logged).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageFile


def pillow_decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A list that gets one entry per Pillow decoder created or ``ImageFile.load`` call, until undone.

    ``Image.open`` reads only the header; pixels are decoded in ``ImageFile.load`` through a decoder
    from ``Image._getdecoder``, so an image refused before decoding leaves the list empty.
    """
    calls: list[str] = []
    load, getdecoder = ImageFile.ImageFile.load, Image._getdecoder

    def counted_load(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(f"load {self.format} {self.size}")
        return load(self, *args, **kwargs)

    def counted_getdecoder(mode: str, decoder_name: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(f"decoder {decoder_name} {mode}")
        return getdecoder(mode, decoder_name, *args, **kwargs)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counted_load)
    monkeypatch.setattr(Image, "_getdecoder", counted_getdecoder)
    return calls


def model_calls(pipe: Any) -> tuple[int, int, int]:
    """(detector, SAM image encoder, SAM mask decoder) calls a ``GroundedSAM`` has made so far."""
    stats = pipe.stats
    return stats.detector_calls, stats.sam_encoder_calls, stats.sam_decoder_calls


def network_attempts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A list that gets ``"getaddrinfo HOST"`` / ``"connect HOST:PORT"`` per attempt in this process.

    The calls still go through (a refused or unresolvable address fails as usual).
    """
    attempts: list[str] = []
    getaddrinfo, connect = socket.getaddrinfo, socket.socket.connect

    def counted_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        attempts.append(f"getaddrinfo {host}")
        return getaddrinfo(host, *args, **kwargs)

    def counted_connect(self: socket.socket, address: Any) -> Any:
        attempts.append(f"connect {_address(address)}")
        return connect(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", counted_getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", counted_connect)
    return attempts


def _address(address: Any) -> str:
    return f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)


# Logs every DNS lookup and socket connect of a Python process that has the folder holding this file on
# its PYTHONPATH, one line each, to the file named by GSAM_TEST_CONNECTION_LOG. Off when that is unset.
_CONNECTION_LOGGER = '''\
import os, socket
_LOG = os.environ.get("GSAM_TEST_CONNECTION_LOG")
_getaddrinfo, _connect = socket.getaddrinfo, socket.socket.connect
def _write(line):
    with open(_LOG, "a", encoding="utf-8") as log:
        log.write(line + "\\n")
def getaddrinfo(host, *args, **kwargs):
    _write(f"getaddrinfo {host}")
    return _getaddrinfo(host, *args, **kwargs)
def connect(self, address):
    _write(f"connect {address[0]}:{address[1]}" if isinstance(address, tuple) else f"connect {address}")
    return _connect(self, address)
if _LOG:
    socket.getaddrinfo = getaddrinfo
    socket.socket.connect = connect
    _write("logging")  # proves the logger ran in this process
'''


def connection_log_env(env: dict[str, str], folder: Path) -> dict[str, str]:
    """``env`` for a child Python process that logs its network attempts into ``folder``.

    Read the log with :func:`read_connection_log` (``folder`` is created; it must be fresh).
    """
    site = folder / "site"
    site.mkdir(parents=True)
    (site / "sitecustomize.py").write_text(_CONNECTION_LOGGER, encoding="utf-8")
    path = [str(site), *filter(None, [env.get("PYTHONPATH")])]
    return {**env, "PYTHONPATH": os.pathsep.join(path), "GSAM_TEST_CONNECTION_LOG": str(folder / "net.log")}


def read_connection_log(folder: Path) -> list[str]:
    """The attempts a child started with :func:`connection_log_env` (``folder``) made, in order.

    Fails if the child never loaded the logger (then an empty list would prove nothing).
    """
    log = folder / "net.log"
    lines = log.read_text("utf-8").splitlines() if log.exists() else []
    assert "logging" in lines, f"the connection logger did not run in the child process: {lines}"
    return [line for line in lines if line != "logging"]
