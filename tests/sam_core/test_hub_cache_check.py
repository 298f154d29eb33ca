"""``sam_core.hub.on_this_machine``: which weight references load without a download (no network)."""

from __future__ import annotations

from pathlib import Path

from sam_core.hub import on_this_machine


def _cache(root: Path, repo: str, filename: str) -> None:
    """One cached file as huggingface_hub lays it out (refs/main -> snapshots/<revision>/file)."""
    folder = root / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text("rev1")
    target = folder / "snapshots" / "rev1" / filename
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"x")


def test_hub_references_are_found_in_the_cache_and_other_names_are_not_hub_references(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert on_this_machine("facebook/sam-vit-base") is False
    assert on_this_machine("hf://dhkim2810/MobileSAM/mobile_sam.pt") is False
    assert on_this_machine("ShilongLiu/GroundingDINO/groundingdino_swint_ogc.pth") is False
    _cache(tmp_path / "hub", "facebook/sam-vit-base", "config.json")
    _cache(tmp_path / "hub", "dhkim2810/MobileSAM", "mobile_sam.pt")
    _cache(tmp_path / "hub", "ShilongLiu/GroundingDINO", "groundingdino_swint_ogc.pth")
    assert on_this_machine("facebook/sam-vit-base") is True
    assert on_this_machine("hf://dhkim2810/MobileSAM/mobile_sam.pt") is True
    assert on_this_machine("ShilongLiu/GroundingDINO/groundingdino_swint_ogc.pth") is True
    assert on_this_machine("ShilongLiu/GroundingDINO/groundingdino_swinb_cogcoor.pth") is False  # other file
    weights = tmp_path / "sam_vit_b.pth"
    weights.write_bytes(b"x")
    assert on_this_machine(str(weights)) is True
    assert on_this_machine(str(tmp_path / "missing.pth")) is None  # a path, not a Hub reference
    assert on_this_machine("tiny-random") is None
