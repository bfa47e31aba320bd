"""Cameras: open a source, keep its newest frame, reconnect by itself.

A camera is named by one string, parsed by :func:`parse_source`:

``usb:N`` or ``/dev/videoN`` (or any ``/dev/...`` V4L2 path, such as a stable
``/dev/v4l/by-id/...`` link)
    a local camera, read with OpenCV's V4L2 backend.
``rtsp://`` / ``rtsps://``
    an IP camera, read and decoded with PyAV (FFmpeg) over TCP with FFmpeg's
    low-latency flags.
``http://`` / ``https://``
    an MJPEG camera (``multipart/x-mixed-replace``); a URL that answers with a single
    image is polled as a snapshot camera.
``file://PATH``
    a recorded clip, played at its own frame rate and looped for ever (demos and tests).

One :class:`CameraSource` runs one reader thread that reads as fast as the camera sends and
keeps only the newest frame: a slow consumer skips frames (their ``seq`` jumps) rather than
falling behind. Consumers call :meth:`CameraSource.latest` or block on
:meth:`CameraSource.wait_newer`.

Pixels are made lazily. Every H.264 picture must be decoded (each depends on the one
before), but it stays in FFmpeg's YUV buffer, and an MJPEG part stays compressed, until
somebody reads :attr:`Frame.image`: converted once, under the frame's lock. A pipeline
sampling 5 of a camera's 15 frames a second converts 5, not 15 (for MJPEG that saves two
JPEG decodes of ~3 ms out of three).

Why a hand-written MJPEG reader rather than PyAV's ``mpjpeg`` demuxer: it keeps the JPEG
bytes as they come (no decode for frames nobody looks at), it speaks Basic and Digest
authentication, it tolerates the wrong or missing boundaries and lengths that cheap cameras
send, and above all it owns its socket, so every read has a timeout and
:meth:`CameraSource.stop` from another thread shuts the socket down and wakes the reader at
once. FFmpeg can only be interrupted by its own timeout callback, which PyAV does not let us
trigger: RTSP reads therefore run with a short per-read timeout (``_TICK``) and the reader
checks for a stop between reads, treating a run of empty reads longer than
``read_timeout`` as a stall. Only the opening handshake (``open_timeout``, by default
``read_timeout``) cannot be cut short.

States: ``connecting`` (started, nothing known yet), ``streaming``, ``offline`` (with a
reason) and ``stopped``. Opening failures and stalls make a camera ``offline``; it retries
with exponential backoff (``retry_backoff`` doubling up to ``max_backoff``) and comes back
by itself. A stream that drops after working is retried at once, quietly (at most once per
``max_backoff``), before the camera is called offline. Going offline is logged once, as
is coming back. Credentials never appear in logs, reprs, reasons or errors: see
:func:`mask_url`.

Nothing here imports Home Assistant.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import logging
import os
import re
import socket
import ssl
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import FrozenInstanceError, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import av
import av.error
import cv2
import numpy as np
from numpy.typing import NDArray

from .errors import ImageError, UprFacesError

_LOGGER = logging.getLogger(__name__)

DEFAULT_READ_TIMEOUT: Final = 10.0
DEFAULT_RETRY_BACKOFF: Final = 5.0
DEFAULT_MAX_BACKOFF: Final = 60.0
DEFAULT_SNAPSHOT_INTERVAL: Final = 0.2
_TICK: Final = 0.5  # longest single blocking FFmpeg read: bounds how long stop() waits
_MAX_USB_INDEX: Final = 63
_MAX_JPEG_BYTES: Final = 32 * 1024 * 1024
_MAX_LINE: Final = 8192
_FPS_WINDOW: Final = 30
_SECRET_QUERY_KEYS: Final = frozenset(
    {
        "password",
        "passwd",
        "pass",
        "pwd",
        "psw",
        "token",
        "access_token",
        "auth",
        "key",
        "apikey",
        "api_key",
        "secret",
        "sig",
        "signature",
    }
)
_MASK: Final = "***"

type Image = NDArray[np.uint8]
type StateListener = Callable[[SourceState, str | None], None]


class SourceError(UprFacesError):
    """A camera source string is not valid."""

    key = "invalid_source"


class InvalidSourceError(SourceError, ValueError):
    """Raised by :func:`parse_source`; also a ``ValueError``."""


class SourceKind(StrEnum):
    """What kind of camera a source string names."""

    USB = "usb"
    RTSP = "rtsp"
    HTTP = "http"
    FILE = "file"


class SourceState(StrEnum):
    """Where a camera stands."""

    CONNECTING = "connecting"
    STREAMING = "streaming"
    OFFLINE = "offline"
    STOPPED = "stopped"


# --------------------------------------------------------------------------- masking


def mask_url(url: str) -> str:
    """``url`` with its password (and secret-looking query values) replaced by ``***``.

    ``rtsp://admin:s3cret@cam/stream?token=x`` becomes
    ``rtsp://admin:***@cam/stream?token=***``. Strings that are not URLs come back as they
    are.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return _MASK if "@" in url else url
    if not parts.scheme or not parts.netloc:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, has_password, _password = userinfo.partition(":")
        netloc = f"{user}:{_MASK}@{hostport}" if has_password else f"{user}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(key.lower() in _SECRET_QUERY_KEYS for key, _ in pairs):
            query = urlencode(
                [(k, _MASK if k.lower() in _SECRET_QUERY_KEYS else v) for k, v in pairs],
                safe="*",
            )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _secrets(url: str) -> list[str]:
    """Every form in which ``url``'s secrets could show up in a message."""
    found: list[str] = []
    with contextlib.suppress(ValueError):
        parts = urlsplit(url)
        if parts.password:
            found += [parts.password, unquote(parts.password)]
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key.lower() in _SECRET_QUERY_KEYS and value:
                found += [value, quote(value, safe="")]
    return sorted({s for s in found if s}, key=len, reverse=True)


