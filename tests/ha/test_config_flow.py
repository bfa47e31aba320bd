"""The config flow and options flow in the real Home Assistant core, on a real engine.

Where the engine runs (an engine process started by the test, reached by URL and token;
the embedded engine and the add-on's discovery are in test_embedded.py), then the gallery
and the models, all checked by that engine: the registry is a real aiohttp server on
127.0.0.1 (tests/upr_server.py), model packs are served as real zips by a local mirror and
downloaded by the engine, folders are real folders. Entries created by a flow are set up
with ``mock_setup_entry`` (the flow is under test, not the set-up).
"""

from __future__ import annotations

import asyncio
import json
import math
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
from homeassistant.config_entries import SOURCE_USER, ConfigEntryState, ConfigFlowResult
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import (
    EVENT_DATA_ENTRY_FLOW_PROGRESSED,
    FlowResultType,
    InvalidData,
)
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_capture_events

from custom_components.upr_faces.config_flow import (
    DATA_PACK_MIRROR,
    is_insecure_url,
    normalize_api_url,
    normalize_engine_url,
)
from custom_components.upr_faces.const import (
    CONF_API_KEY,
    CONF_API_URL,
    CONF_COOLDOWN,
    CONF_DET_SIZE,
    CONF_DETECTION_FPS,
    CONF_ENGINE,
    CONF_ENGINE_TOKEN,
    CONF_ENGINE_URL,
    CONF_ENGINE_VERIFY_SSL,
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
    ENGINE_EMBEDDED,
    ENGINE_REMOTE,
    MODEL_PACK_CUSTOM,
    SOURCE_FOLDER,
    SOURCE_REGISTRY,
)
from custom_components.upr_faces.coordinator import engine_config

from ..service.engine_process import EngineProcess
from ..streams import closed_port
from ..upr_server import UprServer
from .common import engine_data, serialize_schema
from .conftest import INSTALLED_PACK

INTEGRATION = Path(__file__).resolve().parents[2] / "custom_components" / DOMAIN
OTHER_ENGINE = "http://127.0.0.1:1"  # where another entry's engine would be
# the zip holds the real det_500m.onnx and the 128-d stand-in recognizer under its own name
# (under w600k_mbf.onnx its sha256 would not be the official one: refused)
DOWNLOADED_PACK = "buffalo_sc"


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


def _engine_input(engine: EngineProcess, **changes: Any) -> dict[str, Any]:
    return {
        CONF_ENGINE_URL: engine.url,
        CONF_ENGINE_TOKEN: engine.token,
        CONF_ENGINE_VERIFY_SSL: True,
    } | changes


async def _to_source(hass: HomeAssistant, engine: EngineProcess) -> ConfigFlowResult:
    """A flow on ``engine`` (an engine elsewhere), up to the gallery source menu."""
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    assert result["type"] is FlowResultType.MENU
    assert result["menu_options"] == [ENGINE_EMBEDDED, ENGINE_REMOTE]
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {"next_step_id": ENGINE_REMOTE}
    )
    assert result["step_id"] == "remote"
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], _engine_input(engine)
    )
    assert result["type"] is FlowResultType.MENU
    assert result["step_id"] == "source"
    assert result["menu_options"] == [SOURCE_REGISTRY, SOURCE_FOLDER]
    return result


async def _start(hass: HomeAssistant, step: str, engine: EngineProcess) -> ConfigFlowResult:
    result = await _to_source(hass, engine)
    return await hass.config_entries.flow.async_configure(result["flow_id"], {"next_step_id": step})


async def _to_models(hass: HomeAssistant, folder: Path, engine: EngineProcess) -> ConfigFlowResult:
    """A folder flow, up to the model pack choice."""
    result = await _start(hass, SOURCE_FOLDER, engine)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_GALLERY_DIR: str(folder)}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "models"
    return result


