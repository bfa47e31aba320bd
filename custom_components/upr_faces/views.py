"""HTTP views: alert images and registry photos, behind Home Assistant's auth.

The URLs put in ``upr_match`` and ``upr_sighting`` events are signed with
``async_sign_path`` and expire after five minutes, so a notification can show them
without a long-lived token.
"""

from __future__ import annotations

import re
from http import HTTPStatus

from aiohttp import web
from homeassistant.config_entries import ConfigEntryState
from homeassistant.helpers.http import KEY_HASS, HomeAssistantView

from .client import EngineError
from .const import DOMAIN
from .coordinator import UprFacesCoordinator

SNAPSHOT_URL = "/api/upr_faces/{entry_id}/snapshot/{match_id}/{kind}"
PHOTO_URL = "/api/upr_faces/{entry_id}/person/{person_id}/photo"
_SIGHTING_KIND = re.compile(r"s[1-9][0-9]{0,3}")  # sighting n's face crop


def snapshot_path(entry_id: str, match_id: str, kind: str) -> str:
    """The path of an alert image."""
    return SNAPSHOT_URL.format(entry_id=entry_id, match_id=match_id, kind=kind)


def registry_photo_path(entry_id: str, person_id: str) -> str:
    """The path of a person's registry photo."""
    return PHOTO_URL.format(entry_id=entry_id, person_id=person_id)


def _coordinator(request: web.Request, entry_id: str) -> UprFacesCoordinator:
    hass = request.app[KEY_HASS]
    entry = hass.config_entries.async_get_entry(entry_id)
    if entry is None or entry.domain != DOMAIN or entry.state is not ConfigEntryState.LOADED:
        raise web.HTTPNotFound
    coordinator: UprFacesCoordinator = entry.runtime_data
    return coordinator


class SnapshotView(HomeAssistantView):
    """The face crop or the whole frame of an alert, from the engine."""

    url = SNAPSHOT_URL
    name = "api:upr_faces:snapshot"
    requires_auth = True

    async def get(
        self, request: web.Request, entry_id: str, match_id: str, kind: str
    ) -> web.Response:
        """Serve the JPEG."""
        coordinator = _coordinator(request, entry_id)
        if kind not in ("face", "frame") and not _SIGHTING_KIND.fullmatch(kind):
            raise web.HTTPNotFound
        try:
            data = await coordinator.client.alert_image(match_id, kind)
        except EngineError:
            return web.Response(status=HTTPStatus.BAD_GATEWAY)
        if data is None:
            raise web.HTTPNotFound
        return web.Response(
            body=data, content_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"}
        )


class RegistryPhotoView(HomeAssistantView):
    """A person's reference photo (the engine fetches it from the registry or the folder)."""

    url = PHOTO_URL
    name = "api:upr_faces:person_photo"
    requires_auth = True

    async def get(self, request: web.Request, entry_id: str, person_id: str) -> web.Response:
        """Serve the first photo of the person."""
        coordinator = _coordinator(request, entry_id)
        try:
            data = await coordinator.client.person_photo(person_id)
        except EngineError:
            return web.Response(status=HTTPStatus.BAD_GATEWAY)
        if data is None:
            raise web.HTTPNotFound
        content_type = "image/png" if data[:4] == b"\x89PNG" else "image/jpeg"
        return web.Response(
            body=data, content_type=content_type, headers={"Cache-Control": "private, max-age=300"}
        )
