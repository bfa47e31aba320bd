"""Camera entities: the engine's live view with face boxes (MJPEG) and its snapshot."""

from __future__ import annotations

from aiohttp import web
from homeassistant.components.camera import Camera
from homeassistant.core import HomeAssistant
from homeassistant.helpers.aiohttp_client import async_aiohttp_proxy_stream
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .client import EngineError
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
    """The engine's annotated frames; nothing is decoded in Home Assistant."""

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
        """The newest frame with face boxes, from the engine."""
        return await self.coordinator.async_camera_image(self.camera_id, width)

    async def handle_async_mjpeg_stream(self, request: web.Request) -> web.StreamResponse | None:
        """The engine's MJPEG live view, passed through as it comes."""
        try:
            stream = await self.coordinator.client.open_stream(self.camera_id, LIVE_FPS)
        except EngineError:
            return await super().handle_async_mjpeg_stream(request)
        try:
            return await async_aiohttp_proxy_stream(
                self.hass, request, stream.content, stream.headers["Content-Type"]
            )
        finally:
            stream.release()