def _registry_input(server: UprServer, **changes: Any) -> dict[str, Any]:
    return {CONF_API_URL: server.url, CONF_API_KEY: server.key, CONF_VERIFY_SSL: True} | changes


def _registry_entry(server: UprServer, engine: EngineProcess, **data: Any) -> MockConfigEntry:
    return MockConfigEntry(
        domain=DOMAIN,
        version=2,
        title="UPR registry (127.0.0.1)",
        unique_id=server.url,
        data={
            **engine_data(engine),
            CONF_GALLERY_SOURCE: SOURCE_REGISTRY,
            CONF_API_URL: server.url,
            CONF_API_KEY: server.key,
            CONF_VERIFY_SSL: True,
            CONF_MODEL_PACK: INSTALLED_PACK,
        }
        | data,
        options=dict(DEFAULT_OPTIONS),
    )


def _folder_entry(folder: Path, engine: EngineProcess, **data: Any) -> MockConfigEntry:
    return MockConfigEntry(
        domain=DOMAIN,
        version=2,
        title=f"Local gallery ({folder.name})",
        unique_id=f"folder:{folder}",
        data={
            **engine_data(engine),
            CONF_GALLERY_SOURCE: SOURCE_FOLDER,
            CONF_GALLERY_DIR: str(folder),
            CONF_MODEL_PACK: INSTALLED_PACK,
        }
        | data,
        options=dict(DEFAULT_OPTIONS),
    )


# ------------------------------------------------------------------------------ fixtures


@dataclass
class PackMirror:
    """A model pack mirror on 127.0.0.1: ``<url>/<name>.zip``, sent in paced chunks."""

    packs: dict[str, bytes] = field(default_factory=dict)
    status: int | None = None
    chunked: bool = False
    pause: float = 0.0
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
            await asyncio.sleep(self.pause)
        await response.write_eof()
        return response


@pytest.fixture(scope="session")
def pack_zip(test_pack: Path) -> bytes:
    """The shared test pack zipped like an official buffalo_sc."""
    names = {"det_500m.onnx": "det_500m.onnx", "mobilefacenet_128d.onnx": "mobilefacenet_128d.onnx"}
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


@dataclass
class Impostors:
    """Servers on 127.0.0.1 that are not this integration's engine: ``newer`` answers
    ``/info`` as a future engine would (API version 99), ``web_page`` with an HTML page."""

    newer: str
    web_page: str


@pytest.fixture
async def impostors(socket_enabled: None) -> AsyncIterator[Impostors]:
    async def newer(request: web.Request) -> web.Response:
        return web.json_response({"version": "9.0.0", "api_version": 99})

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="<html>router login</html>", content_type="text/html")

    runners, urls = [], []
    for handler in (newer, page):
        app = web.Application()
        app.router.add_get("/api/v1/info", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        urls.append(f"http://127.0.0.1:{runner.addresses[0][1]}")
    yield Impostors(*urls)
    for runner in runners:
        await runner.cleanup()


# ------------------------------------------------------------------------------ engine


async def test_engine_elsewhere_errors(
    hass: HomeAssistant, engine: EngineProcess, impostors: Impostors
) -> None:
    """The address and token are tested before anything else; each failure says why."""
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {"next_step_id": ENGINE_REMOTE}
    )
    flow_id = result["flow_id"]
    assert result["description_placeholders"] == {"example_url": "http://192.0.2.20:8765"}
    for bad in ("ftp://127.0.0.1:8765", "http://127.0.0.1:8765/api", "127.0.0.1:8765"):
        result = await hass.config_entries.flow.async_configure(
            flow_id, _engine_input(engine, **{CONF_ENGINE_URL: bad})
        )
        assert result["errors"] == {CONF_ENGINE_URL: "invalid_engine_url"}, bad

    result = await hass.config_entries.flow.async_configure(
        flow_id, _engine_input(engine, **{CONF_ENGINE_TOKEN: "not-the-token"})
    )
    assert result["errors"] == {"base": "invalid_auth"}
    assert "not-the-token" not in _shown(result)  # the token is not sent back
    assert _suggested(result)[CONF_ENGINE_URL] == engine.url

    closed = f"http://127.0.0.1:{closed_port()}"
    result = await hass.config_entries.flow.async_configure(
        flow_id, _engine_input(engine, **{CONF_ENGINE_URL: closed})
    )
    assert result["errors"] == {"base": "cannot_connect"}

    result = await hass.config_entries.flow.async_configure(
        flow_id, _engine_input(engine, **{CONF_ENGINE_URL: impostors.newer})
    )
    assert result["errors"] == {"base": "incompatible"}

    result = await hass.config_entries.flow.async_configure(  # something else answers there
        flow_id, _engine_input(engine, **{CONF_ENGINE_URL: impostors.web_page})
    )
    assert result["errors"] == {"base": "not_an_engine"}

    result = await hass.config_entries.flow.async_configure(
        flow_id, _engine_input(engine, **{CONF_ENGINE_URL: f" {engine.url.upper()}/ "})
    )
    assert result["type"] is FlowResultType.MENU
    assert result["step_id"] == "source"


