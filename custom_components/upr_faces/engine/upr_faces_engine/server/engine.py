"""The engine's whole job for one client configuration, behind ``upr-faces serve``.

:class:`Engine` owns the model pack and the analyzer, the pipeline and its cameras, the
gallery (a local folder, or the registry sync with its offline cache), the registry outbox,
alert records and images, the audit trail and the event log. The HTTP layer (``app.py``)
only translates requests into these calls.

Applying a configuration changes what changed and nothing else: a camera whose source
changed restarts alone; thresholds and rates are applied in place; the gallery is reloaded
only when its source (or the recognizer) changed. Nothing waits on the registry: the
engine starts from the gallery it synced last and syncs in the background.

Events a person reads carry a ``code`` and ``placeholders``: the client owns the words.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import glob
import json
import logging
import os
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

import aiohttp
import numpy as np

from ..advice import Decision, advise, decisions
from ..alerts import AlertTier, MatchEvent
from ..analyzer import Analyzer, gpu_providers
from ..errors import ImageError, ModelPackError, UprFacesError
from ..gallery import (
    CACHE_FILE,
    EmbeddingCache,
    Gallery,
    Thresholds,
    atomic_write,
    load_folder,
    person_photos,
)
from ..incidents import (
    INCIDENT_GAP_S,
    OpenIncidents,
    add_sighting,
    embeddings_of,
    is_open,
    new_incident,
    next_sighting_number,
    sighting_image_kind,
    tracks_of,
    wants_face,
)
from ..incidents import public as public_alert
from ..models import (
    OFFICIAL_PACKS,
    ModelPack,
    ModelPackMissingError,
    async_fetch_pack,
    ensure_pack,
    find_pack,
    official_pack,
    verify_pack,
)
from ..outbox import Outbox, OutboxFullError
from ..pipeline import Pipeline, PipelineConfig
from ..sources import (
    DEFAULT_MAX_BACKOFF,
    CameraSource,
    SourceState,
    default_name,
    mask_text,
    mask_url,
    parse_source,
    scan_usb,
    source_key,
    unmask_source,
)
from ..sync import GallerySync
from ..upr_client import (
    RetryPolicy,
    UprAuthError,
    UprClient,
    UprConnectionError,
    UprPagingError,
    UprResponseError,
)
from .config import CUSTOM_PACK, CameraConfig, EngineConfig, check_source, parse_config
from .store import Event, Store

_LOGGER = logging.getLogger(__name__)

API_VERSION: Final = 1
CONFIG_FILE: Final = "config.json"
SYNC_INTERVAL: Final = 15 * 60.0
MAX_SYNC_BACKOFF: Final = 300.0
HOUSEKEEPING_INTERVAL: Final = 3600.0
PHOTO_CACHE_SIZE: Final = 64
TEST_TIMEOUT: Final = 10.0
MATCH_DRAIN_TIMEOUT: Final = 5.0
DEFAULT_MEDIA: Final = (Path("/media"), Path("/share"))


def default_media(data: Path) -> tuple[Path, ...]:
    """The folders clips may be read from when ``serve`` is given no --media: Home
    Assistant OS's /media and /share, and the data folder's ``media``."""
    return (*DEFAULT_MEDIA, data / "media")


type Verdict = Literal["confirmed", "rejected"]


class EngineError(UprFacesError):
    """A request the engine refuses; ``code`` and ``placeholders`` are for the client."""

    def __init__(self, code: str, message: str, *, status: int = 400, **placeholders: str) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.placeholders = placeholders


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def _private_write(path: Path, data: bytes) -> None:
    """Write a file only the engine's user can read (0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


@dataclass(slots=True)
class _Camera:
    """A configured camera and, while it is watched, its source."""

    config: CameraConfig
    monitoring: bool = True
    source: CameraSource | None = None
    started_at: float | None = None
    state: str = "stopped"
    reason: str | None = None
    since: float = field(default_factory=time.time)
    unsubscribe: Callable[[], None] | None = None


@dataclass(slots=True)
class _Download:
    """A model pack being downloaded on a client's request."""

    pack: str
    state: Literal["running", "done", "failed"] = "running"
    done: int = 0
    total: int | None = None
    error: dict[str, Any] | None = None
    task: asyncio.Task[None] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "pack": self.pack,
            "state": self.state,
            "done": self.done,
            "total": self.total,
            "error": self.error,
        }


