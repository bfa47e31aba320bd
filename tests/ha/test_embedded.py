"""The engine on this machine (a child process of Home Assistant), the add-on found by
Supervisor discovery, and entries of the previous version moving to the embedded engine.

The embedded engine runs on this test interpreter (``embedded_python``: the engine is
importable here), started, supervised and stopped by the integration itself; its
installation into an environment of its own is tested up to pip, against a package index
that does not answer.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import shutil
import signal
import uuid
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
from homeassistant.config_entries import SOURCE_HASSIO, SOURCE_USER, ConfigEntryState
from homeassistant.const import EVENT_HOMEASSISTANT_STOP
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers.service_info.hassio import HassioServiceInfo
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.upr_faces.client import EngineClient
from custom_components.upr_faces.const import (
    CONF_API_KEY,
    CONF_API_URL,
    CONF_ENGINE,
    CONF_ENGINE_ID,
    CONF_ENGINE_TOKEN,
    CONF_ENGINE_URL,
    CONF_ENGINE_VERIFY_SSL,
    CONF_GALLERY_DIR,
    CONF_GALLERY_SOURCE,
    CONF_LEGACY_IMPORT,
    CONF_MODEL_DIR,
    CONF_MODEL_PACK,
    CONF_VERIFY_SSL,
    DEFAULT_OPTIONS,
    DOMAIN,
    ENGINE_ADDON,
    ENGINE_EMBEDDED,
    MODEL_PACK_CUSTOM,
    SOURCE_FOLDER,
    SOURCE_REGISTRY,
)
from custom_components.upr_faces.embedded import DATA_ENGINES, PYTHON_OVERRIDE, EmbeddedEngine

from ..conftest import LabelledPhoto
from ..service.engine_process import EngineProcess
from ..streams import closed_port
from ..upr_server import UprServer
from .common import camera, wait_for


def _engine(hass: HomeAssistant, key: str) -> EmbeddedEngine:
    engine: EmbeddedEngine = hass.data[DATA_ENGINES][key]
    return engine


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def _gone(pid: int | None, seconds: float = 15.0) -> None:
    await wait_for(lambda: not _alive(pid), seconds)


# ------------------------------------------------------------------------------ embedded


@pytest.mark.usefixtures("embedded_python")
async def test_embedded_engine_from_the_flow_to_removal(
    hass: HomeAssistant,
    ha_config_dir: Path,
    test_pack: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The flow starts the engine; the entry keeps it; its log lines reach Home
    Assistant's log without the token; a reload keeps the same process and pushes the
    configuration again; disabling stops it, enabling starts it, removing stops it and
    deletes its data."""
    caplog.set_level(logging.INFO, logger=f"custom_components.{DOMAIN}.engine")
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {"next_step_id": ENGINE_EMBEDDED}
    )
    assert result["type"] is FlowResultType.MENU
    assert result["step_id"] == "source"
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {"next_step_id": SOURCE_FOLDER}
    )
    default = str(ha_config_dir / DOMAIN / "gallery")
    assert result["data_schema"]({})[CONF_GALLERY_DIR] == default
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"],
        {CONF_GALLERY_DIR: "faces"},  # relative: the configuration folder
    )
    assert (ha_config_dir / "faces").is_dir()
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_MODEL_PACK: MODEL_PACK_CUSTOM}
    )
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_MODEL_DIR: str(test_pack)}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    entry = result["result"]
    key = entry.data[CONF_ENGINE_ID]
    assert entry.data == {
        CONF_ENGINE: ENGINE_EMBEDDED,
        CONF_ENGINE_ID: key,
        CONF_GALLERY_SOURCE: SOURCE_FOLDER,
        CONF_GALLERY_DIR: str(ha_config_dir / "faces"),
        CONF_MODEL_PACK: MODEL_PACK_CUSTOM,
        CONF_MODEL_DIR: str(test_pack),
    }
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    engine = _engine(hass, key)
    pid = engine.pid
    assert _alive(pid)
    data = ha_config_dir / DOMAIN / key / "engine"
    assert engine.data == data
    assert (data / "token").stat().st_mode & 0o777 == 0o600
    assert engine.url is not None
    assert engine.url.startswith("http://127.0.0.1:")
    records = [r for r in caplog.records if r.name == f"custom_components.{DOMAIN}.engine"]
    assert any("listening on" in r.getMessage() for r in records)
    assert engine.token() not in caplog.text

    with patch.object(EngineClient, "put_config", autospec=True, side_effect=_put) as push:
        assert await hass.config_entries.async_reload(entry.entry_id)
    assert entry.state is ConfigEntryState.LOADED
    assert engine.pid == pid  # the same process
    assert push.call_count == 1  # the configuration pushed again
    assert push.call_args.args[1]["gallery"]["folder"] == str(ha_config_dir / "faces")

    await hass.config_entries.async_set_disabled_by(entry.entry_id, _user_disabled())
    await hass.async_block_till_done()
    await _gone(pid)
    await hass.config_entries.async_set_disabled_by(entry.entry_id, None)
    await hass.async_block_till_done()
    await wait_for(lambda: entry.state is ConfigEntryState.LOADED, 30)
    pid = _engine(hass, key).pid
    assert _alive(pid)

    assert await hass.config_entries.async_remove(entry.entry_id)
    await hass.async_block_till_done()
    await _gone(pid)
    assert not data.exists()
    assert key not in hass.data.get(DATA_ENGINES, {})


