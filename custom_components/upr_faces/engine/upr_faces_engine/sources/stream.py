"""What a camera reader produces (frames, converted to pixels lazily) and its counters."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import FrozenInstanceError, dataclass
from typing import Final

import av
import cv2
import numpy as np
from numpy.typing import NDArray

from ..errors import ImageError

type Image = NDArray[np.uint8]

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


def read_only(image: Image) -> Image:
    """Frames are shared by every consumer: nobody may draw on the original."""
    image.flags.writeable = False
    return image


# the frame headers (start of frame) of every JPEG process: 0xC0 to 0xCF but DHT, JPG, DAC
_SOF_MARKERS: Final = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_SOS: Final = 0xDA


def is_jpeg(data: bytes) -> bool:
    """Whether ``data`` is built as a JPEG up to its first scan: the start marker, marker
    segments whose lengths add up, a frame header with a size, then a scan header and some
    scan data. A few microseconds and no decode: garbage that merely starts as a JPEG does
    fails, and the pixels of a good one are still made only when somebody looks."""
    size = len(data)
    if not data.startswith(b"\xff\xd8"):
        return False
    pos, has_frame = 2, False
    while pos + 4 <= size:
        if data[pos] != 0xFF:
            return False
        marker = data[pos + 1]
        if marker == 0xFF:  # a fill byte before a marker
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a segment
            pos += 2
            continue
        if marker in (0xD8, 0xD9):  # a second start, or the end before any picture
            return False
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        end = pos + 2 + length
        if length < 2 or end > size:
            return False
        if marker in _SOF_MARKERS:
            if length < 8:
                return False
            height = int.from_bytes(data[pos + 5 : pos + 7], "big")
            width = int.from_bytes(data[pos + 7 : pos + 9], "big")
            components = data[pos + 9]
            if not (height and width and 1 <= components <= 4 and length == 8 + 3 * components):
                return False
            has_frame = True
        elif marker == _SOS:
            components = data[pos + 4] if length > 2 else 0
            return (
                has_frame and 1 <= components <= 4 and length == 6 + 2 * components and end < size
            )
        pos = end
    return False


def decode_jpeg(data: bytes) -> Callable[[], Image]:
    def convert() -> Image:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise ImageError("corrupt JPEG frame from camera")
        return read_only(np.asarray(image, dtype=np.uint8))

    return convert


def convert_av(frame: av.VideoFrame) -> Callable[[], Image]:
    def convert() -> Image:
        return read_only(np.asarray(frame.to_ndarray(format="bgr24"), dtype=np.uint8))

    return convert


@dataclass(frozen=True, slots=True)
class SourceStats:
    """Counters of one camera since it was created.

    ``decoded`` counts the pictures that became frames (decoded by PyAV; for MJPEG and USB,
    taken to be converted on first use), so it equals ``frames_read``; ``skipped`` the
    pictures received and not decoded while the scene was still (``decoded + skipped`` is
    what the camera sent). ``still`` is what :meth:`CameraSource.set_still` last said;
    ``skipping`` whether the reader is decoding less right now (still, or woken and waiting
    for the next key frame); ``wake_latency`` the seconds from the last ``set_still(False)``
    that ended a skipping spell to the first fully decoded frame after it (None before one).
    """

    frames_read: int
    reconnects: int
    last_frame_at: float | None
    decode_errors: int
    fps: float
    decoded: int = 0
    skipped: int = 0
    still: bool = False
    skipping: bool = False
    wake_latency: float | None = None
    idle_decode: str = "keyframes"


class SessionEnd(Exception):
    """One connection to the camera ended; ``str()`` is the (masked) reason."""

    def __init__(self, reason: str, *, stalled: bool = False) -> None:
        super().__init__(reason)
        self.stalled = stalled


class Stopped(Exception):
    """stop() was called while connecting."""
