"""Checklist 21, 24, 25 without models: safe deserialisation in the code, dependency floors, no
torchvision at runtime, optional ``spaces``, and the Spaces front matter of the README."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.version import Version
from rel_helpers import REPO

MINIMUMS = {"gradio": "6.20", "torch": "2.6", "pillow": "12.2"}
CODE = sorted([*REPO.glob("sam_core/**/*.py"), *REPO.glob("grounded/**/*.py"), REPO / "app.py"])


# ------------------------------------------------------------------------- 21: safe deserialisation
def unsafe_loading(source: str, filename: str = "<code>") -> list[str]:
    """Every place in ``source`` that could unpickle or run code from a downloaded file."""
    tree = ast.parse(source, filename)
    transformers_names = {alias.asname or alias.name for node in ast.walk(tree)
                          if isinstance(node, ast.ImportFrom)
                          and (node.module or "").startswith("transformers") for alias in node.names}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        where = f"{filename}:{node.lineno}"
        name = ast.unparse(node.func)
        keywords = {kw.arg: kw.value for kw in node.keywords if kw.arg}
        constant = {key: value.value for key, value in keywords.items() if isinstance(value, ast.Constant)}
        if constant.get("trust_remote_code") is True or (
                "trust_remote_code" in keywords and "trust_remote_code" not in constant):
            found.append(f"{where} trust_remote_code in {name}(...)")
        if constant.get("allow_pickle") is True:
            found.append(f"{where} allow_pickle=True in {name}(...)")
        if re.fullmatch(r"(torch\.)?load", name) and constant.get("weights_only") is not True:
            found.append(f"{where} {name}(...) without weights_only=True")
        if re.fullmatch(r"(c?pickle|dill|joblib|marshal|shelve)\.(load|loads|Unpickler|open)", name):
            found.append(f"{where} {name}(...)")
        if name.endswith(".from_pretrained") and name.split(".")[0] in transformers_names and not any(
                part in name for part in ("Tokenizer", "Processor")):
            if constant.get("use_safetensors") is not True:
                found.append(f"{where} {name}(...) without use_safetensors=True")
    return found


def test_the_scanner_finds_every_unsafe_pattern():
    bad = textwrap.dedent("""
        import pickle, torch, numpy as np
        from torch import load
        from transformers import AutoModel, AutoTokenizer
        torch.load(path)
        torch.load(path, weights_only=False)
        load(path)
        pickle.load(handle)
        pickle.loads(data)
        np.load(path, allow_pickle=True)
        AutoModel.from_pretrained(folder, trust_remote_code=True)
        AutoModel.from_pretrained(folder)
        AutoModel.from_pretrained(folder, trust_remote_code=flag)
    """)
    flagged = {int(hit.split(":")[1].split()[0]) for hit in unsafe_loading(bad)}
    assert flagged == set(range(5, 14))  # every call line of ``bad`` (lines 5..13)
    good = textwrap.dedent("""
        import torch
        from transformers import AutoModel, AutoTokenizer
        torch.load(path, map_location="cpu", weights_only=True)
        AutoModel.from_pretrained(folder, use_safetensors=True)
        AutoTokenizer.from_pretrained(folder)
    """)
    assert unsafe_loading(good) == []


def test_no_unsafe_loading_in_sam_core_grounded_and_app():
    assert {p.parent.name for p in CODE} >= {"sam_core", "grounded"} and (REPO / "app.py") in CODE
    found = [hit for path in CODE
             for hit in unsafe_loading(path.read_text("utf-8"), str(path.relative_to(REPO)))]
    assert found == []
    for path in CODE:  # also as text, e.g. in a string handed to exec or a config
        text = path.read_text("utf-8")
        assert not re.search(r"weights_only\s*=\s*False|trust_remote_code\s*=\s*True", text), path


def _imported_modules(path: Path) -> list[str]:
    tree = ast.parse(path.read_text("utf-8"))
    names = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    return names + [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]


# ------------------------------------------------------------------------------- 24: dependencies
def _runtime_requirements() -> dict[str, Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["project"]
    runtime = [*project["dependencies"], *project.get("optional-dependencies", {}).get("spaces", [])]
    return {Requirement(text).name.lower(): Requirement(text) for text in runtime}


@pytest.mark.parametrize("name, minimum", MINIMUMS.items())
def test_pyproject_floors_exclude_every_vulnerable_version(name, minimum):
    requirement = _runtime_requirements()[name]
    floor = Version(minimum)
    below = f"{floor.major}.{floor.minor - 1}.99" if floor.minor else f"{floor.major - 1}.99"
    just_below = Version(below)
    assert not requirement.specifier.contains(just_below, prereleases=True), requirement
    assert not requirement.specifier.contains(Version("0.1"), prereleases=True), requirement
    lower = [Version(spec.version) for spec in requirement.specifier if spec.operator in (">=", "~=", "==")]
    assert lower and min(lower) >= floor, requirement


@pytest.mark.parametrize("name, minimum", MINIMUMS.items())
def test_installed_versions_meet_the_floors_and_the_pyproject(name, minimum):
    installed = Version(importlib.metadata.version(name))
    assert installed.release >= Version(minimum).release, f"{name} {installed} < {minimum}"
    assert _runtime_requirements()[name].specifier.contains(installed, prereleases=True)


def test_requirements_txt_for_spaces_meets_the_floors_and_has_no_torchvision():
    text = (REPO / "requirements.txt").read_text("utf-8")
    lines = [line.split("#")[0].strip() for line in text.splitlines()]
    requirements = {Requirement(line).name.lower(): Requirement(line) for line in lines
                    if line and not line.startswith("-")}
    assert "torchvision" not in requirements
    for name, minimum in MINIMUMS.items():
        spec = requirements[name].specifier
        allowed = [Version(s.version) for s in spec if s.operator in ("==", ">=", "~=")]
        assert allowed and min(allowed) >= Version(minimum), f"requirements.txt: {name}{spec} < {minimum}"


def test_no_torchvision_in_the_runtime_dependencies():
    assert "torchvision" not in _runtime_requirements()
    project = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["project"]
    assert not any("torchvision" in dep for dep in project["dependencies"])


# ``sys.modules[name] = None`` is Python's own import blocker: ``import torchvision`` raises and
# ``importlib.util.find_spec`` answers None, exactly as if it were not installed, even on a host that
# has it. (With torchvision installed, transformers' own modeling_utils -> image_utils imports it; no
# file of ours does, see test_no_file_of_ours_imports_torchvision.) ``spaces`` is installed but broken.
_PROBE = '''\
import sys
sys.modules["torchvision"] = None
import importlib, importlib.util, pkgutil
import numpy as np
import sam_core, grounded
for info in pkgutil.iter_modules(grounded.__path__):
    importlib.import_module(f"grounded.{info.name}")
spec = importlib.util.spec_from_file_location("app", "app.py")
app = importlib.util.module_from_spec(spec); sys.modules["app"] = app; spec.loader.exec_module(app)
from grounded import GroundedSAM
pipe = GroundedSAM.from_config("tiny-random", device="cpu")
image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
det = pipe.predict(image, "cat. dog", box_threshold=0.0, text_threshold=0.0, max_detections=2)
demo = app.build_demo(pipe, examples=False)
import grounded.web.spaces as spaces_compat
assert len(det) == 2 and det.mask.shape == (2, 48, 64) and demo is not None
print("ON_SPACES", spaces_compat.ON_SPACES)
print("TORCHVISION_BLOCKED", sys.modules["torchvision"] is None)
'''


@pytest.mark.slow  # fresh interpreters import the whole stack
def test_everything_runs_with_torchvision_blocked_and_a_broken_spaces_package(tmp_path):
    site = tmp_path / "site"
    (site / "spaces").mkdir(parents=True)
    (site / "spaces" / "__init__.py").write_text("raise RuntimeError('ZeroGPU is not available here')\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(site),
           "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
           "GRADIO_TEMP_DIR": str(tmp_path / "gradio")}
    result = subprocess.run([sys.executable, "-c", _PROBE], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "TORCHVISION_BLOCKED True" in result.stdout
    assert "ON_SPACES False" in result.stdout  # the broken optional package is ignored


def test_no_file_of_ours_imports_torchvision():
    for path in [*CODE, *REPO.glob("benchmarks/*.py")]:
        assert not [n for n in _imported_modules(path) if n.split(".")[0] == "torchvision"], path
        assert "import_module(\"torchvision" not in path.read_text("utf-8"), path


# ------------------------------------------------------------------------ 25: Spaces front matter
def _front_matter() -> dict:
    text = (REPO / "README.md").read_text("utf-8")
    match = re.match(r"---\n(.*?)\n---\n", text, re.S)
    assert match, "README.md must start with the Hugging Face Spaces front matter (--- ... ---)"
    return yaml.safe_load(match.group(1))


def test_readme_front_matter_runs_app_py_on_a_pinned_gradio():
    meta = _front_matter()
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and (REPO / meta["app_file"]).is_file()
    pinned = str(meta["sdk_version"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", pinned), f"sdk_version {pinned!r} is not an exact version"
    assert Version(pinned) >= Version(MINIMUMS["gradio"])
    assert _runtime_requirements()["gradio"].specifier.contains(Version(pinned))
    assert Version(pinned) == Version(importlib.metadata.version("gradio")), "test the gradio the Space runs"
    requirements = (REPO / "requirements.txt").read_text("utf-8")
    assert re.search(rf"^gradio==({re.escape(pinned)})\s*$", requirements, re.M), "requirements.txt disagrees"


def test_app_uses_spaces_only_through_the_optional_shim():
    for path in CODE:
        if "spaces" in _imported_modules(path):
            assert path == REPO / "grounded" / "web" / "spaces.py", f"{path} imports spaces directly"
    app_text = (REPO / "app.py").read_text("utf-8")
    assert "from grounded.web.spaces import gpu" in app_text and "@gpu" in app_text
    assert not Path(REPO / "spaces.py").exists()  # nothing shadows the real package
