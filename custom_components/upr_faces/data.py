"""What the entities show, read from the engine's answers and events."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from homeassistant.util import dt as dt_util


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert as the engine keeps it (``match_id`` is the engine's alert id)."""

    match_id: str
    tier: str
    person_id: str
    reference: str
    display_name: str | None
    similarity: float
    camera_id: str
    camera_name: str
    detected_at: str
    state: str
    decided_by: str | None = None
    decided_by_name: str | None = None
    decided_at: str | None = None
    comment: str | None = None
    has_images: bool = False
    sighting_count: int = 1
    last_seen: str | None = None
    cameras: tuple[str, ...] = ()
    path: tuple[dict[str, Any], ...] = ()
    closed_reason: str | None = None

    @classmethod
    def from_engine(cls, data: dict[str, Any]) -> Alert:
        """An alert from the engine's JSON."""
        return cls(
            match_id=str(data["id"]),
            tier=str(data.get("tier", "probable")),
            person_id=str(data.get("person_id", "")),
            reference=str(data.get("reference") or data.get("person_id", "")),
            display_name=data.get("display_name"),
            similarity=float(data.get("similarity") or 0.0),
            camera_id=str(data.get("camera_id", "")),
            camera_name=str(data.get("camera_name", "")),
            detected_at=str(data.get("detected_at", "")),
            state=str(data.get("state", "pending")),
            decided_by=data.get("decided_by"),
            decided_by_name=data.get("decided_by_name"),
            decided_at=data.get("decided_at"),
            comment=data.get("comment"),
            has_images=bool(data.get("has_images")),
            sighting_count=int(data.get("sighting_count") or 1),
            last_seen=data.get("last_seen") or data.get("detected_at"),
            cameras=tuple(str(c) for c in data.get("cameras") or (data.get("camera_name", ""),)),
            path=tuple(dict(run) for run in data.get("path") or () if isinstance(run, dict)),
            closed_reason=data.get("closed_reason"),
        )

    def seen_on(self, sighting: dict[str, Any]) -> Alert:
        """This incident as one camera saw it in ``sighting`` (what that camera's entities
        show): its camera, time, tier and similarity."""
        return replace(
            self,
            camera_id=str(sighting.get("camera_id", self.camera_id)),
            camera_name=str(sighting.get("camera_name", self.camera_name)),
            detected_at=str(sighting.get("at", self.detected_at)),
            tier=str(sighting.get("tier", self.tier)),
            similarity=float(sighting.get("similarity") or self.similarity),
        )

    def decided_as(self, decided: Alert) -> Alert:
        """This view of an incident with the verdict of ``decided`` (the same incident)."""
        return replace(
            self,
            state=decided.state,
            decided_by=decided.decided_by,
            decided_by_name=decided.decided_by_name,
            decided_at=decided.decided_at,
            comment=decided.comment,
            closed_reason=decided.closed_reason,
        )

    @property
    def detected(self) -> datetime | None:
        """When it was seen."""
        return dt_util.parse_datetime(self.detected_at)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (the services' and the audit export's shape)."""
        return {
            "match_id": self.match_id,
            "tier": self.tier,
            "person_id": self.person_id,
            "reference": self.reference,
            "display_name": self.display_name,
            "similarity": self.similarity,
            "camera_id": self.camera_id,
            "camera_name": self.camera_name,
            "detected_at": self.detected_at,
            "state": self.state,
            "decided_by": self.decided_by,
            "decided_by_name": self.decided_by_name,
            "decided_at": self.decided_at,
            "comment": self.comment,
            "has_snapshot": self.has_images,
            "sighting_count": self.sighting_count,
            "last_seen": self.last_seen,
            "cameras": list(self.cameras),
            "path": [dict(run) for run in self.path],
            "closed_reason": self.closed_reason,
        }


@dataclass(frozen=True, slots=True)
class CameraData:
    """What the entities of one camera show."""

    camera_id: str
    name: str
    monitoring: bool
    state: str
    reason: str | None
    faces: int
    last_match: Alert | None
    match_fresh: bool
    probable_fresh: bool
    analysis_error: str | None = None  # set while its frames cannot be analysed
    advice: dict[str, Any] | None = None  # what the verdicts say of its match threshold


@dataclass(frozen=True, slots=True)
class HubData:
    """What the hub's entities show."""

    cameras: dict[str, CameraData] = field(default_factory=dict)
    gallery_size: int = 0
    last_sync: datetime | None = None
    pending_alerts: int = 0
    outbox_pending: int = 0
    outbox_stuck: int = 0
    outbox_stuck_since: datetime | None = None
    last_detection: datetime | None = None
    registry_reachable: bool | None = None
    advice: dict[str, Any] | None = None  # what all the verdicts say of the match threshold

    @property
    def active_streams(self) -> int:
        """Cameras delivering frames now."""
        return sum(1 for cam in self.cameras.values() if cam.state == "streaming")
