"""``upr-faces serve`` as clients meet it: a real process on 127.0.0.1, the shared test
pack, clip and RTSP cameras, and the registry test server.

The contract these tests hold is docs/engine_api.md.
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import ssl
import stat
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from upr_faces_engine.alerts import MatchEvent
from upr_faces_engine.server.engine import TEST_TIMEOUT, Engine
from upr_faces_engine.server.store import Store

from ..conftest import LabelledPhoto
from ..streams import rtsp_server
from ..upr_server import UprServer
from .conftest import (
    SHOWN,
    alerts_of,
    camera,
    folder_config,
    registry_config,
    registry_with_persons,
    wait_for,
)
from .engine_process import EngineClient, EngineProcess

Engines = Callable[..., EngineProcess]


async def _next_event(
    socket: aiohttp.ClientWebSocketResponse, seconds: float = 60
) -> dict[str, Any]:
    message: dict[str, Any] = await asyncio.wait_for(socket.receive_json(), seconds)
    return message


async def _events_until(
    socket: aiohttp.ClientWebSocketResponse,
    done: Callable[[list[dict[str, Any]]], bool],
    seconds: float = 60,
) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    deadline = asyncio.get_running_loop().time() + seconds
    while not done(seen):
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            raise AssertionError(f"timed out; events so far: {[e.get('type') for e in seen]}")
        seen.append(await _next_event(socket, left))
    return seen


def _matches(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event for event in events if event.get("type") == "match"]


# ----------------------------------------------------------------------------- the process


async def test_token_file_and_authentication(engines: Engines) -> None:
    """The token is made at the first start (0600, never printed or logged); without it
    or with a wrong one every route, the event websocket and unknown paths answer 401."""
    engine = engines()
    with engine:
        token_file = engine.data / "token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(engine.data.stat().st_mode) == 0o700
        token = engine.token
        assert len(token) >= 32
        for who in (None, "wrong-" + token[:-6], ""):
            async with EngineClient(engine, token=who or "") as api:
                for method, path in (
                    ("GET", "/info"),
                    ("GET", "/health"),
                    ("PUT", "/config"),
                    ("GET", "/alerts"),
                    ("POST", "/sources/test"),
                    ("GET", "/no/such/path"),
                ):
                    status, body = await api.request(method, path, {})
                    assert status == 401, (method, path)
                    assert body["error"]["code"] == "unauthorized"
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    async with api.events():
                        pass
                assert refused.value.status == 401
        async with EngineClient(engine) as api:
            info = await api.info()
        assert info["version"] == "0.2.0"
        assert info["api_version"] == 1
        assert info["cameras"] == []
        assert info["configured"] is False
    assert token not in engine.log_text()
    # a second start keeps the token
    with engine:
        assert engine.token == token


async def test_sigterm_stops_within_seconds(engines: Engines, gallery: Path, clip: Path) -> None:
    """With a camera running, SIGTERM ends the process cleanly well within 10 s."""
    engine = engines()
    engine.start()
    async with EngineClient(engine) as api:
        await api.put_config(folder_config(gallery, camera("door", clip)))
        await wait_for(lambda: _camera_state(api, "door", "streaming"), "the camera streaming", 30)
    assert engine.stop() < 10
    assert engine.process is not None
    assert engine.process.returncode == 0


async def _camera_state(api: EngineClient, camera_id: str, state: str) -> bool:
    info = await api.info()
    return any(c["id"] == camera_id and c["state"] == state for c in info["cameras"])


# ----------------------------------------------------------------------------- configuration


async def test_config_push_is_idempotent_and_restarts_only_what_changed(
    engines: Engines, gallery: Path, clip: Path, tmp_path: Path
) -> None:
    """The same push again changes nothing; one camera changed restarts that camera only,
    never the other one nor the gallery; thresholds are applied in place."""
    with rtsp_server(clip) as rtsp:
        engine = engines()
        with engine:
            async with EngineClient(engine) as api:
                config = folder_config(gallery, camera("door", clip), camera("gate", rtsp.url))
                first = await api.put_config(config)
                assert first["changed"] is True
                assert sorted(first["started"]) == ["door", "gate"]
                assert first["reloaded"] == ["models", "gallery"]
                await wait_for(
                    lambda: _camera_state(api, "gate", "streaming"), "the RTSP camera", 40
                )
                before = {c["id"]: c["started_at"] for c in (await api.info())["cameras"]}
                assert (await api.info())["gallery"]["persons"] == 6

                again = await api.put_config(json.loads(json.dumps(config)))
                assert again == {
                    "changed": False,
                    "started": [],
                    "restarted": [],
                    "stopped": [],
                    "reloaded": [],
                }

                other_clip = tmp_path / "other.mp4"
                other_clip.write_bytes(clip.read_bytes())
                config["cameras"][0] = camera("door", other_clip, match_threshold=0.6)
                config["cameras"][1] = camera("gate", rtsp.url, probable_threshold=0.4)
                changed = await api.put_config(config)
                assert changed["restarted"] == ["door"]
                assert changed["started"] == changed["stopped"] == changed["reloaded"] == []
                after = {c["id"]: c["started_at"] for c in (await api.info())["cameras"]}
                assert after["gate"] == before["gate"]
                assert after["door"] != before["door"]

                config["cameras"] = config["cameras"][1:]
                removed = await api.put_config(config)
                assert removed["stopped"] == ["door"]
                assert [c["id"] for c in (await api.info())["cameras"]] == ["gate"]
                status, shown = await api.get("/config")
                assert status == 200
                assert shown["cameras"] == [camera("gate", rtsp.url, probable_threshold=0.4)]


def _with(path: str, value: Any) -> Callable[[dict[str, Any]], Any]:
    """A change to a valid configuration: set ``value`` at ``path`` (``a.b``)."""

    def change(config: dict[str, Any]) -> Any:
        *parents, last = path.split(".")
        target = config
        for key in parents:
            target = target[key]
        target[last] = value
        return config

    return change


def _cameras(*cameras: dict[str, Any]) -> Callable[[dict[str, Any]], Any]:
    return _with("cameras", list(cameras))


def _cam(**fields: Any) -> dict[str, Any]:
    return {"id": "x", "name": "X", "source": "rtsp://192.0.2.1/a", **fields}


BAD_CONFIGS: list[tuple[str, Callable[[dict[str, Any]], Any], str]] = [
    ("unknown field", _with("colour", "red"), "colour"),
    ("unknown option", _with("options.speed", 2), "options.speed"),
    ("threshold above 1", _with("options.match_threshold", 1.5), "options.match_threshold"),
    ("threshold text", _with("options.match_threshold", "high"), "options.match_threshold"),
    (
        "probable above match",
        _with("options.probable_threshold", 0.9),
        "options.probable_threshold",
    ),
    ("detector size", _with("options.det_size", 333), "options.det_size"),
    ("a boolean as a number", _with("options.cooldown", True), "options.cooldown"),
    ("no gallery", lambda c: {k: v for k, v in c.items() if k != "gallery"}, "gallery"),
    ("cameras not a list", _with("cameras", {"x": 1}), "cameras"),
    ("bad camera address", _cameras(_cam(source="rtsp://")), "cameras[0].source"),
    ("unknown scheme", _cameras(_cam(source="gopher://h/")), "cameras[0].source"),
    ("newline", _cameras(_cam(source="rtsp://h/a\nb")), "cameras[0].source"),
    ("NUL", _cameras(_cam(name="X\x00")), "cameras[0].name"),
    ("huge name", _cameras(_cam(name="N" * 5000)), "cameras[0].name"),
    ("huge source", _cameras(_cam(source="rtsp://h/" + "a" * 9000)), "cameras[0].source"),
    ("bad camera id", _cameras(_cam(id="../x")), "cameras[0].id"),
    ("same id twice", _cameras(_cam(), _cam(source="rtsp://h/b")), "cameras[1].id"),
    ("unknown camera field", _cameras(_cam(zoom=2)), "cameras[0].zoom"),
    ("camera threshold", _cameras(_cam(match_threshold=7)), "cameras[0].match_threshold"),
    ("relative clip", _cameras(_cam(source="file://clip.mp4")), "cameras[0].source"),
    ("a system file", _cameras(_cam(source="file:///etc/passwd")), "cameras[0].source"),
    ("a disk", _cameras(_cam(source="/dev/sda")), "cameras[0].source"),
    ("memory", _cameras(_cam(source="/dev/mem")), "cameras[0].source"),
    ("NUL in a source", _cameras(_cam(source="rtsp://h/a\x00b")), "cameras[0].source"),
    (
        "a non-finite threshold",
        _with("options.match_threshold", math.nan),
        "options.match_threshold",
    ),
    ("infinite retention", _with("options.retention_days", math.inf), "options.retention_days"),
    ("too many cameras", _cameras(*[_cam(id=f"c{i}") for i in range(65)]), "cameras"),
    ("gallery source", _with("gallery", {"source": "ftp"}), "gallery.source"),
    (
        "registry address",
        _with("gallery", {"source": "registry", "url": "http://[::1", "api_key": "k"}),
        "gallery.url",
    ),
    (
        "registry user info",
        _with("gallery", {"source": "registry", "url": "http://u:p@h/api", "api_key": "k"}),
        "gallery.url",
    ),
    (
        "key with spaces",
        _with("gallery", {"source": "registry", "url": "http://h/api", "api_key": "a b"}),
        "gallery.api_key",
    ),
    ("relative folder", _with("gallery.folder", "gallery"), "gallery.folder"),
    ("unknown pack", _with("models", {"pack": "antelope"}), "models.pack"),
    ("not an object", lambda c: [c], "config"),
]


async def test_bad_configuration_is_refused_and_changes_nothing(
    engines: Engines, gallery: Path, clip: Path
) -> None:
    """Each fault gets a 400 naming the field, never a traceback, and nothing changes."""
    engine = engines()
    with engine:
        async with EngineClient(engine) as api:
            good = folder_config(gallery, camera("door", clip))
            await api.put_config(good)
            _, before = await api.get("/config")
            info_before = await api.info()
            answers = {}
            for name, change, _ in BAD_CONFIGS:
                body = change(json.loads(json.dumps(good)))
                status, answer = await api.request("PUT", "/config", json.dumps(body))
                answers[name] = (status, answer)
            status, answer = await api.request("PUT", "/config", "{not json")
            _, after = await api.get("/config")
            info_after = await api.info()
    assert status == 400
    assert answer["error"]["code"] == "invalid_json"
    for name, _, field in BAD_CONFIGS:
        status, answer = answers[name]
        assert status == 400, (name, answer)
        assert answer["error"]["code"] == "invalid_config", name
        assert answer["error"]["placeholders"]["field"] == field, name
        assert "Traceback" not in json.dumps(answer), name
    assert after == before
    assert [c["started_at"] for c in info_after["cameras"]] == [
        c["started_at"] for c in info_before["cameras"]
    ]
    assert "Traceback" not in engine.log_text()


async def test_a_long_retry_delay_is_a_camera_option_like_any(
    engines: Engines, gallery: Path, clip: Path
) -> None:
    """The retry delay goes up to an hour: a camera still starts with one over the
    camera's default longest backoff (60 s)."""
    engine = engines()
    with engine:
        async with EngineClient(engine) as api:
            await api.put_config(folder_config(gallery, camera("door", clip), retry_backoff=600))
            await wait_for(lambda: _camera_state(api, "door", "streaming"), "the camera", 30)
    assert "ValueError" not in engine.log_text()