async def test_engine_elsewhere_over_plain_http_asks_first(
    hass: HomeAssistant, engine: EngineProcess
) -> None:
    """Plain http to another host: the warning comes before the token is sent."""
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {"next_step_id": ENGINE_REMOTE}
    )
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], _engine_input(engine, **{CONF_ENGINE_URL: "http://192.0.2.20:8765"})
    )
    assert result["step_id"] == "insecure"
    assert result["description_placeholders"] == {"url": "http://192.0.2.20:8765"}


@pytest.mark.usefixtures("installed_pack")
async def test_one_engine_one_entry(
    hass: HomeAssistant, engine: EngineProcess, tmp_path: Path, mock_setup_entry: AsyncMock
) -> None:
    """The entry keeps where its engine is; an engine already in use is refused."""
    result = await _to_models(hass, tmp_path / "gallery", engine)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_MODEL_PACK: INSTALLED_PACK}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"] == {
        CONF_ENGINE: ENGINE_REMOTE,
        CONF_ENGINE_URL: engine.url,
        CONF_ENGINE_TOKEN: engine.token,
        CONF_ENGINE_VERIFY_SSL: True,
        CONF_GALLERY_SOURCE: SOURCE_FOLDER,
        CONF_GALLERY_DIR: str(tmp_path / "gallery"),
        CONF_MODEL_PACK: INSTALLED_PACK,
    }
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {"next_step_id": ENGINE_REMOTE}
    )
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], _engine_input(engine)
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("HTTP://Engine.LAN:8765/", "http://engine.lan:8765"),
        (" https://[::1]:8765 ", "https://[::1]:8765"),
        ("http://127.0.0.1", "http://127.0.0.1"),
        ("http://engine.lan:8765/api/v1", None),
        ("http://user:pw@engine.lan:8765", None),
        ("http://engine.lan:8765?x=1", None),
        ("http://engine.lan:99999", None),
        ("ws://engine.lan:8765", None),
        ("engine.lan:8765", None),
    ],
)
def test_normalize_engine_url(raw: str, normalized: str | None) -> None:
    if normalized is None:
        with pytest.raises(ValueError, match="not an http"):
            normalize_engine_url(raw)
    else:
        assert normalize_engine_url(raw) == normalized


