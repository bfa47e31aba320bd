"""The bridge: the engine's results pushed into Home Assistant's state.

One coordinator per config entry owns the engine objects (analyzer, pipeline, gallery,
registry client, outbox) and the persisted alert log. It is created without an update
interval: matches arrive from the pipeline's worker threads and are handed to the event
loop; a short tick refreshes counters and repair issues.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from homeassistant.config_entries import ConfigEntry, ConfigSubentry
from homeassistant.core import CALLBACK_TYPE, Context, HomeAssistant, callback
from homeassistant.exceptions import (
    ConfigEntryAuthFailed,
    ConfigEntryNotReady,
    HomeAssistantError,
    ServiceValidationError,
)
from homeassistant.helpers import issue_registry as ir
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.helpers.dispatcher import async_dispatcher_send
from homeassistant.helpers.event import async_track_time_interval
from homeassistant.helpers.update_coordinator import DataUpdateCoordinator
from homeassistant.util import dt as dt_util

from .alert_log import AlertLog, AlertRecord
from .const import (
    CAMERA_OFFLINE_REPAIR_AFTER,
    CONF_API_KEY,
    CONF_API_URL,
    CONF_COOLDOWN,
    CONF_DET_SIZE,
    CONF_DETECTION_FPS,
    CONF_GALLERY_DIR,
    CONF_GALLERY_SOURCE,
    CONF_MATCH_THRESHOLD,
    CONF_MODEL_DIR,
    CONF_MODEL_PACK,
    CONF_NAME,
    CONF_PROBABLE_THRESHOLD,
    CONF_RETENTION_DAYS,
    CONF_RETRY_BACKOFF,
    CONF_SOURCE,
    CONF_USB_MAX,
    CONF_USE_GPU,
    CONF_VERIFY_SSL,
    DEFAULT_OPTIONS,
    DOMAIN,
    EVENT_AUDIT,
    EVENT_MATCH,
    GALLERY_SYNC_INTERVAL,
    MODEL_PACK_CUSTOM,
    REGISTRY_DOWN_REPAIR_AFTER,
    SIGNED_URL_EXPIRY,
    SOURCE_REGISTRY,
    STATS_INTERVAL,
    SUBENTRY_CAMERA,
)
from .engine.upr_faces_engine.alerts import AlertTier, MatchEvent
from .engine.upr_faces_engine.analyzer import Analyzer
from .engine.upr_faces_engine.errors import ModelPackError, UprFacesError
from .engine.upr_faces_engine.gallery import (
    CACHE_FILE,
    EmbeddingCache,
    Gallery,
    Thresholds,
    load_folder,
)
from .engine.upr_faces_engine.models import ModelPack, ensure_pack, official_pack
from .engine.upr_faces_engine.outbox import Outbox
from .engine.upr_faces_engine.pipeline import Pipeline, PipelineConfig
from .engine.upr_faces_engine.sources import CameraSource, mask_url, scan_usb
from .engine.upr_faces_engine.sync import GallerySync
from .engine.upr_faces_engine.upr_client import UprAuthError, UprClient

_LOGGER = logging.getLogger(__name__)

type UprFacesConfigEntry = ConfigEntry[UprFacesCoordinator]

SIGNAL_ALERT = f"{DOMAIN}_alert_{{}}"
SNAPSHOT_KINDS = ("face", "frame")


@dataclass(frozen=True, slots=True)
class CameraData:
    """What the entities of one camera show."""

    camera_id: str
    name: str
    monitoring: bool
    state: str
    reason: str | None
    faces: int
    last_match: AlertRecord | None
    match_fresh: bool
    probable_fresh: bool


@dataclass(frozen=True, slots=True)
class HubData:
    """What the hub's entities show."""

    cameras: dict[str, CameraData] = field(default_factory=dict)
    gallery_size: int = 0
    last_sync: datetime | None = None
    pending_alerts: int = 0
    outbox_pending: int = 0
    last_detection: datetime | None = None
    registry_reachable: bool | None = None

    @property
    def active_streams(self) -> int:
        """Cameras delivering frames now."""
        return sum(1 for cam in self.cameras.values() if cam.state == "streaming")


