"""Switches: start or stop watching a camera."""

from __future__ import annotations

from typing import Any

from homeassistant.components.switch import SwitchEntity
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .coordinator import UprFacesConfigEntry, UprFacesCoordinator
from .entity import UprFacesCameraEntity, add_camera_entities
from .permissions import async_require_admin

PARALLEL_UPDATES = 1


async def async_setup_entry(
    hass: HomeAssistant,
    entry: UprFacesConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """One monitoring switch per camera."""
    add_camera_entities(
        entry, async_add_entities, lambda coord, cid: [MonitoringSwitch(coord, cid)]
    )


class MonitoringSwitch(UprFacesCameraEntity, SwitchEntity):
    """On while the camera is watched; its state survives restarts."""

    _attr_translation_key = "monitoring"

    def __init__(self, coordinator: UprFacesCoordinator, camera_id: str) -> None:
        super().__init__(coordinator, camera_id, "monitoring")

    @property
    def is_on(self) -> bool | None:
        """Whether the camera is watched."""
        camera = self.camera
        return camera.monitoring if camera else None

    async def async_turn_on(self, **kwargs: Any) -> None:
        """Start watching (admins only; audited with the user)."""
        await async_require_admin(self.hass, self._context)
        await self.coordinator.async_set_monitoring(self.camera_id, True, self._context_user())

    async def async_turn_off(self, **kwargs: Any) -> None:
        """Stop watching (admins only; audited with the user)."""
        await async_require_admin(self.hass, self._context)
        await self.coordinator.async_set_monitoring(self.camera_id, False, self._context_user())

    def _context_user(self) -> str | None:
        return self._context.user_id if self._context else None
