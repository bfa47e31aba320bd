"""Config flow of UPR Faces: the gallery source, the model pack, options and cameras.

One entry is one gallery: the UPR registry (tested before it is saved) or a local folder
for closed networks. The flow then makes sure a model pack is there: an official pack is
downloaded with a progress bar when missing, and when the download fails the admin is told
exactly which files to put in which folder. Cameras are config subentries (IP or USB);
their passwords are stored but never shown back. Tunables live in the options.

Nothing here does I/O on the event loop: folders, model packs and the USB scan go to the
executor, the registry and the download go through Home Assistant's shared web session.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from homeassistant.config_entries import (
    SOURCE_REAUTH,
    ConfigEntry,
    ConfigFlow,
    ConfigFlowResult,
    ConfigSubentryFlow,
    OptionsFlow,
    SubentryFlowResult,
)
from homeassistant.core import HomeAssistant, callback
from homeassistant.data_entry_flow import UnknownFlow
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.helpers.selector import (
    BooleanSelector,
    NumberSelector,
    NumberSelectorConfig,
    NumberSelectorMode,
    SelectOptionDict,
    SelectSelector,
    SelectSelectorConfig,
    SelectSelectorMode,
    TextSelector,
    TextSelectorConfig,
    TextSelectorType,
)
from homeassistant.util.hass_dict import HassKey

from .const import (
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
    DEFAULT_USB_MAX,
    DOMAIN,
    MODEL_PACK_CUSTOM,
    OFFICIAL_PACKS,
    SOURCE_FOLDER,
    SOURCE_REGISTRY,
    SUBENTRY_CAMERA,
)
from .coordinator import models_folder
from .engine.upr_faces_engine.errors import ModelPackError, UprFacesError
from .engine.upr_faces_engine.models import (
    ModelPackMissingError,
    async_fetch_pack,
    ensure_pack,
    find_pack,
    official_pack,
)
from .engine.upr_faces_engine.sources import (
    InvalidSourceError,
    SourceKind,
    SourceSpec,
    UsbCamera,
    mask_url,
    parse_source,
    scan_usb,
)
from .engine.upr_faces_engine.upr_client import (
    RetryPolicy,
    UprAuthError,
    UprClient,
    UprConnectionError,
)
from .validation import vol

_LOGGER = logging.getLogger(__name__)

DATA_PACK_MIRROR: Final[HassKey[str]] = HassKey(f"{DOMAIN}_pack_mirror")
"""Base URL of a mirror of the official model packs, serving ``<base>/<pack>.zip``.

For sites that host the packs on their own network, and for tests (a local server). When
unset, packs come from InsightFace's GitHub releases (``OfficialPack.url``).
"""

CONNECTION_TEST_TIMEOUT: Final = 15.0
"""Seconds the registry has to answer while the admin waits on the form."""

MASK: Final = "***"
# shown in the registry forms (hassfest keeps addresses out of translations)
EXAMPLE_API_URL: Final = "https://upr.example.org/api"
"""What :func:`mask_url` puts in place of a password or a secret query value."""

_LOOPBACK_NAMES: Final = ("localhost", "localhost.")
_ROLE_HINTS: Final = {
    "face detector": "SCRFD (det_10g.onnx, det_500m.onnx)",
    "face recognizer": "ArcFace 112x112 (w600k_r50.onnx, w600k_mbf.onnx)",
}
_MB: Final = 1024 * 1024
_UNKNOWN_TOTAL_STEP_MB: Final = 10
_DET_SIZES: Final = ("320", "480", "640")


# ------------------------------------------------------------------------------ helpers


def normalize_api_url(raw: str) -> str:
    """The registry's base URL as stored and used as unique id.

    Lower-case scheme and host, no trailing slash, no query or fragment. Raises
    ValueError for anything but an ``http(s)://host[:port][/path]`` URL; credentials in
    the URL are refused (the API key has its own field).
    """
    invalid = ValueError("not an http(s) URL of a UPR API")
    try:
        parts = urlsplit(raw.strip())
        port = parts.port
    except ValueError:  # a bad port or IPv6 literal
        raise invalid from None
    scheme = parts.scheme.lower()
    if (
        scheme not in ("http", "https")
        or not parts.hostname
        or parts.username is not None
        or parts.query
        or parts.fragment
    ):
        raise invalid
    host = parts.hostname.lower()
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc = f"{netloc}:{port}"
    return urlunsplit((scheme, netloc, parts.path.rstrip("/"), "", ""))


def is_insecure_url(url: str) -> bool:
    """True for plain ``http://`` to another machine: the API key would travel in clear.

    Loopback (127.0.0.0/8, also IPv4-mapped; ::1; localhost) is fine: the key never leaves
    the machine. Other names are not resolved: a name is no proof of loopback.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() != "http":
        return False
    host = (parts.hostname or "").lower()
    if host in _LOOPBACK_NAMES:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return True
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_loopback


