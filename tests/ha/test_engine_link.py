"""Home Assistant and its engine apart: the engine killed, Home Assistant restarted, an
engine of another API version, the engine gone for ten minutes.

Every alert the engine raised while the two were apart arrives once, and only once, as a
``upr_match`` event when they meet again; none raised before is fired again.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from freezegun import freeze_time
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import Event, HomeAssistant
from homeassistant.helpers import issue_registry as ir
from homeassistant.util import dt as dt_util
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_capture_events

from custom_components.upr_faces.const import (
    CONF_COOLDOWN,
    CONF_ENGINE_URL,
    DOMAIN,
    ENGINE_API_VERSION,
    EVENT_MATCH,
)

from ..conftest import LabelledPhoto, make_gallery
from ..service.engine_process import EngineClient, EngineProcess
from .common import camera, folder_entry, wait_for

STATES = ("camera.door", "binary_sensor.door_stream", "sensor.upr_faces_gallery_size")


async def _engine_alerts(engine: EngineProcess) -> set[str]:
    async with EngineClient(engine) as api:
        status, alerts = await api.get("/alerts?limit=500")
    assert status == 200
    return {alert["id"] for alert in alerts["alerts"]}


async def _wait_for_new_alerts(engine: EngineProcess, known: set[str], seconds: float) -> None:
    """Until the engine raised an alert that is not in ``known``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not await _engine_alerts(engine) - known:
        if loop.time() > deadline:
            raise AssertionError("the engine raised no new alert")
        await asyncio.sleep(0.5)


def _fired(events: list[Event[Any]]) -> Counter[str]:
    return Counter(str(event.data["match_id"]) for event in events)


async def _short_cooldown_entry(
    hass: HomeAssistant,
    engine: EngineProcess,
    test_pack: Path,
    clip: Path,
    labelled_photos: list[LabelledPhoto],
    tmp_path: Path,
) -> MockConfigEntry:
    """A folder entry whose camera alerts the same persons again every few seconds."""
    gallery = make_gallery(tmp_path / "gallery", labelled_photos)
    entry = folder_entry(gallery, test_pack, camera(clip), engine=engine)
    entry.add_to_hass(hass)
    hass.config_entries.async_update_entry(entry, options={**entry.options, CONF_COOLDOWN: 3})
    return entry


