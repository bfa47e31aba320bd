"""Day-to-day operations in the real core on a real engine: views, services, repairs,
system health, the logbook, options, devices, removal."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

import cv2
import numpy as np
import pytest
from freezegun import freeze_time
from homeassistant.components.camera import async_get_image
from homeassistant.config_entries import ConfigEntryState, ConfigSubentry
from homeassistant.core import Context, HomeAssistant
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers import issue_registry as ir
from homeassistant.setup import async_setup_component
from homeassistant.util import dt as dt_util
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_capture_events,
    get_system_health_info,
)
from pytest_homeassistant_custom_component.typing import (
    ClientSessionGenerator,
    WebSocketGenerator,
)

from custom_components.upr_faces import async_remove_config_entry_device
from custom_components.upr_faces.const import (
    CONF_COOLDOWN,
    CONF_MODEL_DIR,
    CONF_NAME,
    CONF_SOURCE,
    DOMAIN,
    EVENT_AUDIT,
    EVENT_MATCH,
    SUBENTRY_CAMERA,
)
from custom_components.upr_faces.logbook import async_describe_events

from ..conftest import LabelledPhoto, make_gallery
from ..service.engine_process import EngineClient, EngineProcess
from ..streams import closed_port, mjpeg_server
from ..upr_server import UprServer
from .common import camera, find_device, folder_entry, registry_entry, set_up_until_alert, wait_for


@pytest.fixture
async def http(hass: HomeAssistant) -> None:
    """Home Assistant's HTTP server (for the views and signed paths)."""
    assert await async_setup_component(hass, "http", {})


