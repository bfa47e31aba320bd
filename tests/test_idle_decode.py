"""Idle decoding: ``CameraSource.set_still`` and ``idle_decode`` against real streams.

A clip of 15 fps with a key frame every 30 frames (2 s), played from a file and served over
RTSP; an MJPEG server for the intra-only case. The assertions count pictures (decoded and
skipped, frame ``seq``), not seconds: decoding key frames only means one picture decoded
per 30 received, and waking up means no picture skipped after the next key frame.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from upr_faces_dev.clips import Timeline, build_clip
from upr_faces_engine.sources import (
    IDLE_DECODE_MODES,
    CameraSource,
    Frame,
    SourceState,
    SourceStats,
)

from .streams import jpeg_frames_from_clip, mjpeg_server, rtsp_server

pytestmark = pytest.mark.usefixtures("socket_enabled")

FPS = 15
GOP = 30  # frames between key frames: 2 s
# read_timeout shorter than a GOP: a camera decoding key frames only must not look stalled
FAST: dict[str, Any] = {"read_timeout": 1.5, "retry_backoff": 0.2, "max_backoff": 1.0}

type Cameras = Callable[..., CameraSource]


@pytest.fixture(scope="module")
def gop_clip(tmp_path_factory: pytest.TempPathFactory) -> Timeline:
    """8 s (4 GOPs of 30 frames) of a softly moving background, 640x360 at 15 fps."""
    path = tmp_path_factory.mktemp("idle") / "gop30.mp4"
    return build_clip(path, [], gap=8.0, fps=FPS, size=(640, 360), gop_seconds=GOP / FPS)


@pytest.fixture
def cameras() -> Iterator[Cameras]:
    """Started CameraSources, stopped (and checked stopped) afterwards."""
    made: list[CameraSource] = []

    def make(source: str, **options: Any) -> CameraSource:
        camera = CameraSource(source, **{**FAST, **options})
        made.append(camera)
        camera.start()
        return camera

    yield make
    for camera in made:
        camera.stop(timeout=3.0)
        assert not camera.running, f"{camera} did not stop"


def _states(camera: CameraSource) -> list[SourceState]:
    seen: list[SourceState] = []
    camera.on_state(lambda state, _reason: seen.append(state))
    return seen


def _next(camera: CameraSource, frame: Frame, timeout: float = 6.0) -> Frame:
    newer = camera.wait_newer(frame.seq, timeout=timeout)
    assert newer is not None, f"{camera}: no frame after seq {frame.seq} in {timeout} s"
    return newer


def _advance(camera: CameraSource, frame: Frame, frames: int, timeout: float) -> Frame:
    """Wait until ``frames`` more frames than ``frame`` were delivered (at 15 fps, not one
    per key frame: ``timeout`` is far shorter than ``frames`` GOPs)."""
    deadline = time.monotonic() + timeout
    newest = frame
    while newest.seq < frame.seq + frames:
        left = deadline - time.monotonic()
        newer = camera.wait_newer(newest.seq, timeout=max(left, 0.01))
        assert newer is not None, f"{camera}: {newest.seq - frame.seq} of {frames} frames"
        newest = newer
    return newest


def _still_frames(camera: CameraSource, count: int) -> list[tuple[Frame, SourceStats]]:
    """Set the camera still and collect ``count`` frames after the first one delivered
    while skipping, each with the counters read at once."""
    first = camera.wait_newer(0, timeout=8)
    assert first is not None
    camera.set_still(True)
    frame = first
    while not camera.stats.skipping:
        frame = _next(camera, frame)
    frame = camera.latest() or frame  # every frame after this one is a key frame
    seen: list[tuple[Frame, SourceStats]] = []
    for _ in range(count):
        frame = _next(camera, frame)
        seen.append((frame, camera.stats))
    return seen


@pytest.fixture(params=["file", "rtsp"])
def source(request: pytest.FixtureRequest, gop_clip: Timeline) -> Iterator[str]:
    """The clip as a file:// source, then as an RTSP stream."""
    if request.param == "file":
        yield f"file://{gop_clip.path}"
        return
    with rtsp_server(gop_clip.path) as server:
        yield server.url


# --------------------------------------------------------------------------- H.264


