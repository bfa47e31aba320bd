"""The incident records (``incidents.py``): sightings, upgrades, the path across cameras,
bounds, when an incident is open, and what clients never see."""

from __future__ import annotations

from typing import Any

from upr_faces_engine.alerts import AlertTier, MatchEvent
from upr_faces_engine.incidents import (
    INCIDENT_GAP_S,
    MAX_EMBEDDINGS,
    MAX_SIGHTINGS,
    OpenIncidents,
    add_sighting,
    embeddings_of,
    is_open,
    new_incident,
    public,
    tracks_of,
    wants_face,
)

T0 = 1_780_000_000.0


def _event(
    camera: str, at: float, similarity: float, tier: AlertTier = "match", track: int = 1
) -> MatchEvent:
    return MatchEvent(
        camera=camera,
        person_id="P",
        similarity=similarity,
        tier=tier,
        track_id=track,
        detected_at=at,
        latency_s=0.2,
        box=(0.0, 0.0, 10.0, 10.0),
        embedding=(0.6, 0.8),
    )


def _open(first: MatchEvent) -> dict[str, Any]:
    return new_incident(
        first,
        camera_name=first.camera.title(),
        reference="UPR-P",
        display_name=None,
        has_images=True,
        has_face=True,
    )


def test_sightings_across_cameras_make_one_incident_with_its_path() -> None:
    record = _open(_event("door", T0, 0.50, "probable", track=3))
    assert record["tier"] == "probable"
    hall = add_sighting(
        record, _event("hall", T0 + 30, 0.61, track=9), camera_name="Hall", has_face=True
    )
    again = add_sighting(
        record, _event("hall", T0 + 60, 0.58, track=10), camera_name="Hall", has_face=False
    )
    door = add_sighting(
        record, _event("door", T0 + 90, 0.57, track=4), camera_name="Door", has_face=True
    )
    assert (hall.upgraded, hall.best) == (True, True)  # probable to match: announced again
    assert (again.upgraded, again.best) == (False, False)
    assert (door.upgraded, door.best) == (False, False)
    assert record["tier"] == "match"
    assert record["similarity"] == 0.61
    assert record["best_sighting"] == 2
    assert record["sighting_count"] == 4
    assert record["cameras"] == ["Door", "Hall"]
    assert record["camera_ids"] == ["door", "hall"]
    assert [(run["camera_id"], run["sightings"]) for run in record["path"]] == [
        ("door", 1),
        ("hall", 2),
        ("door", 1),
    ]
    assert record["path"][1]["from"] < record["path"][1]["to"]
    assert record["last_seen_ts"] == T0 + 90
    assert tracks_of(record) == {("door", 3), ("hall", 9), ("hall", 10), ("door", 4)}
    assert len(embeddings_of(record)) == 4


def test_an_incident_is_open_within_the_gap_and_until_rejected_or_closed() -> None:
    record = _open(_event("door", T0, 0.7))
    assert is_open(record, T0 + INCIDENT_GAP_S)
    assert not is_open(record, T0 + INCIDENT_GAP_S + 1)
    add_sighting(record, _event("door", T0 + 500, 0.7), camera_name="Door", has_face=True)
    assert is_open(record, T0 + 500 + INCIDENT_GAP_S)  # the gap runs from the last sighting
    record["state"] = "confirmed"
    assert is_open(record, T0 + 600)  # a confirmed person is still followed
    record["closed_reason"] = "person_closed"
    assert not is_open(record, T0 + 600)
    record.update(state="rejected", closed_reason=None)
    assert not is_open(record, T0 + 600)


def test_records_stay_bounded_and_clients_never_see_embeddings() -> None:
    record = _open(_event("door", T0, 0.6))
    for index in range(1, MAX_SIGHTINGS + 50):
        add_sighting(
            record,
            _event("door", T0 + index, 0.6),
            camera_name="Door",
            has_face=wants_face(index + 1),
        )
    assert record["sighting_count"] == MAX_SIGHTINGS + 50
    assert len(record["sightings"]) == MAX_SIGHTINGS
    assert record["sightings"][-1]["n"] == MAX_SIGHTINGS + 50  # the newest are kept
    assert len(record["embeddings"]) == MAX_EMBEDDINGS
    assert not wants_face(21)
    shown = public(record)
    assert not {"embeddings", "embedding", "detected_at_ts", "last_seen_ts"} & set(shown)


def test_open_incidents_rebuilt_from_records() -> None:
    old = _open(_event("door", T0, 0.6))
    new = {**_open(_event("door", T0 + 100, 0.6)), "id": "newer"}
    rejected = {**_open(_event("door", T0 + 200, 0.6)), "id": "rejected", "state": "rejected"}
    book = OpenIncidents()
    book.rebuild([new, old, rejected], now=T0 + 300)
    assert book.get("P") == "newer"
    book.rebuild([new, old], now=T0 + 100 + INCIDENT_GAP_S + 1)
    assert book.get("P") is None
    book.set("P", "x")
    book.discard("x")
    assert book.persons() == {}


def test_a_record_from_before_incidents_still_gives_its_embedding() -> None:
    legacy = {"id": "a", "camera_id": "door", "track_id": 2, "embedding": [1.0, 0.0]}
    assert embeddings_of(legacy) == [[1.0, 0.0]]
    assert tracks_of(legacy) == {("door", 2)}