def _registry_title(url: str) -> str:
    return f"UPR registry ({urlsplit(url).hostname})"


def _folder_title(folder: str) -> str:
    return f"Local gallery ({Path(folder).name})"


def _absolute(hass: HomeAssistant, raw: str) -> Path:
    """A folder typed by the admin: ``~`` expanded, relative to the configuration folder."""
    path = Path(raw.strip()).expanduser()
    return path if path.is_absolute() else Path(hass.config.path(str(path)))


def _prepare_folder(path: Path) -> Path | None:
    """Create ``path`` when missing; its resolved form when it is a writable folder.

    Blocking: run it in the executor.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
        resolved = path.resolve()
    except OSError:
        return None
    if not resolved.is_dir() or not os.access(resolved, os.W_OK | os.X_OK):
        return None
    return resolved


def _unmask_source(submitted: str, stored: str) -> str:
    """The source to save when the admin edits a masked one.

    ``submitted`` unchanged from ``mask_url(stored)`` gives ``stored`` back exactly;
    otherwise each ``***`` (the password, a secret query value) is replaced by the stored
    value it hides. A ``***`` that hides nothing is left: the caller refuses it.
    """
    if MASK not in submitted:
        return submitted
    if submitted == mask_url(stored):
        return stored
    try:
        new, old = urlsplit(submitted), urlsplit(stored)
    except ValueError:
        return submitted
    netloc = new.netloc
    if new.password == MASK and old.password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:{old.password}@{hostport}"
    query = new.query
    if MASK in query:
        old_values = dict(parse_qsl(old.query, keep_blank_values=True))
        pairs = [
            (key, old_values.get(key, value) if value == MASK else value)
            for key, value in parse_qsl(query, keep_blank_values=True)
        ]
        query = urlencode(pairs)
    return urlunsplit((new.scheme, netloc, new.path, query, new.fragment))


def _source_key(spec: SourceSpec) -> str:
    """The camera's unique id: its masked source; ``usb:N`` for ``/dev/videoN`` too."""
    if spec.kind is SourceKind.USB and isinstance(spec.device, int):
        return f"usb:{spec.device}"
    return spec.masked


def _default_camera_name(spec: SourceSpec) -> str:
    if spec.kind in (SourceKind.RTSP, SourceKind.HTTP):
        return urlsplit(spec.url).hostname or spec.masked
    if spec.path is not None:
        return spec.path.stem or spec.masked
    return spec.masked


def _usb_label(camera: UsbCamera) -> str:
    return f"/dev/video{camera.index} — {camera.name} ({camera.width}x{camera.height})"


async def async_test_registry(hass: HomeAssistant, data: Mapping[str, Any]) -> str | None:
    """Call ``/health`` and one ``/persons`` page; None when both work, else an error key.

    ``invalid_auth``: the key is refused (or cannot be a key); ``cannot_connect``: no
    answer, a refused connection, a 5xx or no UPR API at that address; ``unknown``: an
    answer that is not what the API promises, or an unexpected failure (logged).
    """
    verify_ssl = bool(data[CONF_VERIFY_SSL])
    try:
        client = UprClient(
            async_get_clientsession(hass, verify_ssl=verify_ssl),
            data[CONF_API_URL],
            data[CONF_API_KEY],
            verify_ssl=verify_ssl,
            timeout=CONNECTION_TEST_TIMEOUT,
            retry=RetryPolicy(attempts=1),
        )
    except ValueError:  # the URL was checked before: the key holds forbidden characters
        return "invalid_auth"
    try:
        await client.health()
        await client.persons_page(limit=1)
    except UprAuthError:
        return "invalid_auth"
    except UprConnectionError as err:
        _LOGGER.debug("UPR registry test failed: %s", err)
        return "cannot_connect"
    except UprFacesError as err:
        _LOGGER.warning("Unexpected answer from the UPR registry: %s", err)
        return "unknown"
    except Exception:
        _LOGGER.exception("Unexpected error while testing the UPR registry at %s", client.base_url)
        return "unknown"
    return None


# ------------------------------------------------------------------------------ schemas


def _registry_schema(*, key_required: bool) -> vol.Schema:
    key_marker = vol.Required if key_required else vol.Optional
    return vol.Schema(
        {
            vol.Required(CONF_API_URL, default=DEFAULT_API_URL): TextSelector(
                TextSelectorConfig(type=TextSelectorType.URL)
            ),
            key_marker(CONF_API_KEY): TextSelector(
                TextSelectorConfig(type=TextSelectorType.PASSWORD, autocomplete="off")
            ),
            vol.Required(CONF_VERIFY_SSL, default=True): BooleanSelector(),
        }
    )


