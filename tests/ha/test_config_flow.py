"""The config flow, options flow and camera subentry flow in the real Home Assistant core.

The registry is a real aiohttp server on 127.0.0.1 (tests/upr_server.py), model packs are
served as real zips by a local mirror and checked by the real engine, folders are real
folders. Only the USB scan is faked in one test, for lack of a camera on test machines.
Entries created by a flow are set up with ``mock_setup_entry`` (the flow is under test,
not the engine).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import zipfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any
from unittest.mock import AsyncMock, patch

import pytest
import voluptuous as vol
from aiohttp import web
from homeassistant.config_entries import (
    SOURCE_USER,
    ConfigEntryState,
    ConfigFlowResult,
    SubentryFlowResult,
)
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import EVENT_DATA_ENTRY_FLOW_PROGRESSED, FlowResultType
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_capture_events

from custom_components.upr_faces.config_flow import (
    DATA_PACK_MIRROR,
    is_insecure_url,
    normalize_api_url,
)
from custom_components.upr_faces.const import (
    CONF_API_KEY,
    CONF_API_URL,
    CONF_COOLDOWN,
    CONF_DET_SIZE,
    CONF_DETECTION_FPS,
    CONF_GALLERY_DIR,
    CONF_GALLERY_SOURCE,
    CONF_MATCH_THRESHOLD,
    CONF_MODEL_DIR,
    CONF_MODEL_PACK,
    CONF_NAME,
    CONF_PROBABLE_THRESHOLD,
    CONF_RETENTION_DAYS,
    CONF_RETRY_BACKOFF,
    CONF_SOURCE,
    CONF_USB_MAX,
    CONF_USE_GPU,
    CONF_VERIFY_SSL,
    DEFAULT_API_URL,
    DEFAULT_OPTIONS,
    DOMAIN,
    MODEL_PACK_CUSTOM,
    SOURCE_FOLDER,
    SOURCE_REGISTRY,
    SUBENTRY_CAMERA,
)
from custom_components.upr_faces.engine.upr_faces_engine.sources import UsbCamera

from ..upr_server import UprServer
from .common import serialize_schema, start_camera_reconfigure
from .conftest import INSTALLED_PACK

INTEGRATION = Path(__file__).resolve().parents[2] / "custom_components" / DOMAIN
DOWNLOADED_PACK = "buffalo_sc"  # official names in the zip: det_500m.onnx, w600k_mbf.onnx
SECRET = "s3cret-Pw"


# ------------------------------------------------------------------------------ helpers


def _shown(result: Mapping[str, Any]) -> str:
    """The form as the frontend receives it (defaults and suggested values included)."""
    return json.dumps(serialize_schema(result["data_schema"]))


def _suggested(result: Mapping[str, Any]) -> dict[str, Any]:
    """Each field's suggested value, else its default."""
    values: dict[str, Any] = {}
    for marker in result["data_schema"].schema:
        if marker.description and "suggested_value" in marker.description:
            values[str(marker)] = marker.description["suggested_value"]
        elif marker.default is not vol.UNDEFINED:
            values[str(marker)] = marker.default()
    return values


async def _start(hass: HomeAssistant, step: str) -> ConfigFlowResult:
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    assert result["type"] is FlowResultType.MENU
    assert result["menu_options"] == [SOURCE_REGISTRY, SOURCE_FOLDER]
    return await hass.config_entries.flow.async_configure(result["flow_id"], {"next_step_id": step})


async def _to_models(hass: HomeAssistant, folder: Path) -> ConfigFlowResult:
    """A folder flow, up to the model pack choice."""
    result = await _start(hass, SOURCE_FOLDER)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_GALLERY_DIR: str(folder)}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "models"
    return result


def _registry_input(server: UprServer, **changes: Any) -> dict[str, Any]:
    return {CONF_API_URL: server.url, CONF_API_KEY: server.key, CONF_VERIFY_SSL: True} | changes


def _registry_entry(server: UprServer, **data: Any) -> MockConfigEntry:
    return MockConfigEntry(
        domain=DOMAIN,
        title="UPR registry (127.0.0.1)",
        unique_id=server.url,
        data={
            CONF_GALLERY_SOURCE: SOURCE_REGISTRY,
            CONF_API_URL: server.url,
            CONF_API_KEY: server.key,
            CONF_VERIFY_SSL: True,
            CONF_MODEL_PACK: INSTALLED_PACK,
        }
        | data,
        options=dict(DEFAULT_OPTIONS),
    )


def _folder_entry(folder: Path, subentries: list[dict[str, Any]] | None = None) -> MockConfigEntry:
    return MockConfigEntry(
        domain=DOMAIN,
        title=f"Local gallery ({folder.name})",
        unique_id=f"folder:{folder}",
        data={
            CONF_GALLERY_SOURCE: SOURCE_FOLDER,
            CONF_GALLERY_DIR: str(folder),
            CONF_MODEL_PACK: INSTALLED_PACK,
        },
        options=dict(DEFAULT_OPTIONS),
        subentries_data=subentries or [],
    )


def _camera(name: str, source: str, unique_id: str) -> dict[str, Any]:
    return {
        "data": {CONF_NAME: name, CONF_SOURCE: source},
        "subentry_type": SUBENTRY_CAMERA,
        "title": name,
        "unique_id": unique_id,
    }


# ------------------------------------------------------------------------------ fixtures


@dataclass
class PackMirror:
    """A model pack mirror on 127.0.0.1: ``<url>/<name>.zip``, sent in chunks."""

    packs: dict[str, bytes] = field(default_factory=dict)
    status: int | None = None
    chunked: bool = False
    requests: int = 0
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        body = self.packs.get(request.match_info["name"])
        if self.status is not None or body is None:
            return web.Response(status=self.status or 404)
        response = web.StreamResponse()
        response.content_type = "application/zip"
        if self.chunked:
            response.enable_chunked_encoding()
        else:
            response.content_length = len(body)
        await response.prepare(request)
        for start in range(0, len(body), 256 * 1024):
            await response.write(body[start : start + 256 * 1024])
            await asyncio.sleep(0)
        await response.write_eof()
        return response