def _user_disabled() -> Any:
    from homeassistant.config_entries import ConfigEntryDisabler

    return ConfigEntryDisabler.USER


_real_put = EngineClient.put_config


async def _put(client: EngineClient, config: dict[str, Any]) -> dict[str, Any]:
    """The real push (the spy only counts)."""
    return await _real_put(client, config)


@pytest.mark.usefixtures("embedded_python")
async def test_embedded_engine_restarted_when_it_dies(
    hass: HomeAssistant, ha_config_dir: Path, test_pack: Path, tmp_path: Path
) -> None:
    """Killed, the engine is started again by its supervisor; the entities come back,
    whatever port it listens on now; Home Assistant's stop stops it."""
    entry = _embedded_entry(tmp_path / "gallery", test_pack)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    engine = _engine(hass, entry.entry_id)
    first, url = engine.pid, engine.url
    assert first is not None
    os.killpg(first, signal.SIGKILL)
    await wait_for(lambda: engine.pid != first and engine.running, 30)
    await wait_for(lambda: entry.runtime_data.connected and engine.url != url, 30)
    assert entry.runtime_data.client.url == engine.url
    assert hass.states.get("sensor.upr_faces_gallery_size").state == "0"

    second = engine.pid
    hass.bus.async_fire(EVENT_HOMEASSISTANT_STOP)
    await hass.async_block_till_done()
    await _gone(second)


def _embedded_entry(gallery: Path, test_pack: Path, **data: Any) -> MockConfigEntry:
    return MockConfigEntry(
        domain=DOMAIN,
        version=2,
        title=f"Local gallery ({gallery.name})",
        unique_id=f"folder:{gallery}",
        data={
            CONF_ENGINE: ENGINE_EMBEDDED,
            CONF_GALLERY_SOURCE: SOURCE_FOLDER,
            CONF_GALLERY_DIR: str(gallery),
            CONF_MODEL_PACK: MODEL_PACK_CUSTOM,
            CONF_MODEL_DIR: str(test_pack),
        }
        | data,
        options=dict(DEFAULT_OPTIONS),
    )


