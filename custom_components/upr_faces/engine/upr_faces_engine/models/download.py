"""Downloading official (or mirrored) model packs: resumable, retried, verified, atomic.

One driver over aiohttp: :func:`async_fetch_pack` runs over an injected session (the
engine's, or Home Assistant's shared one) and does its file work in the loop's default
executor; :func:`fetch_pack` runs it to completion in a session of its own, for the CLI
and for threads. It writes ``<dest>/<pack>.zip.part``, resumes it with an HTTP ``Range``
request, retries with backoff, then checks and installs the archive (``archive.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final

from ..errors import ModelPackError
from .archive import CHUNK_SIZE, install
from .packs import (
    NAME_RE,
    OFFICIAL_PACKS,
    ModelPack,
    ModelPackDownloadError,
    find_pack,
    is_url,
    name_from_url,
    safe_url,
)

if TYPE_CHECKING:
    import aiohttp

_LOGGER = logging.getLogger(__name__)

USER_AGENT: Final = "upr-faces (model pack download)"

type ProgressCallback = Callable[[int, int | None], None]
"""Called with (bytes of the archive on disk, its total size or None when unknown)."""


@dataclass(frozen=True, slots=True)
class _Target:
    name: str
    url: str

    @property
    def safe_url(self) -> str:
        return safe_url(self.url)


class _RetryableError(Exception):
    """A network failure worth another attempt."""


class _RestartError(_RetryableError):
    """The server's answer cannot extend the ``.part``: drop it and start again."""


def _target(name_or_url: str, url: str | None) -> _Target:
    if is_url(name_or_url):
        if url is not None and url != name_or_url:
            raise ModelPackError("give the download URL once (as the pack or as url=)")
        return _Target(name_from_url(name_or_url), name_or_url)
    name = name_or_url
    if not NAME_RE.fullmatch(name) or name.endswith("."):
        raise ModelPackError(f"invalid model pack name {name!r}")
    if url is None:
        official = OFFICIAL_PACKS.get(name)
        if official is None:
            known = ", ".join(OFFICIAL_PACKS)
            raise ModelPackError(
                f"unknown model pack {name!r}: give its download URL (official packs: {known})"
            )
        url = official.url
    if not is_url(url):
        raise ModelPackError(f"unsupported download URL {safe_url(url)} (http or https only)")
    return _Target(name, url)


def part_path(dest_dir: Path, name: str) -> Path:
    """Where the archive of pack ``name`` is downloaded to (and resumed from)."""
    return dest_dir / f"{name}.zip.part"


def _part_size(part: Path) -> int:
    try:
        return part.stat().st_size
    except FileNotFoundError:
        return 0


_CONTENT_RANGE_RE: Final = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.IGNORECASE)
_UNSATISFIED_RANGE_RE: Final = re.compile(r"bytes\s+\*/(\d+)", re.IGNORECASE)


def _plan(
    status: int, content_range: str | None, content_length: str | None, offset: int
) -> tuple[bool, int | None]:
    """(append to the .part?, total size or None) for a successful response."""
    length = int(content_length) if content_length and content_length.isdigit() else None
    if status == 206 and offset:
        match = _CONTENT_RANGE_RE.fullmatch((content_range or "").strip())
        if match is None or int(match.group(1)) != offset:
            raise _RestartError(f"server answered range {content_range!r} to bytes={offset}-")
        total = None if match.group(3) == "*" else int(match.group(3))
        if total is None and length is not None:
            total = offset + length
        return True, total
    if offset:
        _LOGGER.debug("server ignored the range request; downloading from the start")
    if status == 206:  # a range we did not ask for
        raise _RetryableError("unexpected partial content")
    return False, length


def _unsatisfied_range(part: Path, content_range: str | None, offset: int) -> bool:
    """Handle 416: True when the .part is already complete; otherwise drop it."""
    match = _UNSATISFIED_RANGE_RE.fullmatch((content_range or "").strip())
    if match is not None and int(match.group(1)) == offset:
        return True
    part.unlink(missing_ok=True)
    return False


def _status_error(target: _Target, status: int, reason: str) -> Exception:
    if status >= 500 or status in (408, 429):
        return _RetryableError(f"HTTP {status} {reason}".rstrip())
    return ModelPackDownloadError(
        f"cannot download model pack {target.name} from {target.safe_url}: "
        f"HTTP {status} {reason}".rstrip(),
        url=target.safe_url,
        status=status,
    )