@pytest.fixture(scope="session")
def pack_zip(test_pack: Path) -> bytes:
    """The shared test pack zipped like an official buffalo_sc."""
    names = {"det_500m.onnx": "det_500m.onnx", "mobilefacenet_128d.onnx": "w600k_mbf.onnx"}
    buffer = BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for source, name in names.items():
            archive.write(test_pack / source, name)
    return buffer.getvalue()


@pytest.fixture
async def mirror(
    hass: HomeAssistant, socket_enabled: None, pack_zip: bytes
) -> AsyncIterator[PackMirror]:
    """The mirror, serving buffalo_sc, set as the flow's download source."""
    mirror = PackMirror(packs={DOWNLOADED_PACK: pack_zip})
    app = web.Application()
    app.router.add_get("/packs/{name}.zip", mirror.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    mirror.url = f"http://127.0.0.1:{runner.addresses[0][1]}/packs"
    hass.data[DATA_PACK_MIRROR] = mirror.url
    yield mirror
    await runner.cleanup()


# ------------------------------------------------------------------------------ registry


@pytest.mark.usefixtures("installed_pack")
async def test_registry(
    hass: HomeAssistant, upr_server: UprServer, mock_setup_entry: AsyncMock
) -> None:
    """URL and key tested, then the installed pack chosen: the entry is created."""
    result = await _start(hass, SOURCE_REGISTRY)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "registry"
    assert _suggested(result) == {CONF_API_URL: DEFAULT_API_URL, CONF_VERIFY_SSL: True}

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], _registry_input(upr_server, **{CONF_API_URL: f" {upr_server.url}/ "})
    )
    assert result["step_id"] == "models"
    assert upr_server.requests == [("GET", "/api/health"), ("GET", "/api/persons?limit=1")]
    assert set(upr_server.authorizations) == {f"Bearer {upr_server.key}"}

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_MODEL_PACK: INSTALLED_PACK}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == "UPR registry (127.0.0.1)"
    assert result["data"] == {
        CONF_GALLERY_SOURCE: SOURCE_REGISTRY,
        CONF_API_URL: upr_server.url,
        CONF_API_KEY: upr_server.key,
        CONF_VERIFY_SSL: True,
        CONF_MODEL_PACK: INSTALLED_PACK,
    }
    assert result["options"] == DEFAULT_OPTIONS
    assert result["result"].unique_id == upr_server.url
    assert len(mock_setup_entry.mock_calls) == 1


@pytest.mark.usefixtures("installed_pack")
async def test_registry_errors(
    hass: HomeAssistant, upr_server: UprServer, mock_setup_entry: AsyncMock
) -> None:
    """Each failure keeps the admin on the form with its error, then success."""
    result = await _start(hass, SOURCE_REGISTRY)
    flow_id = result["flow_id"]

    result = await hass.config_entries.flow.async_configure(
        flow_id, _registry_input(upr_server, **{CONF_API_URL: "ftp://registry/api"})
    )
    assert result["errors"] == {CONF_API_URL: "invalid_url"}

    result = await hass.config_entries.flow.async_configure(
        flow_id, _registry_input(upr_server, **{CONF_API_KEY: "wrong-key"})
    )
    assert result["step_id"] == "registry"
    assert result["errors"] == {"base": "invalid_auth"}
    assert "wrong-key" not in _shown(result)  # the key is not sent back to the browser

    result = await hass.config_entries.flow.async_configure(
        flow_id, _registry_input(upr_server, **{CONF_API_KEY: "two words"})
    )
    assert result["errors"] == {"base": "invalid_auth"}  # cannot be a key: nothing sent
    assert len(upr_server.requests) == 1

    upr_server.serve(b"<html>not json</html>", path="/persons", content_type="text/html")
    result = await hass.config_entries.flow.async_configure(flow_id, _registry_input(upr_server))
    assert result["errors"] == {"base": "unknown"}

    await upr_server.stop()  # a closed port
    result = await hass.config_entries.flow.async_configure(flow_id, _registry_input(upr_server))
    assert result["errors"] == {"base": "cannot_connect"}
    assert _suggested(result)[CONF_API_URL] == upr_server.url

    await upr_server.start()
    result = await hass.config_entries.flow.async_configure(flow_id, _registry_input(upr_server))
    assert result["step_id"] == "models"
    result = await hass.config_entries.flow.async_configure(
        flow_id, {CONF_MODEL_PACK: INSTALLED_PACK}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY


async def test_registry_already_configured(hass: HomeAssistant, upr_server: UprServer) -> None:
    """The same URL (whatever its case or trailing slash) is refused before any request."""
    _registry_entry(upr_server).add_to_hass(hass)
    result = await _start(hass, SOURCE_REGISTRY)
    url = upr_server.url.replace("http://", "HTTP://") + "/"
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], _registry_input(upr_server, **{CONF_API_URL: url})
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"
    assert upr_server.requests == []