class Engine:
    """See the module docstring. Create it, ``await start()``, ``await stop()``."""

    def __init__(
        self,
        data: Path,
        *,
        version: str,
        media: Sequence[Path] | None = None,
        ray_address: str | None = None,
        ray_options: dict[str, Any] | None = None,
    ) -> None:
        self.data = data
        # frames analysed on a Ray Serve cluster (ray_serve.RayAnalyzer) when an address is
        # given; ray_options are fields of ray_serve.RayServeOptions
        self.ray_address = ray_address
        self.ray_options = dict(ray_options or {})
        self.media: tuple[Path, ...] = tuple(media) if media is not None else default_media(data)
        self.version = version
        self.store = Store(data)
        self.config: EngineConfig | None = None
        self.pack: ModelPack | None = None
        self.analyzer: Analyzer | None = None
        self.pipeline: Pipeline | None = None
        self.gallery: Gallery | None = None
        self.gallery_state = "none"
        self.last_sync: dict[str, Any] | None = None
        self.outbox: Outbox | None = None
        self.client: UprClient | None = None
        self.sync: GallerySync | None = None
        self.cameras: dict[str, _Camera] = {}
        self.problems: dict[str, dict[str, Any]] = {}
        self.downloads: dict[str, _Download] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session: aiohttp.ClientSession | None = None
        self._cache: EmbeddingCache | None = None
        self._analyzer_key: tuple[Any, ...] | None = None
        self._gallery_key: tuple[Any, ...] | None = None
        self._apply_lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._subscribers: set[asyncio.Queue[Event]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._matches: set[asyncio.Task[None]] = set()  # alerts being recorded
        self._deciding: set[str] = set()  # alerts whose verdict is being queued
        self._sync_task: asyncio.Task[None] | None = None
        self._sync_wake = asyncio.Event()
        self._outbox_stop: asyncio.Event | None = None
        self._outbox_task: asyncio.Task[None] | None = None
        self._photos: OrderedDict[str, bytes] = OrderedDict()
        self._last_detection: float | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def models_folder(self) -> Path:
        """Where official packs are downloaded."""
        return self.data / "models"

    @property
    def alerts_folder(self) -> Path:
        """Where alert images are kept (0600) for the retention period."""
        return self.data / "alerts"

    _open: OpenIncidents
    """Which incident a person's next sighting joins (see ``incidents.py``)."""
    _incident_lock: asyncio.Lock
    """Held while a sighting or a verdict changes an incident record."""
    _decisions: tuple[list[Decision], dict[str, list[Decision]]] = ([], {})
    """The operators' decisions, overall and by camera (``advice.py``), kept up to date."""

    async def start(self) -> None:
        """Open what is persisted and apply the last configuration pushed, if any."""
        self._loop = asyncio.get_running_loop()
        self._incident_lock = asyncio.Lock()
        self._open = OpenIncidents()
        self._open.rebuild(await asyncio.to_thread(self.store.alerts, limit=1000), time.time())
        await self._update_decisions()
        self._session = aiohttp.ClientSession()
        for folder in (self.models_folder, self.alerts_folder):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._cache = await asyncio.to_thread(EmbeddingCache, self.data / CACHE_FILE)
        self.outbox = await Outbox.async_open(self.data / "outbox")
        self._spawn(self._housekeeping(), "housekeeping")
        saved = await asyncio.to_thread(self._read_saved_config)
        if saved is not None:
            try:
                await self.apply(saved)
            except EngineError as err:
                _LOGGER.error("The saved configuration cannot be applied: %s", err)

    async def stop(self) -> None:
        """Stop every camera, task and thread; close the database.

        In this order: the pipeline first (no new match), then every match already on
        its way is recorded whole (alert, images, outbox, event), and only then the other
        tasks are cancelled and the database closed, so a stop loses no alert."""
        self._stop.set()
        self._sync_wake.set()
        if self.pipeline is not None:
            pipeline, self.pipeline = self.pipeline, None
            await asyncio.to_thread(pipeline.stop)
        await asyncio.sleep(0)  # matches the pipeline handed over while it stopped
        if self._matches:
            await asyncio.wait(list(self._matches), timeout=MATCH_DRAIN_TIMEOUT)
        if self._outbox_stop is not None:
            self._outbox_stop.set()
        for task in list(self._tasks):
            task.cancel()
        for download in self.downloads.values():
            if download.task is not None:
                download.task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for camera in self.cameras.values():
            if camera.unsubscribe is not None:
                camera.unsubscribe()
        if self._session is not None:
            await self._session.close()
        if self._cache is not None:
            await asyncio.to_thread(self._cache.close)
        if self.analyzer is not None and hasattr(self.analyzer, "close"):
            await asyncio.to_thread(self.analyzer.close)  # a Ray bridge process ends
        self.store.close()

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=f"upr-faces {name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _read_saved_config(self) -> EngineConfig | None:
        path = self.data / CONFIG_FILE
        if not path.is_file():
            return None
        try:
            return parse_config(json.loads(path.read_text(encoding="utf-8")), self.media)
        except (OSError, ValueError, UprFacesError) as err:
            _LOGGER.error("Ignoring the saved configuration %s: %s", path, err)
            return None

    def _save_config(self, config: EngineConfig) -> None:
        data = json.dumps(config.as_dict(), indent=1).encode()
        atomic_write(self.data / CONFIG_FILE, data)
        os.chmod(self.data / CONFIG_FILE, 0o600)

    # ------------------------------------------------------------------ events

    def subscribe(self) -> asyncio.Queue[Event]:
        """A queue that receives every event from now on (unbounded; drain it)."""
        queue: asyncio.Queue[Event] = asyncio.Queue()
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Event]) -> None:
        """Stop feeding a queue."""
        self._subscribers.discard(queue)

    def emit(self, event_type: str, data: dict[str, Any]) -> Event:
        """Persist an event and hand it to every subscriber."""
        event = self.store.append(event_type, data)
        for queue in self._subscribers:
            queue.put_nowait(event)
        return event

    def _problem(self, key: str, code: str | None, **placeholders: str) -> None:
        """Raise (code) or clear (None) the problem ``key``; tell the clients on change."""
        current = self.problems.get(key)
        if code is None:
            if current is not None:
                del self.problems[key]
                self.emit("problem", {"key": key, "code": current["code"], "active": False})
            return
        if current is not None and current["code"] == code:
            if current["placeholders"] == placeholders:
                return
            since = current["since"]
        else:
            since = _iso(time.time())
        problem = {"key": key, "code": code, "placeholders": placeholders, "since": since}
        self.problems[key] = problem
        self.emit("problem", {**problem, "active": True})

    def _audit(
        self, action: str, user_id: str | None = None, user_name: str | None = None, **details: Any
    ) -> None:
        self.store.audit(
            {
                "at": time.time(),
                "time": _iso(time.time()),
                "action": action,
                "user_id": user_id,
                "user_name": user_name,
                "details": details,
            }
        )

    def audit_action(
        self, action: str, user_id: str | None, user_name: str | None, details: dict[str, Any]
    ) -> None:
        """Audit an action a client did on its side (blocking: SQLite)."""
        self._audit(action, user_id, user_name, **details)

    # ------------------------------------------------------------------ configuration

    async def apply(self, config: EngineConfig) -> dict[str, Any]:
        """Make ``config`` the running one; what had to change (see the module docstring)."""
        async with self._apply_lock:
            result: dict[str, Any] = {
                "changed": config != self.config,
                "started": [],
                "restarted": [],
                "stopped": [],
                "reloaded": [],
            }
            if not result["changed"] and self.pipeline is not None:
                return result
            await asyncio.to_thread(self._save_config, config)
            old = self.config
            self.config = config
            options = config.options
            analyzer_key = (config.models, options.det_size, options.use_gpu)
            if self._analyzer_key != analyzer_key or self.analyzer is None:
                await self._stop_pipeline(result)
                if not await self._load_models(config):
                    self._remember_cameras(config)
                    return result
                self._analyzer_key = analyzer_key
                self._gallery_key = None
                result["reloaded"].append("models")
            # the detector's settings change which photos have a face: they reload it too
            gallery_key = (config.gallery, self.analyzer.photo_key if self.analyzer else None)
            if gallery_key != self._gallery_key:
                await self._load_gallery(config)
                self._gallery_key = gallery_key
                result["reloaded"].append("gallery")
            if self.pipeline is None:
                assert self.analyzer is not None
                self.pipeline = Pipeline(self.analyzer, self.gallery, self._pipeline_config())
                self.pipeline.rejections.replace(await asyncio.to_thread(self._rejected_faces))
                self.pipeline.add_listener(self._on_match_threadsafe)
                self.pipeline.start()
            else:
                if old is None or old.options != options:
                    self.pipeline.update_config(self._pipeline_config())
                self.pipeline.set_gallery(self.gallery)
            await self._close_incidents_of_found()
            await self._apply_cameras(config, old, result)
            self._audit("config_applied", changed=result["reloaded"] or None)
            return result

    def _pipeline_config(self) -> PipelineConfig:
        assert self.config is not None
        options = self.config.options
        return PipelineConfig(
            detection_fps=options.detection_fps,
            cooldown_s=options.cooldown,
            thresholds=Thresholds(
                match=options.match_threshold, probable=options.probable_threshold
            ),
        )

    def _thresholds(self, camera: CameraConfig) -> Thresholds | None:
        assert self.config is not None
        if camera.match_threshold is None and camera.probable_threshold is None:
            return None
        options = self.config.options
        return Thresholds(
            match=camera.match_threshold or options.match_threshold,
            probable=camera.probable_threshold or options.probable_threshold,
        )

    async def _stop_pipeline(self, result: dict[str, Any]) -> None:
        if self.pipeline is None:
            return
        pipeline, self.pipeline = self.pipeline, None
        await asyncio.to_thread(pipeline.stop)
        for camera_id, camera in self.cameras.items():
            if camera.source is not None:
                result["stopped"].append(camera_id)
            self._forget_source(camera)

    def _forget_source(self, camera: _Camera) -> None:
        if camera.unsubscribe is not None:
            camera.unsubscribe()
        camera.unsubscribe = None
        camera.source = None
        camera.started_at = None
        camera.state = "stopped"

    async def _load_models(self, config: EngineConfig) -> bool:
        """Find the pack and build the analyzer; False (and a problem) when it cannot."""
        if self.analyzer is not None and hasattr(self.analyzer, "close"):
            await asyncio.to_thread(self.analyzer.close)  # the previous one's Ray bridge
        models = config.models
        target: str | Path = (
            Path(models.folder or "") if models.pack == CUSTOM_PACK else models.pack
        )
        try:
            pack = await asyncio.to_thread(ensure_pack, target, self.models_folder)
        except ModelPackError as err:
            self.pack = self.analyzer = None
            self._analyzer_key = None
            official = official_pack(models.pack)
            if official is not None:
                self._problem(
                    "models",
                    "model_pack_missing",
                    pack=models.pack,
                    folder=str(self.models_folder / models.pack),
                    files=", ".join(official.files),
                    url=official.url,
                )
            else:
                self._problem(
                    "models", "model_folder_invalid", folder=str(target), problem=str(err)
                )
            return False
        providers = gpu_providers() if config.options.use_gpu else ("cpu",)
        det_size = config.options.det_size
        self.analyzer = await asyncio.to_thread(
            lambda: Analyzer(pack, det_size=det_size, providers=providers, square=False)
        )
        if self.ray_address:
            from ..ray_serve import RayAnalyzer, RayServeOptions  # Ray itself stays unimported

            remote = RayAnalyzer(
                self.analyzer, self.ray_address, RayServeOptions(**self.ray_options)
            )
            remote.start()  # frames are analysed in-process until the cluster answers
            self.analyzer = remote
        self.pack = pack
        self._problem("models", None)
        return True

    def _remember_cameras(self, config: EngineConfig) -> None:
        """Keep the configured cameras (not started) while the engine cannot run them."""
        monitoring = self.store.get_meta("monitoring") or {}
        self.cameras = {
            camera.id: _Camera(camera, monitoring=bool(monitoring.get(camera.id, True)))
            for camera in config.cameras
        }

    async def _apply_cameras(
        self, config: EngineConfig, old: EngineConfig | None, result: dict[str, Any]
    ) -> None:
        assert self.pipeline is not None
        monitoring = self.store.get_meta("monitoring") or {}
        wanted = {camera.id: camera for camera in config.cameras}
        for camera_id in list(self.cameras):
            if camera_id not in wanted:
                gone = self.cameras.pop(camera_id)
                if gone.source is not None:
                    await asyncio.to_thread(self.pipeline.remove_camera, camera_id)
                    result["stopped"].append(camera_id)
                self._forget_source(gone)
        backoff_changed = (
            old is not None and old.options.retry_backoff != config.options.retry_backoff
        )
        for camera_id, camera_config in wanted.items():
            camera = self.cameras.get(camera_id)
            if camera is None:
                camera = _Camera(camera_config, monitoring=bool(monitoring.get(camera_id, True)))
                self.cameras[camera_id] = camera
                if camera.monitoring:
                    await self._start_camera(camera)
                    result["started"].append(camera_id)
                continue
            previous, camera.config = camera.config, camera_config
            restart = (
                previous.source != camera_config.source
                or previous.name != camera_config.name
                or previous.idle_decode != camera_config.idle_decode
                or backoff_changed
            )
            if camera.source is None:
                if camera.monitoring:
                    await self._start_camera(camera)
                    result["started"].append(camera_id)
            elif restart:
                await asyncio.to_thread(self.pipeline.remove_camera, camera_id)
                self._forget_source(camera)
                await self._start_camera(camera)
                result["restarted"].append(camera_id)
            else:
                thresholds = self._thresholds(camera_config)
                self.pipeline.set_thresholds(
                    camera_id, thresholds or self.pipeline.config.thresholds
                )

    async def _start_camera(self, camera: _Camera) -> None:
        assert self.pipeline is not None
        assert self.config is not None
        config = camera.config
        backoff = self.config.options.retry_backoff
        source = CameraSource(
            config.source,
            name=config.name,
            retry_backoff=backoff,
            max_backoff=max(DEFAULT_MAX_BACKOFF, backoff),  # the option goes up to an hour
            idle_decode=config.idle_decode or "keyframes",
        )
        camera_id = config.id

        def on_state(state: SourceState, reason: str | None) -> None:
            if self._loop is not None:
                self._loop.call_soon_threadsafe(
                    self._camera_state, camera_id, source, state, reason
                )

        camera.unsubscribe = source.on_state(on_state)
        pipeline = self.pipeline
        thresholds = self._thresholds(config)
        worker = await asyncio.to_thread(
            lambda: pipeline.add_camera(camera_id, source, thresholds=thresholds)
        )
        camera.source = source
        camera.started_at = time.time()
        camera.state = str(source.state)
        # alerts given before a restart of the engine still hold their cooldown
        wall, mono = time.time(), time.monotonic()
        window = self.config.options.cooldown
        for alert in self.store.alerts(limit=500, since=wall - window - INCIDENT_GAP_S):
            for sighting in alert.get("sightings") or [alert]:
                at = _timestamp(sighting.get("at") or sighting.get("detected_at"))
                if sighting["camera_id"] != camera_id or at is None or wall - at > window:
                    continue
                tier: AlertTier = "match" if sighting["tier"] == "match" else "probable"
                worker.cooldown.prime(camera_id, alert["person_id"], tier, mono - (wall - at))

    def _camera_state(
        self, camera_id: str, source: CameraSource, state: SourceState, reason: str | None
    ) -> None:
        camera = self.cameras.get(camera_id)
        if camera is None or camera.source is not source:
            return  # a camera stopped or restarted meanwhile
        previous = camera.state
        camera.state, camera.reason = str(state), reason
        if str(state) == previous or state not in (SourceState.STREAMING, SourceState.OFFLINE):
            return
        camera.since = time.time()
        self.emit(
            "camera",
            {
                "camera_id": camera_id,
                "state": str(state),
                "reason": mask_text(reason, camera.config.source) if reason else None,
                "since": _iso(camera.since),
            },
        )

    async def set_monitoring(
        self, camera_id: str, on: bool, *, user_id: str | None, user_name: str | None
    ) -> None:
        """Start or stop watching a camera; remembered across restarts and audited."""
        camera = self.cameras.get(camera_id)
        if camera is None:
            raise EngineError(
                "unknown_camera", f"no camera {camera_id}", status=404, camera=camera_id
            )
        monitoring = dict(self.store.get_meta("monitoring") or {})
        monitoring[camera_id] = on
        self.store.set_meta("monitoring", monitoring)
        camera.monitoring = on
        if self.pipeline is not None:
            if on and camera.source is None:
                await self._start_camera(camera)
            elif not on and camera.source is not None:
                await asyncio.to_thread(self.pipeline.remove_camera, camera_id)
                self._forget_source(camera)
        self._audit(
            "camera_started" if on else "camera_stopped",
            user_id,
            user_name,
            camera=camera.config.name,
        )
        self.emit("camera", {"camera_id": camera_id, "state": camera.state, "monitoring": on})

    # ------------------------------------------------------------------ gallery

    async def _load_gallery(self, config: EngineConfig) -> None:
        """Swap in the gallery of the configured source (registry: cached, then synced)."""
        assert self.analyzer is not None
        if self._sync_task is not None:
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sync_task
            self._sync_task = None
        self.client = self.sync = None
        self._photos.clear()
        gallery = config.gallery
        if gallery.source == "folder":
            self._problem("registry", None)
            await self._stop_outbox()
            await self._reload_folder()
            return
        assert gallery.url is not None
        assert gallery.api_key is not None
        assert self._session
        self.client = UprClient(
            self._session, gallery.url, gallery.api_key, verify_ssl=gallery.verify_ssl
        )
        self.sync = GallerySync(
            self.client, self.analyzer, self.data / "gallery", cache=self._cache
        )
        cached = await self.sync.async_load()
        self.gallery = cached
        self.gallery_state = "cached" if cached is not None else "no_gallery_yet"
        if cached is None:
            self._problem("gallery", "no_gallery_yet", url=gallery.url)
        await self._start_outbox()
        self._sync_wake.clear()
        self._sync_task = self._spawn(self._sync_loop(self.sync), "gallery sync")

    async def _reload_folder(self) -> dict[str, Any]:
        assert self.config is not None
        assert self.analyzer is not None
        folder = Path(self.config.gallery.folder or "")
        analyzer, cache = self.analyzer, self._cache

        def load() -> tuple[Gallery, list[str], dict[str, Any]]:
            folder.mkdir(parents=True, exist_ok=True)
            gallery, report = load_folder(folder, analyzer, cache)
            gallery.synced_at = time.time()
            return gallery, list(report.warnings), report.as_dict()

        try:
            gallery, warnings, report = await asyncio.to_thread(load)
        except OSError as err:
            self._problem(
                "gallery", "gallery_folder_unreadable", folder=str(folder), error=str(err)
            )
            raise EngineError("gallery_folder_unreadable", str(err), folder=str(folder)) from err
        for warning in warnings:
            _LOGGER.warning("Gallery: %s", warning)
        self._problem("gallery", None)
        self.gallery = gallery
        self.gallery_state = "ok"
        self.last_sync = {"at": _iso(time.time()), "ok": True, **_counts(report)}
        if self.pipeline is not None:
            self.pipeline.set_gallery(gallery)
        await self._close_incidents_of_found()
        self.emit("gallery_sync", {**self.last_sync, "persons": gallery.matchable_count})
        return self.last_sync

    async def _sync_once(self, sync: GallerySync) -> dict[str, Any]:
        """One registry sync; its outcome (also as a ``gallery_sync`` event)."""
        assert self.config is not None
        url = self.config.gallery.url or ""
        try:
            report = await sync.sync()
        except UprAuthError:
            self._problem("registry", "registry_auth_failed", url=url)
            outcome = {"at": _iso(time.time()), "ok": False, "code": "invalid_auth"}
        except ImageError as err:  # the analyzer failed on every photo: not the registry
            _LOGGER.error("Gallery sync stopped: %s; the previous gallery stays in use", err)
            outcome = {"at": _iso(time.time()), "ok": False, "code": "analyzer_failed"}
            outcome["error"] = str(err)
        except UprFacesError as err:
            if "registry" not in self.problems or self.problems["registry"]["code"] != (
                "registry_unreachable"
            ):
                _LOGGER.warning("UPR registry unreachable (%s); matching goes on", err)
            self._problem("registry", "registry_unreachable", url=url)
            outcome = {"at": _iso(time.time()), "ok": False, "code": "cannot_connect"}
            if isinstance(err, UprResponseError):  # it answers, but nothing usable
                outcome |= {"code": "bad_response", "error": str(err)}
                if isinstance(err, UprPagingError):
                    outcome["reason"] = err.reason
        except Exception:  # never let one sync end the loop: the gallery stays
            _LOGGER.exception("Gallery sync failed; the previous gallery stays in use")
            outcome = {"at": _iso(time.time()), "ok": False, "code": "unknown"}
        else:
            self._problem("registry", None)
            self._problem("gallery", None)
            self.gallery = sync.gallery
            self.gallery_state = "ok"
            if self.pipeline is not None:
                self.pipeline.set_gallery(self.gallery)
            await self._close_incidents_of_found()
            outcome = {"at": _iso(time.time()), "ok": True, **_counts(report.as_dict())}
            if self.outbox is not None:
                self.outbox.wake()
        self.last_sync = outcome
        persons = self.gallery.matchable_count if self.gallery else 0
        self.emit("gallery_sync", {**outcome, "persons": persons})
        return outcome

    async def _sync_loop(self, sync: GallerySync) -> None:
        assert self.config is not None
        delay = self.config.options.retry_backoff
        while not self._stop.is_set():
            outcome = await self._sync_once(sync)
            if outcome["ok"]:
                delay = self.config.options.retry_backoff
                wait = SYNC_INTERVAL
            elif outcome["code"] == "invalid_auth":
                wait = SYNC_INTERVAL  # a new key comes with a new configuration
            else:
                wait, delay = delay, min(delay * 2, MAX_SYNC_BACKOFF)
            self._sync_wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sync_wake.wait(), wait)

    async def refresh_gallery(
        self, *, user_id: str | None, user_name: str | None
    ) -> dict[str, Any]:
        """Sync the registry (or re-read the folder) now; the outcome."""
        if self.config is None or self.analyzer is None:
            raise EngineError("not_ready", "no configuration or no model pack yet", status=409)
        self._audit("gallery_refresh", user_id, user_name)
        if self.sync is not None:
            return await self._sync_once(self.sync)
        return await self._reload_folder()

    async def _start_outbox(self) -> None:
        await self._stop_outbox()
        assert self.outbox is not None
        assert self.client is not None
        assert self.config is not None
        self._outbox_stop = asyncio.Event()
        self._outbox_task = self._spawn(
            self.outbox.run(
                self.client, self._outbox_stop, retry_initial=self.config.options.retry_backoff
            ),
            "outbox",
        )

    async def _stop_outbox(self) -> None:
        if self._outbox_stop is not None:
            self._outbox_stop.set()
        if self._outbox_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._outbox_task
        self._outbox_stop = self._outbox_task = None

    async def person_photo(self, person_id: str) -> bytes:
        """A person's first photo: from the registry (cached in memory) or the folder."""
        person = self.gallery.persons.get(person_id) if self.gallery else None
        if person is None or self.config is None:
            raise EngineError("unknown_person", "no such person", status=404)
        cached = self._photos.get(person_id)
        if cached is not None:
            self._photos.move_to_end(person_id)
            return cached
        if self.client is not None:
            if not person.photo_url:
                raise EngineError("no_photo", "the registry has no photo", status=404)
            try:
                data = await self.client.fetch_photo(person.photo_url)
            except UprFacesError as err:
                raise EngineError("cannot_connect", str(err), status=502) from err
        else:
            folder = Path(self.config.gallery.folder or "") / person_id

            def read() -> bytes | None:
                photos = person_photos(folder) if folder.is_dir() else []
                return photos[0].read_bytes() if photos else None

            found = await asyncio.to_thread(read)
            if found is None:
                raise EngineError("no_photo", "no photo in the folder", status=404)
            data = found
        self._photos[person_id] = data
        while len(self._photos) > PHOTO_CACHE_SIZE:
            self._photos.popitem(last=False)
        return data

    # ------------------------------------------------------------------ alerts

    def _on_match_threadsafe(self, event: MatchEvent) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._schedule_match, event)

    def _schedule_match(self, event: MatchEvent) -> None:
        task = asyncio.get_running_loop().create_task(
            self._handle_match(event), name=f"upr-faces match {event.match_id}"
        )
        self._matches.add(task)  # not cancelled on stop: drained (see stop())
        task.add_done_callback(self._matches.discard)

    def image_path(self, alert_id: str, kind: str) -> Path:
        """Where an alert's face crop or frame is kept."""
        return self.alerts_folder / f"{alert_id}_{kind}.jpg"

    def _write_images(
        self, event: MatchEvent, *, best: bool, sighting: int | None
    ) -> tuple[bool, bool]:
        """Write a sighting's images (blocking): its face crop as sighting ``n`` (when it
        keeps one) and, when it is the incident's best, the incident's face and frame.
        Whether each was written."""
        best_written = face_written = False
        if best:
            for kind, data in (("face", event.face_jpeg), ("frame", event.snapshot_jpeg)):
                if data:
                    _private_write(self.image_path(event.match_id, kind), data)
                    best_written = True
        if sighting is not None and event.face_jpeg:
            _private_write(
                self.image_path(event.match_id, sighting_image_kind(sighting)), event.face_jpeg
            )
            face_written = True
        return best_written, face_written

    def _storage(self, folder: Path, err: BaseException | None) -> None:
        """Raise (an error) or clear (None) the problem of a folder the engine cannot
        write: the alert goes on without what could not be kept."""
        if err is None:
            if "storage" in self.problems and self.problems["storage"]["placeholders"].get(
                "folder"
            ) == str(folder):
                self._problem("storage", None)
            return
        error = getattr(err, "strerror", None) or str(err)
        if "storage" not in self.problems:
            _LOGGER.error(
                "UPR Faces cannot write in %s (%s): alerts go on without it", folder, error
            )
        self._problem("storage", "storage_failed", folder=str(folder), error=error)

    async def _handle_match(self, event: MatchEvent) -> None:
        """A sighting: it joins the person's open incident or opens one (the alert)."""
        async with self._incident_lock:  # one sighting at a time: no twin incidents
            self._last_detection = max(self._last_detection or 0.0, event.detected_at)
            if self._rejected_meanwhile(event):
                return
            incident_id = self._open.get(event.person_id)
            record = self.store.alert(incident_id) if incident_id else None
            if record is not None and is_open(record, event.detected_at, self._open.gap_s):
                await self._join_incident(record, event)
            else:
                if incident_id is not None:
                    self._open.discard(incident_id)
                await self._open_incident(event)

    def _rejected_meanwhile(self, event: MatchEvent) -> bool:
        """A sighting the pipeline made before an operator rejected that person for that
        face (it waited for the lock meanwhile): dropped, like the later ones."""
        if self.pipeline is None or not event.embedding:
            return False
        vector = np.asarray(event.embedding, dtype=np.float32)
        kept = self.pipeline.rejections.filter(vector, {event.person_id: event.similarity})
        return event.person_id not in kept

    async def _images(
        self, incident_id: str, event: MatchEvent, *, best: bool, n: int
    ) -> tuple[bool, bool]:
        """Write a sighting's images under ``incident_id`` (see :meth:`_write_images`)."""
        event = replace(event, match_id=incident_id)
        try:
            written = await asyncio.to_thread(
                self._write_images, event, best=best, sighting=n if wants_face(n) else None
            )
        except OSError as err:  # a full or read-only disk: the alert still goes out
            self._storage(self.alerts_folder, err)
            return False, False
        if any(written):
            self._storage(self.alerts_folder, None)
        return written

    def _camera_name(self, camera_id: str) -> str:
        camera = self.cameras.get(camera_id)
        return camera.config.name if camera else camera_id

    async def _open_incident(self, event: MatchEvent) -> None:
        person = self.gallery.persons.get(event.person_id) if self.gallery else None
        camera_name = self._camera_name(event.camera)
        has_images, has_face = await self._images(event.match_id, event, best=True, n=1)
        alert = new_incident(
            event,
            camera_name=camera_name,
            reference=person.reference if person else event.person_id,
            display_name=person.display_name if person else None,
            has_images=has_images,
            has_face=has_face,
        )
        try:
            self.store.put_alert(alert)
        except (sqlite3.Error, OSError) as err:
            self._storage(self.data, err)
        self._open.set(event.person_id, event.match_id)
        await self._enqueue_alert(alert, event.face_jpeg)
        try:
            self._record_match(alert, camera_name)
        except (sqlite3.Error, OSError) as err:
            self._storage(self.data, err)
            event_now = Event(0, time.time(), "match", public_alert(alert))
            for queue in self._subscribers:  # still told live, though not kept
                queue.put_nowait(event_now)

    async def _enqueue_alert(self, alert: dict[str, Any], face_jpeg: bytes | None) -> None:
        """Queue an incident for the registry (again on an upgrade: the same id, the new
        tier and similarity)."""
        if self.client is None or self.outbox is None:
            return
        payload = {
            "id": alert["id"],
            "person_id": alert["person_id"],
            "camera": alert["camera_name"],
            "tier": alert["tier"],
            "similarity": alert["similarity"],
            "detected_at": alert["detected_at"],
            "snapshot_jpeg_b64": base64.b64encode(face_jpeg).decode() if face_jpeg else None,
        }
        try:
            await self.outbox.async_enqueue_alert(payload)
        except OSError as err:  # not kept on disk: sent now, once, without the outbox
            self._storage(self.outbox.folder, err)
            self._spawn(self._send_unqueued(payload), f"alert {alert['id']}")
        except UprFacesError as err:
            _LOGGER.error("Alert %s could not be queued for the registry: %s", alert["id"], err)

    async def _join_incident(self, record: dict[str, Any], event: MatchEvent) -> None:
        """Add a sighting to an open incident; ``match`` again when it became a match,
        ``sighting`` otherwise. Called under the incident lock (a verdict takes it too)."""
        incident_id = str(record["id"])
        camera_name = self._camera_name(event.camera)
        n = next_sighting_number(record)
        best = event.similarity > float(record.get("similarity") or 0.0)
        best_written, has_face = await self._images(incident_id, event, best=best, n=n)
        joined = add_sighting(record, event, camera_name=camera_name, has_face=has_face)
        if best_written:
            record["has_images"] = True
        try:
            self.store.put_alert(record)
        except (sqlite3.Error, OSError) as err:
            self._storage(self.data, err)
        # a verdict being queued now goes first: the registry gets no alert after its verdict
        pending = record.get("state") == "pending" and incident_id not in self._deciding
        upgraded = joined.upgraded and pending
        if upgraded:
            await self._enqueue_alert(record, event.face_jpeg)
        kind, data = (
            ("match", {**public_alert(record), "upgraded": True, "sighting": joined.sighting})
            if upgraded
            else ("sighting", {"incident": public_alert(record), "sighting": joined.sighting})
        )
        try:
            if upgraded:
                self._audit(
                    "alert_upgraded",
                    match_id=incident_id,
                    tier=record["tier"],
                    person_id=record["person_id"],
                    camera=camera_name,
                    similarity=record["similarity"],
                )
            self.emit(kind, data)
        except (sqlite3.Error, OSError) as err:
            self._storage(self.data, err)
            event_now = Event(0, time.time(), kind, data)
            for queue in self._subscribers:  # still told live, though not kept
                queue.put_nowait(event_now)

    def _record_match(self, alert: dict[str, Any], camera_name: str) -> None:
        """The audit line and the event of a new incident (SQLite)."""
        self._audit(
            "alert",
            match_id=alert["id"],
            tier=alert["tier"],
            person_id=alert["person_id"],
            camera=camera_name,
            similarity=alert["similarity"],
        )
        self.emit("match", public_alert(alert))

    async def _close_incidents_of_found(self) -> None:
        """The registry no longer seeks some persons (closed, found, deleted): their
        incidents awaiting a verdict close with that reason, and none of their incidents
        gathers sightings any more. Their records and images go with the retention."""
        gallery = self.gallery
        if gallery is None:
            return
        wanted = {pid for pid, person in gallery.persons.items() if person.is_open}
        try:
            await self._close_incidents_not_in(wanted)
        except (sqlite3.Error, OSError) as err:  # tried again at the next sync
            self._storage(self.data, err)

    async def _close_incidents_not_in(self, wanted: set[str]) -> None:
        async with self._incident_lock:
            for person_id, incident_id in self._open.persons().items():
                if person_id not in wanted:
                    self._open.discard(incident_id)
                    record = self.store.alert(incident_id)
                    if record is not None and record.get("state") == "confirmed":
                        record["closed_reason"] = "person_closed"
                        self.store.put_alert(record)
            pending = await asyncio.to_thread(self.store.alerts_in_state, "pending")
            now = time.time()
            for record in pending:
                if record["person_id"] in wanted or not record.get("sightings"):
                    continue  # records from before incidents stay for a verdict
                record.update(state="closed", closed_reason="person_closed", embeddings=[])
                record["decided_at"] = _iso(now)
                self.store.put_alert(record)
                self._audit(
                    "incident_closed",
                    match_id=record["id"],
                    person_id=record["person_id"],
                    camera=record["camera_name"],
                    reason="person_closed",
                )
                self.emit("alert_decided", public_alert(record))

    async def _send_unqueued(self, payload: dict[str, Any]) -> None:
        """Deliver an alert the outbox could not keep on disk, trying for a while."""
        assert self.client is not None
        for attempt in range(5):
            try:
                await self.client.post_alert(payload)
                return
            except UprFacesError as err:
                if attempt == 4:
                    _LOGGER.error("Alert %s did not reach the registry: %s", payload["id"], err)
                    return
                await asyncio.sleep(5.0 * 2**attempt)

    def alert(self, alert_id: str) -> dict[str, Any]:
        """One alert, as clients see it."""
        found = self.store.alert(alert_id)
        if found is None:
            raise EngineError("unknown_match", "no such alert", status=404, match_id=alert_id)
        return public_alert(found)

    async def decide(
        self,
        alert_id: str,
        verdict: Verdict,
        *,
        user_id: str | None,
        user_name: str | None,
        comment: str | None,
    ) -> dict[str, Any]:
        """Confirm or reject an alert; the verdict goes to the registry and the audit.

        Under the incident lock from the check to the record: no sighting joins, no close
        by the registry lands, between them (the registry never gets an alert after its
        verdict)."""
        if alert_id in self._deciding:  # another verdict on it is being queued
            raise EngineError(
                "already_decided",
                "this alert is being decided",
                status=409,
                match_id=alert_id,
                verdict="pending",
                by="",
            )
        self._deciding.add(alert_id)
        try:
            async with self._incident_lock:
                alert = self.store.alert(alert_id)
                if alert is None:
                    raise EngineError(
                        "unknown_match", "no such alert", status=404, match_id=alert_id
                    )
                if alert["state"] != "pending":
                    raise EngineError(
                        "already_decided",
                        "this alert was decided already",
                        status=409,
                        match_id=alert_id,
                        verdict=str(alert["state"]),
                        by=str(alert.get("decided_by_name") or alert.get("decided_by") or ""),
                    )
                return await self._decide(alert, verdict, user_id, user_name, comment)
        finally:
            self._deciding.discard(alert_id)

    async def _decide(
        self,
        alert: dict[str, Any],
        verdict: Verdict,
        user_id: str | None,
        user_name: str | None,
        comment: str | None,
    ) -> dict[str, Any]:
        alert_id = str(alert["id"])
        now = time.time()
        # Queued first, recorded after: a verdict that cannot reach the outbox (full, a
        # disk that takes no write) changes nothing and says why; tried again, it works.
        if self.client is not None and self.outbox is not None:
            try:
                await self.outbox.async_enqueue_verdict(
                    alert_id,
                    {
                        "verdict": verdict,
                        "by": user_name or user_id or "unknown",
                        "comment": comment,
                        "at": _iso(now),
                    },
                )
            except OutboxFullError as err:
                raise EngineError("outbox_full", str(err), status=503, match_id=alert_id) from err
            except OSError as err:
                self._storage(self.outbox.folder, err)
                raise EngineError(
                    "storage_failed",
                    "the verdict cannot be kept for the registry",
                    status=503,
                    folder=str(self.outbox.folder),
                    error=err.strerror or str(err),
                ) from err
        alert.update(
            state=verdict,
            decided_by=user_id,
            decided_by_name=user_name,
            decided_at=_iso(now),
            comment=comment,
        )
        if verdict == "confirmed":  # only a rejection needs the faces' embeddings
            alert["embeddings"] = []
            alert.pop("embedding", None)
        if verdict == "rejected":
            # not that person: the faces match no one, so every sighting's images go;
            # the record keeps only their embeddings, until the retention removes it
            self._open.discard(alert_id)
            await asyncio.to_thread(self._remove_images, [alert_id])
            alert["has_images"] = False
            for sighting in alert.get("sightings") or ():
                sighting["has_face"] = False
        self.store.put_alert(alert)
        if verdict == "rejected" and self.pipeline is not None:
            self._reject_faces(alert)
        await self._update_decisions()
        self._audit(
            verdict,
            user_id,
            user_name,
            match_id=alert_id,
            person_id=alert["person_id"],
            camera=alert["camera_name"],
            comment=comment,
        )
        public = public_alert(alert)
        self.emit("alert_decided", public)
        return public

    async def _housekeeping(self) -> None:
        """Drop alerts, images, audit lines and events past the retention, hourly."""
        while not self._stop.is_set():
            days = self.config.options.retention_days if self.config else 30.0
            before = time.time() - days * 86_400
            async with self._incident_lock:  # no sighting re-writes an expiring record
                expired = await asyncio.to_thread(self.store.expire_alerts, before)
                for incident_id in expired:
                    self._open.discard(incident_id)
                if expired:
                    await asyncio.to_thread(self._remove_images, expired)
            await self._update_decisions()
            if expired and self.pipeline is not None:  # expired rejections no longer hold
                self.pipeline.rejections.replace(await asyncio.to_thread(self._rejected_faces))
            if self.outbox is not None:
                with contextlib.suppress(OSError):
                    await asyncio.to_thread(self.outbox.prune_rejected, before)
            self.store.prune_events()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), HOUSEKEEPING_INTERVAL)

    def _read_decisions(self) -> tuple[list[Decision], dict[str, list[Decision]]]:
        """Every decided incident the retention keeps, as decisions (blocking)."""
        decided = self.store.alerts_in_state("confirmed", 100_000)
        decided += self.store.alerts_in_state("rejected", 100_000)
        return decisions(decided)

    async def _update_decisions(self) -> None:
        try:
            self._decisions = await asyncio.to_thread(self._read_decisions)
        except sqlite3.Error as err:  # advice waits for the next verdict; nothing else does
            _LOGGER.warning("The verdicts could not be read for the threshold advice: %s", err)

    def _advice(self, camera: CameraConfig | None) -> dict[str, Any]:
        """What the verdicts say of a camera's match threshold (or, None, the engine's)."""
        assert self.config is not None
        overall, by_camera = self._decisions
        if camera is None:
            return advise(overall, self.config.options.match_threshold)
        thresholds = self._thresholds(camera)
        match = thresholds.match if thresholds else self.config.options.match_threshold
        return advise(by_camera.get(camera.id, []), match)

    def _rejected_faces(self) -> list[tuple[str, list[float]]]:
        """(person, face embedding) of the incidents operators rejected and the retention
        still keeps: the pipeline does not match those faces to those persons again
        (blocking)."""
        return [
            (str(alert["person_id"]), vector)
            for alert in self.store.alerts(limit=100_000)
            if alert.get("state") == "rejected"
            for vector in embeddings_of(alert)
        ]

    def _reject_faces(self, alert: dict[str, Any]) -> None:
        """A rejected incident: none of its tracks names that person again, nor does a face
        close to one of its faces (the pipeline's rejection memory)."""
        assert self.pipeline is not None
        person_id = str(alert["person_id"])
        for vector in embeddings_of(alert):
            self.pipeline.rejections.add(person_id, vector)
        for camera_id, track_id in tracks_of(alert):
            self.pipeline.reject(camera_id, track_id, person_id)

    def _remove_images(self, alert_ids: list[str]) -> None:
        """Delete every image of these incidents: best face and frame, sightings' crops."""
        for alert_id in alert_ids:
            for path in self.alerts_folder.glob(f"{glob.escape(alert_id)}_*.jpg"):
                path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ what forms need

    def check_source(self, source: str, stored: str | None = None) -> dict[str, Any]:
        """Parse a camera source without opening it: what a form needs to store and show.

        With ``stored`` (the source saved before), a ``***`` the form showed in place of a
        password or secret is replaced by the stored value. The answer holds the source to
        store, its masked form, the key that tells two cameras apart and a default name.
        """
        text = unmask_source(source.strip(), stored) if stored else source.strip()
        if "***" in text:
            return {**_invalid_source("a masked secret hides nothing known"), "masked": text}
        try:
            checked = check_source(text, "source", self.media)
            spec = parse_source(checked)
        except UprFacesError as err:
            return {**_invalid_source(str(err)), "masked": mask_url(text)}
        return {
            "ok": True,
            "source": spec.url,
            "masked": spec.masked,
            "key": source_key(spec),
            "kind": str(spec.kind),
            "name": default_name(spec),
        }

    async def check_folder(self, folder: str) -> dict[str, Any]:
        """A gallery folder of the engine's host: created when missing; whether the engine can
        read it (it never writes there: a read-only folder, such as the add-on's /media,
        is fine)."""

        def refused(error: str) -> dict[str, Any]:
            return {
                "ok": False,
                "error": {
                    "code": "folder_not_writable",
                    "placeholders": {"folder": folder, "error": error},
                },
            }

        def check() -> dict[str, Any]:
            path = Path(folder)
            if not path.is_absolute():
                return refused("not an absolute path")
            try:
                if not path.is_dir():
                    path.mkdir(parents=True)
                resolved = path.resolve()
            except OSError as err:
                return refused(err.strerror or str(err))
            if not resolved.is_dir() or not os.access(resolved, os.R_OK | os.X_OK):
                return refused("not readable")
            return {"ok": True, "folder": str(resolved)}

        return await asyncio.to_thread(check)

    def import_history(self, data: dict[str, Any]) -> dict[str, Any]:
        """Take alerts, audit lines and monitoring flags kept by an older client, once per
        ``origin`` (a client's id): a second import of the same origin changes nothing."""
        origin = str(data.get("origin") or "")
        done = set(self.store.get_meta("imported") or [])
        if not origin or origin in done:
            return {"imported": False, "alerts": 0, "audit": 0}
        alerts = 0
        for item in data.get("alerts") or []:
            alert = _imported_alert(item)
            if alert is not None and self.store.alert(alert["id"]) is None:
                self.store.put_alert(alert)
                alerts += 1
        lines = 0
        for item in data.get("audit") or []:
            when = _timestamp(item.get("at"))
            if when is None or not isinstance(item.get("action"), str):
                continue
            self.store.audit(
                {
                    "at": when,
                    "time": _iso(when),
                    "action": item["action"],
                    "user_id": item.get("user_id"),
                    "user_name": item.get("user_name"),
                    "details": item.get("details") or {},
                }
            )
            lines += 1
        monitoring = {
            str(key): bool(value) for key, value in (data.get("monitoring") or {}).items()
        }
        if monitoring:
            self.store.set_meta(
                "monitoring", {**(self.store.get_meta("monitoring") or {}), **monitoring}
            )
            for camera_id, on in monitoring.items():
                if camera_id in self.cameras:
                    self.cameras[camera_id].monitoring = on
        self.store.set_meta("imported", sorted(done | {origin}))
        if alerts:
            self._decisions = self._read_decisions()  # the verdicts it brought count too
        self._audit("history_imported", origin=origin, alerts=alerts, audit=lines)
        return {"imported": True, "alerts": alerts, "audit": lines}

    async def test_source(self, source: str) -> dict[str, Any]:
        """Open a camera source briefly: ok with the frame size, or why not."""
        try:
            text = check_source(source, "source", self.media)
        except UprFacesError as err:
            return {
                "ok": False,
                "error": {"code": "invalid_source", "placeholders": {"problem": str(err)}},
            }
        camera = CameraSource(
            text, name="test", read_timeout=TEST_TIMEOUT, retry_backoff=60, max_backoff=60
        )

        def probe() -> dict[str, Any]:
            camera.start()
            try:
                deadline = time.monotonic() + TEST_TIMEOUT + 1
                while time.monotonic() < deadline:
                    frame = camera.wait_newer(0, timeout=0.2)
                    if frame is not None:
                        height, width = frame.image.shape[:2]
                        return {"ok": True, "width": int(width), "height": int(height)}
                    if camera.state is SourceState.OFFLINE:
                        break
                return {
                    "ok": False,
                    "error": {
                        "code": _source_error(camera.reason),
                        "placeholders": {"reason": camera.reason or "-"},
                    },
                }
            finally:
                camera.stop()

        return await asyncio.to_thread(probe)

    async def scan_usb(self, *, user_id: str | None, user_name: str | None) -> list[dict[str, Any]]:
        """Probe the USB cameras of the engine's host."""
        limit = self.config.options.usb_max if self.config else 6
        found = await asyncio.to_thread(scan_usb, limit)
        self._audit("usb_scan", user_id, user_name, found=len(found))
        return [
            {
                "source": cam.source,
                "index": cam.index,
                "name": cam.name,
                "width": cam.width,
                "height": cam.height,
            }
            for cam in found
        ]

    async def test_registry(self, url: str, api_key: str, verify_ssl: bool) -> dict[str, Any]:
        """Call the registry's /health and one /persons page with this URL and key."""
        assert self._session is not None
        try:
            client = UprClient(
                self._session,
                url,
                api_key,
                verify_ssl=verify_ssl,
                timeout=TEST_TIMEOUT,
                retry=RetryPolicy(attempts=1),
            )
        except ValueError:
            return {"ok": False, "error": {"code": "invalid_auth", "placeholders": {}}}
        try:
            # a person waits on the form: both calls within TEST_TIMEOUT in all, however
            # the registry stalls (accepts and never answers, or trickles)
            async with asyncio.timeout(TEST_TIMEOUT):
                health = await client.health()
                await client.persons_page(limit=1)
        except TimeoutError:
            return {
                "ok": False,
                "error": {
                    "code": "cannot_connect",
                    "placeholders": {"error": f"no answer within {TEST_TIMEOUT:.0f} s"},
                },
            }
        except UprAuthError:
            return {"ok": False, "error": {"code": "invalid_auth", "placeholders": {}}}
        except UprConnectionError as err:
            return {
                "ok": False,
                "error": {"code": "cannot_connect", "placeholders": {"error": str(err)}},
            }
        except UprFacesError as err:
            return {"ok": False, "error": {"code": "unknown", "placeholders": {"error": str(err)}}}
        return {"ok": True, "version": health.version}

    def model_packs(self) -> dict[str, Any]:
        """The official packs, whether each is installed here, and running downloads."""
        packs = []
        for name, official in OFFICIAL_PACKS.items():
            folder = self.models_folder / name
            packs.append(
                {
                    "name": name,
                    "files": list(official.files),
                    "url": official.url,
                    "folder": str(folder),
                    "installed": folder.is_dir(),
                }
            )
        return {
            "folder": str(self.models_folder),
            "packs": packs,
            "downloads": [job.as_dict() for job in self.downloads.values()],
        }

    def download(self, pack: str, url: str | None) -> dict[str, Any]:
        """Start downloading an official pack (or from a mirror ``url``); its job."""
        if pack not in OFFICIAL_PACKS:
            raise EngineError("unknown_pack", "not an official pack", pack=pack)
        job = self.downloads.get(pack)
        if job is not None and job.state == "running":
            return job.as_dict()
        job = _Download(pack)
        self.downloads[pack] = job
        job.task = self._spawn(self._download(job, url), f"download {pack}")
        return job.as_dict()

    async def _download(self, job: _Download, url: str | None) -> None:
        assert self._session is not None

        def progress(done: int, total: int | None) -> None:
            job.done, job.total = done, total

        try:
            await async_fetch_pack(
                self._session, job.pack, self.models_folder, url=url, progress=progress
            )
        except (ModelPackError, OSError) as err:
            job.state = "failed"
            job.error = {
                "code": "download_failed",
                "placeholders": {"error": str(err), "pack": job.pack},
            }
            _LOGGER.warning("Model pack %s not installed: %s", job.pack, err)
            return
        job.state = "done"
        self.emit("model_pack", {"pack": job.pack, "installed": True})
        if (
            self.config is not None
            and self.analyzer is None
            and self.config.models.pack == job.pack
        ):
            await self.apply(replace(self.config))

    async def verify_models(self, folder: str) -> dict[str, Any]:
        """Whether a folder of the engine's host holds a usable pack, and what is missing."""
        path = Path(folder)

        def check() -> dict[str, Any]:
            try:
                pack = find_pack(path)
            except ModelPackMissingError as err:
                return {
                    "ok": False,
                    "error": {
                        "code": "invalid_model_dir",
                        "placeholders": {
                            "folder": str(err.folder),
                            "missing": ", ".join(err.missing),
                        },
                    },
                }
            except (ModelPackError, OSError) as err:
                return {
                    "ok": False,
                    "error": {
                        "code": "invalid_model_dir",
                        "placeholders": {"folder": folder, "missing": str(err)},
                    },
                }
            report = verify_pack(pack.folder)
            return {
                "ok": True,
                "folder": str(pack.folder),
                "detector": pack.detector.name,
                "recognizer": pack.recognizer.name,
                "report": report.as_dict(),
            }

        return await asyncio.to_thread(check)

    # ------------------------------------------------------------------ info

    def camera_jpeg(self, camera_id: str, width: int | None) -> bytes | None:
        """The live view of a camera with its face boxes (blocking: JPEG encoding)."""
        worker = self.pipeline.camera(camera_id) if self.pipeline else None
        return worker.annotated_jpeg(width) if worker else None

    def info(self) -> dict[str, Any]:
        """Version, models, providers, cameras, gallery, outbox, events and problems."""
        cameras = []
        for camera_id, camera in self.cameras.items():
            worker = self.pipeline.camera(camera_id) if self.pipeline else None
            stats = asdict(worker.stats()) if worker else None
            source_stats = asdict(camera.source.stats) if camera.source else None
            if worker is not None and worker.last_detection_at:
                self._last_detection = max(self._last_detection or 0.0, worker.last_detection_at)
            cameras.append(
                {
                    "id": camera_id,
                    "name": camera.config.name,
                    "source": camera.config.masked_source,
                    "monitoring": camera.monitoring,
                    "state": str(camera.source.state) if camera.source else "stopped",
                    "reason": mask_text(camera.reason, camera.config.source)
                    if camera.reason
                    else None,
                    "since": _iso(camera.since),
                    "started_at": _iso(camera.started_at) if camera.started_at else None,
                    "faces": len(worker.faces) if worker else 0,
                    "stats": stats,
                    "source_stats": source_stats,
                    "advice": self._advice(camera.config) if self.config else None,
                }
            )
        first, last = self.store.event_bounds()
        gallery = self.gallery
        return {
            "version": self.version,
            "api_version": API_VERSION,
            "providers": list(self.analyzer.providers) if self.analyzer else [],
            "analysis_backend": getattr(self.analyzer, "backend", "local"),
            "pipeline": asdict(self.pipeline.stats()) if self.pipeline else None,
            "threads": self.analyzer.threads if self.analyzer else None,
            "models": {
                "pack": self.config.models.pack if self.config else None,
                "folder": str(self.pack.folder) if self.pack else None,
                "detector": self.pack.detector.name if self.pack else None,
                "recognizer": self.pack.recognizer.name if self.pack else None,
                "embedding_size": self.analyzer.embedding_size if self.analyzer else None,
            },
            "configured": self.config is not None,
            "cameras": cameras,
            "gallery": {
                "source": self.config.gallery.source if self.config else None,
                "state": self.gallery_state,
                "persons": gallery.matchable_count if gallery else 0,
                "references": gallery.reference_count if gallery else 0,
                "synced_at": _iso(gallery.synced_at) if gallery and gallery.synced_at else None,
                "last_sync": self.last_sync,
            },
            "last_detection": _iso(self._last_detection) if self._last_detection else None,
            "alerts_pending": self.store.count_alerts("pending"),
            "advice": self._advice(None) if self.config else None,
            "outbox": _outbox_info(self.outbox.status() if self.outbox else None),
            "events": {"first_id": first, "last_id": last, "epoch": self.store.epoch},
            "problems": list(self.problems.values()),
        }


