"""The integration end to end in the real Home Assistant core.

A real UPR registry (aiohttp on 127.0.0.1), a real clip played by a file camera, the real
test model pack: set up, `upr_match` fires for the right persons, signed URLs answer and
then expire, verdicts reach the registry and the audit, the registry down at start, unload.
"""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers import issue_registry as ir
from homeassistant.setup import async_setup_component
from homeassistant.util import dt as dt_util
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_capture_events
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.upr_faces.const import (
    CONF_API_KEY,
    CONF_GALLERY_DIR,
    CONF_GALLERY_SOURCE,
    CONF_MODEL_DIR,
    CONF_MODEL_PACK,
    DEFAULT_OPTIONS,
    DOMAIN,
    EVENT_MATCH,
    MODEL_PACK_CUSTOM,
    SOURCE_FOLDER,
)
from custom_components.upr_faces.diagnostics import async_get_config_entry_diagnostics

from ..conftest import LabelledPhoto
from ..upr_server import UprServer
from .common import SHOWN, camera, gallery_photos, registry_entry, wait_for


async def test_registry_end_to_end(
    hass: HomeAssistant,
    hass_client_no_auth: ClientSessionGenerator,
    hass_admin_user: Any,
    registry: UprServer,
    test_pack: Path,
    clip: Path,
) -> None:
    assert await async_setup_component(hass, "http", {})
    entry = registry_entry(registry, test_pack, clip)
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

    # signed URLs answer without a token, then expire
    client = await hass_client_no_auth()
    for key in ("snapshot_url", "registry_photo_url"):
        response = await client.get(first[key])
        assert response.status == 200, key
        assert (await response.read())[:2] in (b"\xff\xd8", b"\x89P")
    # the registry photo is fetched from the registry once, then served from memory
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
    assert hass.states.get("sensor.door_last_match").state in ("Person C", "Person D")
    ent_reg = er.async_get(hass)
    assert ent_reg.async_get("camera.door").config_subentry_id in entry.subentries

    # verdicts: through the outbox to the registry, into the audit with the user
    context_user = hass_admin_user.id
    from homeassistant.core import Context

    await hass.services.async_call(
        DOMAIN,
        "confirm_match",
        {"match_id": first["match_id"], "comment": "vu"},
        blocking=True,
        context=Context(user_id=context_user),
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

    # diagnostics hold no key, no names
    diagnostics = await async_get_config_entry_diagnostics(hass, entry)
    text = str(diagnostics)
    assert registry.key not in text
    assert "Person C" not in text
    assert "UPR-C" not in text

    assert await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.NOT_LOADED
    # after unload the signature is still good (404: no such entry any more) ...
    assert (await client.get(first["snapshot_url"])).status == 404
    # ... until five minutes have passed (threads are stopped: time can be moved)
    with freeze_time(dt_util.utcnow() + timedelta(minutes=6)):
        assert (await client.get(first["snapshot_url"])).status == 401


async def test_registry_down_at_start(
    hass: HomeAssistant, registry: UprServer, test_pack: Path, clip: Path
) -> None:
    """With a synced cache the entry sets up and matches; without one it retries."""
    entry = registry_entry(registry, test_pack, clip)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    assert await hass.config_entries.async_unload(entry.entry_id)
    await registry.stop()
    events = async_capture_events(hass, EVENT_MATCH)
    assert await hass.config_entries.async_setup(entry.entry_id)
    assert entry.state is ConfigEntryState.LOADED
    assert entry.runtime_data.data.registry_reachable is False
    assert hass.states.get("sensor.upr_faces_gallery_size").state == "6"
    await wait_for(lambda: len(events) >= 1, 40)
    assert events[0].data["person_id"] in SHOWN
    assert entry.runtime_data.outbox.pending >= 1  # waits for the registry
    assert await hass.config_entries.async_unload(entry.entry_id)

    fresh = registry_entry(registry, test_pack, clip)
    fresh.add_to_hass(hass)
    assert not await hass.config_entries.async_setup(fresh.entry_id)
    assert fresh.state is ConfigEntryState.SETUP_RETRY


async def test_wrong_key_starts_reauth(
    hass: HomeAssistant, registry: UprServer, test_pack: Path, clip: Path
) -> None:
    entry = registry_entry(registry, test_pack, clip)
    entry.add_to_hass(hass)
    hass.config_entries.async_update_entry(entry, data={**entry.data, CONF_API_KEY: "wrong"})
    assert not await hass.config_entries.async_setup(entry.entry_id)
    assert entry.state is ConfigEntryState.SETUP_ERROR
    flows = hass.config_entries.flow.async_progress_by_handler(DOMAIN)
    assert [flow["context"]["source"] for flow in flows] == ["reauth"]


async def test_folder_gallery_monitoring_switch(
    hass: HomeAssistant,
    test_pack: Path,
    clip: Path,
    labelled_photos: list[LabelledPhoto],
    tmp_path: Path,
) -> None:
    """A local gallery folder; the monitoring switch stops and starts the camera."""
    gallery = tmp_path / "gallery"
    for person_id, paths in gallery_photos(labelled_photos).items():
        (gallery / person_id).mkdir(parents=True)
        for path in paths:
            shutil.copy(path, gallery / person_id)
    entry = MockConfigEntry(
        domain=DOMAIN,
        title="Local gallery",
        data={
            CONF_GALLERY_SOURCE: SOURCE_FOLDER,
            CONF_GALLERY_DIR: str(gallery),
            CONF_MODEL_PACK: MODEL_PACK_CUSTOM,
            CONF_MODEL_DIR: str(test_pack),
        },
        options=dict(DEFAULT_OPTIONS),
        subentries_data=[camera(clip)],
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    assert hass.states.get("sensor.upr_faces_gallery_size").state == "6"
    assert hass.states.get("switch.door_monitoring").state == "on"
    await hass.services.async_call(
        "switch", "turn_off", {"entity_id": "switch.door_monitoring"}, blocking=True
    )
    assert hass.states.get("switch.door_monitoring").state == "off"
    assert entry.runtime_data.pipeline.camera(next(iter(entry.subentries))) is None
    await hass.services.async_call(
        "switch", "turn_on", {"entity_id": "switch.door_monitoring"}, blocking=True
    )
    assert hass.states.get("switch.door_monitoring").state == "on"
    actions = [a.action for a in entry.runtime_data.log.audit if a.action.startswith("camera")]
    assert actions == ["camera_stopped", "camera_started"]
    assert not ir.async_get(hass).issues
    assert await hass.config_entries.async_unload(entry.entry_id)
