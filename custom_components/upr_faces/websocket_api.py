"""Websocket commands for the alert card: a live feed of alerts with signed image URLs.

Open to every logged-in user (operators need not be admins): ``upr_faces/alerts/subscribe``
answers with a snapshot of recent alerts, then pushes each new alert and each change.
"""

from __future__ import annotations

from typing import Any

from homeassistant.components.http.auth import async_sign_path
from homeassistant.components.websocket_api import async_register_command
from homeassistant.components.websocket_api.connection import ActiveConnection
from homeassistant.components.websocket_api.decorators import async_response, websocket_command
from homeassistant.components.websocket_api.messages import event_message
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.dispatcher import async_dispatcher_connect

from .client import EngineError
from .const import DOMAIN, SIGNED_URL_EXPIRY
from .coordinator import SIGNAL_ALERT, UprFacesConfigEntry
from .data import Alert
from .validation import vol
from .views import registry_photo_path, snapshot_path


@callback
def async_register(hass: HomeAssistant) -> None:
    """Register the commands (once, from ``async_setup``)."""
    async_register_command(hass, ws_subscribe_alerts)


def _entries(hass: HomeAssistant, entry_id: str | None) -> list[UprFacesConfigEntry]:
    return [
        entry
        for entry in hass.config_entries.async_entries(DOMAIN)
        if entry.state is ConfigEntryState.LOADED and entry_id in (None, entry.entry_id)
    ]


def alert_view(hass: HomeAssistant, entry: UprFacesConfigEntry, record: Alert) -> dict[str, Any]:
    """An alert as the card shows it, with image paths signed for a few minutes."""
    coordinator = entry.runtime_data
    entry_id = entry.entry_id

    def sign(path: str) -> str:
        return async_sign_path(hass, path, SIGNED_URL_EXPIRY)

    return {
        **record.as_dict(),
        "entry_id": entry_id,
        "camera_entity_id": coordinator.camera_entity_id(record.camera_id),
        "face_url": sign(snapshot_path(entry_id, record.match_id, "face"))
        if record.has_images
        else None,
        "frame_url": sign(snapshot_path(entry_id, record.match_id, "frame"))
        if record.has_images
        else None,
        "registry_photo_url": sign(registry_photo_path(entry_id, record.person_id)),
    }


@websocket_command(
    {
        vol.Required("type"): "upr_faces/alerts/subscribe",
        vol.Optional("config_entry_id"): str,
        vol.Optional("limit", default=50): vol.All(int, vol.Range(min=1, max=500)),
    }
)
@async_response
async def ws_subscribe_alerts(
    hass: HomeAssistant, connection: ActiveConnection, msg: dict[str, Any]
) -> None:
    """Send recent alerts, then every new alert and every verdict as they happen."""
    entry_id: str | None = msg.get("config_entry_id")
    entries = _entries(hass, entry_id)
    found: list[tuple[UprFacesConfigEntry, Alert]] = []
    for entry in entries:
        try:
            recent = await entry.runtime_data.client.alerts(msg["limit"])
        except EngineError:
            continue  # an engine that is down shows nothing until it is back
        found += [(entry, Alert.from_engine(item)) for item in recent]
    found.sort(key=lambda pair: pair[1].detected_at, reverse=True)
    # only what is sent is signed
    alerts = [alert_view(hass, entry, record) for entry, record in found[: msg["limit"]]]

    unsubs = []
    for entry in entries:

        @callback
        def forward(record: Alert, entry: UprFacesConfigEntry = entry) -> None:
            connection.send_message(
                event_message(
                    msg["id"], {"type": "alert", "alert": alert_view(hass, entry, record)}
                )
            )

        unsubs.append(async_dispatcher_connect(hass, SIGNAL_ALERT.format(entry.entry_id), forward))

    @callback
    def unsubscribe() -> None:
        for unsub in unsubs:
            unsub()

    connection.subscriptions[msg["id"]] = unsubscribe
    connection.send_result(msg["id"])
    connection.send_message(event_message(msg["id"], {"type": "snapshot", "alerts": alerts}))