def mask_text(text: str, url: str) -> str:
    """``text`` (an error message, say) with ``url`` and its secrets masked."""
    masked = text.replace(url, mask_url(url))
    for secret in _secrets(url):
        masked = masked.replace(secret, _MASK)
    return masked


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """A parsed, valid camera source. Its ``repr`` never shows credentials."""

    kind: SourceKind
    url: str
    device: int | str | None = None
    path: Path | None = None

    @property
    def masked(self) -> str:
        """The source string, safe to show and log."""
        return mask_url(self.url)

    def __repr__(self) -> str:
        return f"SourceSpec({self.kind.value}, {self.masked!r})"

    def __str__(self) -> str:
        return self.masked


_USB_RE: Final = re.compile(r"usb:(\d+)", re.IGNORECASE)
_DEV_VIDEO_RE: Final = re.compile(r"/dev/video(\d+)")
_SCHEMES: Final = "usb:N, /dev/videoN, rtsp://, rtsps://, http://, https:// or file://PATH"


def parse_source(text: str) -> SourceSpec:
    """Validate a camera source string; raise :class:`InvalidSourceError` with a clear
    (credential-free) message when it is not one."""
    raw = text.strip()
    if not raw:
        raise InvalidSourceError("empty camera source")
    lowered = raw.lower()
    if lowered.startswith("usb:"):
        match = _USB_RE.fullmatch(raw)
        if match is None or int(match.group(1)) > _MAX_USB_INDEX:
            raise InvalidSourceError(
                f"bad USB camera index in {raw!r}: expected usb:N with N from 0 to {_MAX_USB_INDEX}"
            )
        return SourceSpec(SourceKind.USB, raw, device=int(match.group(1)))
    if raw.startswith("/dev/"):
        match = _DEV_VIDEO_RE.fullmatch(raw)
        if match is not None:
            return SourceSpec(SourceKind.USB, raw, device=int(match.group(1)))
        if raw.startswith("/dev/video"):
            raise InvalidSourceError(f"bad video device {raw!r}: expected /dev/videoN")
        return SourceSpec(SourceKind.USB, raw, device=raw)
    if lowered.startswith("file://"):
        path = raw[len("file://") :]
        if not path:
            raise InvalidSourceError("file:// needs a path, as in file:///clips/door.mp4")
        return SourceSpec(SourceKind.FILE, raw, path=Path(unquote(path)))
    try:
        parts = urlsplit(raw)
        port = parts.port  # validates the port
    except ValueError as err:
        raise InvalidSourceError(
            f"bad camera address {mask_url(raw)!r}: {mask_text(str(err), raw)}"
        ) from None
    scheme = parts.scheme.lower()
    if scheme in {"rtsp", "rtsps", "http", "https"}:
        if not parts.hostname:
            raise InvalidSourceError(f"no host in camera address {mask_url(raw)!r}")
        if port == 0:
            raise InvalidSourceError(f"bad port in camera address {mask_url(raw)!r}")
        kind = SourceKind.RTSP if scheme.startswith("rtsp") else SourceKind.HTTP
        return SourceSpec(kind, raw)
    shown = f"{scheme}://" if scheme else mask_url(raw)
    raise InvalidSourceError(f"unknown camera source {shown!r}: expected {_SCHEMES}")


