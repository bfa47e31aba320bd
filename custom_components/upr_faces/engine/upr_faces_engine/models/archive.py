"""Installing a downloaded pack archive: checksum, safe unpacking, atomic rename."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Final

from ..errors import ModelPackError
from .graph import sha256_of
from .packs import (
    OFFICIAL_PACKS,
    ModelPack,
    ModelPackChecksumError,
    ModelPackDownloadError,
    ModelPackMissingError,
    find_pack,
    verify_pinned,
)

_LOGGER = logging.getLogger(__name__)

CHUNK_SIZE: Final = 256 * 1024
MAX_UNPACKED_BYTES: Final = 8 * 1024**3


def _archive_error(name: str, url: str, problem: str) -> ModelPackDownloadError:
    return ModelPackDownloadError(
        f"model pack archive {name}.zip from {url}: {problem}; the download was deleted, try again",
        url=url,
    )


def _member_path(root: Path, info: zipfile.ZipInfo, name: str, url: str) -> Path | None:
    """Where a member goes under ``root``; None for entries to skip; raises on escapes."""
    member = info.filename.replace("\\", "/")
    parts = PurePosixPath(member).parts
    if not parts or parts[0] == "__MACOSX" or parts[-1].startswith("._"):
        return None
    if member.startswith("/") or ".." in parts or ":" in parts[0]:
        raise _archive_error(name, url, f"unsafe path {info.filename!r}")
    if info.is_dir():
        return None
    return root.joinpath(*parts)


def _unpack(archive: Path, root: Path, name: str, url: str) -> None:
    """Extract ``archive`` under ``root``, checking every member's CRC."""
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = zipped.infolist()
            unpacked = sum(info.file_size for info in members)
            if unpacked > MAX_UNPACKED_BYTES:
                raise _archive_error(name, url, f"unpacks to {unpacked} bytes, too many")
            free = shutil.disk_usage(root).free
            if unpacked > free:
                raise ModelPackError(
                    f"not enough disk space in {root.parent} for model pack {name}: "
                    f"{unpacked} bytes needed, {free} free"
                )
            for info in members:
                dest = _member_path(root, info, name, url)
                if dest is None:
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zipped.open(info) as source, dest.open("wb") as sink:
                    shutil.copyfileobj(source, sink, CHUNK_SIZE)
                    sink.flush()
                    os.fsync(sink.fileno())
    except ModelPackError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, ValueError) as err:
        raise _archive_error(name, url, f"corrupt or truncated zip ({err})") from err
    except NotImplementedError as err:
        raise _archive_error(name, url, f"unsupported zip ({err})") from err
    except OSError as err:
        raise ModelPackError(f"cannot unpack model pack {name} into {root}: {err}") from err


def install(name: str, url: str, dest_dir: Path, part: Path, sha256: str | None) -> ModelPack:
    """Check the downloaded archive ``part`` and install it atomically as ``dest_dir/<name>``.

    ``sha256`` when given, every member's CRC while unpacking, no paths outside the pack;
    unpacked into a temporary folder in ``dest_dir`` (same filesystem), checked with
    :func:`find_pack`, renamed into place. Files at the top of the zip or inside one
    ``<name>/`` folder are both accepted. A corrupt, truncated or non-pack archive raises
    ModelPackDownloadError and deletes ``part``; no half pack or temporary folder is left.
    ``url`` (without credentials) is only used in messages.
    """
    final = dest_dir / name
    try:
        if sha256 is not None:
            actual = sha256_of(part)
            if actual.lower() != sha256.strip().lower():
                raise _archive_error(name, url, f"sha256 {actual} does not match {sha256}")
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=dest_dir))
        try:
            _unpack(part, staging, name, url)
            try:
                unpacked = find_pack(staging)
            except ModelPackMissingError as err:
                raise _archive_error(
                    name, url, "not a usable model pack: " + "; ".join(err.problems)
                ) from err
            official = OFFICIAL_PACKS.get(name)
            if official is not None:  # checked before it is installed: a bad one never is
                try:
                    verify_pinned(unpacked, official)
                except ModelPackChecksumError as err:
                    raise _archive_error(name, url, str(err)) from err
            try:
                os.rename(unpacked.folder, final)
            except OSError as err:
                if not final.exists():
                    raise ModelPackError(f"cannot install model pack into {final}: {err}") from err
                _LOGGER.debug("%s appeared meanwhile; keeping it", final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except ModelPackDownloadError:
        part.unlink(missing_ok=True)
        raise
    part.unlink(missing_ok=True)
    pack = find_pack(final)
    _LOGGER.info("Installed model pack %s in %s", name, final)
    return pack
