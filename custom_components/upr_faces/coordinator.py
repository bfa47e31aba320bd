"""The engine's state and events turned into Home Assistant state, for one config entry.

The engine (``upr-faces serve``: embedded, the add-on, or elsewhere) does all the work and
keeps the alerts, their images and the audit trail. The coordinator pushes the entry's
configuration to it (at set-up, on every change, after every reconnection: the push is
idempotent), follows its event stream from the last event it handled (kept in Home
Assistant's storage, so nothing is missed or handled twice across restarts of either
side), reads its counters every few seconds, and maps all of it to entities, the
``upr_match`` event, the logbook and repair issues. Created without an update interval:
the data is pushed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from homeassistant.config_entries import ConfigEntry, ConfigSubentry
from homeassistant.core import CALLBACK_TYPE, Context, HomeAssistant, callback
from homeassistant.exceptions import (
    ConfigEntryAuthFailed,
    ConfigEntryError,
    ConfigEntryNotReady,
    HomeAssistantError,
)
from homeassistant.helpers import issue_registry as ir
from homeassistant.helpers.dispatcher import async_dispatcher_send
from homeassistant.helpers.event import async_track_time_interval
from homeassistant.helpers.storage import Store
from homeassistant.helpers.update_coordinator import DataUpdateCoordinator, UpdateFailed
from homeassistant.util import dt as dt_util

from .client import (
    EngineApiError,
    EngineAuthError,
    EngineClient,
    EngineConnectionError,
    EngineError,
)
from .const import (
    ANALYZER_OVERLOADED_REPAIR_AFTER,
    CAMERA_OFFLINE_REPAIR_AFTER,
    CONF_API_KEY,
    CONF_API_URL,
    CONF_COOLDOWN,
    CONF_DET_SIZE,
    CONF_DETECTION_FPS,
    CONF_ENGINE,
    CONF_ENGINE_URL,
    CONF_GALLERY_DIR,
    CONF_GALLERY_SOURCE,
    CONF_IDLE_DECODE,
    CONF_LEGACY_IMPORT,
    CONF_MATCH_THRESHOLD,
    CONF_MODEL_DIR,
    CONF_MODEL_PACK,
    CONF_PROBABLE_THRESHOLD,
    CONF_RETENTION_DAYS,
    CONF_RETRY_BACKOFF,
    CONF_SOURCE,
    CONF_USB_MAX,
    CONF_USE_GPU,
    CONF_VERIFY_SSL,
    DEFAULT_OPTIONS,
    DOMAIN,
    ENGINE_API_VERSION,
    ENGINE_DOWN_REPAIR_AFTER,
    ENGINE_EMBEDDED,
    ENGINE_REMOTE,
    EVENT_AUDIT,
    EVENT_MATCH,
    EVENT_SIGHTING,
    IDLE_DECODE_MODES,
    MODEL_PACK_CUSTOM,
    OUTBOX_STUCK_REPAIR_AFTER,
    REGISTRY_DOWN_REPAIR_AFTER,
    SIGNED_URL_EXPIRY,
    SOURCE_REGISTRY,
    STATS_INTERVAL,
    SUBENTRY_CAMERA,
)
from .data import Alert, CameraData, HubData

_LOGGER = logging.getLogger(__name__)

type UprFacesConfigEntry = ConfigEntry[UprFacesCoordinator]

SIGNAL_ALERT = f"{DOMAIN}_alert_{{}}"
"""Dispatched with an :class:`Alert` for every new alert and every verdict of an entry."""
SIGNAL_SEEN = f"{DOMAIN}_seen_{{}}"
"""Dispatched with (event type, :class:`Alert` as one camera saw it) when an incident opens
(``match``, ``probable``), becomes a match (``match``) or is seen again (``sighting``):
what the cameras' event entities fire."""
SIGNAL_CAMERAS = f"{DOMAIN}_cameras_{{}}"
"""Dispatched with the ids of cameras added to an entry (their entities are added)."""

RECONNECT_MAX = 30.0
RECENT_ALERTS = 200
# engine problems that are repair issues of their own, by problem key: the issue id's
# prefix and the codes (each its translation key) that raise it; the others are handled
# in _check_repairs
_PROBLEM_ISSUES: dict[str, tuple[str, frozenset[str]]] = {
    "models": ("model_pack_missing", frozenset({"model_pack_missing", "model_folder_invalid"})),
    "gallery": ("gallery_folder_unreadable", frozenset({"gallery_folder_unreadable"})),
    "storage": ("storage_failed", frozenset({"storage_failed"})),
}


def storage_folder(hass: HomeAssistant, entry_id: str) -> Path:
    """Where an entry keeps its files (the embedded engine's data is ``engine/`` in it)."""
    return Path(hass.config.path(DOMAIN, entry_id))


def models_folder(hass: HomeAssistant) -> Path:
    """Where the previous version downloaded model packs (kept for migration)."""
    return Path(hass.config.path(DOMAIN, "models"))