# --------------------------------------------------------------------------- frames


class Frame:
    """One picture from a camera: immutable; pixels made once, on first use.

    ``image`` is a BGR ``uint8`` array of shape (height, width, 3), read-only when it comes
    from a camera (every consumer shares it: copy before drawing); ``captured_at`` is the
    ``time.monotonic()`` of its arrival; ``seq`` counts the camera's frames from 1 and never
    goes back, across reconnects. ``Frame(image, captured_at, seq)`` wraps an array (or a
    function returning one, called at most once, thread-safely).
    """

    __slots__ = ("_convert", "_image", "_lock", "captured_at", "seq")

    captured_at: float
    seq: int
    _image: Image | None
    _convert: Callable[[], Image] | None
    _lock: threading.Lock

    def __init__(self, image: Image | Callable[[], Image], captured_at: float, seq: int) -> None:
        setter = object.__setattr__
        setter(self, "captured_at", captured_at)
        setter(self, "seq", seq)
        if isinstance(image, np.ndarray):
            setter(self, "_image", image)
            setter(self, "_convert", None)
        else:
            setter(self, "_image", None)
            setter(self, "_convert", image)
        setter(self, "_lock", threading.Lock())

    @property
    def image(self) -> Image:
        """The pixels (BGR, uint8, HxWx3). Raises :class:`ImageError` for a corrupt frame."""
        image: Image | None = self._image
        if image is not None:
            return image
        with self._lock:
            if self._image is None:
                convert = self._convert
                assert convert is not None
                object.__setattr__(self, "_image", convert())
                object.__setattr__(self, "_convert", None)  # let the decoder's buffer go
            image = self._image
            assert image is not None
            return image

    @property
    def converted(self) -> bool:
        """Whether the pixels exist yet (for tests and statistics)."""
        return self._image is not None

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __repr__(self) -> str:
        image = self._image
        shape = f"{image.shape[1]}x{image.shape[0]}" if image is not None else "lazy"
        return f"Frame(seq={self.seq}, captured_at={self.captured_at:.3f}, image={shape})"


def _read_only(image: Image) -> Image:
    """Frames are shared by every consumer: nobody may draw on the original."""
    image.flags.writeable = False
    return image


def _decode_jpeg(data: bytes) -> Callable[[], Image]:
    def convert() -> Image:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise ImageError("corrupt JPEG frame from camera")
        return _read_only(np.asarray(image, dtype=np.uint8))

    return convert


def _convert_av(frame: av.VideoFrame) -> Callable[[], Image]:
    def convert() -> Image:
        return _read_only(np.asarray(frame.to_ndarray(format="bgr24"), dtype=np.uint8))

    return convert


@dataclass(frozen=True, slots=True)
class SourceStats:
    """Counters of one camera since it was created."""

    frames_read: int
    reconnects: int
    last_frame_at: float | None
    decode_errors: int
    fps: float


class _SessionEnd(Exception):
    """One connection to the camera ended; ``str()`` is the (masked) reason."""

    def __init__(self, reason: str, *, stalled: bool = False) -> None:
        super().__init__(reason)
        self.stalled = stalled


class _Stopped(Exception):
    """stop() was called while connecting."""


# --------------------------------------------------------------------------- MJPEG


