"""Image entities: the face crop of each camera's last match."""

from __future__ import annotations

from homeassistant.components.image import ImageEntity
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.util import dt as dt_util

from .client import EngineError
from .coordinator import UprFacesConfigEntry, UprFacesCoordinator
from .entity import UprFacesCameraEntity, add_camera_entities

PARALLEL_UPDATES = 0


async def async_setup_entry(
    hass: HomeAssistant,
    entry: UprFacesConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """One image entity per camera."""
    add_camera_entities(
        entry, async_add_entities, lambda coord, cid: [LastMatchImage(hass, coord, cid)]
    )


class LastMatchImage(UprFacesCameraEntity, ImageEntity):
    """The face of the last alert of this camera."""

    _attr_translation_key = "last_match_face"
    _attr_content_type = "image/jpeg"

    def __init__(
        self, hass: HomeAssistant, coordinator: UprFacesCoordinator, camera_id: str
    ) -> None:
        UprFacesCameraEntity.__init__(self, coordinator, camera_id, "last_match_face")
        ImageEntity.__init__(self, hass)
        self._match_id: str | None = None
        self._update_from_data()

    @callback
    def _handle_coordinator_update(self) -> None:
        self._update_from_data()
        super()._handle_coordinator_update()

    def _update_from_data(self) -> None:
        camera = self.camera
        record = camera.last_match if camera else None
        if record is None or not record.has_images or record.match_id == self._match_id:
            return
        self._match_id = record.match_id
        self._attr_image_last_updated = dt_util.parse_datetime(record.detected_at)

    async def async_image(self) -> bytes | None:
        """The JPEG of the face, from the engine."""
        if self._match_id is None:
            return None
        try:
            return await self.coordinator.client.alert_image(self._match_id, "face")
        except EngineError:
            return None