def camera_subentries(entry: ConfigEntry[Any]) -> dict[str, ConfigSubentry]:
    """The entry's cameras."""
    return {
        sub_id: sub
        for sub_id, sub in entry.subentries.items()
        if sub.subentry_type == SUBENTRY_CAMERA
    }


def engine_config(entry: ConfigEntry[Any]) -> dict[str, Any]:
    """The configuration the engine runs for this entry (docs/engine_api.md)."""
    data = entry.data
    # a non-finite number (stored by an older version) falls back to the default
    options = {**DEFAULT_OPTIONS, **{k: v for k, v in entry.options.items() if _finite(v)}}
    if data.get(CONF_GALLERY_SOURCE) == SOURCE_REGISTRY:
        gallery: dict[str, Any] = {
            "source": "registry",
            "url": data[CONF_API_URL],
            "api_key": data[CONF_API_KEY],
            "verify_ssl": bool(data.get(CONF_VERIFY_SSL, True)),
        }
    else:
        gallery = {"source": "folder", "folder": data[CONF_GALLERY_DIR]}
    pack = data.get(CONF_MODEL_PACK, "buffalo_l")
    models: dict[str, Any] = {"pack": pack}
    if pack == MODEL_PACK_CUSTOM:
        models["folder"] = data[CONF_MODEL_DIR]
    cameras = []
    for camera_id, sub in camera_subentries(entry).items():
        camera: dict[str, Any] = {
            "id": camera_id,
            "name": sub.title,
            "source": sub.data[CONF_SOURCE],
        }
        for key in (CONF_MATCH_THRESHOLD, CONF_PROBABLE_THRESHOLD):
            if sub.data.get(key) is not None and _finite(sub.data[key]):
                camera[key] = float(sub.data[key])
        if sub.data.get(CONF_IDLE_DECODE) in IDLE_DECODE_MODES:
            camera["idle_decode"] = sub.data[CONF_IDLE_DECODE]
        cameras.append(camera)
    return {
        "gallery": gallery,
        "models": models,
        "options": {
            "match_threshold": float(options[CONF_MATCH_THRESHOLD]),
            "probable_threshold": float(options[CONF_PROBABLE_THRESHOLD]),
            "detection_fps": float(options[CONF_DETECTION_FPS]),
            "det_size": int(options[CONF_DET_SIZE]),
            "cooldown": float(options[CONF_COOLDOWN]),
            "usb_max": int(options[CONF_USB_MAX]),
            "retry_backoff": float(options[CONF_RETRY_BACKOFF]),
            "use_gpu": bool(options[CONF_USE_GPU]),
            "retention_days": float(options[CONF_RETENTION_DAYS]),
        },
        "cameras": cameras,
    }


def _finite(value: Any) -> bool:
    return not isinstance(value, float) or math.isfinite(value)


def _analysis_error(stats: Any) -> str | None:
    """Why the camera's frames cannot be analysed (streaming, yet no face ever found), or
    None while they are."""
    if not isinstance(stats, dict) or not stats.get("analysis_failing"):
        return None
    return str(stats.get("analysis_error") or "-")


def _to_minute(when: datetime | None) -> datetime | None:
    """A time at the minute: a sensor that changes at most once a minute (a face in view
    is analysed several times a second; history and the logbook need not know)."""
    return when.replace(second=0, microsecond=0) if when is not None else None


def _time(text: str | None) -> datetime | None:
    return dt_util.parse_datetime(text) if text else None


