"""Fix flows of the repair issues that have one: use the threshold the verdicts advise."""

from __future__ import annotations

from typing import Any

from homeassistant.components.repairs import RepairsFlow
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.helpers import issue_registry as ir

from .const import (
    CONF_MATCH_THRESHOLD,
    CONF_PROBABLE_THRESHOLD,
    DEFAULT_OPTIONS,
    DOMAIN,
)
from .coordinator import UprFacesConfigEntry
from .validation import vol

MIN_THRESHOLD = 0.05  # the engine's lowest threshold

# what a step returns: FlowResult up to Home Assistant 2025, RepairsFlowResult after it
type StepResult = Any


async def async_create_fix_flow(
    hass: HomeAssistant, issue_id: str, data: dict[str, str | int | float | None] | None
) -> RepairsFlow:
    """The fix flow of an issue (only ``threshold_advice_*`` issues are fixable)."""
    return ThresholdAdviceFlow(data or {})


class ThresholdAdviceFlow(RepairsFlow):
    """Set one camera's match threshold to the advice, once an admin confirms; audited.

    The probable threshold stays, unless it would be above the new match threshold: it
    then keeps its distance below it. Other cameras and the entry's options are untouched.
    """

    def __init__(self, data: dict[str, str | int | float | None]) -> None:
        self._entry_id = str(data.get("entry_id") or "")
        self._camera_id = str(data.get("camera_id") or "")

    def _entry(self) -> UprFacesConfigEntry | None:
        entry = self.hass.config_entries.async_get_entry(self._entry_id)
        if entry is None or entry.state is not ConfigEntryState.LOADED:
            return None
        return entry

    async def async_step_init(self, user_input: dict[str, Any] | None = None) -> StepResult:
        """The flow starts (Home Assistant hands over the issue id): show the advice."""
        return await self.async_step_confirm()

    async def async_step_confirm(self, user_input: dict[str, Any] | None = None) -> StepResult:
        """Show the advice, then apply it."""
        entry = self._entry()
        subentry = entry.subentries.get(self._camera_id) if entry else None
        camera = entry.runtime_data.data.cameras.get(self._camera_id) if entry else None
        advice = (camera.advice if camera else None) or {}
        advised = advice.get("advised")
        if entry is None or subentry is None or advised is None:
            return self.async_abort(reason="advice_gone")
        if user_input is None:
            share = advice.get("false_share")
            return self.async_show_form(
                step_id="confirm",
                data_schema=vol.Schema({}),
                description_placeholders={
                    "camera": subentry.title,
                    "threshold": f"{float(advice['threshold']):.2f}",
                    "advised": f"{float(advised):.2f}",
                    "decisions": str(advice.get("decisions")),
                    "false_share": "-" if share is None else f"{float(share) * 100:.0f}",
                },
            )
        options = {**DEFAULT_OPTIONS, **entry.options}
        old_match = float(subentry.data.get(CONF_MATCH_THRESHOLD, options[CONF_MATCH_THRESHOLD]))
        old_probable = float(
            subentry.data.get(CONF_PROBABLE_THRESHOLD, options[CONF_PROBABLE_THRESHOLD])
        )
        match = round(float(advised), 4)
        probable = old_probable
        data = {**subentry.data, CONF_MATCH_THRESHOLD: match}
        if probable > match:  # keeps its distance below, never under the engine's 0.05
            probable = round(max(MIN_THRESHOLD, match - max(0.0, old_match - old_probable)), 4)
            data[CONF_PROBABLE_THRESHOLD] = probable
        coordinator = entry.runtime_data
        await coordinator.async_audit_action(
            "thresholds_changed",
            None,  # Home Assistant gives a repair flow no user (admins only)
            camera=subentry.title,
            match_threshold=match,
            probable_threshold=probable,
            previous_match_threshold=old_match,
            reason="threshold_advice",
            decisions=advice.get("decisions"),
        )
        self.hass.config_entries.async_update_subentry(entry, subentry, data=data)
        ir.async_delete_issue(self.hass, DOMAIN, f"threshold_advice_{self._camera_id}")
        return self.async_create_entry(data={})