_API_KEY_SCHEMA: Final = vol.Schema(
    {
        vol.Required(CONF_API_KEY): TextSelector(
            TextSelectorConfig(type=TextSelectorType.PASSWORD, autocomplete="off")
        )
    }
)

_FOLDER_SELECTOR: Final = TextSelector()

_MODELS_SCHEMA: Final = vol.Schema(
    {
        vol.Required(CONF_MODEL_PACK, default=OFFICIAL_PACKS[0]): SelectSelector(
            SelectSelectorConfig(
                options=[*OFFICIAL_PACKS, MODEL_PACK_CUSTOM],
                mode=SelectSelectorMode.LIST,
                translation_key=CONF_MODEL_PACK,
            )
        )
    }
)

_MODEL_DIR_SCHEMA: Final = vol.Schema({vol.Required(CONF_MODEL_DIR): TextSelector()})


def _number(
    low: float, high: float, step: float, mode: NumberSelectorMode, unit: str | None = None
) -> NumberSelector:
    config = NumberSelectorConfig(min=low, max=high, step=step, mode=mode)
    if unit is not None:
        config["unit_of_measurement"] = unit
    return NumberSelector(config)


_MATCH_SELECTOR: Final = _number(0.3, 0.99, 0.01, NumberSelectorMode.SLIDER)
_PROBABLE_SELECTOR: Final = _number(0.2, 0.99, 0.01, NumberSelectorMode.SLIDER)

_OPTIONS_SCHEMA: Final = vol.Schema(
    {
        vol.Required(CONF_MATCH_THRESHOLD): _MATCH_SELECTOR,
        vol.Required(CONF_PROBABLE_THRESHOLD): _PROBABLE_SELECTOR,
        vol.Required(CONF_DETECTION_FPS): _number(0.5, 15, 0.5, NumberSelectorMode.SLIDER),
        vol.Required(CONF_DET_SIZE): SelectSelector(
            SelectSelectorConfig(
                options=list(_DET_SIZES),
                mode=SelectSelectorMode.LIST,
                translation_key=CONF_DET_SIZE,
            )
        ),
        vol.Required(CONF_COOLDOWN): _number(5, 3600, 1, NumberSelectorMode.BOX, "s"),
        vol.Required(CONF_USB_MAX): _number(1, 32, 1, NumberSelectorMode.BOX),
        vol.Required(CONF_RETRY_BACKOFF): _number(1, 300, 1, NumberSelectorMode.BOX, "s"),
        vol.Required(CONF_USE_GPU): BooleanSelector(),
        vol.Required(CONF_RETENTION_DAYS): _number(1, 365, 1, NumberSelectorMode.BOX, "d"),
    }
)

_CAMERA_OVERRIDES: Final[dict[vol.Marker, Any]] = {
    vol.Optional(CONF_MATCH_THRESHOLD): _MATCH_SELECTOR,
    vol.Optional(CONF_PROBABLE_THRESHOLD): _PROBABLE_SELECTOR,
}

_IP_CAMERA_SCHEMA: Final = vol.Schema(
    {
        vol.Required(CONF_NAME): TextSelector(),
        vol.Required(CONF_SOURCE): TextSelector(TextSelectorConfig(autocomplete="off")),
        **_CAMERA_OVERRIDES,
    }
)


def _thresholds_error(values: Mapping[str, Any], defaults: Mapping[str, Any]) -> str | None:
    """``probable_above_match`` when the effective probable threshold exceeds the match."""
    match = values.get(CONF_MATCH_THRESHOLD, defaults[CONF_MATCH_THRESHOLD])
    probable = values.get(CONF_PROBABLE_THRESHOLD, defaults[CONF_PROBABLE_THRESHOLD])
    return "probable_above_match" if float(probable) > float(match) else None


# ------------------------------------------------------------------------------ config flow


type _Resume = Callable[[dict[str, Any]], Awaitable[ConfigFlowResult]]


