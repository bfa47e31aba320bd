"""Fixtures for the Home Assistant tests: the real core, a real registry, the real models.

Every test here runs against Home Assistant's real core (``hass`` from
pytest-homeassistant-custom-component) with:

* ``auto_enable_custom_integrations`` (autouse): Home Assistant may load
  ``custom_components/upr_faces``;
* ``ha_config_dir`` (autouse): the configuration folder is a fresh temporary folder, so
  what the integration writes under ``hass.config.path(...)`` (gallery, models, outbox,
  snapshots) never lands in the plugin's shared ``testing_config``;
* ``upr_server``: a real UPR registry (``tests/upr_server.py``) on 127.0.0.1, key
  ``upr_server.key``, base URL ``upr_server.url``;
* ``engine``: a real engine process (``upr-faces serve``, tests/service/engine_process.py)
  on 127.0.0.1 with its own data folder, killed after the test; ``engine_data(engine)``
  is what an entry on it holds;
* ``embedded_python`` : the integration's embedded engine runs on this interpreter
  (``UPR_FACES_ENGINE_PYTHON``) instead of an environment installed with pip; after the
  test no engine process of it is left;
* ``models_dir`` / ``installed_pack``: where the engine keeps official model packs, and
  the shared test pack installed there as :data:`INSTALLED_PACK` (a symbolic link), so an
  entry with ``model_pack: INSTALLED_PACK`` finds its models without a download;
* ``mock_setup_entry``: the integration's ``async_setup_entry`` and
  ``async_unload_entry`` replaced, for tests of flows that create or reload an entry
  and check the flow, not the set-up;
* ``no_deprecations`` (autouse): the test fails when Home Assistant logged that upr_faces
  uses something deprecated ("Detected that custom integration...", "will stop
  working", "deprecated"), or a deprecation warning was raised from the integration's
  code, on whichever Home Assistant runs the test.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Final
from unittest.mock import AsyncMock, patch

import pytest
from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import EVENT_HOMEASSISTANT_STOP
from homeassistant.core import HomeAssistant

from custom_components.upr_faces.const import DOMAIN
from custom_components.upr_faces.embedded import DATA_ENGINES, PYTHON_OVERRIDE

from ..conftest import LabelledPhoto, gallery_photos
from ..service.engine_process import EngineProcess
from ..streams import make_clip
from ..upr_server import UprServer
from .common import DEPRECATION, SHOWN

INTEGRATION_CODE: Final = str(Path(__file__).resolve().parents[2] / "custom_components")

INSTALLED_PACK: Final = "buffalo_sc"
"""The official pack name under which ``installed_pack`` installs the shared test pack.

Packs are recognised by their graphs, so the test pack's SCRFD-500M detector and 128-d
recognizer serve under that name (the real buffalo_sc has a 512-d recognizer)."""


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(enable_custom_integrations: None) -> None:
    """Let Home Assistant load custom_components/upr_faces."""


def deprecations_logged(records: list[logging.LogRecord]) -> list[str]:
    """The log lines in which Home Assistant reports a deprecated use by upr_faces."""
    found = []
    for record in records:
        message = record.getMessage()
        ours = DOMAIN in message or record.name.startswith(f"custom_components.{DOMAIN}")
        if ours and DEPRECATION.search(message):
            found.append(f"{record.levelname} {record.name}: {message}")
    return found


_RAISED: dict[str, list[str]] = {}


def pytest_warning_recorded(
    warning_message: warnings.WarningMessage, when: str, nodeid: str, location: object
) -> None:
    """Keep the deprecation warnings raised from the integration's code, by test."""
    if issubclass(warning_message.category, DeprecationWarning) and (
        str(warning_message.filename).startswith(INTEGRATION_CODE)
        or DOMAIN in str(warning_message.message)
    ):
        _RAISED.setdefault(nodeid, []).append(
            f"{warning_message.category.__name__} at {warning_message.filename}:"
            f"{warning_message.lineno}: {warning_message.message}"
        )


