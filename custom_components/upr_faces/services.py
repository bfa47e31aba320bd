"""Services: confirm or reject an alert (any user), scan USB cameras, export the audit,
refresh the gallery (admins: see permissions.py)."""

from __future__ import annotations

from typing import Any

from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant, ServiceCall, ServiceResponse, SupportsResponse
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers import config_validation as cv
from homeassistant.util import dt as dt_util

from .client import EngineError
from .const import DOMAIN
from .coordinator import UprFacesConfigEntry, UprFacesCoordinator
from .data import Alert
from .permissions import async_require_admin
from .validation import vol

ATTR_MATCH_ID = "match_id"
ATTR_COMMENT = "comment"
ATTR_CONFIG_ENTRY_ID = "config_entry_id"
ATTR_SINCE = "since"

VERDICT_SCHEMA = vol.Schema(
    {
        vol.Required(ATTR_MATCH_ID): cv.string,
        vol.Optional(ATTR_COMMENT): vol.All(cv.string, vol.Length(max=2000)),
    }
)
ENTRY_SCHEMA = vol.Schema({vol.Required(ATTR_CONFIG_ENTRY_ID): cv.string})
AUDIT_SCHEMA = ENTRY_SCHEMA.extend({vol.Optional(ATTR_SINCE): cv.datetime})


class UnknownMatchError(ServiceValidationError, vol.Invalid):
    """No engine knows the alert: a translated validation error that is also invalid
    input to Home Assistant's REST API, which answers it with 400 (other errors: 500)."""


def _loaded_entries(hass: HomeAssistant) -> list[UprFacesConfigEntry]:
    return [
        entry
        for entry in hass.config_entries.async_entries(DOMAIN)
        if entry.state is ConfigEntryState.LOADED
    ]


def _coordinator(hass: HomeAssistant, entry_id: str) -> UprFacesCoordinator:
    entry = hass.config_entries.async_get_entry(entry_id)
    if entry is None or entry.domain != DOMAIN or entry.state is not ConfigEntryState.LOADED:
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="entry_not_loaded",
            translation_placeholders={"entry_id": entry_id},
        )
    coordinator: UprFacesCoordinator = entry.runtime_data
    return coordinator


async def async_owner(hass: HomeAssistant, match_id: str) -> UprFacesCoordinator:
    """The entry whose engine has the alert."""
    for entry in _loaded_entries(hass):
        coordinator: UprFacesCoordinator = entry.runtime_data
        try:
            if await coordinator.client.alert(match_id) is not None:
                return coordinator
        except EngineError:
            continue  # an engine that is down has none of the alerts one can decide now
    raise UnknownMatchError(
        translation_domain=DOMAIN,
        translation_key="unknown_match",
        translation_placeholders={"match_id": match_id},
    )


async def _verdict(call: ServiceCall, verdict: str) -> ServiceResponse:
    match_id = call.data[ATTR_MATCH_ID]
    coordinator = await async_owner(call.hass, match_id)
    user_id = call.context.user_id
    user = await call.hass.auth.async_get_user(user_id) if user_id else None
    record = await coordinator.async_verdict(
        match_id,
        verdict,
        user_id=user_id,
        user_name=user.name if user else None,
        comment=call.data.get(ATTR_COMMENT),
    )
    return {"match_id": record.match_id, "state": record.state} if call.return_response else None


async def _confirm(call: ServiceCall) -> ServiceResponse:
    return await _verdict(call, "confirmed")


async def _reject(call: ServiceCall) -> ServiceResponse:
    return await _verdict(call, "rejected")


async def _scan_usb(call: ServiceCall) -> ServiceResponse:
    await async_require_admin(call.hass, call.context)
    coordinator = _coordinator(call.hass, call.data[ATTR_CONFIG_ENTRY_ID])
    found: list[Any] = await coordinator.async_scan_usb(call.context.user_id)
    return {"cameras": found}


async def _export_audit(call: ServiceCall) -> ServiceResponse:
    await async_require_admin(call.hass, call.context)
    coordinator = _coordinator(call.hass, call.data[ATTR_CONFIG_ENTRY_ID])
    since = call.data.get(ATTR_SINCE)
    try:
        # the UI's datetime selector gives a naive time: Home Assistant's time zone
        entries: list[Any] = await coordinator.client.audit(
            dt_util.as_utc(since).timestamp() if since is not None else None
        )
        alerts: list[Any] = [
            Alert.from_engine(item).as_dict() for item in await coordinator.client.alerts(5000)
        ]
    except EngineError as err:
        raise HomeAssistantError(
            translation_domain=DOMAIN,
            translation_key="engine_unreachable",
            translation_placeholders={"url": coordinator.client.url},
        ) from err
    return {"audit": entries, "alerts": alerts}


async def _refresh(call: ServiceCall) -> None:
    await async_require_admin(call.hass, call.context)
    coordinator = _coordinator(call.hass, call.data[ATTR_CONFIG_ENTRY_ID])
    await coordinator.async_refresh_gallery()


def async_setup_services(hass: HomeAssistant) -> None:
    """Register the services once, for every entry."""
    hass.services.async_register(
        DOMAIN, "confirm_match", _confirm, VERDICT_SCHEMA, SupportsResponse.OPTIONAL
    )
    hass.services.async_register(
        DOMAIN, "reject_match", _reject, VERDICT_SCHEMA, SupportsResponse.OPTIONAL
    )
    hass.services.async_register(
        DOMAIN, "scan_usb_cameras", _scan_usb, ENTRY_SCHEMA, SupportsResponse.ONLY
    )
    hass.services.async_register(
        DOMAIN, "export_audit", _export_audit, AUDIT_SCHEMA, SupportsResponse.ONLY
    )
    hass.services.async_register(DOMAIN, "refresh_gallery", _refresh, ENTRY_SCHEMA)