async def test_clips_only_from_media_folders(
    engines: Engines, gallery: Path, clip: Path, tmp_path: Path
) -> None:
    """With ``--media DIR``, a recorded clip is a camera only inside DIR: a clip elsewhere,
    a link from DIR to a system file and a ``..`` way out are refused, in the pushed
    configuration and in what the forms check and test."""
    media = tmp_path / "media"
    media.mkdir()
    inside = media / "door.mp4"
    inside.write_bytes(clip.read_bytes())
    (media / "passwd.mp4").symlink_to("/etc/passwd")
    refused_sources = [
        f"file://{clip}",  # a real clip, outside the media folder
        f"file://{media}/passwd.mp4",
        f"file://{media}/../../../../etc/passwd",
        "file:///etc/passwd",
    ]
    engine = engines(extra=("--media", str(media)))
    with engine:
        async with EngineClient(engine) as api:
            await api.put_config(folder_config(gallery, camera("door", inside)))
            configs, checks, tests = [], [], []
            for source in refused_sources:
                body = folder_config(gallery, {"id": "x", "name": "X", "source": source})
                configs.append(await api.request("PUT", "/config", body))
                checks.append(await api.request("POST", "/sources/check", {"source": source}))
                tests.append(await api.request("POST", "/sources/test", {"source": source}))
            _, accepted = await api.request(
                "POST", "/sources/check", {"source": f"file://{inside}"}
            )
            info = await api.info()
    for (status, answer), source in zip(configs, refused_sources, strict=True):
        assert status == 400, source
        assert answer["error"]["placeholders"]["field"] == "cameras[0].source", source
        assert "media folder" in answer["error"]["placeholders"]["problem"], source
    for (_, check), (_, test) in zip(checks, tests, strict=True):
        assert (check["ok"], check["error"]["code"]) == (False, "invalid_source")
        assert (test["ok"], test["error"]["code"]) == (False, "invalid_source")
    assert (accepted["ok"], accepted["kind"]) == (True, "file")
    assert [c["id"] for c in info["cameras"]] == ["door"]  # the good configuration stayed


