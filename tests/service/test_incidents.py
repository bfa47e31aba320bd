"""Incidents instead of repeats, through a real ``upr-faces serve``: a person who stays in
view or comes back is one incident whose sightings gather under it; the registry and the
event stream get one alert per incident; a verdict decides every sighting; a person the
registry closes closes their incidents; an engine restart keeps adding to the same one.

The clip loops (C, a gap, D, a gap: about 7 s) and the cooldown is 2 s, so every loop is a
new sighting of each person on each camera.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from upr_faces_engine.server.store import Store

from ..conftest import LabelledPhoto
from .conftest import (
    SHOWN,
    alerts_of,
    camera,
    folder_config,
    registry_config,
    registry_with_persons,
)
from .conftest import wait_for as wait_until
from .engine_process import EngineClient
from .test_serve import Engines


async def _incident_with(api: EngineClient, sightings: int) -> list[dict[str, Any]]:
    return [a for a in await alerts_of(api) if a["sighting_count"] >= sightings]


async def _drain(socket: aiohttp.ClientWebSocketResponse) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    while True:
        try:
            seen.append(await asyncio.wait_for(socket.receive_json(), 0.5))
        except TimeoutError:
            return seen


async def test_a_person_who_comes_back_is_one_incident_decided_whole(
    engines: Engines, clip: Path, labelled_photos: list[LabelledPhoto]
) -> None:
    """Three passes of each person: one incident each (one ``match`` event, one alert at
    the registry), every pass a sighting with its camera, time, similarity and face crop;
    rejecting an incident removes the images of all its sightings and sends one verdict."""
    registry = registry_with_persons(labelled_photos)
    await registry.start()
    engine = engines()
    try:
        with engine:
            async with EngineClient(engine) as api:
                await api.put_config(registry_config(registry.url, registry.key, cooldown=2))
                async with api.events() as socket:
                    await _drain(socket)
                    await api.put_config(
                        registry_config(
                            registry.url, registry.key, camera("door", clip), cooldown=2
                        )
                    )
                    found = await wait_until(
                        lambda: _incident_with(api, 3), "a person seen three times", 90
                    )
                    events = await _drain(socket)
                incidents = await alerts_of(api)
                incident = found[0]
                images = sorted(
                    p.name for p in (engine.data / "alerts").glob(f"{incident['id']}_*")
                )
                status, crop = await api.get(f"/alerts/{incident['id']}/s2.jpg")
                assert (status, crop[:2]) == (200, b"\xff\xd8")
                status, decided = await api.request(
                    "POST",
                    f"/alerts/{incident['id']}/verdict",
                    {"verdict": "rejected", "user_name": "Agent Martin"},
                )
                assert status == 200, decided
                left = sorted(p.name for p in (engine.data / "alerts").glob(f"{incident['id']}_*"))

                async def verdicts() -> list[dict[str, Any]]:
                    return list(registry.registry.verdicts)

                await wait_until(verdicts, "the verdict at the registry", 30)
                received = registry.received()
    finally:
        await registry.stop()
    assert {a["person_id"] for a in incidents} <= set(SHOWN)
    assert len(incidents) == len({a["person_id"] for a in incidents})  # one per person
    matches = [e["data"] for e in events if e["type"] == "match"]
    assert sorted(m["id"] for m in matches) == sorted(a["id"] for a in incidents)
    sightings = [e["data"] for e in events if e["type"] == "sighting"]
    assert {s["incident"]["id"] for s in sightings} <= {a["id"] for a in incidents}
    ns = [s["sighting"]["n"] for s in sightings if s["incident"]["id"] == incident["id"]]
    assert ns == list(range(2, len(ns) + 2))  # each one once, in order
    assert [s["n"] for s in incident["sightings"]] == list(range(1, incident["sighting_count"] + 1))
    for sighting in incident["sightings"]:
        assert sighting["camera_id"] == "door"
        assert sighting["has_face"] is True
        assert 0.55 <= sighting["similarity"] <= 1
    assert incident["similarity"] == max(s["similarity"] for s in incident["sightings"])
    assert incident["path"] == [
        {
            "camera_id": "door",
            "camera_name": "Door",
            "from": incident["detected_at"],
            "to": incident["last_seen"],
            "sightings": incident["sighting_count"],
        }
    ]
    assert incident["last_seen"] > incident["detected_at"]
    assert {"face.jpg", "frame.jpg", "s1.jpg", "s2.jpg", "s3.jpg"} <= {
        name.split("_", 1)[1] for name in images
    }
    assert left == []  # every sighting's crop went with the rejection
    assert decided["state"] == "rejected"
    assert all(s["has_face"] is False for s in decided["sightings"])
    alert_ids = [a["id"] for a in received["alerts"]]
    assert sorted(set(alert_ids)) == sorted(a["id"] for a in incidents)
    assert [v["alert_id"] for v in received["verdicts"]] == [incident["id"]]


async def test_a_person_the_registry_closes_closes_their_incidents(
    engines: Engines, clip: Path, labelled_photos: list[LabelledPhoto]
) -> None:
    """The registry closes a person (found): their incident awaiting a verdict closes with
    that reason (on the stream, in the audit), and they gather no more sightings."""
    registry = registry_with_persons(labelled_photos)
    await registry.start()
    engine = engines()
    try:
        with engine:
            async with EngineClient(engine) as api:
                await api.put_config(
                    registry_config(registry.url, registry.key, camera("door", clip), cooldown=2)
                )
                incident = (await wait_until(lambda: alerts_of(api), "an incident", 90))[-1]
                registry.registry.set_status(incident["person_id"], "closed")
                async with api.events(after=(await api.info())["events"]["last_id"]) as socket:
                    status, _ = await api.request("POST", "/gallery/refresh", {})
                    assert status == 200
                    events = await _drain(socket)
                status, closed = await api.get(f"/alerts/{incident['id']}")
                await asyncio.sleep(8)  # more than one loop of the clip
                status, later = await api.get(f"/alerts/{incident['id']}")
                status, audit = await api.get("/audit")
                status, refused = await api.request(
                    "POST", f"/alerts/{incident['id']}/verdict", {"verdict": "confirmed"}
                )
    finally:
        await registry.stop()
    store = Store(engine.data)
    try:
        kept = store.alert(incident["id"])
    finally:
        store.close()
    assert kept is not None
    assert kept["embeddings"] == []  # only a rejection needs the faces' embeddings
    assert (closed["state"], closed["closed_reason"]) == ("closed", "person_closed")
    decided = [e["data"] for e in events if e["type"] == "alert_decided"]
    assert [d["id"] for d in decided] == [incident["id"]]
    assert later["sighting_count"] == closed["sighting_count"]
    lines = [line for line in audit["audit"] if line["action"] == "incident_closed"]
    assert [(line["details"]["match_id"], line["details"]["reason"]) for line in lines] == [
        (incident["id"], "person_closed")
    ]
    assert (status, refused["error"]["code"]) == (409, "already_decided")


async def test_sightings_join_the_same_incident_after_a_restart(
    engines: Engines, gallery: Path, clip: Path
) -> None:
    """The engine restarts while a person's incident is open: their next sightings join it
    (no second alert); the incident's sightings keep their numbers."""
    engine = engines()
    config = folder_config(gallery, camera("door", clip), cooldown=2)
    with engine:
        async with EngineClient(engine) as api:
            await api.put_config(config)
            before = await wait_until(lambda: alerts_of(api), "an incident", 90)
        engine.stop()
        engine.start()
        async with EngineClient(engine) as api:
            person = before[-1]["person_id"]

            async def grown() -> list[dict[str, Any]]:
                return [
                    a
                    for a in await alerts_of(api)
                    if a["person_id"] == person
                    and a["sighting_count"] > before[-1]["sighting_count"]
                ]

            after = await wait_until(grown, "a sighting after the restart", 90)
            everything = await alerts_of(api)
    assert after[0]["id"] == before[-1]["id"]
    assert len([a for a in everything if a["person_id"] == person]) == 1
    assert [s["n"] for s in after[0]["sightings"]] == list(range(1, after[0]["sighting_count"] + 1))