async def test_folder_entry_operations(
    hass: HomeAssistant,
    http: None,
    hass_client: ClientSessionGenerator,
    engine: EngineProcess,
    test_pack: Path,
    clip: Path,
    labelled_photos: list[LabelledPhoto],
    tmp_path: Path,
) -> None:
    gallery = make_gallery(tmp_path / "gallery", labelled_photos)
    dead = f"rtsp://viewer:s3cret@127.0.0.1:{closed_port()}/cam"
    entry = folder_entry(gallery, test_pack, camera(clip), camera(dead, "Gate"), engine=engine)
    entry.add_to_hass(hass)
    # a device of a camera removed while Home Assistant was down
    stale = dr.async_get(hass).async_get_or_create(
        config_entry_id=entry.entry_id, identifiers={(DOMAIN, f"{entry.entry_id}_gone")}
    )
    events = async_capture_events(hass, EVENT_MATCH)
    assert await hass.config_entries.async_setup(entry.entry_id)
    coordinator = entry.runtime_data
    door_id, gate_id = (
        sid for sid, sub in sorted(entry.subentries.items(), key=lambda i: i[1].title != "Door")
    )
    assert dr.async_get(hass).async_get(stale.id) is None
    await wait_for(lambda: len(events) >= 1, 40)
    await hass.async_block_till_done()
    record = events[0].data
    client = await hass_client()

    # images of the alert and the gallery's photo, behind auth
    for kind in ("face", "frame"):
        url = f"/api/upr_faces/{entry.entry_id}/snapshot/{record['match_id']}/{kind}"
        response = await client.get(url)
        assert response.status == 200
        assert (await response.read())[:2] == b"\xff\xd8"
    bad = f"/api/upr_faces/{entry.entry_id}/snapshot/{record['match_id']}/other"
    assert (await client.get(bad)).status == 404
    assert (await client.get(f"/api/upr_faces/{entry.entry_id}/snapshot/nope/face")).status == 404
    assert (await client.get("/api/upr_faces/nope/snapshot/x/face")).status == 404
    photo = await client.get(f"/api/upr_faces/{entry.entry_id}/person/{record['person_id']}/photo")
    assert photo.status == 200
    assert photo.content_type == "image/jpeg"
    missing = f"/api/upr_faces/{entry.entry_id}/person/nobody/photo"
    assert (await client.get(missing)).status == 404

    # live view and last-match image
    image = await async_get_image(hass, "camera.door")
    assert image.content[:2] == b"\xff\xd8"
    proxy = await client.get("/api/image_proxy/image.door_last_match_face")
    assert proxy.status == 200
    assert (await proxy.read())[:2] == b"\xff\xd8"
    assert hass.states.get("camera.gate").state == "unavailable"
    assert hass.states.get("binary_sensor.gate_stream").state == "off"

    # services
    found = await hass.services.async_call(
        DOMAIN,
        "scan_usb_cameras",
        {"config_entry_id": entry.entry_id},
        blocking=True,
        return_response=True,
    )
    async with EngineClient(engine) as api:
        status, scanned = await api.request("POST", "/usb/scan", {})
    assert status == 200
    assert found == scanned  # the engine's host: this machine, whatever USB cameras it has
    await hass.services.async_call(
        DOMAIN, "refresh_gallery", {"config_entry_id": entry.entry_id}, blocking=True
    )
    later = await hass.services.async_call(
        DOMAIN,
        "export_audit",
        {"config_entry_id": entry.entry_id, "since": dt_util.utcnow() + timedelta(hours=1)},
        blocking=True,
        return_response=True,
    )
    assert later["audit"] == []
    # as the UI's datetime selector sends it: a naive time, in Home Assistant's time zone
    # (here far from the machine's UTC)
    await hass.config.async_set_time_zone("America/Los_Angeles")
    local_now = dt_util.as_local(dt_util.utcnow()).replace(tzinfo=None)

    async def audit_since(when: datetime) -> list[Any]:
        answer = await hass.services.async_call(
            DOMAIN,
            "export_audit",
            {"config_entry_id": entry.entry_id, "since": when.isoformat(sep=" ")},
            blocking=True,
            return_response=True,
        )
        return list(answer["audit"])

    assert await audit_since(local_now + timedelta(minutes=30)) == []
    recent = await audit_since(local_now - timedelta(minutes=30))
    assert any(a["action"] == "gallery_refresh" for a in recent)
    with pytest.raises(ServiceValidationError) as err:
        await hass.services.async_call(
            DOMAIN, "refresh_gallery", {"config_entry_id": "nope"}, blocking=True
        )
    assert err.value.translation_key == "entry_not_loaded"
    assert await hass.services.async_call(
        DOMAIN,
        "confirm_match",
        {"match_id": record["match_id"]},
        blocking=True,
        return_response=True,
    ) == {"match_id": record["match_id"], "state": "confirmed"}

    # system health
    assert await async_setup_component(hass, "system_health", {})
    await hass.async_block_till_done()  # platforms register in the background
    info = await get_system_health_info(hass, DOMAIN)
    assert info["total_cameras"] == 2
    assert info["active_streams"] == 1
    assert info["gallery_size"] == 6
    assert info["registry_reachable"] == "-"
    assert info["last_detection"] != "-"
    # at the minute: the sensor changes at most once a minute, not at every analysed frame
    shown = dt_util.parse_datetime(hass.states.get("sensor.upr_faces_last_detection").state)
    engine_time = dt_util.parse_datetime(coordinator.info["last_detection"])
    assert shown is not None
    assert engine_time is not None
    assert (shown.second, shown.microsecond) == (0, 0)
    assert timedelta(0) <= engine_time - shown < timedelta(minutes=2)
    assert info["engine_reachable"] is True
    assert info["engine_version"] == (await _engine_info(engine))["version"]
    # in-process sessions (no Ray cluster), on the CPU
    assert info["analysis_backend"] == "local (CPUExecutionProvider)"

    # the logbook describes audit events
    described: dict[str, Any] = {}

    def describe(domain: str, event_type: str, func: Any) -> None:
        described[event_type] = func

    async_describe_events(hass, describe)
    audit_events = async_capture_events(hass, EVENT_AUDIT)
    await coordinator.async_audit_action("camera_stopped", None, camera="Gate")
    line = described[EVENT_AUDIT](audit_events[-1])
    assert line == {"name": "UPR Faces", "message": "stopped watching Gate"}

    # a camera offline for 10 minutes raises a repair issue, which goes when it is stopped
    await wait_for(lambda: coordinator.data.cameras[gate_id].state == "offline", 20)
    await coordinator._async_tick(dt_util.utcnow())
    issues = ir.async_get(hass)
    assert issues.async_get_issue(DOMAIN, f"camera_offline_{gate_id}") is None
    coordinator._offline_since[gate_id] = time.time() - 601
    await coordinator._async_tick(dt_util.utcnow())
    issue = issues.async_get_issue(DOMAIN, f"camera_offline_{gate_id}")
    assert issue is not None
    assert issue.translation_placeholders["camera"] == "Gate"
    assert "s3cret" not in str(issue.translation_placeholders)
    await hass.services.async_call(
        "switch", "turn_off", {"entity_id": "switch.gate_monitoring"}, blocking=True
    )
    await coordinator._async_tick(dt_util.utcnow())
    assert issues.async_get_issue(DOMAIN, f"camera_offline_{gate_id}") is None

    # devices: only a camera that is gone may be deleted by hand
    registry = dr.async_get(hass)
    door_device = find_device(hass, entry.entry_id, f"{entry.entry_id}_{door_id}")
    assert door_device is not None
    assert not await async_remove_config_entry_device(hass, entry, door_device)
    gone = registry.async_get_or_create(
        config_entry_id=entry.entry_id, identifiers={(DOMAIN, "old-camera")}
    )
    assert await async_remove_config_entry_device(hass, entry, gone)

    # an option change is pushed to the engine (no reload) and audited there
    hass.config_entries.async_update_entry(entry, options={**entry.options, CONF_COOLDOWN: 120})
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    assert entry.runtime_data is coordinator
    async with EngineClient(engine) as api:
        _status, config = await api.get("/config")
        _status, trail = await api.get("/audit")
    assert config["options"]["cooldown"] == 120
    changed = [a for a in trail["audit"] if a["action"] == "options_changed"]
    assert changed[-1]["details"] == {CONF_COOLDOWN: 120}

    # removing an entry on an engine elsewhere leaves that engine alone
    assert await hass.config_entries.async_remove(entry.entry_id)
    await hass.async_block_till_done()
    assert engine.running
    assert not hass_storage_keys(hass, entry.entry_id)