class _MjpegConnection:
    """A blocking MJPEG/snapshot HTTP client whose socket another thread can shut down."""

    def __init__(self, url: str, timeout: float, verify_ssl: bool) -> None:
        parts = urlsplit(url)
        self._url = url
        self._https = parts.scheme.lower() == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._https else 80)
        self._target = urlunsplit(("", "", parts.path or "/", parts.query, ""))
        self._user = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else ""
        self._timeout = timeout
        self._verify_ssl = verify_ssl
        self._lock = threading.Lock()
        self._closed = False
        self._conn: http.client.HTTPConnection | None = None
        self._buffer = b""
        self._response: http.client.HTTPResponse | None = None
        self.content_type = ""
        self.boundary: bytes | None = None
        self._last_part = time.monotonic()

    # connection ------------------------------------------------------------
    def _connect(self, authorization: str | None) -> http.client.HTTPResponse:
        conn: http.client.HTTPConnection
        if self._https:
            context = ssl.create_default_context()
            if not self._verify_ssl:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            conn = http.client.HTTPSConnection(
                self._host, self._port, timeout=self._timeout, context=context
            )
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        with self._lock:
            if self._closed:
                raise _Stopped
            self._conn = conn
        conn.connect()
        if self._is_closed():  # stop() came during connect(): the socket was not there yet
            conn.close()
            raise _Stopped
        headers = {"User-Agent": "upr_faces", "Accept": "*/*"}
        if authorization:
            headers["Authorization"] = authorization
        conn.request("GET", self._target, headers=headers)
        return conn.getresponse()

    def open(self) -> None:
        """Connect and read the response head; raise ``_SessionEnd`` on HTTP errors."""
        authorization = None
        if self._user is not None:
            token = base64.b64encode(f"{self._user}:{self._password}".encode()).decode()
            authorization = f"Basic {token}"
        response = self._connect(authorization)
        challenge = response.getheader("WWW-Authenticate", "")
        if response.status == 401 and self._user is not None and "digest" in challenge.lower():
            response.close()
            self._close_conn()
            response = self._connect(self._digest(challenge))
        if response.status != 200:
            reason = "unauthorized" if response.status in {401, 403} else "HTTP error"
            raise _SessionEnd(f"{reason}: HTTP {response.status} {response.reason}")
        self._response = response
        self.content_type = response.getheader("Content-Type", "").lower()
        match = re.search(r'boundary="?([^";,]+)"?', self.content_type, re.IGNORECASE)
        if match:
            boundary = response.getheader("Content-Type", "")[match.start(1) : match.end(1)]
            self.boundary = boundary.strip().removeprefix("--").encode("latin-1")

    def _digest(self, challenge: str) -> str:
        fields = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge.split(" ", 1)[-1]))
        realm, nonce = fields.get("realm", ""), fields.get("nonce", "")
        algorithm = fields.get("algorithm", "MD5")
        qop = "auth" if "auth" in fields.get("qop", "").split(",") else None

        def digest(text: str) -> str:
            if algorithm.upper().startswith("SHA-256"):
                return hashlib.sha256(text.encode()).hexdigest()
            return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()

        ha1 = digest(f"{self._user}:{realm}:{self._password}")
        ha2 = digest(f"GET:{self._target}")
        cnonce = os.urandom(8).hex()
        if qop:
            response = digest(f"{ha1}:{nonce}:00000001:{cnonce}:{qop}:{ha2}")
        else:
            response = digest(f"{ha1}:{nonce}:{ha2}")
        parts = [
            f'username="{self._user}"',
            f'realm="{realm}"',
            f'nonce="{nonce}"',
            f'uri="{self._target}"',
            f'response="{response}"',
            f"algorithm={algorithm}",
        ]
        if "opaque" in fields:
            parts.append(f'opaque="{fields["opaque"]}"')
        if qop:
            parts += [f"qop={qop}", "nc=00000001", f'cnonce="{cnonce}"']
        return "Digest " + ", ".join(parts)

    def _is_closed(self) -> bool:
        with self._lock:
            return self._closed

    def _close_conn(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def close(self) -> None:
        """Safe from any thread: wakes a reader blocked on the socket at once."""
        with self._lock:
            self._closed = True
            conn = self._conn
        if conn is not None and conn.sock is not None:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)

    def release(self) -> None:
        """Close everything (reader thread)."""
        if self._response is not None:
            with contextlib.suppress(OSError, http.client.HTTPException):
                self._response.close()
        self._close_conn()

    # reading ---------------------------------------------------------------
    def _fill(self) -> None:
        assert self._response is not None
        if time.monotonic() - self._last_part > self._timeout:
            raise _SessionEnd(f"no frame for {self._timeout:g} s", stalled=True)
        chunk = self._response.read1(65536)
        if not chunk:
            raise _SessionEnd("stream ended")
        self._buffer += chunk

    def _readline(self) -> bytes:
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line, self._buffer = self._buffer[: end + 1], self._buffer[end + 1 :]
                return line
            if len(self._buffer) > _MAX_LINE:
                raise _SessionEnd("malformed MJPEG stream (line too long)")
            self._fill()

    def _read_exact(self, size: int) -> bytes:
        while len(self._buffer) < size:
            self._fill()
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def _read_until(self, marker: bytes) -> bytes:
        start = 0
        while True:
            found = self._buffer.find(marker, start)
            if found >= 0:
                data, self._buffer = self._buffer[:found], self._buffer[found:]
                return data
            if len(self._buffer) > _MAX_JPEG_BYTES:
                raise _SessionEnd("malformed MJPEG stream (part too large)")
            start = max(0, len(self._buffer) - len(marker))
            self._fill()

    def single_image(self) -> bytes:
        """The whole body of a snapshot response."""
        assert self._response is not None
        data = self._response.read(_MAX_JPEG_BYTES + 1)
        if len(data) > _MAX_JPEG_BYTES:
            raise _SessionEnd("snapshot too large")
        return data

    def parts(self) -> Iterator[bytes]:
        """JPEG images of a multipart stream, tolerant of sloppy servers."""
        while True:
            line = self._readline()
            stripped = line.strip()
            if not stripped:
                continue
            if stripped.startswith(b"--"):
                if self.boundary is not None and stripped == b"--" + self.boundary + b"--":
                    raise _SessionEnd("stream ended")
                # Trust the stream over the header: some cameras declare one boundary
                # and send another.
                self.boundary = stripped[2:]
                headers: dict[str, str] = {}
            else:
                # A server that skips the boundary: this line is already a header.
                headers = self._header(stripped, {})
            while True:
                line = self._readline().strip()
                if not line:
                    break
                headers = self._header(line, headers)
            length = headers.get("content-length", "").strip()
            if length.isdigit() and 0 < int(length) <= _MAX_JPEG_BYTES:
                data = self._read_exact(int(length))
            elif self.boundary:
                data = self._read_until(b"--" + self.boundary).rstrip(b"\r\n")
            else:
                data = self._read_until(b"\xff\xd9") + self._read_exact(2)
            self._last_part = time.monotonic()
            yield data

    @staticmethod
    def _header(line: bytes, headers: dict[str, str]) -> dict[str, str]:
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
        return headers


