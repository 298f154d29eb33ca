"""Request-body limit for the web server: refuse an oversized body before it is held whole.

Gradio limits multipart uploads (``max_file_size``) but reads JSON bodies -- where a base64 ``data:``
image travels -- whole, whatever their size. :class:`BodyLimitMiddleware` (plain ASGI, no gradio import)
answers HTTP 413 with a JSON message naming both sizes: from ``Content-Length`` before reading
anything, or while streaming a body without one, having buffered at most the limit.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["BodyLimitMiddleware", "body_limit_for"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def body_limit_for(max_file_size: int) -> int:
    """The largest request body that can carry one ``max_file_size`` image: base64 (4/3) plus 1 MiB
    of JSON or multipart framing."""
    return max_file_size * 4 // 3 + 2**20


class BodyLimitMiddleware:
    """Answer 413 to any HTTP request whose body exceeds ``max_bytes``; pass everything else through."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = int(max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        length = _content_length(scope)
        if length is not None:
            if length > self.max_bytes:
                await self._refuse(send, length)
                return
            await self.app(scope, receive, send)
            return
        # No Content-Length (chunked): buffer up to the limit, then replay it to the app.
        messages: list[Message] = []
        total = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            total += len(message.get("body", b""))
            if total > self.max_bytes:
                await self._refuse(send, None)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send, length: int | None) -> None:
        size = f"{length / 1e6:.1f} MB" if length is not None else f"over {self.max_bytes / 1e6:.1f} MB"
        body = json.dumps({"error": f"request body is {size}; the limit is {self.max_bytes / 1e6:.1f} MB "
                                    "(images up to the server's max file size, base64 included)"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
