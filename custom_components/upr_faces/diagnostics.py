"""Diagnostics: settings, the engine's info and recent alerts, secrets and people redacted."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from homeassistant.components.diagnostics import async_redact_data
from homeassistant.core import HomeAssistant

from .client import EngineError
from .const import CONF_API_KEY, CONF_ENGINE_TOKEN
from .coordinator import UprFacesConfigEntry, camera_subentries
from .data import Alert

# keys whose values identify people or grant access
TO_REDACT = {
    CONF_API_KEY,
    CONF_ENGINE_TOKEN,
    "token",
    "display_name",
    "reference",
    "person_id",
    "comment",
    "user_name",
    "decided_by_name",
    "decided_by",
    "embedding",
    "snapshot_jpeg_b64",
}


def _without_credentials(url: str) -> str:
    """An address with any user name and password removed."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, "", ""))
    except ValueError:
        return "<invalid>"


async def async_get_config_entry_diagnostics(
    hass: HomeAssistant, entry: UprFacesConfigEntry
) -> dict[str, Any]:
    """What support needs, and nothing that identifies anyone or opens anything."""
    coordinator = entry.runtime_data
    cameras = {}
    engine_cameras = {c["id"]: c for c in coordinator.info.get("cameras", [])}
    for camera_id, sub in camera_subentries(entry).items():
        engine = engine_cameras.get(camera_id, {})
        cameras[camera_id] = {
            "title": sub.title,
            "source": engine.get("source", "<not known to the engine>"),  # masked by the engine
            "overrides": {k: v for k, v in sub.data.items() if k.endswith("threshold")},
            "state": engine.get("state"),
            "stats": engine.get("stats"),
        }
    try:
        recent = [Alert.from_engine(a).as_dict() for a in await coordinator.client.alerts(20)]
    except EngineError as err:
        recent = [{"error": type(err).__name__}]
    info = {key: value for key, value in coordinator.info.items() if key != "cameras"}
    data = dict(entry.data)
    return {
        "entry": {"data": async_redact_data(data, TO_REDACT), "options": dict(entry.options)},
        "engine": {
            "url": _without_credentials(coordinator.client.url),
            "connected": coordinator.connected,
            "info": async_redact_data(info, TO_REDACT),
        },
        "cameras": cameras,
        "recent_alerts": async_redact_data(recent, TO_REDACT),
    }
