"""System health: streams, cameras, last detection, gallery size, registry reachability."""

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
    return {
        "active_streams": sum(d.active_streams for d in data),
        "total_cameras": sum(len(d.cameras) for d in data),
        "last_detection": max(detections).isoformat() if detections else "-",
        "gallery_size": sum(d.gallery_size for d in data),
        "registry_reachable": all(reachable) if reachable else "-",
    }
