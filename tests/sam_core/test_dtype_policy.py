"""The ``auto`` precision policy: bf16 exactly where the hardware multiplies it natively."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sam_core import build_sam
from sam_core.device import NATIVE_BF16_ENV, cpu_has_native_bf16, resolve_dtype

CPU = torch.device("cpu")


def _cpuinfo_flags() -> set[str] | None:
    path = Path("/proc/cpuinfo")
    if not path.exists():
        return None
    for line in path.read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return None


@pytest.fixture(autouse=True)
def _no_override(monkeypatch):
    monkeypatch.delenv(NATIVE_BF16_ENV, raising=False)


def test_probe_agrees_with_the_cpu_flags():
    flags = _cpuinfo_flags()
    if flags is None:
        pytest.skip("no /proc/cpuinfo on this OS: nothing to compare the probe with")
    assert cpu_has_native_bf16() == bool({"avx512_bf16", "amx_bf16"} & flags)


def test_auto_follows_the_probe_and_never_gives_float16_on_cpu(monkeypatch):
    expected = torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    assert resolve_dtype("auto", CPU) == expected
    assert resolve_dtype("auto") == expected  # no device: the CPU


def test_emulated_bf16_cpus_get_float32(monkeypatch):
    # An AVX-512 BW/VL CPU without AVX512_BF16/AMX: oneDNN says "bf16 supported", yet it is emulated.
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert not cpu_has_native_bf16()
    assert resolve_dtype("auto", CPU) == torch.float32
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert resolve_dtype("auto", CPU) == torch.bfloat16


@pytest.mark.parametrize(("value", "expected"), [("0", torch.float32), ("1", torch.bfloat16)])
def test_environment_forces_the_probe(monkeypatch, value, expected):
    monkeypatch.setenv(NATIVE_BF16_ENV, value)
    assert resolve_dtype("AUTO", CPU) == expected


def test_explicit_dtypes_are_kept_and_bad_ones_refused():
    assert resolve_dtype("float32", CPU) == torch.float32
    assert resolve_dtype(torch.float16, CPU) == torch.float16
    assert resolve_dtype(None, CPU) == torch.float32
    with pytest.raises(ValueError, match="unsupported dtype 'int8'"):
        resolve_dtype("int8", CPU)


def test_build_sam_auto_uses_the_policy(monkeypatch):
    monkeypatch.setenv(NATIVE_BF16_ENV, "0")
    assert build_sam("tiny", device="cpu", dtype="auto", seed=0).dtype == torch.float32
    monkeypatch.setenv(NATIVE_BF16_ENV, "1")
    assert build_sam("tiny", device="cpu", dtype="auto", seed=0).dtype == torch.bfloat16