@pytest.fixture(autouse=True)
def no_deprecations(
    request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> Iterator[None]:
    """Fail the test on any deprecation Home Assistant reports about upr_faces."""
    yield
    found = deprecations_logged(caplog.get_records("setup") + caplog.get_records("call"))
    found += _RAISED.pop(request.node.nodeid, [])
    if found:
        pytest.fail("Home Assistant reports deprecated use by upr_faces:\n" + "\n".join(found))


@pytest.fixture(autouse=True)
def ha_config_dir(hass: HomeAssistant, tmp_path: Path) -> Path:
    """A fresh, empty configuration folder for each test (``hass.config.config_dir``)."""
    folder = tmp_path / "config"
    folder.mkdir()
    hass.config.config_dir = str(folder)
    return folder


@pytest.fixture
async def upr_server(socket_enabled: None) -> AsyncIterator[UprServer]:
    """A real UPR registry on an ephemeral port of 127.0.0.1, stopped after the test.

    Fill it with ``upr_server.registry.put_person(...)``; inject faults with
    ``upr_server.fail(...)``, ``.delay(...)`` and ``.serve(...)``; ``await
    upr_server.stop()`` makes the port refuse connections.
    """
    async with UprServer() as server:
        yield server


@pytest.fixture
def engines(socket_enabled: None, tmp_path: Path) -> Iterator[Callable[[str], EngineProcess]]:
    """Start engine processes (``engines("name")``, data in ``tmp_path/name``); each is
    killed after the test."""
    made: list[EngineProcess] = []

    def start(name: str) -> EngineProcess:
        process = EngineProcess(tmp_path / name)
        made.append(process)
        process.start()
        return process

    yield start
    for process in made:
        process.kill()


@pytest.fixture
def engine(engines: Callable[[str], EngineProcess]) -> EngineProcess:
    """A real engine process on an ephemeral port of 127.0.0.1, killed after the test."""
    return engines("engine")


@pytest.fixture
async def embedded_python(
    hass: HomeAssistant, socket_enabled: None, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[None]:
    """The embedded engine runs on this interpreter (where the engine is importable).

    After the test, Home Assistant's stop event is fired: an embedded engine process
    still running after it fails the test (and is killed).
    """
    monkeypatch.setenv(PYTHON_OVERRIDE, sys.executable)
    yield
    started = [e.pid for e in hass.data.get(DATA_ENGINES, {}).values() if e.pid is not None]
    # Home Assistant stops: every embedded engine stops with it
    hass.bus.async_fire(EVENT_HOMEASSISTANT_STOP)
    await hass.async_block_till_done()
    alive = [pid for pid in started if _alive(pid)]
    for pid in alive:
        os.killpg(pid, signal.SIGKILL)
    assert not alive, f"embedded engine processes left running: {alive}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def models_dir(engine: EngineProcess) -> Path:
    """Where the engine keeps official packs (may not exist yet)."""
    return engine.data / "models"


@pytest.fixture
def installed_pack(models_dir: Path, test_pack: Path) -> Path:
    """The shared test pack installed as ``<models_dir>/INSTALLED_PACK``; its folder.

    Skips (through ``test_pack``) when ../shared/models/test_pack is absent.
    """
    models_dir.mkdir(parents=True, exist_ok=True)
    folder = models_dir / INSTALLED_PACK
    folder.symlink_to(test_pack, target_is_directory=True)
    return folder


@pytest.fixture
async def mock_setup_entry(hass: HomeAssistant) -> AsyncIterator[AsyncMock]:
    """Replace the entry set-up and unload: flow tests check the flow, not the engine.

    Entries loaded with the replacement are unloaded with it before it goes away.
    """
    with (
        patch("custom_components.upr_faces.async_setup_entry", return_value=True) as setup,
        patch("custom_components.upr_faces.async_unload_entry", return_value=True),
    ):
        yield setup
        await hass.async_block_till_done()
        for entry in hass.config_entries.async_entries(DOMAIN):
            if entry.state is ConfigEntryState.LOADED:
                await hass.config_entries.async_unload(entry.entry_id)


@pytest.fixture(scope="module")
def clip(labelled_photos: list[LabelledPhoto], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 720p clip showing the first photo of C then of D, with gaps without faces."""
    firsts = {}
    for photo in labelled_photos:
        firsts.setdefault(photo.identity, photo.path)
    path = tmp_path_factory.mktemp("clip") / "door.mp4"
    make_clip(path, [firsts[name] for name in SHOWN], seconds=2.5, gap=1.0)
    return path


@pytest.fixture
async def registry(
    socket_enabled: None, labelled_photos: list[LabelledPhoto]
) -> AsyncIterator[UprServer]:
    """The UPR registry on 127.0.0.1 with persons A to F."""
    server = UprServer()
    for person_id, paths in gallery_photos(labelled_photos).items():
        photos = [server.registry.add_photo(p.name, p) for p in paths]
        server.registry.put_person(
            person_id, f"UPR-{person_id[-1]}", display_name=f"Person {person_id[-1]}", photos=photos
        )
    await server.start()
    yield server
    await server.stop()
