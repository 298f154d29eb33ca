"""Loading weights: Meta .pth / .safetensors, Hugging Face folder and Hub cache; strict refusals."""

from __future__ import annotations

import argparse
import json
import shutil
import socket

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from sam_core import CheckpointError, SamPredictor, build_sam, load_sam_state_dict, sam_model_registry
from sam_core.checkpoint import check_state_dict

BOX = np.array([10, 10, 60, 70])


def _outputs(sam, image):
    pred = SamPredictor(sam)
    pred.set_image(image)
    masks, iou, low_res = pred.predict(box=BOX)
    return pred.features, iou, low_res


@pytest.fixture
def meta_pth(tiny, tmp_path):
    """tiny's weights saved in Meta's layout, the way sam_vit_b_01ec64.pth is (a plain state dict)."""
    path = tmp_path / "sam_tiny.pth"
    torch.save(tiny.sam.state_dict(), path)
    return path


def test_meta_pth_and_hf_folder_give_identical_outputs(tiny, image, meta_pth, tmp_path) -> None:
    from_pth = build_sam(tiny.config, meta_pth, device="cpu")
    st_path = tmp_path / "sam_tiny_meta_keys.safetensors"
    save_file(dict(tiny.sam.state_dict()), st_path)
    from_st = build_sam(tiny.config, st_path, device="cpu")
    reference = _outputs(tiny.sam, image)  # tiny.sam came from SamModel.save_pretrained
    for sam in (from_pth, from_st):
        for ours, ref in zip(_outputs(sam, image), reference, strict=True):
            assert torch.equal(torch.as_tensor(ours), torch.as_tensor(ref))
    state = torch.load(meta_pth, weights_only=True)
    assert all(k.split(".")[0] in ("image_encoder", "prompt_encoder", "mask_decoder") for k in state)


def test_hf_folder_and_bare_hf_safetensors_and_auto(tiny, image) -> None:
    bare = build_sam(tiny.config, tiny.folder / "model.safetensors", device="cpu")  # HF keys, no config.json
    auto = build_sam("auto", tiny.folder, device="cpu")  # architecture from config.json
    assert auto.config == tiny.config
    reference = _outputs(tiny.sam, image)
    for sam in (bare, auto):
        for ours, ref in zip(_outputs(sam, image), reference, strict=True):
            assert torch.equal(torch.as_tensor(ours), torch.as_tensor(ref))


def test_state_dict_is_meta_layout_and_complete(tiny) -> None:
    state = load_sam_state_dict(tiny.folder, config=tiny.config)
    assert set(state) == set(tiny.sam.state_dict())
    assert "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix" in state
    assert "pixel_mean" not in state  # non-persistent, as in Meta's checkpoints


def _expect_keys_in_error(state, sam, *names: str, count: str | None = None) -> str:
    with pytest.raises(CheckpointError) as info:
        check_state_dict(sam, state)
    message = str(info.value)
    for name in names:
        assert name in message
    if count is not None:
        assert count in message
    return message


def test_missing_unexpected_and_misshaped_keys_are_named(tiny, tmp_path) -> None:
    good = dict(tiny.sam.state_dict())
    missing = dict(good)
    del missing["mask_decoder.iou_token.weight"]
    _expect_keys_in_error(missing, tiny.sam, "1 missing", "mask_decoder.iou_token.weight")

    extra = {**good, "image_encoder.blocks.99.attn.qkv.weight": torch.zeros(1)}
    _expect_keys_in_error(extra, tiny.sam, "1 unexpected", "image_encoder.blocks.99.attn.qkv.weight")

    misshaped = {**good, "image_encoder.pos_embed": torch.zeros(1, 4, 4, 32)}
    _expect_keys_in_error(misshaped, tiny.sam, "image_encoder.pos_embed", "(1, 4, 4, 32)", "(1, 8, 8, 32)")

    many = {k: v for k, v in good.items() if not k.startswith("mask_decoder.transformer.layers.0.")}
    message = _expect_keys_in_error(many, tiny.sam, "missing")
    assert "more)" in message  # the first few names plus a count of the rest

    # Through the public builder, from a file on disk:
    path = tmp_path / "missing.pth"
    torch.save(missing, path)
    with pytest.raises(CheckpointError, match="mask_decoder.iou_token.weight"):
        build_sam(tiny.config, path, device="cpu")


