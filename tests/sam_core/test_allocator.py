"""sam_core.allocator: glibc keeps freed large blocks for reuse once tuned (process-wide, so every
case runs in its own interpreter)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc-specific tuning"
)

# Allocates and frees a 64 MiB block (above glibc's default mmap threshold) and reports how much of
# it stays resident after the free.
_PROBE = r"""
import ctypes, json, os, sys
from sam_core.allocator import allocator_tuned, tune_cpu_allocator
def rss_pages():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1])
tuned = tune_cpu_allocator() if sys.argv[1] == "tune" else False
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 64 << 20
before = rss_pages()
block = libc.malloc(size)
ctypes.memset(block, 1, size)
libc.free(block)
kept_mib = (rss_pages() - before) * os.sysconf("SC_PAGE_SIZE") / 2**20
print(json.dumps({"tuned": tuned, "reported": allocator_tuned(), "kept_mib": kept_mib}))
"""


def _probe(mode: str, **env: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_untuned_glibc_returns_a_freed_large_block_to_the_os() -> None:
    result = _probe("none")
    assert result == {"tuned": False, "reported": False, "kept_mib": pytest.approx(0, abs=8)}


def test_tuned_allocator_keeps_a_freed_large_block_for_reuse() -> None:
    result = _probe("tune")
    assert result["tuned"] is True and result["reported"] is True
    assert result["kept_mib"] >= 60


def test_environment_variable_turns_tuning_off() -> None:
    result = _probe("tune", SAM_CORE_TUNE_MALLOC="0")
    assert result["tuned"] is False and result["reported"] is False
    assert result["kept_mib"] == pytest.approx(0, abs=8)


_PIPELINE = r"""
import json, sys
from grounded import GroundedSAM
from sam_core.allocator import allocator_tuned
GroundedSAM.from_config("tiny-random", tune_allocator=sys.argv[1] == "on")
print(json.dumps(allocator_tuned()))
"""


@pytest.mark.slow  # each case builds a pipeline in a fresh interpreter
@pytest.mark.parametrize(("flag", "expected"), [("on", True), ("off", False)])
def test_pipeline_tunes_the_allocator_unless_configured_off(flag: str, expected: bool) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PIPELINE, flag], capture_output=True, text=True, check=True, timeout=300
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) is expected
