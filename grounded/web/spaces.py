"""``spaces.GPU`` when running on Hugging Face Spaces (ZeroGPU), a no-op decorator everywhere else.

On a ZeroGPU Space, functions that touch CUDA must be decorated with ``@spaces.GPU`` so a GPU is
attached for the duration of the call. Off Spaces the ``spaces`` package is usually absent, and the
decorator must then change nothing::

    from grounded.web.spaces import gpu

    @gpu                      # or @gpu(duration=120)
    def run(...): ...
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

__all__ = ["ON_SPACES", "gpu"]

F = TypeVar("F", bound=Callable[..., Any])

try:  # the real decorator, only present on Spaces (pip install spaces)
    import spaces as _spaces

    _GPU: Callable[..., Any] | None = _spaces.GPU
except Exception:  # ImportError, or a broken optional install: run without it
    _GPU = None

ON_SPACES = _GPU is not None
"""True when ``spaces.GPU`` is importable (a Hugging Face Space)."""


@overload
def gpu(fn: F, /) -> F: ...
@overload
def gpu(fn: None = None, /, **kwargs: Any) -> Callable[[F], F]: ...


def gpu(fn: F | None = None, /, **kwargs: Any) -> F | Callable[[F], F]:
    """``spaces.GPU`` (with ``duration=...`` etc.) when available, else return ``fn`` unchanged.

    Works bare (``@gpu``) and with arguments (``@gpu(duration=60)``), like ``spaces.GPU``.
    """

    def decorate(func: F) -> F:
        if _GPU is None:
            return func
        return _GPU(**kwargs)(func) if kwargs else _GPU(func)

    return decorate(fn) if fn is not None else decorate
