"""The engine's API (docs/engine_api.md) over Home Assistant's aiohttp session.

Typed, async, and nothing else: no Home Assistant state, no engine code. Every call
carries the engine's bearer token; failures become :class:`EngineConnectionError` (no
answer), :class:`EngineAuthError` (401) or :class:`EngineApiError` (an error the engine
explains with a code and placeholders, which the integration translates).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp

API: Final = "/api/v1"
TIMEOUT: Final = aiohttp.ClientTimeout(total=30, sock_connect=10)
LONG_TIMEOUT: Final = aiohttp.ClientTimeout(total=120, sock_connect=10)


class EngineError(Exception):
    """The engine could not do what was asked."""


class EngineConnectionError(EngineError):
    """No answer from the engine (not running, wrong address, network)."""


class EngineAuthError(EngineError):
    """The engine refused the token."""


class NotAnEngineError(EngineConnectionError):
    """Something answers at that address, but not as a UPR Faces engine does (a web page,
    a proxy's error page): the engine is not reachable there."""


class EngineApiError(EngineError):
    """An error the engine explains: ``code`` and ``placeholders`` for the words."""

    def __init__(self, status: int, code: str, message: str, placeholders: dict[str, Any]):
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.placeholders = {key: str(value) for key, value in placeholders.items()}


@dataclass(frozen=True, slots=True)
class EngineEvent:
    """One message of the event stream: an event (with an id), or hello / gap (without)."""

    type: str
    id: int | None = None
    data: dict[str, Any] = field(default_factory=dict)
    message: dict[str, Any] = field(default_factory=dict)


class EngineClient:
    """One engine: its base URL (``http(s)://host:port``) and token."""

    def __init__(
        self, session: aiohttp.ClientSession, url: str, token: str, *, verify_ssl: bool = True
    ) -> None:
        self.session = session
        self.url = url.rstrip("/")
        self._token = token
        self._ssl = bool(verify_ssl)

    def __repr__(self) -> str:
        return f"EngineClient({self.url})"

    @property
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"}

    async def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        limit: aiohttp.ClientTimeout = TIMEOUT,
        raw: bool = False,
    ) -> Any:
        try:
            async with self.session.request(
                method,
                f"{self.url}{API}{path}",
                json=body,
                headers=self._headers,
                timeout=limit,
                ssl=self._ssl,
            ) as response:
                data = await response.read()
                status = response.status
                content_type = response.content_type
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            raise EngineConnectionError(f"no answer from the engine at {self.url}: {err}") from err
        if status == 401:
            raise EngineAuthError("the engine refused the token")
        if status >= 400:
            try:
                error = json.loads(data)["error"]
                raise EngineApiError(
                    status,
                    str(error.get("code", "unknown")),
                    str(error.get("message", "")),
                    dict(error.get("placeholders") or {}),
                )
            except (ValueError, KeyError, TypeError, AttributeError):
                raise EngineApiError(status, "unknown", f"HTTP {status}", {}) from None
        if raw:
            return data
        if content_type != "application/json":
            raise NotAnEngineError(f"{self.url} does not answer as an engine does")
        try:
            return json.loads(data)
        except ValueError as err:
            raise NotAnEngineError(f"{self.url} sent something that is not JSON") from err

    # ----------------------------------------------------------------- info and config

    async def info(self) -> dict[str, Any]:
        """``GET /info``."""
        result: dict[str, Any] = await self._request("GET", "/info")
        return result

    async def put_config(self, config: dict[str, Any]) -> dict[str, Any]:
        """Push the whole configuration; what it changed."""
        result: dict[str, Any] = await self._request("PUT", "/config", config, limit=LONG_TIMEOUT)
        return result

    async def import_history(self, history: dict[str, Any]) -> dict[str, Any]:
        """Hand over the alerts and audit an older integration kept (once per origin)."""
        result: dict[str, Any] = await self._request("POST", "/import", history)
        return result

    # ----------------------------------------------------------------- cameras

    async def snapshot(self, camera_id: str, width: int | None = None) -> bytes | None:
        """The camera's newest frame with its face boxes; None before the first."""
        query = f"?width={width}" if width else ""
        try:
            data: bytes = await self._request(
                "GET", f"/cameras/{camera_id}/snapshot.jpg{query}", raw=True
            )
        except EngineApiError as err:
            if err.code in ("no_frame", "unknown_camera"):
                return None
            raise
        return data

    def stream_url(self, camera_id: str, fps: int = 5) -> str:
        """Where the camera's MJPEG live view is."""
        return f"{self.url}{API}/cameras/{camera_id}/stream.mjpg?fps={fps}"

    async def open_stream(self, camera_id: str, fps: int = 5) -> aiohttp.ClientResponse:
        """The MJPEG live view's response (the caller reads it, then releases it)."""
        try:
            response = await self.session.get(
                self.stream_url(camera_id, fps),
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=30),
                ssl=self._ssl,
            )
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            raise EngineConnectionError(str(err)) from err
        if response.status != 200:
            response.release()
            raise EngineApiError(response.status, "no_stream", "no live view", {})
        return response

    async def set_monitoring(
        self, camera_id: str, on: bool, *, user_id: str | None, user_name: str | None
    ) -> None:
        """Start or stop watching a camera."""
        await self._request(
            "POST",
            f"/cameras/{camera_id}/monitoring",
            {"on": on, "user_id": user_id, "user_name": user_name},
        )

    # ----------------------------------------------------------------- alerts

    async def alerts(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest alerts first."""
        data = await self._request("GET", f"/alerts?limit={limit}")
        alerts: list[dict[str, Any]] = data["alerts"]
        return alerts

    async def alert(self, alert_id: str) -> dict[str, Any] | None:
        """One alert; None when the engine has no such alert."""
        try:
            result: dict[str, Any] = await self._request("GET", f"/alerts/{alert_id}")
        except EngineApiError as err:
            if err.status == 404:
                return None
            raise
        return result

    async def alert_image(self, alert_id: str, kind: str) -> bytes | None:
        """An alert's face crop or frame; None when there is none."""
        try:
            data: bytes = await self._request("GET", f"/alerts/{alert_id}/{kind}.jpg", raw=True)
        except EngineApiError as err:
            if err.status == 404:
                return None
            raise
        return data

    async def verdict(
        self,
        alert_id: str,
        verdict: str,
        *,
        user_id: str | None,
        user_name: str | None,
        comment: str | None,
    ) -> dict[str, Any]:
        """Confirm or reject an alert; the alert after the verdict."""
        result: dict[str, Any] = await self._request(
            "POST",
            f"/alerts/{alert_id}/verdict",
            {"verdict": verdict, "user_id": user_id, "user_name": user_name, "comment": comment},
        )
        return result

    async def audit(self, since: float | None = None) -> list[dict[str, Any]]:
        """The audit trail, oldest first."""
        query = f"?since={since}" if since is not None else ""
        data = await self._request("GET", f"/audit{query}")
        entries: list[dict[str, Any]] = data["audit"]
        return entries

    async def add_audit(
        self,
        action: str,
        details: dict[str, Any],
        *,
        user_id: str | None,
        user_name: str | None,
    ) -> None:
        """Put an action done in Home Assistant into the engine's audit trail."""
        await self._request(
            "POST",
            "/audit",
            {"action": action, "details": details, "user_id": user_id, "user_name": user_name},
        )

    async def person_photo(self, person_id: str) -> bytes | None:
        """A person's reference photo; None when there is none."""
        try:
            data: bytes = await self._request("GET", f"/persons/{person_id}/photo", raw=True)
        except EngineApiError as err:
            if err.status == 404:
                return None
            raise
        return data

    # ----------------------------------------------------------------- forms

    async def check_source(self, source: str, stored: str | None = None) -> dict[str, Any]:
        """Parse a camera source (``stored`` fills the ``***`` of an edited one)."""
        result: dict[str, Any] = await self._request(
            "POST", "/sources/check", {"source": source, "stored": stored}
        )
        return result

    async def test_source(self, source: str) -> dict[str, Any]:
        """Open a camera source briefly."""
        result: dict[str, Any] = await self._request(
            "POST", "/sources/test", {"source": source}, limit=LONG_TIMEOUT
        )
        return result

    async def scan_usb(self, *, user_id: str | None, user_name: str | None) -> list[dict[str, Any]]:
        """The USB cameras of the engine's host."""
        data = await self._request(
            "POST", "/usb/scan", {"user_id": user_id, "user_name": user_name}, limit=LONG_TIMEOUT
        )
        cameras: list[dict[str, Any]] = data["cameras"]
        return cameras

    async def test_registry(self, url: str, api_key: str, verify_ssl: bool) -> dict[str, Any]:
        """Whether the engine reaches the registry with this key."""
        result: dict[str, Any] = await self._request(
            "POST",
            "/registry/test",
            {"url": url, "api_key": api_key, "verify_ssl": verify_ssl},
            limit=LONG_TIMEOUT,
        )
        return result

    async def check_folder(self, folder: str) -> dict[str, Any]:
        """A folder of the engine's host, created when missing: whether it can be used."""
        result: dict[str, Any] = await self._request("POST", "/folders/check", {"folder": folder})
        return result

    async def models(self) -> dict[str, Any]:
        """The official packs and where they are."""
        result: dict[str, Any] = await self._request("GET", "/models")
        return result

    async def download(self, pack: str, url: str | None = None) -> dict[str, Any]:
        """Start downloading an official pack; its job."""
        result: dict[str, Any] = await self._request(
            "POST", f"/models/{pack}/download", {"url": url} if url else {}
        )
        return result

    async def download_status(self, pack: str) -> dict[str, Any]:
        """How far a download got."""
        result: dict[str, Any] = await self._request("GET", f"/models/{pack}/download")
        return result

    async def verify_models(self, folder: str) -> dict[str, Any]:
        """Whether a folder of the engine's host holds a usable pack."""
        result: dict[str, Any] = await self._request(
            "POST", "/models/verify", {"folder": folder}, limit=LONG_TIMEOUT
        )
        return result

    async def refresh_gallery(
        self, *, user_id: str | None, user_name: str | None
    ) -> dict[str, Any]:
        """Sync the registry (or re-read the folder) now."""
        result: dict[str, Any] = await self._request(
            "POST",
            "/gallery/refresh",
            {"user_id": user_id, "user_name": user_name},
            limit=LONG_TIMEOUT,
        )
        return result

    # ----------------------------------------------------------------- events

    async def events(self, after: int, epoch: str | None) -> AsyncIterator[EngineEvent]:
        """The event stream from ``after`` on (see docs/engine_api.md, *Events*).

        Ends (without an error) when the engine closes it; raises EngineConnectionError or
        EngineAuthError when it cannot be opened.
        """
        query = f"?after={after}" + (f"&epoch={epoch}" if epoch else "")
        try:
            socket = await self.session.ws_connect(
                f"{self.url}{API}/events{query}",
                headers=self._headers,
                heartbeat=10,
                ssl=self._ssl,
            )
        except aiohttp.WSServerHandshakeError as err:
            if err.status == 401:
                raise EngineAuthError("the engine refused the token") from err
            raise EngineConnectionError(str(err)) from err
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            raise EngineConnectionError(str(err)) from err
        try:
            async for message in socket:
                if message.type is not aiohttp.WSMsgType.TEXT:
                    break
                try:
                    decoded = json.loads(message.data)
                except ValueError:
                    continue
                yield EngineEvent(
                    type=str(decoded.get("type")),
                    id=decoded.get("id"),
                    data=decoded.get("data") or {},
                    message=decoded,
                )
        finally:
            await socket.close()


async def async_probe(
    session: aiohttp.ClientSession, url: str, token: str, *, verify_ssl: bool = True
) -> dict[str, Any]:
    """An engine's info, to test an address and token before saving them."""
    return await EngineClient(session, url, token, verify_ssl=verify_ssl).info()


__all__ = [
    "EngineApiError",
    "EngineAuthError",
    "EngineClient",
    "EngineConnectionError",
    "EngineError",
    "EngineEvent",
    "NotAnEngineError",
    "async_probe",
]