async def test_install_failure_is_shown_and_retried(
    hass: HomeAssistant,
    ha_config_dir: Path,
    socket_enabled: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No engine installed yet: an environment is made with this Python, then pip fills
    it from the configured index; an index that does not answer ends on a form that says
    what pip said, and submitting tries again."""
    monkeypatch.delenv(PYTHON_OVERRIDE, raising=False)
    index = f"http://127.0.0.1:{closed_port()}/simple"
    monkeypatch.setenv("PIP_INDEX_URL", index)
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # this machine's pip settings stay out
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {"next_step_id": ENGINE_EMBEDDED}
    )
    assert result["type"] is FlowResultType.SHOW_PROGRESS
    assert result["step_id"] == "install"
    assert result["progress_action"] == "install"
    assert result["description_placeholders"] == {"step": "1", "steps": "3"}
    flow_id = result["flow_id"]
    await _progress_done(hass, flow_id)
    result = await hass.config_entries.flow.async_configure(flow_id)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "install_failed"
    error = result["description_placeholders"]["error"]
    assert "No matching distribution found" in error, error
    env = ha_config_dir / DOMAIN / "engine_env"
    assert (env / "bin" / "python").exists()  # the environment was made
    assert not (env / ".upr_faces_engine").exists()  # but holds no engine

    result = await hass.config_entries.flow.async_configure(flow_id, {})
    assert result["type"] is FlowResultType.SHOW_PROGRESS  # tried again
    await _progress_done(hass, flow_id)
    result = await hass.config_entries.flow.async_configure(flow_id)
    assert result["step_id"] == "install_failed"
    hass.config_entries.flow.async_abort(flow_id)


async def _progress_done(hass: HomeAssistant, flow_id: str, seconds: float = 240.0) -> None:
    """Until the flow's progress task ends."""
    flow = hass.config_entries.flow._progress[flow_id]
    task = flow._task
    assert task is not None
    async with asyncio.timeout(seconds):
        await asyncio.wait([task])
    await hass.async_block_till_done()


async def test_unsupported_platform_points_to_the_add_on(hass: HomeAssistant) -> None:
    """Where the engine's wheels cannot install (Alpine's musl), the flow says why."""
    with patch("custom_components.upr_faces.embedded.platform.libc_ver", return_value=("", "")):
        result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
        result = await hass.config_entries.flow.async_configure(
            result["flow_id"], {"next_step_id": ENGINE_EMBEDDED}
        )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "unsupported_platform"
    assert "musl" in result["description_placeholders"]["problem"]


# ------------------------------------------------------------------------------ add-on


def _discovery(engine: EngineProcess, token: str | None = None) -> HassioServiceInfo:
    """What the Supervisor hands over when the add-on announces itself."""
    return HassioServiceInfo(
        config={
            "host": "127.0.0.1",
            "port": engine.port,
            "ssl": False,
            "token": token or engine.token,
        },
        name="UPR Faces",
        slug="local_upr_faces",
        uuid="9c1d4a6e",
    )


@pytest.mark.usefixtures("installed_pack")
async def test_add_on_found_by_discovery(
    hass: HomeAssistant, engine: EngineProcess, tmp_path: Path
) -> None:
    """The running add-on is offered; the admin only confirms, then chooses the gallery.
    When the add-on announces itself again (a new token), the entry follows it."""
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_HASSIO}, data=_discovery(engine, "stale-token")
    )
    assert result["step_id"] == "hassio_confirm"
    assert result["description_placeholders"] == {"addon": "UPR Faces"}
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {})
    assert result["errors"] == {"base": "invalid_auth"}
    hass.config_entries.flow.async_abort(result["flow_id"])

    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_HASSIO}, data=_discovery(engine)
    )
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {})
    assert result["step_id"] == "source"
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {"next_step_id": SOURCE_FOLDER}
    )
    # the add-on sees Home Assistant's media folder as /media
    assert result["data_schema"]({})[CONF_GALLERY_DIR] == "/media/upr_faces/gallery"
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_GALLERY_DIR: str(tmp_path / "gallery")}
    )
    from .conftest import INSTALLED_PACK

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_MODEL_PACK: INSTALLED_PACK}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    entry = result["result"]
    assert entry.data[CONF_ENGINE] == ENGINE_ADDON
    assert entry.data[CONF_ENGINE_URL] == engine.url
    assert entry.data[CONF_ENGINE_TOKEN] == engine.token
    assert entry.data[CONF_ENGINE_VERIFY_SSL] is False
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED

    # the add-on restarted with another token (and port): announced again, followed
    (engine.data / "token").write_text("a-new-token\n", encoding="utf-8")
    engine.stop()
    engine.port = 0
    engine.start()
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_HASSIO}, data=_discovery(engine)
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"
    assert entry.data[CONF_ENGINE_TOKEN] == "a-new-token"
    assert entry.data[CONF_ENGINE_URL] == engine.url
    await hass.async_block_till_done()
    await wait_for(lambda: entry.state is ConfigEntryState.LOADED and entry.runtime_data.connected)
    assert entry.runtime_data.client.url == engine.url
    assert await hass.config_entries.async_unload(entry.entry_id)


# ------------------------------------------------------------------------------ upgrade


def _write_previous_version(
    folder: Path, registry: UprServer, alert_id: str, pending_id: str, face: bytes
) -> None:
    """What UPR Faces 0.1 (the engine inside Home Assistant) left under
    ``<config>/upr_faces/<entry id>``, written with the same code it used."""
    from upr_faces_engine.gallery import EmbeddingCache
    from upr_faces_engine.outbox import Outbox

    folder.mkdir(parents=True)
    outbox = Outbox(folder / "outbox")
    outbox.enqueue_alert(
        {
            "id": pending_id,
            "person_id": "deepface_C",
            "camera": "Door",
            "tier": "match",
            "similarity": 0.71,
            "detected_at": "2026-11-30T08:00:00+00:00",
            "snapshot_jpeg_b64": base64.b64encode(face).decode(),
        }
    )
    snapshots = folder / "snapshots"
    snapshots.mkdir()
    for kind in ("face", "frame"):
        (snapshots / f"{alert_id}_{kind}.jpg").write_bytes(face)
    EmbeddingCache(folder / "embeddings.sqlite3").close()


