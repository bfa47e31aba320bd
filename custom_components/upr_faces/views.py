"""HTTP views: alert images and registry photos, behind Home Assistant's auth.

The URLs put in ``upr_match`` events are signed with ``async_sign_path`` and expire after
five minutes, so a notification can show them without a long-lived token.
"""

from __future__ import annotations

from http import HTTPStatus
from pathlib import Path

from aiohttp import web
from homeassistant.config_entries import ConfigEntryState
from homeassistant.helpers.http import KEY_HASS, HomeAssistantView

from .const import CONF_GALLERY_DIR, DOMAIN
from .engine.upr_faces_engine.errors import UprFacesError
from .engine.upr_faces_engine.gallery import person_photos

SNAPSHOT_URL = "/api/upr_faces/{entry_id}/snapshot/{match_id}/{kind}"
PHOTO_URL = "/api/upr_faces/{entry_id}/person/{person_id}/photo"
# registry photos kept in memory, so that many operators do not each fetch them
PHOTO_CACHE_SIZE = 64


def snapshot_path(entry_id: str, match_id: str, kind: str) -> str:
    """The path of an alert image."""
    return SNAPSHOT_URL.format(entry_id=entry_id, match_id=match_id, kind=kind)


def registry_photo_path(entry_id: str, person_id: str) -> str:
    """The path of a person's registry photo."""
    return PHOTO_URL.format(entry_id=entry_id, person_id=person_id)


def _coordinator(request: web.Request, entry_id: str):  # type: ignore[no-untyped-def]
    hass = request.app[KEY_HASS]
    entry = hass.config_entries.async_get_entry(entry_id)
    if entry is None or entry.domain != DOMAIN or entry.state is not ConfigEntryState.LOADED:
        raise web.HTTPNotFound
    return entry.runtime_data


class SnapshotView(HomeAssistantView):
    """The face crop or the whole frame of an alert."""

    url = SNAPSHOT_URL
    name = "api:upr_faces:snapshot"
    requires_auth = True

    async def get(
        self, request: web.Request, entry_id: str, match_id: str, kind: str
    ) -> web.Response:
        """Serve the JPEG."""
        coordinator = _coordinator(request, entry_id)
        if kind not in ("face", "frame") or match_id not in coordinator.log.alerts:
            raise web.HTTPNotFound
        path: Path = coordinator.snapshot_path(match_id, kind)
        hass = request.app[KEY_HASS]
        data = await hass.async_add_executor_job(
            lambda: path.read_bytes() if path.is_file() else None
        )
        if data is None:
            raise web.HTTPNotFound
        return web.Response(
            body=data, content_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"}
        )


class RegistryPhotoView(HomeAssistantView):
    """A person's reference photo, from the registry or the local gallery folder."""

    url = PHOTO_URL
    name = "api:upr_faces:person_photo"
    requires_auth = True

    async def get(self, request: web.Request, entry_id: str, person_id: str) -> web.Response:
        """Serve the first photo of the person."""
        coordinator = _coordinator(request, entry_id)
        hass = request.app[KEY_HASS]
        gallery = coordinator.pipeline.gallery if coordinator.pipeline else None
        person = gallery.persons.get(person_id) if gallery else None
        if person is None:
            raise web.HTTPNotFound
        if coordinator.client is not None:
            if not person.photo_url:
                raise web.HTTPNotFound
            cache = coordinator.photo_cache
            cached = cache.get(person_id)
            if cached is not None:
                cache.move_to_end(person_id)
                data = cached
            else:
                try:
                    data = await coordinator.client.fetch_photo(person.photo_url)
                except UprFacesError as err:
                    return web.Response(status=HTTPStatus.BAD_GATEWAY, text=str(err))
                cache[person_id] = data
                while len(cache) > PHOTO_CACHE_SIZE:
                    cache.popitem(last=False)
        else:
            folder = Path(coordinator.config_entry.data[CONF_GALLERY_DIR]) / person_id

            def read() -> bytes | None:
                if not folder.is_dir():
                    return None
                photos = person_photos(folder)
                return photos[0].read_bytes() if photos else None

            data = await hass.async_add_executor_job(read)
            if data is None:
                raise web.HTTPNotFound
        content_type = "image/png" if data[:4] == b"\x89PNG" else "image/jpeg"
        return web.Response(
            body=data, content_type=content_type, headers={"Cache-Control": "private, max-age=300"}
        )