def hass_storage_keys(hass: HomeAssistant, entry_id: str) -> list[str]:
    """What Home Assistant's storage still holds for an entry."""
    from homeassistant.helpers.storage import STORAGE_DIR

    folder = Path(hass.config.path(STORAGE_DIR))
    if not folder.is_dir():
        return []
    return [path.name for path in folder.iterdir() if entry_id in path.name]


async def _engine_info(engine: EngineProcess) -> dict[str, Any]:
    async with EngineClient(engine) as api:
        return await api.info()


async def test_operators_decide_admins_do_the_rest(
    hass: HomeAssistant,
    http: None,
    hass_client: ClientSessionGenerator,
    hass_ws_client: WebSocketGenerator,
    hass_read_only_access_token: str,
    hass_read_only_user: Any,
    engine: EngineProcess,
    test_pack: Path,
    clip: Path,
    labelled_photos: list[LabelledPhoto],
    tmp_path: Path,
) -> None:
    """A user who is not an admin (an operator) sees the alerts and confirms one; the
    audit export, a gallery refresh, a USB scan and the monitoring switch are refused to
    them over REST and the websocket API (401 / unauthorized) and change nothing; an
    unknown match_id over REST is a 400, not a 500."""
    assert await async_setup_component(hass, "api", {})
    gallery = make_gallery(tmp_path / "gallery", labelled_photos)
    entry = folder_entry(gallery, test_pack, camera(clip), engine=engine)
    events = await set_up_until_alert(hass, entry)
    await hass.async_block_till_done()
    match_id = events[0].data["match_id"]
    operator = await hass_client(hass_read_only_access_token)
    admin = await hass_client()
    entry_only = {"config_entry_id": entry.entry_id}

    refused = {}
    for service, body in (
        ("export_audit", entry_only),
        ("refresh_gallery", entry_only),
        ("scan_usb_cameras", entry_only),
    ):
        query = "?return_response" if service != "refresh_gallery" else ""
        response = await operator.post(f"/api/services/{DOMAIN}/{service}{query}", json=body)
        refused[service] = response.status
    off = await operator.post(
        "/api/services/switch/turn_off", json={"entity_id": "switch.door_monitoring"}
    )
    press = await operator.post(
        "/api/services/button/press", json={"entity_id": "button.upr_faces_refresh_gallery"}
    )
    await hass.async_block_till_done()
    assert refused == {"export_audit": 401, "refresh_gallery": 401, "scan_usb_cameras": 401}
    assert (off.status, press.status) == (401, 401)
    assert hass.states.get("switch.door_monitoring").state == "on"

    socket = await hass_ws_client(hass, hass_read_only_access_token)
    await socket.send_json_auto_id(
        {
            "type": "call_service",
            "domain": DOMAIN,
            "service": "export_audit",
            "service_data": entry_only,
            "return_response": True,
        }
    )
    answer = await socket.receive_json()
    # Home Assistant answers an Unauthorized raised by a service as it does for its own
    # admin services (async_register_admin_service)
    assert (answer["success"], answer["error"]["message"]) == (False, "Unauthorized")

    # what operators do: see the alerts, decide one
    await socket.send_json_auto_id({"type": f"{DOMAIN}/alerts/subscribe"})
    assert (await socket.receive_json())["success"] is True
    snapshot = await socket.receive_json()
    assert match_id in [a["match_id"] for a in snapshot["event"]["alerts"]]
    unknown = await operator.post(
        f"/api/services/{DOMAIN}/confirm_match", json={"match_id": "no-such-alert"}
    )
    confirmed = await operator.post(
        f"/api/services/{DOMAIN}/confirm_match", json={"match_id": match_id}
    )
    assert (unknown.status, confirmed.status) == (400, 200)
    exported = await admin.post(
        f"/api/services/{DOMAIN}/export_audit?return_response", json=entry_only
    )
    assert exported.status == 200
    audit = (await exported.json())["service_response"]["audit"]
    decided = [a for a in audit if a["action"] == "confirmed"]
    assert [a["user_name"] for a in decided] == [hass_read_only_user.name]
    assert not any(a["action"] in ("camera_stopped", "gallery_refresh") for a in audit)