def test_wrong_model_type_is_refused(tiny, meta_pth) -> None:
    with pytest.raises(CheckpointError, match="mis-shaped|missing"):
        sam_model_registry["vit_b"](checkpoint=meta_pth)  # Meta-style call, wrong architecture
    with pytest.raises(CheckpointError, match="window_size"):  # config.json disagrees with the request
        from dataclasses import replace

        build_sam(replace(tiny.config, window_size=3), tiny.folder, device="cpu")


def test_corrupt_and_truncated_files_give_clear_errors(meta_pth, tiny, tmp_path) -> None:
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(meta_pth.read_bytes()[: meta_pth.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        build_sam(tiny.config, truncated, device="cpu")

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01not a safetensors file" * 10)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        build_sam(tiny.config, garbage, device="cpu")

    folder = tmp_path / "cut_hf"
    shutil.copytree(tiny.folder, folder)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        build_sam(tiny.config, folder, device="cpu")

    pickled = tmp_path / "objects.pth"
    torch.save({"args": argparse.Namespace(lr=1)}, pickled)
    with pytest.raises(CheckpointError, match="weights_only"):
        build_sam(tiny.config, pickled, device="cpu")

    with pytest.raises(CheckpointError, match="not found"):
        build_sam(tiny.config, tmp_path / "nope.pth", device="cpu")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(CheckpointError, match="config.json"):
        build_sam(tiny.config, tmp_path / "empty_dir", device="cpu")


def test_hub_id_offline_with_cold_cache_fails_fast_with_options(tmp_path, monkeypatch) -> None:
    cache = tmp_path / "hf_cache"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    with pytest.raises(CheckpointError) as info:
        build_sam("vit_b", "facebook/sam-vit-base", device="cpu")
    message = str(info.value)
    for part in (
        "config.json",
        "model.safetensors",
        str(cache),
        "HF_HUB_OFFLINE",
        "hf download",
        "local path",
    ):
        assert part in message


def _no_network(monkeypatch) -> list[str]:
    """Refuse every DNS lookup and connection; return the list of refused attempts."""
    attempts: list[str] = []

    def refuse(*args, **kwargs):
        attempts.append(str(args[0]) if args else "?")
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", lambda self, address: refuse(address))
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    return attempts


def test_hub_id_without_network_fails_fast(tmp_path, monkeypatch) -> None:
    attempts = _no_network(monkeypatch)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    with pytest.raises(CheckpointError, match="no network") as info:
        build_sam("vit_b", "facebook/sam-vit-base", device="cpu")
    # fast without a stopwatch: one refused attempt, not huggingface_hub's retries with back-off
    # (hf_hub_download alone retries 5 times over ~23 s)
    assert len(attempts) == 1, attempts
    assert "HF_HUB_OFFLINE=1" in str(info.value) and "hf download" in str(info.value)


@pytest.mark.parametrize("offline", ["1", None], ids=["HF_HUB_OFFLINE=1", "online-env"])
def test_hub_id_with_warm_cache_loads_without_network(tiny, image, tmp_path, monkeypatch, offline) -> None:
    cache = tmp_path / "hf_cache"
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--someone--sam-tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(tiny.folder, repo / "snapshots" / commit)  # what `hf download` leaves behind
    _no_network(monkeypatch)  # any network call would fail the load
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", offline)
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    sam = build_sam("auto", "someone/sam-tiny", device="cpu")
    for ours, ref in zip(_outputs(sam, image), _outputs(tiny.sam, image), strict=True):
        assert torch.equal(torch.as_tensor(ours), torch.as_tensor(ref))


def test_hf_config_json_is_verified(tiny, tmp_path) -> None:
    folder = tmp_path / "edited"
    shutil.copytree(tiny.folder, folder)
    config = json.loads((folder / "config.json").read_text())
    config["vision_config"]["use_rel_pos"] = False
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="use_rel_pos"):
        build_sam(tiny.config, folder, device="cpu")
