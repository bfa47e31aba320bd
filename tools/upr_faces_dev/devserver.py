"""A development UPR registry: the contract of ``docs/upr_api.md`` on a local aiohttp server.

It serves a folder laid out like a local gallery (``<dir>/<person_id>/*.jpg|*.png`` with an
optional ``person.json`` holding ``reference``, ``display_name``, ``status``, ``notes``),
takes alerts and verdicts, keeps them (in memory, and as JSON lines with ``--log``) and
shows them at ``GET {base}/_received``. Run it with ``scripts/upr_dev_server``::

    UPR_API_KEY=secret scripts/upr_dev_server --dir gallery/ --port 8000 --log received.jsonl

The registry state lives in :class:`DevRegistry`, which tests also drive directly
(``tests/upr_server.py``). Cursors carry a change counter: a person whose files change gets
a new version, so an incremental sync returns it; a removed folder comes back as
``deleted: true``. Cursors from an earlier run of the server get ``full: true``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import math
import os
import secrets
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from aiohttp import web

_LOGGER = logging.getLogger(__name__)

VERSION: Final = "upr-dev 1"
PHOTO_SUFFIXES: Final = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}
MAX_PAGE: Final = 1000
MAX_BODY: Final = 16 * 1024 * 1024
_PERSON_FILE: Final = "person.json"

type Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def now_rfc3339() -> str:
    """The current UTC time as RFC 3339 (``2025-01-31T12:00:00Z``)."""
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(slots=True)
class _Entry:
    version: int
    data: Any
    deleted: bool = False


@dataclass(slots=True)
class _Photo:
    content_type: str
    data: bytes | None = None
    path: Path | None = None


@dataclass(slots=True)
class DevRegistry:
    """The registry's state: persons with a change counter, photos, and what it received."""

    epoch: str = field(default_factory=lambda: secrets.token_hex(4))
    version: int = 0
    entries: dict[str, _Entry] = field(default_factory=dict)
    photos: dict[str, _Photo] = field(default_factory=dict)
    alerts: dict[str, dict[str, Any]] = field(default_factory=dict)
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    posts: list[dict[str, Any]] = field(default_factory=list)
    log_path: Path | None = None
    refused: dict[str, int] = field(default_factory=dict)
    """Alert ids answered with that HTTP status every time (a test's stuck alert)."""
    _photo_counter: int = 0

    # --- persons --------------------------------------------------------------------------

    def put_raw(self, key: str, data: Any) -> None:
        """Serve ``data`` as is (any JSON, malformed on purpose in tests) under ``key``."""
        self.version += 1
        self.entries[key] = _Entry(self.version, data)

    def add_photo(
        self, name: str, data: bytes | Path, *, content_type: str | None = None
    ) -> dict[str, Any]:
        """Store a photo and return its contract entry ``{"id", "url", "sha256"}`` (the URL
        relative to the base URL). ``data`` may be a file, read when it is asked for."""
        self._photo_counter += 1
        suffix = Path(name).suffix.lower()
        ctype = content_type or PHOTO_SUFFIXES.get(suffix, "application/octet-stream")
        token = f"{self._photo_counter}{suffix if suffix in PHOTO_SUFFIXES else ''}"
        if isinstance(data, Path):
            self.photos[token] = _Photo(ctype, path=data)
            digest = None
        else:
            self.photos[token] = _Photo(ctype, data=data)
            digest = hashlib.sha256(data).hexdigest()
        return {"id": name, "url": f"photos/{token}", "sha256": digest}

    def put_person(
        self,
        person_id: str,
        reference: str | None = None,
        *,
        display_name: str | None = None,
        status: str = "open",
        photos: Iterable[Mapping[str, Any]] = (),
        embeddings: Sequence[Mapping[str, Any]] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Create or replace a person (a new version: incremental syncs will return it)."""
        person: dict[str, Any] = {
            "id": person_id,
            "reference": reference if reference is not None else person_id,
            "display_name": display_name,
            "status": status,
            "updated_at": now_rfc3339(),
            "photos": [dict(photo) for photo in photos],
        }
        if embeddings is not None:
            person["embeddings"] = [dict(item) for item in embeddings]
        person.update(extra)
        self.put_raw(person_id, person)
        return person

    def person(self, person_id: str) -> dict[str, Any]:
        """The current record of a person (for changing it and putting it back)."""
        entry = self.entries[person_id]
        if entry.deleted or not isinstance(entry.data, dict):
            raise KeyError(person_id)
        return dict(entry.data)

    def set_status(self, person_id: str, status: str) -> None:
        """Open or close a person."""
        person = self.person(person_id)
        person.update(status=status, updated_at=now_rfc3339())
        self.put_raw(person_id, person)

    def delete(self, person_id: str) -> None:
        """Delete a person: absent from full lists, ``deleted: true`` in incremental ones."""
        self.version += 1
        self.entries[person_id] = _Entry(
            self.version,
            {"id": person_id, "deleted": True, "status": "closed", "updated_at": now_rfc3339()},
            deleted=True,
        )

    def invalidate_cursors(self) -> None:
        """Forget every cursor handed out: the next sync with one gets ``full: true``."""
        self.epoch = secrets.token_hex(4)

    def page(self, cursor: str | None, limit: int) -> dict[str, Any]:
        """One answer of ``GET /persons``.

        A pass is pinned to the version current when it started (``snap``); pages follow
        ``(version, key)`` order, so a person changed during the pass leaves it and comes
        in the next incremental answer instead of shifting the pages.
        """
        state = _decode_cursor(cursor, self.epoch)
        if state is None:  # no cursor, an unknown one, or one of an earlier run
            state = {"since": 0, "snap": self.version, "after": None, "full": True}
        since, snap, full = int(state["since"]), int(state["snap"]), bool(state["full"])
        after = tuple(state["after"]) if state.get("after") else None
        if after is None:  # a new pass: it sees every change made until now
            snap = self.version
        chosen = sorted(
            (entry.version, key)
            for key, entry in self.entries.items()
            if since < entry.version <= snap and not (full and entry.deleted)
        )
        if after is not None:
            chosen = [item for item in chosen if item > after]
        page, rest = chosen[:limit], chosen[limit:]
        if rest:
            next_state = {"since": since, "snap": snap, "after": list(page[-1]), "full": full}
        else:
            next_state = {"since": snap, "snap": snap, "after": None, "full": False}
        return {
            "persons": [self.entries[key].data for _, key in page],
            "next_cursor": _encode_cursor(self.epoch, next_state),
            "has_more": bool(rest),
            "full": full,
        }

    # --- alerts and verdicts -----------------------------------------------------------

    def receive_alert(self, body: dict[str, Any]) -> int:
        """Record an alert; 201 when new, 200 when its id was already received."""
        status = 200 if body["id"] in self.alerts else 201
        self.alerts[body["id"]] = body  # the same id again: an update (upgrade)
        self.posts.append({"kind": "alert", "id": body["id"], "status": status})
        return status

    def receive_verdict(self, alert_id: str, body: dict[str, Any]) -> int:
        """Record a verdict; 404 for an unknown alert."""
        status = 200 if alert_id in self.alerts else 404
        if status == 200:
            self.verdicts.append({"alert_id": alert_id, **body})
        self.posts.append({"kind": "verdict", "id": alert_id, "status": status})
        return status

    def received(self) -> dict[str, Any]:
        """What ``GET /_received`` shows."""
        return {
            "alerts": list(self.alerts.values()),
            "verdicts": list(self.verdicts),
            "posts": list(self.posts),
        }


def _encode_cursor(epoch: str, state: Mapping[str, Any]) -> str:
    raw = json.dumps({"e": epoch, **state}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str | None, epoch: str) -> dict[str, Any] | None:
    if not cursor:
        return None
    try:
        state = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error):
        return None
    if not isinstance(state, dict) or state.get("e") != epoch:
        return None
    if not all(isinstance(state.get(name), int) for name in ("since", "snap")):
        return None
    return state


# --- a folder as the registry ------------------------------------------------------------


@dataclass(slots=True)
class FolderSource:
    """Keeps a :class:`DevRegistry` in step with a gallery folder (rescanned on demand)."""

    root: Path
    registry: DevRegistry
    signatures: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def refresh(self) -> None:
        """Rescan the folder (in a thread) and apply what changed."""
        async with self._lock:
            found = await asyncio.to_thread(_scan_folder, self.root, dict(self.signatures))
            for person_id, (signature, person) in found.items():
                if person is None:
                    continue  # unchanged
                photos = [
                    {**self.registry.add_photo(path.name, path), "sha256": digest}
                    for path, digest in person.pop("_photos")
                ]
                self.registry.put_person(person_id, photos=photos, **person)
                self.signatures[person_id] = signature
            for person_id in set(self.signatures) - set(found):
                self.registry.delete(person_id)
                del self.signatures[person_id]


def _scan_folder(
    root: Path, known: Mapping[str, tuple[Any, ...]]
) -> dict[str, tuple[tuple[Any, ...], dict[str, Any] | None]]:
    """Per person folder: its signature, and its record when the signature changed."""
    found: dict[str, tuple[tuple[Any, ...], dict[str, Any] | None]] = {}
    if not root.is_dir():
        return found
    for folder in sorted(root.iterdir()):
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        files = sorted(
            path
            for path in folder.iterdir()
            if path.is_file()
            and (path.suffix.lower() in PHOTO_SUFFIXES or path.name == _PERSON_FILE)
        )
        signature = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files)
        if known.get(folder.name) == signature:
            found[folder.name] = (signature, None)
            continue
        meta: dict[str, Any] = {}
        meta_file = folder / _PERSON_FILE
        if meta_file.is_file():
            try:
                loaded = json.loads(meta_file.read_text(encoding="utf-8"))
            except (OSError, ValueError) as err:
                _LOGGER.warning("%s: unreadable, ignored (%s)", meta_file, err)
            else:
                if isinstance(loaded, dict):
                    meta = loaded
        status = meta.get("status", "open")
        person: dict[str, Any] = {
            "reference": str(meta.get("reference") or folder.name),
            "display_name": meta.get("display_name"),
            "status": status if status in ("open", "closed") else "open",
            "_photos": [
                (path, hashlib.sha256(path.read_bytes()).hexdigest())
                for path in files
                if path.name != _PERSON_FILE
            ],
        }
        if isinstance(meta.get("notes"), str):
            person["notes"] = meta["notes"]
        found[folder.name] = (signature, person)
    return found


# --- the web application -----------------------------------------------------------------


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _is_rfc3339(value: Any) -> bool:
    if not isinstance(value, str) or "T" not in value.upper():
        return False
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return False
    return parsed.tzinfo is not None


def _alert_problem(body: Any) -> str | None:
    """Why an alert body breaks the contract, or None."""
    if not isinstance(body, dict):
        return "body is not an object"
    try:
        uuid.UUID(str(body.get("id")))
    except ValueError:
        return "'id' is not a UUID"
    for name in ("person_id", "camera"):
        if not isinstance(body.get(name), str) or not body[name]:
            return f"'{name}' is not a string"
    if body.get("tier") not in ("match", "probable"):
        return "'tier' is not 'match' or 'probable'"
    similarity = body.get("similarity")
    if (
        isinstance(similarity, bool)
        or not isinstance(similarity, int | float)
        or not math.isfinite(similarity)
    ):
        return "'similarity' is not a number"
    if not _is_rfc3339(body.get("detected_at")):
        return "'detected_at' is not an RFC 3339 time"
    snapshot = body.get("snapshot_jpeg_b64")
    if snapshot is not None:
        if not isinstance(snapshot, str):
            return "'snapshot_jpeg_b64' is not a string"
        try:
            base64.b64decode(snapshot, validate=True)
        except binascii.Error:
            return "'snapshot_jpeg_b64' is not base64"
    return None


def _verdict_problem(body: Any) -> str | None:
    """Why a verdict body breaks the contract, or None."""
    if not isinstance(body, dict):
        return "body is not an object"
    if body.get("verdict") not in ("confirmed", "rejected"):
        return "'verdict' is not 'confirmed' or 'rejected'"
    if not isinstance(body.get("by"), str):
        return "'by' is not a string"
    if body.get("comment") is not None and not isinstance(body["comment"], str):
        return "'comment' is not a string"
    if not _is_rfc3339(body.get("at")):
        return "'at' is not an RFC 3339 time"
    return None


class DevServerApp:
    """The aiohttp handlers over a :class:`DevRegistry`."""

    def __init__(
        self,
        registry: DevRegistry,
        api_key: str,
        *,
        source: FolderSource | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.registry = registry
        self._expected = f"Bearer {api_key}".encode()
        self._source = source
        self._log_path = log_path

    @web.middleware
    async def auth_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """401 unless ``Authorization: Bearer <key>``."""
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, self._expected):
            response = _error(401, "missing or wrong API key")
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        return await handler(request)

    async def health(self, request: web.Request) -> web.Response:
        """``GET /health``."""
        return web.json_response({"status": "ok", "version": VERSION})

    async def persons(self, request: web.Request) -> web.Response:
        """``GET /persons?cursor=&limit=``."""
        try:
            limit = int(request.query.get("limit", "200"))
        except ValueError:
            return _error(400, "'limit' is not an integer")
        if not 1 <= limit <= MAX_PAGE:
            return _error(400, f"'limit' must be between 1 and {MAX_PAGE}")
        cursor = request.query.get("cursor")
        if self._source is not None and not _is_continuation(cursor):
            await self._source.refresh()
        return web.json_response(self.registry.page(cursor, limit))

    async def photo(self, request: web.Request) -> web.StreamResponse:
        """``GET /photos/{token}``."""
        photo = self.registry.photos.get(request.match_info["token"])
        if photo is None:
            return _error(404, "no such photo")
        if photo.path is not None:
            return web.FileResponse(photo.path, headers={"Content-Type": photo.content_type})
        return web.Response(body=photo.data, content_type=photo.content_type)

    async def alert(self, request: web.Request) -> web.Response:
        """``POST /alerts``: 201 new, 200 already received, 400 off-contract."""
        body = await _json_body(request)
        problem = _alert_problem(body)
        if problem is not None:
            return _error(400, problem)
        refused = self.registry.refused.get(body["id"])
        if refused is not None:
            self.registry.posts.append({"kind": "alert", "id": body["id"], "status": refused})
            return _error(refused, "refused on purpose")
        status = self.registry.receive_alert(body)
        await self._log({"kind": "alert", "status": status, "body": body})
        return web.json_response({"id": body["id"], "created": status == 201}, status=status)

    async def verdict(self, request: web.Request) -> web.Response:
        """``POST /alerts/{id}/verdict``: 200, 404 unknown alert, 400 off-contract."""
        alert_id = request.match_info["alert_id"]
        body = await _json_body(request)
        problem = _verdict_problem(body)
        if problem is not None:
            return _error(400, problem)
        status = self.registry.receive_verdict(alert_id, body)
        await self._log({"kind": "verdict", "status": status, "alert_id": alert_id, "body": body})
        if status == 404:
            return _error(404, "no such alert")
        return web.json_response({"alert_id": alert_id, "verdict": body["verdict"]})

    async def received(self, request: web.Request) -> web.Response:
        """``GET /_received``: the alerts, verdicts and every POST, for tests and demos."""
        return web.json_response(self.registry.received())

    async def _log(self, record: dict[str, Any]) -> None:
        if self._log_path is None:
            return
        line = json.dumps({"at": now_rfc3339(), **record}, separators=(",", ":")) + "\n"
        await asyncio.to_thread(_append, self._log_path, line)


def _append(path: Path, line: str) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(line)


def _is_continuation(cursor: str | None) -> bool:
    """True for a cursor in the middle of a pass (a rescan there would not be seen)."""
    if not cursor:
        return False
    with contextlib.suppress(ValueError, binascii.Error):
        state = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return isinstance(state, dict) and bool(state.get("after"))
    return False


async def _json_body(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        return None


def create_app(
    registry: DevRegistry,
    api_key: str,
    *,
    base: str = "/api",
    source: FolderSource | None = None,
    log_path: Path | None = None,
    middlewares: Sequence[Any] = (),
) -> web.Application:
    """The registry application; ``middlewares`` run before the key is checked."""
    handlers = DevServerApp(registry, api_key, source=source, log_path=log_path)
    app = web.Application(
        middlewares=[*middlewares, handlers.auth_middleware], client_max_size=MAX_BODY
    )
    base = "/" + base.strip("/") if base.strip("/") else ""
    app.router.add_get(f"{base}/health", handlers.health)
    app.router.add_get(f"{base}/persons", handlers.persons)
    app.router.add_get(base + "/photos/{token}", handlers.photo)
    app.router.add_post(f"{base}/alerts", handlers.alert)
    app.router.add_post(base + "/alerts/{alert_id}/verdict", handlers.verdict)
    app.router.add_get(f"{base}/_received", handlers.received)
    app["upr_registry"] = registry
    return app


def main(argv: Sequence[str] | None = None) -> int:
    """``scripts/upr_dev_server``: serve a gallery folder as a UPR registry."""
    parser = argparse.ArgumentParser(
        prog="upr_dev_server", description="A development UPR registry (docs/upr_api.md)."
    )
    parser.add_argument("--dir", type=Path, help="gallery folder: <dir>/<person_id>/*.jpg")
    parser.add_argument("--key", help="API key (default: the UPR_API_KEY environment variable)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--base", default="/api", help="path of the API (default /api)")
    parser.add_argument("--log", type=Path, help="append received alerts and verdicts here")
    args = parser.parse_args(argv)
    key = args.key or os.environ.get("UPR_API_KEY")
    if not key:
        parser.error("give the API key with --key or the UPR_API_KEY environment variable")
    if args.dir is not None and not args.dir.is_dir():
        parser.error(f"{args.dir} is not a folder")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    registry = DevRegistry()
    source = FolderSource(args.dir, registry) if args.dir is not None else None
    app = create_app(registry, key, base=args.base, source=source, log_path=args.log)
    if source is not None:

        async def _first_scan(_: web.Application) -> None:
            await source.refresh()
            print(f"upr_dev_server: {len(source.signatures)} persons in {args.dir}", flush=True)

        app.on_startup.append(_first_scan)  # type: ignore[arg-type, unused-ignore]  # aiohttp < 3.12
    base = "/" + args.base.strip("/") if args.base.strip("/") else ""
    print(f"upr_dev_server: http://{args.host}:{args.port}{base}", flush=True)
    web.run_app(app, host=args.host, port=args.port, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
