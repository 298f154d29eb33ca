"""Checklist 21 and 23 with real files: tampered, truncated and pickled checkpoints are refused clearly,
for SAM (``sam_core.CheckpointError``) and for the Grounding DINO folder, through the API and the CLI."""

from __future__ import annotations

import pathlib
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from grounded.detectors.tiny import build_tiny_detector
from sam_core import CheckpointError, build_sam

KEY = "mask_decoder.iou_token.weight"  # a SAM tensor whose name we tamper with
TAMPERED = "mask_decoder.iou_tokem.weight"  # same length: the safetensors header stays valid


class _Exploit:
    """Unpickling this would create ``marker``: the payload of a malicious ``.pth``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


@pytest.fixture(scope="module")
def sam_state() -> dict[str, torch.Tensor]:
    return {k: v.contiguous() for k, v in build_sam("tiny", device="cpu", seed=0).state_dict().items()}


@pytest.fixture(scope="module")
def detector_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-gd")
    detector = build_tiny_detector(0)
    detector.model.save_pretrained(folder)
    detector.tokenizer.save_pretrained(folder)
    return folder


def _copy(folder: Path, tmp_path: Path) -> Path:
    target = tmp_path / "detector"
    shutil.copytree(folder, target)
    return target


# ---------------------------------------------------------------------------------------------- SAM
def test_a_malicious_pth_is_refused_without_running_its_payload(sam_state, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "sam_tiny.pth"
    torch.save({**sam_state, "payload": _Exploit(marker)}, path)
    with pytest.raises(CheckpointError, match=r"refusing to unpickle.*weights_only=True"):
        build_sam("tiny", path, device="cpu")
    assert not marker.exists(), "the checkpoint's pickle payload ran"


def test_a_tampered_safetensors_key_is_refused_naming_both_keys(sam_state, tmp_path):
    path = tmp_path / "sam_tiny.safetensors"
    save_file(sam_state, path)
    data = path.read_bytes()
    assert data.count(KEY.encode()) == 1
    path.write_bytes(data.replace(KEY.encode(), TAMPERED.encode()))
    with pytest.raises(CheckpointError) as info:
        build_sam("tiny", path, device="cpu")
    message = str(info.value)
    assert f"1 missing key(s): {KEY}" in message and f"1 unexpected key(s): {TAMPERED}" in message


def test_a_mis_shaped_tensor_and_a_truncated_file_are_refused(sam_state, tmp_path):
    path = tmp_path / "sam_tiny.safetensors"
    save_file({**sam_state, KEY: torch.zeros(2, sam_state[KEY].shape[1])}, path)
    with pytest.raises(CheckpointError, match=rf"mis-shaped key\(s\): {KEY}: checkpoint \(2, \d+\)"):
        build_sam("tiny", path, device="cpu")
    save_file(sam_state, path)
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        build_sam("tiny", path, device="cpu")
    build_sam("tiny", _save(sam_state, tmp_path / "ok.safetensors"), device="cpu")  # the intact file loads


def _save(state: dict[str, torch.Tensor], path: Path) -> Path:
    save_file(state, path)
    return path


# ------------------------------------------------------------------------------- Grounding DINO
def test_a_pickle_only_detector_folder_is_refused_without_unpickling(detector_folder, tmp_path):
    from grounded.detectors.grounding_dino import GroundingDinoDetector, ModelUnavailableError

    folder = _copy(detector_folder, tmp_path)
    marker = tmp_path / "pwned"
    (folder / "model.safetensors").unlink()
    torch.save({"payload": _Exploit(marker)}, folder / "pytorch_model.bin")  # the legacy pickle format
    with pytest.raises(ModelUnavailableError, match="lacks model.safetensors"):
        GroundingDinoDetector.from_pretrained(str(folder))
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_corrupt_detector_safetensors_is_a_clear_value_error(detector_folder, tmp_path, damage):
    """transformers' raw ``SafetensorError`` must not escape (it is not a ValueError, names no file)."""
    from grounded.detectors.grounding_dino import GroundingDinoDetector

    folder = _copy(detector_folder, tmp_path)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\x00\x01garbage" * 64)
    with pytest.raises(ValueError) as info:
        GroundingDinoDetector.from_pretrained(str(folder))
    message = str(info.value)
    assert "model.safetensors" in message and str(folder.name) in message
    assert "download" in message.lower()  # says what to do


def test_a_detector_checkpoint_with_a_renamed_key_is_refused_naming_it(detector_folder, tmp_path):
    """transformers would re-initialise the missing tensor at random and load anyway."""
    from grounded.detectors.grounding_dino import GroundingDinoDetector

    folder = _copy(detector_folder, tmp_path)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    key = b"model.query_position_embeddings.weight"
    assert data.count(key) == 1
    weights.write_bytes(data.replace(key, b"model.query_position_embeddingz.weight"))
    with pytest.raises((ValueError, RuntimeError)) as info:
        GroundingDinoDetector.from_pretrained(str(folder))
    assert "model.query_position_embeddings.weight" in str(info.value)


def test_the_cli_reports_a_corrupt_detector_without_a_traceback(detector_folder, tmp_path, capsys):
    """A corrupt detector must be one of the errors ``_load_pipeline`` reports without a traceback."""
    from grounded.cli import main

    folder = _copy(detector_folder, tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:4096])
    config = tmp_path / "corrupt.yaml"
    config.write_text(f"detector: {{model: {folder}}}\nsam: tiny-random\n", encoding="utf-8")
    image = tmp_path / "in" / "a.png"
    image.parent.mkdir()
    from PIL import Image

    Image.new("RGB", (32, 24)).save(image)
    code = main(["predict", str(image.parent), "-p", "cat", "-o", str(tmp_path / "out"), "-q",
                 "--config", str(config)])
    err = capsys.readouterr().err
    assert code == 1
    assert "could not load the models" in err and "model.safetensors" in err