# ----------------------------------------------------------------------------- events


async def test_matches_on_the_event_stream_and_resume_after_a_disconnect(
    engines: Engines, gallery: Path, clip: Path
) -> None:
    """A match arrives on the stream; a client that went away while two more happened
    reconnects with its last id and gets exactly what it missed, once, in order."""
    engine = engines()
    with engine:
        async with EngineClient(engine) as api:
            await api.put_config(folder_config(gallery))  # no camera yet
            async with api.events() as socket:
                hello = await _next_event(socket)
                assert hello["type"] == "hello"
                assert hello["api_version"] == 1
                replay = await _events_until(
                    socket, lambda seen: bool(seen) and seen[-1]["id"] == hello["last_id"]
                )
                last_seen = replay[-1]["id"]
                await api.put_config(folder_config(gallery, camera("door", clip)))
                first = await _events_until(socket, lambda seen: bool(_matches(seen)))
                match = _matches(first)[0]
                assert match["data"]["person_id"] in SHOWN
                assert match["data"]["camera_id"] == "door"
                assert match["data"]["state"] == "pending"
                assert 0.55 <= match["data"]["similarity"] <= 1
                last_seen = first[-1]["id"]
            # disconnected: the clip goes on (it loops), the cooldown allows each person once
            await wait_for(lambda: _alert_count(api, 2), "the second person's alert", 60)
            await api.put_config(folder_config(gallery, camera("door", clip), camera("hall", clip)))
            await wait_for(
                lambda: _seen_on(api, "hall", 2), "both persons seen on the hall camera", 60
            )
            incidents = await alerts_of(api)
            async with api.events(after=last_seen) as socket:
                hello = await _next_event(socket)
                replay = await _events_until(
                    socket, lambda seen: bool(seen) and seen[-1]["id"] >= hello["last_id"]
                )
    ids = [event["id"] for event in replay]
    assert ids == list(range(last_seen + 1, hello["last_id"] + 1))  # all of them, once, in order
    # the same persons on another camera are sightings of their incidents, not new alerts
    assert len(incidents) == 2
    assert [e["data"]["id"] for e in _matches(replay)] == [
        a["id"] for a in incidents if a["id"] != match["data"]["id"]
    ]
    sightings = [e["data"] for e in replay if e["type"] == "sighting"]
    hall = [s for s in sightings if s["sighting"]["camera_id"] == "hall"]
    assert {s["incident"]["id"] for s in hall} == {a["id"] for a in incidents}
    for incident in incidents:
        assert incident["cameras"] == ["Door", "Hall"]
        assert [run["camera_id"] for run in incident["path"]][:2] == ["door", "hall"]
        assert incident["sighting_count"] == len(incident["sightings"]) >= 2
        assert not {"embeddings", "last_seen_ts"} & set(incident)


async def _seen_on(api: EngineClient, camera_id: str, persons: int) -> bool:
    incidents = await alerts_of(api)
    return sum(1 for a in incidents if camera_id in a.get("camera_ids", ())) >= persons


async def _alert_count(api: EngineClient, count: int) -> bool:
    return len(await alerts_of(api)) >= count


