"""The real-weights code path: a YAML config naming a Hub id and a Meta .pth loads offline from a warm cache.

No pretrained weights can be downloaded here, so the untrained tiny models are saved in the layouts the
real checkpoints use (a Hugging Face snapshot in the Hub cache; Meta's ``.pth`` state dict) and loaded
through exactly the code that loads ``IDEA-Research/grounding-dino-tiny`` and ``sam_vit_b_01ec64.pth``.
"""

from __future__ import annotations

import json
import socket

import huggingface_hub.constants as constants
import numpy as np
import pytest
import torch

from grounded import GroundedSAM

COMMIT = "0123456789abcdef0123456789abcdef01234567"
LOW = {"box_threshold": 0.0, "text_threshold": 0.0, "max_detections": 5}


@pytest.fixture(scope="module")
def reference() -> GroundedSAM:
    return GroundedSAM.from_config("tiny-random")


def _warm_cache(reference: GroundedSAM, root) -> None:
    """What ``hf download acme/tiny-gd`` leaves in the Hub cache."""
    repo = root / "models--acme--tiny-gd"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot = repo / "snapshots" / COMMIT
    reference.detector.model.save_pretrained(snapshot)
    reference.detector.tokenizer.save_pretrained(snapshot)
    size = reference.detector.preprocessor
    (snapshot / "preprocessor_config.json").write_text(
        json.dumps({"size": {"shortest_edge": size.shortest_edge, "longest_edge": size.longest_edge}})
    )


def test_yaml_config_loads_hub_id_and_meta_checkpoint_offline(reference, tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    _warm_cache(reference, cache)
    sam_path = tmp_path / "sam_tiny.pth"
    torch.save(reference.sam.state_dict(), sam_path)  # Meta's key layout
    config = tmp_path / "offline.yaml"
    config.write_text(
        f"detector: {{model: acme/tiny-gd}}\nsam: {{model_type: tiny, checkpoint: {sam_path}}}\n"
        "box_threshold: 0.3\ndtype: float32\n"  # compared with the float32 reference below
    )
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    def _no_network(*args, **kwargs):
        raise AssertionError("loading from a warm cache must not touch the network")

    monkeypatch.setattr(socket, "create_connection", _no_network)
    monkeypatch.setattr(socket, "getaddrinfo", _no_network)

    pipe = GroundedSAM.from_config(config, device="cpu")
    assert not pipe.is_untrained
    assert pipe.config.box_threshold == 0.3 and pipe.config.name == "offline"
    assert pipe.detector.model_id == "acme/tiny-gd"

    image = np.random.default_rng(3).integers(0, 256, (80, 120, 3), dtype=np.uint8)
    ours = pipe.predict(image, "cat. dog", **LOW)
    ref = reference.predict(image, "cat. dog", **LOW)
    assert len(ours) == len(ref) > 0
    np.testing.assert_allclose(ours.xyxy, ref.xyxy, atol=1e-3)
    assert list(ours.data["class_name"]) == list(ref.data["class_name"])
    assert (ours.mask == ref.mask).mean() >= 0.999


def test_a_big_sam_without_checkpoint_is_refused(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("detector: tiny-random\nsam: {model_type: vit_b, checkpoint: null}\n")
    with pytest.raises(ValueError, match="needs a checkpoint"):
        GroundedSAM.from_config(config)


def test_sam_presets_load_released_files_from_a_warm_hub_cache_through_config_and_cli(tmp_path, monkeypatch):
    """``sam: vit_t`` names hf://dhkim2810/MobileSAM/mobile_sam.pt: a MobileSAM state dict in the released
    layout, cached as ``hf download`` leaves it, loads offline and segments; so does ``--sam vit_t``."""
    from grounded.cli import main
    from grounded.config import SAM_PRESETS
    from sam_core import build_sam

    assert SAM_PRESETS["vit_t"].checkpoint == "hf://dhkim2810/MobileSAM/mobile_sam.pt"
    cache = tmp_path / "hub"
    snapshot = cache / "models--dhkim2810--MobileSAM" / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (cache / "models--dhkim2810--MobileSAM" / "refs").mkdir()
    (cache / "models--dhkim2810--MobileSAM" / "refs" / "main").write_text(COMMIT)
    source = build_sam("vit_t", device="cpu", seed=3)
    torch.save(source.state_dict(), snapshot / "mobile_sam.pt")  # MobileSAM's own key layout
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    def _no_network(*args, **kwargs):
        raise AssertionError("loading from a warm cache must not touch the network")

    monkeypatch.setattr(socket, "create_connection", _no_network)
    monkeypatch.setattr(socket, "getaddrinfo", _no_network)

    config = tmp_path / "mobile.yaml"
    config.write_text("preset: tiny-random\nsam: vit_t\n")
    pipe = GroundedSAM.from_config(config, device="cpu")
    assert pipe.describe()["sam"]["model_type"] == "vit_t"
    loaded, expected = pipe.sam.state_dict(), source.state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[name], expected[name]) for name in expected)
    image = np.random.default_rng(4).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    assert len(pipe.predict(image, "cat. dog", **LOW)) > 0

    photo = tmp_path / "a.png"
    from PIL import Image

    Image.fromarray(image).save(photo)
    out = tmp_path / "out"
    assert main(["predict", str(photo), "-p", "cat", "-o", str(out), "-q", "-c", "tiny-random",
                 "--sam", "vit_t", "--device", "cpu"]) == 0
    record = json.loads((out / "predictions.jsonl").read_text().splitlines()[0])
    assert record["model"]["sam"]["model_type"] == "vit_t"


def test_a_missing_hub_file_names_the_repo_the_file_and_the_remedies(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    config = tmp_path / "hq.yaml"
    config.write_text("preset: tiny-random\nsam: hq_vit_tiny\n")
    with pytest.raises(ValueError) as info:
        GroundedSAM.from_config(config, device="cpu")
    message = str(info.value)
    for part in ("lkeab/hq-sam", "sam_hq_vit_tiny.pth", "HF_HUB_OFFLINE", "hf download lkeab/hq-sam"):
        assert part in message