async def test_model_pack_missing(
    hass: HomeAssistant,
    engine: EngineProcess,
    test_pack: Path,
    labelled_photos: list[LabelledPhoto],
    tmp_path: Path,
) -> None:
    """No models: the engine says so, and a repair issue says which folder to fill."""
    gallery = make_gallery(tmp_path / "gallery", labelled_photos)
    entry = folder_entry(gallery, test_pack, engine=engine)
    entry.add_to_hass(hass)
    empty = tmp_path / "no_models"
    empty.mkdir()
    hass.config_entries.async_update_entry(entry, data={**entry.data, CONF_MODEL_DIR: str(empty)})
    assert await hass.config_entries.async_setup(entry.entry_id)
    await entry.runtime_data._async_tick(dt_util.utcnow())
    issue = ir.async_get(hass).async_get_issue(DOMAIN, f"model_pack_missing_{entry.entry_id}")
    assert issue is not None
    assert issue.translation_key == "model_folder_invalid"
    assert issue.translation_placeholders["folder"] == str(empty)
    # models put in place: a reload clears it
    hass.config_entries.async_update_entry(
        entry, data={**entry.data, CONF_MODEL_DIR: str(test_pack)}
    )
    await hass.async_block_till_done()
    await entry.runtime_data._async_tick(dt_util.utcnow())
    assert (
        ir.async_get(hass).async_get_issue(DOMAIN, f"model_pack_missing_{entry.entry_id}") is None
    )
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_registry_outage_and_recovery(
    hass: HomeAssistant,
    http: None,
    registry: UprServer,
    engine: EngineProcess,
    test_pack: Path,
    clip: Path,
) -> None:
    """The engine reports the registry down; an hour later, repair issues for it and the
    stale gallery; they go once it answers; a refused key starts re-authentication."""
    entry = registry_entry(registry, test_pack, clip, engine)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    coordinator = entry.runtime_data
    await wait_for(lambda: coordinator.data.gallery_size == 6, 30)
    issues = ir.async_get(hass)
    await registry.stop()
    with pytest.raises(HomeAssistantError) as err:
        await hass.services.async_call(
            DOMAIN, "refresh_gallery", {"config_entry_id": entry.entry_id}, blocking=True
        )
    assert err.value.translation_key == "cannot_connect"
    assert coordinator.data.registry_reachable is False
    coordinator._check_repairs()
    assert issues.async_get_issue(DOMAIN, f"registry_unreachable_{entry.entry_id}") is None
    with freeze_time(dt_util.utcnow() + timedelta(hours=1, minutes=1)):
        coordinator._check_repairs()
    issue = issues.async_get_issue(DOMAIN, f"registry_unreachable_{entry.entry_id}")
    assert issue is not None
    assert issue.translation_placeholders["url"] == registry.url
    assert issues.async_get_issue(DOMAIN, f"gallery_stale_{entry.entry_id}") is not None
    # the registry comes back: a sync clears both
    await registry.start()
    await hass.services.async_call(
        DOMAIN, "refresh_gallery", {"config_entry_id": entry.entry_id}, blocking=True
    )
    coordinator._check_repairs()
    assert issues.async_get_issue(DOMAIN, f"registry_unreachable_{entry.entry_id}") is None
    assert issues.async_get_issue(DOMAIN, f"gallery_stale_{entry.entry_id}") is None
    assert coordinator.data.registry_reachable is True
    # a refused key during a refresh starts re-authentication
    registry.fail(401, times=10)
    with pytest.raises(HomeAssistantError) as err:
        await hass.services.async_call(
            DOMAIN, "refresh_gallery", {"config_entry_id": entry.entry_id}, blocking=True
        )
    assert err.value.translation_key == "registry_auth_failed"
    await hass.async_block_till_done()
    flows = hass.config_entries.flow.async_progress_by_handler(DOMAIN)
    assert [flow["context"]["source"] for flow in flows] == ["reauth"]
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_alerts_the_registry_refuses_are_counted_then_repaired(
    hass: HomeAssistant,
    http: None,
    registry: UprServer,
    engine: EngineProcess,
    test_pack: Path,
    clip: Path,
) -> None:
    """The registry answers every alert with 500: the alerts still fire in Home Assistant,
    and the sensors show them stuck and since when; past an hour a repair issue says so;
    once the registry takes them they are delivered, the count falls to 0 and the issue
    goes."""
    registry.fail(500, times=100_000, path="/alerts", method="POST")
    entry = registry_entry(registry, test_pack, clip, engine)
    entry.add_to_hass(hass)
    events = async_capture_events(hass, EVENT_MATCH)
    before = dt_util.utcnow()
    assert await hass.config_entries.async_setup(entry.entry_id)
    coordinator = entry.runtime_data
    await wait_for(lambda: len(events) == 2, 40)

    async def refreshed_until(done: Callable[[], bool]) -> None:
        for _ in range(300):
            await coordinator._async_refresh_info()
            if done():
                return
            await asyncio.sleep(0.2)
        raise AssertionError("timed out waiting")

    await refreshed_until(lambda: coordinator.data.outbox_stuck == 2)
    entities = er.async_get(hass)
    stuck = entities.async_get_entity_id("sensor", DOMAIN, f"{entry.entry_id}_outbox_stuck")
    since = entities.async_get_entity_id("sensor", DOMAIN, f"{entry.entry_id}_outbox_stuck_since")
    assert stuck is not None
    assert since is not None
    assert hass.states.get(stuck).state == "2"
    waiting_since = dt_util.parse_datetime(hass.states.get(since).state)
    assert waiting_since is not None
    assert before - timedelta(seconds=2) <= waiting_since <= dt_util.utcnow()
    issues = ir.async_get(hass)
    issue_id = f"outbox_stuck_{entry.entry_id}"
    coordinator._check_repairs()
    assert issues.async_get_issue(DOMAIN, issue_id) is None
    with freeze_time(dt_util.utcnow() + timedelta(hours=1, minutes=1)):
        coordinator._check_repairs()
    issue = issues.async_get_issue(DOMAIN, issue_id)
    assert issue is not None
    assert issue.translation_placeholders["count"] == "2"
    assert "500" in issue.translation_placeholders["error"]

    registry.faults.clear()  # the registry takes them now
    await refreshed_until(lambda: coordinator.data.outbox_pending == 0)
    assert hass.states.get(stuck).state == "0"
    assert {a["id"] for a in registry.received()["alerts"]} == {e.data["match_id"] for e in events}
    coordinator._check_repairs()
    assert issues.async_get_issue(DOMAIN, issue_id) is None


