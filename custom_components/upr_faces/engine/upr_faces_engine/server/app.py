"""The engine's HTTP API, version 1 (``/api/v1/...``), and its event websocket.

Every request carries ``Authorization: Bearer <token>``; anything else gets 401 and nothing
more. Errors are JSON, ``{"error": {"code", "message", "placeholders"}}``, never a
traceback. The contract is documented in ``docs/engine_api.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import WSMsgType, web

from ..errors import UprFacesError
from .config import ConfigError, parse_config
from .engine import Engine, EngineError

_LOGGER = logging.getLogger(__name__)

PREFIX: Final = "/api/v1"
MAX_BODY: Final = 1024 * 1024
MAX_USER_TEXT: Final = 200
MAX_AUDIT_DETAILS: Final = 4096
MAX_COMMENT: Final = 2000
REPLAY_BATCH: Final = 500
_SIGHTING_KIND: Final = re.compile(r"s[1-9][0-9]{0,3}")  # a sighting's face crop
ENGINE_KEY: Final = web.AppKey("engine", Engine)
TOKEN_KEY: Final = web.AppKey("token", str)
SOCKETS_KEY: Final = web.AppKey("sockets", set[web.WebSocketResponse])

type Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(status: int, code: str, message: str, **placeholders: Any) -> web.Response:
    """The JSON error every failure answers with."""
    return web.json_response(
        {"error": {"code": code, "message": message, "placeholders": placeholders}},
        status=status,
    )


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    expected = f"Bearer {request.app[TOKEN_KEY]}".encode()
    given = request.headers.get("Authorization", "").encode()
    if not hmac.compare_digest(given, expected):
        response = error_response(401, "unauthorized", "a valid bearer token is required")
        response.headers["WWW-Authenticate"] = 'Bearer realm="upr-faces"'
        return response
    return await handler(request)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as err:
        if err.status < 400:
            raise
        return error_response(err.status, "http_error", err.reason)
    except EngineError as err:
        return error_response(err.status, err.code, str(err), **err.placeholders)
    except ConfigError as err:
        return error_response(400, "invalid_config", str(err), field=err.field, problem=err.problem)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        _LOGGER.exception("Unexpected error answering %s %s", request.method, request.path)
        return error_response(500, "internal", "unexpected error; see the engine's log")


async def _body(request: web.Request) -> Any:
    try:
        return await request.json(loads=json.loads)
    except (ValueError, UnicodeDecodeError) as err:
        raise EngineError("invalid_json", "the body is not JSON") from err


async def _json(request: web.Request) -> dict[str, Any]:
    data = await _body(request)
    if not isinstance(data, dict):
        raise EngineError("invalid_json", "the body must be a JSON object")
    return data


def _user(data: dict[str, Any]) -> tuple[str | None, str | None]:
    values = []
    for key in ("user_id", "user_name"):
        value = data.get(key)
        if value is not None and (not isinstance(value, str) or len(value) > MAX_USER_TEXT):
            raise EngineError("invalid_request", f"{key} must be a short string", field=key)
        values.append(value)
    return values[0], values[1]


def _int_query(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as err:
        raise EngineError("invalid_request", f"{name} must be a whole number", field=name) from err
    if not low <= value <= high:
        raise EngineError("invalid_request", f"{name} must be from {low} to {high}", field=name)
    return value


def _float_query(request: web.Request, name: str) -> float | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError as err:
        raise EngineError("invalid_request", f"{name} must be a number", field=name) from err


class Api:
    """The request handlers (one engine, one token)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # --------------------------------------------------------------- info and config

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "version": self.engine.version})

    async def info(self, request: web.Request) -> web.Response:
        return web.json_response(self.engine.info())

    async def get_config(self, request: web.Request) -> web.Response:
        config = self.engine.config
        return web.json_response(config.as_dict(masked=True) if config else None)

    async def put_config(self, request: web.Request) -> web.Response:
        config = parse_config(await _body(request), self.engine.media)
        return web.json_response(await self.engine.apply(config))

    # --------------------------------------------------------------- cameras

    def _camera_id(self, request: web.Request) -> str:
        camera_id = request.match_info["camera_id"]
        if camera_id not in self.engine.cameras:
            raise EngineError("unknown_camera", "no such camera", status=404, camera=camera_id)
        return camera_id

    async def snapshot(self, request: web.Request) -> web.Response:
        camera_id = self._camera_id(request)
        width = _int_query(request, "width", 0, 0, 4096) or None
        data = await asyncio.to_thread(self.engine.camera_jpeg, camera_id, width)
        if data is None:
            raise EngineError("no_frame", "no frame from this camera yet", status=503)
        return web.Response(body=data, content_type="image/jpeg")

    async def stream(self, request: web.Request) -> web.StreamResponse:
        camera_id = self._camera_id(request)
        width = _int_query(request, "width", 0, 0, 4096) or None
        fps = _int_query(request, "fps", 5, 1, 15)
        response = web.StreamResponse(
            headers={
                "Content-Type": "multipart/x-mixed-replace; boundary=frame",
                "Cache-Control": "no-store",
            }
        )
        await response.prepare(request)
        try:
            while True:
                data = await asyncio.to_thread(self.engine.camera_jpeg, camera_id, width)
                if data is not None:
                    await response.write(
                        b"--frame\r\nContent-Type: image/jpeg\r\n"
                        + f"Content-Length: {len(data)}\r\n\r\n".encode()
                        + data
                        + b"\r\n"
                    )
                await asyncio.sleep(1 / fps)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response

    async def monitoring(self, request: web.Request) -> web.Response:
        camera_id = self._camera_id(request)
        data = await _json(request)
        if not isinstance(data.get("on"), bool):
            raise EngineError("invalid_request", "on must be true or false", field="on")
        user_id, user_name = _user(data)
        await self.engine.set_monitoring(
            camera_id, data["on"], user_id=user_id, user_name=user_name
        )
        return web.json_response({"camera_id": camera_id, "monitoring": data["on"]})

    # --------------------------------------------------------------- alerts

    async def alerts(self, request: web.Request) -> web.Response:
        limit = _int_query(request, "limit", 50, 1, 5000)
        since = _float_query(request, "since")
        alerts = await asyncio.to_thread(self.engine.store.alerts, limit=limit, since=since)
        from .engine import public_alert

        return web.json_response({"alerts": [public_alert(alert) for alert in alerts]})

    async def alert(self, request: web.Request) -> web.Response:
        return web.json_response(self.engine.alert(request.match_info["alert_id"]))

    async def alert_image(self, request: web.Request) -> web.Response:
        alert_id, kind = request.match_info["alert_id"], request.match_info["kind"]
        if kind not in ("face", "frame") and not _SIGHTING_KIND.fullmatch(kind):
            raise EngineError("not_found", "no such image", status=404)
        self.engine.alert(alert_id)  # 404 for an unknown alert
        path = self.engine.image_path(alert_id, kind)
        data = await asyncio.to_thread(lambda: path.read_bytes() if path.is_file() else None)
        if data is None:
            raise EngineError("not_found", "no such image", status=404)
        return web.Response(body=data, content_type="image/jpeg")

    async def verdict(self, request: web.Request) -> web.Response:
        data = await _json(request)
        verdict = data.get("verdict")
        if verdict not in ("confirmed", "rejected"):
            raise EngineError(
                "invalid_request", "verdict must be confirmed or rejected", field="verdict"
            )
        comment = data.get("comment")
        if comment is not None and (not isinstance(comment, str) or len(comment) > MAX_COMMENT):
            raise EngineError("invalid_request", "comment must be a short text", field="comment")
        user_id, user_name = _user(data)
        decided = await self.engine.decide(
            request.match_info["alert_id"],
            verdict,
            user_id=user_id,
            user_name=user_name,
            comment=comment,
        )
        return web.json_response(decided)

    async def audit(self, request: web.Request) -> web.Response:
        since = _float_query(request, "since")
        entries = await asyncio.to_thread(self.engine.store.audit_since, since)
        return web.json_response({"audit": entries})

    async def add_audit(self, request: web.Request) -> web.Response:
        """An action done in a client (an option changed in Home Assistant), audited here."""
        data = await _json(request)
        user_id, user_name = _user(data)
        action, details = data.get("action"), data.get("details", {})
        if not isinstance(action, str) or not action or len(action) > MAX_USER_TEXT:
            raise EngineError("invalid_request", "action must be a short string", field="action")
        if not isinstance(details, dict) or len(json.dumps(details)) > MAX_AUDIT_DETAILS:
            raise EngineError("invalid_request", "details must be a small object", field="details")
        await asyncio.to_thread(self.engine.audit_action, action, user_id, user_name, details)
        return web.json_response({"ok": True})

    async def person_photo(self, request: web.Request) -> web.Response:
        data = await self.engine.person_photo(request.match_info["person_id"])
        content_type = "image/png" if data[:4] == b"\x89PNG" else "image/jpeg"
        return web.Response(body=data, content_type=content_type)

    # --------------------------------------------------------------- forms

    async def check_source(self, request: web.Request) -> web.Response:
        data = await _json(request)
        source, stored = data.get("source"), data.get("stored")
        if not isinstance(source, str) or len(source) > 2048:
            raise EngineError("invalid_request", "source must be a string", field="source")
        if stored is not None and (not isinstance(stored, str) or len(stored) > 2048):
            raise EngineError("invalid_request", "stored must be a string", field="stored")
        return web.json_response(self.engine.check_source(source, stored))

    async def check_folder(self, request: web.Request) -> web.Response:
        folder = (await _json(request)).get("folder")
        if not isinstance(folder, str) or not folder.startswith("/") or len(folder) > 2048:
            raise EngineError("invalid_request", "folder must be an absolute path", field="folder")
        if "\x00" in folder or "\n" in folder:
            raise EngineError("invalid_request", "folder holds control characters", field="folder")
        return web.json_response(await self.engine.check_folder(folder))

    async def import_history(self, request: web.Request) -> web.Response:
        data = await _json(request)
        return web.json_response(self.engine.import_history(data))

    async def test_source(self, request: web.Request) -> web.Response:
        data = await _json(request)
        source = data.get("source")
        if not isinstance(source, str) or len(source) > 2048:
            raise EngineError("invalid_request", "source must be a string", field="source")
        return web.json_response(await self.engine.test_source(source))

    async def scan_usb(self, request: web.Request) -> web.Response:
        user_id, user_name = _user(await _json(request))
        found = await self.engine.scan_usb(user_id=user_id, user_name=user_name)
        return web.json_response({"cameras": found})

    async def test_registry(self, request: web.Request) -> web.Response:
        data = await _json(request)
        url, key = data.get("url"), data.get("api_key")
        verify = data.get("verify_ssl", True)
        if not isinstance(url, str) or not isinstance(key, str) or not isinstance(verify, bool):
            raise EngineError("invalid_request", "url, api_key and verify_ssl are needed")
        return web.json_response(await self.engine.test_registry(url, key, verify))

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response(self.engine.model_packs())

    async def download(self, request: web.Request) -> web.Response:
        data = await _json(request)
        url = data.get("url")
        if url is not None and not isinstance(url, str):
            raise EngineError("invalid_request", "url must be a string", field="url")
        return web.json_response(self.engine.download(request.match_info["pack"], url), status=202)

    async def download_status(self, request: web.Request) -> web.Response:
        job = self.engine.downloads.get(request.match_info["pack"])
        if job is None:
            raise EngineError("not_found", "no download of this pack", status=404)
        return web.json_response(job.as_dict())

    async def verify_models(self, request: web.Request) -> web.Response:
        folder = (await _json(request)).get("folder")
        if not isinstance(folder, str) or not folder.startswith("/") or len(folder) > 2048:
            raise EngineError("invalid_request", "folder must be an absolute path", field="folder")
        return web.json_response(await self.engine.verify_models(folder))

    async def refresh_gallery(self, request: web.Request) -> web.Response:
        user_id, user_name = _user(await _json(request))
        return web.json_response(
            await self.engine.refresh_gallery(user_id=user_id, user_name=user_name)
        )

    # --------------------------------------------------------------- events

    async def events(self, request: web.Request) -> web.WebSocketResponse:
        """Every event after ``after`` (kept ones), then each new one, in id order.

        The first message is ``{"type": "hello", "epoch", "last_id"}``. When events the
        client asked for are no longer kept, or its ``epoch`` is not this database's (the
        engine's data was reset), a ``{"type": "gap", "from", "to", "reason"}`` comes
        before the replay.
        """
        after = _int_query(request, "after", 0, 0, 2**62)
        epoch = request.query.get("epoch")
        store = self.engine.store
        socket = web.WebSocketResponse(heartbeat=30)
        await socket.prepare(request)
        request.app[SOCKETS_KEY].add(socket)
        queue = self.engine.subscribe()
        try:
            first, last = store.event_bounds()
            current = store.epoch
            await socket.send_json(
                {"type": "hello", "epoch": current, "last_id": last, "api_version": 1}
            )
            if (epoch is not None and epoch != current) or after > last:
                await socket.send_json(
                    {"type": "gap", "from": 1, "to": max(first - 1, 0), "reason": "reset"}
                )
                after = 0
            elif first and after < first - 1:
                await socket.send_json(
                    {"type": "gap", "from": after + 1, "to": first - 1, "reason": "expired"}
                )
            while True:
                batch = await asyncio.to_thread(store.events_after, after, REPLAY_BATCH)
                for event in batch:
                    await socket.send_json(event.as_message())
                    after = event.id
                if len(batch) < REPLAY_BATCH:
                    break
            receiver = asyncio.ensure_future(socket.receive())
            while not socket.closed:
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait(
                    {getter, receiver}, return_when=asyncio.FIRST_COMPLETED
                )
                if receiver in done:
                    getter.cancel()
                    message = receiver.result()
                    if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR):
                        break
                    receiver = asyncio.ensure_future(socket.receive())
                    continue
                event = getter.result()
                if event.id > after:
                    await socket.send_json(event.as_message())
                    after = event.id
            receiver.cancel()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.engine.unsubscribe(queue)
            request.app[SOCKETS_KEY].discard(socket)
        return socket


