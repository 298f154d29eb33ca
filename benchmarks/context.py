"""What every benchmark variant receives: where the weights are, model size, and how often to run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["Context", "Skipped"]


class Skipped(RuntimeError):
    """A variant that cannot run meaningfully here (e.g. bf16 on a CPU without native bf16)."""


@dataclass(frozen=True)
class Context:
    """Arguments of one (case, variant) run.

    workdir: holds the saved weights (``weights.SAM_DIR``/``DINO_DIR``) and ``outputs/`` where
        variants save tensors for the accuracy comparison the parent process makes.
    size: "full" (real architectures, random weights) or "tiny" (smoke test).
    warmup, repeats: untimed and timed runs per measurement.
    """

    workdir: Path
    size: str
    warmup: int
    repeats: int

    def output_path(self, name: str) -> Path:
        folder = self.workdir / "outputs"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{name}.pt"

    def save(self, name: str, tensors: dict[str, torch.Tensor]) -> None:
        torch.save({k: v.detach().cpu() for k, v in tensors.items()}, self.output_path(name))

    def load(self, name: str) -> dict[str, torch.Tensor] | None:
        path = self.output_path(name)
        return torch.load(path, weights_only=True) if path.is_file() else None
