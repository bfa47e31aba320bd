"""Buttons of the hub: refresh the gallery, scan USB cameras."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from homeassistant.components.button import ButtonEntity, ButtonEntityDescription
from homeassistant.const import EntityCategory
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .coordinator import UprFacesConfigEntry, UprFacesCoordinator
from .entity import UprFacesHubEntity
from .permissions import async_require_admin

PARALLEL_UPDATES = 1


@dataclass(frozen=True, kw_only=True)
class UprButtonDescription(ButtonEntityDescription):
    """A hub button and what it does."""

    press_fn: Callable[[UprFacesCoordinator], Awaitable[Any]]


BUTTONS: tuple[UprButtonDescription, ...] = (
    UprButtonDescription(
        key="refresh_gallery",
        translation_key="refresh_gallery",
        press_fn=lambda coordinator: coordinator.async_refresh_gallery(),
    ),
    UprButtonDescription(
        key="scan_usb",
        translation_key="scan_usb",
        entity_category=EntityCategory.CONFIG,
        press_fn=lambda coordinator: coordinator.async_scan_usb(),
    ),
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: UprFacesConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """The hub's buttons."""
    coordinator = entry.runtime_data
    async_add_entities(UprButton(coordinator, desc) for desc in BUTTONS)


class UprButton(UprFacesHubEntity, ButtonEntity):
    """A hub button."""

    entity_description: UprButtonDescription

    def __init__(self, coordinator: UprFacesCoordinator, description: UprButtonDescription) -> None:
        super().__init__(coordinator, description.key)
        self.entity_description = description

    async def async_press(self) -> None:
        """Run the action (admins only)."""
        await async_require_admin(self.hass, self._context)
        await self.entity_description.press_fn(self.coordinator)
