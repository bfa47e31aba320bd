"""Confirm or reject from a phone: the companion app's notification actions.

The blueprint ``notify_on_match.yaml`` gives each alert's notification two actions,
``UPR_FACES_CONFIRM_<match_id>`` and ``UPR_FACES_REJECT_<match_id>``. The companion app
answers a press with a ``mobile_app_notification_action`` event whose context carries the
user who pressed: the verdict is recorded exactly as the card's (the engine, the registry,
the audit with that user). A press on an alert decided already changes nothing and fires
``upr_faces_action_refused`` (``match_id``, ``verdict``, ``by``), which the blueprint turns
into a notification that says so.
"""

from __future__ import annotations

import logging
from typing import Final

from homeassistant.core import Event, HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError

from .const import DOMAIN
from .services import async_owner

_LOGGER = logging.getLogger(__name__)

EVENT_NOTIFICATION_ACTION: Final = "mobile_app_notification_action"
EVENT_ACTION_REFUSED: Final = f"{DOMAIN}_action_refused"
ACTIONS: Final = {"UPR_FACES_CONFIRM_": "confirmed", "UPR_FACES_REJECT_": "rejected"}


def parse_action(action: object) -> tuple[str, str] | None:
    """``(verdict, match_id)`` of one of our actions; None for anybody else's."""
    if not isinstance(action, str):
        return None
    for prefix, verdict in ACTIONS.items():
        if action.startswith(prefix) and len(action) > len(prefix):
            return verdict, action[len(prefix) :]
    return None


@callback
def async_setup_notification_actions(hass: HomeAssistant) -> None:
    """Listen to the companion app's notification actions (once, from ``async_setup``)."""

    @callback
    def pressed(event: Event) -> None:
        parsed = parse_action(event.data.get("action"))
        if parsed is None:
            return
        verdict, match_id = parsed
        hass.async_create_task(
            _async_decide(hass, match_id, verdict, event.context.user_id),
            f"{DOMAIN} notification action {match_id}",
            eager_start=True,
        )

    hass.bus.async_listen(EVENT_NOTIFICATION_ACTION, pressed)


async def _async_decide(
    hass: HomeAssistant, match_id: str, verdict: str, user_id: str | None
) -> None:
    user = await hass.auth.async_get_user(user_id) if user_id else None
    try:
        coordinator = await async_owner(hass, match_id)
        await coordinator.async_verdict(
            match_id,
            verdict,
            user_id=user_id,
            user_name=user.name if user else None,
            comment=None,
        )
    except ServiceValidationError as err:
        placeholders = err.translation_placeholders or {}
        if err.translation_key == "already_decided":
            hass.bus.async_fire(
                EVENT_ACTION_REFUSED,
                {
                    "match_id": match_id,
                    "verdict": placeholders.get("verdict", ""),
                    "by": placeholders.get("by", ""),
                },
            )
        else:
            _LOGGER.info("Notification action on alert %s not applied: %s", match_id, err)
    except HomeAssistantError as err:
        _LOGGER.warning("Notification action on alert %s not applied: %s", match_id, err)
