"""Logbook: audit entries (alerts, verdicts, camera start/stop, option changes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from homeassistant.components.logbook.const import LOGBOOK_ENTRY_MESSAGE, LOGBOOK_ENTRY_NAME
from homeassistant.core import Event, HomeAssistant, callback

from .const import DOMAIN, EVENT_AUDIT

# Logbook lines are not translatable through the translations files; they stay short and
# carry the identifiers an operator looks for.
_MESSAGES = {
    "alert": "alert {tier} on {camera} ({similarity})",
    "confirmed": "confirmed alert on {camera}",
    "rejected": "rejected alert on {camera}",
    "camera_started": "started watching {camera}",
    "camera_stopped": "stopped watching {camera}",
    "options_changed": "options changed",
    "alert_upgraded": "alert on {camera} is now a match ({similarity})",
    "thresholds_changed": "match threshold of {camera} set to {match_threshold} (advice)",
    "usb_scan": "USB scan: {found} camera(s)",
}


@callback
def async_describe_events(
    hass: HomeAssistant,
    async_describe_event: Callable[[str, str, Callable[[Event], dict[str, Any]]], None],
) -> None:
    """Describe the audit events."""

    @callback
    def describe(event: Event) -> dict[str, Any]:
        data = event.data
        template = _MESSAGES.get(data.get("action", ""), "{action}")
        try:
            message = template.format(**data)
        except (KeyError, IndexError):
            message = str(data.get("action"))
        return {LOGBOOK_ENTRY_NAME: "UPR Faces", LOGBOOK_ENTRY_MESSAGE: message}

    async_describe_event(DOMAIN, EVENT_AUDIT, describe)
