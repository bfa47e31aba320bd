"""One camera: a reader thread per source that keeps the newest frame and reconnects.

The back-ends (RTSP and clips through PyAV, HTTP-MJPEG through :mod:`.mjpeg`, USB through
OpenCV's V4L2 backend) are the ``_session_*`` methods of :class:`CameraSource`.

Reconnecting: a session (one connection) that delivered frames for ``stable_after`` seconds
was healthy; when it drops, the backoff starts again from ``retry_backoff`` and, at most
once per ``max_backoff``, the camera is reconnected to at once, quietly. A session that
dropped sooner counts as a failed attempt: the next one waits the backoff, which goes on
doubling, so a camera that hangs up after every frame is not reconnected to in a tight
loop. Two such drops in a row make the camera flap: it stays ``offline`` (reason
``unstable stream, dropped N times in a row (...)``) until a session has lived
``stable_after`` seconds. Each problem is logged once: a warning when the camera goes
offline, an info when it is back: at once after an outage, but only once healthy when the
session before ended early (hung up or stalled), so a flapping camera says nothing more.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import socket
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from enum import StrEnum
from typing import Any, Final

import av
import av.error
import cv2
import numpy as np

from .mjpeg import MjpegConnection
from .spec import SourceKind, SourceSpec, mask_text, mask_url, parse_source
from .stream import (
    Frame,
    Image,
    SessionEnd,
    SourceStats,
    Stopped,
    convert_av,
    decode_jpeg,
    is_jpeg,
    read_only,
)
from .usb import device_path

_LOGGER = logging.getLogger(__name__)

DEFAULT_READ_TIMEOUT: Final = 10.0
DEFAULT_RETRY_BACKOFF: Final = 5.0
DEFAULT_MAX_BACKOFF: Final = 60.0
DEFAULT_SNAPSHOT_INTERVAL: Final = 0.2
DEFAULT_STABLE_AFTER: Final = 10.0
_TICK: Final = 0.5  # longest single blocking FFmpeg read: bounds how long stop() waits
_MAX_USB_INDEX: Final = 63
_FPS_WINDOW: Final = 30


class SourceState(StrEnum):
    """Where a camera stands."""

    CONNECTING = "connecting"
    STREAMING = "streaming"
    OFFLINE = "offline"
    STOPPED = "stopped"


type StateListener = Callable[[SourceState, str | None], None]


# --------------------------------------------------------------------------- the source


class CameraSource:
    """One camera read by one thread, keeping only its newest frame.

    ``read_timeout``: a camera that sends no frame for this long (or does not answer) is
    offline. ``open_timeout`` (default ``read_timeout``) bounds the RTSP handshake.
    ``retry_backoff`` is the first wait before a retry, doubling up to ``max_backoff``;
    a session is healthy (and resets the backoff) once it has delivered frames for
    ``stable_after`` seconds.
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
        stable_after: float = DEFAULT_STABLE_AFTER,
    ) -> None:
        self.spec = source if isinstance(source, SourceSpec) else parse_source(source)
        self.name = mask_url(name) if name else self.spec.masked
        if (
            read_timeout <= 0
            or retry_backoff < 0
            or max_backoff < retry_backoff
            or stable_after < 0
        ):
            raise ValueError("timeouts must be positive and max_backoff >= retry_backoff")
        self.read_timeout = read_timeout
        self.open_timeout = open_timeout if open_timeout is not None else read_timeout
        self.retry_backoff = retry_backoff
        self.max_backoff = max_backoff
        self.decode_threads = max(1, decode_threads)
        self.verify_ssl = verify_ssl
        self.snapshot_interval = snapshot_interval
        self.stable_after = stable_after

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
        self._mjpeg: MjpegConnection | None = None
        # the reader thread's view of the connections (reset by start()):
        self._was_offline = False  # gone offline and said so, not yet said to be back
        self._session_first: float | None = None  # this session's first frame
        self._session_healthy = False  # this session delivered frames for stable_after
        self._short_drops = 0  # sessions in a row that hung up before stable_after
        self._after_drop = False  # the last session ended (hung up, stalled) before it

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
        self._short_drops = 0
        self._after_drop = False
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
            if self._was_offline:  # flapping: said once already
                _LOGGER.debug("Camera %s is offline again: %s", self.name, reason)
            else:
                _LOGGER.warning("Camera %s is offline: %s", self.name, reason)
                self._was_offline = True
        elif state is SourceState.STREAMING:
            if self._was_offline and not self._after_drop:
                self._back_online()
            else:  # right after an early drop: back once the session proves healthy
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
        if self._session_first is None:
            self._session_first = now
        if not self._session_healthy and now - self._session_first >= self.stable_after:
            self._session_healthy = True
            self._short_drops = 0
            self._after_drop = False
            if self._was_offline and self._state is SourceState.STREAMING:
                self._back_online()
        if (
            self._state is not SourceState.STREAMING
            and not self._stop.is_set()
            and (self._short_drops < 2 or self._session_healthy)  # a flapping camera waits
        ):
            self._set_state(SourceState.STREAMING, None)

    def _back_online(self) -> None:
        _LOGGER.info("Camera %s is back online", self.name)
        self._was_offline = False

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
                self._session_first = None
                self._session_healthy = False
                try:
                    self._session()
                    break  # returned: stop requested
                except Stopped:
                    break
                except SessionEnd as end:
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
                healthy = self._session_healthy
                now = time.monotonic()
                if healthy:
                    backoff = self.retry_backoff
                    if not stalled and now - last_quiet_retry >= self.max_backoff:
                        # It worked a moment ago: try again at once, before calling it
                        # offline (cameras drop sessions now and then).
                        last_quiet_retry = now
                        continue
                # A session that hung up before it was healthy is a failed attempt, or
                # a camera closing after every frame is reconnected to in a tight loop.
                # (One that stalled has waited read_timeout already; its coming back is
                # not announced before it proves healthy either.)
                early = streamed and not healthy
                dropped = early and not stalled
                self._after_drop = early
                if dropped:
                    self._short_drops += 1
                    if self._short_drops >= 2:
                        drops = self._short_drops
                        reason = f"unstable stream, dropped {drops} times in a row ({reason})"
                self._set_state(SourceState.OFFLINE, reason)
                if streamed and not dropped:
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
            raise SessionEnd("no video stream")
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
                    raise SessionEnd("stream ended") from None
                except av.error.ExitError:
                    # A quiet tick: check for stop, then for a stall, then read on.
                    if time.monotonic() - last_frame > self.read_timeout:
                        raise SessionEnd(
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
                    self._publish(convert_av(frame))
                if time.monotonic() - last_frame > self.read_timeout:
                    raise SessionEnd(f"no frame for {self.read_timeout:g} s", stalled=True)
        finally:
            container.close()

    def _session_file(self) -> None:
        path = self.spec.path
        assert path is not None
        if not path.is_file():
            raise SessionEnd(f"no such file: {path}")
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
                        self._publish(convert_av(frame))
                    if self._stop.is_set():
                        return
                if first_t is None:
                    raise SessionEnd("no frame in clip")
                if origin is not None:
                    origin += clip_t - first_t + step  # the next pass starts one frame on
            finally:
                container.close()

    def _session_http(self) -> None:
        last_picture = time.monotonic()  # parts come, but a picture has to, too
        while True:
            connection = MjpegConnection(self.spec.url, self.read_timeout, self.verify_ssl)
            self._mjpeg = connection  # before checking _stop: stop() closes what it sees
            try:
                if self._stop.is_set():
                    return
                connection.open()
                if "multipart" not in connection.content_type:
                    # A snapshot URL: one image per request.
                    data = connection.single_image()
                    if not data.startswith((b"\xff\xd8", b"\x89PNG")):
                        raise SessionEnd(f"not an image stream ({connection.content_type or '?'})")
                    if data.startswith(b"\x89PNG") or is_jpeg(data):
                        self._publish(decode_jpeg(data))
                        last_picture = time.monotonic()
                    else:
                        self._no_picture(data, last_picture)
                else:
                    last_picture = time.monotonic()
                    for data in connection.parts():
                        if self._stop.is_set():
                            return
                        if is_jpeg(data):
                            self._publish(decode_jpeg(data))
                            last_picture = time.monotonic()
                        else:
                            self._no_picture(data, last_picture)
            except Stopped:
                return
            except SessionEnd:
                if self._stop.is_set():
                    return
                raise
            except OSError as err:
                if self._stop.is_set():
                    return
                raise SessionEnd(
                    self._describe(err), stalled=isinstance(err, TimeoutError)
                ) from None
            except http.client.HTTPException as err:
                if self._stop.is_set():
                    return
                raise SessionEnd(f"bad HTTP answer ({type(err).__name__})") from None
            finally:
                self._mjpeg = None
                connection.release()
            if self._stop.wait(self.snapshot_interval):
                return

    def _no_picture(self, data: bytes, last_picture: float) -> None:
        """Count a part that holds no picture (empty, or garbage no decoder can read) and
        end the session once only such parts came for ``read_timeout``."""
        with self._cond:
            self._decode_errors += 1
        if time.monotonic() - last_picture > self.read_timeout:
            what = "undecodable" if data.strip() else "empty"
            raise SessionEnd(
                f"{what} frames for {self.read_timeout:g} s (not an image stream)", stalled=True
            )

    def _session_usb(self) -> None:
        device = self.spec.device
        assert device is not None
        capture = cv2.VideoCapture(device, cv2.CAP_V4L2)
        try:
            if not capture.isOpened():
                raise SessionEnd(f"cannot open {device_path(device)}")
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
            last_frame = time.monotonic()
            while not self._stop.is_set():
                ok, image = capture.read()
                if ok and image is not None:
                    last_frame = time.monotonic()
                    self._publish(read_only(np.ascontiguousarray(image, dtype=np.uint8)))
                elif time.monotonic() - last_frame > self.read_timeout:
                    raise SessionEnd(f"no frame for {self.read_timeout:g} s", stalled=True)
                else:
                    self._stop.wait(0.05)
        finally:
            capture.release()