def _outbox_info(status: dict[str, Any] | None) -> dict[str, Any]:
    """What clients see of the outbox: pending, rejected and stuck items, since when the
    oldest stuck one waits and why."""
    if status is None:
        return {"pending": 0, "rejected": 0, "stuck": 0, "stuck_since": None, "stuck_error": None}
    since = status["stuck_since"]
    return {**status, "stuck_since": _iso(since) if since is not None else None}


def _counts(report: dict[str, Any]) -> dict[str, Any]:
    keep = ("persons", "references", "skipped", "duplicates")
    return {key: report[key] for key in keep if key in report}


def _invalid_source(problem: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": "invalid_source", "placeholders": {"problem": problem}}}


def _timestamp(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _imported_alert(item: Any) -> dict[str, Any] | None:
    """An alert record of the integration's own log (before the engine kept them)."""
    if not isinstance(item, dict):
        return None
    when = _timestamp(item.get("detected_at"))
    if (
        when is None
        or not item.get("match_id")
        or item.get("state")
        not in (
            "pending",
            "confirmed",
            "rejected",
        )
    ):
        return None
    return {
        "id": str(item["match_id"]),
        "tier": "match" if item.get("tier") == "match" else "probable",
        "person_id": str(item.get("person_id") or ""),
        "reference": str(item.get("reference") or item.get("person_id") or ""),
        "display_name": item.get("display_name"),
        "similarity": float(item.get("similarity") or 0.0),
        "camera_id": str(item.get("camera_id") or ""),
        "camera_name": str(item.get("camera_name") or ""),
        "detected_at": _iso(when),
        "detected_at_ts": when,
        "latency_s": None,
        "track_id": int(item.get("track_id") or 0),
        "has_images": bool(item.get("has_snapshot")),
        "state": item["state"],
        "decided_by": item.get("decided_by"),
        "decided_by_name": item.get("decided_by_name"),
        "decided_at": item.get("decided_at"),
        "comment": item.get("comment"),
    }


def _source_error(reason: str | None) -> str:
    text = (reason or "").lower()
    if "unauthorized" in text or "401" in text or "403" in text:
        return "invalid_auth"
    if any(
        marker in text
        for marker in ("not an image", "no video stream", "no frame in clip", "invalid data")
    ):
        return "not_a_video"
    return "cannot_connect"


__all__ = ["API_VERSION", "Engine", "EngineError", "mask_url", "parse_config", "public_alert"]
