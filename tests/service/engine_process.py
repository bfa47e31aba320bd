"""A real ``upr-faces serve`` process for tests, and a small client of its API.

    engine = EngineProcess(tmp_path / "data")
    engine.start()                    # waits for "listening on http://127.0.0.1:PORT"
    async with EngineClient(engine) as api:
        status, info = await api.get("/info")
    engine.kill()                     # SIGKILL; engine.start() again keeps the same port
    engine.stop()                     # SIGTERM; returns the seconds it took

Everything the process prints goes to ``engine.log`` (read it with ``engine.log_text()``).
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
ENGINE_PROJECT = ROOT / "custom_components" / "upr_faces" / "engine"


class EngineProcess:
    """``python -m upr_faces_engine serve --data DIR`` on 127.0.0.1."""

    def __init__(self, data: Path, *, port: int = 0, extra: tuple[str, ...] = ()) -> None:
        self.data = data
        self.port = port
        self.extra = extra
        self.log = data.parent / f"{data.name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    @property
    def token(self) -> str:
        """The bearer token the engine made (or was given)."""
        return (self.data / "token").read_text(encoding="utf-8").strip()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 90.0) -> str:
        """Start it (on the port of the previous run, if any); its base URL."""
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ENGINE_PROJECT), os.environ.get("PYTHONPATH", "")]),
            "PYTHONUNBUFFERED": "1",
        }
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "upr_faces_engine",
                    "serve",
                    "--data",
                    str(self.data),
                    "--port",
                    str(self.port),
                    # the tests' clips lie in pytest's folders
                    *(() if "--media" in self.extra else ("--media", tempfile.gettempdir())),
                    *self.extra,
                ],
                stdout=subprocess.PIPE,
                stderr=log,
                env=env,
                start_new_session=True,
            )
        assert self.process.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(self.process.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        line = b""
        while not line.endswith(b"\n"):
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.kill()
                raise AssertionError(f"the engine did not start: {self.log_text()[-3000:]}")
            if selector.select(0.2):
                chunk = os.read(self.process.stdout.fileno(), 1)
                if not chunk:
                    continue
                line += chunk
        selector.close()
        text = line.decode().strip()
        assert text.startswith(
            ("listening on http://127.0.0.1:", "listening on https://127.0.0.1:")
        ), text
        self.url = text.removeprefix("listening on ")
        self.port = int(self.url.rsplit(":", 1)[1])
        return self.url

    def stop(self, timeout: float = 15.0) -> float:
        """SIGTERM and wait; the seconds it took to exit."""
        if not self.running:
            return 0.0
        assert self.process is not None
        began = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        finally:
            self._close()
        return time.monotonic() - began

    def kill(self) -> None:
        """SIGKILL (a crash, a power cut of the process)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._close()

    def _close(self) -> None:
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.running:
            self.stop()


class EngineClient:
    """The engine's API over aiohttp, with the engine's token (or another one)."""

    def __init__(
        self, engine: EngineProcess, token: str | None = None, ssl: ssl.SSLContext | None = None
    ) -> None:
        self.engine = engine
        self.token = engine.token if token is None else token
        self.ssl = ssl
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        connector = aiohttp.TCPConnector(ssl=self.ssl) if self.ssl else None
        self.session = aiohttp.ClientSession(connector=connector)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.session is not None
        await self.session.close()

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """(status, decoded JSON or raw bytes) of ``/api/v1{path}``."""
        assert self.session is not None
        kwargs: dict[str, Any] = {"headers": self.headers}
        if body is not None:
            kwargs["data"] = body if isinstance(body, bytes | str) else json.dumps(body)
        async with self.session.request(
            method, f"{self.engine.url}/api/v1{path}", **kwargs
        ) as response:
            raw = await response.read()
            if response.content_type == "application/json":
                return response.status, json.loads(raw)
            return response.status, raw

    async def get(self, path: str) -> tuple[int, Any]:
        return await self.request("GET", path)

    async def put_config(self, config: dict[str, Any]) -> dict[str, Any]:
        status, answer = await self.request("PUT", "/config", config)
        assert status == 200, answer
        result: dict[str, Any] = answer
        return result

    async def info(self) -> dict[str, Any]:
        status, info = await self.get("/info")
        assert status == 200, info
        result: dict[str, Any] = info
        return result

    @asynccontextmanager
    async def events(
        self, after: int = 0, epoch: str | None = None
    ) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
        """The event websocket (the hello message is left to the caller)."""
        assert self.session is not None
        query = f"?after={after}" + (f"&epoch={epoch}" if epoch else "")
        async with self.session.ws_connect(
            f"{self.engine.url}/api/v1/events{query}", headers=self.headers, heartbeat=30
        ) as socket:
            yield socket
