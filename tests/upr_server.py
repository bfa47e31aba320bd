"""A UPR registry for tests: the development server's application on 127.0.0.1, with knobs.

The contract is served by :mod:`upr_faces_dev.devserver` (the same
code as ``scripts/upr_dev_server``); this adds faults in front of it::

    async with UprServer() as server:          # needs pytest-socket's ``socket_enabled``
        server.registry.put_person("p1", "UPR-1", photos=[...])
        server.fail(503, times=2)              # next two requests answer 503
        server.fail(429, retry_after="0.05")   # one 429 with Retry-After
        server.delay(2.0, path="/persons")     # answer /persons after 2 s
        server.serve(b"not json", path="/persons")  # replace one answer's body
        server.answer(lambda request: ..., times=1000, path="/persons")  # made per request
        server.registry.add_photo("bomb.png", decompression_bomb())  # 1 MB, 1 gigapixel
        client = UprClient(session, server.url, server.key)

``await server.stop()`` then ``await server.start()`` restarts it on the same port with
the same registry: "the registry is down" is a refused connection, as in life.
"""

from __future__ import annotations

import asyncio
import struct
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from upr_faces_dev.devserver import DevRegistry, create_app

type Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(slots=True)
class Fault:
    """What the server does instead of (or before) answering, ``times`` times."""

    times: int
    path: str | None = None
    method: str | None = None
    status: int | None = None
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    delay: float = 0.0
    chunked: bool = False
    after: int = 0
    make: Callable[[web.Request], bytes] | None = None

    def matches(self, request: web.Request, base: str) -> bool:
        """Whether this fault applies to the request."""
        if self.method is not None and request.method != self.method:
            return False
        return self.path is None or request.path.removeprefix(base).startswith(self.path)


class UprServer:
    """The registry on an ephemeral port of 127.0.0.1; see the module's docstring."""

    def __init__(self, key: str = "test-key-5f2b9c", *, base: str = "/api") -> None:
        self.key = key
        self.base = base
        self.registry = DevRegistry()
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str]] = []
        self.authorizations: list[str | None] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """The base URL of the API."""
        return f"http://127.0.0.1:{self.port}{self.base}"

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    # --- knobs ----------------------------------------------------------------------------

    def fail(
        self,
        status: int,
        *,
        times: int = 1,
        path: str | None = None,
        method: str | None = None,
        retry_after: str | None = None,
        body: bytes = b'{"error": "injected"}',
        after: int = 0,
    ) -> None:
        """Answer ``status`` to the next ``times`` matching requests, once ``after``
        matching requests went through untouched."""
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        self.faults.append(Fault(times, path, method, status, body, headers, after=after))

    def delay(self, seconds: float, *, times: int = 1, path: str | None = None) -> None:
        """Answer the next ``times`` matching requests after ``seconds``."""
        self.faults.append(Fault(times, path, delay=seconds))

    def serve(
        self,
        body: bytes,
        *,
        times: int = 1,
        path: str | None = None,
        status: int = 200,
        content_type: str = "application/json",
        chunked: bool = False,
    ) -> None:
        """Answer ``body`` (garbage, oversized...) to the next ``times`` matching requests;
        ``chunked`` sends it without a Content-Length."""
        self.faults.append(
            Fault(times, path, None, status, body, content_type=content_type, chunked=chunked)
        )

    def answer(
        self,
        make: Callable[[web.Request], bytes],
        *,
        times: int = 1,
        path: str | None = None,
        content_type: str = "application/json",
    ) -> None:
        """Answer what ``make(request)`` returns (a new cursor each time...) to the next
        ``times`` matching requests."""
        self.faults.append(Fault(times, path, None, 200, content_type=content_type, make=make))

    def count(self, path: str, method: str = "GET") -> int:
        """How many requests reached ``base + path`` (query aside)."""
        full = self.base + path
        return sum(1 for m, p in self.requests if m == method and p.split("?")[0] == full)

    def received(self) -> dict[str, Any]:
        """What the registry took: alerts, verdicts and every POST with its status."""
        return self.registry.received()

    # --- lifecycle ------------------------------------------------------------------------

    @web.middleware
    async def _faults(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs))
        self.authorizations.append(request.headers.get("Authorization"))
        for fault in self.faults:
            if fault.times > 0 and fault.matches(request, self.base):
                if fault.after > 0:
                    fault.after -= 1
                    continue
                fault.times -= 1
                if fault.delay:
                    await asyncio.sleep(fault.delay)
                if fault.status is None:
                    break
                body = fault.make(request) if fault.make is not None else fault.body
                if fault.chunked:
                    response = web.StreamResponse(status=fault.status, headers=fault.headers)
                    response.content_type = fault.content_type
                    response.enable_chunked_encoding()
                    await response.prepare(request)
                    for start in range(0, len(body), 65536):
                        await response.write(body[start : start + 65536])
                    await response.write_eof()
                    return response
                return web.Response(
                    status=fault.status,
                    body=body,
                    headers=fault.headers,
                    content_type=fault.content_type,
                )
        self.faults = [fault for fault in self.faults if fault.times > 0]
        return await handler(request)

    async def start(self) -> Self:
        """Listen (on the same port as before after a :meth:`stop`)."""
        app = create_app(self.registry, self.key, base=self.base, middlewares=[self._faults])
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port)
        await site.start()
        self._runner = runner
        if not self.port:
            self.port = runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        """Stop listening: connections are refused until :meth:`start`."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def decompression_bomb(width: int = 32_000, height: int = 32_000) -> bytes:
    """A valid 8-bit grayscale PNG of ``width`` x ``height`` black pixels: about 1 MB for
    the default billion pixels, 1 GB once decoded (3 GB as the analyzer's BGR)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    packer = zlib.compressobj(9)
    rows = (b"\0" * (width + 1)) * max(1, 8_000_000 // (width + 1))  # filter byte + pixels
    per_batch = len(rows) // (width + 1)
    parts: list[bytes] = []
    for start in range(0, height, per_batch):
        parts.append(packer.compress(rows[: (width + 1) * min(per_batch, height - start)]))
    parts.append(packer.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", b"".join(parts))
        + chunk(b"IEND", b"")
    )
