"""Alerts and the audit trail, persisted with Home Assistant's Store.

Alerts are pending until an operator confirms or rejects them; both, and every camera
start/stop and option change, go into the audit trail with the Home Assistant user.
Records older than the retention are dropped, with their snapshot files.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from homeassistant.core import HomeAssistant
from homeassistant.helpers.storage import Store
from homeassistant.util import dt as dt_util

from .const import DOMAIN

STORAGE_VERSION = 1
SAVE_DELAY = 5.0
MAX_AUDIT = 20_000
MAX_ALERTS = 5_000

AlertState = Literal["pending", "confirmed", "rejected"]


@dataclass(slots=True)
class AlertRecord:
    """One alert as operators see it."""

    match_id: str
    tier: str
    person_id: str
    reference: str
    display_name: str | None
    similarity: float
    camera_id: str
    camera_name: str
    detected_at: str
    track_id: int
    state: AlertState = "pending"
    decided_by: str | None = None
    decided_by_name: str | None = None
    decided_at: str | None = None
    comment: str | None = None
    has_snapshot: bool = False

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready copy."""
        return asdict(self)


@dataclass(slots=True)
class AuditEntry:
    """One line of the audit trail."""

    at: str
    action: str
    user_id: str | None = None
    user_name: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


class AlertLog:
    """The persisted alerts, audit trail and per-camera monitoring flags of one entry."""

    def __init__(self, hass: HomeAssistant, entry_id: str) -> None:
        self._store: Store[dict[str, Any]] = Store(
            hass, STORAGE_VERSION, f"{DOMAIN}.{entry_id}", private=True
        )
        self.alerts: dict[str, AlertRecord] = {}
        self.audit: list[AuditEntry] = []
        self.monitoring: dict[str, bool] = {}

    async def async_load(self) -> None:
        """Read what was stored (nothing on the first start)."""
        data = await self._store.async_load() or {}
        self.alerts = {item["match_id"]: AlertRecord(**item) for item in data.get("alerts", [])}
        self.audit = [AuditEntry(**item) for item in data.get("audit", [])]
        self.monitoring = dict(data.get("monitoring", {}))

    def _data(self) -> dict[str, Any]:
        return {
            "alerts": [record.as_dict() for record in self.alerts.values()],
            "audit": [asdict(entry) for entry in self.audit],
            "monitoring": self.monitoring,
        }

    def schedule_save(self) -> None:
        """Save soon (coalescing bursts of changes)."""
        self._store.async_delay_save(self._data, SAVE_DELAY)

    async def async_save(self) -> None:
        """Save now."""
        await self._store.async_save(self._data())

    async def async_remove(self) -> None:
        """Delete the stored file (the entry was removed)."""
        await self._store.async_remove()

    def add_alert(self, record: AlertRecord) -> None:
        """Remember a new alert."""
        self.alerts[record.match_id] = record
        while len(self.alerts) > MAX_ALERTS:
            del self.alerts[next(iter(self.alerts))]
        self.schedule_save()

    def add_audit(
        self,
        action: str,
        *,
        user_id: str | None = None,
        user_name: str | None = None,
        **details: Any,
    ) -> AuditEntry:
        """Append to the audit trail."""
        entry = AuditEntry(dt_util.utcnow().isoformat(), action, user_id, user_name, details)
        self.audit.append(entry)
        if len(self.audit) > MAX_AUDIT:
            del self.audit[: len(self.audit) - MAX_AUDIT]
        self.schedule_save()
        return entry

    def pending(self) -> int:
        """Alerts waiting for an operator's verdict."""
        return sum(1 for record in self.alerts.values() if record.state == "pending")

    def latest_for(self, camera_id: str, tier: str | None = None) -> AlertRecord | None:
        """The newest alert of a camera (of a tier, when given)."""
        for record in reversed(self.alerts.values()):
            if record.camera_id == camera_id and (tier is None or record.tier == tier):
                return record
        return None

    def expire(self, retention: timedelta, now: datetime | None = None) -> list[str]:
        """Drop alerts and audit lines older than the retention; returns dropped match ids."""
        cutoff = (now or dt_util.utcnow()) - retention
        dropped = [mid for mid, rec in self.alerts.items() if _when(rec.detected_at) < cutoff]
        for match_id in dropped:
            del self.alerts[match_id]
        before = len(self.audit)
        self.audit = [entry for entry in self.audit if _when(entry.at) >= cutoff]
        if dropped or len(self.audit) != before:
            self.schedule_save()
        return dropped

    def export_audit(self, since: datetime | None = None) -> list[dict[str, Any]]:
        """The audit trail (from ``since`` on), oldest first."""
        return [asdict(entry) for entry in self.audit if since is None or _when(entry.at) >= since]


def _when(text: str) -> datetime:
    """Parse a stored ISO timestamp (always written in UTC)."""
    parsed = dt_util.parse_datetime(text)
    return parsed if parsed is not None else datetime.min.replace(tzinfo=dt_util.UTC)
