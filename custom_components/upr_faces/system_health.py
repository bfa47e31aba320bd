"""System health: the engine, streams, cameras, last detection, gallery, registry."""

from __future__ import annotations

from typing import Any

from homeassistant.components import system_health
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant, callback

from .const import DOMAIN


@callback
def async_register(hass: HomeAssistant, register: system_health.SystemHealthRegistration) -> None:
    """Register the info callback."""
    register.async_register_info(system_health_info)


async def system_health_info(hass: HomeAssistant) -> dict[str, Any]:
    """Totals over every loaded entry."""
    coordinators = [
        entry.runtime_data
        for entry in hass.config_entries.async_entries(DOMAIN)
        if entry.state is ConfigEntryState.LOADED
    ]
    data = [c.data for c in coordinators]
    detections = [d.last_detection for d in data if d.last_detection]
    reachable = [d.registry_reachable for d in data if d.registry_reachable is not None]
    versions = sorted({str(c.info.get("version", "?")) for c in coordinators})
    return {
        "engine_reachable": all(c.connected for c in coordinators) if coordinators else "-",
        "engine_version": ", ".join(versions) or "-",
        "analysis_backend": ", ".join(sorted({_backend(c.info) for c in coordinators})) or "-",
        "active_streams": sum(d.active_streams for d in data),
        "total_cameras": sum(len(d.cameras) for d in data),
        "last_detection": max(detections).isoformat() if detections else "-",
        "gallery_size": sum(d.gallery_size for d in data),
        "registry_reachable": all(reachable) if reachable else "-",
    }


def _backend(info: dict[str, Any]) -> str:
    """Where an engine analyses frames, and on which execution providers."""
    backend = str(info.get("analysis_backend") or "local")
    providers = ", ".join(str(p) for p in info.get("providers") or ())
    return f"{backend} ({providers})" if providers else backend
