"""Camera entities: the live view with face boxes, from frames the pipeline already has."""

from __future__ import annotations

from homeassistant.components.camera import Camera
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .coordinator import UprFacesConfigEntry, UprFacesCoordinator
from .entity import UprFacesCameraEntity, add_camera_entities

PARALLEL_UPDATES = 0
LIVE_FPS = 5


async def async_setup_entry(
    hass: HomeAssistant,
    entry: UprFacesConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """One camera entity per camera."""
    add_camera_entities(entry, async_add_entities, lambda coord, cid: [UprCamera(coord, cid)])


class UprCamera(UprFacesCameraEntity, Camera):
    """The newest annotated frame; Home Assistant serves MJPEG by polling it."""

    _attr_name = None
    _attr_translation_key = "live"
    _attr_frame_interval = 1 / LIVE_FPS

    def __init__(self, coordinator: UprFacesCoordinator, camera_id: str) -> None:
        UprFacesCameraEntity.__init__(self, coordinator, camera_id, "live")
        Camera.__init__(self)

    @property
    def available(self) -> bool:
        """Available while the camera is watched and delivers frames."""
        camera = self.camera
        return super().available and camera is not None and camera.state == "streaming"

    @property
    def is_streaming(self) -> bool:
        """Whether frames arrive."""
        camera = self.camera
        return camera is not None and camera.state == "streaming"

    @property
    def is_on(self) -> bool:
        """On while monitoring."""
        camera = self.camera
        return camera is not None and camera.monitoring

    async def async_camera_image(
        self, width: int | None = None, height: int | None = None
    ) -> bytes | None:
        """The newest frame with face boxes, encoded off the event loop."""
        return await self.hass.async_add_executor_job(
            self.coordinator.camera_jpeg, self.camera_id, width
        )
