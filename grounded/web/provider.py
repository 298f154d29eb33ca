"""The page's model presets: each built on first use, its state ("loaded", "loads on first use",
"unavailable: why") shown in the model picker before anyone waits for a load that cannot succeed."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

from grounded.config import PIPELINE_PRESETS, PipelineConfig, load_config
from grounded.pipeline import GroundedSAM
from sam_core.hub import HubAccessDenied, hub_offline, on_this_machine

__all__ = ["OFFLINE_MISSING", "PipelineProvider", "PresetUnavailableError", "why_unavailable"]

_LOG = logging.getLogger(__name__)


class PipelineProvider:
    """Named pipelines (the page's presets), each built on first use, then kept. Thread-safe.

    Args:
        builders: preset name -> zero-argument function returning a ``GroundedSAM``.
        configs: preset name -> its config, when known before building (for the untrained notice).
        default: the preset selected on the page (the first one when omitted).
    """

    def __init__(self, builders: Mapping[str, Callable[[], GroundedSAM]], *,
                 configs: Mapping[str, PipelineConfig] | None = None, default: str | None = None) -> None:
        if not builders:
            raise ValueError("PipelineProvider needs at least one preset")
        self._builders = dict(builders)
        self._configs = dict(configs or {})
        self._loaded: dict[str, GroundedSAM] = {}
        self._failed: dict[str, str] = {}  # preset -> one line on why it could not be loaded
        self._locks = {name: threading.Lock() for name in self._builders}
        self.default = default if default is not None else next(iter(self._builders))
        if self.default not in self._builders:
            raise ValueError(f"default preset {self.default!r} is not one of {self.names}")

    @classmethod
    def of(cls, pipelines: GroundedSAM | PipelineProvider | Callable[[], GroundedSAM]) -> PipelineProvider:
        """A provider as given, one pipeline as the only preset, or a factory loaded on first use."""
        if isinstance(pipelines, PipelineProvider):
            return pipelines
        if isinstance(pipelines, GroundedSAM):
            return cls.from_pipeline(pipelines)
        if callable(pipelines):
            return cls({"default": pipelines})
        raise TypeError(f"need a GroundedSAM, a PipelineProvider or a factory, got {type(pipelines)}")

    @classmethod
    def from_pipeline(cls, pipeline: GroundedSAM, *, name: str | None = None) -> PipelineProvider:
        """One already-built pipeline is the only choice."""
        name = name or pipeline.config.name
        provider = cls({name: lambda: pipeline}, configs={name: pipeline.config})
        provider._loaded[name] = pipeline
        return provider

    @classmethod
    def from_config(cls, config: str | os.PathLike[str] | PipelineConfig = "default",
                    **overrides: Any) -> PipelineProvider:
        """The given config (the default choice) plus every other real pipeline preset (``fast``:
        MobileSAM, ``hq``: SAM-HQ, ``quality``: DINO-B + ViT-H, ...), each loaded on first use. An
        untrained config is offered with the other untrained presets only (``tiny-random-b``), never
        beside real models. ``overrides`` (device, dtype, ...) go to all."""
        base = load_config(config)
        configs = {base.name: base}
        configs.update({name: cfg for name, cfg in PIPELINE_PRESETS.items()
                        if cfg.untrained == base.untrained and name != base.name})
        builders = {name: _builder(cfg, overrides) for name, cfg in configs.items()}
        return cls(builders, configs=configs, default=base.name)

    @property
    def names(self) -> list[str]:
        return list(self._builders)

    def config(self, name: str) -> PipelineConfig | None:
        """The preset's config if known without building it (``None`` for opaque builders)."""
        return self._loaded[name].config if name in self._loaded else self._configs.get(name)

    def is_loaded(self, name: str) -> bool:
        return name in self._loaded

    def state(self, name: str) -> str:
        """``"loaded"``, ``"loads on first use"`` or ``"unavailable: <why, in one line>"``."""
        if name in self._loaded:
            return "loaded"
        if name in self._failed:
            return f"unavailable: {self._failed[name]}"
        config = self._configs.get(name)
        if config is not None and hub_offline() and not weights_on_this_machine(config):
            return f"unavailable: {OFFLINE_MISSING}"
        return "loads on first use"

    def choices(self) -> list[tuple[str, str]]:
        """(label, preset) pairs for the model picker: ``"fast · grounding-dino-tiny + SAM vit_t ·
        loaded"``."""
        pairs = []
        for name in self.names:
            config = self.config(name)
            models = (f" · {config.detector.model.rsplit('/', 1)[-1]} + SAM {config.sam.model_type}"
                      if config is not None else "")
            pairs.append((f"{name}{models} · {self.state(name)}", name))
        return pairs

    def get(self, name: str | None = None) -> GroundedSAM:
        """The pipeline for preset ``name`` (default preset when ``None``), building it once."""
        name = self.default if name is None else name
        if name not in self._builders:
            raise ValueError(f"unknown preset {name!r}; choose one of {self.names}")
        with self._locks[name]:
            if name not in self._loaded:
                try:
                    self._loaded[name] = self._builders[name]()
                    self._failed.pop(name, None)
                except Exception as exc:  # the details (paths, hub errors) go to the server log only
                    _LOG.warning("preset %r could not be loaded: %s", name, exc)
                    self._failed[name] = why_unavailable(exc)
                    denied = _access_denied(exc)
                    if denied is not None:  # gated weights: the one sentence says what to do (no paths)
                        raise PresetUnavailableError(
                            f"preset {name!r} could not be loaded: {denied}") from exc
                    raise PresetUnavailableError(
                        f"preset {name!r} could not be loaded on this server ({self._failed[name]}); "
                        "choose another preset or ask the operator") from exc
            return self._loaded[name]


class PresetUnavailableError(ValueError):
    """A preset's models failed to load; the cause (``__cause__``) holds the details for the operator."""


def _access_denied(error: BaseException | None) -> str | None:
    """The Hub's gated-model sentence if ``error`` or its causes hold a ``HubAccessDenied``."""
    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, HubAccessDenied):
            return str(error)
        error, seen = error.__cause__ or error.__context__, seen + 1
    return None
OFFLINE_MISSING = "weights not on this server (HF_HUB_OFFLINE=1 and not in its Hugging Face cache)"


def weights_on_this_machine(config: PipelineConfig) -> bool:
    """False when the detector's or SAM's weights are a Hub reference missing from the cache (no network
    call: the picker says "unavailable" before anyone waits for a load that cannot succeed offline)."""
    refs = (config.detector.model, config.sam.checkpoint)
    return all(on_this_machine(ref) is not False for ref in refs if ref)


def why_unavailable(exc: BaseException) -> str:
    """One line for users on why a model failed to load, without paths or server details."""
    denied = _access_denied(exc)
    if denied is not None:  # the Hub's gated-model sentence (model page, `hf auth login`)
        return denied
    text = f"{type(exc).__name__} {exc} {exc.__cause__ or ''}".lower()
    if any(word in text for word in ("gated", "401", "403", "unauthorized", "forbidden", "access to model")):
        return "gated on the Hugging Face Hub: the operator must accept its licence and set HF_TOKEN"
    if any(word in text for word in ("offline", "not found", "no such file", "localentrynotfound",
                                     "does not exist", "cannot find", "missing", "connection")):
        return "weights not on this server (not in its Hugging Face cache, and it cannot download them)"
    if "memory" in text:
        return "not enough memory on this server to load it"
    return "failed to load (details in the server log)"


def _builder(config: PipelineConfig, overrides: dict[str, Any]) -> Callable[[], GroundedSAM]:
    return lambda: GroundedSAM.from_config(config, **overrides)
