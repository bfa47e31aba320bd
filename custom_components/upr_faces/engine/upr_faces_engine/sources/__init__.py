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

Idle cameras decode less. The pipeline calls :meth:`CameraSource.set_still` (True once
its motion gate has seen a still scene for a while, False as soon as something moves), and
each camera's ``idle_decode`` (one of :data:`IDLE_DECODE_MODES`) says what that changes:
``"keyframes"`` (the default) decodes only the key frames of H.264/H.265 while still
(FFmpeg's ``skip_frame``), so :meth:`CameraSource.latest` is refreshed once per key-frame
interval and waking up waits at most for the next key frame (at once when the wake comes
right after a key frame, as it does when that key frame showed the motion);
``"reduced"`` takes at most one picture a second where skipping one is free (MJPEG, USB,
other intra-only codecs; on H.264 it is ``"keyframes"``); ``"full"`` decodes everything.
The packets keep being read while still: a quieter camera is not a stalled one. The
counters (``decoded``, ``skipped``, ``still``, ``skipping``, ``wake_latency``) are in
:class:`SourceStats`.

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
by itself. A stream that drops after working for ``stable_after`` seconds is retried at
once, quietly (at most once per ``max_backoff``), before the camera is called offline; one
that drops sooner is a failed attempt (the backoff goes on doubling), and two such drops in
a row keep it ``offline`` ("unstable stream") until a connection lasts. An HTTP stream of
empty or undecodable parts is ``offline`` after ``read_timeout``, never ``streaming``.
Going offline is logged once, as is coming back. Credentials never appear in logs, reprs,
reasons or errors: see :func:`mask_url`.

Nothing here imports Home Assistant.

The package: :mod:`.spec` (source strings and masking), :mod:`.stream` (frames),
:mod:`.mjpeg` (the MJPEG client), :mod:`.camera` (the reader and its back-ends),
:mod:`.usb` (finding USB cameras).
"""

from .camera import (
    DEFAULT_MAX_BACKOFF,
    DEFAULT_READ_TIMEOUT,
    DEFAULT_RETRY_BACKOFF,
    DEFAULT_SNAPSHOT_INTERVAL,
    DEFAULT_STABLE_AFTER,
    IDLE_DECODE_MODES,
    CameraSource,
    SourceState,
    StateListener,
)
from .spec import (
    InvalidSourceError,
    SourceError,
    SourceKind,
    SourceSpec,
    canonical_source,
    default_name,
    mask_text,
    mask_url,
    parse_source,
    source_key,
    split_credentials,
    unmask_source,
)
from .stream import Frame, Image, SourceStats
from .usb import UsbCamera, scan_usb

__all__ = [
    "DEFAULT_MAX_BACKOFF",
    "DEFAULT_READ_TIMEOUT",
    "DEFAULT_RETRY_BACKOFF",
    "DEFAULT_SNAPSHOT_INTERVAL",
    "DEFAULT_STABLE_AFTER",
    "IDLE_DECODE_MODES",
    "CameraSource",
    "Frame",
    "Image",
    "InvalidSourceError",
    "SourceError",
    "SourceKind",
    "SourceSpec",
    "SourceState",
    "SourceStats",
    "StateListener",
    "UsbCamera",
    "canonical_source",
    "default_name",
    "mask_text",
    "mask_url",
    "parse_source",
    "scan_usb",
    "source_key",
    "split_credentials",
    "unmask_source",
]