def storage_folder(hass: HomeAssistant, entry_id: str) -> Path:
    """Where an entry keeps its gallery, outbox and snapshots."""
    return Path(hass.config.path(DOMAIN, entry_id))


def models_folder(hass: HomeAssistant) -> Path:
    """Where official model packs are downloaded."""
    return Path(hass.config.path(DOMAIN, "models"))


def camera_subentries(entry: ConfigEntry[Any]) -> dict[str, ConfigSubentry]:
    """The entry's cameras."""
    return {
        sub_id: sub
        for sub_id, sub in entry.subentries.items()
        if sub.subentry_type == SUBENTRY_CAMERA
    }


class UprFacesCoordinator(DataUpdateCoordinator[HubData]):
    """Runs the engine for one config entry and publishes its state."""

    config_entry: UprFacesConfigEntry

    def __init__(self, hass: HomeAssistant, entry: UprFacesConfigEntry) -> None:
        super().__init__(hass, _LOGGER, config_entry=entry, name=DOMAIN)
        self.options: dict[str, Any] = {**DEFAULT_OPTIONS, **entry.options}
        self.folder = storage_folder(hass, entry.entry_id)
        self.log = AlertLog(hass, entry.entry_id)
        self.registry = entry.data.get(CONF_GALLERY_SOURCE) == SOURCE_REGISTRY
        self.client: UprClient | None = None
        self.sync: GallerySync | None = None
        self.outbox: Outbox | None = None
        self.analyzer: Analyzer | None = None
        self.pipeline: Pipeline | None = None
        self.pack: ModelPack | None = None
        self.usb_found: list[dict[str, Any]] = []
        # registry photos recently served to operators: person id -> bytes
        self.photo_cache: OrderedDict[str, bytes] = OrderedDict()
        self._cache: EmbeddingCache | None = None
        self._gallery: Gallery | None = None
        self._stop = asyncio.Event()
        self._unsubs: list[CALLBACK_TYPE] = []
        self._registry_down_since: float | None = None
        self._offline_since: dict[str, float] = {}
        self._last_detection: float | None = None
        self.data = HubData()

    # ------------------------------------------------------------------ set up

    async def async_setup_engine(self) -> None:
        """Load the models and the gallery; raise the right ConfigEntry errors."""
        entry = self.config_entry
        await self.log.async_load()
        self.pack = await self._async_model_pack()
        use_gpu = bool(self.options[CONF_USE_GPU])
        providers = ("cuda", "openvino", "cpu") if use_gpu else ("cpu",)
        pack = self.pack
        self.analyzer = await self.hass.async_add_executor_job(
            lambda: Analyzer(
                pack,
                det_size=int(self.options[CONF_DET_SIZE]),
                providers=providers,
                square=False,
            )
        )
        self._cache = await self.hass.async_add_executor_job(
            EmbeddingCache, self.folder / CACHE_FILE
        )
        if self.registry:
            await self._async_setup_registry()
        else:
            await self._async_load_folder()
        self.pipeline = Pipeline(self.analyzer, self._gallery, self._pipeline_config())
        self.pipeline.add_listener(self._on_match_threadsafe)
        for camera_id in camera_subentries(entry):
            if self.log.monitoring.get(camera_id, True):
                await self._async_start_camera(camera_id)

    async def _async_model_pack(self) -> ModelPack:
        data = self.config_entry.data
        name = data.get(CONF_MODEL_PACK, "buffalo_l")
        target: str | Path = Path(data[CONF_MODEL_DIR]) if name == MODEL_PACK_CUSTOM else str(name)
        try:
            pack = await self.hass.async_add_executor_job(
                ensure_pack, target, models_folder(self.hass)
            )
        except ModelPackError as err:
            official = official_pack(str(name)) if name != MODEL_PACK_CUSTOM else None
            folder = (
                str(target) if isinstance(target, Path) else str(models_folder(self.hass) / name)
            )
            if official is not None:
                key = "model_pack_missing"
                placeholders = {
                    "folder": folder,
                    "files": ", ".join(official.files),
                    "url": official.url,
                }
            else:
                key = "model_folder_invalid"
                placeholders = {"folder": folder, "problem": str(err)}
            ir.async_create_issue(
                self.hass,
                DOMAIN,
                f"model_pack_missing_{self.config_entry.entry_id}",
                is_fixable=False,
                severity=ir.IssueSeverity.ERROR,
                translation_key=key,
                translation_placeholders=placeholders,
            )
            raise ConfigEntryNotReady(
                translation_domain=DOMAIN,
                translation_key="model_pack_missing",
                translation_placeholders={"folder": folder, "files": str(err)},
            ) from err
        ir.async_delete_issue(self.hass, DOMAIN, f"model_pack_missing_{self.config_entry.entry_id}")
        return pack

    async def _async_setup_registry(self) -> None:
        data = self.config_entry.data
        assert self.analyzer is not None
        session = async_get_clientsession(self.hass, verify_ssl=data.get(CONF_VERIFY_SSL, True))
        self.client = UprClient(
            session,
            data[CONF_API_URL],
            data[CONF_API_KEY],
            verify_ssl=data.get(CONF_VERIFY_SSL, True),
        )
        self.sync = GallerySync(self.client, self.analyzer, self.folder, cache=self._cache)
        self.outbox = await Outbox.async_open(self.folder / "outbox")
        self.outbox.add_listener(self._on_outbox_threadsafe)
        cached = await self.sync.async_load()
        try:
            await self.sync.sync()
        except UprAuthError as err:
            raise ConfigEntryAuthFailed(
                translation_domain=DOMAIN, translation_key="registry_auth_failed"
            ) from err
        except UprFacesError as err:
            if cached is None:
                raise ConfigEntryNotReady(
                    translation_domain=DOMAIN,
                    translation_key="cannot_connect",
                    translation_placeholders={"error": str(err)},
                ) from err
            _LOGGER.warning(
                "UPR registry unreachable (%s); matching with the gallery synced at %s",
                err,
                dt_util.utc_from_timestamp(cached.synced_at or 0).isoformat(),
            )
            self._registry_down_since = time.time()
        self._gallery = self.sync.gallery

    async def _async_load_folder(self) -> None:
        assert self.analyzer is not None
        folder = Path(self.config_entry.data[CONF_GALLERY_DIR])
        analyzer, cache = self.analyzer, self._cache

        def load() -> Gallery:
            folder.mkdir(parents=True, exist_ok=True)
            gallery, report = load_folder(folder, analyzer, cache)
            for warning in report.warnings:
                _LOGGER.warning("Gallery: %s", warning)
            gallery.synced_at = time.time()
            return gallery

        self._gallery = await self.hass.async_add_executor_job(load)

    def _pipeline_config(self) -> PipelineConfig:
        options = self.options
        return PipelineConfig(
            detection_fps=float(options[CONF_DETECTION_FPS]),
            cooldown_s=float(options[CONF_COOLDOWN]),
            thresholds=Thresholds(
                match=float(options[CONF_MATCH_THRESHOLD]),
                probable=float(options[CONF_PROBABLE_THRESHOLD]),
            ),
        )

    def _camera_thresholds(self, sub: ConfigSubentry) -> Thresholds | None:
        match = sub.data.get(CONF_MATCH_THRESHOLD)
        probable = sub.data.get(CONF_PROBABLE_THRESHOLD)
        if match is None and probable is None:
            return None
        return Thresholds(
            match=float(match if match is not None else self.options[CONF_MATCH_THRESHOLD]),
            probable=float(
                probable if probable is not None else self.options[CONF_PROBABLE_THRESHOLD]
            ),
        )

    # ------------------------------------------------------------------ run / stop

    @callback
    def async_start(self) -> None:
        """Start the workers and the background tasks (after the platforms are set up)."""
        entry = self.config_entry
        assert self.pipeline is not None
        self.pipeline.start()
        if self.outbox is not None and self.client is not None:
            entry.async_create_background_task(
                self.hass,
                self.outbox.run(
                    self.client, self._stop, retry_initial=float(self.options[CONF_RETRY_BACKOFF])
                ),
                f"{DOMAIN} outbox {entry.entry_id}",
            )
        if self.sync is not None:
            self._unsubs.append(
                async_track_time_interval(
                    self.hass, self._async_periodic_sync, GALLERY_SYNC_INTERVAL
                )
            )
        self._unsubs.append(async_track_time_interval(self.hass, self._async_tick, STATS_INTERVAL))
        self._publish()

    async def async_stop(self) -> None:
        """Stop every thread and task of this entry."""
        self._stop.set()
        for unsub in self._unsubs:
            unsub()
        self._unsubs.clear()
        if self.pipeline is not None:
            await self.hass.async_add_executor_job(self.pipeline.stop)
        await self.log.async_save()
        if self._cache is not None:
            await self.hass.async_add_executor_job(self._cache.close)

    # ------------------------------------------------------------------ cameras

    def _make_source(self, sub: ConfigSubentry) -> CameraSource:
        return CameraSource(
            sub.data[CONF_SOURCE],
            name=sub.data.get(CONF_NAME) or sub.title,
            retry_backoff=float(self.options[CONF_RETRY_BACKOFF]),
        )

    async def _async_start_camera(self, camera_id: str) -> None:
        assert self.pipeline is not None
        sub = self.config_entry.subentries[camera_id]
        try:
            source = self._make_source(sub)
        except (UprFacesError, ValueError) as err:
            _LOGGER.error("Camera %s cannot be opened: %s", sub.title, err)
            return
        thresholds = self._camera_thresholds(sub)
        pipeline = self.pipeline
        worker = await self.hass.async_add_executor_job(
            lambda: pipeline.add_camera(camera_id, source, thresholds=thresholds)
        )
        # alerts given before a reload or restart still hold their cooldown
        wall, mono = time.time(), time.monotonic()
        window = float(self.options[CONF_COOLDOWN])
        for record in self.log.alerts.values():
            when = dt_util.parse_datetime(record.detected_at)
            if record.camera_id != camera_id or when is None:
                continue
            age = wall - when.timestamp()
            if 0 <= age < window:
                tier: AlertTier = "match" if record.tier == "match" else "probable"
                worker.cooldown.prime(camera_id, record.person_id, tier, mono - age)

    async def async_set_monitoring(
        self, camera_id: str, on: bool, user_id: str | None = None
    ) -> None:
        """Start or stop watching a camera; remembered across restarts and audited."""
        assert self.pipeline is not None
        running = self.pipeline.camera(camera_id) is not None
        if on and not running:
            await self._async_start_camera(camera_id)
        elif not on and running:
            await self.hass.async_add_executor_job(self.pipeline.remove_camera, camera_id)
        self.log.monitoring[camera_id] = on
        sub = self.config_entry.subentries.get(camera_id)
        await self.async_audit(
            "camera_started" if on else "camera_stopped",
            user_id,
            camera=sub.title if sub else camera_id,
        )
        self._publish()

    async def async_scan_usb(self, user_id: str | None = None) -> list[dict[str, Any]]:
        """Probe the USB cameras; the findings are offered when adding a camera."""
        found = await self.hass.async_add_executor_job(scan_usb, int(self.options[CONF_USB_MAX]))
        self.usb_found = [
            {
                "source": cam.source,
                "index": cam.index,
                "name": cam.name,
                "width": cam.width,
                "height": cam.height,
            }
            for cam in found
        ]
        await self.async_audit("usb_scan", user_id, found=len(self.usb_found))
        return self.usb_found

    def camera_jpeg(self, camera_id: str, width: int | None) -> bytes | None:
        """The live view of a camera (blocking: JPEG encoding)."""
        worker = self.pipeline.camera(camera_id) if self.pipeline else None
        return worker.annotated_jpeg(width) if worker else None

    # ------------------------------------------------------------------ matches

    def _on_match_threadsafe(self, event: MatchEvent) -> None:
        """Called by a pipeline worker thread."""
        self.hass.loop.call_soon_threadsafe(self._schedule_match, event)

    @callback
    def _schedule_match(self, event: MatchEvent) -> None:
        self.config_entry.async_create_background_task(
            self.hass, self._async_handle_match(event), f"{DOMAIN} match {event.match_id}"
        )

    def snapshot_path(self, match_id: str, kind: str) -> Path:
        """Where an alert's image is kept."""
        return self.folder / "snapshots" / f"{match_id}_{kind}.jpg"

    def _write_snapshots(self, event: MatchEvent) -> bool:
        folder = self.folder / "snapshots"
        folder.mkdir(parents=True, exist_ok=True)
        written = False
        for kind, data in (("face", event.face_jpeg), ("frame", event.snapshot_jpeg)):
            if data:
                self.snapshot_path(event.match_id, kind).write_bytes(data)
                written = True
        return written

    async def _async_handle_match(self, event: MatchEvent) -> None:
        gallery = self._gallery
        person = gallery.persons.get(event.person_id) if gallery else None
        sub = self.config_entry.subentries.get(event.camera)
        camera_name = sub.title if sub else event.camera
        detected_at = dt_util.utc_from_timestamp(event.detected_at)
        has_snapshot = await self.hass.async_add_executor_job(self._write_snapshots, event)
        record = AlertRecord(
            match_id=event.match_id,
            tier=event.tier,
            person_id=event.person_id,
            reference=person.reference if person else event.person_id,
            display_name=person.display_name if person else None,
            similarity=event.similarity,
            camera_id=event.camera,
            camera_name=camera_name,
            detected_at=detected_at.isoformat(),
            track_id=event.track_id,
            has_snapshot=has_snapshot,
        )
        self.log.add_alert(record)
        self._last_detection = event.detected_at
        if self.outbox is not None:
            payload = {
                "id": event.match_id,
                "person_id": event.person_id,
                "camera": camera_name,
                "tier": event.tier,
                "similarity": event.similarity,
                "detected_at": detected_at.isoformat(),
                "snapshot_jpeg_b64": base64.b64encode(event.face_jpeg).decode()
                if event.face_jpeg
                else None,
            }
            try:
                await self.outbox.async_enqueue_alert(payload)
            except UprFacesError as err:
                _LOGGER.error(
                    "Alert %s could not be queued for the registry: %s", event.match_id, err
                )
        self.hass.bus.async_fire(EVENT_MATCH, self.event_data(record))
        await self.async_audit(
            "alert",
            None,
            match_id=record.match_id,
            tier=record.tier,
            person_id=record.person_id,
            camera=camera_name,
            similarity=record.similarity,
        )
        async_dispatcher_send(self.hass, SIGNAL_ALERT.format(self.config_entry.entry_id), record)
        self._publish()

    def event_data(self, record: AlertRecord) -> dict[str, Any]:
        """The payload of a ``upr_match`` event, with short-lived signed image URLs."""
        from homeassistant.components.http.auth import async_sign_path

        from .views import registry_photo_path, snapshot_path

        camera_entity_id = self.camera_entity_id(record.camera_id)
        return {
            "match_id": record.match_id,
            "tier": record.tier,
            "person_id": record.person_id,
            "reference": record.reference,
            "display_name": record.display_name,
            "similarity": record.similarity,
            "camera_entity_id": camera_entity_id,
            "camera_name": record.camera_name,
            "detected_at": record.detected_at,
            "snapshot_url": async_sign_path(
                self.hass,
                snapshot_path(self.config_entry.entry_id, record.match_id, "face"),
                SIGNED_URL_EXPIRY,
            )
            if record.has_snapshot
            else None,
            "registry_photo_url": async_sign_path(
                self.hass,
                registry_photo_path(self.config_entry.entry_id, record.person_id),
                SIGNED_URL_EXPIRY,
            ),
        }

    def camera_entity_id(self, camera_id: str) -> str | None:
        """The entity id of a camera's live view."""
        from homeassistant.helpers import entity_registry as er

        return er.async_get(self.hass).async_get_entity_id(
            "camera", DOMAIN, f"{self.config_entry.entry_id}_{camera_id}_live"
        )

    async def async_verdict(
        self,
        match_id: str,
        verdict: str,
        *,
        user_id: str | None,
        user_name: str | None,
        comment: str | None,
    ) -> AlertRecord:
        """Confirm or reject an alert; the verdict goes to the registry and the audit."""
        record = self.log.alerts.get(match_id)
        if record is None:
            raise ServiceValidationError(
                translation_domain=DOMAIN,
                translation_key="unknown_match",
                translation_placeholders={"match_id": match_id},
            )
        if record.state != "pending":
            raise ServiceValidationError(
                translation_domain=DOMAIN,
                translation_key="already_decided",
                translation_placeholders={"match_id": match_id, "verdict": record.state},
            )
        now = dt_util.utcnow().isoformat()
        record.state = "confirmed" if verdict == "confirmed" else "rejected"
        record.decided_by = user_id
        record.decided_by_name = user_name
        record.decided_at = now
        record.comment = comment
        if record.state == "rejected" and self.pipeline is not None:
            self.pipeline.reject(record.camera_id, record.track_id, record.person_id)
        if self.outbox is not None:
            await self.outbox.async_enqueue_verdict(
                match_id,
                {
                    "verdict": record.state,
                    "by": user_name or user_id or "unknown",
                    "comment": comment,
                    "at": now,
                },
            )
        await self.async_audit(
            record.state,
            user_id,
            user_name=user_name,
            match_id=match_id,
            person_id=record.person_id,
            camera=record.camera_name,
            comment=comment,
        )
        await self.log.async_save()
        async_dispatcher_send(self.hass, SIGNAL_ALERT.format(self.config_entry.entry_id), record)
        self._publish()
        return record

    async def async_audit(
        self, action: str, user_id: str | None, *, user_name: str | None = None, **details: Any
    ) -> None:
        """Record an action in the audit trail and the logbook."""
        if user_id and user_name is None:
            user = await self.hass.auth.async_get_user(user_id)
            user_name = user.name if user else None
        self.log.add_audit(action, user_id=user_id, user_name=user_name, **details)
        self.hass.bus.async_fire(
            EVENT_AUDIT,
            {
                "entry_id": self.config_entry.entry_id,
                "action": action,
                "user_name": user_name,
                **details,
            },
            context=Context(user_id=user_id),
        )

    # ------------------------------------------------------------------ gallery

    async def async_refresh_gallery(self) -> None:
        """Sync the registry (or re-read the folder) now and swap the gallery in."""
        try:
            if self.sync is not None:
                await self.sync.sync()
                self._gallery = self.sync.gallery
                self._registry_up()
            else:
                await self._async_load_folder()
        except UprAuthError as err:
            self.config_entry.async_start_reauth(self.hass)
            raise HomeAssistantError(
                translation_domain=DOMAIN, translation_key="registry_auth_failed"
            ) from err
        except UprFacesError as err:
            self._registry_failed()
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="cannot_connect",
                translation_placeholders={"error": str(err)},
            ) from err
        if self.pipeline is not None:
            self.pipeline.set_gallery(self._gallery)
        self._publish()

    async def _async_periodic_sync(self, _now: datetime) -> None:
        # failures are logged once by _registry_failed, or start a reauth
        with contextlib.suppress(HomeAssistantError):
            await self.async_refresh_gallery()

    def _registry_up(self) -> None:
        if self._registry_down_since is not None:
            _LOGGER.info("UPR registry reachable again")
        self._registry_down_since = None
        ir.async_delete_issue(
            self.hass, DOMAIN, f"registry_unreachable_{self.config_entry.entry_id}"
        )

    def _registry_failed(self) -> None:
        if self._registry_down_since is None:
            _LOGGER.warning("UPR registry unreachable; matching goes on with the last gallery")
            self._registry_down_since = time.time()

    # ------------------------------------------------------------------ publish

    def _on_outbox_threadsafe(self, _pending: int) -> None:
        self.hass.loop.call_soon_threadsafe(self._publish)

    @callback
    def _publish(self) -> None:
        self.async_set_updated_data(self._snapshot())

    def _snapshot(self) -> HubData:
        now = time.time()
        fresh = float(self.options[CONF_COOLDOWN])
        cameras: dict[str, CameraData] = {}
        pipeline = self.pipeline
        for camera_id, sub in camera_subentries(self.config_entry).items():
            worker = pipeline.camera(camera_id) if pipeline else None
            monitoring = worker is not None
            state = str(worker.source.state) if worker else "stopped"
            reason = getattr(worker.source, "reason", None) if worker else None
            last = self.log.latest_for(camera_id)
            match = self.log.latest_for(camera_id, "match")
            probable = self.log.latest_for(camera_id, "probable")
            cameras[camera_id] = CameraData(
                camera_id=camera_id,
                name=sub.title,
                monitoring=monitoring,
                state=state,
                reason=reason,
                faces=len(worker.faces) if worker else 0,
                last_match=replace(last) if last else None,
                match_fresh=_is_fresh(match, now, fresh),
                probable_fresh=_is_fresh(probable, now, fresh),
            )
            if worker and worker.last_detection_at:
                self._last_detection = max(self._last_detection or 0.0, worker.last_detection_at)
        gallery = self._gallery
        synced = gallery.synced_at if gallery else None
        return HubData(
            cameras=cameras,
            gallery_size=gallery.matchable_count if gallery else 0,
            last_sync=dt_util.utc_from_timestamp(synced) if synced else None,
            pending_alerts=self.log.pending(),
            outbox_pending=self.outbox.pending if self.outbox else 0,
            last_detection=dt_util.utc_from_timestamp(self._last_detection)
            if self._last_detection
            else None,
            registry_reachable=None if not self.registry else self._registry_down_since is None,
        )

    async def _async_tick(self, _now: datetime) -> None:
        snapshot = self._snapshot()
        if snapshot != self.data:
            self.async_set_updated_data(snapshot)
        self._check_repairs(snapshot)
        dropped = self.log.expire(timedelta(days=float(self.options[CONF_RETENTION_DAYS])))
        if dropped:
            await self.hass.async_add_executor_job(self._remove_snapshots, dropped)

    def _remove_snapshots(self, match_ids: list[str]) -> None:
        for match_id in match_ids:
            for kind in SNAPSHOT_KINDS:
                self.snapshot_path(match_id, kind).unlink(missing_ok=True)

    def _warn(self, issue_id: str, key: str, placeholders: dict[str, str]) -> None:
        """Raise (or refresh) a repair issue an admin can act on."""
        ir.async_create_issue(
            self.hass,
            DOMAIN,
            issue_id,
            is_fixable=False,
            severity=ir.IssueSeverity.WARNING,
            translation_key=key,
            translation_placeholders=placeholders,
        )

    def _check_repairs(self, data: HubData) -> None:
        now = time.time()
        entry_id = self.config_entry.entry_id
        for camera_id, camera in data.cameras.items():
            issue_id = f"camera_offline_{camera_id}"
            if camera.monitoring and camera.state == "offline":
                since = self._offline_since.setdefault(camera_id, now)
                if now - since >= CAMERA_OFFLINE_REPAIR_AFTER.total_seconds():
                    self._warn(
                        issue_id,
                        "camera_offline",
                        {
                            "camera": camera.name,
                            "reason": mask_url(camera.reason or "-"),
                            "since": dt_util.utc_from_timestamp(since).isoformat(),
                        },
                    )
            elif self._offline_since.pop(camera_id, None) is not None:
                ir.async_delete_issue(self.hass, DOMAIN, issue_id)
        if not self.registry:
            return
        down = self._registry_down_since
        if down is not None and now - down >= REGISTRY_DOWN_REPAIR_AFTER.total_seconds():
            self._warn(
                f"registry_unreachable_{entry_id}",
                "registry_unreachable",
                {
                    "url": self.client.base_url if self.client else "-",
                    "since": dt_util.utc_from_timestamp(down).isoformat(),
                },
            )
        stale_issue = f"gallery_stale_{entry_id}"
        synced = data.last_sync
        if synced is None or dt_util.utcnow() - synced >= REGISTRY_DOWN_REPAIR_AFTER:
            self._warn(
                stale_issue, "gallery_stale", {"since": synced.isoformat() if synced else "-"}
            )
        else:
            ir.async_delete_issue(self.hass, DOMAIN, stale_issue)

    async def _async_update_data(self) -> HubData:
        return self._snapshot()


def _is_fresh(record: AlertRecord | None, now: float, window: float) -> bool:
    if record is None:
        return False
    when = dt_util.parse_datetime(record.detected_at)
    return when is not None and now - when.timestamp() < window
