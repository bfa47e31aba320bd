"""Model packs: find, verify, download and describe InsightFace-style ONNX packs.

* :mod:`.graph`: an ONNX file's inputs, outputs and role, read cheaply from its graph;
* :mod:`.packs`: the official packs, finding a pack's detector and recognizer, checks;
* :mod:`.download`: resumable, retried downloads of a pack's archive (one aiohttp driver);
* :mod:`.archive`: checking and installing a downloaded archive atomically.
"""

from .archive import install
from .download import ProgressCallback, async_fetch_pack, fetch_pack, part_path
from .graph import ModelInfo, TensorInfo, file_sha256, inspect_model
from .packs import (
    OFFICIAL_PACKS,
    RELEASE_URL,
    ModelPack,
    ModelPackChecksumError,
    ModelPackDownloadError,
    ModelPackMissingError,
    ModelReport,
    OfficialPack,
    PackReport,
    ensure_pack,
    find_pack,
    model_identity,
    official_pack,
    pack_folder,
    safe_url,
    verify_pack,
)

__all__ = [
    "OFFICIAL_PACKS",
    "RELEASE_URL",
    "ModelInfo",
    "ModelPack",
    "ModelPackChecksumError",
    "ModelPackDownloadError",
    "ModelPackMissingError",
    "ModelReport",
    "OfficialPack",
    "PackReport",
    "ProgressCallback",
    "TensorInfo",
    "async_fetch_pack",
    "ensure_pack",
    "fetch_pack",
    "file_sha256",
    "find_pack",
    "inspect_model",
    "install",
    "model_identity",
    "official_pack",
    "pack_folder",
    "part_path",
    "safe_url",
    "verify_pack",
]
