"""Who may do what: operators see alerts and decide them, admins do everything else.

Any Home Assistant user (an operator) may see the cameras, the alerts and their evidence
and confirm or reject an alert. Exporting the audit trail, refreshing the gallery,
scanning USB cameras and starting or stopping a camera's monitoring are for admins (and
for automations and scripts, which act without a user). The configuration, options and
diagnostics are admin-only in Home Assistant itself.
"""

from __future__ import annotations

from homeassistant.auth.permissions.const import POLICY_CONTROL
from homeassistant.core import Context, HomeAssistant
from homeassistant.exceptions import Unauthorized


async def async_require_admin(hass: HomeAssistant, context: Context | None) -> None:
    """Raise :class:`Unauthorized` unless the context's user is an admin (or none:
    an automation, a script, Home Assistant itself)."""
    user_id = context.user_id if context is not None else None
    if user_id is None:
        return
    user = await hass.auth.async_get_user(user_id)
    if user is None or not user.is_admin:
        raise Unauthorized(context=context, user_id=user_id, permission=POLICY_CONTROL)
