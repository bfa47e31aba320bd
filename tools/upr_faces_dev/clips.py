"""Demo and test clips: photos shown one after another in a 720p H.264 video.

Each photo is letterboxed onto the canvas and slides slowly sideways (a real camera never
shows a perfectly still image), with gaps of a softly moving, faceless background between
photos. The clip is encoded with PyAV's bundled ``libx264``: no B-frames (``zerolatency``,
like most IP cameras) and a keyframe every ``gop_seconds`` so an RTSP client joining
mid-stream waits at most that long for a picture.

The returned :class:`Timeline` says which photo is on screen when; ``scripts/make_clip``
prints it as JSON.

This module imports nothing from the rest of the package so that ``scripts/make_clip`` can
run it as a plain script.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av
import cv2
import numpy as np
from av.container import OutputContainer
from av.video.stream import VideoStream
from numpy.typing import NDArray

DEFAULT_SIZE = (1280, 720)
DEFAULT_FPS = 15
_SLIDE_FRACTION = 0.06  # of the canvas width, over one photo's time on screen
_NOISE_TILES = 8


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch of the clip: one photo, or a gap without a face.

    Frames ``first_frame`` to ``last_frame`` (inclusive) show it; in seconds from the
    clip's start it lasts from ``start`` (inclusive) to ``end`` (exclusive).
    """

    kind: Literal["photo", "gap"]
    start: float
    end: float
    first_frame: int
    last_frame: int
    photo: str | None = None


@dataclass(frozen=True, slots=True)
class Timeline:
    """What a clip shows, and when."""

    path: str
    fps: int
    width: int
    height: int
    frames: int
    duration: float
    segments: tuple[Segment, ...]

    def photo_at(self, seconds: float) -> str | None:
        """The photo on screen ``seconds`` after the start (looping), or None in a gap."""
        position = seconds % self.duration
        for segment in self.segments:
            if segment.start <= position < segment.end:
                return segment.photo
        return None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        data = asdict(self)
        data["segments"] = [asdict(segment) for segment in self.segments]
        return data

    def to_json(self) -> str:
        """The timeline as one JSON document."""
        return json.dumps(self.as_dict(), indent=2)


def _background(width: int, height: int) -> NDArray[np.uint8]:
    """A soft grey-blue vertical gradient: plain, and certainly without a face."""
    ramp = np.linspace(70.0, 130.0, height, dtype=np.float32)[:, None]
    base = np.empty((height, width, 3), dtype=np.float32)
    base[..., 0] = ramp + 20.0
    base[..., 1] = ramp + 5.0
    base[..., 2] = ramp
    return base.astype(np.uint8)


def _noise_tiles(width: int, height: int, seed: int) -> list[NDArray[np.int16]]:
    """A few low-amplitude noise images, cycled so no two neighbouring frames are equal."""
    rng = np.random.default_rng(seed)
    return [
        rng.integers(-4, 5, size=(height, width, 1), dtype=np.int16) for _ in range(_NOISE_TILES)
    ]