@pytest.mark.usefixtures("installed_pack")
async def test_registry_insecure_http(
    hass: HomeAssistant, upr_server: UprServer, mock_setup_entry: AsyncMock
) -> None:
    """Plain http to another host: the warning comes first, nothing is sent before it."""
    result = await _start(hass, SOURCE_REGISTRY)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"],
        _registry_input(upr_server, **{CONF_API_URL: "http://Registry.Example/api/"}),
    )
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "insecure"
    assert result["description_placeholders"] == {"url": "http://registry.example/api"}
    assert result["data_schema"].schema == {}
    assert upr_server.requests == []
    hass.config_entries.flow.async_abort(result["flow_id"])

    # Confirmed: the connection is tested then. The test machine refuses connections to
    # other hosts with a RuntimeError (pytest-socket), which the flow reports as unexpected.
    result = await _start(hass, SOURCE_REGISTRY)
    flow_id = result["flow_id"]
    result = await hass.config_entries.flow.async_configure(
        flow_id, _registry_input(upr_server, **{CONF_API_URL: "http://192.0.2.10:9/api"})
    )
    assert result["step_id"] == "insecure"
    result = await hass.config_entries.flow.async_configure(flow_id, {})
    assert result["step_id"] == "registry"
    assert result["errors"] == {"base": "unknown"}

    # Loopback over http needs no warning.
    result = await hass.config_entries.flow.async_configure(flow_id, _registry_input(upr_server))
    assert result["step_id"] == "models"
    result = await hass.config_entries.flow.async_configure(
        flow_id, {CONF_MODEL_PACK: INSTALLED_PACK}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY


@pytest.mark.parametrize(
    ("url", "insecure"),
    [
        ("https://upr.example.org/api", False),
        ("http://127.0.0.1:8000/api", False),
        ("http://127.4.5.6/api", False),
        ("http://[::1]:8000/api", False),
        ("http://[::ffff:127.0.0.1]/api", False),
        ("http://localhost:8000/api", False),
        ("http://LOCALHOST/api", False),
        ("http://10.0.0.5/api", True),
        ("http://[2001:db8::1]/api", True),
        ("http://upr.example.org/api", True),
        ("http://localhost.example.org/api", True),
    ],
)
def test_is_insecure_url(url: str, insecure: bool) -> None:
    assert is_insecure_url(url) is insecure


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("HTTPS://UPR.Example.ORG/Api/", "https://upr.example.org/Api"),
        ("  http://127.0.0.1:8000/api//  ", "http://127.0.0.1:8000/api"),
        ("http://[::1]:8000/api", "http://[::1]:8000/api"),
        ("https://upr.example.org", "https://upr.example.org"),
        ("ftp://upr.example.org/api", None),
        ("https://user:pw@upr.example.org/api", None),
        ("https://upr.example.org/api?key=1", None),
        ("https://upr.example.org:99999/api", None),
        ("https://[upr.example.org/api", None),
        ("upr.example.org/api", None),
    ],
)
def test_normalize_api_url(raw: str, normalized: str | None) -> None:
    if normalized is None:
        with pytest.raises(ValueError, match="not an http"):
            normalize_api_url(raw)
    else:
        assert normalize_api_url(raw) == normalized


# ------------------------------------------------------------------------------ folder


@pytest.mark.usefixtures("installed_pack")
async def test_folder_created(
    hass: HomeAssistant, ha_config_dir: Path, mock_setup_entry: AsyncMock
) -> None:
    """The default folder is under the configuration folder; a relative path too."""
    result = await _start(hass, SOURCE_FOLDER)
    assert result["step_id"] == "folder"
    assert _suggested(result) == {CONF_GALLERY_DIR: str(ha_config_dir / DOMAIN / "gallery")}

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_GALLERY_DIR: "faces/gallery"}
    )
    assert result["step_id"] == "models"
    folder = ha_config_dir / "faces" / "gallery"
    assert folder.is_dir()

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_MODEL_PACK: INSTALLED_PACK}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == "Local gallery (gallery)"
    assert result["data"] == {
        CONF_GALLERY_SOURCE: SOURCE_FOLDER,
        CONF_GALLERY_DIR: str(folder),
        CONF_MODEL_PACK: INSTALLED_PACK,
    }
    assert result["result"].unique_id == f"folder:{folder}"


async def test_folder_errors(hass: HomeAssistant, tmp_path: Path) -> None:
    """A folder that cannot be created is refused; the same folder twice is aborted."""
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = await _start(hass, SOURCE_FOLDER)
    for bad in (str(blocker / "gallery"), "   "):
        result = await hass.config_entries.flow.async_configure(
            result["flow_id"], {CONF_GALLERY_DIR: bad}
        )
        assert result["errors"] == {CONF_GALLERY_DIR: "folder_not_writable"}
    assert result["description_placeholders"] == {"folder": "   "}

    existing = tmp_path / "gallery"
    _folder_entry(existing).add_to_hass(hass)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_GALLERY_DIR: str(existing) + "/"}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"


# ------------------------------------------------------------------------------ models


async def test_model_download_with_progress(
    hass: HomeAssistant,
    tmp_path: Path,
    mirror: PackMirror,
    models_dir: Path,
    mock_setup_entry: AsyncMock,
) -> None:
    """A missing official pack is downloaded, the progress shown, then the entry saved."""
    progressed = async_capture_events(hass, EVENT_DATA_ENTRY_FLOW_PROGRESSED)
    result = await _to_models(hass, tmp_path / "gallery")
    flow_id = result["flow_id"]
    result = await hass.config_entries.flow.async_configure(
        flow_id, {CONF_MODEL_PACK: DOWNLOADED_PACK}
    )
    assert result["type"] is FlowResultType.SHOW_PROGRESS
    assert result["step_id"] == "download"
    assert result["progress_action"] == "download"
    assert result["description_placeholders"] == {
        "pack": DOWNLOADED_PACK,
        "url": f"{mirror.url}/{DOWNLOADED_PACK}.zip",
        "percent": "0",
        "downloaded_mb": "0",
    }

    await hass.async_block_till_done()
    # the bar moved as the archive came (256 KiB writes: about ten moves), then the step ended
    assert len(progressed) >= 5
    result = await hass.config_entries.flow.async_configure(flow_id)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"][CONF_MODEL_PACK] == DOWNLOADED_PACK
    installed = models_dir / DOWNLOADED_PACK
    assert sorted(p.name for p in installed.iterdir()) == ["det_500m.onnx", "w600k_mbf.onnx"]
    assert mirror.requests == 1