async def test_gap_when_asked_for_more_than_was_kept(engines: Engines, gallery: Path) -> None:
    """Events are kept up to a count; a client further behind is told what it lost, and
    one from another database (the engine's data was reset) is told to start over."""
    engine = engines()
    with engine:
        async with EngineClient(engine) as api:
            await api.put_config(folder_config(gallery))
            async with api.events() as socket:
                hello = await _next_event(socket)
            epoch, last = hello["epoch"], hello["last_id"]
            assert last >= 1
            async with api.events(after=last + 100) as socket:
                assert (await _next_event(socket))["type"] == "hello"
                gap = await _next_event(socket)
                assert gap == {"type": "gap", "from": 1, "to": 0, "reason": "reset"}
                assert (await _next_event(socket))["id"] == 1  # the replay starts over
            async with api.events(after=0, epoch="another-database") as socket:
                await _next_event(socket)
                assert (await _next_event(socket))["reason"] == "reset"
            async with api.events(after=last, epoch=epoch) as socket:
                hello = await _next_event(socket)
                assert hello["last_id"] == last
                with pytest.raises(TimeoutError):
                    await _next_event(socket, 1.0)  # nothing new, nothing again


# ----------------------------------------------------------------------------- crashes


async def test_killed_engine_comes_back_with_its_cameras_events_and_outbox(
    engines: Engines, clip: Path, labelled_photos: list[LabelledPhoto], test_pack: Path
) -> None:
    """SIGKILL while alerts wait for a registry that is down: after a restart the cameras
    run from the persisted configuration (no push), the events the client had not read are
    delivered, and every alert reaches the registry once it is back."""
    registry = registry_with_persons(labelled_photos)
    await registry.start()
    engine = engines()
    try:
        engine.start()
        async with EngineClient(engine) as api:
            await api.put_config(registry_config(registry.url, registry.key))
            await wait_for(lambda: _gallery_ok(api), "the first registry sync", 60)
            async with api.events() as socket:
                hello = await _next_event(socket)
                read = await _events_until(
                    socket, lambda seen: bool(seen) and seen[-1]["id"] >= hello["last_id"]
                )
            last_read = read[-1]["id"]
            await registry.stop()  # the registry goes away; alerts wait in the outbox
            # the camera only now, so that no alert can reach the registry before it is gone
            await api.put_config(registry_config(registry.url, registry.key, camera("door", clip)))
            await wait_for(lambda: _alert_count(api, 2), "both persons' alerts", 60)
            alerts = await alerts_of(api)

            async def both_waiting() -> bool:
                return (await api.info())["outbox"]["pending"] == 2

            await wait_for(both_waiting, "both alerts in the outbox", 10)
        engine.kill()
        assert not engine.running

        await registry.start()  # back on the same port
        engine.start()
        async with EngineClient(engine) as api:
            info = await api.info()
            assert [c["id"] for c in info["cameras"]] == ["door"]
            await wait_for(lambda: _camera_state(api, "door", "streaming"), "the camera again", 30)
            async with api.events(after=last_read) as socket:
                hello = await _next_event(socket)
                replay = await _events_until(
                    socket, lambda seen: bool(seen) and seen[-1]["id"] >= hello["last_id"]
                )
            assert sorted(e["data"]["id"] for e in _matches(replay)) == sorted(
                a["id"] for a in alerts
            )
            assert [e["id"] for e in replay] == list(range(last_read + 1, hello["last_id"] + 1))

            async def delivered() -> bool:
                return {a["id"] for a in alerts} <= set(registry.registry.alerts)

            await wait_for(delivered, "the alerts at the registry", 60)
            assert (await api.info())["outbox"]["pending"] == 0
        # the restarted engine did not alert the same persons again (cooldown kept)
        async with EngineClient(engine) as api:
            assert len(await alerts_of(api)) == 2
    finally:
        engine.kill()
        await registry.stop()


async def test_a_stalling_registry_fails_the_form_test_in_bounded_time(
    engines: Engines, gallery: Path
) -> None:
    """A registry that answers its health check late and then says nothing for the
    first page is reported unreachable within the engine's test time in all, not one
    long timeout per call: a person waits on that form."""
    registry = UprServer()
    await registry.start()
    engine = engines()
    try:
        with engine:
            async with EngineClient(engine) as api:
                await api.put_config(folder_config(gallery))
                registry.delay(TEST_TIMEOUT * 0.7, path="/health")
                registry.delay(120, path="/persons")
                began = time.monotonic()
                status, answer = await api.request(
                    "POST",
                    "/registry/test",
                    {"url": registry.url, "api_key": registry.key, "verify_ssl": True},
                )
                took = time.monotonic() - began
    finally:
        await registry.stop()
    assert status == 200
    assert answer["error"]["code"] == "cannot_connect"
    assert took < TEST_TIMEOUT + 2.5  # one bounded wait, not one per call
    assert sum(1 for _m, path in registry.requests if path.endswith("/health")) == 1


