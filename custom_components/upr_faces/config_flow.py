"""Config flow of UPR Faces: where the engine runs, the gallery, the models, cameras.

The first step says where the engine runs: *on this machine* (the embedded engine, a child
process of Home Assistant, installed into an environment of its own with a progress bar),
the *UPR Faces add-on* (offered by Supervisor discovery: the admin only confirms) or *an
engine elsewhere* (URL and token, tested before they are saved). Then one entry is one
gallery: the UPR registry (tested by the engine) or a folder of the engine's host; then a
model pack (an official one is downloaded by the engine with a progress bar, or a folder
of one's own). Cameras are config subentries (IP or USB), checked and opened by the
engine before they are saved; their passwords are stored but never shown back.
Tunables live in the options.

Nothing here decodes, infers or touches a model: the engine does, over its API.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import shutil
from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from homeassistant.config_entries import (
    SOURCE_REAUTH,
    ConfigEntry,
    ConfigEntryState,
    ConfigFlow,
    ConfigFlowResult,
    ConfigSubentryFlow,
    OptionsFlow,
    SubentryFlowResult,
)
from homeassistant.core import callback
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
from homeassistant.helpers.service_info.hassio import HassioServiceInfo
from homeassistant.util.hass_dict import HassKey
from homeassistant.util.ulid import ulid_now

from .client import (
    EngineApiError,
    EngineAuthError,
    EngineClient,
    EngineConnectionError,
    EngineError,
    NotAnEngineError,
)
from .const import (
    CONF_API_KEY,
    CONF_API_URL,
    CONF_COOLDOWN,
    CONF_DET_SIZE,
    CONF_DETECTION_FPS,
    CONF_ENGINE,
    CONF_ENGINE_ID,
    CONF_ENGINE_TOKEN,
    CONF_ENGINE_URL,
    CONF_ENGINE_VERIFY_SSL,
    CONF_GALLERY_DIR,
    CONF_GALLERY_SOURCE,
    CONF_IDLE_DECODE,
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
    ENGINE_ADDON,
    ENGINE_API_VERSION,
    ENGINE_EMBEDDED,
    ENGINE_REMOTE,
    IDLE_DECODE_MODES,
    MODEL_PACK_CUSTOM,
    OFFICIAL_PACKS,
    SOURCE_FOLDER,
    SOURCE_REGISTRY,
    SUBENTRY_CAMERA,
)
from .coordinator import storage_folder
from .embedded import (
    INSTALL_STAGES,
    EngineSetupError,
    async_stop_engine,
    engine_key,
    get_engine,
    is_installed,
    platform_problem,
    start_install,
)
from .validation import vol

_LOGGER = logging.getLogger(__name__)

DATA_PACK_MIRROR: Final[HassKey[str]] = HassKey(f"{DOMAIN}_pack_mirror")
"""Base URL of a mirror of the official model packs, serving ``<base>/<pack>.zip``.

For sites that host the packs on their own network, and for tests (a local server). When
unset, the engine downloads packs from InsightFace's GitHub releases.
"""

MASK: Final = "***"
"""What the engine puts in place of a password or a secret query value."""
# shown in the registry forms (hassfest keeps addresses out of translations)
EXAMPLE_API_URL: Final = "https://upr.example.org/api"
EXAMPLE_ENGINE_URL: Final = "http://192.0.2.20:8765"
DOWNLOAD_POLL: Final = 0.5
ADDON_GALLERY: Final = "/media/upr_faces/gallery"

_LOOPBACK_NAMES: Final = ("localhost", "localhost.")
_ROLE_HINTS: Final = {
    "face detector": "SCRFD (det_10g.onnx, det_500m.onnx)",
    "face recognizer": "ArcFace 112x112 (w600k_r50.onnx, w600k_mbf.onnx)",
}
_MB: Final = 1024 * 1024
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
    return f"Local gallery ({folder.rstrip('/').rsplit('/', 1)[-1]})"


def normalize_engine_url(raw: str) -> str:
    """An engine's base URL: ``http(s)://host[:port]``, nothing else (ValueError otherwise)."""
    invalid = ValueError("not an http(s) address of an engine")
    try:
        parts = urlsplit(raw.strip())
        port = parts.port
    except ValueError:
        raise invalid from None
    if (
        parts.scheme.lower() not in ("http", "https")
        or not parts.hostname
        or parts.username is not None
        or parts.query
        or parts.fragment
        or parts.path.strip("/")
    ):
        raise invalid
    host = parts.hostname.lower()
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc = f"{netloc}:{port}"
    return urlunsplit((parts.scheme.lower(), netloc, "", "", ""))


