"""The devices of an entry: the hub, one per camera, registered before the platforms.

Entities only link to these devices by identifier, so a camera device always finds its hub
(Home Assistant 2025.12 and later refuse a ``via_device`` that does not exist yet), and
devices of cameras that are gone are removed.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any, Final
from urllib.parse import urlsplit

from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers.device_registry import DeviceInfo
from homeassistant.loader import async_get_integration

from .const import CONF_API_URL, CONF_SOURCE, DOMAIN
from .coordinator import UprFacesConfigEntry, camera_subentries

MANUFACTURER: Final = "UPR Faces"

# Home Assistant 2026 links a device to its hub by the hub's device id; older releases
# take the hub's identifiers (``via_device``), deprecated since.
_LINK_BY_ID: Final = "via_device_id" in DeviceInfo.__optional_keys__


def hub_identifiers(entry_id: str) -> set[tuple[str, str]]:
    """The identifiers of an entry's hub device."""
    return {(DOMAIN, entry_id)}


def camera_identifiers(entry_id: str, camera_id: str) -> set[tuple[str, str]]:
    """The identifiers of a camera's device."""
    return {(DOMAIN, f"{entry_id}_{camera_id}")}


def web_origin(url: str | None) -> str | None:
    """``scheme://host[:port]/`` of an HTTP(S) address, without credentials; else None."""
    if not url:
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}{f':{port}' if port else ''}/"


async def async_register_devices(
    hass: HomeAssistant, entry: UprFacesConfigEntry, info: dict[str, Any]
) -> None:
    """Create or update the hub and camera devices; remove those of removed cameras.

    ``info`` is the engine's (its model pack names the hub's model).
    """
    integration = await async_get_integration(hass, DOMAIN)
    registry = dr.async_get(hass)
    version = str(integration.version) if integration.version else None
    models = info.get("models") or {}
    # the pack's folder name (buffalo_l...; a custom folder's own name)
    pack = PurePosixPath(str(models["folder"])).name if models.get("folder") else models.get("pack")
    hub = registry.async_get_or_create(
        config_entry_id=entry.entry_id,
        identifiers=hub_identifiers(entry.entry_id),
        translation_key="hub",
        manufacturer=MANUFACTURER,
        model=str(pack) if pack else None,
        sw_version=version,
        configuration_url=web_origin(entry.data.get(CONF_API_URL)),
    )
    link: dict[str, Any] = (
        {"via_device_id": hub.id} if _LINK_BY_ID else {"via_device": (DOMAIN, entry.entry_id)}
    )
    wanted = {hub.id}
    for camera_id, subentry in camera_subentries(entry).items():
        device = registry.async_get_or_create(
            config_entry_id=entry.entry_id,
            config_subentry_id=camera_id,
            identifiers=camera_identifiers(entry.entry_id, camera_id),
            name=subentry.title,
            manufacturer=MANUFACTURER,
            model="Camera",
            sw_version=version,
            configuration_url=web_origin(subentry.data.get(CONF_SOURCE)),
            **link,
        )
        wanted.add(device.id)
    for device in dr.async_entries_for_config_entry(registry, entry.entry_id):
        if device.id not in wanted:
            registry.async_remove_device(device.id)


def is_configured_device(entry: UprFacesConfigEntry, device: dr.DeviceEntry) -> bool:
    """Whether a device is the hub or a configured camera (not removable by hand)."""
    wanted = hub_identifiers(entry.entry_id)
    for camera_id in camera_subentries(entry):
        wanted |= camera_identifiers(entry.entry_id, camera_id)
    return bool(device.identifiers & wanted)