async def test_a_disk_that_takes_nothing_loses_no_alert(
    engines: Engines, clip: Path, labelled_photos: list[LabelledPhoto]
) -> None:
    """The alert images folder and the outbox cannot be written (here: each replaced by
    a file, as a full or read-only disk refuses writes): every alert still fires on the
    event stream and reaches the registry, without images; the engine names the folder
    in a problem instead of failing."""
    registry = registry_with_persons(labelled_photos)
    await registry.start()
    engine = engines()
    try:
        engine.start()
        async with EngineClient(engine) as api:
            await api.put_config(registry_config(registry.url, registry.key))
            await wait_for(lambda: _gallery_ok(api), "the first registry sync", 60)
            for folder in ("alerts", "outbox"):
                shutil.rmtree(engine.data / folder)
                (engine.data / folder).write_bytes(b"")  # nothing can be written in it
            async with api.events() as socket:
                await _next_event(socket)
                await api.put_config(
                    registry_config(registry.url, registry.key, camera("door", clip))
                )
                seen = await _events_until(socket, lambda events: len(_matches(events)) >= 2)
            info = await api.info()

            async def delivered() -> bool:
                return len(registry.registry.alerts) >= 2

            await wait_for(delivered, "the alerts at the registry", 60)
    finally:
        engine.kill()
        await registry.stop()
    matches = _matches(seen)
    assert {m["data"]["person_id"] for m in matches} == set(SHOWN)
    assert [m["data"]["has_images"] for m in matches] == [False, False]
    assert set(registry.registry.alerts) == {m["data"]["id"] for m in matches}
    problems = {p["key"]: p for p in info["problems"]}
    assert problems["storage"]["code"] == "storage_failed"
    assert problems["storage"]["placeholders"]["folder"] in {
        str(engine.data.resolve() / "alerts"),
        str(engine.data.resolve() / "outbox"),
    }
    assert "Traceback" not in engine.log_text()


async def test_a_verdict_that_cannot_be_queued_changes_nothing(
    engines: Engines, clip: Path, labelled_photos: list[LabelledPhoto]
) -> None:
    """The outbox cannot take the verdict (its folder takes no write): the answer is a
    503 naming the folder, the alert stays pending (nothing half-applied), and the same
    verdict once the folder is back is recorded and reaches the registry."""
    registry = registry_with_persons(labelled_photos)
    await registry.start()
    engine = engines()
    try:
        engine.start()
        async with EngineClient(engine) as api:
            await api.put_config(registry_config(registry.url, registry.key, camera("door", clip)))
            alert = (await wait_for(lambda: alerts_of(api), "an alert", 60))[-1]

            async def delivered() -> bool:
                return alert["id"] in registry.registry.alerts

            await wait_for(delivered, "the alert at the registry", 30)
            outbox = engine.data / "outbox"
            shutil.rmtree(outbox)
            outbox.write_bytes(b"")
            body = {"verdict": "confirmed", "user_name": "Agent Martin"}
            path = f"/alerts/{alert['id']}/verdict"
            status, refused = await api.request("POST", path, body)
            _, after = await api.get(f"/alerts/{alert['id']}")
            outbox.unlink()
            outbox.mkdir()
            (outbox / "rejected").mkdir()
            status_again, decided = await api.request("POST", path, body)

            async def verdict_sent() -> bool:
                return any(v["alert_id"] == alert["id"] for v in registry.registry.verdicts)

            await wait_for(verdict_sent, "the verdict at the registry", 30)
    finally:
        engine.kill()
        await registry.stop()
    assert status == 503
    assert refused["error"]["code"] == "storage_failed"
    assert refused["error"]["placeholders"]["folder"] == str(outbox.resolve())
    assert after["state"] == "pending"
    assert (status_again, decided["state"]) == (200, "confirmed")


async def test_a_stop_records_every_match_on_its_way(tmp_path: Path) -> None:
    """Matches the pipeline handed over just before a stop are recorded whole (alert,
    images 0600, event) before the database closes: none is lost to the stop."""
    data = tmp_path / "data"
    engine = Engine(data, version="test", media=())
    await engine.start()
    handed = [
        MatchEvent(
            camera="door",
            person_id=f"p{n}",
            similarity=0.7,
            tier="match",
            track_id=n,
            detected_at=time.time(),
            latency_s=0.1,
            box=(0.0, 0.0, 10.0, 10.0),
            snapshot_jpeg=b"\xff\xd8frame",
            face_jpeg=b"\xff\xd8face",
        )
        for n in range(5)
    ]
    for event in handed:  # as the pipeline's threads do, right before the stop
        engine._on_match_threadsafe(event)
    await engine.stop()
    store = Store(data)
    try:
        kept = {alert["id"] for alert in store.alerts()}
        logged = [e.data["id"] for e in store.events_after(0) if e.type == "match"]
    finally:
        store.close()
    assert kept == {event.match_id for event in handed}
    assert sorted(logged) == sorted(kept)
    for event in handed:
        frame = engine.image_path(event.match_id, "frame")
        assert stat.S_IMODE(frame.stat().st_mode) == 0o600


async def _gallery_ok(api: EngineClient) -> bool:
    info = await api.info()
    return info["gallery"]["state"] == "ok" and info["gallery"]["persons"] == 6


async def test_a_registry_that_never_answers_does_not_delay_the_first_match(
    engines: Engines, clip: Path, labelled_photos: list[LabelledPhoto], test_pack: Path
) -> None:
    """With a gallery synced before, the engine matches at once while its sync hangs;
    with none, it says so (a problem clients can show) instead of waiting."""
    registry = registry_with_persons(labelled_photos)
    await registry.start()
    engine = engines()
    try:
        engine.start()
        async with EngineClient(engine) as api:
            await api.put_config(registry_config(registry.url, registry.key))
            await wait_for(lambda: _gallery_ok(api), "the first registry sync", 60)
        engine.stop()

        registry.delay(3600, times=1000)  # accepts, never answers
        engine.start()
        async with EngineClient(engine) as api:
            started = asyncio.get_running_loop().time()
            await api.put_config(registry_config(registry.url, registry.key, camera("door", clip)))
            info = await api.info()
            assert info["gallery"]["state"] == "cached"
            assert info["gallery"]["persons"] == 6
            await wait_for(lambda: _alert_count(api, 1), "a match from the cached gallery", 30)
            assert asyncio.get_running_loop().time() - started < 30

        fresh = engines("fresh")
        fresh.start()
        async with EngineClient(fresh) as api:
            answer = await api.put_config(registry_config(registry.url, registry.key))
            assert answer["changed"] is True
            info = await api.info()
            assert info["gallery"]["state"] == "no_gallery_yet"
            assert [p["code"] for p in info["problems"]] == ["no_gallery_yet"]
    finally:
        engine.kill()
        await registry.stop()