async def _close_streams(app: web.Application) -> None:
    """On shutdown: close the event websockets (MJPEG streams end with their handlers)."""
    sockets: set[web.WebSocketResponse] = app[SOCKETS_KEY]
    for socket in list(sockets):
        with contextlib.suppress(Exception):
            await socket.close()


def create_app(engine: Engine, token: str) -> web.Application:
    """The application serving ``engine`` to clients that hold ``token``."""
    if not token:
        raise UprFacesError("the engine's token is empty")
    app = web.Application(middlewares=[_errors, _auth], client_max_size=MAX_BODY)
    app[ENGINE_KEY] = engine
    app[TOKEN_KEY] = token
    app[SOCKETS_KEY] = set()
    app.on_shutdown.append(_close_streams)  # type: ignore[arg-type, unused-ignore]  # aiosignal
    api = Api(engine)
    routes = [
        web.get(f"{PREFIX}/health", api.health),
        web.get(f"{PREFIX}/info", api.info),
        web.get(f"{PREFIX}/config", api.get_config),
        web.put(f"{PREFIX}/config", api.put_config),
        web.get(f"{PREFIX}/cameras/{{camera_id}}/snapshot.jpg", api.snapshot),
        web.get(f"{PREFIX}/cameras/{{camera_id}}/stream.mjpg", api.stream),
        web.post(f"{PREFIX}/cameras/{{camera_id}}/monitoring", api.monitoring),
        web.get(f"{PREFIX}/alerts", api.alerts),
        web.get(f"{PREFIX}/alerts/{{alert_id}}", api.alert),
        web.get(f"{PREFIX}/alerts/{{alert_id}}/{{kind}}.jpg", api.alert_image),
        web.post(f"{PREFIX}/alerts/{{alert_id}}/verdict", api.verdict),
        web.get(f"{PREFIX}/audit", api.audit),
        web.post(f"{PREFIX}/audit", api.add_audit),
        web.get(f"{PREFIX}/persons/{{person_id}}/photo", api.person_photo),
        web.post(f"{PREFIX}/sources/check", api.check_source),
        web.post(f"{PREFIX}/sources/test", api.test_source),
        web.post(f"{PREFIX}/import", api.import_history),
        web.post(f"{PREFIX}/folders/check", api.check_folder),
        web.post(f"{PREFIX}/usb/scan", api.scan_usb),
        web.post(f"{PREFIX}/registry/test", api.test_registry),
        web.get(f"{PREFIX}/models", api.models),
        web.post(f"{PREFIX}/models/verify", api.verify_models),
        web.post(f"{PREFIX}/models/{{pack}}/download", api.download),
        web.get(f"{PREFIX}/models/{{pack}}/download", api.download_status),
        web.post(f"{PREFIX}/gallery/refresh", api.refresh_gallery),
        web.get(f"{PREFIX}/events", api.events),
    ]
    app.add_routes(routes)
    return app