def _report(progress: ProgressCallback | None, done: int, total: int | None) -> None:
    if progress is not None:
        progress(done, total)


def _write(handle: IO[bytes], chunk: bytes, part: Path) -> None:
    try:
        handle.write(chunk)
    except OSError as err:
        raise ModelPackError(f"cannot write {part}: {err.strerror}") from err


def _open_part(part: Path, append: bool) -> IO[bytes]:
    try:
        return part.open("ab" if append else "wb")
    except OSError as err:
        raise ModelPackError(f"cannot write {part}: {err.strerror}") from err


def _request_headers(offset: int) -> dict[str, str]:
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return headers


class _DownloadLock:
    """An exclusive, non-blocking lock on ``<dest>/.<pack>.lock`` (POSIX; a no-op elsewhere).

    The lock file is removed on release; acquiring re-checks that the locked file is still
    the one at the path, so removing it cannot let two holders in.
    """

    def __init__(self, dest_dir: Path, name: str) -> None:
        self._path = dest_dir / f".{name}.lock"
        self._name = name
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            import fcntl  # POSIX only
        except ImportError:  # pragma: no cover - Windows
            return
        while True:
            try:
                fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise ModelPackError(f"cannot create {self._path}: {err.strerror}") from err
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                os.close(fd)
                raise ModelPackError(
                    f"model pack {self._name} is already being downloaded into {self._path.parent}"
                ) from err
            try:
                same = os.stat(self._path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                return
            os.close(fd)  # the previous holder removed it meanwhile: lock the new one

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None

    def __enter__(self) -> _DownloadLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _prepare(dest_dir: Path, target: _Target) -> ModelPack | None:
    """Create ``dest_dir``; the pack when already installed and valid, else None."""
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ModelPackError(f"cannot create {dest_dir}: {err.strerror}") from err
    folder = dest_dir / target.name
    if not folder.exists():
        return None
    try:
        return find_pack(folder)
    except ModelPackError as err:
        raise ModelPackError(
            f"{err}; {folder} exists but is not a usable pack: fix it, or remove it to "
            "download it again"
        ) from err


def _give_up_or_wait(
    target: _Target, err: _RetryableError, attempt: int, retries: int, part: Path, delay: float
) -> float:
    """After failed attempt number ``attempt`` (from 0): the backoff delay, or raise."""
    if attempt >= retries:
        raise ModelPackDownloadError(
            f"cannot download model pack {target.name} from {target.safe_url}: {err} "
            f"(gave up after {attempt + 1} attempts; the partial download {part.name} is "
            "kept and the next try resumes it)",
            url=target.safe_url,
        ) from err
    wait = delay * (1 << attempt)
    _LOGGER.warning(
        "Download of model pack %s interrupted (%s); retrying in %.0f s", target.name, err, wait
    )
    return wait


def fetch_pack(
    name_or_url: str,
    dest_dir: Path,
    *,
    url: str | None = None,
    sha256: str | None = None,
    progress: ProgressCallback | None = None,
    retries: int = 3,
    retry_delay: float = 1.0,
    io_timeout: float = 60.0,
) -> ModelPack:
    """Download and install a pack into ``dest_dir/<name>``; return it.

    ``name_or_url`` is an official pack name (``buffalo_l`` ...), any pack name with
    ``url=``, or the URL of a ``<name>.zip``. Nothing is requested when the pack is already
    installed and valid; a folder of that name that is not a valid pack is an error (it is
    never overwritten).

    The archive goes to ``<dest>/<name>.zip.part``; an existing ``.part`` is resumed with a
    ``Range`` request (a server that answers 200 restarts it). Connection errors, 5xx and
    cut transfers are retried up to ``retries`` times (each retry resuming), waiting
    ``retry_delay`` seconds, then twice as long each time; 4xx answers are not retried.
    When it gives up, the ``.part`` stays and the next call resumes it. The archive is
    then checked (``sha256`` when given, every member's CRC while unpacking, no paths
    outside the pack), unpacked into a temporary folder in ``dest_dir`` (same filesystem),
    checked with :func:`find_pack`, and renamed into place. Files at the top of the zip or
    inside one ``<name>/`` folder are both accepted. A corrupt, truncated or non-pack
    archive raises ModelPackDownloadError and deletes the ``.part``; no half pack or
    temporary folder is ever left behind. ``progress(done, total)`` is called from this
    thread; an exception it raises aborts the download and keeps the ``.part``. It runs
    :func:`async_fetch_pack` in an event loop and an aiohttp session of its own: call it
    from a thread without a running loop.
    ``io_timeout`` is how long to wait for a connection or for data before an attempt fails.
    """

    async def run() -> ModelPack:
        import aiohttp

        async with aiohttp.ClientSession() as session:
            return await async_fetch_pack(
                session,
                name_or_url,
                dest_dir,
                url=url,
                sha256=sha256,
                progress=progress,
                retries=retries,
                retry_delay=retry_delay,
                io_timeout=io_timeout,
            )

    return asyncio.run(run())


async def async_fetch_pack(
    session: aiohttp.ClientSession,
    name_or_url: str,
    dest_dir: Path,
    *,
    url: str | None = None,
    sha256: str | None = None,
    progress: ProgressCallback | None = None,
    retries: int = 3,
    retry_delay: float = 1.0,
    io_timeout: float = 60.0,
) -> ModelPack:
    """Download and install a pack over an injected aiohttp session (see :func:`fetch_pack`).

    Network I/O runs on the event loop; every file operation (writing chunks, checking,
    unpacking, hashing) runs in the loop's default executor, so the loop never blocks.
    ``progress`` is called on the event loop. The session is not closed.
    """
    loop = asyncio.get_running_loop()
    target = _target(name_or_url, url)
    existing = await loop.run_in_executor(None, _prepare, dest_dir, target)
    if existing is not None:
        return existing
    lock = _DownloadLock(dest_dir, target.name)
    await loop.run_in_executor(None, lock.acquire)
    try:
        existing = await loop.run_in_executor(None, _prepare, dest_dir, target)
        if existing is not None:
            return existing
        part = part_path(dest_dir, target.name)
        _LOGGER.info("Downloading model pack %s from %s", target.name, target.safe_url)
        attempt = 0
        while True:
            try:
                await _download_async(session, target, part, progress, io_timeout)
                break
            except _RetryableError as err:
                delay = _give_up_or_wait(target, err, attempt, retries, part, retry_delay)
                await asyncio.sleep(delay)
                attempt += 1
        return await loop.run_in_executor(
            None, install, target.name, target.safe_url, dest_dir, part, sha256
        )
    finally:
        lock.release()


async def _download_async(
    session: aiohttp.ClientSession,
    target: _Target,
    part: Path,
    progress: ProgressCallback | None,
    io_timeout: float,
) -> None:
    import aiohttp

    loop = asyncio.get_running_loop()
    offset = await loop.run_in_executor(None, _part_size, part)
    client_timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=io_timeout, sock_read=io_timeout
    )
    done = 0
    total: int | None = None
    try:
        async with session.get(
            target.url, headers=_request_headers(offset), timeout=client_timeout
        ) as response:
            if response.status == 416 and offset:
                content_range = response.headers.get("Content-Range")
                if await loop.run_in_executor(
                    None, _unsatisfied_range, part, content_range, offset
                ):
                    return
                raise _RetryableError("server refused the range; starting again")
            if response.status >= 400:
                raise _status_error(target, response.status, response.reason or "")
            try:
                append, total = _plan(
                    response.status,
                    response.headers.get("Content-Range"),
                    response.headers.get("Content-Length"),
                    offset,
                )
            except _RestartError:
                await loop.run_in_executor(None, part.unlink, True)
                raise
            done = offset if append else 0
            handle = await loop.run_in_executor(None, _open_part, part, append)
            pending = bytearray()  # coalesce small reads; flushed even when the link drops
            try:
                _report(progress, done, total)
                async for data in response.content.iter_any():
                    pending += data
                    if len(pending) >= CHUNK_SIZE:
                        await loop.run_in_executor(None, _write, handle, bytes(pending), part)
                        done += len(pending)
                        pending.clear()
                        _report(progress, done, total)
            finally:
                try:
                    if pending:
                        await loop.run_in_executor(None, _write, handle, bytes(pending), part)
                        done += len(pending)
                        _report(progress, done, total)
                finally:
                    await loop.run_in_executor(None, handle.close)
    except (aiohttp.ClientError, TimeoutError) as err:
        raise _RetryableError(f"connection lost ({err!r})") from err
    if total is not None and done < total:
        raise _RetryableError(f"connection closed after {done} of {total} bytes")