# ----------------------------------------------------------------------------- operators


async def test_alerts_images_verdicts_and_audit(
    engines: Engines, clip: Path, labelled_photos: list[LabelledPhoto], test_pack: Path
) -> None:
    """An alert's face crop and frame (0600), its registry photo, a rejection with the
    deciding user (sent to the registry, audited, on the stream; the face's images
    deleted, its embedding kept), a second verdict refused, an unknown alert a clean
    404."""
    registry = registry_with_persons(labelled_photos)
    await registry.start()
    engine = engines()
    try:
        with engine:
            async with EngineClient(engine) as api:
                await api.put_config(
                    registry_config(registry.url, registry.key, camera("door", clip))
                )
                alert = (await wait_for(lambda: alerts_of(api), "an alert", 60))[0]
                assert alert["reference"] == f"UPR-{alert['person_id'][-1]}"
                assert alert["display_name"] == f"Person {alert['person_id'][-1]}"
                assert alert["sightings"][0]["has_face"] is True
                for kind in ("face", "frame", "s1"):  # best face and frame, sighting 1
                    status, image = await api.get(f"/alerts/{alert['id']}/{kind}.jpg")
                    assert status == 200
                    assert image[:2] == b"\xff\xd8"
                    path = engine.data / "alerts" / f"{alert['id']}_{kind}.jpg"
                    assert stat.S_IMODE(path.stat().st_mode) == 0o600
                status, photo = await api.get(f"/persons/{alert['person_id']}/photo")
                assert status == 200
                assert photo[:2] == b"\xff\xd8"

                async with api.events(after=(await api.info())["events"]["last_id"]) as socket:
                    await _next_event(socket)
                    status, decided = await api.request(
                        "POST",
                        f"/alerts/{alert['id']}/verdict",
                        {
                            "verdict": "rejected",
                            "user_id": "u-7",
                            "user_name": "Agent Martin",
                            "comment": "pas lui",
                        },
                    )
                    assert status == 200, decided
                    event = await _events_until(
                        socket, lambda seen: any(e.get("type") == "alert_decided" for e in seen)
                    )
                assert decided["state"] == "rejected"
                assert decided["decided_by"] == "u-7"
                assert decided["decided_by_name"] == "Agent Martin"
                assert event[-1]["data"] == decided
                # not that person: the face matches no one, its images are gone; the
                # record keeps its embedding (never shown to clients)
                assert decided["has_images"] is False
                assert "embedding" not in decided
                for kind in ("face", "frame"):
                    status, _ = await api.get(f"/alerts/{alert['id']}/{kind}.jpg")
                    assert status == 404
                    assert not (engine.data / "alerts" / f"{alert['id']}_{kind}.jpg").exists()

                status, again = await api.request(
                    "POST",
                    f"/alerts/{alert['id']}/verdict",
                    {"verdict": "confirmed", "user_name": "B"},
                )
                assert status == 409
                assert again["error"]["code"] == "already_decided"
                assert again["error"]["placeholders"]["by"] == "Agent Martin"
                status, unknown = await api.request(
                    "POST", "/alerts/nope/verdict", {"verdict": "confirmed"}
                )
                assert status == 404
                assert unknown["error"]["code"] == "unknown_match"
                status, bad = await api.request(
                    "POST", f"/alerts/{alert['id']}/verdict", {"verdict": "maybe"}
                )
                assert status == 400

                async def verdict_sent() -> list[dict[str, Any]]:
                    return [v for v in registry.registry.verdicts if v["alert_id"] == alert["id"]]

                sent = (await wait_for(verdict_sent, "the verdict at the registry", 30))[0]
                assert sent["verdict"] == "rejected"
                assert sent["by"] == "Agent Martin"
                status, audit = await api.get("/audit")
                actions = [(line["action"], line["user_name"]) for line in audit["audit"]]
                assert ("rejected", "Agent Martin") in actions
                assert ("alert", None) in actions
        store = Store(engine.data)
        try:
            kept = store.alert(alert["id"])
        finally:
            store.close()
        assert kept is not None
        assert kept["embeddings"]  # one per sighting, none shown to clients
        for vector in kept["embeddings"]:
            assert len(vector) == 128  # the test pack's recognizer
            assert abs(sum(v * v for v in vector) - 1.0) < 1e-3
        assert not list((engine.data / "alerts").glob(f"{alert['id']}_*"))
    finally:
        await registry.stop()