# --------------------------------------------------------------------------- the source


class CameraSource:
    """One camera read by one thread, keeping only its newest frame.

    ``read_timeout``: a camera that sends no frame for this long (or does not answer) is
    offline. ``open_timeout`` (default ``read_timeout``) bounds the RTSP handshake.
    ``retry_backoff`` is the first wait before a retry, doubling up to ``max_backoff``.
    ``decode_threads`` > 1 lets FFmpeg decode a big stream on several cores.
    """

    def __init__(
        self,
        source: str | SourceSpec,
        *,
        name: str | None = None,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        open_timeout: float | None = None,
        retry_backoff: float = DEFAULT_RETRY_BACKOFF,
        max_backoff: float = DEFAULT_MAX_BACKOFF,
        decode_threads: int = 1,
        verify_ssl: bool = True,
        snapshot_interval: float = DEFAULT_SNAPSHOT_INTERVAL,
    ) -> None:
        self.spec = source if isinstance(source, SourceSpec) else parse_source(source)
        self.name = mask_url(name) if name else self.spec.masked
        if read_timeout <= 0 or retry_backoff < 0 or max_backoff < retry_backoff:
            raise ValueError("timeouts must be positive and max_backoff >= retry_backoff")
        self.read_timeout = read_timeout
        self.open_timeout = open_timeout if open_timeout is not None else read_timeout
        self.retry_backoff = retry_backoff
        self.max_backoff = max_backoff
        self.decode_threads = max(1, decode_threads)
        self.verify_ssl = verify_ssl
        self.snapshot_interval = snapshot_interval

        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._frame: Frame | None = None
        self._seq = 0
        self._state = SourceState.STOPPED
        self._reason: str | None = "not started"
        self._listeners: list[StateListener] = []
        self._frames_read = 0
        self._reconnects = 0
        self._decode_errors = 0
        self._last_frame_at: float | None = None
        self._recent: deque[float] = deque(maxlen=_FPS_WINDOW)
        self._session_frames = 0
        self._mjpeg: _MjpegConnection | None = None
        self._was_offline = False

    # public API ---------------------------------------------------------------
    def __repr__(self) -> str:
        return f"<CameraSource {self.name} {self._state.value}>"

    __str__ = __repr__

    def __enter__(self) -> CameraSource:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def state(self) -> SourceState:
        """The camera's state now."""
        return self._state

    @property
    def reason(self) -> str | None:
        """Why the camera is offline (credential-free), else None."""
        return self._reason if self._state in {SourceState.OFFLINE, SourceState.STOPPED} else None

    @property
    def running(self) -> bool:
        """Whether the reader thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def stats(self) -> SourceStats:
        """A snapshot of the counters."""
        with self._cond:
            recent = list(self._recent)
            fps = 0.0
            if len(recent) >= 2 and time.monotonic() - recent[-1] < 2.0:
                fps = (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)
            return SourceStats(
                frames_read=self._frames_read,
                reconnects=self._reconnects,
                last_frame_at=self._last_frame_at,
                decode_errors=self._decode_errors,
                fps=fps,
            )

    def on_state(self, listener: StateListener) -> Callable[[], None]:
        """Call ``listener(state, reason)`` on every state change: from the reader thread
        (``streaming``, ``offline``), or from the thread calling :meth:`start` /
        :meth:`stop` (``connecting``, ``stopped``). Keep it quick and non-blocking: hand
        over to an event loop with ``call_soon_threadsafe``. Returns a remover."""
        with self._cond:
            self._listeners.append(listener)

        def remove() -> None:
            with self._cond, contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return remove

    def start(self) -> None:
        """Start the reader thread (again, after a stop)."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self._stop.clear()
        self._was_offline = False
        self._set_state(SourceState.CONNECTING, None)
        self._thread = threading.Thread(
            target=self._run, name=f"upr_faces camera {self.name}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop reading and join the thread, waiting at most ``timeout`` seconds.

        A reader blocked in an RTSP handshake (at most ``open_timeout``) cannot be cut
        short: then this logs a warning and returns with the thread still finishing
        (``running`` stays true until it exits by itself). Any other read ends within
        about half a second."""
        self._stop.set()
        mjpeg = self._mjpeg
        if mjpeg is not None:
            mjpeg.close()
        with self._cond:
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                _LOGGER.warning(
                    "Camera %s: reader still busy %.1f s after stop", self.name, timeout
                )
                return
        self._thread = None
        self._set_state(SourceState.STOPPED, "stopped")

    def latest(self) -> Frame | None:
        """The newest frame, or None before the first one."""
        return self._frame

    def wait_newer(self, seq: int, timeout: float | None = None) -> Frame | None:
        """Block until a frame newer than ``seq`` exists and return the newest; None on
        timeout or once stopped. ``wait_newer(0)`` waits for the first frame."""
        with self._cond:
            ready = self._cond.wait_for(
                lambda: (self._frame is not None and self._frame.seq > seq) or self._stop.is_set(),
                timeout,
            )
            frame = self._frame
            if not ready or frame is None or frame.seq <= seq:
                return None
            return frame

    # state ---------------------------------------------------------------------
    def _set_state(self, state: SourceState, reason: str | None) -> None:
        with self._cond:
            previous = self._state
            self._state = state
            self._reason = reason
            listeners = list(self._listeners) if previous != state else []
        if previous == state:
            return
        if state is SourceState.OFFLINE:
            _LOGGER.warning("Camera %s is offline: %s", self.name, reason)
            self._was_offline = True
        elif state is SourceState.STREAMING:
            if self._was_offline:
                _LOGGER.info("Camera %s is back online", self.name)
                self._was_offline = False
            else:
                _LOGGER.debug("Camera %s is streaming", self.name)
        for listener in listeners:
            try:
                listener(state, reason)
            except Exception:
                _LOGGER.exception("Camera %s: state listener failed", self.name)

    def _publish(self, image: Image | Callable[[], Image]) -> None:
        now = time.monotonic()
        with self._cond:
            self._seq += 1
            self._frame = Frame(image, now, self._seq)
            self._frames_read += 1
            self._last_frame_at = now
            self._recent.append(now)
            self._session_frames += 1
            self._cond.notify_all()
        if self._state is not SourceState.STREAMING and not self._stop.is_set():
            self._set_state(SourceState.STREAMING, None)

    # the reader thread ---------------------------------------------------------------
    def _run(self) -> None:
        backoff = self.retry_backoff
        attempts = 0
        last_quiet_retry = -float("inf")
        try:
            while not self._stop.is_set():
                if attempts:
                    with self._cond:
                        self._reconnects += 1
                attempts += 1
                self._session_frames = 0
                try:
                    self._session()
                    break  # returned: stop requested
                except _Stopped:
                    break
                except _SessionEnd as end:
                    reason, stalled = str(end), end.stalled
                except Exception as err:  # an unexpected library error
                    reason, stalled = self._describe(err), False
                    if _LOGGER.isEnabledFor(logging.DEBUG):
                        # FFmpeg's messages carry the full URL: never log them raw.
                        trace = "".join(traceback.format_exception(err))
                        _LOGGER.debug(
                            "Camera %s: session failed: %s",
                            self.name,
                            mask_text(trace, self.spec.url),
                        )
                if self._stop.is_set():
                    break
                streamed = self._session_frames > 0
                now = time.monotonic()
                if streamed:
                    backoff = self.retry_backoff
                    if not stalled and now - last_quiet_retry >= self.max_backoff:
                        # It worked a moment ago: try again at once, before calling it
                        # offline (cameras drop sessions now and then).
                        last_quiet_retry = now
                        continue
                self._set_state(SourceState.OFFLINE, reason)
                if streamed:
                    continue  # reconnect now; offline until frames flow again
                if self._stop.wait(backoff):
                    break
                backoff = min(backoff * 2, self.max_backoff)
        finally:
            if self._stop.is_set():
                self._set_state(SourceState.STOPPED, "stopped")

    def _describe(self, err: BaseException) -> str:
        if isinstance(err, av.error.ExitError):
            text = f"no answer within {self.open_timeout:g} s"
        elif isinstance(err, av.error.FFmpegError):
            text = err.strerror or type(err).__name__
            if isinstance(err, av.error.HTTPUnauthorizedError | av.error.HTTPForbiddenError):
                text = f"unauthorized ({text})"
        elif isinstance(err, TimeoutError | socket.timeout):
            text = f"no answer within {self.read_timeout:g} s"
        elif isinstance(err, ConnectionRefusedError):
            text = "connection refused"
        elif isinstance(err, OSError):
            text = err.strerror or str(err) or type(err).__name__
        else:
            text = str(err) or type(err).__name__
        return mask_text(text, self.spec.url)

    def _session(self) -> None:
        kind = self.spec.kind
        if kind is SourceKind.RTSP:
            self._session_rtsp()
        elif kind is SourceKind.FILE:
            self._session_file()
        elif kind is SourceKind.HTTP:
            self._session_http()
        else:
            self._session_usb()

    def _open_av(self, url: str, options: dict[str, str], timeout: Any) -> Any:
        container = av.open(url, mode="r", options=options, timeout=timeout)
        if not container.streams.video:
            container.close()
            raise _SessionEnd("no video stream")
        stream = container.streams.video[0]
        context = stream.codec_context
        context.thread_count = self.decode_threads
        context.thread_type = "AUTO" if self.decode_threads > 1 else "SLICE"
        return container

    def _session_rtsp(self) -> None:
        options = {
            "rtsp_transport": "tcp",
            "flags": "low_delay",
            # PyAV always probes the stream; the SDP and the first packet are enough. (No
            # "fflags nobuffer": it would throw that first packet, often a keyframe, away.)
            "probesize": "32",
            "analyzeduration": "0",
        }
        container = self._open_av(
            self.spec.url, options, (self.open_timeout, min(_TICK, self.read_timeout))
        )
        try:
            if self._stop.is_set():
                return
            stream = container.streams.video[0]
            last_frame = time.monotonic()
            packets = container.demux(stream)
            while not self._stop.is_set():
                try:
                    packet = next(packets)
                except StopIteration:
                    raise _SessionEnd("stream ended") from None
                except av.error.ExitError:
                    # A quiet tick: check for stop, then for a stall, then read on.
                    if time.monotonic() - last_frame > self.read_timeout:
                        raise _SessionEnd(
                            f"no frame for {self.read_timeout:g} s", stalled=True
                        ) from None
                    packets = container.demux(stream)
                    continue
                try:
                    frames = packet.decode()
                except av.error.InvalidDataError:
                    with self._cond:
                        self._decode_errors += 1
                    frames = []
                for frame in frames:
                    last_frame = time.monotonic()
                    self._publish(_convert_av(frame))
                if time.monotonic() - last_frame > self.read_timeout:
                    raise _SessionEnd(f"no frame for {self.read_timeout:g} s", stalled=True)
        finally:
            container.close()

    def _session_file(self) -> None:
        path = self.spec.path
        assert path is not None
        if not path.is_file():
            raise _SessionEnd(f"no such file: {path}")
        origin: float | None = None  # monotonic time of the clip's first frame, this pass
        while not self._stop.is_set():
            container = self._open_av(str(path), {}, None)
            try:
                stream = container.streams.video[0]
                rate = stream.average_rate or stream.guessed_rate or 15
                step = 1.0 / float(rate)
                first_t: float | None = None
                clip_t = 0.0
                for packet in container.demux(stream):
                    try:
                        frames = packet.decode()
                    except av.error.InvalidDataError:
                        with self._cond:
                            self._decode_errors += 1
                        continue
                    for frame in frames:
                        frame_t = frame.time if frame.time is not None else clip_t + step
                        if first_t is None:
                            first_t = frame_t
                        clip_t = frame_t
                        now = time.monotonic()
                        if origin is None:
                            origin = now
                        due = origin + (frame_t - first_t)
                        if due - now > 0:
                            if self._stop.wait(due - now):
                                return
                        elif now - due > 1.0:  # fell far behind: do not rush to catch up
                            origin = now - (frame_t - first_t)
                        self._publish(_convert_av(frame))
                    if self._stop.is_set():
                        return
                if first_t is None:
                    raise _SessionEnd("no frame in clip")
                if origin is not None:
                    origin += clip_t - first_t + step  # the next pass starts one frame on
            finally:
                container.close()

    def _session_http(self) -> None:
        while True:
            connection = _MjpegConnection(self.spec.url, self.read_timeout, self.verify_ssl)
            self._mjpeg = connection  # before checking _stop: stop() closes what it sees
            try:
                if self._stop.is_set():
                    return
                connection.open()
                if "multipart" not in connection.content_type:
                    # A snapshot URL: one image per request.
                    data = connection.single_image()
                    if not data.startswith((b"\xff\xd8", b"\x89PNG")):
                        raise _SessionEnd(f"not an image stream ({connection.content_type or '?'})")
                    self._publish(_decode_jpeg(data))
                else:
                    for data in connection.parts():
                        if self._stop.is_set():
                            return
                        if data.startswith(b"\xff\xd8"):
                            self._publish(_decode_jpeg(data))
                        else:
                            with self._cond:
                                self._decode_errors += 1
            except _Stopped:
                return
            except _SessionEnd:
                if self._stop.is_set():
                    return
                raise
            except OSError as err:
                if self._stop.is_set():
                    return
                raise _SessionEnd(
                    self._describe(err), stalled=isinstance(err, TimeoutError)
                ) from None
            except http.client.HTTPException as err:
                if self._stop.is_set():
                    return
                raise _SessionEnd(f"bad HTTP answer ({type(err).__name__})") from None
            finally:
                self._mjpeg = None
                connection.release()
            if self._stop.wait(self.snapshot_interval):
                return

    def _session_usb(self) -> None:
        device = self.spec.device
        assert device is not None
        capture = cv2.VideoCapture(device, cv2.CAP_V4L2)
        try:
            if not capture.isOpened():
                raise _SessionEnd(f"cannot open {_device_path(device)}")
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
            last_frame = time.monotonic()
            while not self._stop.is_set():
                ok, image = capture.read()
                if ok and image is not None:
                    last_frame = time.monotonic()
                    self._publish(_read_only(np.ascontiguousarray(image, dtype=np.uint8)))
                elif time.monotonic() - last_frame > self.read_timeout:
                    raise _SessionEnd(f"no frame for {self.read_timeout:g} s", stalled=True)
                else:
                    self._stop.wait(0.05)
        finally:
            capture.release()


# --------------------------------------------------------------------------- USB scan


@dataclass(frozen=True, slots=True)
class UsbCamera:
    """A local camera found by :func:`scan_usb`."""

    index: int
    width: int
    height: int
    name: str

    @property
    def source(self) -> str:
        """The source string that opens it."""
        return f"usb:{self.index}"


def _device_path(device: int | str) -> str:
    return f"/dev/video{device}" if isinstance(device, int) else device


def _sys_name(index: int) -> str | None:
    try:
        return Path(f"/sys/class/video4linux/video{index}/name").read_text().strip() or None
    except OSError:
        return None


def _device_exists(index: int) -> bool:
    return os.path.exists(f"/dev/video{index}")


def scan_usb(max_index: int = 6) -> list[UsbCamera]:
    """Probe ``/dev/video0`` .. ``/dev/video{max_index-1}`` and list those that deliver a
    picture. Every device opened is released. Blocking: run it in an executor."""
    found: list[UsbCamera] = []
    for index in range(max_index):
        if not _device_exists(index):
            continue
        capture = cv2.VideoCapture(index, cv2.CAP_V4L2)
        try:
            if not capture.isOpened():
                continue
            ok, image = capture.read()  # metadata nodes open but give no picture
            if not ok or image is None:
                continue
            height, width = image.shape[:2]
        finally:
            capture.release()
        found.append(UsbCamera(index, width, height, _sys_name(index) or f"video{index}"))
    return found
