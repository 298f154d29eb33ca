"""`grounded-sam predict --engine ray`: same outputs as the local engine, worker and driver kills.

One local Ray cluster (2 CPUs, small object store) serves the whole module and is shut down at its
end; the engine joins it instead of starting its own. The local reference run uses one torch thread,
like each 1-CPU Ray worker (Ray sets OMP_NUM_THREADS to a worker's CPUs), so the two are compared
byte for byte (see docs/cli.md, "Same results").
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from cli_helpers import write_corrupt_jpeg, write_png
from pycocotools.coco import COCO

from grounded.cli import main
from grounded.cli.ray_engine import FAULT_ENV
from grounded.io.sources import SourceError, expand_sources

REPO = Path(__file__).resolve().parents[2]
MODEL = ["--config", "tiny-random", "--box-threshold", "0", "--text-threshold", "0", "--max-detections", "2"]
NAMES = [f"img_{i:02d}.png" for i in range(18)] + ["x/dup.bmp", "x/dup.png"]  # same stem "x/dup"
RAY = ["--engine", "ray", "--workers", "2", "--batch-size", "2"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ray") / "photos"
    for seed, name in enumerate(NAMES):
        write_png(root / name, seed, size=(20 + 2 * (seed % 5), 28))
    write_corrupt_jpeg(root / "broken.jpg")
    return root


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """A 2-CPU local cluster for this module; its workers import this checkout of ``grounded``."""
    ray = pytest.importorskip("ray")
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), saved]))  # inherited by the raylet
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # tests make no network calls
    try:
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=300 * 1024**2,
                 log_to_driver=False)
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


@pytest.fixture(scope="module")
def reference(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The local engine's outputs, computed with one torch thread (as each 1-CPU Ray worker)."""
    out = tmp_path_factory.mktemp("local") / "out"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["predict", str(photos), "-p", "cat. dog", "-o", str(out), "-q", *MODEL]) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def predict(photos: Path | str, out: Path, *extra: str) -> int:
    return main(["predict", str(photos), "-p", "cat. dog", "-o", str(out), "-q", *MODEL, *RAY, *extra])


def records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text("utf-8").splitlines()]


def files(out: Path, folder: str) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted((out / folder).rglob("*.png"))}


def assert_same_as_reference(out: Path, reference: Path) -> None:
    """Every image once, and the same images, annotations, categories, masks and overlays."""
    assert sorted(r["path"] for r in records(out)) == NAMES  # once each; the corrupt file is not there
    ray_coco, local_coco = COCO(str(out / "annotations.json")), COCO(str(reference / "annotations.json"))
    assert sorted(ray_coco.imgs) == list(range(1, len(NAMES) + 1))
    assert ray_coco.imgs == local_coco.imgs and ray_coco.cats == local_coco.cats
    for image_id in local_coco.imgs:  # image by image: ids, boxes, RLE masks, areas, scores
        ours = ray_coco.loadAnns(ray_coco.getAnnIds(imgIds=[image_id]))
        theirs = local_coco.loadAnns(local_coco.getAnnIds(imgIds=[image_id]))
        assert ours == theirs and len(ours) == 2, local_coco.imgs[image_id]["file_name"]
    assert (out / "annotations.json").read_bytes() == (reference / "annotations.json").read_bytes()
    assert files(out, "masks") == files(reference, "masks") and len(files(out, "masks")) == 2 * len(NAMES)
    assert files(out, "overlays") == files(reference, "overlays")
    assert {r["path"]: r["outputs"]["stem"] for r in records(out)}["x/dup.png"] == "x/dup_png"