async def test_live_view_snapshot_and_monitoring(
    engines: Engines, gallery: Path, clip: Path
) -> None:
    """The MJPEG live view and the snapshot come from the engine; stopping a camera's
    monitoring stops it (remembered across a restart), starting it again brings it back."""
    engine = engines()
    with engine:
        async with EngineClient(engine) as api:
            await api.put_config(folder_config(gallery, camera("door", clip)))
            await wait_for(lambda: _camera_state(api, "door", "streaming"), "the camera", 30)

            async def snapshot() -> bytes | None:
                status, body = await api.get("/cameras/door/snapshot.jpg?width=320")
                return body if status == 200 else None

            image = await wait_for(snapshot, "a snapshot", 30)
            assert image[:2] == b"\xff\xd8"
            assert api.session is not None
            async with api.session.get(
                f"{engine.url}/api/v1/cameras/door/stream.mjpg?fps=5", headers=api.headers
            ) as response:
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("multipart/x-mixed-replace")
                data = b""
                while data.count(b"--frame") < 3:
                    data += await asyncio.wait_for(response.content.read(65536), 10)
            assert data.count(b"\xff\xd8") >= 2
            status, missing = await api.get("/cameras/nope/snapshot.jpg")
            assert status == 404
            assert missing["error"]["code"] == "unknown_camera"

            status, _ = await api.request(
                "POST", "/cameras/door/monitoring", {"on": False, "user_name": "Op"}
            )
            assert status == 200
            info = await api.info()
            assert info["cameras"][0]["monitoring"] is False
            assert info["cameras"][0]["state"] == "stopped"
    with engine:  # restarted: still stopped
        async with EngineClient(engine) as api:
            info = await api.info()
            assert info["cameras"][0]["monitoring"] is False
            assert info["cameras"][0]["state"] == "stopped"
            await api.request("POST", "/cameras/door/monitoring", {"on": True})
            await wait_for(lambda: _camera_state(api, "door", "streaming"), "the camera again", 30)


async def test_what_the_forms_need(
    engines: Engines, gallery: Path, clip: Path, tmp_path: Path, test_pack: Path
) -> None:
    """Test a camera source (cannot_connect, invalid_auth, not_a_video, invalid_source),
    scan USB cameras, test a registry, list and verify model packs, check gallery folders
    and sources, refresh the gallery."""
    text_file = tmp_path / "notes.mp4"
    text_file.write_text("not a video at all\n" * 100)
    with rtsp_server(clip, user="cam", password="s3cret-pw") as rtsp:
        registry = UprServer()
        await registry.start()
        engine = engines()
        try:
            with engine:
                async with EngineClient(engine) as api:
                    await api.put_config(folder_config(gallery))

                    async def test(source: str) -> dict[str, Any]:
                        status, answer = await api.request(
                            "POST", "/sources/test", {"source": source}
                        )
                        assert status == 200, answer
                        result: dict[str, Any] = answer
                        return result

                    ok = await test(f"file://{clip}")
                    assert ok == {"ok": True, "width": 1280, "height": 720}
                    assert (await test(rtsp.url))["ok"] is True
                    refused = await test(rtsp.url_with("cam", "wrong"))
                    assert refused["error"]["code"] == "invalid_auth"
                    assert "wrong" not in json.dumps(refused)
                    closed = await test(f"rtsp://127.0.0.1:{registry.port + 1}/cam")
                    assert closed["error"]["code"] == "cannot_connect"
                    assert (await test(f"file://{text_file}"))["error"]["code"] == "not_a_video"
                    assert (await test("gopher://x/"))["error"]["code"] == "invalid_source"

                    status, scan = await api.request("POST", "/usb/scan", {"user_name": "Admin"})
                    assert status == 200
                    assert scan == {"cameras": []}

                    async def registry_test(key: str, url: str = registry.url) -> dict[str, Any]:
                        _, answer = await api.request(
                            "POST",
                            "/registry/test",
                            {"url": url, "api_key": key, "verify_ssl": True},
                        )
                        result: dict[str, Any] = answer
                        return result

                    assert (await registry_test(registry.key))["ok"] is True
                    assert (await registry_test("nope"))["error"]["code"] == "invalid_auth"
                    gone = f"http://127.0.0.1:{registry.port + 1}/api"
                    assert (await registry_test("k", gone))["error"]["code"] == "cannot_connect"

                    status, packs = await api.get("/models")
                    assert [p["name"] for p in packs["packs"]] == [
                        "buffalo_l",
                        "buffalo_m",
                        "buffalo_s",
                        "buffalo_sc",
                    ]
                    assert not any(p["installed"] for p in packs["packs"])
                    _, verified = await api.request(
                        "POST", "/models/verify", {"folder": str(test_pack)}
                    )
                    assert verified["ok"] is True
                    assert verified["detector"] == "det_500m.onnx"
                    _, empty = await api.request(
                        "POST", "/models/verify", {"folder": str(tmp_path)}
                    )
                    assert empty["error"]["code"] == "invalid_model_dir"

                    async def folder(path: str) -> dict[str, Any]:
                        _, answer = await api.request("POST", "/folders/check", {"folder": path})
                        result: dict[str, Any] = answer
                        return result

                    new = tmp_path / "galleries" / "lyon"
                    assert await folder(f"{new}/") == {"ok": True, "folder": str(new)}
                    assert new.is_dir()  # created
                    read_only = tmp_path / "media"
                    read_only.mkdir(mode=0o555)  # the add-on's /media is mounted read-only
                    assert (await folder(str(read_only)))["ok"] is True
                    blocked = str(text_file / "sub")  # under a file
                    answer = await folder(blocked)
                    assert answer["error"]["code"] == "folder_not_writable"
                    assert answer["error"]["placeholders"]["folder"] == blocked
                    status, answer = await api.request(
                        "POST", "/folders/check", {"folder": "faces/gallery"}
                    )
                    assert (status, answer["error"]["code"]) == (400, "invalid_request")

                    _, checked = await api.request(
                        "POST", "/sources/check", {"source": "rstp://u:pw@h/x"}
                    )
                    assert checked["ok"] is False
                    assert checked["masked"] == "rstp://u:***@h/x"  # shown back masked

                    status, refreshed = await api.request(
                        "POST", "/gallery/refresh", {"user_name": "Admin"}
                    )
                    assert status == 200
                    assert refreshed["ok"] is True
                    assert refreshed["persons"] == 6
            assert "s3cret-pw" not in engine.log_text()
        finally:
            await registry.stop()


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (openssl)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_tls_with_a_certificate(engines: Engines, certificate: tuple[Path, Path]) -> None:
    """Given a certificate, the engine speaks HTTPS (plain HTTP gets nothing); a client
    that trusts the certificate gets in with the token."""
    cert, key = certificate
    engine = engines(extra=("--certfile", str(cert), "--keyfile", str(key)))
    with engine:
        assert engine.url.startswith("https://127.0.0.1:")
        trust = ssl.create_default_context(cafile=str(cert))
        async with EngineClient(engine, ssl=trust) as api:
            status, health = await api.get("/health")
            assert status == 200
            assert health["status"] == "ok"
        plain = engine.url.replace("https://", "http://")
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientError):
                async with session.get(f"{plain}/api/v1/health") as response:
                    await response.read()


