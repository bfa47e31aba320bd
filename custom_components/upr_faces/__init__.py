"""UPR Faces: real-time face recognition on many cameras against the UPR registry."""

from __future__ import annotations

import shutil
from pathlib import Path

from homeassistant.components import frontend

# Home Assistant 2026 defines it in http.server and re-exports it from http
from homeassistant.components.http import (  # type: ignore[attr-defined, unused-ignore]
    StaticPathConfig,
)
from homeassistant.const import EVENT_HOMEASSISTANT_STOP, Platform
from homeassistant.core import Event, HomeAssistant
from homeassistant.helpers import config_validation as cv
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers.typing import ConfigType

from . import websocket_api
from .const import DOMAIN
from .coordinator import UprFacesConfigEntry, UprFacesCoordinator, storage_folder
from .devices import async_register_devices, is_configured_device
from .services import async_setup_services
from .views import RegistryPhotoView, SnapshotView

PLATFORMS: list[Platform] = [
    Platform.BINARY_SENSOR,
    Platform.BUTTON,
    Platform.CAMERA,
    Platform.EVENT,
    Platform.IMAGE,
    Platform.SENSOR,
    Platform.SWITCH,
]

CONFIG_SCHEMA = cv.config_entry_only_config_schema(DOMAIN)


FRONTEND_URL = "/upr_faces_static"
CARD_URL = f"{FRONTEND_URL}/upr-alerts-card.js"


async def async_setup(hass: HomeAssistant, config: ConfigType) -> bool:
    """Register the services, the image views, the websocket feed and the alert card."""
    async_setup_services(hass)
    hass.http.register_view(SnapshotView())
    hass.http.register_view(RegistryPhotoView())
    websocket_api.async_register(hass)
    await hass.http.async_register_static_paths(
        [StaticPathConfig(FRONTEND_URL, str(Path(__file__).parent / "frontend"), False)]
    )
    if "frontend" in hass.config.components:
        # the card loads on every dashboard without a manual resource step
        frontend.add_extra_js_url(hass, f"{CARD_URL}?v={_card_version()}")
    return True


def _card_version() -> str:
    """Changes when the card's file does, so browsers fetch the new one."""
    card = Path(__file__).parent / "frontend" / "upr-alerts-card.js"
    return str(int(card.stat().st_mtime)) if card.exists() else "0"


async def async_setup_entry(hass: HomeAssistant, entry: UprFacesConfigEntry) -> bool:
    """Load the models and the gallery, start the cameras and the platforms."""
    coordinator = UprFacesCoordinator(hass, entry)
    try:
        await coordinator.async_setup_engine()
    except Exception:
        await coordinator.async_stop()
        raise
    entry.runtime_data = coordinator
    await async_register_devices(hass, entry)
    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)
    coordinator.async_start()

    async def _stop(_event: Event) -> None:
        await coordinator.async_stop()

    entry.async_on_unload(hass.bus.async_listen_once(EVENT_HOMEASSISTANT_STOP, _stop))
    entry.async_on_unload(entry.add_update_listener(_async_reload))
    return True


async def _async_reload(hass: HomeAssistant, entry: UprFacesConfigEntry) -> None:
    """Options or cameras changed: audit it and start again with the new settings."""
    coordinator = entry.runtime_data
    changed = {
        key: value for key, value in entry.options.items() if coordinator.options.get(key) != value
    }
    if changed:
        await coordinator.async_audit("options_changed", None, **changed)
    await hass.config_entries.async_reload(entry.entry_id)


async def async_unload_entry(hass: HomeAssistant, entry: UprFacesConfigEntry) -> bool:
    """Stop every thread and task of the entry."""
    unloaded = await hass.config_entries.async_unload_platforms(entry, PLATFORMS)
    if unloaded:
        await entry.runtime_data.async_stop()
    return unloaded


async def async_remove_entry(hass: HomeAssistant, entry: UprFacesConfigEntry) -> None:
    """Delete what the entry kept on disk (gallery cache, outbox, snapshots, alert log)."""
    folder = storage_folder(hass, entry.entry_id)
    await hass.async_add_executor_job(lambda: shutil.rmtree(folder, ignore_errors=True))
    from homeassistant.helpers.storage import Store

    await Store[dict[str, object]](hass, 1, f"{DOMAIN}.{entry.entry_id}").async_remove()


async def async_remove_config_entry_device(
    hass: HomeAssistant, entry: UprFacesConfigEntry, device: dr.DeviceEntry
) -> bool:
    """Let the admin delete a camera device whose camera is gone."""
    return not is_configured_device(entry, device)