def _fit(photo: NDArray[np.uint8], width: int, height: int) -> NDArray[np.uint8]:
    """Scale ``photo`` to fit inside (width, height) keeping its aspect ratio."""
    scale = min(width / photo.shape[1], height / photo.shape[0])
    new_size = (max(1, round(photo.shape[1] * scale)), max(1, round(photo.shape[0] * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return np.asarray(cv2.resize(photo, new_size, interpolation=interpolation), dtype=np.uint8)


def _read_photo(path: Path) -> NDArray[np.uint8]:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot read photo {path}")
    return np.asarray(image, dtype=np.uint8)


def _open_encoder(
    out: Path, width: int, height: int, fps: int, gop: int
) -> tuple[OutputContainer, VideoStream]:
    container = av.open(str(out), mode="w", options={"movflags": "+faststart"})
    try:
        stream = container.add_stream(
            "h264",  # FFmpeg's default H.264 encoder: libx264 in PyAV's wheels
            rate=fps,
            options={
                "preset": "veryfast",
                "tune": "zerolatency",
                "crf": "26",
                # One slice per picture, a keyframe every gop frames, no B-frames.
                "x264-params": (
                    f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0:sliced-threads=0"
                ),
            },
        )
    except (av.error.FFmpegError, ValueError) as err:  # pragma: no cover - wheel without x264
        container.close()
        raise RuntimeError(f"this PyAV build cannot encode H.264 (libx264): {err}") from err
    stream.width = width
    stream.height = height
    stream.pix_fmt = "yuv420p"
    stream.codec_context.gop_size = gop
    stream.codec_context.time_base = Fraction(1, fps)
    return container, stream


def build_clip(
    out: Path | str,
    photos: Sequence[Path | str],
    *,
    seconds_per_photo: float = 3.0,
    gap: float = 2.0,
    fps: int = DEFAULT_FPS,
    size: tuple[int, int] = DEFAULT_SIZE,
    gop_seconds: float = 1.0,
    seed: int = 0,
) -> Timeline:
    """Write an H.264 mp4 showing each photo for ``seconds_per_photo``, each followed by
    ``gap`` seconds of background, at ``fps`` frames per second and ``size`` (w, h)."""
    out = Path(out)
    width, height = size
    if width % 2 or height % 2:
        raise ValueError(f"size must be even for yuv420p, got {width}x{height}")
    if fps <= 0 or seconds_per_photo <= 0 or gap < 0:
        raise ValueError("fps and seconds_per_photo must be positive and gap not negative")
    if not photos and gap <= 0:
        raise ValueError("nothing to show: no photos and no gap")
    images = [(str(path), _read_photo(Path(path))) for path in photos]

    # Photos fill up to 90% of the canvas height and 80% of its width, leaving room to slide.
    box_w, box_h = round(width * 0.8), round(height * 0.9)
    background = _background(width, height)
    noise = _noise_tiles(width, height, seed)
    photo_frames = max(1, round(seconds_per_photo * fps))
    gap_frames = round(gap * fps)
    gop = max(1, round(gop_seconds * fps))

    segments: list[Segment] = []
    index = 0
    container, stream = _open_encoder(out, width, height, fps, gop)
    try:

        def emit(canvas: NDArray[np.uint8]) -> None:
            nonlocal index
            frame = av.VideoFrame.from_ndarray(canvas, format="bgr24")
            frame.pts = index
            frame.time_base = Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
            index += 1

        def textured(frame_index: int) -> NDArray[np.uint8]:
            # A faint diagonal light band drifts across the background.
            canvas = background.astype(np.int16) + noise[frame_index % len(noise)]
            band_x = (frame_index * 7) % (width + 200) - 100
            canvas[:, max(0, band_x) : max(0, band_x + 60)] += 12
            return np.clip(canvas, 0, 255).astype(np.uint8)

        def add_gap() -> None:
            if gap_frames <= 0:
                return
            first = index
            for _ in range(gap_frames):
                emit(textured(index))
            segments.append(Segment("gap", first / fps, index / fps, first, index - 1))

        if not images:
            add_gap()
        for name, photo in images:
            fitted = _fit(photo, box_w, box_h)
            ph, pw = fitted.shape[:2]
            slide = round(width * _SLIDE_FRACTION)
            x0 = (width - pw) // 2 - slide // 2
            y0 = (height - ph) // 2
            first = index
            for step in range(photo_frames):
                canvas = textured(index)
                x = x0 + round(slide * step / max(1, photo_frames - 1))
                canvas[y0 : y0 + ph, x : x + pw] = fitted
                emit(canvas)
            segments.append(Segment("photo", first / fps, index / fps, first, index - 1, name))
            add_gap()
        for packet in stream.encode(None):
            container.mux(packet)
    finally:
        container.close()
    return Timeline(
        path=str(out),
        fps=fps,
        width=width,
        height=height,
        frames=index,
        duration=index / fps,
        segments=tuple(segments),
    )


def still_scene_clip(
    out: Path | str,
    *,
    seconds: float = 8.0,
    fps: int = DEFAULT_FPS,
    size: tuple[int, int] = DEFAULT_SIZE,
    gop: int = DEFAULT_FPS,
    grain: float = 6.0,
    seed: int = 0,
) -> Path:
    """Write an H.264 mp4 of a camera watching an empty room: one still scene (a gradient
    and some boxes) under fresh sensor noise of ``grain`` (standard deviation, in grey
    levels) every frame, a key frame every ``gop`` frames. The noise gives the predicted
    pictures the weight they have in a real camera's stream (about 4 Mbit/s at 720p 15 fps
    with the default grain, 1 Mbit/s with 5), which a clean synthetic picture lacks."""
    out = Path(out)
    width, height = size
    if width % 2 or height % 2:
        raise ValueError(f"size must be even for yuv420p, got {width}x{height}")
    if fps <= 0 or seconds <= 0 or gop <= 0 or grain < 0:
        raise ValueError("fps, seconds and gop must be positive and grain not negative")
    rng = np.random.default_rng(seed)
    scene = _background(width, height).astype(np.int16)
    for _ in range(40):
        x = int(rng.integers(0, max(1, width - width // 6)))
        y = int(rng.integers(0, max(1, height - height // 5)))
        w = int(rng.integers(width // 64, width // 6))
        h = int(rng.integers(height // 36, height // 5))
        scene[y : y + h, x : x + w] += rng.integers(-60, 60, size=3).astype(np.int16)
    container, stream = _open_encoder(out, width, height, fps, gop)
    try:
        for index in range(max(1, round(seconds * fps))):
            noisy = scene + rng.normal(0.0, grain, (height, width, 1)).astype(np.int16)
            picture = np.clip(noisy, 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(picture, format="bgr24")
            frame.pts = index
            frame.time_base = Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    finally:
        container.close()
    return out


def faces_media(
    faces: Path, work: Path, *, clip_name: str, seconds_per_photo: float, gap: float
) -> tuple[Path, Path, dict[str, Path]]:
    """A gallery folder of every deepface person in ``faces`` (all their photos but the
    first) and a clip of their first photos: ``(work/clip_name, work/gallery, firsts)``,
    ``firsts`` mapping each person to the photo the camera shows."""
    gallery = work / "gallery"
    firsts: dict[str, Path] = {}
    for photo in sorted(faces.glob("deepface_*")):
        identity = "_".join(photo.name.split("_")[:2])
        if identity not in firsts:
            firsts[identity] = photo
            continue
        (gallery / identity).mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, gallery / identity)
    clip = work / clip_name
    build_clip(clip, list(firsts.values()), seconds_per_photo=seconds_per_photo, gap=gap)
    return clip, gallery, firsts


def bench_media(faces: Path, work: Path) -> tuple[Path, Path]:
    """The benches' clip (2 s a face, 1 s apart) and gallery: ``(clip, gallery)``."""
    clip, gallery, _firsts = faces_media(
        faces, work, clip_name="faces.mp4", seconds_per_photo=2.0, gap=1.0
    )
    return clip, gallery


def demo_media(faces: Path, work: Path) -> tuple[Path, Path]:
    """The demo's gallery folder (with a reference and a French name for each person) and
    its camera clip (the first photos, 3 s each, 2 s apart): ``(gallery, clip)``."""
    clip, gallery, firsts = faces_media(
        faces, work, clip_name="camera.mp4", seconds_per_photo=3.0, gap=2.0
    )
    for identity in firsts:
        (gallery / identity / "person.json").write_text(
            json.dumps(
                {
                    "reference": f"UPR-2026-{identity[-1]}",
                    "display_name": f"Personne {identity[-1]}",
                }
            ),
            encoding="utf-8",
        )
    return gallery, clip


def main(argv: Sequence[str] | None = None) -> int:
    """``scripts/make_clip OUT.mp4 PHOTO... [--seconds-per-photo 3] [--gap 2] [--fps 15]``."""
    parser = argparse.ArgumentParser(
        prog="make_clip",
        description="Build a 720p H.264 clip from photos; print its timeline as JSON.",
    )
    parser.add_argument("out", type=Path, help="the mp4 to write")
    parser.add_argument("photos", type=Path, nargs="*", help="photos, shown in this order")
    parser.add_argument("--seconds-per-photo", type=float, default=3.0)
    parser.add_argument("--gap", type=float, default=2.0, help="seconds without a face")
    parser.add_argument("--fps", type=int, default=DEFAULT_FPS)
    parser.add_argument("--width", type=int, default=DEFAULT_SIZE[0])
    parser.add_argument("--height", type=int, default=DEFAULT_SIZE[1])
    parser.add_argument("--gop", type=float, default=1.0, help="seconds between keyframes")
    args = parser.parse_args(argv)
    try:
        timeline = build_clip(
            args.out,
            args.photos,
            seconds_per_photo=args.seconds_per_photo,
            gap=args.gap,
            fps=args.fps,
            size=(args.width, args.height),
            gop_seconds=args.gop,
        )
    except (ValueError, RuntimeError, OSError) as err:
        print(f"make_clip: {err}", file=sys.stderr)
        return 2
    print(timeline.to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