async def test_model_pack_downloaded_on_request_then_used(
    engines: Engines, gallery: Path, test_pack: Path, tmp_path: Path
) -> None:
    """A configuration naming an official pack that is not there yet raises a problem the
    client can show (where the files go, where they come from); a download on request
    (from a mirror here) reports its progress, and the engine starts with the pack."""
    import io
    import zipfile

    from aiohttp import web

    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.write(test_pack / "det_500m.onnx", "det_500m.onnx")
        # the stand-in recognizer under its own name: as w600k_mbf.onnx its sha256 is not
        # the official one, and the download would be refused
        zipped.write(test_pack / "mobilefacenet_128d.onnx", "mobilefacenet_128d.onnx")
    body = archive.getvalue()

    async def serve_zip(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/zip")

    app = web.Application()
    app.router.add_get("/mirror/buffalo_sc.zip", serve_zip)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    mirror = f"http://127.0.0.1:{runner.addresses[0][1]}/mirror/buffalo_sc.zip"
    engine = engines()
    try:
        with engine:
            async with EngineClient(engine) as api:
                config = folder_config(gallery)
                config["models"] = {"pack": "buffalo_sc"}
                answer = await api.put_config(config)
                assert answer["reloaded"] == []
                info = await api.info()
                problem = info["problems"][0]
                assert problem["code"] == "model_pack_missing"
                assert problem["placeholders"]["files"] == "det_500m.onnx, w600k_mbf.onnx"
                assert problem["placeholders"]["folder"] == str(
                    engine.data / "models" / "buffalo_sc"
                )
                status, job = await api.request(
                    "POST", "/models/buffalo_sc/download", {"url": mirror}
                )
                assert status == 202
                assert job["state"] == "running"

                async def finished() -> dict[str, Any] | None:
                    _, job = await api.get("/models/buffalo_sc/download")
                    return job if job["state"] != "running" else None

                job = await wait_for(finished, "the download", 60)
                assert job["state"] == "done"
                assert job["done"] == job["total"] == len(body)

                async def running() -> bool:
                    info = await api.info()
                    return info["gallery"]["persons"] == 6 and info["models"]["detector"] == (
                        "det_500m.onnx"
                    )

                await wait_for(running, "the engine on the new pack with its gallery", 30)
                info = await api.info()
                assert info["problems"] == []
                assert info["models"]["recognizer"] == "mobilefacenet_128d.onnx"
                _, packs = await api.get("/models")
                assert [p["installed"] for p in packs["packs"] if p["name"] == "buffalo_sc"] == [
                    True
                ]
                status, unknown = await api.request("POST", "/models/antelope/download", {})
                assert status == 400
                assert unknown["error"]["code"] == "unknown_pack"
    finally:
        await runner.cleanup()


async def test_retention_drops_old_alerts_their_images_and_audit(
    engines: Engines, gallery: Path
) -> None:
    """Alerts and audit lines older than ``retention_days`` go, with their images, at the
    engine's start and hourly after; younger ones stay."""
    now = time.time()

    def iso(days_ago: float) -> str:
        return datetime.fromtimestamp(now - days_ago * 86_400, UTC).isoformat()

    def alert(alert_id: str, days_ago: float) -> dict[str, Any]:
        return {
            "match_id": alert_id,
            "tier": "match",
            "person_id": "deepface_C",
            "similarity": 0.7,
            "camera_id": "door",
            "camera_name": "Door",
            "detected_at": iso(days_ago),
            "state": "pending",
            "has_snapshot": True,
        }

    engine = engines()
    with engine:
        async with EngineClient(engine) as api:
            await api.put_config(folder_config(gallery, retention_days=30))
            status, imported = await api.request(
                "POST",
                "/import",
                {
                    "origin": "test",
                    "alerts": [alert("old-alert", 40), alert("young-alert", 2)],
                    "audit": [
                        {"at": iso(40), "action": "confirmed", "details": {}},
                        {"at": iso(2), "action": "rejected", "details": {}},
                    ],
                },
            )
            assert status == 200
            assert (imported["alerts"], imported["audit"]) == (2, 2)
    images = engine.data / "alerts"
    for alert_id in ("old-alert", "young-alert"):
        for kind in ("face", "frame"):
            (images / f"{alert_id}_{kind}.jpg").write_bytes(b"\xff\xd8 evidence")
    with engine:  # housekeeping runs at the start
        async with EngineClient(engine) as api:

            async def pruned() -> bool:
                _, alerts = await api.get("/alerts?limit=10")
                return [a["id"] for a in alerts["alerts"]] == ["young-alert"]

            await wait_for(pruned, "the old alert dropped", 20)
            _, trail = await api.get("/audit")
    assert sorted(p.name for p in images.iterdir()) == [
        "young-alert_face.jpg",
        "young-alert_frame.jpg",
    ]
    actions = [line["action"] for line in trail["audit"]]
    assert "rejected" in actions
    assert "confirmed" not in actions
