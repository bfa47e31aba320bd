"""Base entities: unique ids, one device per camera linked to the hub device."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from homeassistant.helpers.device_registry import DeviceInfo
from homeassistant.helpers.entity import Entity
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.update_coordinator import CoordinatorEntity

from .const import DOMAIN
from .coordinator import CameraData, UprFacesConfigEntry, UprFacesCoordinator, camera_subentries


def add_camera_entities(
    entry: UprFacesConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
    make: Callable[[UprFacesCoordinator, str], Iterable[Entity]],
) -> None:
    """Add the entities ``make`` builds for each camera, under that camera's subentry."""
    for camera_id in camera_subentries(entry):
        async_add_entities(make(entry.runtime_data, camera_id), config_subentry_id=camera_id)


def hub_device(coordinator: UprFacesCoordinator) -> DeviceInfo:
    """The hub device: the gallery, the registry link and the shared analyzer."""
    entry = coordinator.config_entry
    return DeviceInfo(
        identifiers={(DOMAIN, entry.entry_id)},
        translation_key="hub",
        manufacturer="UPR Faces",
        model=coordinator.pack.name if coordinator.pack else None,
        name=entry.title,
    )


class UprFacesHubEntity(CoordinatorEntity[UprFacesCoordinator]):
    """An entity of the hub device."""

    _attr_has_entity_name = True

    def __init__(self, coordinator: UprFacesCoordinator, key: str) -> None:
        super().__init__(coordinator)
        self._attr_unique_id = f"{coordinator.config_entry.entry_id}_{key}"
        self._attr_device_info = hub_device(coordinator)


class UprFacesCameraEntity(CoordinatorEntity[UprFacesCoordinator]):
    """An entity of one camera's device."""

    _attr_has_entity_name = True

    def __init__(self, coordinator: UprFacesCoordinator, camera_id: str, key: str) -> None:
        super().__init__(coordinator)
        entry = coordinator.config_entry
        self.camera_id = camera_id
        self._attr_unique_id = f"{entry.entry_id}_{camera_id}_{key}"
        subentry = entry.subentries[camera_id]
        self._attr_device_info = DeviceInfo(
            identifiers={(DOMAIN, f"{entry.entry_id}_{camera_id}")},
            name=subentry.title,
            manufacturer="UPR Faces",
            model="Camera",
            via_device=(DOMAIN, entry.entry_id),
        )

    @property
    def camera(self) -> CameraData | None:
        """This camera's part of the coordinator's data."""
        return self.coordinator.data.cameras.get(self.camera_id)
