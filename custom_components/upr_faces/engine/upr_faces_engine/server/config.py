"""The configuration a client pushes to the engine, checked field by field.

One engine serves one client configuration (one Home Assistant config entry). The client
pushes it whole (``PUT /api/v1/config``); the engine keeps it on disk and starts from it
after a restart. Anything malformed is refused with a :class:`ConfigError` naming the field,
before anything changes. Paths are the engine host's.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from ..errors import UprFacesError
from ..models import OFFICIAL_PACKS
from ..sources import IDLE_DECODE_MODES, InvalidSourceError, SourceKind, mask_url, parse_source

MAX_CAMERAS: Final = 64
MAX_NAME: Final = 100
MAX_TEXT: Final = 2048
MAX_KEY: Final = 512
CUSTOM_PACK: Final = "custom"
DET_SIZES: Final = (320, 480, 640)
_CAMERA_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


class ConfigError(UprFacesError):
    """A configuration field is not acceptable; ``field`` is its path (``cameras[1].source``)."""

    key = "invalid_config"

    def __init__(self, field_path: str, problem: str) -> None:
        super().__init__(f"{field_path}: {problem}")
        self.field = field_path
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Options:
    """Tunables of the whole engine."""

    match_threshold: float = 0.55
    probable_threshold: float = 0.45
    detection_fps: float = 5.0
    det_size: int = 640
    cooldown: float = 60.0
    usb_max: int = 6
    retry_backoff: float = 5.0
    use_gpu: bool = False
    retention_days: float = 30.0


@dataclass(frozen=True, slots=True)
class GalleryConfig:
    """Where the gallery comes from: a local folder, or the registry (URL, key, TLS check)."""

    source: Literal["folder", "registry"] = "folder"
    folder: str | None = None
    url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    verify_ssl: bool = True


@dataclass(frozen=True, slots=True)
class ModelsConfig:
    """The model pack: an official pack (downloaded into the data folder) or a folder."""

    pack: str = "buffalo_l"
    folder: str | None = None


@dataclass(frozen=True, slots=True)
class CameraConfig:
    """One camera; thresholds left None follow the engine's options."""

    id: str
    name: str
    source: str = field(repr=False)
    match_threshold: float | None = None
    probable_threshold: float | None = None
    idle_decode: str | None = None
    """What the camera decodes while its scene is still (``sources.IDLE_DECODE_MODES``);
    None: the default, key frames only."""

    @property
    def masked_source(self) -> str:
        """The source without its credentials."""
        return mask_url(self.source)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Everything a client configures."""

    gallery: GalleryConfig = field(default_factory=GalleryConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    options: Options = field(default_factory=Options)
    cameras: tuple[CameraConfig, ...] = ()

    def camera(self, camera_id: str) -> CameraConfig | None:
        """A camera by id."""
        return next((camera for camera in self.cameras if camera.id == camera_id), None)

    def as_dict(self, *, masked: bool = False) -> dict[str, Any]:
        """The configuration as clients push it (``parse_config`` reads it back);
        ``masked`` hides the API key and camera credentials."""
        gallery: dict[str, Any] = {"source": self.gallery.source}
        if self.gallery.source == "folder":
            gallery["folder"] = self.gallery.folder
        else:
            gallery |= {
                "url": self.gallery.url,
                "api_key": "***" if masked else self.gallery.api_key,
                "verify_ssl": self.gallery.verify_ssl,
            }
        models: dict[str, Any] = {"pack": self.models.pack}
        if self.models.folder is not None:
            models["folder"] = self.models.folder
        cameras = []
        for camera in self.cameras:
            item = {key: value for key, value in asdict(camera).items() if value is not None}
            if masked:
                item["source"] = camera.masked_source
            cameras.append(item)
        return {
            "gallery": gallery,
            "models": models,
            "options": asdict(self.options),
            "cameras": cameras,
        }


# ------------------------------------------------------------------------------- parsing


def _object(
    value: Any, where: str, allowed: set[str], required: frozenset[str] | set[str] = frozenset()
) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(where or "config", "must be an object")
    unknown = sorted(str(key) for key in value if key not in allowed)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}" if where else unknown[0], "unknown field")
    for key in sorted(required):
        if key not in value:
            raise ConfigError(f"{where}.{key}" if where else key, "missing")
    return dict(value)


def _text(value: Any, where: str, *, limit: int = MAX_TEXT, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise ConfigError(where, "must be a string")
    if len(value) > limit:
        raise ConfigError(where, f"longer than {limit} characters")
    if _CONTROL.search(value):
        raise ConfigError(where, "holds control characters (newline, NUL...)")
    if not allow_empty and not value.strip():
        raise ConfigError(where, "is empty")
    return value


def _number(value: Any, where: str, low: float, high: float, *, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(where, "must be a number")
    if integer and not float(value).is_integer():
        raise ConfigError(where, "must be a whole number")
    number = float(value)
    if not math.isfinite(number) or not low <= number <= high:
        raise ConfigError(where, f"must be between {low:g} and {high:g}")
    return number


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(where, "must be true or false")
    return value


def _absolute_path(value: Any, where: str) -> str:
    text = _text(value, where)
    if not PurePosixPath(text).is_absolute():
        raise ConfigError(where, "must be an absolute path on the engine's host")
    return text


def _thresholds(match: float, probable: float, where: str) -> None:
    if probable > match:
        raise ConfigError(where, "the probable threshold is above the match threshold")


def _options(raw: Any) -> Options:
    data = _object(raw, "options", set(Options.__dataclass_fields__))
    defaults = Options()
    values: dict[str, Any] = {}
    ranges: dict[str, tuple[float, float, bool]] = {
        "match_threshold": (0.05, 1.0, False),
        "probable_threshold": (0.05, 1.0, False),
        "detection_fps": (0.2, 30.0, False),
        "cooldown": (0.0, 86_400.0, False),
        "usb_max": (1.0, 64.0, True),
        "retry_backoff": (0.5, 3_600.0, False),
        "retention_days": (1.0, 3_650.0, False),
    }
    for key, (low, high, integer) in ranges.items():
        if key in data:
            number = _number(data[key], f"options.{key}", low, high, integer=integer)
            values[key] = int(number) if integer else number
    if "det_size" in data:
        size = _number(data["det_size"], "options.det_size", 0, 10_000, integer=True)
        if int(size) not in DET_SIZES:
            raise ConfigError("options.det_size", "must be 320, 480 or 640")
        values["det_size"] = int(size)
    if "use_gpu" in data:
        values["use_gpu"] = _bool(data["use_gpu"], "options.use_gpu")
    options = replace(defaults, **values)
    _thresholds(options.match_threshold, options.probable_threshold, "options.probable_threshold")
    return options


def _registry_url(value: Any, where: str) -> str:
    text = _text(value, where).strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as err:
        raise ConfigError(where, f"not a valid address ({err})") from err
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(where, "must be an http:// or https:// address with a host")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ConfigError(where, "must not carry a user name, query or fragment")
    del port
    return text.rstrip("/")


def _gallery(raw: Any) -> GalleryConfig:
    data = _object(raw, "gallery", set(GalleryConfig.__dataclass_fields__), {"source"})
    source = data["source"]
    if source == "folder":
        if set(data) - {"source", "folder"}:
            extra = sorted(set(data) - {"source", "folder"})[0]
            raise ConfigError(f"gallery.{extra}", "not used with a folder gallery")
        return GalleryConfig(
            source="folder", folder=_absolute_path(data.get("folder"), "gallery.folder")
        )
    if source == "registry":
        if "folder" in data:
            raise ConfigError("gallery.folder", "not used with a registry gallery")
        key = _text(data.get("api_key"), "gallery.api_key", limit=MAX_KEY)
        if any(ch.isspace() for ch in key) or not key.isprintable():
            raise ConfigError("gallery.api_key", "must be printable, without spaces")
        return GalleryConfig(
            source="registry",
            url=_registry_url(data.get("url"), "gallery.url"),
            api_key=key,
            verify_ssl=_bool(data.get("verify_ssl", True), "gallery.verify_ssl"),
        )
    raise ConfigError("gallery.source", "must be folder or registry")


def _models(raw: Any) -> ModelsConfig:
    data = _object(raw, "models", set(ModelsConfig.__dataclass_fields__), {"pack"})
    pack = _text(data["pack"], "models.pack", limit=MAX_NAME)
    if pack == CUSTOM_PACK:
        return ModelsConfig(pack, _absolute_path(data.get("folder"), "models.folder"))
    if pack not in OFFICIAL_PACKS:
        known = ", ".join([*OFFICIAL_PACKS, CUSTOM_PACK])
        raise ConfigError("models.pack", f"unknown pack (one of {known})")
    if "folder" in data:
        raise ConfigError("models.folder", "only with pack custom")
    return ModelsConfig(pack)


def under_media(path: Path, media: Sequence[Path]) -> bool:
    """Whether ``path``, links and ``..`` resolved, lies in one of the ``media`` folders."""
    resolved = Path(os.path.realpath(path))
    return any(resolved.is_relative_to(os.path.realpath(folder)) for folder in media)


def check_source(value: Any, where: str, media: Sequence[Path]) -> str:
    """A camera source string the engine can read, or a ConfigError. A recorded clip
    (``file://``) must lie in one of the ``media`` folders (the engine's --media)."""
    text = _text(value, where).strip()
    try:
        spec = parse_source(text)
    except InvalidSourceError as err:
        raise ConfigError(where, str(err)) from err
    if spec.kind is SourceKind.FILE:
        assert spec.path is not None
        if not PurePosixPath(str(spec.path)).is_absolute():
            raise ConfigError(where, "a clip must be given by its absolute path")
        if not under_media(spec.path, media):
            folders = ", ".join(str(folder) for folder in media) or "none"
            raise ConfigError(where, f"a clip must lie in a media folder ({folders})")
    return spec.url  # credentials percent-encoded


def _camera(raw: Any, index: int, options: Options, media: Sequence[Path]) -> CameraConfig:
    where = f"cameras[{index}]"
    data = _object(raw, where, set(CameraConfig.__dataclass_fields__), {"id", "name", "source"})
    camera_id = _text(data["id"], f"{where}.id", limit=64)
    if not _CAMERA_ID.fullmatch(camera_id):
        raise ConfigError(f"{where}.id", "letters, digits, '.', '_' and '-' only")
    thresholds: dict[str, float | None] = {}
    for key in ("match_threshold", "probable_threshold"):
        value = data.get(key)
        thresholds[key] = None if value is None else _number(value, f"{where}.{key}", 0.05, 1.0)
    match = thresholds["match_threshold"] or options.match_threshold
    probable = thresholds["probable_threshold"] or options.probable_threshold
    if thresholds["match_threshold"] is not None or thresholds["probable_threshold"] is not None:
        _thresholds(match, probable, f"{where}.probable_threshold")
    return CameraConfig(
        id=camera_id,
        name=_text(data["name"], f"{where}.name", limit=MAX_NAME).strip(),
        source=check_source(data["source"], f"{where}.source", media),
        match_threshold=thresholds["match_threshold"],
        probable_threshold=thresholds["probable_threshold"],
        idle_decode=None
        if data.get("idle_decode") is None
        else _choice(data["idle_decode"], f"{where}.idle_decode", IDLE_DECODE_MODES),
    )


def _choice(value: Any, where: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ConfigError(where, f"one of {', '.join(allowed)}")
    return str(value)


def parse_config(raw: Any, media: Sequence[Path]) -> EngineConfig:
    """The configuration in ``raw`` (decoded JSON), or a ConfigError about its first fault;
    ``media``: the folders recorded clips may be read from."""
    data = _object(raw, "", {"gallery", "models", "options", "cameras"}, {"gallery", "models"})
    options = _options(data.get("options", {}))
    cameras_raw = data.get("cameras", [])
    if not isinstance(cameras_raw, list):
        raise ConfigError("cameras", "must be a list")
    if len(cameras_raw) > MAX_CAMERAS:
        raise ConfigError("cameras", f"more than {MAX_CAMERAS} cameras")
    cameras = tuple(_camera(item, index, options, media) for index, item in enumerate(cameras_raw))
    seen: set[str] = set()
    for index, camera in enumerate(cameras):
        if camera.id in seen:
            raise ConfigError(f"cameras[{index}].id", "used by another camera")
        seen.add(camera.id)
    return EngineConfig(
        gallery=_gallery(data["gallery"]),
        models=_models(data["models"]),
        options=options,
        cameras=cameras,
    )
