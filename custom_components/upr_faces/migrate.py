"""Entries of the version that ran the engine inside Home Assistant (config entry version 1).

They move to the embedded engine by themselves: the entry says so, and what the previous
version kept on disk under ``<config>/upr_faces/<entry id>/`` goes into the engine's data
folder (``engine/`` there): the registry outbox (alerts and verdicts not yet delivered),
alert images, the embedding cache and the registry gallery's offline cache; downloaded
model packs are linked in. The alert log, audit trail and monitoring flags, kept in Home
Assistant's storage, are handed to the engine over its API at the first set-up
(``legacy_import``) and then removed here. Nothing is lost, nothing is copied twice.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from homeassistant.config_entries import ConfigEntry
from homeassistant.core import HomeAssistant

from .const import (
    CONF_ENGINE,
    CONF_ENGINE_ID,
    CONF_LEGACY_IMPORT,
    CONF_MODEL_PACK,
    DOMAIN,
    ENGINE_EMBEDDED,
    MODEL_PACK_CUSTOM,
)

_LOGGER = logging.getLogger(__name__)

VERSION = 2


def move_files(folder: Path, models: Path, pack: str | None) -> list[str]:
    """Move the previous version's files of one entry into its engine's data folder.

    Blocking (run it in the executor); safe to run again. Returns what was moved.
    """
    engine = folder / "engine"
    engine.mkdir(parents=True, exist_ok=True, mode=0o700)
    moved: list[str] = []
    outbox = folder / "outbox"
    if outbox.is_dir() and not (engine / "outbox").exists():
        outbox.rename(engine / "outbox")
        moved.append("outbox")
    snapshots = folder / "snapshots"
    if snapshots.is_dir():
        alerts = engine / "alerts"
        alerts.mkdir(exist_ok=True, mode=0o700)
        for image in snapshots.iterdir():
            target = alerts / image.name
            if not target.exists():
                image.rename(target)
                os.chmod(target, 0o600)
        shutil.rmtree(snapshots, ignore_errors=True)
        moved.append("alert images")
    for name in ("embeddings.sqlite3", "embeddings.sqlite3-wal", "embeddings.sqlite3-shm"):
        source = folder / name
        if source.is_file() and not (engine / name).exists():
            source.rename(engine / name)
            if name == "embeddings.sqlite3":
                moved.append("embedding cache")
    gallery = folder / "gallery.npz"
    if gallery.is_file():
        (engine / "gallery").mkdir(exist_ok=True, mode=0o700)
        if not (engine / "gallery" / "gallery.npz").exists():
            gallery.rename(engine / "gallery" / "gallery.npz")
            moved.append("registry gallery cache")
    if pack and pack != MODEL_PACK_CUSTOM and (models / pack).is_dir():
        (engine / "models").mkdir(exist_ok=True, mode=0o700)
        link = engine / "models" / pack
        if not link.exists():
            link.symlink_to(models / pack, target_is_directory=True)
            moved.append(f"model pack {pack}")
    return moved


async def async_migrate_entry(hass: HomeAssistant, entry: ConfigEntry) -> bool:
    """Version 1 (engine inside Home Assistant) becomes version 2 (the embedded engine)."""
    if entry.version > VERSION:
        return False  # made by a newer integration
    if entry.version == 1:
        folder = Path(hass.config.path(DOMAIN, entry.entry_id))
        models = Path(hass.config.path(DOMAIN, "models"))
        moved = await hass.async_add_executor_job(
            move_files, folder, models, entry.data.get(CONF_MODEL_PACK)
        )
        data = {
            **entry.data,
            CONF_ENGINE: ENGINE_EMBEDDED,
            CONF_ENGINE_ID: entry.entry_id,
            CONF_LEGACY_IMPORT: True,
        }
        hass.config_entries.async_update_entry(entry, data=data, version=VERSION, minor_version=1)
        _LOGGER.info(
            "UPR Faces entry %s moves to the embedded engine (%s)",
            entry.title,
            ", ".join(moved) or "nothing on disk to move",
        )
    return True
