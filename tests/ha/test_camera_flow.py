"""The camera subentry flow in the real Home Assistant core, on a real engine.

The engine parses each source, opens it once before it is saved (a real RTSP server and a
real MJPEG camera on 127.0.0.1, both wanting a password, and a real clip), and scans its
host for USB cameras. Passwords are stored but never shown back: the engine masks them.
Only the USB scan's answer is replaced in one test, for lack of a camera on test machines.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
import voluptuous as vol
from homeassistant.config_entries import SOURCE_USER, SubentryFlowResult
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.upr_faces.const import (
    CONF_MATCH_THRESHOLD,
    CONF_NAME,
    CONF_PROBABLE_THRESHOLD,
    CONF_SOURCE,
    SUBENTRY_CAMERA,
)

from ..service.engine_process import EngineProcess
from ..streams import MjpegServer, RtspServer, closed_port
from .common import camera, folder_entry, serialize_schema, start_camera_reconfigure

SECRET = "s3cret-Pw"


def _shown(result: Mapping[str, Any]) -> str:
    return json.dumps(serialize_schema(result["data_schema"]))


def _suggested(result: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for marker in result["data_schema"].schema:
        if marker.description and "suggested_value" in marker.description:
            values[str(marker)] = marker.description["suggested_value"]
        elif marker.default is not vol.UNDEFINED:
            values[str(marker)] = marker.default()
    return values


@pytest.fixture
def rtsp(socket_enabled: None, clip: Path) -> Iterator[RtspServer]:
    """An RTSP camera on 127.0.0.1 that wants ``admin`` / SECRET."""
    server = RtspServer(clip, user="admin", password=SECRET)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def mjpeg(socket_enabled: None, clip: Path) -> Iterator[MjpegServer]:
    """An MJPEG camera on 127.0.0.1 that wants ``viewer`` / SECRET (Basic)."""
    server = MjpegServer(clip, user="viewer", password=SECRET)
    server.start()
    yield server
    server.stop()


async def _loaded_entry(
    hass: HomeAssistant, engine: EngineProcess, test_pack: Path, tmp_path: Path, *cameras: Any
) -> MockConfigEntry:
    entry = folder_entry(tmp_path / "gallery", test_pack, *cameras, engine=engine)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    return entry


async def _camera_flow(
    hass: HomeAssistant, entry: MockConfigEntry, kind: str
) -> SubentryFlowResult:
    result = await hass.config_entries.subentries.async_init(
        (entry.entry_id, SUBENTRY_CAMERA), context={"source": SOURCE_USER}
    )
    assert result["type"] is FlowResultType.MENU
    assert result["menu_options"] == ["ip", "usb"]
    return await hass.config_entries.subentries.async_configure(
        result["flow_id"], {"next_step_id": kind}
    )


async def test_ip_camera(
    hass: HomeAssistant,
    engine: EngineProcess,
    test_pack: Path,
    rtsp: RtspServer,
    mjpeg: MjpegServer,
    clip: Path,
    tmp_path: Path,
) -> None:
    """Parsed and opened by the engine before it is saved; a mistyped source comes back
    masked, a wrong password or a closed port is said, and the password is kept."""
    entry = await _loaded_entry(hass, engine, test_pack, tmp_path)
    result = await _camera_flow(hass, entry, "ip")
    assert result["step_id"] == "ip"
    flow_id = result["flow_id"]
    masked = rtsp.url.replace(SECRET, "***")

    typo = rtsp.url.replace("rtsp://", "rstp://")
    result = await hass.config_entries.subentries.async_configure(
        flow_id, {CONF_NAME: "Door", CONF_SOURCE: typo}
    )
    assert result["errors"] == {CONF_SOURCE: "invalid_source"}
    assert _suggested(result)[CONF_SOURCE] == typo.replace(SECRET, "***")
    assert SECRET not in _shown(result)

    result = await hass.config_entries.subentries.async_configure(
        flow_id, {CONF_NAME: "Door", CONF_SOURCE: rtsp.url_with("admin", "wrong")}
    )
    assert result["errors"] == {CONF_SOURCE: "invalid_auth"}
    closed = f"rtsp://admin:{SECRET}@127.0.0.1:{closed_port()}/cam"
    result = await hass.config_entries.subentries.async_configure(
        flow_id, {CONF_NAME: "Door", CONF_SOURCE: closed}
    )
    assert result["errors"] == {CONF_SOURCE: "cannot_connect"}
    assert SECRET not in _shown(result)

    result = await hass.config_entries.subentries.async_configure(
        flow_id,
        {
            CONF_NAME: "Door",
            CONF_SOURCE: rtsp.url,
            CONF_PROBABLE_THRESHOLD: 0.6,  # above the entry's match threshold (0.55)
        },
    )
    assert result["errors"] == {CONF_PROBABLE_THRESHOLD: "probable_above_match"}
    result = await hass.config_entries.subentries.async_configure(
        flow_id, {CONF_NAME: "Door", CONF_SOURCE: rtsp.url, CONF_MATCH_THRESHOLD: "NaN"}
    )
    assert result["errors"] == {CONF_MATCH_THRESHOLD: "not_a_number"}
    assert SECRET not in _shown(result)
    assert _suggested(result)[CONF_SOURCE] == masked

    result = await hass.config_entries.subentries.async_configure(
        flow_id,
        {
            CONF_NAME: " Door ",
            CONF_SOURCE: masked,  # the form's *** stands for the password typed before
            CONF_MATCH_THRESHOLD: 0.7,
            CONF_PROBABLE_THRESHOLD: 0.6,
        },
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    (subentry,) = entry.subentries.values()
    assert subentry.title == "Door"
    assert subentry.unique_id == masked
    assert dict(subentry.data) == {
        CONF_NAME: "Door",
        CONF_SOURCE: rtsp.url,
        CONF_MATCH_THRESHOLD: 0.7,
        CONF_PROBABLE_THRESHOLD: 0.6,
    }
    await hass.async_block_till_done()
    assert hass.states.get("camera.door") is not None  # added without a reload

    # the same camera again, even with another password: already there
    result = await _camera_flow(hass, entry, "ip")
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"], {CONF_NAME: "Again", CONF_SOURCE: rtsp.url_with("admin", "other")}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"

    # no name: named after the host or the file; an MJPEG camera with Basic auth
    result = await _camera_flow(hass, entry, "ip")
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"], {CONF_NAME: " ", CONF_SOURCE: mjpeg.url}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    hall = next(s for s in entry.subentries.values() if s.data[CONF_SOURCE] == mjpeg.url)
    assert hall.title == "127.0.0.1"
    assert hall.unique_id == mjpeg.url.replace(SECRET, "***")
    result = await _camera_flow(hass, entry, "ip")
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"], {CONF_NAME: "", CONF_SOURCE: f"file://{clip}"}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    recorded = next(s for s in entry.subentries.values() if s.unique_id == f"file://{clip}")
    assert dict(recorded.data) == {CONF_NAME: clip.stem, CONF_SOURCE: f"file://{clip}"}

    # not a video
    result = await _camera_flow(hass, entry, "ip")
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"], {CONF_NAME: "Notes", CONF_SOURCE: f"file://{tmp_path / 'x.mp4'}"}
    )
    assert result["errors"] == {CONF_SOURCE: "cannot_connect"}
    assert await hass.config_entries.async_unload(entry.entry_id)


@pytest.mark.skipif(
    any(Path("/dev").glob("video*")), reason="this machine has video devices: scan not empty"
)
async def test_usb_camera_none_found(
    hass: HomeAssistant, engine: EngineProcess, test_pack: Path, tmp_path: Path
) -> None:
    """The engine's real scan finds nothing on a machine without cameras."""
    entry = await _loaded_entry(hass, engine, test_pack, tmp_path)
    result = await _camera_flow(hass, entry, "usb")
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "no_usb_cameras"
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_usb_camera_found(
    hass: HomeAssistant, engine: EngineProcess, test_pack: Path, clip: Path, tmp_path: Path
) -> None:
    """The cameras the scan finds are offered (the scan's answer is replaced: no camera on
    test machines; the engine still parses and opens what is chosen)."""
    entry = await _loaded_entry(hass, engine, test_pack, tmp_path)
    found = [
        {"source": "usb:0", "index": 0, "name": "HD Webcam", "width": 1280, "height": 720},
        {"source": "usb:2", "index": 2, "name": "USB2.0 Camera", "width": 640, "height": 480},
    ]
    opened = {"ok": True, "width": 640, "height": 480}
    client = type(entry.runtime_data.client)
    with (
        patch.object(client, "scan_usb", return_value=found) as scan,
        patch.object(client, "test_source", return_value=opened) as test_source,
    ):
        result = await _camera_flow(hass, entry, "usb")
        assert scan.call_count == 1
        assert result["step_id"] == "usb"
        selector = result["data_schema"].schema[CONF_SOURCE].config
        assert selector["options"] == [
            {"value": "usb:0", "label": "/dev/video0 — HD Webcam (1280x720)"},
            {"value": "usb:2", "label": "/dev/video2 — USB2.0 Camera (640x480)"},
        ]
        assert _suggested(result) == {CONF_SOURCE: "usb:0", CONF_NAME: "HD Webcam"}

        result = await hass.config_entries.subentries.async_configure(
            result["flow_id"], {CONF_SOURCE: "usb:2", CONF_NAME: "Desk", CONF_MATCH_THRESHOLD: 0.4}
        )
        assert result["errors"] == {CONF_PROBABLE_THRESHOLD: "probable_above_match"}
        result = await hass.config_entries.subentries.async_configure(
            result["flow_id"], {CONF_SOURCE: "usb:2", CONF_NAME: "Desk"}
        )
        assert result["type"] is FlowResultType.CREATE_ENTRY
        assert test_source.call_args.args == ("usb:2",)
        (subentry,) = entry.subentries.values()
        assert (subentry.title, subentry.unique_id) == ("Desk", "usb:2")
        assert dict(subentry.data) == {CONF_NAME: "Desk", CONF_SOURCE: "usb:2"}

        # configured cameras are not offered again
        result = await _camera_flow(hass, entry, "usb")
        values = [o["value"] for o in result["data_schema"].schema[CONF_SOURCE].config["options"]]
        assert values == ["usb:0"]
        scan.return_value = found[1:]
        result = await _camera_flow(hass, entry, "usb")
        assert result["type"] is FlowResultType.ABORT
        assert result["reason"] == "already_configured"
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_camera_reconfigure_keeps_masked_password(
    hass: HomeAssistant,
    engine: EngineProcess,
    test_pack: Path,
    rtsp: RtspServer,
    mjpeg: MjpegServer,
    tmp_path: Path,
) -> None:
    """The password is never shown back and survives edits that leave ``***`` in place;
    a camera changed restarts alone in the engine."""
    source = f"{rtsp.url}?token=tok-{SECRET}"
    masked = f"{rtsp.url.replace(SECRET, '***')}?token=***"
    door = camera(source, "Door")
    door["unique_id"] = masked
    garage = camera(mjpeg.url, "Garage")
    garage["unique_id"] = mjpeg.url.replace(SECRET, "***")
    entry = await _loaded_entry(hass, engine, test_pack, tmp_path, door, garage)
    door_id = next(s.subentry_id for s in entry.subentries.values() if s.title == "Door")
    garage_id = next(s.subentry_id for s in entry.subentries.values() if s.title == "Garage")
    started = {c["id"]: c["started_at"] for c in entry.runtime_data.info["cameras"]}

    result = await start_camera_reconfigure(hass, entry, door_id)
    assert result["step_id"] == "reconfigure"
    assert result["description_placeholders"] == {"camera": "Door"}
    assert _suggested(result) == {CONF_NAME: "Door", CONF_SOURCE: masked}
    assert SECRET not in _shown(result)

    # unchanged source: stored exactly as it was
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"], {CONF_NAME: "Front door", CONF_SOURCE: masked}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    assert entry.subentries[door_id].data[CONF_SOURCE] == source
    assert entry.subentries[door_id].title == "Front door"
    await hass.async_block_till_done()
    now = {c["id"]: c["started_at"] for c in (await entry.runtime_data.client.info())["cameras"]}
    assert now[garage_id] == started[garage_id]  # the other camera did not restart

    # another path, the masks left in place: the secrets follow
    result = await start_camera_reconfigure(hass, entry, door_id)
    moved = masked.replace("/cam?", "/cam/?")
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"],
        {CONF_NAME: "Front door", CONF_SOURCE: moved, CONF_MATCH_THRESHOLD: 0.8},
    )
    assert result["reason"] == "reconfigure_successful"
    stored = entry.subentries[door_id]
    assert stored.data[CONF_SOURCE] == source.replace("/cam?", "/cam/?")
    assert stored.unique_id == moved
    assert stored.data[CONF_MATCH_THRESHOLD] == 0.8

    # an invalid source or a wrong new password is refused; a right one replaces the old
    result = await start_camera_reconfigure(hass, entry, door_id)
    assert SECRET not in _shown(result)
    flow_id = result["flow_id"]
    result = await hass.config_entries.subentries.async_configure(
        flow_id, {CONF_NAME: "Front door", CONF_SOURCE: "rtsp://:***@/stream1"}
    )
    assert result["errors"] == {CONF_SOURCE: "invalid_source"}
    assert SECRET not in _shown(result)
    result = await hass.config_entries.subentries.async_configure(
        flow_id, {CONF_NAME: "Front door", CONF_SOURCE: rtsp.url_with("admin", "n3w")}
    )
    assert result["errors"] == {CONF_SOURCE: "invalid_auth"}
    result = await hass.config_entries.subentries.async_configure(
        flow_id, {CONF_NAME: "Front door", CONF_SOURCE: rtsp.url}
    )
    assert result["reason"] == "reconfigure_successful"
    assert entry.subentries[door_id].data[CONF_SOURCE] == rtsp.url

    result = await start_camera_reconfigure(hass, entry, door_id)
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"], {CONF_NAME: "Front door", CONF_SOURCE: mjpeg.url}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_camera_mask_without_stored_secret_is_refused(
    hass: HomeAssistant, engine: EngineProcess, test_pack: Path, mjpeg: MjpegServer, tmp_path: Path
) -> None:
    """``***`` where nothing was stored cannot be resolved: the source is refused."""
    plain = mjpeg.url.replace(f"viewer:{SECRET}@", "")
    entry = await _loaded_entry(hass, engine, test_pack, tmp_path, camera(plain, "Hall"))
    (hall,) = entry.subentries.values()
    result = await start_camera_reconfigure(hass, entry, hall.subentry_id)
    for source in (plain.replace("http://", "http://user:***@"), "rtsp://[::1:***/live"):
        result = await hass.config_entries.subentries.async_configure(
            result["flow_id"], {CONF_NAME: "Hall", CONF_SOURCE: source}
        )
        assert result["errors"] == {CONF_SOURCE: "invalid_source"}
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_camera_flows_need_a_connected_engine(
    hass: HomeAssistant, engine: EngineProcess, test_pack: Path, tmp_path: Path
) -> None:
    """An entry whose engine is not connected offers no camera flow (nothing can be
    checked)."""
    entry = folder_entry(tmp_path / "gallery", test_pack, engine=engine)
    entry.add_to_hass(hass)
    result = await hass.config_entries.subentries.async_init(
        (entry.entry_id, SUBENTRY_CAMERA), context={"source": SOURCE_USER}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "engine_not_ready"