class UprFacesCoordinator(DataUpdateCoordinator[HubData]):
    """Follows one engine for one entry and publishes its state."""

    config_entry: UprFacesConfigEntry

    def __init__(
        self, hass: HomeAssistant, entry: UprFacesConfigEntry, client: EngineClient
    ) -> None:
        super().__init__(hass, _LOGGER, config_entry=entry, name=DOMAIN)
        self.client = client
        self.connection: tuple[Any, ...] = ()
        self.options: dict[str, Any] = dict(entry.options)
        self.info: dict[str, Any] = {}
        self.cameras_known: set[str] = set(camera_subentries(entry))
        self._latest: dict[str, Alert] = {}
        self._latest_tier: dict[tuple[str, str], Alert] = {}
        self._store: Store[dict[str, Any]] = Store(
            hass, 1, f"{DOMAIN}.{entry.entry_id}.events", private=True
        )
        self._last_id = 0
        self._epoch: str | None = None
        self._events: asyncio.Task[None] | None = None
        self._unsubs: list[CALLBACK_TYPE] = []
        self._connected = False
        self._down_since: float | None = None
        self._offline_since: dict[str, float] = {}
        self._overloaded_since: float | None = None
        self._stopping = False
        self._reconnecting = asyncio.Lock()
        self.data = HubData()

    # ------------------------------------------------------------------ set up

    @property
    def stopped(self) -> bool:
        """Whether the entry was unloaded (the coordinator follows the engine no more)."""
        return self._stopping

    @property
    def connected(self) -> bool:
        """Whether the engine answers now."""
        return self._connected

    async def async_setup(self) -> None:
        """Reach the engine, check its version, push the configuration; or raise the
        ConfigEntry errors that make Home Assistant retry or ask for a new token."""
        try:
            await self._async_first_contact()
        except EngineAuthError as err:
            raise ConfigEntryAuthFailed(
                translation_domain=DOMAIN, translation_key="engine_auth_failed"
            ) from err
        except EngineConnectionError as err:
            raise ConfigEntryNotReady(
                translation_domain=DOMAIN,
                translation_key="engine_unreachable",
                translation_placeholders={"url": self.client.url},
            ) from err
        self._connected = True
        self._publish()

    async def _async_first_contact(self) -> None:
        self.info = await self.client.info()
        self._check_version()
        if self.config_entry.data.get(CONF_LEGACY_IMPORT):
            await self._import_legacy()
        stored = await self._store.async_load() or {}
        events = self.info.get("events") or {}
        if stored.get("epoch") == events.get("epoch"):
            self._last_id = int(stored.get("last_id") or 0)
            self._epoch = stored.get("epoch")
        else:  # a first connection (or a new engine): nothing of its past is news
            self._last_id = int(events.get("last_id") or 0)
            self._epoch = events.get("epoch")
            await self._save_position(now=True)
        try:
            await self.client.put_config(engine_config(self.config_entry))
        except EngineApiError as err:
            _LOGGER.error("The engine refused the configuration: %s", err)
            raise ConfigEntryError(
                translation_domain=DOMAIN,
                translation_key="engine_refused",
                translation_placeholders={"error": err.placeholders.get("field", err.code)},
            ) from err
        self.info = await self.client.info()  # with the models and cameras just applied
        await self._load_alerts()

    def _check_version(self) -> None:
        version = int(self.info.get("api_version") or 0)
        issue = f"engine_version_{self.config_entry.entry_id}"
        if version == ENGINE_API_VERSION:
            ir.async_delete_issue(self.hass, DOMAIN, issue)
            return
        update = "engine" if version < ENGINE_API_VERSION else "integration"
        placeholders = {
            "engine_version": str(self.info.get("version", "?")),
            "engine_api": str(version),
            "integration_api": str(ENGINE_API_VERSION),
        }
        ir.async_create_issue(
            self.hass,
            DOMAIN,
            issue,
            is_fixable=False,
            severity=ir.IssueSeverity.ERROR,
            translation_key=f"update_{update}",
            translation_placeholders=placeholders,
        )
        raise ConfigEntryNotReady(
            translation_domain=DOMAIN,
            translation_key="engine_version",
            translation_placeholders=placeholders,
        )

    async def _import_legacy(self) -> None:
        """Hand the alerts, audit and monitoring flags the previous version kept in Home
        Assistant's storage over to the engine (once), then forget them here."""
        entry = self.config_entry
        legacy: Store[dict[str, Any]] = Store(
            self.hass, 1, f"{DOMAIN}.{entry.entry_id}", private=True
        )
        history = await legacy.async_load() or {}
        try:
            result = await self.client.import_history(
                {
                    "origin": entry.entry_id,
                    "alerts": history.get("alerts", []),
                    "audit": history.get("audit", []),
                    "monitoring": history.get("monitoring", {}),
                }
            )
        except EngineApiError as err:
            raise ConfigEntryNotReady(
                translation_domain=DOMAIN,
                translation_key="engine_refused",
                translation_placeholders={"error": err.code},
            ) from err
        _LOGGER.info(
            "Moved %s alerts and %s audit lines of the previous version into the engine",
            result.get("alerts"),
            result.get("audit"),
        )
        await legacy.async_remove()
        data = {k: v for k, v in entry.data.items() if k != CONF_LEGACY_IMPORT}
        self.hass.config_entries.async_update_entry(entry, data=data)

    async def async_push_config(self) -> dict[str, Any]:
        """Send the entry's configuration (the engine changes only what changed)."""
        try:
            return await self.client.put_config(engine_config(self.config_entry))
        except EngineApiError as err:
            _LOGGER.error("The engine refused the configuration: %s", err)
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="engine_refused",
                translation_placeholders={"error": err.placeholders.get("field", err.code)},
            ) from err
        except EngineConnectionError as err:
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="engine_unreachable",
                translation_placeholders={"url": self.client.url},
            ) from err

    async def _load_alerts(self) -> None:
        alerts = [Alert.from_engine(item) for item in await self.client.alerts(RECENT_ALERTS)]
        self._latest.clear()
        self._latest_tier.clear()
        for alert in reversed(alerts):  # oldest first: the newest stays
            self._remember(alert)

    def _remember(self, alert: Alert) -> None:
        self._latest[alert.camera_id] = alert
        self._latest_tier[(alert.camera_id, alert.tier)] = alert

    async def _save_position(self, *, now: bool = False) -> None:
        data = {"last_id": self._last_id, "epoch": self._epoch}
        if now:
            await self._store.async_save(data)
        else:
            self._store.async_delay_save(lambda: data, 2.0)

    # ------------------------------------------------------------------ run / stop

    @callback
    def async_start(self) -> None:
        """Follow the event stream and read the counters (after the platforms are set up)."""
        self._stopping = False
        self._events = self.config_entry.async_create_background_task(
            self.hass, self._follow_events(), f"{DOMAIN} events {self.config_entry.entry_id}"
        )
        self._unsubs.append(async_track_time_interval(self.hass, self._async_tick, STATS_INTERVAL))

    async def async_stop(self) -> None:
        """Stop following the engine (the engine itself goes on)."""
        self._stopping = True
        for unsub in self._unsubs:
            unsub()
        self._unsubs.clear()
        if self._events is not None:
            self._events.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._events
        await self._save_position(now=True)

    async def _follow_events(self) -> None:
        delay = 1.0
        while not self._stopping:
            try:
                async for event in self.client.events(self._last_id, self._epoch):
                    delay = 1.0
                    await self._handle_event(event.type, event.id, event.data, event.message)
            except EngineAuthError:
                self._went_down("token refused")
                self.config_entry.async_start_reauth(self.hass)
                return
            except EngineConnectionError as err:
                self._went_down(str(err))
            else:
                self._went_down("the event stream ended")
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX)

    async def _handle_event(
        self, kind: str, event_id: int | None, data: dict[str, Any], message: dict[str, Any]
    ) -> None:
        if kind == "hello":
            await self._came_back(message)
            return
        if kind == "gap":
            if message.get("reason") == "reset":
                _LOGGER.warning("The engine's data was reset; following its new event log")
            else:
                _LOGGER.warning(
                    "Events %s to %s of the engine were no longer kept",
                    message.get("from"),
                    message.get("to"),
                )
            return
        if event_id is None or event_id <= self._last_id:
            return
        try:
            if kind == "match":
                sighting = data.get("sighting") if data.get("upgraded") else None
                self._on_alert(
                    Alert.from_engine(data),
                    new=True,
                    upgraded=bool(data.get("upgraded")),
                    sighting=sighting if isinstance(sighting, dict) else None,
                )
            elif kind == "sighting":
                incident, sighting = data.get("incident"), data.get("sighting")
                if isinstance(incident, dict) and isinstance(sighting, dict):
                    self._on_sighting(Alert.from_engine(incident), sighting)
            elif kind == "alert_decided":
                self._on_decided(Alert.from_engine(data))
        except (KeyError, TypeError, ValueError) as err:  # one bad event stops nothing
            _LOGGER.warning("Skipped the engine's event %s (%s): %s", event_id, kind, err)
        if kind in ("camera", "gallery_sync", "problem", "model_pack"):
            self.config_entry.async_create_background_task(
                self.hass, self._async_refresh_info(), f"{DOMAIN} info {self.config_entry.entry_id}"
            )
        self._last_id = event_id
        await self._save_position(now=kind == "match")

    async def _came_back(self, hello: dict[str, Any]) -> None:
        """A (re)connected event stream: the engine may have restarted; push again."""
        epoch = hello.get("epoch")
        if self._epoch is not None and epoch != self._epoch:
            self._last_id = 0  # the engine will replay its new log from the start
        self._epoch = epoch
        if not self._connected:
            await self._reconnect()

    async def _reconnect(self) -> None:
        """Push the configuration, read the state and the alerts, then show entities again."""
        async with self._reconnecting:
            if self._connected:
                return
            try:
                await self.async_push_config()
                self.info = await self.client.info()
                await self._load_alerts()
            except (HomeAssistantError, EngineConnectionError, EngineApiError) as err:
                _LOGGER.debug("Reconnection to the engine not complete: %s", err)
                return
            self._came_up()

    @callback
    def _went_down(self, reason: str) -> None:
        if self._stopping:
            return
        if self._connected:
            _LOGGER.warning(
                "The UPR Faces engine at %s is unreachable (%s)", self.client.url, reason
            )
            self._down_since = time.time()
        self._connected = False
        self.async_set_update_error(UpdateFailed(reason))

    @callback
    def _came_up(self) -> None:
        if self._down_since is not None:
            _LOGGER.info("The UPR Faces engine at %s answers again", self.client.url)
        self._down_since = None
        self._connected = True
        ir.async_delete_issue(self.hass, DOMAIN, f"engine_unreachable_{self.config_entry.entry_id}")
        self._publish()

    # ------------------------------------------------------------------ alerts

    @callback
    def _on_alert(
        self,
        incident: Alert,
        *,
        new: bool,
        upgraded: bool = False,
        sighting: dict[str, Any] | None = None,
    ) -> None:
        """A new incident (``upr_match``), or one that became a match (``upr_match`` again,
        ``upgraded``, told as the camera of the ``sighting`` that upgraded it saw it)."""
        alert = incident.seen_on(sighting) if sighting else incident
        self._remember(alert)
        entry_id = self.config_entry.entry_id
        if new:
            self.hass.bus.async_fire(EVENT_MATCH, {**self.event_data(alert), "upgraded": upgraded})
            self._fire_audit(
                "alert_upgraded" if upgraded else "alert",
                None,
                None,
                match_id=alert.match_id,
                tier=alert.tier,
                person_id=alert.person_id,
                camera=alert.camera_name,
                similarity=alert.similarity,
            )
            if not upgraded:
                pending = int(self.info.get("alerts_pending") or 0) + 1
                self.info = {**self.info, "alerts_pending": pending}
            async_dispatcher_send(self.hass, SIGNAL_SEEN.format(entry_id), alert.tier, alert)
        async_dispatcher_send(self.hass, SIGNAL_ALERT.format(entry_id), incident)
        self._publish()

    @callback
    def _on_sighting(self, incident: Alert, sighting: dict[str, Any]) -> None:
        """An open incident seen again: ``upr_sighting``, the camera's entities, the card."""
        from homeassistant.components.http.auth import async_sign_path

        from .views import snapshot_path

        entry_id = self.config_entry.entry_id
        seen = incident.seen_on(sighting)
        self._remember(seen)
        face = (
            async_sign_path(
                self.hass,
                snapshot_path(entry_id, incident.match_id, f"s{int(sighting['n'])}"),
                SIGNED_URL_EXPIRY,
            )
            if sighting.get("has_face") and incident.state != "rejected"
            else None
        )
        self.hass.bus.async_fire(
            EVENT_SIGHTING,
            {
                **self.event_data(seen),
                "state": incident.state,
                "sighting": int(sighting["n"]),
                "sighting_count": incident.sighting_count,
                "incident_tier": incident.tier,
                "snapshot_url": face,
            },
        )
        async_dispatcher_send(self.hass, SIGNAL_SEEN.format(entry_id), "sighting", seen)
        async_dispatcher_send(self.hass, SIGNAL_ALERT.format(entry_id), incident)
        self._publish()

    @callback
    def _on_decided(self, alert: Alert) -> None:
        """A verdict (here or in another client), or an incident the registry closed."""
        self._apply_decision(alert)
        if alert.state == "closed":  # the engine's pending count changed without us
            self.info = {
                **self.info,
                "alerts_pending": max(0, int(self.info.get("alerts_pending") or 0) - 1),
            }
        async_dispatcher_send(self.hass, SIGNAL_ALERT.format(self.config_entry.entry_id), alert)
        self._publish()

    def _apply_decision(self, decided: Alert) -> None:
        """Every camera's view of this incident takes its verdict."""
        for key, held in list(self._latest.items()):
            if held.match_id == decided.match_id:
                self._latest[key] = held.decided_as(decided)
        for tier_key, held in list(self._latest_tier.items()):
            if held.match_id == decided.match_id:
                self._latest_tier[tier_key] = held.decided_as(decided)

    def event_data(self, alert: Alert) -> dict[str, Any]:
        """The payload of a ``upr_match`` event, with short-lived signed image URLs."""
        from homeassistant.components.http.auth import async_sign_path

        from .views import registry_photo_path, snapshot_path

        entry_id = self.config_entry.entry_id
        return {
            "match_id": alert.match_id,
            "tier": alert.tier,
            "person_id": alert.person_id,
            "reference": alert.reference,
            "display_name": alert.display_name,
            "similarity": alert.similarity,
            "camera_entity_id": self.camera_entity_id(alert.camera_id),
            "camera_name": alert.camera_name,
            "detected_at": alert.detected_at,
            "snapshot_url": async_sign_path(
                self.hass, snapshot_path(entry_id, alert.match_id, "face"), SIGNED_URL_EXPIRY
            )
            if alert.has_images
            else None,
            "registry_photo_url": async_sign_path(
                self.hass, registry_photo_path(entry_id, alert.person_id), SIGNED_URL_EXPIRY
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
    ) -> Alert:
        """Confirm or reject an alert in the engine (registry, audit); the alert after it."""
        try:
            data = await self.client.verdict(
                match_id, verdict, user_id=user_id, user_name=user_name, comment=comment
            )
        except EngineApiError as err:
            from homeassistant.exceptions import ServiceValidationError

            if err.code == "already_decided":
                raise ServiceValidationError(
                    translation_domain=DOMAIN,
                    translation_key="already_decided",
                    translation_placeholders={
                        "match_id": match_id,
                        "verdict": err.placeholders.get("verdict", ""),
                        "by": err.placeholders.get("by", ""),
                    },
                ) from err
            if err.code == "unknown_match":
                raise ServiceValidationError(
                    translation_domain=DOMAIN,
                    translation_key="unknown_match",
                    translation_placeholders={"match_id": match_id},
                ) from err
            if err.code in ("outbox_full", "storage_failed"):  # nothing changed: try again
                raise HomeAssistantError(
                    translation_domain=DOMAIN,
                    translation_key=f"verdict_{err.code}",
                    translation_placeholders={
                        "match_id": match_id,
                        "folder": err.placeholders.get("folder", "-"),
                    },
                ) from err
            raise self._failure(err) from err
        except EngineConnectionError as err:
            raise self._failure(err) from err
        alert = Alert.from_engine(data)
        self._fire_audit(
            alert.state,
            user_id,
            user_name,
            match_id=match_id,
            person_id=alert.person_id,
            camera=alert.camera_name,
            comment=comment,
        )
        self.info = {
            **self.info,
            "alerts_pending": max(0, int(self.info.get("alerts_pending") or 0) - 1),
        }
        self._apply_decision(alert)
        async_dispatcher_send(self.hass, SIGNAL_ALERT.format(self.config_entry.entry_id), alert)
        self._publish()
        return alert

    def _failure(self, err: Exception) -> HomeAssistantError:
        return HomeAssistantError(
            translation_domain=DOMAIN,
            translation_key="engine_unreachable",
            translation_placeholders={"url": self.client.url},
        )

    @callback
    def _fire_audit(
        self, action: str, user_id: str | None, user_name: str | None, **details: Any
    ) -> None:
        """The logbook's line (the audit trail itself is the engine's)."""
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

    async def async_audit_action(self, action: str, user_id: str | None, **details: Any) -> None:
        """Put an action done in Home Assistant (an option change) into the engine's audit
        trail and the logbook."""
        user = await self.hass.auth.async_get_user(user_id) if user_id else None
        name = user.name if user else None
        try:
            await self.client.add_audit(action, details, user_id=user_id, user_name=name)
        except EngineError as err:
            _LOGGER.warning("The engine could not audit %s: %s", action, err)
        self._fire_audit(action, user_id, name, **details)

    # ------------------------------------------------------------------ operations

    async def async_set_monitoring(self, camera_id: str, on: bool, user_id: str | None) -> None:
        """Start or stop watching a camera (remembered and audited by the engine)."""
        user = await self.hass.auth.async_get_user(user_id) if user_id else None
        try:
            await self.client.set_monitoring(
                camera_id, on, user_id=user_id, user_name=user.name if user else None
            )
        except (EngineApiError, EngineConnectionError) as err:
            raise self._failure(err) from err
        sub = self.config_entry.subentries.get(camera_id)
        self._fire_audit(
            "camera_started" if on else "camera_stopped",
            user_id,
            user.name if user else None,
            camera=sub.title if sub else camera_id,
        )
        await self._async_refresh_info()

    async def async_scan_usb(self, user_id: str | None = None) -> list[dict[str, Any]]:
        """The USB cameras of the engine's host."""
        user = await self.hass.auth.async_get_user(user_id) if user_id else None
        try:
            found = await self.client.scan_usb(
                user_id=user_id, user_name=user.name if user else None
            )
        except (EngineApiError, EngineConnectionError) as err:
            raise self._failure(err) from err
        self._fire_audit("usb_scan", user_id, user.name if user else None, found=len(found))
        return found

    async def async_refresh_gallery(self, user_id: str | None = None) -> None:
        """Sync the registry (or re-read the folder) now."""
        user = await self.hass.auth.async_get_user(user_id) if user_id else None
        try:
            outcome = await self.client.refresh_gallery(
                user_id=user_id, user_name=user.name if user else None
            )
        except (EngineApiError, EngineConnectionError) as err:
            raise self._failure(err) from err
        await self._async_refresh_info()
        if not outcome.get("ok", False):
            if outcome.get("code") == "invalid_auth":
                self.config_entry.async_start_reauth(self.hass)
                raise HomeAssistantError(
                    translation_domain=DOMAIN, translation_key="registry_auth_failed"
                )
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="cannot_connect",
                translation_placeholders={
                    "error": str(outcome.get("error") or outcome.get("code"))
                },
            )

    async def async_camera_image(self, camera_id: str, width: int | None) -> bytes | None:
        """The camera's newest frame with its face boxes."""
        try:
            return await self.client.snapshot(camera_id, width)
        except (EngineApiError, EngineConnectionError):
            return None

    @callback
    def async_cameras_changed(self) -> None:
        """The entry's cameras changed: add the entities of new ones."""
        current = set(camera_subentries(self.config_entry))
        added = current - self.cameras_known
        self.cameras_known = current
        if added:
            async_dispatcher_send(
                self.hass, SIGNAL_CAMERAS.format(self.config_entry.entry_id), sorted(added)
            )

    # ------------------------------------------------------------------ publish

    async def _async_refresh_info(self) -> None:
        try:
            self.info = await self.client.info()
        except EngineAuthError:
            self._went_down("token refused")
            return
        except EngineConnectionError as err:
            self._went_down(str(err))
            return
        if not self._connected:
            await self._reconnect()  # the engine answers again: push, then show entities
            return
        self._publish()

    async def _async_tick(self, _now: datetime) -> None:
        await self._async_refresh_info()
        self._check_repairs()

    @callback
    def _publish(self) -> None:
        if self._connected:
            self.async_set_updated_data(self._snapshot())

    def _snapshot(self) -> HubData:
        info = self.info
        engine_cameras = {camera["id"]: camera for camera in info.get("cameras", [])}
        fresh = float({**DEFAULT_OPTIONS, **self.config_entry.options}[CONF_COOLDOWN])
        now = time.time()
        cameras: dict[str, CameraData] = {}
        for camera_id, sub in camera_subentries(self.config_entry).items():
            engine = engine_cameras.get(camera_id, {})
            cameras[camera_id] = CameraData(
                camera_id=camera_id,
                name=sub.title,
                monitoring=bool(engine.get("monitoring", True)),
                state=str(engine.get("state", "stopped")),
                reason=engine.get("reason"),
                faces=int(engine.get("faces") or 0),
                last_match=self._latest.get(camera_id),
                match_fresh=_is_fresh(self._latest_tier.get((camera_id, "match")), now, fresh),
                probable_fresh=_is_fresh(
                    self._latest_tier.get((camera_id, "probable")), now, fresh
                ),
                analysis_error=_analysis_error(engine.get("stats")),
                advice=engine.get("advice"),
            )
        gallery = info.get("gallery") or {}
        outbox = info.get("outbox") or {}
        problems = {p.get("key"): p for p in info.get("problems", [])}
        registry = self.config_entry.data.get(CONF_GALLERY_SOURCE) == SOURCE_REGISTRY
        registry_problem = str((problems.get("registry") or {}).get("code", ""))
        return HubData(
            cameras=cameras,
            gallery_size=int(gallery.get("persons") or 0),
            last_sync=_time(gallery.get("synced_at")),
            pending_alerts=int(info.get("alerts_pending") or 0),
            outbox_pending=int(outbox.get("pending") or 0),
            outbox_stuck=int(outbox.get("stuck") or 0),
            outbox_stuck_since=_time(outbox.get("stuck_since")),
            last_detection=_to_minute(_time(info.get("last_detection"))),
            registry_reachable=None if not registry else registry_problem != "registry_unreachable",
            advice=info.get("advice"),
        )

    def _issue(
        self,
        issue_id: str,
        key: str,
        placeholders: dict[str, str],
        error: bool = False,
        fix: dict[str, str | int | float | None] | None = None,
    ) -> None:
        ir.async_create_issue(
            self.hass,
            DOMAIN,
            issue_id,
            is_fixable=fix is not None,
            data=fix,
            severity=ir.IssueSeverity.ERROR if error else ir.IssueSeverity.WARNING,
            translation_key=key,
            translation_placeholders=placeholders,
        )

    def _check_overload(self, now: float) -> None:
        """A repair issue while the engine's analyzer has not kept up with its cameras for
        a minute (cameras drop samples): never silently."""
        issue_id = f"analyzer_overloaded_{self.config_entry.entry_id}"
        pipeline = self.info.get("pipeline") or {}
        if not pipeline.get("overloaded"):
            self._overloaded_since = None
            ir.async_delete_issue(self.hass, DOMAIN, issue_id)
            return
        since = self._overloaded_since = self._overloaded_since or now
        if now - since >= ANALYZER_OVERLOADED_REPAIR_AFTER.total_seconds():
            self._issue(
                issue_id,
                "analyzer_overloaded",
                {
                    "behind": str(pipeline.get("cameras_behind", "?")),
                    "cameras": str(pipeline.get("cameras", "?")),
                    "workers": str(pipeline.get("workers", "?")),
                },
            )

    def _check_advice(self, camera_id: str, camera: CameraData) -> None:
        """A repair issue, with a fix, while the verdicts advise a match threshold far
        from the camera's; never applied by itself."""
        issue_id = f"threshold_advice_{camera_id}"
        advice = camera.advice or {}
        advised = advice.get("advised")
        if not advice.get("differs") or advised is None:
            ir.async_delete_issue(self.hass, DOMAIN, issue_id)
            return
        share = advice.get("false_share")
        self._issue(
            issue_id,
            "threshold_advice",
            {
                "camera": camera.name,
                "threshold": f"{float(advice['threshold']):.2f}",
                "advised": f"{float(advised):.2f}",
                "decisions": str(advice.get("decisions")),
                "rejected": str(advice.get("rejected")),
                "false_share": "-" if share is None else f"{float(share) * 100:.0f}",
                "target": f"{float(advice.get('target') or 0) * 100:.0f}",
            },
            fix={
                "entry_id": self.config_entry.entry_id,
                "camera_id": camera_id,
                "advised": float(advised),
            },
        )

    def _check_repairs(self) -> None:
        now = time.time()
        entry_id = self.config_entry.entry_id
        down_issue = f"engine_unreachable_{entry_id}"
        if self._down_since is not None:
            if now - self._down_since >= ENGINE_DOWN_REPAIR_AFTER.total_seconds():
                where = self.config_entry.data.get(CONF_ENGINE, ENGINE_EMBEDDED)
                self._issue(
                    down_issue,
                    "engine_unreachable"
                    if where == ENGINE_REMOTE
                    else f"engine_unreachable_{where}",
                    {
                        "url": self.client.url,
                        "since": dt_util.utc_from_timestamp(self._down_since).isoformat(),
                    },
                    error=True,
                )
            return
        data = self.data
        for camera_id, camera in data.cameras.items():
            issue_id = f"camera_offline_{camera_id}"
            if camera.monitoring and camera.state == "offline":
                since = self._offline_since.setdefault(camera_id, now)
                if now - since >= CAMERA_OFFLINE_REPAIR_AFTER.total_seconds():
                    self._issue(
                        issue_id,
                        "camera_offline",
                        {
                            "camera": camera.name,
                            "reason": camera.reason or "-",
                            "since": dt_util.utc_from_timestamp(since).isoformat(),
                        },
                    )
            else:  # also one raised before a reload or a restart
                self._offline_since.pop(camera_id, None)
                ir.async_delete_issue(self.hass, DOMAIN, issue_id)
            analysis_issue = f"camera_analysis_failed_{camera_id}"
            if camera.monitoring and camera.analysis_error is not None:
                self._issue(
                    analysis_issue,
                    "camera_analysis_failed",
                    {"camera": camera.name, "error": camera.analysis_error},
                    error=True,
                )
            else:
                ir.async_delete_issue(self.hass, DOMAIN, analysis_issue)
            self._check_advice(camera_id, camera)
        problems = {p.get("key"): p for p in self.info.get("problems", [])}
        for key, (prefix, codes) in _PROBLEM_ISSUES.items():
            problem = problems.get(key)
            issue_id = f"{prefix}_{entry_id}"
            if problem is not None and problem.get("code") in codes:
                self._issue(
                    issue_id,
                    str(problem["code"]),
                    {k: str(v) for k, v in (problem.get("placeholders") or {}).items()},
                    error=True,
                )
            else:
                ir.async_delete_issue(self.hass, DOMAIN, issue_id)
        self._check_overload(now)
        stuck_issue = f"outbox_stuck_{entry_id}"
        stuck_since = data.outbox_stuck_since
        if (
            data.outbox_stuck
            and stuck_since is not None
            and dt_util.utcnow() - stuck_since >= OUTBOX_STUCK_REPAIR_AFTER
        ):
            self._issue(
                stuck_issue,
                "outbox_stuck",
                {
                    "count": str(data.outbox_stuck),
                    "since": stuck_since.isoformat(),
                    "error": str((self.info.get("outbox") or {}).get("stuck_error") or "-"),
                },
            )
        else:
            ir.async_delete_issue(self.hass, DOMAIN, stuck_issue)
        registry = problems.get("registry")
        registry_issue = f"registry_unreachable_{entry_id}"
        if registry is not None and registry.get("code") == "registry_auth_failed":
            self.config_entry.async_start_reauth(self.hass)
        down_since = _time(registry.get("since")) if registry else None
        if (
            registry is not None
            and registry.get("code") == "registry_unreachable"
            and down_since is not None
            and dt_util.utcnow() - down_since >= REGISTRY_DOWN_REPAIR_AFTER
        ):
            self._issue(
                registry_issue,
                "registry_unreachable",
                {
                    "url": str(self.config_entry.data.get(CONF_API_URL, "-")),
                    "since": down_since.isoformat(),
                },
            )
        else:
            ir.async_delete_issue(self.hass, DOMAIN, registry_issue)
        if self.config_entry.data.get(CONF_GALLERY_SOURCE) != SOURCE_REGISTRY:
            return
        stale_issue = f"gallery_stale_{entry_id}"
        synced = data.last_sync
        if synced is None or dt_util.utcnow() - synced >= REGISTRY_DOWN_REPAIR_AFTER:
            self._issue(
                stale_issue, "gallery_stale", {"since": synced.isoformat() if synced else "-"}
            )
        else:
            ir.async_delete_issue(self.hass, DOMAIN, stale_issue)

    async def _async_update_data(self) -> HubData:
        await self._async_refresh_info()
        if not self._connected:
            raise UpdateFailed("the engine is unreachable")
        return self._snapshot()


def _is_fresh(alert: Alert | None, now: float, window: float) -> bool:
    if alert is None:
        return False
    when = alert.detected
    return when is not None and now - when.timestamp() < window


def engine_url_of(entry: ConfigEntry[Any]) -> str | None:
    """The engine's address as configured (None for the embedded one: it is chosen at start)."""
    url = entry.data.get(CONF_ENGINE_URL)
    return str(url) if url else None
