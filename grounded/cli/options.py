"""What one ``predict`` run asks for (``BatchOptions``) and what it did (``BatchResult``); shared by the
local engine (``batch.py``) and the Ray engine (``ray_engine.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["FORMATS", "BatchOptions", "BatchResult"]

FORMATS = ("coco", "png", "overlay", "jsonl")


@dataclass(frozen=True)
class BatchOptions:
    """What one batch run predicts and writes; ``None`` thresholds fall back to the pipeline config."""

    classes: list[str]
    formats: frozenset[str] = frozenset(FORMATS)
    box_threshold: float | None = None
    text_threshold: float | None = None
    nms_iou: float | None = None
    max_detections: int | None = None
    multimask: bool | None = None
    overwrite: bool = False


@dataclass
class BatchResult:
    """Counts of one run. ``failed`` holds (image name, reason) for every skipped image, in the
    images' sorted order whatever order they were processed in."""

    selected: int = 0
    already_done: int = 0
    succeeded: int = 0
    instances: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """1 when images failed and none of the selected images is finished (now or before), else 0."""
        return 1 if self.failed and self.succeeded == 0 and self.already_done == 0 else 0