async def async_probe_engine(
    client: EngineClient,
) -> tuple[dict[str, Any] | None, str | None]:
    """(the engine's info, None), or (None, an error key) for the form."""
    try:
        info = await client.info()
    except EngineAuthError:
        return None, "invalid_auth"
    except NotAnEngineError as err:
        _LOGGER.debug("Not an engine at %s: %s", client.url, err)
        return None, "not_an_engine"
    except EngineConnectionError as err:
        _LOGGER.debug("No engine at %s: %s", client.url, err)
        return None, "cannot_connect"
    except EngineError as err:
        _LOGGER.warning("Unexpected answer from the engine at %s: %s", client.url, err)
        return None, "unknown"
    if int(info.get("api_version") or 0) != ENGINE_API_VERSION:
        return None, "incompatible"
    return info, None


async def async_test_registry(client: EngineClient, data: Mapping[str, Any]) -> str | None:
    """The engine calls the registry's ``/health`` and one ``/persons`` page with this URL
    and key; None when both work, else an error key (``invalid_auth``, ``cannot_connect``,
    ``unknown``)."""
    try:
        answer = await client.test_registry(
            data[CONF_API_URL], data[CONF_API_KEY], bool(data[CONF_VERIFY_SSL])
        )
    except EngineError as err:
        _LOGGER.warning("The engine could not test the registry: %s", err)
        return "engine_unreachable"
    if answer.get("ok"):
        return None
    code = str((answer.get("error") or {}).get("code", "unknown"))
    return code if code in ("invalid_auth", "cannot_connect") else "unknown"


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

_ENGINE_SCHEMA: Final = vol.Schema(
    {
        vol.Required(CONF_ENGINE_URL): TextSelector(TextSelectorConfig(type=TextSelectorType.URL)),
        vol.Required(CONF_ENGINE_TOKEN): TextSelector(
            TextSelectorConfig(type=TextSelectorType.PASSWORD, autocomplete="off")
        ),
        vol.Required(CONF_ENGINE_VERIFY_SSL, default=True): BooleanSelector(),
    }
)

_TOKEN_SCHEMA: Final = vol.Schema(
    {
        vol.Required(CONF_ENGINE_TOKEN): TextSelector(
            TextSelectorConfig(type=TextSelectorType.PASSWORD, autocomplete="off")
        )
    }
)


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
    vol.Optional(CONF_IDLE_DECODE): SelectSelector(
        SelectSelectorConfig(
            options=list(IDLE_DECODE_MODES),
            mode=SelectSelectorMode.DROPDOWN,
            translation_key=CONF_IDLE_DECODE,
        )
    ),
}

_IP_CAMERA_SCHEMA: Final = vol.Schema(
    {
        vol.Required(CONF_NAME): TextSelector(),
        vol.Required(CONF_SOURCE): TextSelector(TextSelectorConfig(autocomplete="off")),
        **_CAMERA_OVERRIDES,
    }
)


def _not_finite(values: Mapping[str, Any]) -> str | None:
    """The first numeric field holding NaN or an infinity (Home Assistant's number
    selector lets "NaN" through: every comparison with it is false)."""
    for key, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            return key
    return None


def _thresholds_error(values: Mapping[str, Any], defaults: Mapping[str, Any]) -> str | None:
    """``probable_above_match`` when the effective probable threshold exceeds the match."""
    match = values.get(CONF_MATCH_THRESHOLD, defaults[CONF_MATCH_THRESHOLD])
    probable = values.get(CONF_PROBABLE_THRESHOLD, defaults[CONF_PROBABLE_THRESHOLD])
    return "probable_above_match" if float(probable) > float(match) else None


# ------------------------------------------------------------------------------ config flow


type _Resume = Callable[[dict[str, Any]], Awaitable[ConfigFlowResult]]


