"""Shared pieces of the Home Assistant tests: a registry with persons, a clip, entries."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.upr_faces.const import (
    CONF_API_KEY,
    CONF_API_URL,
    CONF_COOLDOWN,
    CONF_GALLERY_DIR,
    CONF_GALLERY_SOURCE,
    CONF_MODEL_DIR,
    CONF_MODEL_PACK,
    CONF_NAME,
    CONF_SOURCE,
    CONF_VERIFY_SSL,
    DEFAULT_OPTIONS,
    DOMAIN,
    MODEL_PACK_CUSTOM,
    SOURCE_FOLDER,
    SOURCE_REGISTRY,
    SUBENTRY_CAMERA,
)

from ..conftest import LabelledPhoto
from ..upr_server import UprServer

SHOWN = ("deepface_C", "deepface_D")


def gallery_photos(labelled_photos: list[LabelledPhoto]) -> dict[str, list[Path]]:
    """Every labelled person's photos except the first one (which the camera shows)."""
    photos: dict[str, list[Path]] = {}
    seen: set[str] = set()
    for photo in labelled_photos:
        if not photo.identity.startswith("deepface_"):
            continue
        if photo.identity not in seen:
            seen.add(photo.identity)
            continue
        photos.setdefault(photo.identity, []).append(photo.path)
    return photos


def camera(source: Path | str, name: str = "Door") -> dict[str, Any]:
    """A camera subentry for a clip (a path) or any source string."""
    text = f"file://{source}" if isinstance(source, Path) else source
    return {
        "data": {CONF_NAME: name, CONF_SOURCE: text},
        "subentry_type": SUBENTRY_CAMERA,
        "title": name,
        "unique_id": text,
    }


def registry_entry(registry: UprServer, test_pack: Path, clip: Path) -> MockConfigEntry:
    return MockConfigEntry(
        domain=DOMAIN,
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
        options={**DEFAULT_OPTIONS, CONF_COOLDOWN: 600},
        subentries_data=[camera(clip)],
    )


async def wait_for(predicate: Any, seconds: float = 30.0) -> None:
    """Let the real threads work until ``predicate()`` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.1)


def folder_entry(gallery: Path, test_pack: Path, *cameras: dict[str, Any]) -> MockConfigEntry:
    """An entry on a local gallery folder."""
    return MockConfigEntry(
        domain=DOMAIN,
        title="Local gallery",
        unique_id=f"folder:{gallery}",
        data={
            CONF_GALLERY_SOURCE: SOURCE_FOLDER,
            CONF_GALLERY_DIR: str(gallery),
            CONF_MODEL_PACK: MODEL_PACK_CUSTOM,
            CONF_MODEL_DIR: str(test_pack),
        },
        options=dict(DEFAULT_OPTIONS),
        subentries_data=list(cameras),
    )


def make_gallery(folder: Path, labelled_photos: list[LabelledPhoto]) -> Path:
    """A local gallery folder with persons A to F (all photos but the first of each)."""
    for person_id, paths in gallery_photos(labelled_photos).items():
        (folder / person_id).mkdir(parents=True)
        for path in paths:
            shutil.copy(path, folder / person_id)
    return folder