async def test_engine_token_changed_asks_for_the_new_one(
    hass: HomeAssistant, engine: EngineProcess, tmp_path: Path, mock_setup_entry: AsyncMock
) -> None:
    """The engine refuses the token: the reauth asks for the engine's, tests it, saves it."""
    entry = _folder_entry(tmp_path / "gallery", engine)
    entry.add_to_hass(hass)
    hass.config_entries.async_update_entry(
        entry, data={**entry.data, CONF_ENGINE_TOKEN: "old-token"}
    )
    result = await entry.start_reauth_flow(hass)
    assert result["step_id"] == "reauth_engine"
    assert result["description_placeholders"]["url"] == engine.url
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_ENGINE_TOKEN: "still-wrong"}
    )
    assert result["errors"] == {"base": "invalid_auth"}
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_ENGINE_TOKEN: f" {engine.token} "}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reauth_successful"
    assert entry.data[CONF_ENGINE_TOKEN] == engine.token


# ------------------------------------------------------------------------------ registry


@pytest.mark.usefixtures("installed_pack")
async def test_registry(
    hass: HomeAssistant, engine: EngineProcess, upr_server: UprServer, mock_setup_entry: AsyncMock
) -> None:
    """URL and key tested, then the installed pack chosen: the entry is created."""
    result = await _start(hass, SOURCE_REGISTRY, engine)
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
        **engine_data(engine),
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
    hass: HomeAssistant, engine: EngineProcess, upr_server: UprServer, mock_setup_entry: AsyncMock
) -> None:
    """Each failure keeps the admin on the form with its error, then success."""
    result = await _start(hass, SOURCE_REGISTRY, engine)
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


async def test_registry_already_configured(
    hass: HomeAssistant, engine: EngineProcess, upr_server: UprServer
) -> None:
    """The same URL (whatever its case or trailing slash) is refused before any request."""
    _registry_entry(upr_server, engine, **{CONF_ENGINE_URL: OTHER_ENGINE}).add_to_hass(hass)
    result = await _start(hass, SOURCE_REGISTRY, engine)
    url = upr_server.url.replace("http://", "HTTP://") + "/"
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], _registry_input(upr_server, **{CONF_API_URL: url})
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"
    assert upr_server.requests == []


@pytest.mark.usefixtures("installed_pack")
async def test_registry_insecure_http(
    hass: HomeAssistant, engine: EngineProcess, upr_server: UprServer, mock_setup_entry: AsyncMock
) -> None:
    """Plain http to another host: the warning comes first, nothing is sent before it."""
    result = await _start(hass, SOURCE_REGISTRY, engine)
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

    # Confirmed: the engine tests the connection then. 0.0.0.0 is not a loopback address
    # (the flow takes it for another host) but Linux routes it to this machine, so the
    # test stays on this machine: the registry answers there.
    result = await _start(hass, SOURCE_REGISTRY, engine)
    flow_id = result["flow_id"]
    elsewhere = upr_server.url.replace("127.0.0.1", "0.0.0.0")
    result = await hass.config_entries.flow.async_configure(
        flow_id, _registry_input(upr_server, **{CONF_API_URL: elsewhere})
    )
    assert result["step_id"] == "insecure"
    assert upr_server.requests == []
    result = await hass.config_entries.flow.async_configure(flow_id, {})
    assert result["step_id"] == "models"
    assert upr_server.requests == [("GET", "/api/health"), ("GET", "/api/persons?limit=1")]
    hass.config_entries.flow.async_abort(flow_id)

    result = await _start(hass, SOURCE_REGISTRY, engine)
    flow_id = result["flow_id"]
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
    hass: HomeAssistant, engine: EngineProcess, tmp_path: Path, mock_setup_entry: AsyncMock
) -> None:
    """A folder of the engine's host, created by the engine; a relative path means
    nothing on another machine."""
    result = await _start(hass, SOURCE_FOLDER, engine)
    assert result["step_id"] == "folder"
    assert _suggested(result) == {}  # no default on an engine elsewhere
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_GALLERY_DIR: "faces/gallery"}
    )
    assert result["errors"] == {CONF_GALLERY_DIR: "folder_not_writable"}

    folder = tmp_path / "faces" / "gallery"
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_GALLERY_DIR: f" {folder}/ "}
    )
    assert result["step_id"] == "models"
    assert folder.is_dir()

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_MODEL_PACK: INSTALLED_PACK}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == "Local gallery (gallery)"
    assert result["data"] == {
        **engine_data(engine),
        CONF_GALLERY_SOURCE: SOURCE_FOLDER,
        CONF_GALLERY_DIR: str(folder),
        CONF_MODEL_PACK: INSTALLED_PACK,
    }
    assert result["result"].unique_id == f"folder:{folder}"


