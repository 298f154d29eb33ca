"""IDEA-Research ``.pth`` checkpoints: the key map covers Swin-T and Swin-B, a file written in IDEA's layout
loads into the same model (identical outputs), and anything that does not fit is refused by name."""

from __future__ import annotations

import argparse
import dataclasses
import socket

import huggingface_hub.constants as constants
import numpy as np
import pytest
import torch
from detector_kinds import TINY_IDEA_ARCH, warm_hub_cache, write_idea_files

from grounded.config import DetectorSpec
from grounded.detectors.grounding_dino import GroundingDinoDetector
from grounded.detectors.idea_architecture import (
    IdeaArchitecture,
    IdeaFormatError,
    architecture_from_state_dict,
    read_idea_config,
    transformers_config,
)
from grounded.detectors.idea_format import TRANSFORMERS_ONLY, key_map, to_idea, to_transformers
from grounded.detectors.idea_loading import load_idea_detector
from grounded.detectors.preprocess import DetectorPreprocessor
from grounded.detectors.registry import BuildOptions, build_detector, detector_kind

SWIN_T = IdeaArchitecture()  # groundingdino_swint_ogc.pth
SWIN_B = IdeaArchitecture(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), window_size=12)

# Names and shapes as IDEA's modules create them (groundingdino/models/GroundingDINO/*.py), Swin-T.
IDEA_KEYS_SWIN_T = {
    "backbone.0.patch_embed.proj.weight": (96, 3, 4, 4),
    "backbone.0.layers.2.blocks.5.attn.qkv.weight": (1152, 384),
    "backbone.0.layers.2.blocks.5.attn.relative_position_bias_table": (169, 12),
    "backbone.0.layers.1.downsample.reduction.weight": (384, 768),
    "backbone.0.norm3.weight": (768,),
    "input_proj.3.0.weight": (256, 768, 3, 3),
    "input_proj.0.1.bias": (256,),
    "bert.embeddings.word_embeddings.weight": (30522, 768),
    "bert.encoder.layer.11.output.dense.weight": (768, 3072),
    "feat_map.weight": (256, 768),
    "transformer.level_embed": (4, 256),
    "transformer.tgt_embed.weight": (900, 256),
    "transformer.enc_output.weight": (256, 256),
    "transformer.enc_out_bbox_embed.layers.2.bias": (4,),
    "transformer.encoder.layers.5.self_attn.sampling_offsets.weight": (256, 256),
    "transformer.encoder.text_layers.0.self_attn.in_proj_weight": (768, 256),
    "transformer.encoder.text_layers.0.linear1.weight": (1024, 256),
    "transformer.encoder.fusion_layers.3.gamma_v": (256,),
    "transformer.encoder.fusion_layers.3.attn.values_l_proj.weight": (1024, 256),
    "transformer.decoder.layers.5.ca_text.in_proj_bias": (768,),
    "transformer.decoder.layers.0.catext_norm.weight": (256,),
    "transformer.decoder.layers.2.cross_attn.attention_weights.weight": (128, 256),
    "transformer.decoder.ref_point_head.layers.0.weight": (256, 512),
    "transformer.decoder.norm.weight": (256,),
    "transformer.decoder.bbox_embed.5.layers.0.weight": (256, 256),
    "bbox_embed.0.layers.2.weight": (4, 256),
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_idea_files(tmp_path_factory.mktemp("idea"))


def _load(files, **kwargs) -> GroundingDinoDetector:
    kwargs = {"tokenizer": str(files.tokenizer), "config_file": str(files.config_file), **kwargs}
    return load_idea_detector(str(files.checkpoint), **kwargs)


def _inputs(detector: GroundingDinoDetector) -> dict[str, torch.Tensor]:
    image = np.random.default_rng(1).integers(0, 256, (90, 140, 3), dtype=np.uint8)
    pixel_values, pixel_mask = DetectorPreprocessor(shortest_edge=256, longest_edge=427)(image)
    text = detector.tokenizer(["cat . traffic light . dog ."], return_tensors="pt")
    return {"pixel_values": pixel_values, "pixel_mask": pixel_mask, **text}


@pytest.mark.parametrize("arch", [SWIN_T, SWIN_B], ids=["swin-t", "swin-b"])
def test_every_key_of_the_full_size_layouts_is_mapped(arch):
    from transformers import GroundingDinoForObjectDetection

    with torch.device("meta"):  # real sizes, no memory, no forward
        model = GroundingDinoForObjectDetection(transformers_config(arch))
    hf = model.state_dict(keep_vars=True)  # tied box heads stay the same Parameter objects
    idea = to_idea(hf, arch)
    # Every transformers key but the unused Swin final norm comes from exactly one IDEA key.
    targets = [t for _, ts in key_map(arch) for t in ts]
    assert len(targets) == len(set(targets))
    assert set(targets) == {k for k in hf if not TRANSFORMERS_ONLY.fullmatch(k)}
    assert set(to_transformers(idea, arch)) == set(targets)
    for key, value in to_transformers(idea, arch).items():
        assert value.shape == hf[key].shape, key
    # The architecture is read back from the IDEA layout's shapes alone.
    assert architecture_from_state_dict(idea) == arch
    if arch == SWIN_T:
        assert {k: tuple(idea[k].shape) for k in IDEA_KEYS_SWIN_T} == IDEA_KEYS_SWIN_T
        assert len(idea) == 924
    else:
        assert tuple(idea["backbone.0.layers.2.blocks.17.attn.relative_position_bias_table"].shape) == (
            529,
            16,
        )


def test_idea_file_gives_the_source_models_logits_and_boxes(files):
    detector = _load(files, fast_path=False)
    assert isinstance(detector, GroundingDinoDetector) and not detector.untrained
    inputs = _inputs(detector)
    with torch.inference_mode():
        expected = files.source(**inputs)
        ours = detector.model(**inputs)
    assert torch.equal(ours.logits, expected.logits)
    assert torch.equal(ours.pred_boxes, expected.pred_boxes)

    fast = _load(files)  # the fast path on the loaded model: float32 rounding only
    with torch.inference_mode():
        quick = fast.model(**inputs)
    finite = expected.logits.isfinite()
    assert torch.equal(quick.logits.isfinite(), finite)
    assert (quick.logits[finite] - expected.logits[finite]).abs().max() <= 1e-4
    assert (quick.pred_boxes - expected.pred_boxes).abs().max() <= 1e-4


@pytest.mark.parametrize("wrap, prefix", [(False, ""), (True, ""), (False, "module.")])
def test_bare_wrapped_and_data_parallel_layouts_load(tmp_path, wrap, prefix):
    written = write_idea_files(tmp_path, seed=1, wrap=wrap, prefix=prefix)
    detector = _load(written, fast_path=False)
    for key, value in written.source.state_dict().items():
        assert torch.equal(detector.model.state_dict()[key], value), key


def test_missing_and_unexpected_keys_are_refused_by_name(files, tmp_path):
    weights = torch.load(files.checkpoint, weights_only=True)["model"]
    weights.pop("module.transformer.decoder.layers.1.catext_norm.bias")
    weights["module.transformer.label_enc.weight"] = torch.zeros(3, 32)
    broken = tmp_path / "broken.pth"
    torch.save({"model": weights}, broken)
    with pytest.raises(IdeaFormatError) as error:
        load_idea_detector(str(broken), tokenizer=str(files.tokenizer), config_file=str(files.config_file))
    message = str(error.value)
    assert "1 missing key(s): transformer.decoder.layers.1.catext_norm.bias" in message
    assert "1 unexpected key(s): transformer.label_enc.weight" in message


def test_a_pickled_object_is_refused_without_being_unpickled(files, tmp_path):
    weights = torch.load(files.checkpoint, weights_only=True)["model"]
    payload = tmp_path / "with_args.pth"
    torch.save({"model": weights, "args": argparse.Namespace(lr=1e-4)}, payload)
    with pytest.raises(IdeaFormatError, match="weights_only"):
        load_idea_detector(str(payload), tokenizer=str(files.tokenizer), config_file=str(files.config_file))


def test_config_file_is_parsed_never_executed_and_must_agree(files, tmp_path):
    marker = tmp_path / "executed"
    config = tmp_path / "cfg.py"
    config.write_text(
        files.config_file.read_text()
        + f"import os\nopen({str(marker)!r}, 'w')\nderived = dict(a=1)\nlabel_list = ['car', 'person']\n"
    )
    values = read_idea_config(config)
    assert values["nheads"] == 2 and values["label_list"] == ["car", "person"]
    assert "derived" not in values and not marker.exists()
    load_idea_detector(str(files.checkpoint), tokenizer=str(files.tokenizer), config_file=str(config))
    assert not marker.exists()

    config.write_text(files.config_file.read_text().replace("enc_layers = 1", "enc_layers = 6"))
    with pytest.raises(IdeaFormatError, match=r"enc_layers=6 \(checkpoint: 1\)"):
        load_idea_detector(str(files.checkpoint), tokenizer=str(files.tokenizer), config_file=str(config))


def test_architecture_comes_from_shapes_and_heads_from_the_config(files):
    weights = {
        k.removeprefix("module."): v
        for k, v in torch.load(files.checkpoint, weights_only=True)["model"].items()
    }
    arch = architecture_from_state_dict(weights, read_idea_config(files.config_file))
    assert arch == dataclasses.replace(TINY_IDEA_ARCH, text_vocab_size=arch.text_vocab_size)
    # Without the config, IDEA's default 8 heads do not divide 2 heads x 2 points: refused, not guessed.
    with pytest.raises(IdeaFormatError, match="nheads x n_points"):
        architecture_from_state_dict(weights)


def test_registry_loads_a_hub_file_and_the_default_tokenizer_from_a_warm_cache(files, tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    warm_hub_cache(cache, "acme/GroundingDINO", {"groundingdino_tiny.pth": files.checkpoint.read_bytes()})
    warm_hub_cache(
        cache, "google-bert/bert-base-uncased", {p.name: p.read_bytes() for p in files.tokenizer.iterdir()}
    )
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    def _no_network(*args, **kwargs):
        raise AssertionError("loading from a warm cache must not touch the network")

    monkeypatch.setattr(socket, "getaddrinfo", _no_network)
    spec = DetectorSpec("acme/GroundingDINO/groundingdino_tiny.pth", config_file=str(files.config_file))
    assert detector_kind(spec) == "idea-grounding-dino"
    detector = build_detector(spec, BuildOptions(device=torch.device("cpu"), dtype=torch.float32))
    assert detector.model_id == "acme/GroundingDINO/groundingdino_tiny.pth"
    for key, value in files.source.state_dict().items():
        assert torch.equal(detector.model.state_dict()[key], value), key

    cold = DetectorSpec("acme/GroundingDINO/groundingdino_swint_ogc.pth", config_file=str(files.config_file))
    with pytest.raises(ValueError, match="groundingdino_swint_ogc.pth.*HF_HUB_OFFLINE"):
        build_detector(cold, BuildOptions(device=torch.device("cpu"), dtype=torch.float32))
