"""SAM-HQ / MobileSAM weights: released key layouts, round trips between layouts, strict refusals."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from reference_packages import import_reference
from safetensors.torch import save_file

from sam_core import SAM_CONFIGS, CheckpointError, SamPredictor, build_sam, sam_model_registry
from sam_core.build import sam_from_config
from sam_core.hf_format import hf_key_to_meta

BOX = np.array([10, 10, 60, 70])
CLASSIFIER = ("image_encoder.head.", "image_encoder.norm_head.")  # TinyViT's unused ImageNet head


def _shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _outputs(sam, image, hq_token_only=False):
    pred = SamPredictor(sam)
    pred.set_image(image)
    _, iou, low_res = pred.predict(box=BOX, hq_token_only=hq_token_only)
    return pred.features, pred.embedding.early_features, iou, low_res


def test_registry_has_the_variants() -> None:
    assert {"vit_t", "hq_vit_b", "hq_vit_l", "hq_vit_h", "hq_vit_tiny"} <= set(sam_model_registry)
    assert SAM_CONFIGS["hq_vit_b"].hq and SAM_CONFIGS["hq_vit_tiny"].tiny_vit is not None


@pytest.mark.parametrize(
    "ours, syscv",
    [("hq_vit_b", "vit_b"), ("hq_vit_l", "vit_l"), ("hq_vit_h", "vit_h"), ("hq_vit_tiny", "vit_tiny")],
)
def test_released_syscv_layouts(ours: str, syscv: str) -> None:
    """Names and shapes of SysCV's sam_hq_vit_{b,l,h,tiny}.pth models (built on the meta device)."""
    hq = import_reference("segment_anything_hq")
    # SysCV's TinyViT calls .item() while building: that one (10 M parameters) is built on the CPU
    with torch.device("cpu" if syscv == "vit_tiny" else "meta"):
        theirs = _shapes(hq.sam_model_registry[syscv]())
    with torch.device("meta"):
        mine = _shapes(sam_from_config(SAM_CONFIGS[ours]))
    theirs = {k: v for k, v in theirs.items() if not k.startswith(CLASSIFIER)}
    assert mine == theirs
    early = 160 if syscv == "vit_tiny" else SAM_CONFIGS[ours].encoder_embed_dim
    assert mine["mask_decoder.compress_vit_feat.0.weight"] == (early, 256, 2, 2)
    assert mine["mask_decoder.hf_token.weight"] == (1, 256)


def test_released_mobile_sam_layout() -> None:
    mobile_sam = import_reference("mobile_sam")
    theirs = _shapes(mobile_sam.sam_model_registry["vit_t"]())  # on the CPU (TinyViT calls .item())
    with torch.device("meta"):
        mine = _shapes(sam_from_config(SAM_CONFIGS["vit_t"]))
    assert mine == {k: v for k, v in theirs.items() if not k.startswith(CLASSIFIER)}
    assert mine["image_encoder.layers.2.blocks.0.attn.attention_biases"] == (5, 196)  # 14 x 14 windows


def test_hf_samhq_vit_b_layout_maps_onto_ours() -> None:
    """The key set of syscv-community/sam-hq-vit-base (transformers' SamHQModel at ViT-B size)."""
    from transformers import SamHQConfig, SamHQModel

    config = SAM_CONFIGS["hq_vit_b"]
    hf_config = SamHQConfig(
        vision_config={"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12},
        mask_decoder_config={"vit_dim": 768},
    )
    assert list(hf_config.vision_config.global_attn_indexes) == [2, 5, 8, 11]
    with torch.device("meta"):
        theirs = _shapes(SamHQModel(hf_config))
        mine = _shapes(sam_from_config(config))
    theirs.pop("prompt_encoder.shared_embedding.positional_embedding")  # tied to shared_image_embedding
    mapped = {hf_key_to_meta(k, config): v for k, v in theirs.items()}
    assert None not in mapped
    assert mapped == mine


def test_syscv_pth_and_hf_folder_give_identical_outputs(hq_reference, image, tmp_path) -> None:
    """HF SamHQ folder -> sam_core -> SysCV-layout .pth / .safetensors -> sam_core: same outputs."""
    pth = tmp_path / "sam_hq_tiny.pth"
    torch.save(hq_reference.sam.state_dict(), pth)  # SysCV's sam_hq_vit_*.pth layout
    st = tmp_path / "sam_hq_tiny.safetensors"
    save_file(dict(hq_reference.sam.state_dict()), st)
    auto = build_sam("auto", hq_reference.folder, device="cpu")  # config.json says model_type sam_hq
    assert auto.is_hq and auto.config == hq_reference.config
    reference = [_outputs(hq_reference.sam, image, hq) for hq in (False, True)]
    for source in (pth, st):
        sam = build_sam(hq_reference.config, source, device="cpu")
        for hq, ref in zip((False, True), reference, strict=True):
            for ours, theirs in zip(_outputs(sam, image, hq), ref, strict=True):
                assert torch.equal(torch.as_tensor(ours), torch.as_tensor(theirs))


def test_hq_hub_id_with_warm_cache(hq_reference, image, tmp_path, monkeypatch) -> None:
    cache = tmp_path / "hf_cache"
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--syscv-community--sam-hq-tiny-test"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(hq_reference.folder, repo / "snapshots" / commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    sam = build_sam("auto", "syscv-community/sam-hq-tiny-test", device="cpu")
    for ours, ref in zip(_outputs(sam, image, True), _outputs(hq_reference.sam, image, True), strict=True):
        assert torch.equal(torch.as_tensor(ours), torch.as_tensor(ref))


def test_hq_and_plain_checkpoints_refused_by_name(hq_reference, tmp_path) -> None:
    plain_config = replace(hq_reference.config, hq=False)
    # HF SAM-HQ folder asked for as a plain SAM: config.json disagrees on ``hq``
    with pytest.raises(CheckpointError, match="hq: config.json True vs requested False"):
        build_sam(plain_config, hq_reference.folder, device="cpu")
    # plain SAM weights asked for as SAM-HQ: the HQ parts are named as missing
    pth = tmp_path / "plain.pth"
    torch.save(build_sam(plain_config, device="cpu", seed=0).state_dict(), pth)
    with pytest.raises(CheckpointError, match=r"missing key\(s\): mask_decoder\.compress_vit_feat"):
        build_sam(hq_reference.config, pth, device="cpu")
    # a SysCV .pth missing the HQ token and with a mis-shaped HQ head
    state = hq_reference.sam.state_dict()
    del state["mask_decoder.hf_token.weight"]
    state["mask_decoder.hf_mlp.layers.2.weight"] = torch.zeros(5, 5)
    bad = tmp_path / "bad_hq.pth"
    torch.save(state, bad)
    with pytest.raises(CheckpointError) as err:
        build_sam(hq_reference.config, bad, device="cpu")
    assert "missing key(s): mask_decoder.hf_token.weight" in str(err.value)
    assert "mask_decoder.hf_mlp.layers.2.weight: checkpoint (5, 5)" in str(err.value)
    # truncated file
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(pth.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        build_sam(hq_reference.config, truncated, device="cpu")
    # config.json with a vit_dim SysCV never builds
    folder = tmp_path / "edited"
    shutil.copytree(hq_reference.folder, folder)
    config = json.loads((folder / "config.json").read_text())
    config["mask_decoder_config"]["vit_dim"] = 7
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="vit_dim=7"):
        build_sam("auto", folder, device="cpu")
