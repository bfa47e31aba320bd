"""Fixtures of the engine service tests: real ``upr-faces serve`` processes on 127.0.0.1.

* ``engines``: a factory of :class:`EngineProcess` (each with its own data folder under
  ``tmp_path``); every one still running is stopped after the test;
* ``gallery`` (module): a gallery folder with persons A to F (all photos but the first);
* ``clip`` (module): a 720p clip showing the first photo of C, then of D, with gaps;
* ``folder_config(gallery, *cameras)``: the configuration a client pushes for them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from ..conftest import TEST_PACK, LabelledPhoto, gallery_photos, make_gallery
from ..streams import make_clip
from ..upr_server import UprServer
from .engine_process import EngineClient, EngineProcess

SHOWN: Final = ("deepface_C", "deepface_D")


@pytest.fixture(autouse=True)
def _sockets(socket_enabled: None) -> None:
    """The tests talk to the engine, the registry and the cameras on 127.0.0.1."""


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[Callable[..., EngineProcess]]:
    """Make engine processes; each one still running is stopped after the test."""
    made: list[EngineProcess] = []

    def make(name: str = "data", **kwargs: Any) -> EngineProcess:
        engine = EngineProcess(tmp_path / name, **kwargs)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        if engine.running:
            engine.kill()


def registry_with_persons(labelled_photos: list[LabelledPhoto]) -> UprServer:
    """The registry test server holding every deepface person (``UPR-<letter>``,
    ``Person <letter>``) with the photos :func:`gallery_photos` gives (not started)."""
    server = UprServer()
    for person_id, paths in gallery_photos(labelled_photos).items():
        photos = [server.registry.add_photo(path.name, path) for path in paths]
        server.registry.put_person(
            person_id, f"UPR-{person_id[-1]}", display_name=f"Person {person_id[-1]}", photos=photos
        )
    return server


@pytest.fixture(scope="module")
def gallery(
    labelled_photos: list[LabelledPhoto], test_pack: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A gallery folder with persons A to F (skips, saying why, without ../shared)."""
    return make_gallery(tmp_path_factory.mktemp("gallery"), labelled_photos)


@pytest.fixture(scope="module")
def clip(labelled_photos: list[LabelledPhoto], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 720p clip: the first photo of C, then of D, with gaps without faces."""
    firsts: dict[str, Path] = {}
    for photo in labelled_photos:
        firsts.setdefault(photo.identity, photo.path)
    path = tmp_path_factory.mktemp("clip") / "door.mp4"
    make_clip(path, [firsts[name] for name in SHOWN], seconds=2.5, gap=1.0)
    return path


def camera(camera_id: str, source: Path | str, **extra: Any) -> dict[str, Any]:
    """A camera of the pushed configuration (a clip's path or any source string)."""
    text = f"file://{source}" if isinstance(source, Path) else source
    return {"id": camera_id, "name": camera_id.title(), "source": text, **extra}


def folder_config(gallery: Path, *cameras: dict[str, Any], **options: Any) -> dict[str, Any]:
    """What a client pushes for a folder gallery and the shared test pack."""
    return {
        "gallery": {"source": "folder", "folder": str(gallery)},
        "models": {"pack": "custom", "folder": str(TEST_PACK)},
        "options": {"cooldown": 600, **options},
        "cameras": list(cameras),
    }


def registry_config(url: str, key: str, *cameras: dict[str, Any], **options: Any) -> dict[str, Any]:
    """What a client pushes for a registry gallery."""
    return {
        "gallery": {"source": "registry", "url": url, "api_key": key, "verify_ssl": False},
        "models": {"pack": "custom", "folder": str(TEST_PACK)},
        "options": {"cooldown": 600, "retry_backoff": 0.5, **options},
        "cameras": list(cameras),
    }


async def wait_for[T](probe: Callable[[], Awaitable[T]], what: str, seconds: float = 60) -> T:
    """Await ``probe()`` until it gives something truthy."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        value = await probe()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}")
        await asyncio.sleep(0.2)


async def alerts_of(api: EngineClient) -> list[dict[str, Any]]:
    """The engine's alerts, newest first."""
    status, body = await api.get("/alerts?limit=100")
    assert status == 200, body
    alerts: list[dict[str, Any]] = body["alerts"]
    return alerts