async def test_model_download_from_official_url(hass: HomeAssistant, tmp_path: Path) -> None:
    """Without a mirror, packs come from InsightFace's releases (closed before it starts)."""
    result = await _to_models(hass, tmp_path / "gallery")
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_MODEL_PACK: "buffalo_l"}
    )
    assert result["type"] is FlowResultType.SHOW_PROGRESS
    assert result["description_placeholders"]["url"] == (
        "https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip"
    )
    hass.config_entries.flow.async_abort(result["flow_id"])  # cancels the download task
    await hass.async_block_till_done()


async def test_model_download_failed_then_files_placed_by_hand(
    hass: HomeAssistant,
    tmp_path: Path,
    mirror: PackMirror,
    models_dir: Path,
    test_pack: Path,
    mock_setup_entry: AsyncMock,
) -> None:
    """Closed network: the form says which files go where; once they are there, done."""
    mirror.status = 404
    result = await _to_models(hass, tmp_path / "gallery")
    flow_id = result["flow_id"]
    result = await hass.config_entries.flow.async_configure(
        flow_id, {CONF_MODEL_PACK: DOWNLOADED_PACK}
    )
    assert result["type"] is FlowResultType.SHOW_PROGRESS
    await hass.async_block_till_done()
    result = await hass.config_entries.flow.async_configure(flow_id)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "download_failed"
    folder = models_dir / DOWNLOADED_PACK
    assert result["description_placeholders"] == {
        "pack": DOWNLOADED_PACK,
        "folder": str(folder),
        "files": "det_500m.onnx, w600k_mbf.onnx",
        "url": f"{mirror.url}/{DOWNLOADED_PACK}.zip",
    }

    folder.mkdir(parents=True)
    os.symlink(test_pack / "det_500m.onnx", folder / "det_500m.onnx")
    os.symlink(test_pack / "mobilefacenet_128d.onnx", folder / "w600k_mbf.onnx")
    result = await hass.config_entries.flow.async_configure(flow_id, {})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"][CONF_MODEL_PACK] == DOWNLOADED_PACK
    assert mirror.requests == 1  # found, not downloaded again


async def test_model_download_failed_then_retried(
    hass: HomeAssistant,
    tmp_path: Path,
    mirror: PackMirror,
    models_dir: Path,
    mock_setup_entry: AsyncMock,
) -> None:
    """Submitting the failure form with the files still missing downloads again."""
    mirror.status = 404
    result = await _to_models(hass, tmp_path / "gallery")
    flow_id = result["flow_id"]
    await hass.config_entries.flow.async_configure(flow_id, {CONF_MODEL_PACK: DOWNLOADED_PACK})
    await hass.async_block_till_done()
    result = await hass.config_entries.flow.async_configure(flow_id)
    assert result["step_id"] == "download_failed"

    mirror.status = None  # the network is back, behind a proxy that sends no length
    mirror.chunked = True
    result = await hass.config_entries.flow.async_configure(flow_id, {})
    assert result["type"] is FlowResultType.SHOW_PROGRESS
    await hass.async_block_till_done()
    result = await hass.config_entries.flow.async_configure(flow_id)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert (models_dir / DOWNLOADED_PACK / "w600k_mbf.onnx").is_file()
    assert mirror.requests == 2


