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
from dataclasses import dataclass
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
IDLE_DECODE_MODES: Final = ("keyframes", "reduced", "full")
_REDUCED_INTERVAL: Final = 1.0  # "reduced": at most one picture a second while still


class SourceState(StrEnum):
    """Where a camera stands."""

    CONNECTING = "connecting"
    STREAMING = "streaming"
    OFFLINE = "offline"
    STOPPED = "stopped"


type StateListener = Callable[[SourceState, str | None], None]


@dataclass(slots=True)
class _Gate:
    """Which packets of one PyAV stream are decoded (the reader thread's, one per decoder).

    ``intra``: every picture stands alone (MJPEG...), so skipping one is free and waking
    is at once. Otherwise ``nonkey`` says the decoder runs with ``skip_frame = NONKEY``;
    ``skipped_since_key`` counts the pictures dropped since the last key frame: while it
    is 0, full decoding can resume at the very next packet, else only at a key frame.
    """

    context: Any
    intra: bool
    nonkey: bool = False
    skipped_since_key: int = 0


# --------------------------------------------------------------------------- the source


class CameraSource:
    """One camera read by one thread, keeping only its newest frame.

    ``read_timeout``: a camera that sends no frame for this long (or does not answer) is
    offline. ``open_timeout`` (default ``read_timeout``) bounds the RTSP handshake.
    ``retry_backoff`` is the first wait before a retry, doubling up to ``max_backoff``;
    a session is healthy (and resets the backoff) once it has delivered frames for
    ``stable_after`` seconds.
    ``decode_threads`` > 1 lets FFmpeg decode a big stream on several cores.

    ``idle_decode`` says how much is decoded while :meth:`set_still` says the scene is
    still (one of :data:`IDLE_DECODE_MODES`):

    ``"keyframes"`` (the default)
        H.264/H.265 (RTSP, clips): only key frames are decoded (PyAV's ``skip_frame =
        "NONKEY"``; the other packets are still read, so the stream is not taken for a
        stalled one), so :meth:`latest` is refreshed once per key-frame interval (GOP).
        After ``set_still(False)`` full decoding resumes at once if no picture was skipped
        since the last key frame (the motion gate woke up on that key frame), else at the
        next key frame: the camera's key-frame interval bounds the wake-up latency.
        Cameras whose pictures all stand alone (MJPEG over HTTP or RTSP, USB) have nothing
        to skip in this mode: it decodes everything.
    ``"reduced"``
        At most about one picture a second, for codecs where skipping a picture is free:
        MJPEG over HTTP (the other parts are read and dropped, never converted), intra-only
        streams through PyAV (not fed to the decoder), USB (grabbed without being retrieved,
        so OpenCV does not convert them). Waking is at once. On H.264/H.265, where every
        picture needs the one before, it behaves as ``"keyframes"``.
    ``"full"``
        Everything is always decoded (``set_still`` changes nothing).
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
        idle_decode: str = "keyframes",
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
        if idle_decode not in IDLE_DECODE_MODES:
            raise ValueError(f"idle_decode must be one of {', '.join(IDLE_DECODE_MODES)}")
        self.idle_decode = idle_decode
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
        # idle decoding: _still and _wake_at are set by set_still() (under _cond); the rest
        # belongs to the reader thread (stats reads it as it stands)
        self._still = False
        self._wake_at: float | None = None  # when set_still(False) ended the last still spell
        self._decoded = 0
        self._skipped = 0
        self._skipping = False  # decoding less right now
        self._resuming = False  # back to full decoding; the next frame ends the wake-up
        self._wake_latency: float | None = None
        self._last_taken = -float("inf")  # "reduced": when the last picture was taken
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
                decoded=self._decoded,
                skipped=self._skipped,
                still=self._still,
                skipping=self._skipping,
                wake_latency=self._wake_latency,
                idle_decode=self.idle_decode,
            )

    @property
    def still(self) -> bool:
        """What :meth:`set_still` last said."""
        return self._still

    def set_still(self, still: bool) -> None:
        """Say whether the scene is still (True) or moving (False), from any thread.

        Cheap (a flag under a lock): the reader thread applies it from its next packet,
        following ``idle_decode`` (see the class). While still, frames keep coming, fewer
        of them (``seq`` goes on counting them), and the camera stays ``streaming``.
        USB cameras are read as before except in ``"reduced"`` mode, where the pictures in
        between are grabbed from V4L2 without being retrieved (converted)."""
        with self._cond:
            if still == self._still:
                return
            self._still = still
            if not still:
                self._wake_at = time.monotonic()

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
            self._decoded += 1
            if self._resuming:
                self._resuming = False
                if self._wake_at is not None and not self._still:
                    self._wake_latency = now - self._wake_at
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

    # idle decoding (the reader thread) -------------------------------------------------
    def _new_gate(self, context: Any) -> _Gate:
        """The gate of a new decoder, which decodes everything."""
        self._end_skipping()
        return _Gate(context, intra=bool(context.codec.intra_only))

    def _end_skipping(self) -> None:
        if self._skipping:
            self._skipping = False
            self._resuming = True

    def _count_skipped(self) -> None:
        with self._cond:
            self._skipped += 1

    def _take(self, now: float) -> bool:
        """For pictures that stand alone: whether to take this one (while still in
        ``"reduced"`` mode, one a second)."""
        if self._still and self.idle_decode == "reduced":
            self._skipping = True
            if now - self._last_taken < _REDUCED_INTERVAL:
                return False
        else:
            self._end_skipping()
        self._last_taken = now
        return True

    def _admit(self, gate: _Gate, packet: Any, now: float) -> tuple[bool, bool]:
        """Whether to hand ``packet`` to the decoder, and whether a picture is owed for it.

        Inter-coded streams switch to key frames only at once when still, and back to
        full decoding at the next packet when nothing was skipped since the last key
        frame, else at the next key frame (a picture after a skipped one would be decoded
        from a reference the decoder never made)."""
        if not packet.size:  # the flush at the end of a clip
            return True, False
        if gate.intra:
            take = self._take(now)
            if not take:
                self._count_skipped()
            return take, take
        key = bool(packet.is_keyframe)
        if self._still and self.idle_decode != "full":
            if not gate.nonkey:
                gate.context.skip_frame = "NONKEY"
                gate.nonkey = self._skipping = True
        elif gate.nonkey and (key or gate.skipped_since_key == 0):
            gate.context.skip_frame = "DEFAULT"
            gate.nonkey = False
            self._end_skipping()
        if key:
            gate.skipped_since_key = 0
        elif gate.nonkey:
            gate.skipped_since_key += 1
            self._count_skipped()
            return True, False  # FFmpeg reads its headers and drops it
        return True, True

    def _decode(self, packet: Any) -> list[Any]:
        try:
            frames: list[Any] = packet.decode()
        except av.error.InvalidDataError:
            with self._cond:
                self._decode_errors += 1
            return []
        return frames

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
            gate = self._new_gate(stream.codec_context)
            # A stall is no packet for read_timeout (while still, most packets are not
            # decoded, yet they come), or packets without a picture for that long counted
            # from the first one owed a picture (any packet, or only key frames while
            # still), once three are owed: a decoder that reorders pictures (B-frames)
            # holds a key frame back until the next one is decoded, a GOP later.
            last_packet = time.monotonic()
            owed_since: float | None = None
            owed_count = 0
            packets = container.demux(stream)
            while not self._stop.is_set():
                try:
                    packet = next(packets)
                except StopIteration:
                    raise SessionEnd("stream ended") from None
                except av.error.ExitError:
                    # A quiet tick: check for stop, then for a stall, then read on.
                    if time.monotonic() - last_packet > self.read_timeout:
                        raise SessionEnd(
                            f"no frame for {self.read_timeout:g} s", stalled=True
                        ) from None
                    packets = container.demux(stream)
                    continue
                now = last_packet = time.monotonic()
                feed, owed = self._admit(gate, packet, now)
                if owed:
                    owed_count += 1
                    if owed_since is None:
                        owed_since = now
                for frame in self._decode(packet) if feed else ():
                    owed_since, owed_count = None, 0
                    self._publish(convert_av(frame))
                if (
                    owed_since is not None
                    and owed_count >= 3
                    and time.monotonic() - owed_since > self.read_timeout
                ):
                    raise SessionEnd(f"no frame for {self.read_timeout:g} s", stalled=True)
        finally:
            container.close()

    def _session_file(self) -> None:
        path = self.spec.path
        assert path is not None
        if not path.is_file():
            raise SessionEnd(f"no such file: {path}")
        # Paced by the packets' decoding times, not by the frames: while still, most
        # packets give no frame, and the clip must not race through them.
        origin: float | None = None  # monotonic time of the clip's first packet, this pass
        while not self._stop.is_set():
            container = self._open_av(str(path), {}, None)
            try:
                stream = container.streams.video[0]
                rate = stream.average_rate or stream.guessed_rate or 15
                step = 1.0 / float(rate)
                gate = self._new_gate(stream.codec_context)
                first_t: float | None = None
                clip_t = 0.0
                owed = pictures = 0
                for packet in container.demux(stream):
                    if packet.size:
                        if packet.dts is not None and packet.time_base is not None:
                            packet_t = float(packet.dts * packet.time_base)
                        else:
                            packet_t = clip_t + step
                        if first_t is None:
                            first_t = packet_t
                        clip_t = packet_t
                        now = time.monotonic()
                        if origin is None:
                            origin = now
                        due = origin + (packet_t - first_t)
                        if due - now > 0:
                            if self._stop.wait(due - now):
                                return
                        elif now - due > 1.0:  # fell far behind: do not rush to catch up
                            origin = now - (packet_t - first_t)
                    feed, expect = self._admit(gate, packet, time.monotonic())
                    owed += expect
                    for frame in self._decode(packet) if feed else ():
                        pictures += 1
                        self._publish(convert_av(frame))
                    if self._stop.is_set():
                        return
                if first_t is None or (owed and not pictures):
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
                        last_picture = time.monotonic()
                        self._offer_picture(data, last_picture)
                    else:
                        self._no_picture(data, last_picture)
                else:
                    last_picture = time.monotonic()
                    for data in connection.parts():
                        if self._stop.is_set():
                            return
                        if is_jpeg(data):
                            last_picture = time.monotonic()
                            self._offer_picture(data, last_picture)
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

    def _offer_picture(self, data: bytes, now: float) -> None:
        """Publish an image from an HTTP camera, unless "reduced" drops it (never decoded:
        its pixels would only be made if somebody read them)."""
        if self._take(now):
            self._publish(decode_jpeg(data))
        else:
            self._count_skipped()

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
            self._end_skipping()
            while not self._stop.is_set():
                if not self._take(time.monotonic()):
                    # "reduced" while still: dequeue the picture, do not convert it
                    if capture.grab():
                        last_frame = time.monotonic()
                        self._count_skipped()
                    elif time.monotonic() - last_frame > self.read_timeout:
                        raise SessionEnd(f"no frame for {self.read_timeout:g} s", stalled=True)
                    else:
                        self._stop.wait(0.05)
                    continue
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