def test_options() -> None:
    assert IDLE_DECODE_MODES == ("keyframes", "reduced", "full")
    assert CameraSource("file:///x.mp4").idle_decode == "keyframes"
    with pytest.raises(ValueError, match="idle_decode"):
        CameraSource("file:///x.mp4", idle_decode="sometimes")
    camera = CameraSource("file:///x.mp4", idle_decode="full")
    camera.set_still(True)  # allowed before start, from any thread
    assert camera.still
    assert camera.stats.still
    assert not camera.stats.skipping
    assert camera.stats.idle_decode == "full"


def test_still_decodes_key_frames_only(source: str, cameras: Cameras) -> None:
    camera = cameras(source)
    states = _states(camera)
    seen = _still_frames(camera, 3)
    # Each frame while still is the next key frame: consecutive seq, GOP - 1 pictures
    # skipped between two (the counters are read just after the frame: allow one more).
    for (a, stats_a), (b, stats_b) in itertools.pairwise(seen):
        assert b.seq == a.seq + 1
        assert stats_b.decoded == stats_a.decoded + 1
        assert GOP - 2 <= stats_b.skipped - stats_a.skipped <= GOP
    (first, at_first), (last, at_last) = seen[0], seen[-1]
    decoded = at_last.decoded - at_first.decoded
    received = decoded + at_last.skipped - at_first.skipped
    assert 1 / (GOP + 2) <= decoded / received <= 1 / (GOP - 2)
    # About fps / GOP pictures a second (0.5): two GOPs took about 4 s of clip time.
    rate = decoded / (last.captured_at - first.captured_at)
    assert FPS / GOP / 2 <= rate <= FPS / GOP * 2  # a file is not rushed through
    assert camera.state is SourceState.STREAMING
    assert SourceState.OFFLINE not in states  # although read_timeout (1.5 s) < a GOP (2 s)
    assert at_last.still
    assert at_last.skipping
    assert at_last.frames_read == at_last.decoded
    latest = camera.latest()
    assert latest is not None
    assert latest.seq >= last.seq
    assert latest.image.shape == (360, 640, 3)  # a key frame decodes to a whole picture


def test_waking_resumes_full_decoding_within_one_gop(source: str, cameras: Cameras) -> None:
    camera = cameras(source)
    seen = _still_frames(camera, 1)
    frame, _stats = seen[-1]
    # Wake mid-GOP: some pictures were skipped since the last key frame.
    while camera.stats.skipped - _stats.skipped < 3:
        time.sleep(0.05)
    before = camera.stats
    camera.set_still(False)
    woke = _next(camera, frame)
    at_wake = camera.stats
    assert woke.seq == frame.seq + 1
    # Not the picture after the wake (its reference was never decoded): the next key
    # frame, GOP - 1 pictures after the last one, so within one GOP.
    assert GOP - 2 <= at_wake.skipped - _stats.skipped <= GOP
    assert at_wake.skipped > before.skipped
    assert not at_wake.skipping
    assert not at_wake.still
    assert at_wake.wake_latency is not None
    # From there on every picture is decoded: across the next key frame, nothing skipped.
    _advance(camera, woke, GOP + 5, timeout=8)
    after = camera.stats
    assert after.skipped == at_wake.skipped
    assert after.decoded - at_wake.decoded >= GOP + 5
    assert camera.state is SourceState.STREAMING


def test_waking_on_a_key_frame_is_immediate(gop_clip: Timeline, cameras: Cameras) -> None:
    """As the motion gate does it: a still camera's key frame shows motion, the gate says
    so at once, and the very next picture is decoded (nothing to wait for)."""
    camera = cameras(f"file://{gop_clip.path}")
    immediate = 0
    for _ in range(3):  # the reader might slip a packet in before the call: try again
        seen = _still_frames(camera, 1)
        frame, at_frame = seen[-1]
        camera.set_still(False)
        woke = _next(camera, frame)
        assert woke.seq == frame.seq + 1
        if camera.stats.skipped == at_frame.skipped:
            immediate += 1
            latency = camera.stats.wake_latency
            assert latency is not None
            assert latency < 1.0  # one frame (1/15 s), not a GOP (2 s)
            _advance(camera, woke, 5, timeout=2)
            assert camera.stats.skipped == at_frame.skipped
            break
    assert immediate


