"""Config presets, YAML selection and validation."""

import dataclasses
from pathlib import Path

import pytest

from grounded.config import PIPELINE_PRESETS, PipelineConfig, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("name", ["default", "quality", "fast", "hq", "sam2", "sam3", "tiny-random"])
def test_yaml_files_equal_python_presets(name):
    from_yaml = load_config(CONFIGS / f"{name}.yaml")
    assert from_yaml == PIPELINE_PRESETS[name]
    assert load_config(name) == PIPELINE_PRESETS[name]


def test_yaml_files_hold_only_overrides_of_their_preset():
    import yaml

    for path in sorted(CONFIGS.glob("*.yaml")):
        values = yaml.safe_load(path.read_text())
        assert values["preset"] in PIPELINE_PRESETS, path.name
        preset = PIPELINE_PRESETS[values["preset"]]
        for key, value in values.items():
            if key in ("preset", "name"):
                continue
            # a repeated preset value is a second copy that can drift: only real overrides belong here
            loaded = load_config(path)
            same_as_preset = dataclasses.replace(loaded, **{key: getattr(preset, key)})
            assert loaded != same_as_preset, f"{path.name} repeats the preset's {key}={value!r}"


def test_named_configs_resolve_inside_an_installed_package(tmp_path, monkeypatch):
    import grounded.config as config_module

    shipped = tmp_path / "configs"
    shipped.mkdir()
    (shipped / "shipped-only.yaml").write_text("preset: default\nbox_threshold: 0.4\n")
    monkeypatch.setattr(config_module, "_CONFIG_DIRS", (shipped,))
    assert load_config("shipped-only").box_threshold == 0.4


def test_presets_pick_the_documented_models():
    assert PIPELINE_PRESETS["default"].detector.model == "IDEA-Research/grounding-dino-tiny"
    assert PIPELINE_PRESETS["default"].sam.model_type == "vit_b"
    assert PIPELINE_PRESETS["quality"].detector.model == "IDEA-Research/grounding-dino-base"
    assert PIPELINE_PRESETS["quality"].sam.model_type == "vit_h"
    assert PIPELINE_PRESETS["tiny-random"].untrained
    assert not PIPELINE_PRESETS["default"].untrained


def test_yaml_overrides_and_nested_specs(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        "preset: default\nsam: {preset: vit_b, checkpoint: /models/sam_vit_b_01ec64.pth}\n"
        "detector: {model: /models/gdino}\nbox_threshold: 0.3\nnms_iou: null\n"
    )
    config = load_config(path)
    assert config.name == "mine"
    assert config.sam.checkpoint == "/models/sam_vit_b_01ec64.pth"
    assert config.detector.model == "/models/gdino"
    assert config.box_threshold == 0.3 and config.nms_iou is None
    assert config.text_threshold == PIPELINE_PRESETS["default"].text_threshold


@pytest.mark.parametrize(
    "text, message",
    [
        ("box_treshold: 0.3\n", "box_treshold"),
        ("sam: vit_x\n", "vit_x"),
        ("sam: {preset: vit_b, ckpt: a.pth}\n", "ckpt"),
        ("box_threshold: 1.5\n", "box_threshold must be in [0, 1]"),
        ("- a\n- b\n", "mapping"),
        ("a: [\n", "not valid YAML"),
    ],
)
def test_bad_yaml_is_refused_with_the_offending_name(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(path)


def test_unknown_name_is_refused():
    with pytest.raises(ValueError, match="neither a preset"):
        load_config("no-such-preset")


@pytest.mark.parametrize("field, value", [("text_threshold", -0.1), ("max_detections", 0), ("dtype", "int8")])
def test_invalid_values_are_refused(field, value):
    with pytest.raises(ValueError, match=field if field != "dtype" else "dtype"):
        PipelineConfig(**{field: value})


def test_detector_presets_name_every_supported_kind():
    from grounded.config import DETECTOR_PRESETS

    expected = {
        "grounding-dino-tiny": "IDEA-Research/grounding-dino-tiny",
        "grounding-dino-base": "IDEA-Research/grounding-dino-base",
        "mm-grounding-dino-tiny": "openmmlab-community/mm_grounding_dino_tiny_o365v1_goldg_v3det",
        "mm-grounding-dino-large": "openmmlab-community/mm_grounding_dino_large_o365v2_oiv6_goldg",
        "llmdet-tiny": "iSEE-Laboratory/llmdet_tiny",
        "groundingdino-swint-ogc": "ShilongLiu/GroundingDINO/groundingdino_swint_ogc.pth",
        "groundingdino-swinb-cogcoor": "ShilongLiu/GroundingDINO/groundingdino_swinb_cogcoor.pth",
    }
    assert {name: DETECTOR_PRESETS[name].model for name in expected} == expected
    assert load_config("mm-tiny").detector == DETECTOR_PRESETS["mm-grounding-dino-tiny"]
    assert load_config("llmdet-tiny").detector == DETECTOR_PRESETS["llmdet-tiny"]
    assert load_config("mm-tiny").sam == PIPELINE_PRESETS["default"].sam


def test_with_detector_takes_a_preset_or_a_model(tmp_path):
    from grounded.config import DETECTOR_PRESETS, DetectorSpec, with_detector

    base = load_config("default")
    assert with_detector(base, "llmdet-tiny").detector == DETECTOR_PRESETS["llmdet-tiny"]
    pth = str(tmp_path / "groundingdino_swint_ogc.pth")
    assert with_detector(base, pth).detector == DetectorSpec(pth)
    assert with_detector(base, pth).sam == base.sam
    with pytest.raises(ValueError, match="preset"):
        with_detector(base, " ")


def test_yaml_names_an_idea_checkpoint_with_its_tokenizer_and_config(tmp_path):
    path = tmp_path / "idea.yaml"
    path.write_text(
        "detector: {model: /w/groundingdino_swint_ogc.pth, tokenizer: /w/bert, config_file: /w/cfg.py}\n"
    )
    spec = load_config(path).detector
    assert spec.model == "/w/groundingdino_swint_ogc.pth"
    assert (spec.tokenizer, spec.config_file) == ("/w/bert", "/w/cfg.py")


def test_tokenizer_and_config_file_are_refused_for_a_transformers_folder(tmp_path):
    from grounded.config import DetectorSpec
    from grounded.detectors.registry import detector_kind

    with pytest.raises(ValueError, match="IDEA .pth checkpoints only"):
        detector_kind(DetectorSpec(str(tmp_path), tokenizer="google-bert/bert-base-uncased"))
