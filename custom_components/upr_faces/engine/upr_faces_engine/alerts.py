"""Match events and the cooldown that keeps one alert per person and camera.

The persisted outbox that carries alerts and verdicts to the registry is ``outbox.py``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Literal

AlertTier = Literal["match", "probable"]


@dataclass(frozen=True, slots=True)
class MatchEvent:
    """A face on a camera resembles a person of the gallery.

    ``detected_at`` is wall-clock time (seconds since the epoch); ``latency_s`` runs from the
    capture of the first frame in which the track was seen to the event. ``snapshot_jpeg``
    is the whole frame, ``face_jpeg`` the face crop; neither is written to disk here.
    """

    camera: str
    person_id: str
    similarity: float
    tier: AlertTier
    track_id: int
    detected_at: float
    latency_s: float
    box: tuple[float, float, float, float]
    upgraded: bool = False
    snapshot_jpeg: bytes | None = field(default=None, repr=False)
    face_jpeg: bytes | None = field(default=None, repr=False)
    embedding: tuple[float, ...] | None = field(default=None, repr=False)
    """The face's embedding (the mean of the track's, unit length): what a rejected alert
    keeps of the face once its images are deleted."""
    match_id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass(slots=True)
class CooldownGate:
    """One alert per (person, camera) per ``cooldown_s``; an upgrade to match goes through.

    A probable match may be upgraded to a match inside the cooldown, once, for the same
    track. Times are monotonic seconds.
    """

    cooldown_s: float = 60.0
    _last: dict[tuple[str, str], tuple[float, AlertTier, int]] = field(default_factory=dict)

    def allow(
        self, camera: str, person_id: str, tier: AlertTier, track_id: int, now: float
    ) -> bool:
        """Whether an alert may fire now; records it when it may."""
        key = (camera, person_id)
        last = self._last.get(key)
        if last is not None and now - last[0] < self.cooldown_s:
            _when, last_tier, last_track = last
            upgrade = last_tier == "probable" and tier == "match" and last_track == track_id
            if not upgrade:
                return False
        self._last[key] = (now, tier, track_id)
        return True

    def prime(self, camera: str, person_id: str, tier: AlertTier, at: float) -> None:
        """Remember an alert given before a restart (``at`` on the monotonic clock)."""
        key = (camera, person_id)
        last = self._last.get(key)
        if last is None or last[0] < at:
            self._last[key] = (at, tier, -1)

    def forget(self, now: float) -> None:
        """Drop entries older than the cooldown (keeps the table small)."""
        for key in [k for k, v in self._last.items() if now - v[0] >= self.cooldown_s]:
            del self._last[key]
