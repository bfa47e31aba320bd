"""Constants of the upr_faces integration."""

from __future__ import annotations

from datetime import timedelta
from typing import Final

DOMAIN: Final = "upr_faces"
EVENT_MATCH: Final = "upr_match"
EVENT_SIGHTING: Final = "upr_sighting"
EVENT_AUDIT: Final = "upr_faces_audit"

SUBENTRY_CAMERA: Final = "camera"

# where the engine runs (entry.data)
CONF_ENGINE: Final = "engine"
ENGINE_EMBEDDED: Final = "embedded"
ENGINE_ADDON: Final = "addon"
ENGINE_REMOTE: Final = "remote"
CONF_ENGINE_URL: Final = "engine_url"
CONF_ENGINE_TOKEN: Final = "engine_token"
CONF_ENGINE_VERIFY_SSL: Final = "engine_verify_ssl"
CONF_ENGINE_ID: Final = "engine_id"  # names the embedded engine's data folder
DEFAULT_ENGINE_PORT: Final = 8765
ENGINE_API_VERSION: Final = 1
# upgrades from the version that ran the engine inside Home Assistant: history to import
CONF_LEGACY_IMPORT: Final = "legacy_import"

# entry.data
CONF_GALLERY_SOURCE: Final = "gallery_source"
SOURCE_REGISTRY: Final = "registry"
SOURCE_FOLDER: Final = "folder"
CONF_API_URL: Final = "api_url"
CONF_API_KEY: Final = "api_key"
CONF_VERIFY_SSL: Final = "verify_ssl"
CONF_GALLERY_DIR: Final = "gallery_dir"
CONF_MODEL_PACK: Final = "model_pack"
CONF_MODEL_DIR: Final = "model_dir"
MODEL_PACK_CUSTOM: Final = "custom"
OFFICIAL_PACKS: Final = ("buffalo_l", "buffalo_m", "buffalo_s", "buffalo_sc")

DEFAULT_API_URL: Final = "http://localhost:8000/api"

# entry.options
CONF_MATCH_THRESHOLD: Final = "match_threshold"
CONF_PROBABLE_THRESHOLD: Final = "probable_threshold"
CONF_IDLE_DECODE: Final = "idle_decode"
IDLE_DECODE_MODES: Final = ("keyframes", "reduced", "full")
CONF_DETECTION_FPS: Final = "detection_fps"
CONF_DET_SIZE: Final = "det_size"
CONF_COOLDOWN: Final = "cooldown"
CONF_USB_MAX: Final = "usb_max"
CONF_RETRY_BACKOFF: Final = "retry_backoff"
CONF_USE_GPU: Final = "use_gpu"
CONF_RETENTION_DAYS: Final = "retention_days"

DEFAULT_MATCH_THRESHOLD: Final = 0.55
DEFAULT_PROBABLE_THRESHOLD: Final = 0.45
DEFAULT_DETECTION_FPS: Final = 5.0
DEFAULT_DET_SIZE: Final = 640
DEFAULT_COOLDOWN: Final = 60
DEFAULT_USB_MAX: Final = 6
DEFAULT_RETRY_BACKOFF: Final = 5.0
DEFAULT_USE_GPU: Final = False
DEFAULT_RETENTION_DAYS: Final = 30

DEFAULT_OPTIONS: Final = {
    CONF_MATCH_THRESHOLD: DEFAULT_MATCH_THRESHOLD,
    CONF_PROBABLE_THRESHOLD: DEFAULT_PROBABLE_THRESHOLD,
    CONF_DETECTION_FPS: DEFAULT_DETECTION_FPS,
    CONF_DET_SIZE: DEFAULT_DET_SIZE,
    CONF_COOLDOWN: DEFAULT_COOLDOWN,
    CONF_USB_MAX: DEFAULT_USB_MAX,
    CONF_RETRY_BACKOFF: DEFAULT_RETRY_BACKOFF,
    CONF_USE_GPU: DEFAULT_USE_GPU,
    CONF_RETENTION_DAYS: DEFAULT_RETENTION_DAYS,
}

# camera subentry data
CONF_NAME: Final = "name"
CONF_SOURCE: Final = "source"

# signed URLs in upr_match events
SIGNED_URL_EXPIRY: Final = timedelta(minutes=5)
# repairs
CAMERA_OFFLINE_REPAIR_AFTER: Final = timedelta(minutes=10)
ENGINE_DOWN_REPAIR_AFTER: Final = timedelta(minutes=10)
REGISTRY_DOWN_REPAIR_AFTER: Final = timedelta(hours=1)
OUTBOX_STUCK_REPAIR_AFTER: Final = timedelta(hours=1)
ANALYZER_OVERLOADED_REPAIR_AFTER: Final = timedelta(minutes=1)
# how often the engine's counters (faces in view, stream states) are read
STATS_INTERVAL: Final = timedelta(seconds=2)