async def test_custom_model_dir(
    hass: HomeAssistant, tmp_path: Path, test_pack: Path, mock_setup_entry: AsyncMock
) -> None:
    """A folder of one's own: what is missing is named; a usable folder is saved."""
    result = await _to_models(hass, tmp_path / "gallery")
    flow_id = result["flow_id"]
    result = await hass.config_entries.flow.async_configure(
        flow_id, {CONF_MODEL_PACK: MODEL_PACK_CUSTOM}
    )
    assert result["step_id"] == "model_dir"

    nowhere = tmp_path / "nowhere"
    result = await hass.config_entries.flow.async_configure(flow_id, {CONF_MODEL_DIR: str(nowhere)})
    assert result["errors"] == {CONF_MODEL_DIR: "invalid_model_dir"}
    placeholders = result["description_placeholders"]
    assert placeholders["folder"] == str(nowhere)
    assert "SCRFD" in placeholders["missing"]
    assert "ArcFace" in placeholders["missing"]

    half = tmp_path / "half"
    half.mkdir()
    os.symlink(test_pack / "det_500m.onnx", half / "detector.onnx")
    result = await hass.config_entries.flow.async_configure(flow_id, {CONF_MODEL_DIR: str(half)})
    assert result["errors"] == {CONF_MODEL_DIR: "invalid_model_dir"}
    assert result["description_placeholders"]["folder"] == str(half)
    assert "SCRFD" not in result["description_placeholders"]["missing"]
    assert "ArcFace" in result["description_placeholders"]["missing"]

    result = await hass.config_entries.flow.async_configure(
        flow_id, {CONF_MODEL_DIR: str(test_pack)}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"][CONF_MODEL_PACK] == MODEL_PACK_CUSTOM
    assert result["data"][CONF_MODEL_DIR] == str(test_pack)


async def test_folders_the_host_refuses(
    hass: HomeAssistant, tmp_path: Path, test_pack: Path
) -> None:
    """Where the operating system refuses access (as it does to a non-root Home
    Assistant), the folder and model steps say so instead of failing."""
    result = await _start(hass, SOURCE_FOLDER)
    with patch("custom_components.upr_faces.config_flow.os.access", return_value=False):
        result = await hass.config_entries.flow.async_configure(
            result["flow_id"], {CONF_GALLERY_DIR: str(tmp_path / "gallery")}
        )
    assert result["errors"] == {CONF_GALLERY_DIR: "folder_not_writable"}

    result = await _to_models(hass, tmp_path / "gallery")
    flow_id = result["flow_id"]
    await hass.config_entries.flow.async_configure(flow_id, {CONF_MODEL_PACK: MODEL_PACK_CUSTOM})
    denied = PermissionError(13, "Permission denied", str(test_pack))
    with patch("custom_components.upr_faces.config_flow.find_pack", side_effect=denied):
        result = await hass.config_entries.flow.async_configure(
            flow_id, {CONF_MODEL_DIR: str(test_pack)}
        )
    assert result["errors"] == {CONF_MODEL_DIR: "invalid_model_dir"}
    assert result["description_placeholders"]["folder"] == str(test_pack)
    assert "SCRFD" in result["description_placeholders"]["missing"]


async def test_model_download_unexpected_error(
    hass: HomeAssistant, tmp_path: Path, mirror: PackMirror, caplog: pytest.LogCaptureFixture
) -> None:
    """An error nobody foresaw in the download ends on the failure form, logged once,
    and a progress refresh that comes after the end does nothing."""
    result = await _to_models(hass, tmp_path / "gallery")
    flow_id = result["flow_id"]
    with patch(
        "custom_components.upr_faces.config_flow.async_fetch_pack",
        side_effect=RuntimeError("disk on fire"),
    ):
        result = await hass.config_entries.flow.async_configure(
            flow_id, {CONF_MODEL_PACK: DOWNLOADED_PACK}
        )
        assert result["type"] is FlowResultType.SHOW_PROGRESS
        flow = hass.config_entries.flow._progress[flow_id]
        task = flow._download
        await hass.async_block_till_done()
    assert task is not None
    assert task.done()
    await flow._async_refresh_progress()  # late: the task is done, nothing is shown
    result = await hass.config_entries.flow.async_configure(flow_id)
    assert result["step_id"] == "download_failed"
    assert caplog.text.count("Unexpected error installing model pack buffalo_sc") == 1
    assert mirror.requests == 0


# ------------------------------------------------------------------------------ options


async def test_options(hass: HomeAssistant, tmp_path: Path) -> None:
    """Every tunable, with the probable threshold kept at or below the match threshold."""
    entry = _folder_entry(tmp_path / "gallery")
    entry.add_to_hass(hass)
    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "init"
    assert _suggested(result) == DEFAULT_OPTIONS | {CONF_DET_SIZE: "640"}

    wanted = {
        CONF_MATCH_THRESHOLD: 0.6,
        CONF_PROBABLE_THRESHOLD: 0.65,
        CONF_DETECTION_FPS: 2.5,
        CONF_DET_SIZE: "480",
        CONF_COOLDOWN: 120,
        CONF_USB_MAX: 4,
        CONF_RETRY_BACKOFF: 10,
        CONF_USE_GPU: True,
        CONF_RETENTION_DAYS: 90,
    }
    result = await hass.config_entries.options.async_configure(result["flow_id"], wanted)
    assert result["errors"] == {CONF_PROBABLE_THRESHOLD: "probable_above_match"}
    assert _suggested(result)[CONF_PROBABLE_THRESHOLD] == 0.65

    result = await hass.config_entries.options.async_configure(
        result["flow_id"], wanted | {CONF_PROBABLE_THRESHOLD: 0.5}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options == wanted | {CONF_PROBABLE_THRESHOLD: 0.5, CONF_DET_SIZE: 480}
    assert isinstance(entry.options[CONF_COOLDOWN], int)
    assert isinstance(entry.options[CONF_RETRY_BACKOFF], float)


# ------------------------------------------------------------------------------ reauth


async def test_reauth(
    hass: HomeAssistant, upr_server: UprServer, mock_setup_entry: AsyncMock
) -> None:
    """A new key, tested: refused, then accepted and saved."""
    entry = _registry_entry(upr_server, **{CONF_API_KEY: "revoked-key"})
    entry.add_to_hass(hass)
    result = await entry.start_reauth_flow(hass)
    assert result["step_id"] == "reauth_confirm"
    assert result["description_placeholders"]["url"] == upr_server.url

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_API_KEY: "still-wrong"}
    )
    assert result["errors"] == {"base": "invalid_auth"}

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_API_KEY: f"  {upr_server.key} "}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reauth_successful"
    assert entry.data[CONF_API_KEY] == upr_server.key
    await hass.async_block_till_done()
    assert len(mock_setup_entry.mock_calls) == 1  # reloaded


# ------------------------------------------------------------------------------ reconfigure


async def test_reconfigure_registry(
    hass: HomeAssistant, upr_server: UprServer, mock_setup_entry: AsyncMock
) -> None:
    """URL, key and TLS changed and tested; an empty key keeps the old one, never shown."""
    entry = _registry_entry(upr_server)
    entry.add_to_hass(hass)
    async with UprServer(key="other-key-77") as other:
        result = await entry.start_reconfigure_flow(hass)
        assert result["step_id"] == "reconfigure_registry"
        assert _suggested(result) == {CONF_API_URL: upr_server.url, CONF_VERIFY_SSL: True}
        assert upr_server.key not in _shown(result)

        # another registry with the old key: refused there, nothing saved
        result = await hass.config_entries.flow.async_configure(
            result["flow_id"], {CONF_API_URL: other.url, CONF_VERIFY_SSL: True}
        )
        assert result["errors"] == {"base": "invalid_auth"}
        assert other.authorizations[-1] == f"Bearer {upr_server.key}"
        assert upr_server.key not in _shown(result)

        result = await hass.config_entries.flow.async_configure(
            result["flow_id"],
            {CONF_API_URL: other.url, CONF_API_KEY: other.key, CONF_VERIFY_SSL: False},
        )
        assert result["type"] is FlowResultType.ABORT
        assert result["reason"] == "reconfigure_successful"
        assert entry.unique_id == other.url
        assert entry.data[CONF_API_URL] == other.url
        assert entry.data[CONF_API_KEY] == other.key
        assert entry.data[CONF_VERIFY_SSL] is False
        assert entry.data[CONF_MODEL_PACK] == INSTALLED_PACK
        assert entry.title == "UPR registry (127.0.0.1)"

        # the URL of another entry is refused
        _registry_entry(upr_server).add_to_hass(hass)
        result = await entry.start_reconfigure_flow(hass)
        result = await hass.config_entries.flow.async_configure(
            result["flow_id"], {CONF_API_URL: upr_server.url, CONF_VERIFY_SSL: True}
        )
        assert result["type"] is FlowResultType.ABORT
        assert result["reason"] == "already_configured"
        assert entry.unique_id == other.url
        await hass.async_block_till_done()