async def test_folder_errors(hass: HomeAssistant, engine: EngineProcess, tmp_path: Path) -> None:
    """A folder that cannot be created is refused; the same folder twice is aborted."""
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = await _start(hass, SOURCE_FOLDER, engine)
    for bad in (str(blocker / "gallery"), "   "):
        result = await hass.config_entries.flow.async_configure(
            result["flow_id"], {CONF_GALLERY_DIR: bad}
        )
        assert result["errors"] == {CONF_GALLERY_DIR: "folder_not_writable"}
    assert result["description_placeholders"] == {"folder": "   "}

    existing = tmp_path / "gallery"
    _folder_entry(existing, engine, **{CONF_ENGINE_URL: OTHER_ENGINE}).add_to_hass(hass)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_GALLERY_DIR: str(existing) + "/"}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"


# ------------------------------------------------------------------------------ models


async def test_model_download_with_progress(
    hass: HomeAssistant,
    engine: EngineProcess,
    tmp_path: Path,
    mirror: PackMirror,
    models_dir: Path,
    mock_setup_entry: AsyncMock,
) -> None:
    """A missing official pack is downloaded by the engine, the progress shown, then the
    entry saved."""
    mirror.pause = 0.1
    progressed = async_capture_events(hass, EVENT_DATA_ENTRY_FLOW_PROGRESSED)
    result = await _to_models(hass, tmp_path / "gallery", engine)
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
    # the bar moved as the archive came (256 KiB writes every 0.1 s, polled every 0.5 s)
    assert len(progressed) >= 3
    result = await hass.config_entries.flow.async_configure(flow_id)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"][CONF_MODEL_PACK] == DOWNLOADED_PACK
    installed = models_dir / DOWNLOADED_PACK
    assert sorted(p.name for p in installed.iterdir()) == [
        "det_500m.onnx",
        "mobilefacenet_128d.onnx",
    ]
    assert mirror.requests == 1


async def test_model_download_failed_then_files_placed_by_hand(
    hass: HomeAssistant,
    engine: EngineProcess,
    tmp_path: Path,
    mirror: PackMirror,
    models_dir: Path,
    test_pack: Path,
    mock_setup_entry: AsyncMock,
) -> None:
    """Closed network: the form says which files go where; once they are there, done."""
    mirror.status = 404
    result = await _to_models(hass, tmp_path / "gallery", engine)
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
    os.symlink(test_pack / "mobilefacenet_128d.onnx", folder / "mobilefacenet_128d.onnx")
    result = await hass.config_entries.flow.async_configure(flow_id, {})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"][CONF_MODEL_PACK] == DOWNLOADED_PACK
    assert mirror.requests == 1  # found, not downloaded again


async def test_model_download_failed_then_retried(
    hass: HomeAssistant,
    engine: EngineProcess,
    tmp_path: Path,
    mirror: PackMirror,
    models_dir: Path,
    mock_setup_entry: AsyncMock,
) -> None:
    """Submitting the failure form with the files still missing downloads again."""
    mirror.status = 404
    result = await _to_models(hass, tmp_path / "gallery", engine)
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
    assert (models_dir / DOWNLOADED_PACK / "mobilefacenet_128d.onnx").is_file()
    assert mirror.requests == 2