class UprFacesConfigFlow(ConfigFlow, domain=DOMAIN):
    """Add a gallery: the UPR registry or a local folder, then a model pack."""

    VERSION = 1
    MINOR_VERSION = 1

    def __init__(self) -> None:
        """Start with nothing chosen."""
        self._data: dict[str, Any] = {}
        self._title = ""
        self._insecure_url: str | None = None
        self._insecure_accepted: str | None = None
        self._resume: tuple[_Resume, dict[str, Any]] | None = None
        self._download: asyncio.Task[None] | None = None
        self._progress: dict[str, str] = {}
        self._failure: dict[str, str] = {}

    @staticmethod
    @callback
    def async_get_options_flow(config_entry: ConfigEntry) -> UprFacesOptionsFlow:
        """The options: thresholds, rates and housekeeping."""
        return UprFacesOptionsFlow()

    @classmethod
    @callback
    def async_get_supported_subentry_types(
        cls, config_entry: ConfigEntry
    ) -> dict[str, type[ConfigSubentryFlow]]:
        """Cameras are subentries of the gallery they are matched against."""
        return {SUBENTRY_CAMERA: CameraSubentryFlow}

    # -------------------------------------------------------------- gallery source

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Choose where the reference faces come from."""
        return self.async_show_menu(step_id="user", menu_options=[SOURCE_REGISTRY, SOURCE_FOLDER])

    async def async_step_registry(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """The UPR registry: URL and API key, tested before anything is saved."""
        errors: dict[str, str] = {}
        if user_input is not None:
            try:
                url = normalize_api_url(user_input[CONF_API_URL])
            except ValueError:
                errors[CONF_API_URL] = "invalid_url"
            else:
                await self.async_set_unique_id(url)
                self._abort_if_unique_id_configured()
                data = {
                    CONF_GALLERY_SOURCE: SOURCE_REGISTRY,
                    CONF_API_URL: url,
                    CONF_API_KEY: user_input[CONF_API_KEY].strip(),
                    CONF_VERIFY_SSL: user_input[CONF_VERIFY_SSL],
                }
                if self._needs_insecure_consent(url):
                    return await self._async_ask_insecure(url, self.async_step_registry, user_input)
                if (error := await async_test_registry(self.hass, data)) is None:
                    self._data = data
                    self._title = _registry_title(url)
                    return await self.async_step_models()
                errors["base"] = error
        suggested = {k: v for k, v in (user_input or {}).items() if k != CONF_API_KEY}
        return self.async_show_form(
            step_id="registry",
            data_schema=self.add_suggested_values_to_schema(
                _registry_schema(key_required=True), suggested
            ),
            errors=errors,
            description_placeholders={"example_url": EXAMPLE_API_URL},
        )

    def _needs_insecure_consent(self, url: str) -> bool:
        return is_insecure_url(url) and self._insecure_accepted != url

    async def _async_ask_insecure(
        self, url: str, resume: _Resume, user_input: dict[str, Any]
    ) -> ConfigFlowResult:
        self._insecure_url = url
        self._resume = (resume, user_input)
        return await self.async_step_insecure()

    async def async_step_insecure(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Plain http to another machine: the admin must accept that the key travels in clear.

        Nothing has been sent yet; once accepted, the step that asked goes on (and tests
        the connection).
        """
        assert self._insecure_url is not None
        assert self._resume is not None
        if user_input is None:
            return self.async_show_form(
                step_id="insecure",
                data_schema=vol.Schema({}),
                description_placeholders={"url": self._insecure_url},
            )
        self._insecure_accepted = self._insecure_url
        resume, resume_input = self._resume
        self._resume = None
        return await resume(resume_input)

    async def async_step_folder(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """A local gallery folder (one sub-folder of photos per person), created if missing."""
        errors: dict[str, str] = {}
        placeholders = {"folder": ""}
        if user_input is not None:
            folder, placeholders["folder"] = await self._async_gallery_folder(
                user_input[CONF_GALLERY_DIR]
            )
            if folder is None:
                errors[CONF_GALLERY_DIR] = "folder_not_writable"
            else:
                await self.async_set_unique_id(f"folder:{folder}")
                self._abort_if_unique_id_configured()
                self._data = {CONF_GALLERY_SOURCE: SOURCE_FOLDER, CONF_GALLERY_DIR: str(folder)}
                self._title = _folder_title(str(folder))
                return await self.async_step_models()
        default = self.hass.config.path(DOMAIN, "gallery")
        return self.async_show_form(
            step_id="folder",
            data_schema=self.add_suggested_values_to_schema(
                vol.Schema({vol.Required(CONF_GALLERY_DIR, default=default): _FOLDER_SELECTOR}),
                user_input,
            ),
            errors=errors,
            description_placeholders=placeholders,
        )

    async def _async_gallery_folder(self, raw: str) -> tuple[Path | None, str]:
        """(the resolved, writable folder or None, the folder as shown in an error)."""
        if not raw.strip():
            return None, raw
        path = _absolute(self.hass, raw)
        return await self.hass.async_add_executor_job(_prepare_folder, path), str(path)

    # -------------------------------------------------------------- model pack

    async def async_step_models(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Choose the face models: an official InsightFace pack, or a folder of one's own."""
        if user_input is None:
            return self.async_show_form(step_id="models", data_schema=_MODELS_SCHEMA)
        pack = user_input[CONF_MODEL_PACK]
        self._data[CONF_MODEL_PACK] = pack
        if pack == MODEL_PACK_CUSTOM:
            return await self.async_step_model_dir()
        self._data.pop(CONF_MODEL_DIR, None)
        if await self._async_pack_installed():
            return self._async_create()
        return await self.async_step_download()

    async def async_step_model_dir(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """A folder holding a face detector and a face recognizer (ONNX)."""
        errors: dict[str, str] = {}
        placeholders = {"folder": "", "missing": ""}
        if user_input is not None:
            folder = _absolute(self.hass, user_input[CONF_MODEL_DIR])
            try:
                pack = await self.hass.async_add_executor_job(find_pack, folder)
            except ModelPackMissingError as err:
                errors[CONF_MODEL_DIR] = "invalid_model_dir"
                placeholders = {
                    "folder": str(err.folder),
                    "missing": ", ".join(_ROLE_HINTS.get(item, item) for item in err.missing),
                }
            except (ModelPackError, OSError) as err:
                _LOGGER.warning("Model folder %s cannot be used: %s", folder, err)
                errors[CONF_MODEL_DIR] = "invalid_model_dir"
                placeholders = {"folder": str(folder), "missing": ", ".join(_ROLE_HINTS.values())}
            else:
                self._data[CONF_MODEL_DIR] = str(pack.folder)
                return self._async_create()
        return self.async_show_form(
            step_id="model_dir",
            data_schema=self.add_suggested_values_to_schema(_MODEL_DIR_SCHEMA, user_input),
            errors=errors,
            description_placeholders=placeholders,
        )

    async def async_step_download(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Download the official pack, showing how far it got."""
        if self._download is None:
            self._progress = {
                "pack": self._data[CONF_MODEL_PACK],
                "url": self._pack_url(),
                "percent": "0",
                "downloaded_mb": "0",
            }
            self._download = self.hass.async_create_task(
                self._async_download(), f"{DOMAIN} model pack download", eager_start=False
            )
        if not self._download.done():
            return self.async_show_progress(
                step_id="download",
                progress_action="download",
                progress_task=self._download,
                description_placeholders=dict(self._progress),
            )
        task, self._download = self._download, None
        try:
            await task
        except (ModelPackError, OSError) as err:
            _LOGGER.warning("Model pack %s not installed: %s", self._data[CONF_MODEL_PACK], err)
        except Exception:
            _LOGGER.exception(
                "Unexpected error installing model pack %s", self._data[CONF_MODEL_PACK]
            )
        else:
            return self.async_show_progress_done(next_step_id="finish")
        self._failure = self._pack_placeholders()
        return self.async_show_progress_done(next_step_id="download_failed")

    async def _async_download(self) -> None:
        await async_fetch_pack(
            async_get_clientsession(self.hass),
            self._data[CONF_MODEL_PACK],
            models_folder(self.hass),
            url=self._pack_url(),
            progress=self._on_download_progress,
        )

    @callback
    def _on_download_progress(self, done: int, total: int | None) -> None:
        """Called on the event loop by the download: refresh the progress when it moved."""
        if total:  # refresh at each percent
            percent, megabytes = str(min(100, done * 100 // total)), done // _MB
            moved = percent != self._progress["percent"]
        else:  # refresh every few megabytes
            percent = "?"
            megabytes = done // _MB // _UNKNOWN_TOTAL_STEP_MB * _UNKNOWN_TOTAL_STEP_MB
            moved = (percent, str(megabytes)) != (
                self._progress["percent"],
                self._progress["downloaded_mb"],
            )
        if not moved:
            return
        self._progress = {**self._progress, "percent": percent, "downloaded_mb": str(megabytes)}
        self.hass.async_create_task(
            self._async_refresh_progress(), f"{DOMAIN} download progress", eager_start=False
        )

    async def _async_refresh_progress(self) -> None:
        """Show the new placeholders: Home Assistant tells the frontend when they change."""
        if self._download is None or self._download.done():
            return
        with suppress(UnknownFlow):
            await self.hass.config_entries.flow.async_configure(self.flow_id)

    async def async_step_download_failed(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Say which files go in which folder; submitting checks again, then retries."""
        if user_input is None:
            return self.async_show_form(
                step_id="download_failed",
                data_schema=vol.Schema({}),
                description_placeholders=self._failure,
            )
        if await self._async_pack_installed():
            return self._async_create()
        return await self.async_step_download()

    async def async_step_finish(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """The pack is installed: save the entry."""
        return self._async_create()

    def _pack_url(self) -> str:
        name = self._data[CONF_MODEL_PACK]
        if mirror := self.hass.data.get(DATA_PACK_MIRROR):
            return f"{mirror.rstrip('/')}/{name}.zip"
        official = official_pack(name)
        assert official is not None
        return official.url

    def _pack_placeholders(self) -> dict[str, str]:
        name = self._data[CONF_MODEL_PACK]
        official = official_pack(name)
        assert official is not None
        return {
            "pack": name,
            "folder": str(models_folder(self.hass) / name),
            "files": ", ".join(official.required),
            "url": self._pack_url(),
        }

    async def _async_pack_installed(self) -> bool:
        try:
            await self.hass.async_add_executor_job(
                ensure_pack, self._data[CONF_MODEL_PACK], models_folder(self.hass)
            )
        except (ModelPackError, OSError):
            return False
        return True

    @callback
    def _async_create(self) -> ConfigFlowResult:
        return self.async_create_entry(
            title=self._title, data=self._data, options=dict(DEFAULT_OPTIONS)
        )

    def _async_save_and_reload(self, entry: ConfigEntry, **changes: Any) -> ConfigFlowResult:
        """Save the changes and reload the entry once.

        A loaded entry has an update listener that reloads it on any change (and audits
        option changes); reloading here too would restart every camera twice. An entry
        that failed to set up (a refused key, say) has none: reload it here.
        """
        if "data_updates" in changes:
            changes["data"] = {**entry.data, **changes.pop("data_updates")}
        if not entry.update_listeners:
            return self.async_update_reload_and_abort(entry, **changes)
        # what async_update_and_abort does on Home Assistant 2025.8 and later
        self.hass.config_entries.async_update_entry(entry, **changes)
        reason = "reauth_successful" if self.source == SOURCE_REAUTH else "reconfigure_successful"
        return self.async_abort(reason=reason)

    # -------------------------------------------------------------- reauth

    async def async_step_reauth(self, entry_data: Mapping[str, Any]) -> ConfigFlowResult:
        """The registry refused the key."""
        return await self.async_step_reauth_confirm()

    async def async_step_reauth_confirm(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Ask for a new API key and test it."""
        entry = self._get_reauth_entry()
        errors: dict[str, str] = {}
        if user_input is not None:
            key = user_input[CONF_API_KEY].strip()
            if (
                error := await async_test_registry(self.hass, {**entry.data, CONF_API_KEY: key})
            ) is None:
                return self._async_save_and_reload(entry, data_updates={CONF_API_KEY: key})
            errors["base"] = error
        return self.async_show_form(
            step_id="reauth_confirm",
            data_schema=_API_KEY_SCHEMA,
            errors=errors,
            description_placeholders={"url": entry.data[CONF_API_URL]},
        )

    # -------------------------------------------------------------- reconfigure

    async def async_step_reconfigure(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Change the registry connection or the gallery folder."""
        if self._get_reconfigure_entry().data[CONF_GALLERY_SOURCE] == SOURCE_FOLDER:
            return await self.async_step_reconfigure_folder()
        return await self.async_step_reconfigure_registry()

    async def async_step_reconfigure_registry(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """URL, key (empty keeps the current one, which is never shown) and TLS check."""
        entry = self._get_reconfigure_entry()
        errors: dict[str, str] = {}
        if user_input is not None:
            try:
                url = normalize_api_url(user_input[CONF_API_URL])
            except ValueError:
                errors[CONF_API_URL] = "invalid_url"
            else:
                if self._unique_id_taken(url, entry):
                    return self.async_abort(reason="already_configured")
                key = (user_input.get(CONF_API_KEY) or "").strip() or entry.data[CONF_API_KEY]
                data = {
                    **entry.data,
                    CONF_API_URL: url,
                    CONF_API_KEY: key,
                    CONF_VERIFY_SSL: user_input[CONF_VERIFY_SSL],
                }
                if url != entry.data[CONF_API_URL] and self._needs_insecure_consent(url):
                    return await self._async_ask_insecure(
                        url, self.async_step_reconfigure_registry, user_input
                    )
                if (error := await async_test_registry(self.hass, data)) is None:
                    return self._async_save_and_reload(
                        entry,
                        unique_id=url,
                        title=self._new_title(entry, _registry_title(url)),
                        data=data,
                    )
                errors["base"] = error
        suggested = {
            CONF_API_URL: entry.data[CONF_API_URL],
            CONF_VERIFY_SSL: entry.data.get(CONF_VERIFY_SSL, True),
        }
        if user_input is not None:
            suggested |= {k: v for k, v in user_input.items() if k != CONF_API_KEY}
        return self.async_show_form(
            step_id="reconfigure_registry",
            data_schema=self.add_suggested_values_to_schema(
                _registry_schema(key_required=False), suggested
            ),
            errors=errors,
            description_placeholders={"title": entry.title, "example_url": EXAMPLE_API_URL},
        )

    async def async_step_reconfigure_folder(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Move the local gallery to another folder."""
        entry = self._get_reconfigure_entry()
        errors: dict[str, str] = {}
        placeholders = {"folder": "", "title": entry.title}
        if user_input is not None:
            folder, placeholders["folder"] = await self._async_gallery_folder(
                user_input[CONF_GALLERY_DIR]
            )
            if folder is None:
                errors[CONF_GALLERY_DIR] = "folder_not_writable"
            else:
                unique_id = f"folder:{folder}"
                if self._unique_id_taken(unique_id, entry):
                    return self.async_abort(reason="already_configured")
                return self._async_save_and_reload(
                    entry,
                    unique_id=unique_id,
                    title=self._new_title(entry, _folder_title(str(folder))),
                    data_updates={CONF_GALLERY_DIR: str(folder)},
                )
        return self.async_show_form(
            step_id="reconfigure_folder",
            data_schema=self.add_suggested_values_to_schema(
                vol.Schema({vol.Required(CONF_GALLERY_DIR): _FOLDER_SELECTOR}),
                user_input or {CONF_GALLERY_DIR: entry.data[CONF_GALLERY_DIR]},
            ),
            errors=errors,
            description_placeholders=placeholders,
        )

    def _unique_id_taken(self, unique_id: str, entry: ConfigEntry) -> bool:
        other = self.hass.config_entries.async_entry_for_domain_unique_id(DOMAIN, unique_id)
        return other is not None and other.entry_id != entry.entry_id

    @staticmethod
    def _new_title(entry: ConfigEntry, title: str) -> str:
        """The new automatic title, unless the admin renamed the entry."""
        data = entry.data
        if data[CONF_GALLERY_SOURCE] == SOURCE_REGISTRY:
            automatic = _registry_title(data[CONF_API_URL])
        else:
            automatic = _folder_title(data[CONF_GALLERY_DIR])
        return title if entry.title == automatic else entry.title


# ------------------------------------------------------------------------------ options


class UprFacesOptionsFlow(OptionsFlow):
    """Thresholds, detection rate and size, cooldown, USB scan, retries, GPU, retention."""

    async def async_step_init(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """One form with every tunable."""
        current = {**DEFAULT_OPTIONS, **self.config_entry.options}
        errors: dict[str, str] = {}
        if user_input is not None:
            options = {
                **self.config_entry.options,
                CONF_MATCH_THRESHOLD: float(user_input[CONF_MATCH_THRESHOLD]),
                CONF_PROBABLE_THRESHOLD: float(user_input[CONF_PROBABLE_THRESHOLD]),
                CONF_DETECTION_FPS: float(user_input[CONF_DETECTION_FPS]),
                CONF_DET_SIZE: int(user_input[CONF_DET_SIZE]),
                CONF_COOLDOWN: int(user_input[CONF_COOLDOWN]),
                CONF_USB_MAX: int(user_input[CONF_USB_MAX]),
                CONF_RETRY_BACKOFF: float(user_input[CONF_RETRY_BACKOFF]),
                CONF_USE_GPU: bool(user_input[CONF_USE_GPU]),
                CONF_RETENTION_DAYS: int(user_input[CONF_RETENTION_DAYS]),
            }
            if (error := _thresholds_error(options, options)) is None:
                return self.async_create_entry(data=options)
            errors[CONF_PROBABLE_THRESHOLD] = error
            current = {**current, **user_input}
        current[CONF_DET_SIZE] = str(current[CONF_DET_SIZE])
        return self.async_show_form(
            step_id="init",
            data_schema=self.add_suggested_values_to_schema(_OPTIONS_SCHEMA, current),
            errors=errors,
        )


# ------------------------------------------------------------------------------ cameras


class _FieldError(Exception):
    """A camera form field that cannot be accepted, with its error key."""

    def __init__(self, field: str, key: str) -> None:
        super().__init__(key)
        self.field = field
        self.key = key


class CameraSubentryFlow(ConfigSubentryFlow):
    """Add or change a camera: an IP stream or clip, or a USB camera found by a scan."""

    def __init__(self) -> None:
        """Nothing scanned or typed yet."""
        self._usb: list[UsbCamera] | None = None
        self._typed: str | None = None

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> SubentryFlowResult:
        """IP camera or USB camera."""
        return self.async_show_menu(step_id="user", menu_options=["ip", "usb"])

    async def async_step_ip(self, user_input: dict[str, Any] | None = None) -> SubentryFlowResult:
        """An RTSP, MJPEG (http) or recorded (file://) source, validated."""
        errors: dict[str, str] = {}
        suggested: dict[str, Any] = {}
        if user_input is not None:
            source = user_input[CONF_SOURCE].strip()
            if self._typed is not None:  # the form showed the last try masked
                source = _unmask_source(source, self._typed)
            try:
                spec = self._check(user_input, source)
            except _FieldError as err:
                errors[err.field] = err.key
            else:
                key = _source_key(spec)
                if self._source_taken(key, None):
                    return self.async_abort(reason="already_configured")
                data = self._camera_data(user_input, spec)
                return self.async_create_entry(title=data[CONF_NAME], data=data, unique_id=key)
            self._typed = source
            suggested = {**user_input, CONF_SOURCE: mask_url(source)}
        return self.async_show_form(
            step_id="ip",
            data_schema=self.add_suggested_values_to_schema(_IP_CAMERA_SCHEMA, suggested),
            errors=errors,
        )

    async def async_step_usb(self, user_input: dict[str, Any] | None = None) -> SubentryFlowResult:
        """Scan the USB cameras (once per flow) and offer those not configured yet."""
        entry = self._get_entry()
        if self._usb is None:
            found = await self.hass.async_add_executor_job(
                scan_usb, int(entry.options.get(CONF_USB_MAX, DEFAULT_USB_MAX))
            )
            if not found:
                return self.async_abort(reason="no_usb_cameras")
            self._usb = [cam for cam in found if not self._source_taken(cam.source, None)]
            if not self._usb:
                return self.async_abort(reason="already_configured")
        cameras = {cam.source: cam for cam in self._usb}
        errors: dict[str, str] = {}
        if user_input is not None:
            try:
                spec = self._check(user_input, user_input[CONF_SOURCE])
            except _FieldError as err:
                errors[err.field] = err.key
            else:
                camera = cameras[user_input[CONF_SOURCE]]
                data = self._camera_data({CONF_NAME: camera.name, **user_input}, spec)
                return self.async_create_entry(
                    title=data[CONF_NAME], data=data, unique_id=_source_key(spec)
                )
        schema = vol.Schema(
            {
                vol.Required(CONF_SOURCE, default=self._usb[0].source): SelectSelector(
                    SelectSelectorConfig(
                        options=[
                            SelectOptionDict(value=cam.source, label=_usb_label(cam))
                            for cam in self._usb
                        ],
                        mode=SelectSelectorMode.LIST,
                    )
                ),
                vol.Required(CONF_NAME, default=self._usb[0].name): TextSelector(),
                **_CAMERA_OVERRIDES,
            }
        )
        return self.async_show_form(
            step_id="usb",
            data_schema=self.add_suggested_values_to_schema(schema, user_input),
            errors=errors,
        )

    async def async_step_reconfigure(
        self, user_input: dict[str, Any] | None = None
    ) -> SubentryFlowResult:
        """Rename, re-point or re-tune a camera; its password is kept unless replaced."""
        entry = self._get_entry()
        subentry = self._get_reconfigure_subentry()
        stored: str = subentry.data[CONF_SOURCE]
        errors: dict[str, str] = {}
        suggested: dict[str, Any] = {**subentry.data, CONF_SOURCE: mask_url(stored)}
        if user_input is not None:
            source = _unmask_source(user_input[CONF_SOURCE].strip(), stored)
            try:
                spec = self._check(user_input, source)
            except _FieldError as err:
                errors[err.field] = err.key
            else:
                key = _source_key(spec)
                if self._source_taken(key, subentry.subentry_id):
                    return self.async_abort(reason="already_configured")
                data = self._camera_data(user_input, spec)
                return self.async_update_and_abort(
                    entry, subentry, unique_id=key, title=data[CONF_NAME], data=data
                )
            suggested = {**user_input, CONF_SOURCE: mask_url(source)}
        return self.async_show_form(
            step_id="reconfigure",
            data_schema=self.add_suggested_values_to_schema(_IP_CAMERA_SCHEMA, suggested),
            errors=errors,
            description_placeholders={"camera": subentry.title},
        )

    def _check(self, user_input: Mapping[str, Any], source: str) -> SourceSpec:
        """The parsed source; raises _FieldError naming the field and the error."""
        if MASK in source:  # a masked secret that hides nothing we know
            raise _FieldError(CONF_SOURCE, "invalid_source")
        try:
            spec = parse_source(source)
        except InvalidSourceError as err:
            _LOGGER.debug("Camera source refused: %s", err)
            raise _FieldError(CONF_SOURCE, "invalid_source") from None
        if (error := _thresholds_error(user_input, self._entry_options())) is not None:
            raise _FieldError(CONF_PROBABLE_THRESHOLD, error)
        return spec

    def _entry_options(self) -> dict[str, Any]:
        return {**DEFAULT_OPTIONS, **self._get_entry().options}

    @staticmethod
    def _camera_data(user_input: Mapping[str, Any], spec: SourceSpec) -> dict[str, Any]:
        name = str(user_input.get(CONF_NAME) or "").strip() or _default_camera_name(spec)
        data: dict[str, Any] = {CONF_NAME: name, CONF_SOURCE: spec.url}
        for key in (CONF_MATCH_THRESHOLD, CONF_PROBABLE_THRESHOLD):
            if user_input.get(key) is not None:
                data[key] = float(user_input[key])
        return data

    def _source_taken(self, key: str, exclude: str | None) -> bool:
        """Whether another camera of this entry already uses that source."""
        for subentry_id, subentry in self._get_entry().subentries.items():
            if subentry_id == exclude or subentry.subentry_type != SUBENTRY_CAMERA:
                continue
            if subentry.unique_id == key:
                return True
            with suppress(InvalidSourceError):
                if _source_key(parse_source(subentry.data[CONF_SOURCE])) == key:
                    return True
        return False