@pytest.mark.usefixtures("embedded_python")
async def test_an_entry_of_the_previous_version_moves_to_the_embedded_engine(
    hass: HomeAssistant,
    hass_storage: dict[str, Any],
    hass_client: ClientSessionGenerator,
    ha_config_dir: Path,
    registry: UprServer,
    test_pack: Path,
    clip: Path,
    labelled_photos: list[LabelledPhoto],
) -> None:
    """Version 1 entries ran the engine inside Home Assistant. On the first start of this
    version the entry moves to the embedded engine by itself: its alert log, audit trail
    and monitoring flags (Home Assistant's storage), its outbox, alert images and
    embedding cache (its folder) are in the engine afterwards, and nothing is lost: the
    alert that was waiting for the registry reaches it."""
    hass.config.media_dirs = {"clips": str(clip.parent)}  # where the engine may read clips
    assert await async_setup_component(hass, "http", {})
    entry = MockConfigEntry(
        domain=DOMAIN,
        version=1,
        title="UPR registry (127.0.0.1)",
        unique_id=registry.url,
        data={
            CONF_GALLERY_SOURCE: SOURCE_REGISTRY,
            CONF_API_URL: registry.url,
            CONF_API_KEY: registry.key,
            CONF_VERIFY_SSL: False,
            CONF_MODEL_PACK: MODEL_PACK_CUSTOM,
            CONF_MODEL_DIR: str(test_pack),
        },
        options=dict(DEFAULT_OPTIONS),
        subentries_data=[camera(clip)],
    )
    entry.add_to_hass(hass)
    (door_id,) = entry.subentries
    alert_id, pending_id = str(uuid.uuid4()), str(uuid.uuid4())  # the previous version's ids
    face = labelled_photos[0].path.read_bytes()
    folder = ha_config_dir / DOMAIN / entry.entry_id
    _write_previous_version(folder, registry, alert_id, pending_id, face)
    hass_storage[f"{DOMAIN}.{entry.entry_id}"] = {
        "version": 1,
        "minor_version": 1,
        "key": f"{DOMAIN}.{entry.entry_id}",
        "data": {
            "alerts": [
                {
                    "match_id": alert_id,
                    "tier": "match",
                    "person_id": "deepface_C",
                    "reference": "UPR-C",
                    "display_name": "Person C",
                    "similarity": 0.68,
                    "camera_id": door_id,
                    "camera_name": "Door",
                    "detected_at": "2026-11-29T10:00:00+00:00",
                    "track_id": 3,
                    "state": "confirmed",
                    "decided_by": "u-1",
                    "decided_by_name": "Alice",
                    "decided_at": "2026-11-29T10:05:00+00:00",
                    "comment": "vue à l'accueil",
                    "has_snapshot": True,
                }
            ],
            "audit": [
                {
                    "at": "2026-11-29T10:05:00+00:00",
                    "action": "confirmed",
                    "user_id": "u-1",
                    "user_name": "Alice",
                    "details": {"match_id": alert_id},
                }
            ],
            "monitoring": {door_id: False},
        },
    }

    assert await hass.config_entries.async_setup(entry.entry_id)
    assert entry.state is ConfigEntryState.LOADED
    assert entry.version == 2
    assert entry.data[CONF_ENGINE] == ENGINE_EMBEDDED
    assert entry.data[CONF_ENGINE_ID] == entry.entry_id
    assert CONF_LEGACY_IMPORT not in entry.data
    assert f"{DOMAIN}.{entry.entry_id}" not in hass_storage  # handed over, then removed
    data = folder / "engine"
    assert _engine(hass, entry.entry_id).data == data
    assert not (folder / "outbox").exists()
    assert not (folder / "snapshots").exists()
    assert (data / "embeddings.sqlite3").is_file()
    assert (data / "alerts" / f"{alert_id}_face.jpg").stat().st_mode & 0o777 == 0o600

    client = entry.runtime_data.client
    kept = await client.alert(alert_id)
    assert kept is not None
    assert (kept["state"], kept["decided_by_name"], kept["comment"]) == (
        "confirmed",
        "Alice",
        "vue à l'accueil",
    )
    trail = await client.audit()
    assert any(line["action"] == "confirmed" and line["user_name"] == "Alice" for line in trail)
    assert hass.states.get("switch.door_monitoring").state == "off"  # as it was left
    http = await hass_client()
    image = await http.get(f"/api/upr_faces/{entry.entry_id}/snapshot/{alert_id}/face")
    assert image.status == 200
    assert await image.read() == face
    await wait_for(
        lambda: pending_id in {a["id"] for a in registry.received()["alerts"]}, 40
    )  # the outbox went with the entry

    # a second start imports nothing twice
    assert await hass.config_entries.async_reload(entry.entry_id)
    assert sum(1 for a in await client.alerts(50) if a["id"] == alert_id) == 1
    assert await hass.config_entries.async_unload(entry.entry_id)
    shutil.rmtree(folder, ignore_errors=True)