def test_full_never_skips(gop_clip: Timeline, cameras: Cameras) -> None:
    camera = cameras(f"file://{gop_clip.path}", idle_decode="full")
    first = camera.wait_newer(0, timeout=8)
    assert first is not None
    camera.set_still(True)
    _advance(camera, first, GOP + 5, timeout=8)
    stats = camera.stats
    assert stats.skipped == 0
    assert stats.still
    assert not stats.skipping
    assert stats.decoded >= GOP + 6


def test_reduced_on_h264_is_keyframes(gop_clip: Timeline, cameras: Cameras) -> None:
    camera = cameras(f"file://{gop_clip.path}", idle_decode="reduced")
    seen = _still_frames(camera, 2)
    (a, stats_a), (b, stats_b) = seen
    assert b.seq == a.seq + 1
    assert GOP - 2 <= stats_b.skipped - stats_a.skipped <= GOP


def test_still_rtsp_stall_is_still_detected(gop_clip: Timeline, cameras: Cameras) -> None:
    """Packets, not pictures, tell a live camera from a dead one."""
    with rtsp_server(gop_clip.path) as server:
        camera = cameras(server.url, read_timeout=1.0)
        _still_frames(camera, 1)
        server.pause()
        try:
            started = time.monotonic()
            while camera.state is not SourceState.OFFLINE:
                assert time.monotonic() - started < 4, "a frozen camera stayed streaming"
                time.sleep(0.05)
            assert camera.reason == "no frame for 1 s"
        finally:
            server.resume()


# --------------------------------------------------------------------------- MJPEG


@pytest.fixture(scope="module")
def jpegs(gop_clip: Timeline) -> list[bytes]:
    return jpeg_frames_from_clip(Path(gop_clip.path), count=15, step=4)


def test_mjpeg_reduced_takes_one_picture_a_second(jpegs: list[bytes], cameras: Cameras) -> None:
    with mjpeg_server(jpegs, fps=FPS) as server:
        camera = cameras(server.url, idle_decode="reduced")
        seen = _still_frames(camera, 2)
        (a, stats_a), (b, stats_b) = seen
        assert b.seq == a.seq + 1
        # ~15 parts a second arrive, one is taken: the others are never decoded.
        skipped = stats_b.skipped - stats_a.skipped
        assert FPS // 2 <= skipped <= FPS * 2
        assert not b.converted
        assert camera.state is SourceState.STREAMING
        camera.set_still(False)
        woke = _next(camera, b)
        at_wake = camera.stats
        _advance(camera, woke, 2 * FPS, timeout=4)  # 2 s at 15 fps, not 30 s at one
        stats = camera.stats
        assert stats.skipped == at_wake.skipped
        assert stats.wake_latency is not None
        assert not stats.skipping


def test_mjpeg_keyframes_is_full(jpegs: list[bytes], cameras: Cameras) -> None:
    """Every MJPEG part is a key frame: there is nothing to skip in "keyframes"."""
    with mjpeg_server(jpegs, fps=FPS) as server:
        camera = cameras(server.url)
        first = camera.wait_newer(0, timeout=5)
        assert first is not None
        camera.set_still(True)
        _advance(camera, first, 20, timeout=4)
        assert camera.stats.skipped == 0
        assert camera.stats.still


def test_the_pushed_camera_chooses_its_idle_decoding(tmp_path: Path) -> None:
    """A camera of the pushed configuration names its mode, or leaves the default (key
    frames only, and nothing written back); any other value is refused, naming the field."""
    from upr_faces_engine.server.config import ConfigError, parse_config

    def config(**camera: str) -> dict[str, object]:
        return {
            "gallery": {"source": "folder", "folder": str(tmp_path)},
            "models": {"pack": "buffalo_l"},
            "cameras": [{"id": "c", "name": "C", "source": "rtsp://127.0.0.1/x", **camera}],
        }

    assert parse_config(config(), []).cameras[0].idle_decode is None
    assert "idle_decode" not in parse_config(config(), []).as_dict()["cameras"][0]
    full = parse_config(config(idle_decode="full"), [])
    assert full.cameras[0].idle_decode == "full"
    assert full.as_dict()["cameras"][0]["idle_decode"] == "full"
    with pytest.raises(ConfigError) as refused:
        parse_config(config(idle_decode="sometimes"), [])
    assert "cameras[0].idle_decode" in str(refused.value)