async def test_a_folder_the_engine_cannot_write_is_a_repair(
    hass: HomeAssistant,
    http: None,
    engine: EngineProcess,
    test_pack: Path,
    clip: Path,
    labelled_photos: list[LabelledPhoto],
    tmp_path: Path,
) -> None:
    """The engine's alert images folder takes no write (a full or read-only disk): the
    alerts still fire in Home Assistant, and a repair issue names the folder."""
    shutil.rmtree(engine.data / "alerts")
    (engine.data / "alerts").write_bytes(b"")
    gallery = make_gallery(tmp_path / "gallery", labelled_photos)
    entry = folder_entry(gallery, test_pack, camera(clip), engine=engine)
    events = await set_up_until_alert(hass, entry)
    coordinator = entry.runtime_data
    await coordinator._async_refresh_info()
    coordinator._check_repairs()
    issue = ir.async_get(hass).async_get_issue(DOMAIN, f"storage_failed_{entry.entry_id}")
    assert issue is not None
    assert issue.severity is ir.IssueSeverity.ERROR
    assert issue.translation_placeholders["folder"] == str((engine.data / "alerts").resolve())
    assert events[0].data["person_id"] in ("deepface_C", "deepface_D")


async def test_what_a_registry_sends_never_stops_set_up(
    hass: HomeAssistant,
    http: None,
    registry: UprServer,
    engine: EngineProcess,
    test_pack: Path,
    clip: Path,
) -> None:
    """An entry with an unparsable photo URL, a person sent twice, a photo of 32000 x
    32000 pixels: the entry loads, the six real persons match, the bad ones are counted
    in the sync the engine reports, and a reload after the registry starts paging for
    ever still loads, on the gallery it has."""
    from ..upr_server import decompression_bomb

    reg = registry.registry
    reg.put_person("U0", photos=[{"id": "u0", "url": "http://[::1"}])
    reg.put_person("U1", photos=[reg.add_photo("bomb.png", decompression_bomb())])
    entry = registry_entry(registry, test_pack, clip, engine)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    assert entry.state is ConfigEntryState.LOADED
    coordinator = entry.runtime_data
    await wait_for(lambda: coordinator.data.gallery_size == 6, 30)
    skipped = coordinator.info["gallery"]["last_sync"]["skipped"]
    assert skipped["bad_photo_url"] == 1
    assert skipped["too_many_pixels"] == 1

    pages = iter(range(1_000_000))
    registry.answer(
        lambda _request: json.dumps(
            {"persons": [], "next_cursor": f"c{next(pages)}", "has_more": True}
        ).encode(),
        times=1000,
        path="/persons",
    )
    assert await hass.config_entries.async_reload(entry.entry_id)
    assert entry.state is ConfigEntryState.LOADED
    coordinator = entry.runtime_data
    with pytest.raises(HomeAssistantError) as err:
        await hass.services.async_call(
            DOMAIN, "refresh_gallery", {"config_entry_id": entry.entry_id}, blocking=True
        )
    assert "no progress" in str(err.value.translation_placeholders)
    assert coordinator.data.gallery_size == 6
    assert registry.count("/persons") < 40  # stopped, not 100 000 pages
    await wait_for(
        lambda: [c.state for c in entry.runtime_data.data.cameras.values()] == ["streaming"], 30
    )