async def test_reconfigure_registry_insecure_and_errors(
    hass: HomeAssistant, upr_server: UprServer
) -> None:
    """A new plain-http URL to another host asks first; an unreachable one is refused."""
    entry = _registry_entry(upr_server)
    entry.add_to_hass(hass)
    result = await entry.start_reconfigure_flow(hass)
    flow_id = result["flow_id"]
    result = await hass.config_entries.flow.async_configure(
        flow_id, {CONF_API_URL: "not a url", CONF_VERIFY_SSL: True}
    )
    assert result["errors"] == {CONF_API_URL: "invalid_url"}
    result = await hass.config_entries.flow.async_configure(
        flow_id, {CONF_API_URL: "http://192.0.2.10/api", CONF_VERIFY_SSL: True}
    )
    assert result["step_id"] == "insecure"
    assert result["description_placeholders"] == {"url": "http://192.0.2.10/api"}
    result = await hass.config_entries.flow.async_configure(flow_id, {})
    assert result["step_id"] == "reconfigure_registry"
    assert result["errors"] == {"base": "unknown"}  # see test_registry_insecure_http

    await upr_server.stop()
    result = await hass.config_entries.flow.async_configure(
        flow_id, {CONF_API_URL: upr_server.url, CONF_VERIFY_SSL: True}
    )
    assert result["step_id"] == "reconfigure_registry"
    assert result["errors"] == {"base": "cannot_connect"}
    assert entry.data[CONF_API_KEY] == upr_server.key
    assert entry.unique_id == upr_server.url


async def test_reconfigure_folder(
    hass: HomeAssistant, tmp_path: Path, mock_setup_entry: AsyncMock
) -> None:
    """Another folder, created; one that cannot be, or another entry's, is refused."""
    old = tmp_path / "gallery"
    entry = _folder_entry(old)
    entry.add_to_hass(hass)
    _folder_entry(tmp_path / "taken").add_to_hass(hass)

    result = await entry.start_reconfigure_flow(hass)
    assert result["step_id"] == "reconfigure_folder"
    assert _suggested(result) == {CONF_GALLERY_DIR: str(old)}
    flow_id = result["flow_id"]

    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = await hass.config_entries.flow.async_configure(
        flow_id, {CONF_GALLERY_DIR: str(blocker / "sub")}
    )
    assert result["errors"] == {CONF_GALLERY_DIR: "folder_not_writable"}
    assert result["description_placeholders"]["folder"] == str(blocker / "sub")

    new = tmp_path / "new" / "faces"
    result = await hass.config_entries.flow.async_configure(flow_id, {CONF_GALLERY_DIR: str(new)})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    assert new.is_dir()
    assert entry.data[CONF_GALLERY_DIR] == str(new)
    assert entry.unique_id == f"folder:{new}"
    assert entry.title == "Local gallery (faces)"

    result = await entry.start_reconfigure_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_GALLERY_DIR: str(tmp_path / "taken")}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"
    await hass.async_block_till_done()


@pytest.mark.usefixtures("installed_pack", "socket_enabled")
async def test_reconfigure_reloads_a_loaded_entry_once(hass: HomeAssistant, tmp_path: Path) -> None:
    """A loaded entry (with its update listener) is set up again exactly once."""
    from custom_components import upr_faces

    entry = _folder_entry(tmp_path / "gallery")
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    with (
        patch.object(upr_faces, "async_setup_entry", wraps=upr_faces.async_setup_entry) as setup,
        patch.object(upr_faces, "async_unload_entry", wraps=upr_faces.async_unload_entry) as unload,
    ):
        result = await entry.start_reconfigure_flow(hass)
        result = await hass.config_entries.flow.async_configure(
            result["flow_id"], {CONF_GALLERY_DIR: str(tmp_path / "moved")}
        )
        assert result["reason"] == "reconfigure_successful"
        await hass.async_block_till_done()
        assert (setup.call_count, unload.call_count) == (1, 1)
    assert entry.state is ConfigEntryState.LOADED
    assert entry.runtime_data.folder.is_dir()
    await hass.config_entries.async_unload(entry.entry_id)


@pytest.mark.usefixtures("installed_pack")
async def test_reauth_of_a_refused_entry_sets_it_up_once(
    hass: HomeAssistant, upr_server: UprServer
) -> None:
    """An entry stopped by a refused key has no listener: the reauth sets it up, once."""
    from custom_components import upr_faces

    entry = _registry_entry(upr_server, **{CONF_API_KEY: "revoked-key"})
    entry.add_to_hass(hass)
    assert not await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.SETUP_ERROR
    flows = hass.config_entries.flow.async_progress_by_handler(DOMAIN)
    assert [flow["context"]["source"] for flow in flows] == ["reauth"]
    with patch.object(upr_faces, "async_setup_entry", wraps=upr_faces.async_setup_entry) as setup:
        result = await hass.config_entries.flow.async_configure(
            flows[0]["flow_id"], {CONF_API_KEY: upr_server.key}
        )
        assert result["reason"] == "reauth_successful"
        await hass.async_block_till_done()
        assert setup.call_count == 1
    assert entry.state is ConfigEntryState.LOADED
    await hass.config_entries.async_unload(entry.entry_id)


