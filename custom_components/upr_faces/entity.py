"""Base entities: unique ids, and the link to the hub's or a camera's device."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from homeassistant.core import callback
from homeassistant.helpers.device_registry import DeviceInfo
from homeassistant.helpers.dispatcher import async_dispatcher_connect
from homeassistant.helpers.entity import Entity
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.update_coordinator import CoordinatorEntity

from .coordinator import (
    SIGNAL_CAMERAS,
    UprFacesConfigEntry,
    UprFacesCoordinator,
    camera_subentries,
)
from .data import CameraData
from .devices import camera_identifiers, hub_identifiers


def add_camera_entities(
    entry: UprFacesConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
    make: Callable[[UprFacesCoordinator, str], Iterable[Entity]],
) -> None:
    """Add the entities ``make`` builds for each camera, under that camera's subentry, and
    for every camera added later (without reloading the entry)."""

    @callback
    def add(camera_ids: Iterable[str]) -> None:
        for camera_id in camera_ids:
            if camera_id in entry.subentries:
                async_add_entities(
                    make(entry.runtime_data, camera_id), config_subentry_id=camera_id
                )

    add(camera_subentries(entry))
    entry.async_on_unload(
        async_dispatcher_connect(
            entry.runtime_data.hass, SIGNAL_CAMERAS.format(entry.entry_id), add
        )
    )


class UprFacesHubEntity(CoordinatorEntity[UprFacesCoordinator]):
    """An entity of the hub device."""

    _attr_has_entity_name = True

    def __init__(self, coordinator: UprFacesCoordinator, key: str) -> None:
        super().__init__(coordinator)
        self._attr_unique_id = f"{coordinator.config_entry.entry_id}_{key}"
        # the device itself is registered by devices.async_register_devices
        self._attr_device_info = DeviceInfo(
            identifiers=hub_identifiers(coordinator.config_entry.entry_id)
        )


class UprFacesCameraEntity(CoordinatorEntity[UprFacesCoordinator]):
    """An entity of one camera's device."""

    _attr_has_entity_name = True

    def __init__(self, coordinator: UprFacesCoordinator, camera_id: str, key: str) -> None:
        super().__init__(coordinator)
        entry = coordinator.config_entry
        self.camera_id = camera_id
        self._attr_unique_id = f"{entry.entry_id}_{camera_id}_{key}"
        self._attr_device_info = DeviceInfo(
            identifiers=camera_identifiers(entry.entry_id, camera_id)
        )

    @property
    def camera(self) -> CameraData | None:
        """This camera's part of the coordinator's data."""
        return self.coordinator.data.cameras.get(self.camera_id)
