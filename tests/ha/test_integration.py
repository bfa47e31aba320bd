"""The integration end to end in the real Home Assistant core, on a real engine process.

A real engine (``upr-faces serve`` on 127.0.0.1), a real UPR registry (aiohttp on
127.0.0.1), a real clip played by a file camera, the real test model pack: set up,
`upr_match` fires for the right persons, signed URLs answer and then expire, verdicts
reach the registry and the engine's audit with the Home Assistant user, the registry down,
a refused key, the monitoring switch.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import Context, HomeAssistant
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers import issue_registry as ir
from homeassistant.setup import async_setup_component
from homeassistant.util import dt as dt_util
from pytest_homeassistant_custom_component.common import async_capture_events
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.upr_faces.const import CONF_API_KEY, DOMAIN, EVENT_MATCH
from custom_components.upr_faces.diagnostics import async_get_config_entry_diagnostics

from ..conftest import LabelledPhoto, make_gallery
from ..service.engine_process import EngineClient, EngineProcess
from ..upr_server import UprServer
from .common import SHOWN, camera, folder_entry, registry_entry, wait_for


async def test_registry_end_to_end(
    hass: HomeAssistant,
    hass_client_no_auth: ClientSessionGenerator,
    hass_admin_user: Any,
    registry: UprServer,
    engine: EngineProcess,
    test_pack: Path,
    clip: Path,
) -> None:
    assert await async_setup_component(hass, "http", {})
    entry = registry_entry(registry, test_pack, clip, engine)
    entry.add_to_hass(hass)
    events = async_capture_events(hass, EVENT_MATCH)
    assert await hass.config_entries.async_setup(entry.entry_id)
    assert entry.state is ConfigEntryState.LOADED
    await wait_for(lambda: {e.data["person_id"] for e in events} >= set(SHOWN), 40)
    await hass.async_block_till_done()
    persons = sorted(e.data["person_id"] for e in events)
    assert persons == sorted(SHOWN)  # each once within the cooldown, and nobody else
    first = next(e.data for e in events if e.data["person_id"] == "deepface_C")
    assert first["tier"] == "match"
    assert first["reference"] == "UPR-C"
    assert first["display_name"] == "Person C"
    assert first["similarity"] >= 0.55
    assert first["camera_name"] == "Door"
    assert first["camera_entity_id"] == "camera.door"

    # signed URLs answer without a token (images from the engine), then expire
    client = await hass_client_no_auth()
    for key in ("snapshot_url", "registry_photo_url"):
        response = await client.get(first[key])
        assert response.status == 200, key
        assert (await response.read())[:2] in (b"\xff\xd8", b"\x89P")
    # the registry photo is fetched from the registry once, then served from the engine
    photo_requests = sum(1 for _m, path in registry.requests if "/photos/" in path)
    assert (await client.get(first["registry_photo_url"])).status == 200
    assert sum(1 for _m, path in registry.requests if "/photos/" in path) == photo_requests
    unsigned = first["snapshot_url"].split("?")[0]
    assert (await client.get(unsigned)).status == 401

    # entities
    assert hass.states.get("sensor.upr_faces_gallery_size").state == "6"
    assert hass.states.get("binary_sensor.door_match").state == "on"
    assert hass.states.get("binary_sensor.door_stream").state == "on"
    event_state = hass.states.get("event.door_alert")
    assert event_state.attributes["event_type"] == "match"
    last_match = hass.states.get("sensor.door_last_match")
    assert dt_util.parse_datetime(last_match.state) is not None  # when, not who
    assert last_match.attributes["display_name"] in ("Person C", "Person D")
    # who was seen is shown live but kept out of the recorder's history
    personal = {"match_id", "person_id", "reference", "display_name", "similarity"}
    assert last_match.state_info is not None
    assert personal <= last_match.state_info["unrecorded_attributes"]
    assert event_state.state_info is not None
    assert {"person_id", "reference"} <= event_state.state_info["unrecorded_attributes"]
    assert not any(name in last_match.state for name in ("Person", "UPR-"))
    ent_reg = er.async_get(hass)
    assert ent_reg.async_get("camera.door").config_subentry_id in entry.subentries

    # verdicts: to the engine, which delivers them to the registry and audits them
    await hass.services.async_call(
        DOMAIN,
        "confirm_match",
        {"match_id": first["match_id"], "comment": "vu"},
        blocking=True,
        context=Context(user_id=hass_admin_user.id),
    )
    second = next(e.data for e in events if e.data["person_id"] == "deepface_D")
    await hass.services.async_call(
        DOMAIN, "reject_match", {"match_id": second["match_id"]}, blocking=True
    )
    await wait_for(lambda: len(registry.received()["verdicts"]) == 2, 15)
    received = registry.received()
    assert {a["id"] for a in received["alerts"]} == {first["match_id"], second["match_id"]}
    verdicts = {v["alert_id"]: v for v in received["verdicts"]}
    assert verdicts[first["match_id"]]["verdict"] == "confirmed"
    assert verdicts[first["match_id"]]["by"] == hass_admin_user.name
    assert verdicts[second["match_id"]]["verdict"] == "rejected"
    with pytest.raises(ServiceValidationError) as err:
        await hass.services.async_call(DOMAIN, "confirm_match", {"match_id": "nope"}, blocking=True)
    assert err.value.translation_key == "unknown_match"
    with pytest.raises(ServiceValidationError) as err:
        await hass.services.async_call(
            DOMAIN, "reject_match", {"match_id": first["match_id"]}, blocking=True
        )
    assert err.value.translation_key == "already_decided"

    # one home for the state: the engine has the verdict, by whom, and the audit line
    async with EngineClient(engine) as api:
        status, kept = await api.get(f"/alerts/{first['match_id']}")
    assert status == 200
    assert kept["state"] == "confirmed"
    assert kept["decided_by"] == hass_admin_user.id
    assert kept["decided_by_name"] == hass_admin_user.name
    assert kept["comment"] == "vu"
    audit = await hass.services.async_call(
        DOMAIN,
        "export_audit",
        {"config_entry_id": entry.entry_id},
        blocking=True,
        return_response=True,
    )
    actions = [(a["action"], a["user_name"]) for a in audit["audit"]]
    assert ("confirmed", hass_admin_user.name) in actions
    assert sum(1 for action, _ in actions if action == "alert") == 2
    states = {a["match_id"]: a["state"] for a in audit["alerts"]}
    assert states == {first["match_id"]: "confirmed", second["match_id"]: "rejected"}

    # diagnostics hold no key, no token, no names, and the engine's own facts
    diagnostics = await async_get_config_entry_diagnostics(hass, entry)
    text = str(diagnostics)
    assert registry.key not in text
    assert engine.token not in text
    assert "Person C" not in text
    assert "UPR-C" not in text
    assert diagnostics["engine"]["info"]["api_version"] == 1
    assert diagnostics["engine"]["connected"] is True

    assert await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.NOT_LOADED
    # after unload the signature is still good (404: no such entry any more) ...
    assert (await client.get(first["snapshot_url"])).status == 404
    # ... until five minutes have passed
    with freeze_time(dt_util.utcnow() + timedelta(minutes=6)):
        assert (await client.get(first["snapshot_url"])).status == 401


async def test_registry_down(
    hass: HomeAssistant, registry: UprServer, engine: EngineProcess, test_pack: Path, clip: Path
) -> None:
    """The engine matches with its cached gallery; alerts wait in its outbox and reach
    the registry once it answers again."""
    entry = registry_entry(registry, test_pack, clip, engine)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await wait_for(lambda: entry.runtime_data.data.gallery_size == 6, 30)
    assert await hass.config_entries.async_unload(entry.entry_id)
    await registry.stop()
    events = async_capture_events(hass, EVENT_MATCH)
    assert await hass.config_entries.async_setup(entry.entry_id)
    assert entry.state is ConfigEntryState.LOADED
    coordinator = entry.runtime_data
    assert hass.states.get("sensor.upr_faces_gallery_size").state == "6"
    await wait_for(lambda: len(events) >= 1, 40)
    assert events[0].data["person_id"] in SHOWN
    await wait_for(lambda: coordinator.data.outbox_pending >= 1, 10)
    with pytest.raises(HomeAssistantError) as err:
        await hass.services.async_call(
            DOMAIN, "refresh_gallery", {"config_entry_id": entry.entry_id}, blocking=True
        )
    assert err.value.translation_key == "cannot_connect"
    assert coordinator.data.registry_reachable is False
    await registry.start()
    first = events[0].data["match_id"]
    await wait_for(lambda: first in {a["id"] for a in registry.received()["alerts"]}, 40)
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_wrong_key_starts_reauth(
    hass: HomeAssistant, registry: UprServer, engine: EngineProcess, test_pack: Path, clip: Path
) -> None:
    """The engine reports the refused key; Home Assistant asks for a new one."""
    entry = registry_entry(registry, test_pack, clip, engine)
    entry.add_to_hass(hass)
    hass.config_entries.async_update_entry(entry, data={**entry.data, CONF_API_KEY: "wrong"})
    assert await hass.config_entries.async_setup(entry.entry_id)

    def reauth_started() -> bool:
        flows = hass.config_entries.flow.async_progress_by_handler(DOMAIN)
        return [flow["context"]["source"] for flow in flows] == ["reauth"]

    await wait_for(reauth_started, 20)
    assert registry.key not in str(await async_get_config_entry_diagnostics(hass, entry))
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_folder_gallery_monitoring_switch(
    hass: HomeAssistant,
    engine: EngineProcess,
    test_pack: Path,
    clip: Path,
    labelled_photos: list[LabelledPhoto],
    tmp_path: Path,
) -> None:
    """A local gallery folder; the monitoring switch stops and starts the camera in the
    engine, which remembers it and audits it."""
    gallery = make_gallery(tmp_path / "gallery", labelled_photos)
    entry = folder_entry(gallery, test_pack, camera(clip), engine=engine)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await wait_for(lambda: entry.runtime_data.data.gallery_size == 6, 30)
    assert hass.states.get("sensor.upr_faces_gallery_size").state == "6"
    assert hass.states.get("switch.door_monitoring").state == "on"
    (camera_id,) = entry.subentries
    await hass.services.async_call(
        "switch", "turn_off", {"entity_id": "switch.door_monitoring"}, blocking=True
    )
    assert hass.states.get("switch.door_monitoring").state == "off"
    async with EngineClient(engine) as api:
        cameras = {c["id"]: c for c in (await api.info())["cameras"]}
    assert cameras[camera_id]["monitoring"] is False
    assert cameras[camera_id]["state"] == "stopped"
    await hass.services.async_call(
        "switch", "turn_on", {"entity_id": "switch.door_monitoring"}, blocking=True
    )
    assert hass.states.get("switch.door_monitoring").state == "on"
    audit = await hass.services.async_call(
        DOMAIN,
        "export_audit",
        {"config_entry_id": entry.entry_id},
        blocking=True,
        return_response=True,
    )
    actions = [a["action"] for a in audit["audit"] if a["action"].startswith("camera")]
    assert actions == ["camera_stopped", "camera_started"]
    assert not ir.async_get(hass).issues
    assert await hass.config_entries.async_unload(entry.entry_id)
