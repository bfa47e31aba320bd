"""Sensors: faces in view, last match and threshold advice per camera; health, gallery
and the overall threshold advice on the hub."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from homeassistant.components.sensor import (
    SensorDeviceClass,
    SensorEntity,
    SensorEntityDescription,
    SensorStateClass,
)
from homeassistant.const import EntityCategory
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .coordinator import UprFacesConfigEntry, UprFacesCoordinator
from .data import CameraData, HubData
from .entity import UprFacesCameraEntity, UprFacesHubEntity, add_camera_entities

PARALLEL_UPDATES = 0

type StateType = str | int | float | datetime | None


@dataclass(frozen=True, kw_only=True)
class HubSensorDescription(SensorEntityDescription):
    """A hub sensor and how it reads the hub's data."""

    value_fn: Callable[[HubData], StateType]
    attrs_fn: Callable[[HubData], dict[str, Any] | None] = lambda _data: None


@dataclass(frozen=True, kw_only=True)
class CameraSensorDescription(SensorEntityDescription):
    """A camera sensor and how it reads the camera's data."""

    value_fn: Callable[[CameraData], StateType | datetime]
    attrs_fn: Callable[[CameraData], dict[str, Any] | None] = lambda _cam: None


def _advised(advice: dict[str, Any] | None) -> float | None:
    value = (advice or {}).get("advised")
    return None if value is None else float(value)


def _advice_attrs(advice: dict[str, Any] | None) -> dict[str, Any] | None:
    """How the advice was reached: decisions counted, rejections, the setting and the false
    share at it, the target and the minimum count (no person in it)."""
    if not advice:
        return None
    keys = ("decisions", "rejected", "minimum", "threshold", "false_share", "target")
    return {key: advice.get(key) for key in keys}


def _last_match_attrs(cam: CameraData) -> dict[str, Any] | None:
    record = cam.last_match
    if record is None:
        return None
    return {
        "match_id": record.match_id,
        "tier": record.tier,
        "person_id": record.person_id,
        "reference": record.reference,
        "display_name": record.display_name,
        "similarity": record.similarity,
        "state": record.state,
    }


# who was seen: shown live, never written to the recorder's history (its purge period is
# not the retention option's)
PERSONAL_ATTRIBUTES: frozenset[str] = frozenset(
    {"match_id", "person_id", "reference", "display_name", "similarity"}
)


HUB_SENSORS: tuple[HubSensorDescription, ...] = (
    HubSensorDescription(
        key="active_streams",
        translation_key="active_streams",
        state_class=SensorStateClass.MEASUREMENT,
        value_fn=lambda data: data.active_streams,
    ),
    HubSensorDescription(
        key="total_cameras",
        translation_key="total_cameras",
        value_fn=lambda data: len(data.cameras),
    ),
    HubSensorDescription(
        key="last_detection",
        translation_key="last_detection",
        device_class=SensorDeviceClass.TIMESTAMP,
        value_fn=lambda data: data.last_detection,
    ),
    HubSensorDescription(
        key="gallery_size",
        translation_key="gallery_size",
        state_class=SensorStateClass.MEASUREMENT,
        value_fn=lambda data: data.gallery_size,
    ),
    HubSensorDescription(
        key="last_gallery_sync",
        translation_key="last_gallery_sync",
        device_class=SensorDeviceClass.TIMESTAMP,
        entity_category=EntityCategory.DIAGNOSTIC,
        value_fn=lambda data: data.last_sync,
    ),
    HubSensorDescription(
        key="pending_alerts",
        translation_key="pending_alerts",
        state_class=SensorStateClass.MEASUREMENT,
        value_fn=lambda data: data.pending_alerts,
    ),
    HubSensorDescription(
        key="outbox_pending",
        translation_key="outbox_pending",
        state_class=SensorStateClass.MEASUREMENT,
        entity_category=EntityCategory.DIAGNOSTIC,
        value_fn=lambda data: data.outbox_pending,
    ),
    HubSensorDescription(
        key="outbox_stuck",
        translation_key="outbox_stuck",
        state_class=SensorStateClass.MEASUREMENT,
        entity_category=EntityCategory.DIAGNOSTIC,
        value_fn=lambda data: data.outbox_stuck,
    ),
    HubSensorDescription(
        key="outbox_stuck_since",
        translation_key="outbox_stuck_since",
        device_class=SensorDeviceClass.TIMESTAMP,
        entity_category=EntityCategory.DIAGNOSTIC,
        value_fn=lambda data: data.outbox_stuck_since,
    ),
    HubSensorDescription(
        key="threshold_advice",
        translation_key="threshold_advice",
        entity_category=EntityCategory.DIAGNOSTIC,
        suggested_display_precision=2,
        value_fn=lambda data: _advised(data.advice),
        attrs_fn=lambda data: _advice_attrs(data.advice),
    ),
)

CAMERA_SENSORS: tuple[CameraSensorDescription, ...] = (
    CameraSensorDescription(
        key="faces_in_view",
        translation_key="faces_in_view",
        state_class=SensorStateClass.MEASUREMENT,
        value_fn=lambda cam: cam.faces,
    ),
    CameraSensorDescription(
        key="last_match",
        translation_key="last_match",
        device_class=SensorDeviceClass.TIMESTAMP,  # when; who is in unrecorded attributes
        value_fn=lambda cam: cam.last_match.detected if cam.last_match else None,
        attrs_fn=_last_match_attrs,
    ),
    CameraSensorDescription(
        key="threshold_advice",
        translation_key="threshold_advice",
        entity_category=EntityCategory.DIAGNOSTIC,
        suggested_display_precision=2,
        value_fn=lambda cam: _advised(cam.advice),
        attrs_fn=lambda cam: _advice_attrs(cam.advice),
    ),
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: UprFacesConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Hub sensors, then the sensors of each camera."""
    coordinator = entry.runtime_data
    async_add_entities(HubSensor(coordinator, desc) for desc in HUB_SENSORS)
    add_camera_entities(
        entry,
        async_add_entities,
        lambda coord, cid: [CameraSensor(coord, cid, desc) for desc in CAMERA_SENSORS],
    )


class HubSensor(UprFacesHubEntity, SensorEntity):
    """A sensor of the hub."""

    entity_description: HubSensorDescription

    def __init__(self, coordinator: UprFacesCoordinator, description: HubSensorDescription) -> None:
        super().__init__(coordinator, description.key)
        self.entity_description = description

    @property
    def native_value(self) -> StateType:
        """The value, from the coordinator's data."""
        return self.entity_description.value_fn(self.coordinator.data)

    @property
    def extra_state_attributes(self) -> dict[str, Any] | None:
        """How the value was reached, where the description says."""
        return self.entity_description.attrs_fn(self.coordinator.data)


class CameraSensor(UprFacesCameraEntity, SensorEntity):
    """A sensor of one camera."""

    entity_description: CameraSensorDescription
    _unrecorded_attributes = PERSONAL_ATTRIBUTES

    def __init__(
        self, coordinator: UprFacesCoordinator, camera_id: str, description: CameraSensorDescription
    ) -> None:
        super().__init__(coordinator, camera_id, description.key)
        self.entity_description = description

    @property
    def native_value(self) -> StateType | datetime:
        """The value, from the coordinator's data."""
        camera = self.camera
        return self.entity_description.value_fn(camera) if camera else None

    @property
    def extra_state_attributes(self) -> dict[str, Any] | None:
        """Details of the last match (never images or embeddings)."""
        camera = self.camera
        return self.entity_description.attrs_fn(camera) if camera else None
