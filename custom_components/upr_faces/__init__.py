"""UPR Faces: real-time face recognition on many cameras against the UPR registry.

The integration is a thin client of the UPR Faces engine (``upr-faces serve``), which
does all the work: embedded as a child process of Home Assistant, the UPR Faces add-on, or
an engine on another machine. Nothing heavy is imported here.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from homeassistant.components import frontend

# Home Assistant 2026 defines it in http.server and re-exports it from http
from homeassistant.components.http import (  # type: ignore[attr-defined, unused-ignore]
    StaticPathConfig,
)
from homeassistant.const import Platform
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ConfigEntryNotReady, HomeAssistantError
from homeassistant.helpers import config_validation as cv
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.helpers.storage import Store
from homeassistant.helpers.typing import ConfigType

from . import websocket_api
from .client import EngineClient
from .const import (
    CONF_ENGINE,
    CONF_ENGINE_TOKEN,
    CONF_ENGINE_URL,
    CONF_ENGINE_VERIFY_SSL,
    DOMAIN,
    ENGINE_EMBEDDED,
)
from .coordinator import UprFacesConfigEntry, UprFacesCoordinator, storage_folder
from .devices import async_register_devices, is_configured_device
from .embedded import (
    EngineSetupError,
    async_stop_engine,
    engine_key,
    get_engine,
    is_installed,
    remove_environment,
    start_install,
)
from .migrate import async_migrate_entry
from .notify_actions import async_setup_notification_actions
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
_LOGGER = logging.getLogger(__name__)

FRONTEND_URL = "/upr_faces_static"
CARD_URL = f"{FRONTEND_URL}/upr-alerts-card.js"

__all__ = ["async_migrate_entry"]


async def async_setup(hass: HomeAssistant, config: ConfigType) -> bool:
    """Register the services, the image views, the websocket feed and the alert card."""
    async_setup_services(hass)
    async_setup_notification_actions(hass)
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


def connection(entry: UprFacesConfigEntry) -> tuple[Any, ...]:
    """What, when it changes, needs the entry set up again (the engine it talks to)."""
    data = entry.data
    return (
        data.get(CONF_ENGINE, ENGINE_EMBEDDED),
        data.get(CONF_ENGINE_URL),
        data.get(CONF_ENGINE_TOKEN),
        data.get(CONF_ENGINE_VERIFY_SSL, True),
    )


async def _async_client(hass: HomeAssistant, entry: UprFacesConfigEntry) -> EngineClient:
    """A client of the entry's engine; the embedded one is started (installed first)."""
    data = entry.data
    if data.get(CONF_ENGINE, ENGINE_EMBEDDED) != ENGINE_EMBEDDED:
        verify = bool(data.get(CONF_ENGINE_VERIFY_SSL, True))
        return EngineClient(
            async_get_clientsession(hass, verify_ssl=verify),
            data[CONF_ENGINE_URL],
            data[CONF_ENGINE_TOKEN],
            verify_ssl=verify,
        )
    if not await hass.async_add_executor_job(is_installed, hass):
        start_install(hass)  # in the background; the set-up is retried meanwhile
        raise ConfigEntryNotReady(translation_domain=DOMAIN, translation_key="engine_installing")
    engine = get_engine(hass, engine_key(entry))
    try:
        url = await engine.async_start()
    except EngineSetupError as err:
        raise ConfigEntryNotReady(
            translation_domain=DOMAIN,
            translation_key=err.key,
            translation_placeholders={"detail": err.detail or err.key},
        ) from err
    token = await hass.async_add_executor_job(engine.token)
    client = EngineClient(async_get_clientsession(hass), url, token)

    def moved(new_url: str) -> None:
        client.url = new_url

    entry.async_on_unload(engine.on_url(moved))
    return client


async def async_setup_entry(hass: HomeAssistant, entry: UprFacesConfigEntry) -> bool:
    """Reach the engine, push the configuration, set up the devices and platforms."""
    client = await _async_client(hass, entry)
    coordinator = UprFacesCoordinator(hass, entry, client)
    await coordinator.async_setup()
    coordinator.connection = connection(entry)
    entry.runtime_data = coordinator
    await async_register_devices(hass, entry, coordinator.info)
    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)
    coordinator.async_start()
    entry.async_on_unload(entry.add_update_listener(_async_entry_updated))
    return True


async def _async_entry_updated(hass: HomeAssistant, entry: UprFacesConfigEntry) -> None:
    """Options, cameras or the gallery changed: push them; another engine: set up again.

    The engine restarts only what changed (a camera, the gallery): a camera added, changed
    or removed never restarts the others, and Home Assistant reloads nothing.
    """
    coordinator = entry.runtime_data
    if connection(entry) != coordinator.connection:
        await hass.config_entries.async_reload(entry.entry_id)
        return
    changed = {
        key: value for key, value in entry.options.items() if coordinator.options.get(key) != value
    }
    if changed:
        await coordinator.async_audit_action("options_changed", None, **changed)
    coordinator.options = dict(entry.options)
    try:
        await coordinator.async_push_config()
    except HomeAssistantError as err:
        # pushed again as soon as the engine answers (every reconnection pushes)
        _LOGGER.warning("The new settings of %s wait for the engine: %s", entry.title, err)
    if coordinator.stopped:  # unloaded meanwhile
        return
    await coordinator.async_request_refresh()
    await async_register_devices(hass, entry, coordinator.info)
    coordinator.async_cameras_changed()


async def async_unload_entry(hass: HomeAssistant, entry: UprFacesConfigEntry) -> bool:
    """Stop following the engine; an embedded engine stops only when the entry is disabled
    (a reload keeps it running, a removal stops it in :func:`async_remove_entry`)."""
    unloaded = await hass.config_entries.async_unload_platforms(entry, PLATFORMS)
    if unloaded:
        await entry.runtime_data.async_stop()
        if entry.disabled_by is not None:
            await async_stop_engine(hass, engine_key(entry))
    return unloaded


async def async_remove_entry(hass: HomeAssistant, entry: UprFacesConfigEntry) -> None:
    """Stop an embedded engine and delete what the entry kept (its engine's data too; the
    engine's environment with the last entry that used it). An engine elsewhere (or the
    add-on) keeps its own data."""
    await async_stop_engine(hass, engine_key(entry))
    folder = storage_folder(hass, engine_key(entry))
    await hass.async_add_executor_job(lambda: shutil.rmtree(folder, ignore_errors=True))
    for key in (f"{DOMAIN}.{entry.entry_id}.events", f"{DOMAIN}.{entry.entry_id}"):
        await Store[dict[str, object]](hass, 1, key).async_remove()
    others = [
        other
        for other in hass.config_entries.async_entries(DOMAIN)
        if other.entry_id != entry.entry_id
        and other.data.get(CONF_ENGINE, ENGINE_EMBEDDED) == ENGINE_EMBEDDED
    ]
    if not others:  # the last embedded engine is gone: so is its environment
        await hass.async_add_executor_job(remove_environment, hass)


async def async_remove_config_entry_device(
    hass: HomeAssistant, entry: UprFacesConfigEntry, device: dr.DeviceEntry
) -> bool:
    """Let the admin delete a camera device whose camera is gone."""
    return not is_configured_device(entry, device)


__all__ += ["UprFacesCoordinator"]
