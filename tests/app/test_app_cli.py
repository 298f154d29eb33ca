"""``python app.py``: flags and environment, start-up with a preset, missing weights, Spaces pieces."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import types
from typing import Any

import gradio as gr
import pytest
import tomllib
from app_helpers import REPO
from spies import connection_log_env, read_connection_log

import grounded.web.spaces


def test_flags_come_from_the_environment_and_flags_win(app_module, monkeypatch):
    monkeypatch.setenv("GSAM_CONFIG", "tiny-random")
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "8123")
    monkeypatch.setenv("GSAM_SHARE", "1")
    monkeypatch.setenv("GSAM_QUEUE_SIZE", "5")
    args = app_module.parse_args([])
    assert (args.config, args.host, args.port) == ("tiny-random", "0.0.0.0", 8123)
    assert args.share is True and args.queue_size == 5
    monkeypatch.setenv("GSAM_HOST", "127.0.0.2")  # GSAM_* beats GRADIO_*
    monkeypatch.setenv("GSAM_PORT", "8124")
    args = app_module.parse_args(["--config", "mine.yaml", "--port", "9000"])
    assert (args.config, args.host, args.port) == ("mine.yaml", "127.0.0.2", 9000)
    for name in ("GSAM_CONFIG", "GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT", "GSAM_SHARE", "GSAM_HOST",
                 "GSAM_PORT", "GSAM_QUEUE_SIZE"):
        monkeypatch.delenv(name)
    args = app_module.parse_args([])
    assert (args.config, args.host, args.port, args.share, args.max_file_size_mb) == ("default", "127.0.0.1",
                                                                                      7860, False, 25.0)


def test_main_builds_the_configured_preset_and_launches_safely(app_module, monkeypatch, tiny_app_pipe):
    from grounded.pipeline import GroundedSAM

    built: list[str] = []
    launched: dict[str, Any] = {}

    def from_config(config: Any, **kwargs: Any) -> Any:
        built.append(config.name)
        return tiny_app_pipe

    monkeypatch.setattr(GroundedSAM, "from_config", staticmethod(from_config))
    monkeypatch.setattr(app_module, "launch_demo", lambda demo, **kw: launched.update(demo=demo, **kw))
    app_module.main(["--config", "tiny-random", "--port", "8765", "--queue-size", "3",
                     "--max-file-size-mb", "4"])
    assert built == ["tiny-random"]  # loaded before serving, so a bad config fails at start-up
    demo = launched.pop("demo")
    assert isinstance(demo, gr.Blocks) and demo._queue.max_size == 3
    assert launched == {"host": "127.0.0.1", "port": 8765, "share": False, "max_file_size": 4_000_000,
                        "max_sessions": 256}


@pytest.mark.slow  # a fresh interpreter imports gradio, torch and transformers
def test_missing_weights_fail_fast_with_an_actionable_message(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("HF_HUB_CACHE", None)
    env = connection_log_env(env, tmp_path / "net")
    result = subprocess.run([sys.executable, "app.py", "--config", "default", "--port", "0"], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode != 0
    # fast without a stopwatch: no lookup, no connection, so no download attempt and no retry
    assert read_connection_log(tmp_path / "net") == []
    assert "Running on" not in result.stdout  # failed before serving
    message = result.stderr
    assert "cannot load config 'default'" in message and "IDEA-Research/grounding-dino-tiny" in message
    assert "HF_HUB_OFFLINE" in message and "--config tiny-random" in message
    assert "Traceback" not in message


def test_spaces_gpu_is_a_no_op_without_the_spaces_package():
    def work(x: int) -> int:
        return x + 1

    assert not grounded.web.spaces.ON_SPACES
    assert grounded.web.spaces.gpu(work) is work
    assert grounded.web.spaces.gpu(duration=60)(work) is work


def test_spaces_gpu_is_used_when_the_package_is_there(monkeypatch):
    calls: list[Any] = []

    def fake_gpu(fn: Any = None, **kwargs: Any) -> Any:
        calls.append(kwargs)
        if fn is None:
            return lambda f: ("wrapped", f)
        return ("wrapped", fn)

    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=fake_gpu))
    try:
        module = importlib.reload(grounded.web.spaces)
        assert module.ON_SPACES
        assert module.gpu(len) == ("wrapped", len)
        assert module.gpu(duration=90)(len) == ("wrapped", len) and calls[-1] == {"duration": 90}
    finally:
        monkeypatch.delitem(sys.modules, "spaces")
        importlib.reload(grounded.web.spaces)


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_requirements_cover_the_runtime_dependencies_with_cpu_torch():
    lines = [line.strip() for line in (REPO / "requirements.txt").read_text().splitlines()]
    entries = [line for line in lines if line and not line.startswith("#")]
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in entries
    assert "gradio==6.31.0" in entries and not any("torchvision" in line for line in entries)
    names = {_name(line) for line in entries if not line.startswith("-")}
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    required = {_name(dep) for dep in project["dependencies"]}
    assert required <= names, f"requirements.txt lacks {sorted(required - names)}"


@pytest.mark.parametrize("name", ["chelsea", "astronaut", "coffee"])
def test_example_photos_ship_with_scikit_image(examples, name):
    paths = {os.path.basename(path): prompt for path, prompt in examples}
    assert f"{name}.png" in paths and paths[f"{name}.png"].endswith(".")
