"""Sightings gathered into incidents: one alert for a person who stays, comes back or walks
past several cameras.

The pipeline raises a :class:`~.alerts.MatchEvent` per track that names a person (at most
one per person and camera per cooldown). Each is a *sighting*. A sighting of a person who
has an open incident joins it; otherwise it opens a new incident, which is the alert the
operators decide, the registry receives and ``upr_match`` announces. An incident is open
while its sightings keep coming less than ``gap_s`` apart (10 minutes by default) and no
operator rejected it, and the person is still wanted; a confirmed incident goes on
gathering sightings (where the person went), without a new alert.

An incident record is a plain JSON-ready dict, kept by the engine's store under the id of
its first sighting (the alert id clients already know). Next to the fields an alert always
had (``tier`` and ``similarity`` are the best seen so far, ``camera_*`` and ``detected_at``
those of the first sighting) it holds:

``sightings``
    the last :data:`MAX_SIGHTINGS` sightings, oldest first: ``n`` (1, 2...), ``camera_id``,
    ``camera_name``, ``at`` (ISO), ``similarity``, ``tier``, ``track_id``, ``has_face``
``sighting_count``, ``last_seen``, ``last_seen_ts``, ``cameras`` (names, in the order
    they first saw the person), ``camera_ids``, ``path`` (the runs of consecutive sightings
    on one camera: ``camera_id``, ``camera_name``, ``from``, ``to``, ``sightings``),
    ``best_sighting`` (the ``n`` whose images are the incident's)
``embeddings``
    the faces' embeddings (at most :data:`MAX_EMBEDDINGS`), kept for a rejection only:
    never sent to a client
``closed_reason``
    ``None``, or why the incident closed before a verdict (``person_closed``: the
    registry no longer seeks the person)

Nothing here does I/O; the engine stores the records and the images.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from .alerts import MatchEvent

INCIDENT_GAP_S: Final = 600.0
"""An incident stays open while its sightings come at most this far apart (seconds)."""
MAX_SIGHTINGS: Final = 100
"""Sightings kept in a record (the count goes on beyond)."""
MAX_SIGHTING_FACES: Final = 20
"""Face crops kept per incident (the first sightings'; later ones keep none)."""
MAX_EMBEDDINGS: Final = 20
"""Face embeddings kept per incident (what a rejection remembers of its faces)."""
PRIVATE_FIELDS: Final = ("detected_at_ts", "last_seen_ts", "embedding", "embeddings")
"""What clients never see of a record: biometric data and the engine's sort keys."""


def iso(ts: float) -> str:
    """An epoch time as clients read it."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def public(record: dict[str, Any]) -> dict[str, Any]:
    """A record as clients see it (no embedding: biometric data stays in the engine)."""
    return {key: value for key, value in record.items() if key not in PRIVATE_FIELDS}


def sighting_image_kind(n: int) -> str:
    """The image name of sighting ``n``'s face crop (next to ``face`` and ``frame``)."""
    return f"s{n}"


def is_open(record: dict[str, Any], at: float, gap_s: float = INCIDENT_GAP_S) -> bool:
    """Whether a sighting at ``at`` joins this incident."""
    if record.get("state") not in ("pending", "confirmed") or record.get("closed_reason"):
        return False
    last = float(record.get("last_seen_ts") or record.get("detected_at_ts") or 0.0)
    return at - last <= gap_s


def _sighting(event: MatchEvent, n: int, camera_name: str, has_face: bool) -> dict[str, Any]:
    return {
        "n": n,
        "camera_id": event.camera,
        "camera_name": camera_name,
        "at": iso(event.detected_at),
        "similarity": round(event.similarity, 4),
        "tier": event.tier,
        "track_id": event.track_id,
        "has_face": has_face,
    }


def path_of(sightings: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs of consecutive sightings on one camera, oldest first: where the person went."""
    runs: list[dict[str, Any]] = []
    for sighting in sightings:
        if runs and runs[-1]["camera_id"] == sighting["camera_id"]:
            runs[-1]["to"] = sighting["at"]
            runs[-1]["sightings"] += 1
            continue
        runs.append(
            {
                "camera_id": sighting["camera_id"],
                "camera_name": sighting["camera_name"],
                "from": sighting["at"],
                "to": sighting["at"],
                "sightings": 1,
            }
        )
    return runs


def new_incident(
    event: MatchEvent,
    *,
    camera_name: str,
    reference: str,
    display_name: str | None,
    has_images: bool,
    has_face: bool,
) -> dict[str, Any]:
    """The record of an incident opened by ``event`` (its first sighting)."""
    sighting = _sighting(event, 1, camera_name, has_face)
    return {
        "id": event.match_id,
        "tier": event.tier,
        "person_id": event.person_id,
        "reference": reference,
        "display_name": display_name,
        "similarity": round(event.similarity, 4),
        "camera_id": event.camera,
        "camera_name": camera_name,
        "detected_at": iso(event.detected_at),
        "detected_at_ts": event.detected_at,
        "last_seen": iso(event.detected_at),
        "last_seen_ts": event.detected_at,
        "latency_s": round(event.latency_s, 3),
        "track_id": event.track_id,
        "has_images": has_images,
        "sightings": [sighting],
        "sighting_count": 1,
        "cameras": [camera_name],
        "camera_ids": [event.camera],
        "path": path_of([sighting]),
        "best_sighting": 1,
        "embeddings": [list(event.embedding)] if event.embedding else [],
        "state": "pending",
        "closed_reason": None,
        "decided_by": None,
        "decided_by_name": None,
        "decided_at": None,
        "comment": None,
    }


@dataclass(frozen=True, slots=True)
class Joined:
    """What a sighting changed in the incident it joined."""

    sighting: dict[str, Any]
    best: bool  # its images are now the incident's
    upgraded: bool  # it made a probable incident a match


def next_sighting_number(record: dict[str, Any]) -> int:
    """The ``n`` the next sighting of this incident gets."""
    return int(record.get("sighting_count") or len(record.get("sightings") or ())) + 1


def wants_face(n: int) -> bool:
    """Whether sighting ``n`` keeps its face crop."""
    return n <= MAX_SIGHTING_FACES


def add_sighting(
    record: dict[str, Any], event: MatchEvent, *, camera_name: str, has_face: bool
) -> Joined:
    """Add ``event`` to an open incident (in place)."""
    n = next_sighting_number(record)
    sighting = _sighting(event, n, camera_name, has_face)
    sightings = [*(record.get("sightings") or ()), sighting][-MAX_SIGHTINGS:]
    cameras = list(record.get("cameras") or ())
    camera_ids = list(record.get("camera_ids") or ())
    if event.camera not in camera_ids:
        camera_ids.append(event.camera)
        cameras.append(camera_name)
    upgraded = record.get("tier") == "probable" and event.tier == "match"
    best = event.similarity > float(record.get("similarity") or 0.0)
    embeddings = list(record.get("embeddings") or ())
    if event.embedding and len(embeddings) < MAX_EMBEDDINGS:
        embeddings.append(list(event.embedding))
    record.update(
        sightings=sightings,
        sighting_count=n,
        cameras=cameras,
        camera_ids=camera_ids,
        path=path_of(sightings),
        last_seen=iso(max(float(record.get("last_seen_ts") or 0.0), event.detected_at)),
        last_seen_ts=max(float(record.get("last_seen_ts") or 0.0), event.detected_at),
        embeddings=embeddings,
    )
    if upgraded:
        record["tier"] = "match"
    if best:
        record["similarity"] = round(event.similarity, 4)
        record["best_sighting"] = n
    return Joined(sighting, best, upgraded)


def embeddings_of(record: dict[str, Any]) -> list[list[float]]:
    """The face embeddings a record keeps (records from before incidents kept one)."""
    found = [list(vector) for vector in record.get("embeddings") or () if vector]
    if not found and record.get("embedding"):
        found = [list(record["embedding"])]
    return found


def tracks_of(record: dict[str, Any]) -> set[tuple[str, int]]:
    """(camera id, track id) of every kept sighting (and the first one's)."""
    tracks = {(str(record.get("camera_id") or ""), int(record.get("track_id") or 0))}
    for sighting in record.get("sightings") or ():
        tracks.add((str(sighting["camera_id"]), int(sighting["track_id"])))
    return tracks


class OpenIncidents:
    """Which incident a person's next sighting joins (person id to record id); rebuilt from
    the store at start. Used from the event loop only."""

    def __init__(self, gap_s: float = INCIDENT_GAP_S) -> None:
        self.gap_s = gap_s
        self._by_person: dict[str, str] = {}

    def rebuild(self, records: Iterable[dict[str, Any]], now: float) -> None:
        """Hold the incidents of ``records`` still open at ``now`` (newest wins)."""
        self._by_person.clear()
        ordered = sorted(records, key=lambda r: float(r.get("last_seen_ts") or 0.0))
        for record in ordered:
            if is_open(record, now, self.gap_s):
                self._by_person[str(record["person_id"])] = str(record["id"])

    def get(self, person_id: str) -> str | None:
        """The id of the person's open incident, if one may be."""
        return self._by_person.get(person_id)

    def set(self, person_id: str, incident_id: str) -> None:
        """This incident is the person's open one."""
        self._by_person[person_id] = incident_id

    def discard(self, incident_id: str) -> None:
        """This incident takes no more sightings."""
        for person_id in [p for p, i in self._by_person.items() if i == incident_id]:
            del self._by_person[person_id]

    def persons(self) -> dict[str, str]:
        """person id -> incident id, a copy."""
        return dict(self._by_person)