async def test_engine_killed_then_back(
    hass: HomeAssistant,
    engine: EngineProcess,
    test_pack: Path,
    clip: Path,
    labelled_photos: list[LabelledPhoto],
    tmp_path: Path,
) -> None:
    """SIGKILL: the entities go unavailable within seconds. The engine comes back (on
    another port first, where Home Assistant cannot see it, so that it raises alerts on
    its own), then where it was: the entities come back and every alert raised meanwhile
    arrives exactly once."""
    entry = await _short_cooldown_entry(hass, engine, test_pack, clip, labelled_photos, tmp_path)
    events = async_capture_events(hass, EVENT_MATCH)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await wait_for(lambda: len(events) >= 1, 40)
    await hass.async_block_till_done()

    engine.kill()
    await wait_for(lambda: all(hass.states.get(e).state == "unavailable" for e in STATES), 5)
    port = engine.port
    seen_by_home_assistant = set(_fired(events))

    engine.port = 0  # elsewhere: the engine runs its cameras, Home Assistant does not see it
    engine.start()
    await _wait_for_new_alerts(engine, seen_by_home_assistant, 40)
    raised_apart = await _engine_alerts(engine) - seen_by_home_assistant
    assert set(_fired(events)) == seen_by_home_assistant  # nothing reached Home Assistant
    engine.stop()
    engine.port = port
    engine.start()  # back where Home Assistant expects it

    await wait_for(lambda: hass.states.get("camera.door").state != "unavailable", 40)
    await wait_for(lambda: set(_fired(events)) >= raised_apart, 20)
    await hass.async_block_till_done()
    fired = _fired(events)
    assert max(fired.values()) == 1  # none twice
    assert set(fired) <= await _engine_alerts(engine)  # and none the engine did not raise
    assert hass.states.get("binary_sensor.door_stream").state == "on"
    assert not ir.async_get(hass).async_get_issue(DOMAIN, f"engine_unreachable_{entry.entry_id}")
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_home_assistant_restarted_while_the_engine_runs(
    hass: HomeAssistant,
    hass_storage: dict[str, Any],
    engine: EngineProcess,
    test_pack: Path,
    clip: Path,
    labelled_photos: list[LabelledPhoto],
    tmp_path: Path,
) -> None:
    """Home Assistant goes (the entry is unloaded: what it saw is saved with ``Store``)
    while the engine goes on alerting; when it comes back, it gets each alert it missed
    once and none it had already fired."""
    entry = await _short_cooldown_entry(hass, engine, test_pack, clip, labelled_photos, tmp_path)
    events = async_capture_events(hass, EVENT_MATCH)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await wait_for(lambda: len(events) >= 1, 40)
    assert await hass.config_entries.async_unload(entry.entry_id)
    before = _fired(events)
    position = hass_storage[f"{DOMAIN}.{entry.entry_id}.events"]["data"]
    assert position["last_id"] > 0

    await _wait_for_new_alerts(engine, set(before), 40)  # raised while Home Assistant is away
    assert _fired(events) == before
    missed = await _engine_alerts(engine) - set(before)

    assert await hass.config_entries.async_setup(entry.entry_id)
    await wait_for(lambda: set(_fired(events)) >= missed, 20)
    await hass.async_block_till_done()
    fired = _fired(events)
    assert max(fired.values()) == 1
    assert set(fired) >= set(before) | missed
    assert entry.state is ConfigEntryState.LOADED
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_engine_gone_for_ten_minutes_raises_a_repair(
    hass: HomeAssistant,
    engine: EngineProcess,
    test_pack: Path,
    labelled_photos: list[LabelledPhoto],
    tmp_path: Path,
) -> None:
    """Unreachable: entities unavailable at once, a repair issue after ten minutes that
    says where the engine was expected; it goes when the engine answers."""
    gallery = make_gallery(tmp_path / "gallery", labelled_photos)
    entry = folder_entry(gallery, test_pack, engine=engine)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    coordinator = entry.runtime_data
    issues = ir.async_get(hass)
    issue_id = f"engine_unreachable_{entry.entry_id}"
    engine.kill()
    await wait_for(lambda: not coordinator.connected, 5)
    assert hass.states.get("sensor.upr_faces_gallery_size").state == "unavailable"
    coordinator._check_repairs()
    assert issues.async_get_issue(DOMAIN, issue_id) is None
    with freeze_time(dt_util.utcnow() + timedelta(minutes=10, seconds=5)):
        coordinator._check_repairs()
    issue = issues.async_get_issue(DOMAIN, issue_id)
    assert issue is not None
    assert issue.translation_key == "engine_unreachable"
    assert issue.translation_placeholders["url"] == engine.url
    assert engine.token not in str(issue.translation_placeholders)

    engine.start()
    await wait_for(lambda: coordinator.connected, 40)
    assert issues.async_get_issue(DOMAIN, issue_id) is None
    assert hass.states.get("sensor.upr_faces_gallery_size").state == "6"
    assert await hass.config_entries.async_unload(entry.entry_id)


@pytest.fixture
async def other_api_engine(socket_enabled: None) -> AsyncIterator[Callable[[int], str]]:
    """Serve ``/info`` as an engine of another API version would: ``serve(version)`` gives
    its URL (one server per call, all on 127.0.0.1)."""
    runners: list[web.AppRunner] = []

    async def serve(version: int) -> str:
        async def info(request: web.Request) -> web.Response:
            return web.json_response(
                {"version": f"{version}.0.0", "api_version": version, "events": {}}
            )

        app = web.Application()
        app.router.add_get("/api/v1/info", info)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield serve  # type: ignore[misc]
    for runner in runners:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("api_version", "issue"),
    [(ENGINE_API_VERSION + 1, "update_integration"), (ENGINE_API_VERSION - 1, "update_engine")],
)
async def test_engine_of_another_api_version(
    hass: HomeAssistant,
    engine: EngineProcess,
    other_api_engine: Any,
    test_pack: Path,
    tmp_path: Path,
    api_version: int,
    issue: str,
) -> None:
    """Checked at connect: the entry waits, and a repair issue says which side to update;
    it goes once the versions agree."""
    url = await other_api_engine(api_version)
    entry = folder_entry(tmp_path / "gallery", test_pack, engine=engine)
    entry.add_to_hass(hass)
    hass.config_entries.async_update_entry(entry, data={**entry.data, CONF_ENGINE_URL: url})
    assert not await hass.config_entries.async_setup(entry.entry_id)
    assert entry.state is ConfigEntryState.SETUP_RETRY
    found = ir.async_get(hass).async_get_issue(DOMAIN, f"engine_version_{entry.entry_id}")
    assert found is not None
    assert found.translation_key == issue
    assert found.translation_placeholders["engine_api"] == str(api_version)
    assert found.translation_placeholders["integration_api"] == str(ENGINE_API_VERSION)

    hass.config_entries.async_update_entry(entry, data={**entry.data, CONF_ENGINE_URL: engine.url})
    await hass.config_entries.async_reload(entry.entry_id)
    assert entry.state is ConfigEntryState.LOADED
    assert ir.async_get(hass).async_get_issue(DOMAIN, f"engine_version_{entry.entry_id}") is None
    assert await hass.config_entries.async_unload(entry.entry_id)