async def test_a_verdict_that_cannot_be_kept_is_said_and_changes_nothing(
    hass: HomeAssistant,
    http: None,
    registry: UprServer,
    engine: EngineProcess,
    test_pack: Path,
    clip: Path,
) -> None:
    """The engine cannot queue a verdict for the registry (its outbox takes no write):
    the service says so in words, the alert stays pending; the same call succeeds once
    the folder is back."""
    entry = registry_entry(registry, test_pack, clip, engine)
    events = await set_up_until_alert(hass, entry)
    match_id = events[0].data["match_id"]
    outbox = engine.data / "outbox"
    shutil.rmtree(outbox)
    outbox.write_bytes(b"")
    with pytest.raises(HomeAssistantError) as err:
        await hass.services.async_call(
            DOMAIN, "confirm_match", {"match_id": match_id}, blocking=True
        )
    assert err.value.translation_key == "verdict_storage_failed"
    assert err.value.translation_placeholders["folder"] == str(outbox.resolve())
    async with EngineClient(engine) as api:
        _, kept = await api.get(f"/alerts/{match_id}")
    assert kept["state"] == "pending"
    outbox.unlink()
    (outbox / "rejected").mkdir(parents=True)
    await hass.services.async_call(DOMAIN, "confirm_match", {"match_id": match_id}, blocking=True)
    async with EngineClient(engine) as api:
        _, kept = await api.get(f"/alerts/{match_id}")
    assert kept["state"] == "confirmed"


async def test_a_camera_offline_issue_of_a_previous_run_goes_once_it_streams(
    hass: HomeAssistant,
    http: None,
    engine: EngineProcess,
    test_pack: Path,
    clip: Path,
    labelled_photos: list[LabelledPhoto],
    tmp_path: Path,
) -> None:
    """A *camera offline* repair issue raised before a restart (Home Assistant keeps
    issues) is cleared once that camera streams again, by the new run."""
    gallery = make_gallery(tmp_path / "gallery", labelled_photos)
    entry = folder_entry(gallery, test_pack, camera(clip), engine=engine)
    entry.add_to_hass(hass)
    (door_id,) = entry.subentries
    issues = ir.async_get(hass)
    ir.async_create_issue(
        hass,
        DOMAIN,
        f"camera_offline_{door_id}",
        is_fixable=False,
        severity=ir.IssueSeverity.WARNING,
        translation_key="camera_offline",
        translation_placeholders={"camera": "Door", "reason": "-", "since": "-"},
    )
    assert await hass.config_entries.async_setup(entry.entry_id)
    coordinator = entry.runtime_data
    await wait_for(lambda: coordinator.data.cameras[door_id].state == "streaming", 30)
    coordinator._check_repairs()
    assert issues.async_get_issue(DOMAIN, f"camera_offline_{door_id}") is None


async def test_a_verdict_from_a_phone_notification(
    hass: HomeAssistant,
    http: None,
    hass_read_only_user: Any,
    registry: UprServer,
    engine: EngineProcess,
    test_pack: Path,
    clip: Path,
) -> None:
    """The companion app's Confirm button (a ``mobile_app_notification_action`` event in
    the pressing user's context) records the verdict as the card does: the engine has it
    with that user, the audit and the registry too; a second press (Reject) changes
    nothing and says who decided; other apps' actions are left alone."""
    entry = registry_entry(registry, test_pack, clip, engine)
    events = await set_up_until_alert(hass, entry)
    match_id = events[0].data["match_id"]
    audits = async_capture_events(hass, EVENT_AUDIT)
    refused = async_capture_events(hass, "upr_faces_action_refused")
    phone = Context(user_id=hass_read_only_user.id)
    hass.bus.async_fire("mobile_app_notification_action", {"action": "LIGHTS_ON"}, context=phone)
    hass.bus.async_fire(
        "mobile_app_notification_action", {"action": f"UPR_FACES_CONFIRM_{match_id}"}, context=phone
    )
    await wait_for(lambda: len(audits) == 1, 15)
    assert audits[0].data["action"] == "confirmed"
    assert audits[0].data["match_id"] == match_id
    assert audits[0].data["user_name"] == hass_read_only_user.name
    hass.bus.async_fire(
        "mobile_app_notification_action", {"action": f"UPR_FACES_REJECT_{match_id}"}, context=phone
    )
    await wait_for(lambda: len(refused) == 1, 15)
    assert refused[0].data == {
        "match_id": match_id,
        "verdict": "confirmed",
        "by": hass_read_only_user.name,
    }

    async def sent() -> bool:
        return any(v["alert_id"] == match_id for v in registry.registry.verdicts)

    for _ in range(150):
        if await sent():
            break
        await asyncio.sleep(0.2)
    verdicts = [v for v in registry.registry.verdicts if v["alert_id"] == match_id]
    assert [(v["verdict"], v["by"]) for v in verdicts] == [("confirmed", hass_read_only_user.name)]
    async with EngineClient(engine) as api:
        _, kept = await api.get(f"/alerts/{match_id}")
    assert (kept["state"], kept["decided_by"]) == ("confirmed", hass_read_only_user.id)
    assert len(audits) == 1