async def test_custom_model_dir(
    hass: HomeAssistant,
    engine: EngineProcess,
    tmp_path: Path,
    test_pack: Path,
    mock_setup_entry: AsyncMock,
) -> None:
    """A folder of one's own: what is missing is named; a usable folder is saved."""
    result = await _to_models(hass, tmp_path / "gallery", engine)
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


# ------------------------------------------------------------------------------ options


async def test_options(hass: HomeAssistant, engine: EngineProcess, tmp_path: Path) -> None:
    """Every tunable, with the probable threshold kept at or below the match threshold."""
    entry = _folder_entry(tmp_path / "gallery", engine)
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


@pytest.mark.parametrize(
    "field",
    [
        CONF_MATCH_THRESHOLD,
        CONF_PROBABLE_THRESHOLD,
        CONF_DETECTION_FPS,
        CONF_COOLDOWN,
        CONF_RETRY_BACKOFF,
        CONF_RETENTION_DAYS,
    ],
)
@pytest.mark.parametrize("text", ["NaN", "inf", "-Infinity"])
async def test_options_refuse_what_is_not_a_number(
    hass: HomeAssistant, engine: EngineProcess, tmp_path: Path, field: str, text: str
) -> None:
    """ "NaN" (or an infinity) passes Home Assistant's number selector: the form says it is
    not a number, nothing is saved, and sane values are taken afterwards. An entry that
    holds one already (saved by an older version) runs on the default instead."""
    entry = _folder_entry(tmp_path / "gallery", engine)
    entry.add_to_hass(hass)
    before = dict(entry.options)
    result = await hass.config_entries.options.async_init(entry.entry_id)
    sane = {**DEFAULT_OPTIONS, CONF_DET_SIZE: "640"}
    with pytest.raises(InvalidData):
        await hass.config_entries.options.async_configure(result["flow_id"], sane | {field: "inf"})
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], sane | {field: "NaN"}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {field: "not_a_number"}
    assert dict(entry.options) == before
    result = await hass.config_entries.options.async_configure(result["flow_id"], sane)
    assert result["type"] is FlowResultType.CREATE_ENTRY

    hass.config_entries.async_update_entry(entry, options={**entry.options, field: math.nan})
    pushed = engine_config(entry)["options"]
    assert all(math.isfinite(value) for value in pushed.values())
    assert pushed[field] == float(DEFAULT_OPTIONS[field])


# ------------------------------------------------------------------------------ reauth


async def test_reauth(
    hass: HomeAssistant, engine: EngineProcess, upr_server: UprServer, mock_setup_entry: AsyncMock
) -> None:
    """A new key, tested: refused, then accepted and saved."""
    entry = _registry_entry(upr_server, engine, **{CONF_API_KEY: "revoked-key"})
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
    hass: HomeAssistant, engine: EngineProcess, upr_server: UprServer, mock_setup_entry: AsyncMock
) -> None:
    """URL, key and TLS changed and tested; an empty key keeps the old one, never shown."""
    entry = _registry_entry(upr_server, engine)
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
        _registry_entry(upr_server, engine, **{CONF_ENGINE_URL: OTHER_ENGINE}).add_to_hass(hass)
        result = await entry.start_reconfigure_flow(hass)
        result = await hass.config_entries.flow.async_configure(
            result["flow_id"], {CONF_API_URL: upr_server.url, CONF_VERIFY_SSL: True}
        )
        assert result["type"] is FlowResultType.ABORT
        assert result["reason"] == "already_configured"
        assert entry.unique_id == other.url
        await hass.async_block_till_done()