class UprFacesConfigFlow(ConfigFlow, domain=DOMAIN):
    """Add a gallery: where the engine runs, the registry or a folder, then a model pack."""

    VERSION = 2
    MINOR_VERSION = 1

    def __init__(self) -> None:
        """Start with nothing chosen."""
        self._data: dict[str, Any] = {}
        self._client: EngineClient | None = None
        self._title = ""
        self._insecure_url: str | None = None
        self._insecure_accepted: str | None = None
        self._resume: tuple[_Resume, dict[str, Any]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._progress: dict[str, str] = {}
        self._failure: dict[str, str] = {}
        self._created = False
        self._discovered: dict[str, Any] | None = None

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

    @callback
    def async_remove(self) -> None:
        """A flow left before its entry was made stops the engine it started for itself."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        key = self._data.get(CONF_ENGINE_ID)
        if key and not self._created:
            hass = self.hass

            async def clean() -> None:
                await async_stop_engine(hass, key)
                folder = storage_folder(hass, key)
                await hass.async_add_executor_job(lambda: shutil.rmtree(folder, ignore_errors=True))

            hass.async_create_background_task(clean(), f"{DOMAIN} flow clean-up")

    # -------------------------------------------------------------- where the engine runs

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Choose where the engine runs."""
        return self.async_show_menu(step_id="user", menu_options=[ENGINE_EMBEDDED, ENGINE_REMOTE])

    async def async_step_embedded(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """The engine on this machine: installed when needed, then started."""
        if (problem := await self.hass.async_add_executor_job(platform_problem)) is not None:
            return self.async_abort(
                reason="unsupported_platform", description_placeholders={"problem": problem}
            )
        if not await self.hass.async_add_executor_job(is_installed, self.hass):
            return await self.async_step_install()
        return await self._async_start_embedded()

    async def async_step_install(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Install the engine's environment, showing which stage it is at."""
        if self._task is None:
            self._progress = {"step": "1", "steps": str(len(INSTALL_STAGES))}
            self._task = start_install(self.hass, self._on_install_stage)
        if not self._task.done():
            return self.async_show_progress(
                step_id="install",
                progress_action="install",
                progress_task=self._task,
                description_placeholders=dict(self._progress),
            )
        task, self._task = self._task, None
        try:
            await task
        except EngineSetupError as err:
            self._failure = {"error": err.detail[-300:] or err.key}
            return self.async_show_progress_done(next_step_id="install_failed")
        return self.async_show_progress_done(next_step_id="start")

    @callback
    def _on_install_stage(self, stage: str) -> None:
        step = INSTALL_STAGES.index(stage) + 1 if stage in INSTALL_STAGES else 1
        self._progress = {"step": str(step), "steps": str(len(INSTALL_STAGES))}
        self.hass.async_create_task(self._async_refresh_progress(), eager_start=False)

    async def _async_refresh_progress(self) -> None:
        """Show new placeholders: Home Assistant tells the frontend when they change."""
        if self._task is None or self._task.done():
            return
        with suppress(UnknownFlow):
            await self.hass.config_entries.flow.async_configure(self.flow_id)

    async def async_step_install_failed(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Say what went wrong; submitting tries again."""
        if user_input is None:
            return self.async_show_form(
                step_id="install_failed",
                data_schema=vol.Schema({}),
                description_placeholders=self._failure,
            )
        return await self.async_step_install()

    async def async_step_start(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """The engine is installed: start it."""
        return await self._async_start_embedded()

    async def _async_start_embedded(self) -> ConfigFlowResult:
        key = self._data.get(CONF_ENGINE_ID) or ulid_now().lower()
        engine = get_engine(self.hass, key)
        try:
            url = await engine.async_start()
        except EngineSetupError as err:
            await async_stop_engine(self.hass, key)
            return self.async_abort(
                reason="engine_did_not_start", description_placeholders={"error": err.detail}
            )
        token = await self.hass.async_add_executor_job(engine.token)
        self._data = {CONF_ENGINE: ENGINE_EMBEDDED, CONF_ENGINE_ID: key}
        self._client = EngineClient(async_get_clientsession(self.hass), url, token)
        return await self.async_step_source()

    async def async_step_remote(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """An engine on another machine (or started by hand): its address and token."""
        errors: dict[str, str] = {}
        if user_input is not None:
            try:
                url = normalize_engine_url(user_input[CONF_ENGINE_URL])
            except ValueError:
                errors[CONF_ENGINE_URL] = "invalid_engine_url"
            else:
                verify = bool(user_input.get(CONF_ENGINE_VERIFY_SSL, True))
                token = user_input[CONF_ENGINE_TOKEN].strip()
                if self._engine_taken(url):
                    return self.async_abort(reason="already_configured")
                if self._needs_insecure_consent(url):
                    return await self._async_ask_insecure(url, self.async_step_remote, user_input)
                client = EngineClient(
                    async_get_clientsession(self.hass, verify_ssl=verify),
                    url,
                    token,
                    verify_ssl=verify,
                )
                _info, error = await async_probe_engine(client)
                if error is None:
                    self._data = {
                        CONF_ENGINE: ENGINE_REMOTE,
                        CONF_ENGINE_URL: url,
                        CONF_ENGINE_TOKEN: token,
                        CONF_ENGINE_VERIFY_SSL: verify,
                    }
                    self._client = client
                    return await self.async_step_source()
                errors["base"] = error
        suggested = {k: v for k, v in (user_input or {}).items() if k != CONF_ENGINE_TOKEN}
        return self.async_show_form(
            step_id="remote",
            data_schema=self.add_suggested_values_to_schema(_ENGINE_SCHEMA, suggested),
            errors=errors,
            description_placeholders={"example_url": EXAMPLE_ENGINE_URL},
        )

    def _engine_taken(self, url: str) -> bool:
        """One engine serves one entry."""
        return any(
            entry.data.get(CONF_ENGINE_URL) == url
            for entry in self.hass.config_entries.async_entries(DOMAIN, include_ignore=False)
        )

    async def async_step_hassio(self, discovery_info: HassioServiceInfo) -> ConfigFlowResult:
        """The UPR Faces add-on runs and announced itself through the Supervisor."""
        config = discovery_info.config
        scheme = "https" if config.get("ssl") else "http"
        url = f"{scheme}://{config['host']}:{config['port']}"
        await self.async_set_unique_id(f"addon:{discovery_info.slug}")
        for entry in self.hass.config_entries.async_entries(DOMAIN, include_ignore=False):
            if entry.data.get(CONF_ENGINE) == ENGINE_ADDON:
                # the add-on restarted elsewhere or with a new token: follow it
                changes = {CONF_ENGINE_URL: url, CONF_ENGINE_TOKEN: config["token"]}
                if {k: entry.data.get(k) for k in changes} != changes:
                    self.hass.config_entries.async_update_entry(
                        entry, data={**entry.data, **changes}
                    )
                return self.async_abort(reason="already_configured")
        self._abort_if_unique_id_configured()
        self._discovered = {"url": url, "token": config["token"], "name": discovery_info.name}
        self.context["title_placeholders"] = {"name": discovery_info.name}
        return await self.async_step_hassio_confirm()

    async def async_step_hassio_confirm(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Confirm the add-on: nothing to type."""
        assert self._discovered is not None
        errors: dict[str, str] = {}
        if user_input is not None:
            client = EngineClient(
                async_get_clientsession(self.hass),
                self._discovered["url"],
                self._discovered["token"],
            )
            _info, error = await async_probe_engine(client)
            if error is None:
                self._data = {
                    CONF_ENGINE: ENGINE_ADDON,
                    CONF_ENGINE_URL: self._discovered["url"],
                    CONF_ENGINE_TOKEN: self._discovered["token"],
                    CONF_ENGINE_VERIFY_SSL: False,
                }
                self._client = client
                return await self.async_step_source()
            errors["base"] = error
        return self.async_show_form(
            step_id="hassio_confirm",
            data_schema=vol.Schema({}),
            errors=errors,
            description_placeholders={"addon": self._discovered["name"]},
        )

    # -------------------------------------------------------------- gallery source

    async def async_step_source(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Choose where the reference faces come from."""
        return self.async_show_menu(step_id="source", menu_options=[SOURCE_REGISTRY, SOURCE_FOLDER])

    @property
    def client(self) -> EngineClient:
        """The engine this flow talks to."""
        assert self._client is not None
        return self._client

    async def async_step_registry(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """The UPR registry: URL and API key, tested by the engine before anything is saved."""
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
                if (error := await async_test_registry(self.client, data)) is None:
                    self._data |= data
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
        """A gallery folder of the engine's host (one sub-folder of photos per person)."""
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
                self._data |= {CONF_GALLERY_SOURCE: SOURCE_FOLDER, CONF_GALLERY_DIR: folder}
                self._title = _folder_title(folder)
                return await self.async_step_models()
        engine = self._data.get(CONF_ENGINE)
        if engine == ENGINE_EMBEDDED:
            field = vol.Required(CONF_GALLERY_DIR, default=self.hass.config.path(DOMAIN, "gallery"))
        elif engine == ENGINE_ADDON:  # the add-on sees Home Assistant's media folder there
            field = vol.Required(CONF_GALLERY_DIR, default=ADDON_GALLERY)
        else:
            field = vol.Required(CONF_GALLERY_DIR)
        return self.async_show_form(
            step_id="folder",
            data_schema=self.add_suggested_values_to_schema(
                vol.Schema({field: _FOLDER_SELECTOR}), user_input
            ),
            errors=errors,
            description_placeholders=placeholders,
        )

    async def _async_gallery_folder(self, raw: str) -> tuple[str | None, str]:
        """(the folder as the engine resolved it, or None; the folder as typed)."""
        text = raw.strip()
        if not text:
            return None, raw
        if not text.startswith("/"):
            if self._data.get(CONF_ENGINE) != ENGINE_EMBEDDED:
                return None, text  # relative to what? the engine's host has no config folder
            text = self.hass.config.path(text)
        try:
            answer = await self.client.check_folder(text)
        except EngineError:
            return None, text
        return (str(answer["folder"]) if answer.get("ok") else None), text

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
        """A folder of the engine's host holding a face detector and recognizer (ONNX)."""
        errors: dict[str, str] = {}
        placeholders = {"folder": "", "missing": ""}
        if user_input is not None:
            folder = user_input[CONF_MODEL_DIR].strip()
            if not folder.startswith("/") and self._data.get(CONF_ENGINE) == ENGINE_EMBEDDED:
                folder = self.hass.config.path(folder)
            try:
                answer = await self.client.verify_models(folder) if folder.startswith("/") else {}
            except EngineError:
                answer = {}
            if answer.get("ok"):
                self._data[CONF_MODEL_DIR] = str(answer["folder"])
                return self._async_create()
            errors[CONF_MODEL_DIR] = "invalid_model_dir"
            found = (answer.get("error") or {}).get("placeholders") or {}
            missing = [part.strip() for part in str(found.get("missing", "")).split(",")]
            placeholders = {
                "folder": str(found.get("folder", folder)),
                "missing": ", ".join(_ROLE_HINTS.get(item, item) for item in missing if item)
                or ", ".join(_ROLE_HINTS.values()),
            }
        return self.async_show_form(
            step_id="model_dir",
            data_schema=self.add_suggested_values_to_schema(_MODEL_DIR_SCHEMA, user_input),
            errors=errors,
            description_placeholders=placeholders,
        )

    async def async_step_download(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """The engine downloads the official pack; the bar shows how far it got."""
        if self._task is None:
            self._progress = {
                "pack": self._data[CONF_MODEL_PACK],
                "url": self._pack_url(),
                "percent": "0",
                "downloaded_mb": "0",
            }
            self._task = self.hass.async_create_task(
                self._async_download(), f"{DOMAIN} model pack download", eager_start=False
            )
        if not self._task.done():
            return self.async_show_progress(
                step_id="download",
                progress_action="download",
                progress_task=self._task,
                description_placeholders=dict(self._progress),
            )
        task, self._task = self._task, None
        try:
            await task
        except EngineError as err:
            _LOGGER.warning("Model pack %s not installed: %s", self._data[CONF_MODEL_PACK], err)
        else:
            return self.async_show_progress_done(next_step_id="finish")
        self._failure = await self._async_pack_placeholders()
        return self.async_show_progress_done(next_step_id="download_failed")

    async def _async_download(self) -> None:
        pack = self._data[CONF_MODEL_PACK]
        mirror = self.hass.data.get(DATA_PACK_MIRROR)
        job = await self.client.download(pack, self._pack_url() if mirror else None)
        while job["state"] == "running":
            self._on_download_progress(int(job.get("done") or 0), job.get("total"))
            await asyncio.sleep(DOWNLOAD_POLL)
            job = await self.client.download_status(pack)
        if job["state"] != "done":
            raise EngineApiError(0, "download_failed", str(job.get("error")), {})
        self._on_download_progress(int(job.get("done") or 0), job.get("total"))

    @callback
    def _on_download_progress(self, done: int, total: int | None) -> None:
        """Refresh the progress when it moved."""
        percent = str(min(100, done * 100 // total)) if total else "?"
        megabytes = str(done // _MB)
        if (percent, megabytes) == (self._progress["percent"], self._progress["downloaded_mb"]):
            return
        self._progress = {**self._progress, "percent": percent, "downloaded_mb": megabytes}
        self.hass.async_create_task(self._async_refresh_progress(), eager_start=False)

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
        return f"https://github.com/deepinsight/insightface/releases/download/v0.7/{name}.zip"

    async def _async_pack(self) -> dict[str, Any] | None:
        try:
            packs = await self.client.models()
        except EngineError:
            return None
        name = self._data[CONF_MODEL_PACK]
        return next((p for p in packs.get("packs", []) if p.get("name") == name), None)

    async def _async_pack_placeholders(self) -> dict[str, str]:
        pack = await self._async_pack() or {}
        return {
            "pack": self._data[CONF_MODEL_PACK],
            "folder": str(pack.get("folder", "-")),
            "files": ", ".join(pack.get("files", [])),
            "url": self._pack_url(),
        }

    async def _async_pack_installed(self) -> bool:
        pack = await self._async_pack()
        if pack is None or not pack.get("installed"):
            return False
        answer = await self.client.verify_models(str(pack["folder"]))
        return bool(answer.get("ok"))

    @callback
    def _async_create(self) -> ConfigFlowResult:
        self._created = True
        return self.async_create_entry(
            title=self._title, data=self._data, options=dict(DEFAULT_OPTIONS)
        )

    def _async_save_and_reload(self, entry: ConfigEntry, **changes: Any) -> ConfigFlowResult:
        """Save the changes; a loaded entry pushes them to its engine by itself.

        A loaded entry has an update listener that applies any change (and audits option
        changes): nothing is reloaded for a new key or folder. An entry that failed to set
        up (a refused key or token, say) has none: it is set up again here.
        """
        if "data_updates" in changes:
            changes["data"] = {**entry.data, **changes.pop("data_updates")}
        if not entry.update_listeners:
            return self.async_update_reload_and_abort(entry, **changes)
        # what async_update_and_abort does on Home Assistant 2025.8 and later
        self.hass.config_entries.async_update_entry(entry, **changes)
        reason = "reauth_successful" if self.source == SOURCE_REAUTH else "reconfigure_successful"
        return self.async_abort(reason=reason)

    async def _async_entry_client(self, entry: ConfigEntry) -> EngineClient | None:
        """The engine of an existing entry (started when it is the embedded one)."""
        coordinator = getattr(entry, "runtime_data", None)
        if entry.state is ConfigEntryState.LOADED and coordinator is not None:
            client: EngineClient = coordinator.client
            return client
        data = entry.data
        if data.get(CONF_ENGINE, ENGINE_EMBEDDED) != ENGINE_EMBEDDED:
            verify = bool(data.get(CONF_ENGINE_VERIFY_SSL, True))
            return EngineClient(
                async_get_clientsession(self.hass, verify_ssl=verify),
                data[CONF_ENGINE_URL],
                data[CONF_ENGINE_TOKEN],
                verify_ssl=verify,
            )
        engine = get_engine(self.hass, engine_key(entry))
        try:
            url = await engine.async_start()
        except EngineSetupError:
            return None
        token = await self.hass.async_add_executor_job(engine.token)
        return EngineClient(async_get_clientsession(self.hass), url, token)

    # -------------------------------------------------------------- reauth

    async def async_step_reauth(self, entry_data: Mapping[str, Any]) -> ConfigFlowResult:
        """The engine refused its token, or the registry refused the key."""
        entry = self._get_reauth_entry()
        if entry.data.get(CONF_ENGINE, ENGINE_EMBEDDED) != ENGINE_EMBEDDED:
            client = await self._async_entry_client(entry)
            assert client is not None
            _info, error = await async_probe_engine(client)
            if error == "invalid_auth":
                return await self.async_step_reauth_engine()
        return await self.async_step_reauth_confirm()

    async def async_step_reauth_engine(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Ask for the engine's new token and test it."""
        entry = self._get_reauth_entry()
        errors: dict[str, str] = {}
        if user_input is not None:
            token = user_input[CONF_ENGINE_TOKEN].strip()
            verify = bool(entry.data.get(CONF_ENGINE_VERIFY_SSL, True))
            client = EngineClient(
                async_get_clientsession(self.hass, verify_ssl=verify),
                entry.data[CONF_ENGINE_URL],
                token,
                verify_ssl=verify,
            )
            _info, error = await async_probe_engine(client)
            if error is None:
                return self._async_save_and_reload(entry, data_updates={CONF_ENGINE_TOKEN: token})
            errors["base"] = error
        return self.async_show_form(
            step_id="reauth_engine",
            data_schema=_TOKEN_SCHEMA,
            errors=errors,
            description_placeholders={"url": entry.data[CONF_ENGINE_URL]},
        )

    async def async_step_reauth_confirm(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Ask for a new API key and have the engine test it."""
        entry = self._get_reauth_entry()
        errors: dict[str, str] = {}
        if user_input is not None:
            key = user_input[CONF_API_KEY].strip()
            client = await self._async_entry_client(entry)
            if client is None:
                errors["base"] = "engine_unreachable"
            elif (
                error := await async_test_registry(client, {**entry.data, CONF_API_KEY: key})
            ) is None:
                return self._async_save_and_reload(entry, data_updates={CONF_API_KEY: key})
            else:
                errors["base"] = error
        return self.async_show_form(
            step_id="reauth_confirm",
            data_schema=_API_KEY_SCHEMA,
            errors=errors,
            description_placeholders={"url": entry.data.get(CONF_API_URL, "-")},
        )

    # -------------------------------------------------------------- reconfigure

    async def async_step_reconfigure(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Change the registry connection or the gallery folder."""
        entry = self._get_reconfigure_entry()
        client = await self._async_entry_client(entry)
        if client is None:
            return self.async_abort(reason="engine_unreachable")
        self._client = client
        self._data = {CONF_ENGINE: entry.data.get(CONF_ENGINE, ENGINE_EMBEDDED)}
        if entry.data[CONF_GALLERY_SOURCE] == SOURCE_FOLDER:
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
                if (error := await async_test_registry(self.client, data)) is None:
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
        """Move the local gallery to another folder of the engine's host."""
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
                    title=self._new_title(entry, _folder_title(folder)),
                    data_updates={CONF_GALLERY_DIR: folder},
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
        if user_input is not None and (bad := _not_finite(user_input)) is not None:
            errors[bad] = "not_a_number"
            current = {**current, **{k: v for k, v in user_input.items() if k != bad}}
        elif user_input is not None:
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


class _SourceTaken(Exception):
    """Another camera of the entry already uses that source."""


_SOURCE_ERRORS: Final = ("cannot_connect", "invalid_auth", "not_a_video", "invalid_source")


class CameraSubentryFlow(ConfigSubentryFlow):
    """Add or change a camera: an IP stream or clip, or a USB camera found by a scan.

    The engine parses the source, opens it once (so a wrong address or password is said
    before saving) and scans its host's USB cameras.
    """

    def __init__(self) -> None:
        """Nothing scanned or typed yet."""
        self._usb: list[dict[str, Any]] | None = None
        self._typed: str | None = None

    def _client(self) -> EngineClient | None:
        entry = self._get_entry()
        if entry.state is not ConfigEntryState.LOADED:
            return None
        client: EngineClient = entry.runtime_data.client
        return client

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> SubentryFlowResult:
        """IP camera or USB camera."""
        if self._client() is None:
            return self.async_abort(reason="engine_not_ready")
        return self.async_show_menu(step_id="user", menu_options=["ip", "usb"])

    async def async_step_ip(self, user_input: dict[str, Any] | None = None) -> SubentryFlowResult:
        """An RTSP, MJPEG (http) or recorded (file://) source, checked and opened."""
        errors: dict[str, str] = {}
        suggested: dict[str, Any] = {}
        if user_input is not None:
            typed = user_input[CONF_SOURCE].strip()
            try:
                checked = await self._check(user_input, typed, self._typed, None)
            except _SourceTaken:
                return self.async_abort(reason="already_configured")
            except _FieldError as err:
                errors[err.field] = err.key
                checked = None
            if checked is not None:
                data = self._camera_data(user_input, checked)
                return self.async_create_entry(
                    title=data[CONF_NAME], data=data, unique_id=checked["key"]
                )
            self._typed = (await self._masked_or_none(typed, self._typed)) or typed
            shown = await self._masked_or_none(self._typed, None) or MASK
            suggested = {**user_input, CONF_SOURCE: shown}
        return self.async_show_form(
            step_id="ip",
            data_schema=self.add_suggested_values_to_schema(_IP_CAMERA_SCHEMA, suggested),
            errors=errors,
        )

    async def _masked_or_none(self, source: str, stored: str | None) -> str | None:
        """The source to keep (``masked`` False) from what was typed; None when unknown."""
        client = self._client()
        if client is None:
            return None
        try:
            answer = await client.check_source(source, stored)
        except EngineError:
            return None
        if not answer.get("ok"):  # an invalid source is still shown masked, never in clear
            masked = answer.get("masked")
            return str(masked) if stored is None and masked else None
        return str(answer["source"]) if stored is not None else str(answer["masked"])

    async def async_step_usb(self, user_input: dict[str, Any] | None = None) -> SubentryFlowResult:
        """Scan the engine host's USB cameras (once per flow), offer those not configured."""
        client = self._client()
        if client is None:
            return self.async_abort(reason="engine_not_ready")
        if self._usb is None:
            try:
                user_id = self.context.get("user_id")
                found = await client.scan_usb(
                    user_id=user_id if isinstance(user_id, str) else None, user_name=None
                )
            except EngineError:
                return self.async_abort(reason="engine_not_ready")
            if not found:
                return self.async_abort(reason="no_usb_cameras")
            self._usb = [cam for cam in found if not self._source_taken(cam["source"], None)]
            if not self._usb:
                return self.async_abort(reason="already_configured")
        cameras = {cam["source"]: cam for cam in self._usb}
        errors: dict[str, str] = {}
        if user_input is not None:
            try:
                checked = await self._check(user_input, user_input[CONF_SOURCE], None, None)
            except _SourceTaken:
                return self.async_abort(reason="already_configured")
            except _FieldError as err:
                errors[err.field] = err.key
            else:
                camera = cameras[user_input[CONF_SOURCE]]
                data = self._camera_data({CONF_NAME: camera["name"], **user_input}, checked)
                return self.async_create_entry(
                    title=data[CONF_NAME], data=data, unique_id=checked["key"]
                )
        first = self._usb[0]
        schema = vol.Schema(
            {
                vol.Required(CONF_SOURCE, default=first["source"]): SelectSelector(
                    SelectSelectorConfig(
                        options=[
                            SelectOptionDict(value=cam["source"], label=_usb_label(cam))
                            for cam in self._usb
                        ],
                        mode=SelectSelectorMode.LIST,
                    )
                ),
                vol.Required(CONF_NAME, default=first["name"]): TextSelector(),
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
        if self._client() is None:
            return self.async_abort(reason="engine_not_ready")
        errors: dict[str, str] = {}
        shown = await self._masked_or_none(stored, None) or MASK
        suggested: dict[str, Any] = {**subentry.data, CONF_SOURCE: shown}
        if user_input is not None:
            typed = user_input[CONF_SOURCE].strip()
            try:
                checked = await self._check(user_input, typed, stored, subentry.subentry_id)
            except _SourceTaken:
                return self.async_abort(reason="already_configured")
            except _FieldError as err:
                errors[err.field] = err.key
            else:
                data = self._camera_data(user_input, checked)
                return self.async_update_and_abort(
                    entry, subentry, unique_id=checked["key"], title=data[CONF_NAME], data=data
                )
            suggested = {**user_input, CONF_SOURCE: await self._masked_or_none(typed, None) or MASK}
        return self.async_show_form(
            step_id="reconfigure",
            data_schema=self.add_suggested_values_to_schema(_IP_CAMERA_SCHEMA, suggested),
            errors=errors,
            description_placeholders={"camera": subentry.title},
        )

    async def _check(
        self,
        user_input: Mapping[str, Any],
        source: str,
        stored: str | None,
        subentry_id: str | None,
    ) -> dict[str, Any]:
        """The engine's view of the source, opened once; raises _SourceTaken when another
        camera (than ``subentry_id``) has it, _FieldError when it cannot be used."""
        client = self._client()
        if client is None:
            raise _FieldError("base", "engine_unreachable")
        if (bad := _not_finite(user_input)) is not None:
            raise _FieldError(bad, "not_a_number")
        if (error := _thresholds_error(user_input, self._entry_options())) is not None:
            raise _FieldError(CONF_PROBABLE_THRESHOLD, error)
        try:
            checked = await client.check_source(source, stored)
            if not checked.get("ok"):
                raise _FieldError(CONF_SOURCE, "invalid_source")
            if self._source_taken(str(checked["key"]), subentry_id):
                raise _SourceTaken
            opened = await client.test_source(str(checked["source"]))
        except EngineError as err:
            _LOGGER.debug("Camera source not checked: %s", err)
            raise _FieldError("base", "engine_unreachable") from None
        if not opened.get("ok"):
            code = str((opened.get("error") or {}).get("code", "cannot_connect"))
            raise _FieldError(CONF_SOURCE, code if code in _SOURCE_ERRORS else "cannot_connect")
        return checked

    def _entry_options(self) -> dict[str, Any]:
        return {**DEFAULT_OPTIONS, **self._get_entry().options}

    @staticmethod
    def _camera_data(user_input: Mapping[str, Any], checked: Mapping[str, Any]) -> dict[str, Any]:
        name = str(user_input.get(CONF_NAME) or "").strip() or str(checked["name"])
        data: dict[str, Any] = {CONF_NAME: name, CONF_SOURCE: str(checked["source"])}
        for key in (CONF_MATCH_THRESHOLD, CONF_PROBABLE_THRESHOLD):
            if user_input.get(key) is not None:
                data[key] = float(user_input[key])
        if user_input.get(CONF_IDLE_DECODE) in IDLE_DECODE_MODES:
            data[CONF_IDLE_DECODE] = str(user_input[CONF_IDLE_DECODE])
        return data

    def _source_taken(self, key: str, exclude: str | None) -> bool:
        """Whether another camera of this entry already uses that source."""
        for subentry_id, subentry in self._get_entry().subentries.items():
            if subentry_id == exclude or subentry.subentry_type != SUBENTRY_CAMERA:
                continue
            if subentry.unique_id == key:
                return True
        return False


def _usb_label(camera: Mapping[str, Any]) -> str:
    return f"/dev/video{camera['index']} — {camera['name']} ({camera['width']}x{camera['height']})"