async def test_a_camera_whose_frames_cannot_be_analysed_is_a_repair(
    hass: HomeAssistant,
    http: None,
    engine: EngineProcess,
    test_pack: Path,
    labelled_photos: list[LabelledPhoto],
    tmp_path: Path,
) -> None:
    """A camera that streams pictures the analyzer fails on (4000 x 2 pixels) looked
    healthy (streaming, no face, no alert): a repair issue names it and the error."""
    ok, sliver = cv2.imencode(".jpg", np.full((2, 4000, 3), 128, dtype=np.uint8))
    assert ok
    gallery = make_gallery(tmp_path / "gallery", labelled_photos)
    with mjpeg_server([sliver.tobytes()], fps=5) as server:
        entry = folder_entry(gallery, test_pack, camera(server.url), engine=engine)
        entry.add_to_hass(hass)
        assert await hass.config_entries.async_setup(entry.entry_id)
        coordinator = entry.runtime_data
        (camera_id,) = entry.subentries

        async def failing() -> bool:
            await coordinator._async_refresh_info()
            return coordinator.data.cameras[camera_id].analysis_error is not None

        for _ in range(100):
            if await failing():
                break
            await asyncio.sleep(0.2)
        coordinator._check_repairs()
        assert coordinator.data.cameras[camera_id].state == "streaming"
        issue = ir.async_get(hass).async_get_issue(DOMAIN, f"camera_analysis_failed_{camera_id}")
        assert issue is not None
        assert issue.translation_placeholders["camera"] == "Door"
        assert "error" in issue.translation_placeholders["error"].lower()


async def test_not_loaded_entry_in_views(
    hass: HomeAssistant, http: None, hass_client: ClientSessionGenerator
) -> None:
    entry = MockConfigEntry(domain=DOMAIN, data={})
    entry.add_to_hass(hass)
    assert await async_setup_component(hass, DOMAIN, {})
    client = await hass_client()
    url = f"/api/upr_faces/{entry.entry_id}/person/p1/photo"
    assert (await client.get(url)).status == 404


async def test_alert_feed_over_websocket(
    hass: HomeAssistant,
    http: None,
    hass_ws_client: Any,
    engine: EngineProcess,
    test_pack: Path,
    clip: Path,
    labelled_photos: list[LabelledPhoto],
    tmp_path: Path,
) -> None:
    """The card's feed: a snapshot, then each new alert and each verdict, signed URLs.

    The camera is added only once the feed is subscribed, so no alert can come before the
    snapshot however slow the machine (adding it changes that camera only; the feed stays
    on)."""
    gallery = make_gallery(tmp_path / "gallery", labelled_photos)
    entry = folder_entry(gallery, test_pack, engine=engine)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    client = await hass_ws_client(hass)
    await client.send_json_auto_id({"type": "upr_faces/alerts/subscribe", "limit": 10})
    result = await client.receive_json()
    assert result["success"] is True
    snapshot = await client.receive_json()
    assert snapshot["event"] == {"type": "snapshot", "alerts": []}
    door = camera(clip)
    hass.config_entries.async_add_subentry(
        entry, ConfigSubentry(**{**door, "data": MappingProxyType(door["data"])})
    )
    message = await client.receive_json()
    alert = message["event"]["alert"]
    assert message["event"]["type"] == "alert"
    assert alert["state"] == "pending"
    assert alert["entry_id"] == entry.entry_id
    assert alert["camera_entity_id"] == "camera.door"
    assert "authSig=" in alert["face_url"]
    assert "authSig=" in alert["registry_photo_url"]
    await hass.services.async_call(
        DOMAIN, "reject_match", {"match_id": alert["match_id"], "comment": "non"}, blocking=True
    )
    while True:
        update = (await client.receive_json())["event"]["alert"]
        if update["match_id"] == alert["match_id"]:
            break
    assert update["state"] == "rejected"
    assert update["comment"] == "non"
    # a new subscriber gets the alert in its snapshot
    await client.send_json_auto_id(
        {"type": "upr_faces/alerts/subscribe", "config_entry_id": entry.entry_id}
    )
    while (await client.receive_json()).get("type") != "result":
        pass
    while (message := await client.receive_json())["event"]["type"] != "snapshot":
        pass
    assert alert["match_id"] in [a["match_id"] for a in message["event"]["alerts"]]
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_card_is_served(
    hass: HomeAssistant, http: None, hass_client: ClientSessionGenerator
) -> None:
    assert await async_setup_component(hass, DOMAIN, {})
    client = await hass_client()
    response = await client.get("/upr_faces_static/upr-alerts-card.js")
    assert response.status == 200
    assert "upr-alerts-card" in await response.text()


