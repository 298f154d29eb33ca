"""Images fetched from URLs stop at the byte limit while they stream, with Gradio's SSRF checks kept.

Gradio downloads a URL input with ``safehttpx.get`` (a private address is refused; public hosts
are pinned to their validated IP) and reads the whole body into memory before anything checks its
size. :class:`LimitedTransport` is handed to Gradio as its download transport: for each request it
makes the same choice ``safehttpx.get`` makes (default transport for allow-listed hosts, else
``AsyncSecureTransport`` on the validated IP) and wraps the response so that a ``Content-Length`` over
the limit, or a body that streams past it, fails at once, having read at most the limit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx

__all__ = ["DownloadTooLarge", "LimitedTransport"]


class DownloadTooLarge(ValueError):
    """A URL's body is larger than the server's file-size limit."""


class LimitedTransport(httpx.AsyncBaseTransport):
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        import safehttpx
        from gradio import processing_utils

        host = request.url.host
        if safehttpx.matches_domain_whitelist(host, list(processing_utils.PUBLIC_HOSTNAME_WHITELIST)):
            inner: httpx.AsyncBaseTransport = httpx.AsyncHTTPTransport()
        else:  # what safehttpx.get does: refuse private addresses, pin the validated IP
            inner = safehttpx.AsyncSecureTransport(await safehttpx.async_validate_url(host))
        response = await inner.handle_async_request(request)
        length = response.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await response.aclose()
            raise DownloadTooLarge(self._message(f"{int(length) / 1e6:.1f} MB"))
        return httpx.Response(response.status_code, headers=response.headers,
                              stream=_Limited(response, self.max_bytes, self._message),
                              extensions=response.extensions, request=request)

    def _message(self, size: str) -> str:
        return f"the image at this URL is {size}; the limit is {self.max_bytes / 1e6:g} MB"


class _Limited(httpx.AsyncByteStream):
    def __init__(self, response: httpx.Response, max_bytes: int, message) -> None:  # noqa: ANN001
        self.response, self.max_bytes, self.message = response, max_bytes, message

    async def __aiter__(self) -> AsyncIterator[bytes]:
        total = 0
        async for chunk in self.response.aiter_raw():
            total += len(chunk)
            if total > self.max_bytes:
                raise DownloadTooLarge(self.message(f"over {self.max_bytes / 1e6:g} MB"))
            yield chunk

    async def aclose(self) -> None:
        await self.response.aclose()
