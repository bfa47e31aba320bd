"""Shared pieces of the Home Assistant tests: a registry with persons, a clip, entries."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from homeassistant.config_entries import SOURCE_RECONFIGURE, SubentryFlowResult
from homeassistant.core import Event, HomeAssistant
from homeassistant.helpers import config_validation as cv
from homeassistant.helpers import device_registry as dr
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_capture_events

from custom_components.upr_faces.const import (
    CONF_API_KEY,
    CONF_API_URL,
    CONF_COOLDOWN,
    CONF_ENGINE,
    CONF_ENGINE_TOKEN,
    CONF_ENGINE_URL,
    CONF_ENGINE_VERIFY_SSL,
    CONF_GALLERY_DIR,
    CONF_GALLERY_SOURCE,
    CONF_MODEL_DIR,
    CONF_MODEL_PACK,
    CONF_NAME,
    CONF_SOURCE,
    CONF_VERIFY_SSL,
    DEFAULT_OPTIONS,
    DOMAIN,
    ENGINE_REMOTE,
    EVENT_MATCH,
    MODEL_PACK_CUSTOM,
    SOURCE_FOLDER,
    SOURCE_REGISTRY,
    SUBENTRY_CAMERA,
)

from ..service.engine_process import EngineProcess
from ..upr_server import UprServer

SHOWN = ("deepface_C", "deepface_D")

# What Home Assistant logs when an integration uses something deprecated.
DEPRECATION = re.compile(
    r"Detected that custom integration|will stop working|deprecat", re.IGNORECASE
)


def serialize_schema(schema: Any) -> list[dict[str, Any]]:
    """A form's schema as the frontend receives it, on either Home Assistant.

    Home Assistant 2026 validates with probatio (aliased as ``voluptuous``) and
    serialises with its ``to_field_list``; older ones use ``voluptuous_serialize``.
    """
    try:
        import probatio
    except ImportError:
        import voluptuous_serialize

        fields: list[dict[str, Any]] = voluptuous_serialize.convert(
            schema, custom_serializer=cv.custom_serializer
        )
        return fields
    converted: list[dict[str, Any]] = probatio.to_field_list(
        schema, custom_serializer=cv.custom_serializer
    )
    return converted


def camera(source: Path | str, name: str = "Door") -> dict[str, Any]:
    """A camera subentry for a clip (a path) or any source string."""
    text = f"file://{source}" if isinstance(source, Path) else source
    return {
        "data": {CONF_NAME: name, CONF_SOURCE: text},
        "subentry_type": SUBENTRY_CAMERA,
        "title": name,
        "unique_id": text,
    }


def engine_data(engine: EngineProcess) -> dict[str, Any]:
    """What an entry on that engine process holds (an engine "elsewhere")."""
    return {
        CONF_ENGINE: ENGINE_REMOTE,
        CONF_ENGINE_URL: engine.url,
        CONF_ENGINE_TOKEN: engine.token,
        CONF_ENGINE_VERIFY_SSL: True,
    }


def registry_entry(
    registry: UprServer, test_pack: Path, clip: Path, engine: EngineProcess
) -> MockConfigEntry:
    """An entry on the registry, with one camera playing the clip, run by ``engine``."""
    return MockConfigEntry(
        domain=DOMAIN,
        version=2,
        title="UPR registry (127.0.0.1)",
        unique_id=registry.url,
        data={
            **engine_data(engine),
            CONF_GALLERY_SOURCE: SOURCE_REGISTRY,
            CONF_API_URL: registry.url,
            CONF_API_KEY: registry.key,
            CONF_VERIFY_SSL: False,
            CONF_MODEL_PACK: MODEL_PACK_CUSTOM,
            CONF_MODEL_DIR: str(test_pack),
        },
        options={**DEFAULT_OPTIONS, CONF_COOLDOWN: 600},
        subentries_data=[camera(clip)],
    )


async def wait_for(predicate: Any, seconds: float = 30.0) -> None:
    """Let the real threads work until ``predicate()`` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.1)


async def set_up_until_alert(hass: HomeAssistant, entry: MockConfigEntry) -> list[Event]:
    """Add and set up ``entry``, then wait for its first ``upr_match``; the events (the
    list keeps filling)."""
    entry.add_to_hass(hass)
    events = async_capture_events(hass, EVENT_MATCH)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await wait_for(lambda: len(events) >= 1, 40)
    return events


def folder_entry(
    gallery: Path, test_pack: Path, *cameras: dict[str, Any], engine: EngineProcess
) -> MockConfigEntry:
    """An entry on a local gallery folder, run by ``engine``."""
    return MockConfigEntry(
        domain=DOMAIN,
        version=2,
        title="Local gallery",
        unique_id=f"folder:{gallery}",
        data={
            **engine_data(engine),
            CONF_GALLERY_SOURCE: SOURCE_FOLDER,
            CONF_GALLERY_DIR: str(gallery),
            CONF_MODEL_PACK: MODEL_PACK_CUSTOM,
            CONF_MODEL_DIR: str(test_pack),
        },
        options=dict(DEFAULT_OPTIONS),
        subentries_data=list(cameras),
    )


async def start_camera_reconfigure(
    hass: HomeAssistant, entry: MockConfigEntry, subentry_id: str
) -> SubentryFlowResult:
    """Open a camera's reconfigure flow, as the frontend does (the same on both releases)."""
    return await hass.config_entries.subentries.async_init(
        (entry.entry_id, SUBENTRY_CAMERA),
        context={"source": SOURCE_RECONFIGURE, "subentry_id": subentry_id},
    )


def find_device(hass: HomeAssistant, entry_id: str, identifier: str) -> dr.DeviceEntry | None:
    """An entry's device by its upr_faces identifier (the same call on both releases)."""
    registry = dr.async_get(hass)
    for device in dr.async_entries_for_config_entry(registry, entry_id):
        if (DOMAIN, identifier) in device.identifiers:
            return device
    return None