async def test_a_new_camera_changes_that_camera_only(
    hass: HomeAssistant,
    engine: EngineProcess,
    test_pack: Path,
    clip: Path,
    labelled_photos: list[LabelledPhoto],
    tmp_path: Path,
) -> None:
    """Adding a camera subentry starts that camera in the engine, adds its entities, and
    reloads nothing: the running camera keeps its stream and its cooldown (no alert for a
    person just alerted), the gallery is not synced again."""
    gallery = make_gallery(tmp_path / "gallery", labelled_photos)
    entry = folder_entry(gallery, test_pack, camera(clip), engine=engine)
    events = await set_up_until_alert(hass, entry)
    coordinator = entry.runtime_data
    await hass.async_block_till_done()
    (door_id,) = entry.subentries
    before = await _engine_info(engine)
    door_before = next(c for c in before["cameras"] if c["id"] == door_id)
    second = camera(tmp_path / "hall.mp4", "Hall")
    hass.config_entries.async_add_subentry(
        entry, ConfigSubentry(**{**second, "data": MappingProxyType(second["data"])})
    )
    await hass.async_block_till_done()
    assert entry.runtime_data is coordinator  # not reloaded
    assert hass.states.get("camera.hall") is not None
    after = await _engine_info(engine)
    door_after = next(c for c in after["cameras"] if c["id"] == door_id)
    assert door_after["started_at"] == door_before["started_at"]  # not restarted
    assert after["gallery"]["synced_at"] == before["gallery"]["synced_at"]
    assert len({c["id"] for c in after["cameras"]}) == 2
    person = events[0].data["person_id"]
    await asyncio.sleep(3)  # the clip loops: the same persons are seen again
    assert [e.data["person_id"] for e in events].count(person) == 1
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_devices_of_two_galleries(
    hass: HomeAssistant,
    upr_server: UprServer,
    engines: Callable[[str], EngineProcess],
    test_pack: Path,
    tmp_path: Path,
) -> None:
    """Each entry has a hub named "UPR Faces" whatever its title (a second gallery's hub
    entities get ``_2`` ids), with the integration's version, the pack and a link to the
    registry; a camera's device hangs off its hub, links to an HTTP camera's page without
    credentials, and is the only device of its subentry."""
    folder = folder_entry(tmp_path / "gallery", test_pack, engine=engines("first"))
    folder.add_to_hass(hass)
    assert await hass.config_entries.async_setup(folder.entry_id)
    second = engines("second")  # one engine per entry
    online = registry_entry(upr_server, test_pack, tmp_path / "door.mp4", second)
    online.add_to_hass(hass)
    hass.config_entries.async_update_entry(online, title="Registre de Lyon")
    hass.config_entries.async_add_subentry(
        online,
        ConfigSubentry(
            data=MappingProxyType(
                {CONF_NAME: "Hall", CONF_SOURCE: "http://op:pw@192.0.2.9:81/v.mjpg"}
            ),
            subentry_type=SUBENTRY_CAMERA,
            title="Hall",
            unique_id="hall",
        ),
    )
    assert await hass.config_entries.async_setup(online.entry_id)
    await hass.async_block_till_done()

    manifest = json.loads(
        (Path(__file__).parents[2] / "custom_components" / DOMAIN / "manifest.json").read_text()
    )
    hubs = {}
    for entry in (folder, online):
        hub = find_device(hass, entry.entry_id, entry.entry_id)
        assert hub is not None
        assert hub.name == "UPR Faces"
        assert hub.sw_version == manifest["version"]
        assert hub.model == test_pack.name
        hubs[entry.entry_id] = hub
    assert hubs[folder.entry_id].configuration_url is None
    assert hubs[online.entry_id].configuration_url == f"{upr_server.origin}/"

    entities = er.async_get(hass)
    first = entities.async_get_entity_id("sensor", DOMAIN, f"{folder.entry_id}_active_streams")
    second = entities.async_get_entity_id("sensor", DOMAIN, f"{online.entry_id}_active_streams")
    assert (first, second) == (
        "sensor.upr_faces_active_streams",
        "sensor.upr_faces_active_streams_2",
    )

    hall_id = next(sub_id for sub_id, sub in online.subentries.items() if sub.title == "Hall")
    hall = find_device(hass, online.entry_id, f"{online.entry_id}_{hall_id}")
    assert hall is not None
    assert hall.via_device_id == hubs[online.entry_id].id
    assert hall.configuration_url == "http://192.0.2.9:81/"
    assert hall.name == "Hall"
    camera_entity = entities.async_get_entity_id(
        "camera", DOMAIN, f"{online.entry_id}_{hall_id}_live"
    )
    assert camera_entity is not None
    assert entities.async_get(camera_entity).device_id == hall.id
    for entry in (folder, online):
        assert await hass.config_entries.async_unload(entry.entry_id)
