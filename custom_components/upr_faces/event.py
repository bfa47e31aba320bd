"""Event entities: one per camera, firing `match` or `probable` when an incident opens
there (or becomes a match), and `sighting` when an open incident is seen there again."""

from __future__ import annotations

from homeassistant.components.event import EventEntity
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.dispatcher import async_dispatcher_connect
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .coordinator import SIGNAL_SEEN, UprFacesConfigEntry, UprFacesCoordinator
from .data import Alert
from .entity import UprFacesCameraEntity, add_camera_entities

PARALLEL_UPDATES = 0


async def async_setup_entry(
    hass: HomeAssistant,
    entry: UprFacesConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """One event entity per camera."""
    add_camera_entities(entry, async_add_entities, lambda coord, cid: [UprAlertEvent(coord, cid)])


class UprAlertEvent(UprFacesCameraEntity, EventEntity):
    """Alerts of one camera, for the UI, history and automations."""

    _attr_translation_key = "alert"
    # who was seen stays out of the recorder's history (the upr_match event carries it)
    _unrecorded_attributes = frozenset(
        {"match_id", "person_id", "reference", "similarity", "sighting_count"}
    )

    def __init__(self, coordinator: UprFacesCoordinator, camera_id: str) -> None:
        super().__init__(coordinator, camera_id, "alert")
        self._attr_event_types = ["match", "probable", "sighting"]

    async def async_added_to_hass(self) -> None:
        """Listen to this entry's alerts."""
        await super().async_added_to_hass()
        self.async_on_remove(
            async_dispatcher_connect(
                self.hass,
                SIGNAL_SEEN.format(self.coordinator.config_entry.entry_id),
                self._handle_seen,
            )
        )

    @callback
    def _handle_seen(self, event_type: str, record: Alert) -> None:
        if record.camera_id != self.camera_id or record.state == "rejected":
            return
        self._trigger_event(
            event_type,
            {
                "match_id": record.match_id,
                "person_id": record.person_id,
                "reference": record.reference,
                "similarity": record.similarity,
                "sighting_count": record.sighting_count,
            },
        )
        self.async_write_ha_state()