# ------------------------------------------------------------------------------ cameras


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


async def test_ip_camera(hass: HomeAssistant, tmp_path: Path) -> None:
    """Validated; a mistyped source comes back masked and its password is kept."""
    entry = _folder_entry(tmp_path / "gallery")
    entry.add_to_hass(hass)
    result = await _camera_flow(hass, entry, "ip")
    assert result["step_id"] == "ip"
    flow_id = result["flow_id"]

    typo = f"rstp://admin:{SECRET}@cam.example:554/stream1"
    result = await hass.config_entries.subentries.async_configure(
        flow_id, {CONF_NAME: "Door", CONF_SOURCE: typo}
    )
    assert result["errors"] == {CONF_SOURCE: "invalid_source"}
    assert _suggested(result)[CONF_SOURCE] == "rstp://admin:***@cam.example:554/stream1"
    assert SECRET not in _shown(result)

    result = await hass.config_entries.subentries.async_configure(
        flow_id,
        {
            CONF_NAME: "Door",
            CONF_SOURCE: "rtsp://admin:***@cam.example:554/stream1",
            CONF_PROBABLE_THRESHOLD: 0.6,  # above the entry's match threshold (0.55)
        },
    )
    assert result["errors"] == {CONF_PROBABLE_THRESHOLD: "probable_above_match"}
    assert SECRET not in _shown(result)

    result = await hass.config_entries.subentries.async_configure(
        flow_id,
        {
            CONF_NAME: " Door ",
            CONF_SOURCE: "rtsp://admin:***@cam.example:554/stream1",
            CONF_MATCH_THRESHOLD: 0.7,
            CONF_PROBABLE_THRESHOLD: 0.6,
        },
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    (subentry,) = entry.subentries.values()
    assert subentry.title == "Door"
    assert subentry.unique_id == "rtsp://admin:***@cam.example:554/stream1"
    assert dict(subentry.data) == {
        CONF_NAME: "Door",
        CONF_SOURCE: f"rtsp://admin:{SECRET}@cam.example:554/stream1",
        CONF_MATCH_THRESHOLD: 0.7,
        CONF_PROBABLE_THRESHOLD: 0.6,
    }

    # the same camera again, even with another password: already there
    result = await _camera_flow(hass, entry, "ip")
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"],
        {CONF_NAME: "Again", CONF_SOURCE: "rtsp://admin:other@cam.example:554/stream1"},
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"

    # no name: named after the host, the file, or the device
    for source, name, unique_id in [
        (
            "http://user:pw@mjpeg.example/video",
            "mjpeg.example",
            "http://user:***@mjpeg.example/video",
        ),
        ("/dev/video4", "/dev/video4", "usb:4"),
    ]:
        result = await _camera_flow(hass, entry, "ip")
        result = await hass.config_entries.subentries.async_configure(
            result["flow_id"], {CONF_NAME: " ", CONF_SOURCE: source}
        )
        assert result["type"] is FlowResultType.CREATE_ENTRY
        camera = next(s for s in entry.subentries.values() if s.unique_id == unique_id)
        assert camera.title == name
    result = await _camera_flow(hass, entry, "ip")
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"], {CONF_NAME: "Same", CONF_SOURCE: "usb:4"}
    )
    assert result["reason"] == "already_configured"

    # a recorded clip, no thresholds, no name: named after the file
    result = await _camera_flow(hass, entry, "ip")
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"], {CONF_NAME: "", CONF_SOURCE: "file:///clips/hall.mp4"}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    clip = next(s for s in entry.subentries.values() if s.unique_id == "file:///clips/hall.mp4")
    assert dict(clip.data) == {CONF_NAME: "hall", CONF_SOURCE: "file:///clips/hall.mp4"}


@pytest.mark.skipif(
    any(Path("/dev").glob("video*")), reason="this machine has video devices: scan not empty"
)
async def test_usb_camera_none_found(hass: HomeAssistant, tmp_path: Path) -> None:
    """The real scan finds nothing on a machine without cameras."""
    entry = _folder_entry(tmp_path / "gallery")
    entry.add_to_hass(hass)
    result = await _camera_flow(hass, entry, "usb")
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "no_usb_cameras"


async def test_usb_camera_found(hass: HomeAssistant, tmp_path: Path) -> None:
    """The cameras found (the scan is faked: no camera on test machines) are offered."""
    entry = _folder_entry(tmp_path / "gallery")
    entry.add_to_hass(hass)
    found = [UsbCamera(0, 1280, 720, "HD Webcam"), UsbCamera(2, 640, 480, "USB2.0 Camera")]
    with patch("custom_components.upr_faces.config_flow.scan_usb", return_value=found) as scan:
        result = await _camera_flow(hass, entry, "usb")
        assert scan.call_args.args == (DEFAULT_OPTIONS[CONF_USB_MAX],)
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


