"""Diagnostics: settings, engine counters and recent alerts, with secrets and people redacted."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from homeassistant.components.diagnostics import async_redact_data
from homeassistant.core import HomeAssistant

from .const import CONF_API_KEY, CONF_API_URL, CONF_SOURCE
from .coordinator import UprFacesConfigEntry, camera_subentries
from .engine.upr_faces_engine.sources import mask_url

# keys whose values identify people or grant access
TO_REDACT = {
    CONF_API_KEY,
    "display_name",
    "reference",
    "person_id",
    "comment",
    "user_name",
    "decided_by_name",
    "embedding",
    "snapshot_jpeg_b64",
}


async def async_get_config_entry_diagnostics(
    hass: HomeAssistant, entry: UprFacesConfigEntry
) -> dict[str, Any]:
    """What support needs, and nothing that identifies anyone or opens anything."""
    coordinator = entry.runtime_data
    data = dict(entry.data)
    if CONF_API_URL in data:
        data[CONF_API_URL] = mask_url(data[CONF_API_URL])
    cameras = {
        camera_id: {
            "title": sub.title,
            "source": mask_url(sub.data.get(CONF_SOURCE, "")),
            "overrides": {k: v for k, v in sub.data.items() if k.endswith("threshold")},
        }
        for camera_id, sub in camera_subentries(entry).items()
    }
    pipeline = coordinator.pipeline
    stats = [asdict(worker.stats()) for worker in pipeline.cameras] if pipeline else []
    gallery = pipeline.gallery if pipeline else None
    hub = coordinator.data
    return {
        "entry": {"data": async_redact_data(data, TO_REDACT), "options": dict(entry.options)},
        "cameras": cameras,
        "pipeline": stats,
        "model": {
            "pack": str(coordinator.pack.folder) if coordinator.pack else None,
            "identity": coordinator.analyzer.model_id if coordinator.analyzer else None,
            "providers": list(coordinator.analyzer.providers) if coordinator.analyzer else [],
        },
        "gallery": {
            "persons": gallery.matchable_count if gallery else 0,
            "references": gallery.reference_count if gallery else 0,
            "last_sync": hub.last_sync.isoformat() if hub.last_sync else None,
            "registry_reachable": hub.registry_reachable,
        },
        "outbox": {
            "pending": coordinator.outbox.pending if coordinator.outbox else 0,
            "rejected": coordinator.outbox.rejected if coordinator.outbox else 0,
        },
        "recent_alerts": async_redact_data(
            [record.as_dict() for record in list(coordinator.log.alerts.values())[-20:]],
            TO_REDACT,
        ),
    }