async def test_reconfigure_registry_insecure_and_errors(
    hass: HomeAssistant, engine: EngineProcess, upr_server: UprServer
) -> None:
    """An unreachable URL is refused and nothing changes; a new plain-http URL to another
    host asks first, then is tested and saved."""
    entry = _registry_entry(upr_server, engine)
    entry.add_to_hass(hass)
    result = await entry.start_reconfigure_flow(hass)
    flow_id = result["flow_id"]
    result = await hass.config_entries.flow.async_configure(
        flow_id, {CONF_API_URL: "not a url", CONF_VERIFY_SSL: True}
    )
    assert result["errors"] == {CONF_API_URL: "invalid_url"}
    closed = f"http://127.0.0.1:{closed_port()}/api"
    result = await hass.config_entries.flow.async_configure(
        flow_id, {CONF_API_URL: closed, CONF_VERIFY_SSL: True}
    )
    assert result["step_id"] == "reconfigure_registry"
    assert result["errors"] == {"base": "cannot_connect"}
    assert entry.data[CONF_API_URL] == upr_server.url

    elsewhere = upr_server.url.replace("127.0.0.1", "0.0.0.0")  # see test_registry_insecure_http
    result = await hass.config_entries.flow.async_configure(
        flow_id, {CONF_API_URL: elsewhere, CONF_VERIFY_SSL: True}
    )
    assert result["step_id"] == "insecure"
    assert result["description_placeholders"] == {"url": elsewhere}
    result = await hass.config_entries.flow.async_configure(flow_id, {})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    assert entry.data[CONF_API_URL] == elsewhere
    assert entry.data[CONF_API_KEY] == upr_server.key
    assert entry.unique_id == elsewhere


async def test_reconfigure_folder(
    hass: HomeAssistant, engine: EngineProcess, tmp_path: Path, mock_setup_entry: AsyncMock
) -> None:
    """Another folder, created; one that cannot be, or another entry's, is refused."""
    old = tmp_path / "gallery"
    entry = _folder_entry(old, engine)
    entry.add_to_hass(hass)
    _folder_entry(tmp_path / "taken", engine, **{CONF_ENGINE_URL: OTHER_ENGINE}).add_to_hass(hass)

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


@pytest.mark.usefixtures("installed_pack")
async def test_reconfigure_of_a_loaded_entry_reloads_nothing(
    hass: HomeAssistant, engine: EngineProcess, tmp_path: Path
) -> None:
    """A loaded entry pushes the new folder to its engine: no unload, no set-up."""
    from custom_components import upr_faces

    entry = _folder_entry(tmp_path / "gallery", engine)
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
        assert (setup.call_count, unload.call_count) == (0, 0)
    assert entry.state is ConfigEntryState.LOADED
    info = await entry.runtime_data.client.info()
    assert (tmp_path / "moved").is_dir()
    config = await entry.runtime_data.client._request("GET", "/config")
    assert config["gallery"]["folder"] == str(tmp_path / "moved")
    assert info["gallery"]["source"] == "folder"
    await hass.config_entries.async_unload(entry.entry_id)


@pytest.mark.usefixtures("installed_pack")
async def test_reauth_of_a_refused_entry_sets_it_up_once(
    hass: HomeAssistant, engine: EngineProcess, upr_server: UprServer
) -> None:
    """An entry whose engine refused the token has no listener: the reauth sets it up,
    once."""
    from custom_components import upr_faces

    entry = _registry_entry(upr_server, engine, **{CONF_ENGINE_TOKEN: "revoked-token"})
    entry.add_to_hass(hass)
    assert not await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.SETUP_ERROR
    flows = hass.config_entries.flow.async_progress_by_handler(DOMAIN)
    assert [flow["context"]["source"] for flow in flows] == ["reauth"]
    assert flows[0]["step_id"] == "reauth_engine"
    with patch.object(upr_faces, "async_setup_entry", wraps=upr_faces.async_setup_entry) as setup:
        result = await hass.config_entries.flow.async_configure(
            flows[0]["flow_id"], {CONF_ENGINE_TOKEN: engine.token}
        )
        assert result["reason"] == "reauth_successful"
        await hass.async_block_till_done()
        assert setup.call_count == 1
    assert entry.state is ConfigEntryState.LOADED
    await hass.config_entries.async_unload(entry.entry_id)


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
