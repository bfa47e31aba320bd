"""Binary sensors: a fresh match or probable match, and the stream's connectivity."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# Home Assistant 2026 defines the device classes in binary_sensor.const and re-exports them
from homeassistant.components.binary_sensor import (  # type: ignore[attr-defined, unused-ignore]
    BinarySensorDeviceClass,
    BinarySensorEntity,
    BinarySensorEntityDescription,
)
from homeassistant.const import EntityCategory
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .coordinator import UprFacesConfigEntry, UprFacesCoordinator
from .data import CameraData
from .entity import UprFacesCameraEntity, add_camera_entities

PARALLEL_UPDATES = 0


@dataclass(frozen=True, kw_only=True)
class UprBinarySensorDescription(BinarySensorEntityDescription):
    """How a camera binary sensor reads its value."""

    value_fn: Callable[[CameraData], bool]


DESCRIPTIONS: tuple[UprBinarySensorDescription, ...] = (
    UprBinarySensorDescription(
        key="match", translation_key="match", value_fn=lambda cam: cam.match_fresh
    ),
    UprBinarySensorDescription(
        key="probable_match",
        translation_key="probable_match",
        value_fn=lambda cam: cam.probable_fresh,
    ),
    UprBinarySensorDescription(
        key="stream",
        translation_key="stream",
        device_class=BinarySensorDeviceClass.CONNECTIVITY,
        entity_category=EntityCategory.DIAGNOSTIC,
        value_fn=lambda cam: cam.state == "streaming",
    ),
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: UprFacesConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """One set per camera."""
    add_camera_entities(
        entry,
        async_add_entities,
        lambda coord, cid: [UprBinarySensor(coord, cid, desc) for desc in DESCRIPTIONS],
    )


class UprBinarySensor(UprFacesCameraEntity, BinarySensorEntity):
    """A camera binary sensor."""

    entity_description: UprBinarySensorDescription

    def __init__(
        self,
        coordinator: UprFacesCoordinator,
        camera_id: str,
        description: UprBinarySensorDescription,
    ) -> None:
        super().__init__(coordinator, camera_id, description.key)
        self.entity_description = description

    @property
    def is_on(self) -> bool | None:
        """The value, from the coordinator's data."""
        camera = self.camera
        return self.entity_description.value_fn(camera) if camera else None
