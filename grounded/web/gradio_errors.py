"""How the page's and the HTTP API's handlers report errors: a specific message for bad input, a generic
one (logged with its traceback on the server) for anything else; never a traceback or a path to clients."""

from __future__ import annotations

import functools
import html
import logging
from collections.abc import Callable
from typing import Any

import gradio as gr

__all__ = ["errors_for_api", "errors_for_users"]

_LOG = logging.getLogger("grounded.app")


def errors_for_users(fn: Callable[..., Any]) -> Callable[..., Any]:
    """For the page's events, whose messages the browser renders as HTML: ValueError -> ``gr.Error``
    with its HTML-escaped message; anything else is logged here and the client gets a generic message
    (no traceback, no paths)."""
    return _errors(fn, escape=True)


def errors_for_api(fn: Callable[..., Any]) -> Callable[..., Any]:
    """For the HTTP-only ``/segment`` endpoint: the same, with the message as plain text (it travels
    as a JSON string in an event stream, never rendered as HTML)."""
    return _errors(fn, escape=False)


def _errors(fn: Callable[..., Any], *, escape: bool) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except ValueError as exc:
            message = html.escape(str(exc), quote=False) if escape else str(exc)
            raise gr.Error(message, print_exception=False) from None
        except Exception:
            _LOG.exception("unexpected error in %s", fn.__name__)
            raise gr.Error("Internal error while processing this request (logged on the server). "
                           "Try again, or with a smaller image.", print_exception=False) from None

    return wrapper