async def test_camera_reconfigure_keeps_masked_password(
    hass: HomeAssistant, tmp_path: Path
) -> None:
    """The password is never shown back and survives edits that leave ``***`` in place."""
    source = f"rtsp://admin:{SECRET}@cam.example/stream1?token=tok-{SECRET}"
    masked = "rtsp://admin:***@cam.example/stream1?token=***"
    entry = _folder_entry(
        tmp_path / "gallery",
        [_camera("Door", source, masked), _camera("Garage", "rtsp://cam2.example/live", "x")],
    )
    entry.add_to_hass(hass)
    door = next(s for s in entry.subentries.values() if s.title == "Door")

    result = await start_camera_reconfigure(hass, entry, door.subentry_id)
    assert result["step_id"] == "reconfigure"
    assert result["description_placeholders"] == {"camera": "Door"}
    assert _suggested(result) == {CONF_NAME: "Door", CONF_SOURCE: masked}
    assert SECRET not in _shown(result)

    # unchanged: the stored source stays exactly as it was
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"], {CONF_NAME: "Front door", CONF_SOURCE: masked}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    door = entry.subentries[door.subentry_id]
    assert door.data[CONF_SOURCE] == source
    assert door.title == "Front door"

    # another host, the masks left in place: the secrets follow
    result = await start_camera_reconfigure(hass, entry, door.subentry_id)
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"],
        {
            CONF_NAME: "Front door",
            CONF_SOURCE: "rtsp://admin:***@cam3.example/stream1?token=***",
            CONF_MATCH_THRESHOLD: 0.8,
        },
    )
    assert result["reason"] == "reconfigure_successful"
    door = entry.subentries[door.subentry_id]
    assert (
        door.data[CONF_SOURCE] == f"rtsp://admin:{SECRET}@cam3.example/stream1?token=tok-{SECRET}"
    )
    assert door.unique_id == "rtsp://admin:***@cam3.example/stream1?token=***"
    assert door.data[CONF_MATCH_THRESHOLD] == 0.8

    # a new password replaces the old one; an invalid source or a duplicate is refused
    result = await start_camera_reconfigure(hass, entry, door.subentry_id)
    assert SECRET not in _shown(result)
    flow_id = result["flow_id"]
    result = await hass.config_entries.subentries.async_configure(
        flow_id, {CONF_NAME: "Front door", CONF_SOURCE: "rtsp://:***@/stream1"}
    )
    assert result["errors"] == {CONF_SOURCE: "invalid_source"}
    assert SECRET not in _shown(result)
    result = await hass.config_entries.subentries.async_configure(
        flow_id, {CONF_NAME: "Front door", CONF_SOURCE: "rtsp://admin:n3w@cam3.example/s1"}
    )
    assert result["reason"] == "reconfigure_successful"
    assert entry.subentries[door.subentry_id].data[CONF_SOURCE] == (
        "rtsp://admin:n3w@cam3.example/s1"
    )

    result = await start_camera_reconfigure(hass, entry, door.subentry_id)
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"], {CONF_NAME: "Front door", CONF_SOURCE: "rtsp://cam2.example/live"}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"


async def test_camera_mask_without_stored_secret_is_refused(
    hass: HomeAssistant, tmp_path: Path
) -> None:
    """``***`` where nothing was stored cannot be resolved: the source is refused."""
    entry = _folder_entry(
        tmp_path / "gallery",
        [_camera("Hall", "rtsp://cam.example/live", "rtsp://cam.example/live")],
    )
    entry.add_to_hass(hass)
    (hall,) = entry.subentries.values()
    result = await start_camera_reconfigure(hass, entry, hall.subentry_id)
    for source in ("rtsp://user:***@cam.example/live", "rtsp://[::1:***/live"):
        result = await hass.config_entries.subentries.async_configure(
            result["flow_id"], {CONF_NAME: "Hall", CONF_SOURCE: source}
        )
        assert result["errors"] == {CONF_SOURCE: "invalid_source"}


# ------------------------------------------------------------------------------ translations


def _load(name: str) -> dict[str, Any]:
    path = INTEGRATION / name
    return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def _strings(node: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(node, dict):
        flat: dict[str, str] = {}
        for key, value in node.items():
            flat |= _strings(value, f"{prefix}::{key}" if prefix else key)
        return flat
    assert isinstance(node, str), prefix
    return {prefix: node}


def test_translations_complete() -> None:
    """strings.json is en.json; fr.json has every key with the same placeholders."""
    english = _load("translations/en.json")
    assert _load("strings.json") == english
    en, fr = _strings(english), _strings(_load("translations/fr.json"))
    assert set(fr) == set(en)
    placeholder = re.compile(r"\{(\w+)\}")
    for key, text in en.items():
        assert "[%key:" not in text, key
        assert set(placeholder.findall(fr[key])) == set(placeholder.findall(text)), key

    for section, keys in {
        "config::error": [
            "cannot_connect",
            "invalid_auth",
            "unknown",
            "invalid_url",
            "folder_not_writable",
            "invalid_model_dir",
        ],
        "config::abort": [
            "already_configured",
            "already_in_progress",
            "reauth_successful",
            "reconfigure_successful",
        ],
        "options::error": ["probable_above_match"],
        "config_subentries::camera::error": ["invalid_source", "probable_above_match"],
        "config_subentries::camera::abort": [
            "already_configured",
            "no_usb_cameras",
            "reconfigure_successful",
        ],
    }.items():
        for key in keys:
            assert f"{section}::{key}" in en, f"{section}::{key}"
    for step, fields in {
        "config::step::registry": [CONF_API_URL, CONF_API_KEY, CONF_VERIFY_SSL],
        "config::step::reconfigure_registry": [CONF_API_URL, CONF_API_KEY, CONF_VERIFY_SSL],
        "config::step::reauth_confirm": [CONF_API_KEY],
        "config::step::folder": [CONF_GALLERY_DIR],
        "config::step::reconfigure_folder": [CONF_GALLERY_DIR],
        "config::step::models": [CONF_MODEL_PACK],
        "config::step::model_dir": [CONF_MODEL_DIR],
        "options::step::init": list(DEFAULT_OPTIONS),
        "config_subentries::camera::step::ip": [
            CONF_NAME,
            CONF_SOURCE,
            CONF_MATCH_THRESHOLD,
            CONF_PROBABLE_THRESHOLD,
        ],
    }.items():
        for name in fields:
            assert f"{step}::data::{name}" in en, f"{step}::data::{name}"
            assert f"{step}::data_description::{name}" in en, f"{step}::data_description::{name}"