@pytest.mark.slow
def test_ray_run_matches_the_local_run(photos: Path, reference: Path, ray_cluster: str, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert predict(photos, out) == 0
    err = capsys.readouterr().err
    assert f"skipped 1 of {len(NAMES) + 1} images:" in err
    assert "broken.jpg: could not decode image 'broken.jpg'" in err
    assert "Traceback" not in err
    assert_same_as_reference(out, reference)
    snapshot = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    assert predict(photos, out) == 0  # nothing left to do: no byte changes
    assert {p: p.read_bytes() for p in snapshot} == snapshot


@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_its_images_redone(
        photos: Path, reference: Path, ray_cluster: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "worker-killed"
    monkeypatch.setenv(FAULT_ENV, f"3:{marker}")  # the first worker to reach its 3rd image exits
    out = tmp_path / "out"
    assert predict(photos.as_uri(), out) == 0  # the workers read through pyarrow's file:// filesystem
    assert marker.exists()  # a worker process really died mid-run
    assert_same_as_reference(out, reference)
    assert all(r["source"].startswith("file:///") for r in records(out))


@pytest.mark.slow
def test_a_killed_driver_resumes_without_losing_or_repeating_images(
        photos: Path, reference: Path, ray_cluster: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    entry = "import sys; from grounded.cli import main; sys.exit(main(sys.argv[1:]))"
    command = [sys.executable, "-c", entry, "predict", str(photos), "-p", "cat. dog", "-o", str(out), "-q",
               *MODEL,
               "--engine", "ray", "--ray-address", ray_cluster, "--workers", "2", "--batch-size", "1"]
    driver = subprocess.Popen(command, env={**os.environ, "PYTHONPATH": str(REPO)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    lines = out / "predictions.jsonl"
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline and driver.poll() is None:
            if lines.exists() and lines.read_bytes().count(b"\n") >= 3:
                break
            time.sleep(0.05)
    finally:
        driver.send_signal(signal.SIGKILL)
        _, err = driver.communicate(timeout=30)
    before = lines.read_bytes().splitlines(keepends=True)
    assert 3 <= len(before) < len(NAMES), err.decode()[-2000:]  # killed mid-run
    assert predict(photos, out) == 0
    assert lines.read_bytes().startswith(b"".join(line for line in before if line.endswith(b"\n")))
    assert_same_as_reference(out, reference)


def test_ray_flags_need_the_ray_engine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_png(tmp_path / "a.png", 0)
    code = main(["predict", str(tmp_path / "a.png"), "-p", "cat", "-o", str(tmp_path / "out"),
                 "--workers", "2"])
    assert code == 2
    assert "--workers only apply to --engine ray" in capsys.readouterr().err
    code = main(["predict", str(tmp_path / "a.png"), "-p", "cat", "-o", str(tmp_path / "out"),
                 "--engine", "ray", "--device", "cuda"])
    assert code == 2
    assert "needs --gpus-per-worker" in capsys.readouterr().err


def test_missing_ray_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    write_png(tmp_path / "a.png", 0)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    code = main(["predict", str(tmp_path / "a.png"), "-p", "cat", "-o", str(tmp_path / "out"), *MODEL,
                 "--engine", "ray"])
    assert code == 2
    assert "pip install 'grounded-sam[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_uri_source_reads_through_pyarrow_with_the_same_names(photos: Path, reference: Path,
                                                                 tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    by_uri, by_path = expand_sources([photos.as_uri()]), expand_sources([photos])
    assert [i.name for i in by_uri] == [i.name for i in by_path] == sorted([*NAMES, "broken.jpg"])
    assert {i.name: i.location for i in by_uri}[NAMES[0]] == (photos / NAMES[0]).as_uri()
    out = tmp_path / "out"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["predict", photos.as_uri(), "-p", "cat. dog", "-o", str(out), "-q", *MODEL]) == 0
    finally:
        torch.set_num_threads(threads)
    assert_same_as_reference(out, reference)
    with pytest.raises(SourceError, match="neither an object nor a folder"):
        expand_sources([(photos / "missing").as_uri()])


def test_annotations_reuse_the_records_masks_exactly(reference: Path) -> None:
    """``annotations.json`` takes RLE and area from the records instead of decoding every mask: the
    result equals a CocoBuilder fed the decoded masks, image by image in sorted order."""
    from grounded.io.export import CocoBuilder, detections_from_dict

    coco = json.loads((reference / "annotations.json").read_text("utf-8"))
    builder = CocoBuilder(description="grounded-sam predict", models=coco["info"]["models"])
    builder.add_categories(["cat", "dog"])
    for record in sorted(records(reference), key=lambda r: (r["path"], r["source"])):
        image_id = builder.add_image(record["path"], record["image"]["width"], record["image"]["height"])
        builder.add_detections(image_id, detections_from_dict(record))  # masks decoded, re-encoded
    assert builder.to_dict() == coco


def test_the_core_cli_does_not_import_ray_or_pyarrow() -> None:
    code = ("import sys, grounded.cli.main, grounded.cli.batch, grounded.io.sources; "
            "print(sorted(m for m in ('ray', 'pyarrow') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"


def test_a_rendered_image_crosses_to_the_driver_without_pickle() -> None:
    from grounded.cli.image_job import RenderedImage

    rendered = RenderedImage(name="a/b.png", source="s3://x/a/b.png",
                             payload={"detections": [{"score": 0.1}]},
                             mask_pngs=(b"\x89PNG1", b"", b"\x89PNG333"), overlay_png=b"\x89PNG-overlay",
                             models={"preset": "tiny-random"})
    assert RenderedImage.unpack(*rendered.pack()) == rendered
    skipped = RenderedImage(name="c.jpg", source="/c.jpg", error="could not decode image 'c.jpg'")
    assert RenderedImage.unpack(*skipped.pack()) == skipped
