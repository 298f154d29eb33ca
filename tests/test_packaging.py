"""The wheel holds every package folder and the YAML configs (``pip install grounded-sam`` finds them)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]


def _package_folders() -> set[str]:
    found = set()
    for top in ("grounded", "sam_core"):
        for init in (REPO / top).rglob("__init__.py"):
            found.add(".".join(init.parent.relative_to(REPO).parts))
    return found


def test_pyproject_lists_every_package_and_maps_configs():
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(setuptools["packages"]) == _package_folders() | {"grounded.configs"}
    assert setuptools["package-dir"]["grounded.configs"] == "configs"


def test_the_wheel_ships_the_configs(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path),
         str(REPO)],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for config in (REPO / "configs").glob("*.yaml"):
        assert f"grounded/configs/{config.name}" in names
    assert "grounded/detectors/grounding_dino.py" in names and "sam_core/predictor.py" in names
