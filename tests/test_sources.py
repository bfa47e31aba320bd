"""Camera sources against real streams on 127.0.0.1: a GStreamer RTSP server, an aiohttp
MJPEG server, recorded clips; plus the failure paths (dead, silent, killed servers)."""

from __future__ import annotations

import itertools
import json
import logging
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from upr_faces_dev.clips import Timeline
from upr_faces_engine.errors import ImageError
from upr_faces_engine.sources import (
    CameraSource,
    Frame,
    InvalidSourceError,
    SourceKind,
    SourceState,
    UsbCamera,
    canonical_source,
    mask_text,
    mask_url,
    parse_source,
    scan_usb,
    split_credentials,
    unmask_source,
    usb,
)
from upr_faces_engine.sources.stream import decode_jpeg, is_jpeg
from upr_faces_engine.sources.usb import _sys_name

from .streams import (
    ROOT,
    MjpegServer,
    closed_port,
    encode_jpeg,
    hang_up_proxy,
    jpeg_frames_from_photos,
    make_clip,
    mjpeg_server,
    rtsp_server,
    silent_tcp_server,
    undecodable_jpegs,
)

pytestmark = pytest.mark.usefixtures("socket_enabled")

FAST: dict[str, Any] = {"read_timeout": 1.5, "retry_backoff": 0.2, "max_backoff": 1.0}

type Cameras = Callable[..., CameraSource]


# --------------------------------------------------------------------------- fixtures


def _pattern(path: Path, colour: tuple[int, int, int], label: str) -> Path:
    image = np.full((480, 640, 3), colour, dtype=np.uint8)
    cv2.putText(image, label, (60, 260), cv2.FONT_HERSHEY_SIMPLEX, 4, (255, 255, 255), 8)
    cv2.imwrite(str(path), image)
    return path


@pytest.fixture(scope="session")
def patterns(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two synthetic 'photos' (the transport tests need pixels, not faces)."""
    folder = tmp_path_factory.mktemp("patterns")
    return [
        _pattern(folder / "red.png", (0, 0, 200), "A"),
        _pattern(folder / "green.png", (0, 160, 0), "B"),
    ]


@pytest.fixture(scope="session")
def clip(tmp_path_factory: pytest.TempPathFactory, patterns: list[Path]) -> Timeline:
    """A 4 s 720p clip: two patterns of 1.5 s, each followed by 0.5 s of background."""
    return make_clip(tmp_path_factory.mktemp("clips") / "clip.mp4", patterns, seconds=1.5, gap=0.5)


@pytest.fixture(scope="session")
def short_clip(tmp_path_factory: pytest.TempPathFactory, patterns: list[Path]) -> Timeline:
    """A 1 s clip (15 frames) to watch a file source loop."""
    return make_clip(
        tmp_path_factory.mktemp("clips") / "short.mp4", patterns[:1], seconds=0.6, gap=0.4
    )


@pytest.fixture
def cameras() -> Iterator[Cameras]:
    """Make started CameraSources; all stopped (and checked stopped) afterwards."""
    made: list[CameraSource] = []

    def make(source: str, **options: float) -> CameraSource:
        camera = CameraSource(source, **{**FAST, **options})
        made.append(camera)
        camera.start()
        return camera

    yield make
    for camera in made:
        camera.stop(timeout=3.0)
        assert not camera.running, f"{camera} did not stop"


def wait_state(camera: CameraSource, state: SourceState, timeout: float) -> float:
    """Seconds until ``camera`` reaches ``state``; fails after ``timeout``."""
    start = time.monotonic()
    while camera.state is not state:
        if time.monotonic() - start > timeout:
            pytest.fail(f"{camera} not {state} after {timeout} s (reason: {camera.reason})")
        time.sleep(0.02)
    return time.monotonic() - start


def collect_states(camera: CameraSource) -> list[SourceState]:
    seen: list[SourceState] = []
    camera.on_state(lambda state, _reason: seen.append(state))
    return seen


# --------------------------------------------------------------------------- parsing & masking


@pytest.mark.parametrize(
    ("text", "kind", "device"),
    [
        ("usb:0", SourceKind.USB, 0),
        ("USB:12", SourceKind.USB, 12),
        ("/dev/video3", SourceKind.USB, 3),
        (
            "/dev/v4l/by-id/usb-cam-video-index0",
            SourceKind.USB,
            "/dev/v4l/by-id/usb-cam-video-index0",
        ),
        ("rtsp://cam.local:554/Streaming/101", SourceKind.RTSP, None),
        ("rtsps://u:p@cam/s", SourceKind.RTSP, None),
        ("http://10.0.0.2/video.mjpg", SourceKind.HTTP, None),
        ("https://cam/mjpeg", SourceKind.HTTP, None),
        (" file:///clips/door.mp4 ", SourceKind.FILE, None),
    ],
)
def test_parse_source_accepts(text: str, kind: SourceKind, device: int | str | None) -> None:
    spec = parse_source(text)
    assert spec.kind is kind
    assert spec.device == device
    if kind is SourceKind.FILE:
        assert spec.path == Path("/clips/door.mp4")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("usb:x", "bad USB camera index"),
        ("usb:-1", "bad USB camera index"),
        ("usb:99", "bad USB camera index"),
        ("/dev/videoX", "bad video device"),
        ("ftp://cam/x", "unknown camera source 'ftp://'"),
        ("cam.local", "unknown camera source"),
        ("rtsp:///nohost", "no host"),
        ("http://u:secret@cam:99999/x", "bad camera address"),
        ("file://", "needs a path"),
        ("/dev/sda", "not a video device"),
        ("/dev/v4l/../sda", "not a video device"),
        ("rtsp://cam/a\nb", "control characters"),
        ("rtsp://cam/a\x00b", "control characters"),
    ],
)
def test_parse_source_rejects(text: str, message: str) -> None:
    with pytest.raises(InvalidSourceError, match=message) as caught:
        parse_source(text)
    assert isinstance(caught.value, ValueError)
    assert "secret" not in str(caught.value)


def test_mask_url() -> None:
    assert mask_url("rtsp://admin:s3cr%40t@cam:554/s?x=1") == "rtsp://admin:***@cam:554/s?x=1"
    assert (
        mask_url("http://cam/video?user=a&password=p%20w") == "http://cam/video?user=a&password=***"
    )
    assert mask_url("rtsp://onlyuser@cam/s") == "rtsp://onlyuser@cam/s"
    assert mask_url("usb:0") == "usb:0"
    text = "error opening rtsp://admin:s3cr%40t@cam/s: s3cr@t rejected"
    masked = mask_text(text, "rtsp://admin:s3cr%40t@cam/s")
    assert "s3cr" not in masked
    spec = parse_source("rtsp://admin:hunter2@cam/s")
    assert "hunter2" not in repr(spec) + str(spec)
    camera = CameraSource(spec)
    assert "hunter2" not in repr(camera) + str(camera) + camera.name
    assert camera.state is SourceState.STOPPED


@pytest.mark.parametrize(
    ("typed", "password", "host", "canonical"),
    [
        ("rtsp://admin:pa#ss@cam:554/s1", "pa#ss", "cam", "rtsp://admin:pa%23ss@cam:554/s1"),
        ("rtsp://admin:pa/ss@cam/s1", "pa/ss", "cam", "rtsp://admin:pa%2Fss@cam/s1"),
        ("http://admin:pa?ss@10.0.0.2/v", "pa?ss", "10.0.0.2", "http://admin:pa%3Fss@10.0.0.2/v"),
        ("rtsp://admin:p@ss@cam/s1", "p@ss", "cam", "rtsp://admin:p%40ss@cam/s1"),
        ("rtsp://admin:p%40ss@cam/s1", "p%40ss", "cam", "rtsp://admin:p%40ss@cam/s1"),
        ("rtsps://u:100%@[::1]:322/s", "100%", "[::1]", "rtsps://u:100%25@[::1]:322/s"),
        ("rtsp://cam/path@with-at", None, None, "rtsp://cam/path@with-at"),
    ],
)
def test_credentials_are_taken_out_first(
    typed: str, password: str | None, host: str | None, canonical: str
) -> None:
    """Passwords are typed as they are: ``#``, ``/``, ``?`` and ``@`` stay in the password,
    are stored percent-encoded and are never shown, in either form."""
    found = split_credentials(typed)
    if password is None:
        assert found is None
    else:
        assert found is not None
        assert found.password == password
        assert found.rest.startswith(str(host))
    assert canonical_source(typed) == canonical
    spec = parse_source(typed)
    assert spec.url == canonical
    if password is not None:
        for shown in (mask_url(typed), mask_url(canonical), spec.masked, repr(spec)):
            assert ":***@" in shown
            assert password not in shown.replace(":***@", "")
        text = f"cannot open {typed} ({canonical}): {password} refused"
        assert password not in mask_text(text, typed)


def test_no_password_shows_whatever_it_holds() -> None:
    """The fuzz of the fault-injection run: passwords of printable characters, the URL
    characters among them, in RTSP and HTTP sources: none is ever shown."""
    import random

    rng = random.Random(1234)
    alphabet = "abcXYZ019#/?@:%&=+ !$'()*,;[]~-._"
    leaked = []
    for case in range(3000):
        password = "".join(rng.choice(alphabet) for _ in range(rng.randint(4, 16)))
        password = "Z" + password.replace("***", "**") + "9"  # not the mask itself
        scheme = ("rtsp", "rtsps", "http", "https")[case % 4]
        typed = f"{scheme}://viewer:{password}@cam{case}.example:554/stream?x=1"
        shown = [mask_url(typed), mask_text(f"error {typed} {password}", typed)]
        try:
            spec = parse_source(typed)
        except InvalidSourceError as err:
            shown.append(str(err))
        else:
            shown += [spec.masked, repr(spec), mask_url(spec.url)]
            assert split_credentials(spec.url) is not None
        if any(password in text for text in shown):
            leaked.append(typed)
    assert leaked == []


def test_a_stored_password_never_goes_to_another_host() -> None:
    """``***`` left in place keeps the stored secret on the same scheme, host and port
    only; pointed elsewhere, the mask stays (and the source is refused)."""
    stored = "rtsp://admin:s3cret@cam1.lan:554/s1?token=t0k"
    assert unmask_source("rtsp://admin:***@cam1.lan:554/s1?token=***", stored) == stored
    assert (
        unmask_source("rtsp://admin:***@cam1.lan:554/s2?token=***", stored)
        == "rtsp://admin:s3cret@cam1.lan:554/s2?token=t0k"
    )
    for elsewhere in (
        "rtsp://admin:***@evil.example:554/s1",
        "rtsp://admin:***@cam1.lan:8554/s1",
        "rtsps://admin:***@cam1.lan:554/s1",
        "http://admin:***@cam1.lan:554/s1",
    ):
        result = unmask_source(elsewhere, stored)
        assert "s3cret" not in result, elsewhere
        assert "t0k" not in result, elsewhere
    assert unmask_source("rtsp://admin:***@cam1.lan:554/x", "rtsp://admin:p#w@cam1.lan:554/s") == (
        "rtsp://admin:p%23w@cam1.lan:554/x"
    )


def test_options_validated() -> None:
    with pytest.raises(ValueError, match="timeouts"):
        CameraSource("usb:0", read_timeout=0)
    with pytest.raises(ValueError, match="max_backoff"):
        CameraSource("usb:0", retry_backoff=5, max_backoff=1)


# --------------------------------------------------------------------------- frames


def test_frame_is_lazy_immutable_and_converted_once() -> None:
    calls: list[int] = []
    image = np.zeros((4, 6, 3), dtype=np.uint8)

    def convert() -> NDArray[np.uint8]:
        calls.append(1)
        time.sleep(0.05)
        return image

    frame = Frame(convert, captured_at=1.0, seq=7)
    assert "lazy" in repr(frame)
    results: list[NDArray[np.uint8]] = []
    threads = [threading.Thread(target=lambda: results.append(frame.image)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == [1]
    assert all(result is image for result in results)
    assert "6x4" in repr(frame)
    with pytest.raises(AttributeError):
        frame.seq = 8
    with pytest.raises(AttributeError):
        del frame.seq
    assert Frame(image, 2.0, 1).image is image


def test_corrupt_jpeg_raises_image_error() -> None:
    frame = Frame(decode_jpeg(b"\xff\xd8 not a jpeg"), 0.0, 1)
    with pytest.raises(ImageError):
        _ = frame.image


# --------------------------------------------------------------------------- files


def test_file_source_plays_at_clip_rate_and_loops(short_clip: Timeline, cameras: Cameras) -> None:
    camera = cameras(f"file://{short_clip.path}")
    first = camera.wait_newer(0, timeout=3)
    assert first is not None
    time.sleep(1.6)
    stats = camera.stats
    assert stats.frames_read > short_clip.frames  # looped: more frames than the clip holds
    assert 18 <= stats.frames_read <= 32  # about 15 fps for ~1.6 s
    assert 12 <= stats.fps <= 18
    assert camera.state is SourceState.STREAMING
    frame = camera.latest()
    assert frame is not None
    assert frame.image.shape == (720, 1280, 3)
    assert frame.image.dtype == np.uint8


def test_missing_file_is_offline(tmp_path: Path, cameras: Cameras) -> None:
    camera = cameras(f"file://{tmp_path}/nope.mp4")
    wait_state(camera, SourceState.OFFLINE, 2)
    assert camera.reason is not None
    assert "no such file" in camera.reason


# --------------------------------------------------------------------------- RTSP


def test_rtsp_source_streams_newest_frame(clip: Timeline, cameras: Cameras) -> None:
    with rtsp_server(clip.path) as server:
        camera = cameras(server.url)
        states = collect_states(camera)
        frame = camera.wait_newer(0, timeout=5)
        assert frame is not None
        assert camera.state is SourceState.STREAMING
        assert frame.image.shape == (720, 1280, 3)
        assert not frame.image.flags.writeable  # shared by every consumer
        # Latest frame only: a slow consumer sees seq jump, never a backlog.
        seqs = [frame.seq]
        for _ in range(3):
            time.sleep(0.35)
            newer = camera.wait_newer(seqs[-1], timeout=2)
            assert newer is not None
            seqs.append(newer.seq)
            assert not newer.converted  # nobody looked: never converted
        assert all(b - a >= 3 for a, b in itertools.pairwise(seqs))
        latest = camera.latest()
        assert latest is not None
        assert latest.seq == camera.stats.frames_read
        assert camera.stats.fps > 10
        assert camera.wait_newer(latest.seq + 10_000, timeout=0.1) is None
    assert states == [SourceState.STREAMING] or states[0] is SourceState.STREAMING


def test_rtsp_server_loops_the_clip(short_clip: Timeline, cameras: Cameras) -> None:
    with rtsp_server(short_clip.path) as server:
        camera = cameras(server.url)
        first = camera.wait_newer(0, timeout=5)
        assert first is not None
        time.sleep(2.6)  # the clip holds 1 s: this crosses the loop point twice or more
        frames = camera.stats.frames_read - first.seq
        assert frames > 2 * short_clip.frames
        assert 35 <= frames <= 43  # steady 15 fps across the loops: no burst, no gap
        assert camera.state is SourceState.STREAMING


def test_rtsp_credentials_are_used_and_never_shown(
    clip: Timeline, cameras: Cameras, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="upr_faces_engine.sources")
    with rtsp_server(clip.path, user="admin", password="Sup3rSecret") as server:
        good = cameras(server.url)
        bad = cameras(server.url_with("admin", "WrongPa55"))
        assert good.wait_newer(0, timeout=5) is not None
        wait_state(bad, SourceState.OFFLINE, 5)
        assert bad.reason is not None
        assert "unauthorized" in bad.reason.lower() or "401" in bad.reason
        shown = repr(good) + repr(bad) + str(bad.reason) + caplog.text
        for thread in threading.enumerate():
            shown += thread.name
        assert "Sup3rSecret" not in shown
        assert "WrongPa55" not in shown
        assert "admin:***@" in caplog.text


def test_rtsp_server_killed_then_back(
    clip: Timeline, cameras: Cameras, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="upr_faces_engine.sources")
    with rtsp_server(clip.path) as server:
        camera = cameras(server.url)
        assert camera.wait_newer(0, timeout=5) is not None
        states = collect_states(camera)
        server.kill()
        took = wait_state(camera, SourceState.OFFLINE, 4)
        assert took < 3
        time.sleep(0.8)  # several failed retries: logged once
        server.start()  # same port
        wait_state(camera, SourceState.STREAMING, 6)
        seq = camera.stats.frames_read
        assert camera.wait_newer(seq, timeout=2) is not None
        assert states == [SourceState.OFFLINE, SourceState.STREAMING]
        assert camera.stats.reconnects >= 2
        messages = [record.getMessage() for record in caplog.records]
    assert len([m for m in messages if "is offline" in m]) == 1
    assert len([m for m in messages if "back online" in m]) == 1


def test_rtsp_stall_goes_offline_and_stop_is_prompt(clip: Timeline, cameras: Cameras) -> None:
    with rtsp_server(clip.path) as server:
        camera = cameras(server.url, read_timeout=1.0)
        assert camera.wait_newer(0, timeout=5) is not None
        server.pause()
        try:
            took = wait_state(camera, SourceState.OFFLINE, 4)
            assert took < 2.5
            assert camera.reason is not None
            start = time.monotonic()
            camera.stop(timeout=3)
            assert not camera.running
            assert time.monotonic() - start < 1.5
            assert camera.state is SourceState.STOPPED
        finally:
            server.resume()


# --------------------------------------------------------------------------- MJPEG


@pytest.fixture(scope="module")
def jpegs(patterns: list[Path]) -> list[bytes]:
    return jpeg_frames_from_photos(patterns)


def test_mjpeg_source_streams(jpegs: list[bytes], cameras: Cameras) -> None:
    with mjpeg_server(jpegs, user="cam", password="pw!d") as server:
        camera = cameras(server.url)
        frame = camera.wait_newer(0, timeout=3)
        assert frame is not None
        assert not frame.converted
        assert frame.image.shape == (720, 1280, 3)
        time.sleep(0.5)
        assert camera.stats.frames_read >= 5
        assert camera.stats.decode_errors == 0


def test_mjpeg_digest_authentication(jpegs: list[bytes], cameras: Cameras) -> None:
    with mjpeg_server(jpegs, user="cam", password="p@ss word", digest=True) as server:
        url = server.url.replace("p@ss word", "p%40ss%20word")  # URL-encoded secret
        camera = cameras(url)
        assert camera.wait_newer(0, timeout=3) is not None
        wrong = cameras(url.replace("p%40ss", "nope"))
        wait_state(wrong, SourceState.OFFLINE, 3)
        assert wrong.reason is not None
        assert "unauthorized" in wrong.reason


def test_mjpeg_without_lengths_and_wrong_boundary(jpegs: list[bytes], cameras: Cameras) -> None:
    server = MjpegServer(jpegs, content_length=False)
    server.boundary = "declared"
    with server:
        server.boundary = "actual"  # header says one thing, parts another: cameras do this
        camera = cameras(server.url)
        frame = camera.wait_newer(0, timeout=3)
        assert frame is not None
        assert frame.image.shape == (720, 1280, 3)
        assert camera.wait_newer(frame.seq, timeout=2) is not None


def test_http_snapshot_url_is_polled(jpegs: list[bytes], cameras: Cameras) -> None:
    with mjpeg_server(jpegs) as server:
        camera = cameras(server.snapshot_url)
        frame = camera.wait_newer(0, timeout=3)
        assert frame is not None
        assert camera.wait_newer(frame.seq, timeout=2) is not None
        assert frame.image.shape == (720, 1280, 3)


def test_mjpeg_wrong_password_offline(jpegs: list[bytes], cameras: Cameras) -> None:
    with mjpeg_server(jpegs, user="cam", password="right") as server:
        camera = cameras(server.url.replace("right", "Wr0ngPass"))
        wait_state(camera, SourceState.OFFLINE, 3)
        assert camera.reason is not None
        assert "unauthorized" in camera.reason
        assert "Wr0ngPass" not in camera.reason + repr(camera)


def test_mjpeg_restart_and_stall(jpegs: list[bytes], cameras: Cameras) -> None:
    with mjpeg_server(jpegs) as server:
        camera = cameras(server.url, read_timeout=1.0)
        assert camera.wait_newer(0, timeout=3) is not None
        server.stop()
        wait_state(camera, SourceState.OFFLINE, 3)
        server.start()  # same port
        wait_state(camera, SourceState.STREAMING, 4)
        server.pause()
        took = wait_state(camera, SourceState.OFFLINE, 3)
        assert took < 2
        server.resume()
        wait_state(camera, SourceState.STREAMING, 3)
        server.pause()  # stop while blocked reading a silent socket
        time.sleep(0.3)
        start = time.monotonic()
        camera.stop(timeout=3)
        assert not camera.running
        assert time.monotonic() - start < 1.0


# --------------------------------------------------------------------------- dead ends


@pytest.mark.parametrize("scheme", ["rtsp", "http"])
def test_silent_and_closed_ports_go_offline(scheme: str, cameras: Cameras) -> None:
    with silent_tcp_server() as port:
        silent = cameras(f"{scheme}://user:pw@127.0.0.1:{port}/cam", read_timeout=1.0)
        closed = cameras(f"{scheme}://127.0.0.1:{closed_port()}/cam", read_timeout=1.0)
        assert wait_state(closed, SourceState.OFFLINE, 1.0) < 0.5
        assert closed.reason is not None
        assert "refused" in closed.reason.lower()
        assert wait_state(silent, SourceState.OFFLINE, 2.5) >= 0.9
        assert silent.reason is not None
        assert "pw" not in silent.reason
        assert silent.latest() is None
        assert silent.wait_newer(0, timeout=0.05) is None


# --------------------------------------------------------------------------- many at once


def test_four_cameras_at_once(clip: Timeline, jpegs: list[bytes], cameras: Cameras) -> None:
    with rtsp_server(clip.path) as rtsp, mjpeg_server(jpegs) as mjpeg:
        group = [
            cameras(rtsp.url),
            cameras(rtsp.url),
            cameras(mjpeg.url),
            cameras(f"file://{clip.path}"),
        ]
        for camera in group:
            assert camera.wait_newer(0, timeout=6) is not None, camera
        counts = [camera.stats.frames_read for camera in group]
        time.sleep(1.0)
        for camera, before in zip(group, counts, strict=True):
            assert camera.state is SourceState.STREAMING
            assert camera.stats.frames_read - before >= 10, camera
        assert len({id(camera._thread) for camera in group}) == 4
    # (the fixture checks every one stops)


def test_stop_start_again_and_no_thread_left(clip: Timeline) -> None:
    before = set(threading.enumerate())
    camera = CameraSource(f"file://{clip.path}", **FAST)
    with camera:
        assert camera.wait_newer(0, timeout=3) is not None
        with pytest.raises(RuntimeError, match="already running"):
            camera.start()
    assert camera.state is SourceState.STOPPED
    seq = camera.stats.frames_read
    camera.start()
    try:
        frame = camera.wait_newer(seq, timeout=3)
        assert frame is not None
        assert frame.seq > seq  # seq never goes back
    finally:
        camera.stop()
    assert set(threading.enumerate()) <= before
    # a waiter is released by stop()
    assert camera.wait_newer(10**9, timeout=0.1) is None


def test_stop_wakes_waiters(short_clip: Timeline) -> None:
    camera = CameraSource(f"file://{short_clip.path}", **FAST)
    camera.start()
    results: list[Frame | None] = []
    waiter = threading.Thread(target=lambda: results.append(camera.wait_newer(10**9, 10)))
    waiter.start()
    time.sleep(0.2)
    start = time.monotonic()
    camera.stop()
    waiter.join(2)
    assert not waiter.is_alive()
    assert results == [None]
    assert time.monotonic() - start < 1


def test_state_listener_errors_are_contained(
    short_clip: Timeline, caplog: pytest.LogCaptureFixture
) -> None:
    camera = CameraSource(f"file://{short_clip.path}", **FAST)
    seen: list[str] = []

    def broken(state: SourceState, _reason: str | None) -> None:
        seen.append(state.value)
        raise RuntimeError("listener bug")

    remove = camera.on_state(broken)
    with camera:
        assert camera.wait_newer(0, timeout=3) is not None
    remove()
    camera.start()
    camera.stop()
    assert seen == ["connecting", "streaming", "stopped"]
    assert "state listener failed" in caplog.text


# --------------------------------------------------------------------------- USB


def test_scan_usb_finds_nothing_here() -> None:
    if any(Path(f"/dev/video{i}").exists() for i in range(6)):
        pytest.skip("this machine has a video device")
    start = time.monotonic()
    assert scan_usb() == []
    assert time.monotonic() - start < 1


class FakeCapture:
    """Stands in for cv2.VideoCapture: the only USB fake, as there is no camera here."""

    opened: list[FakeCapture] = []  # noqa: RUF012

    def __init__(self, device: int | str, api: int) -> None:
        self.device = device
        self.released = False
        self.reads = 0
        self.grabs = 0
        FakeCapture.opened.append(self)

    def isOpened(self) -> bool:
        return self.device in {0, 2}

    def set(self, prop: int, value: float) -> bool:
        return True

    def read(self) -> tuple[bool, NDArray[np.uint8] | None]:
        self.reads += 1
        time.sleep(0.02)
        if self.device == 2:
            return False, None  # a metadata node: opens, no picture
        return True, np.zeros((480, 640, 3), dtype=np.uint8)

    def grab(self) -> bool:
        self.grabs += 1
        time.sleep(0.02)
        return self.device != 2

    def release(self) -> None:
        self.released = True


def test_usb_with_fake_capture(monkeypatch: pytest.MonkeyPatch, cameras: Cameras) -> None:
    FakeCapture.opened = []
    monkeypatch.setattr(cv2, "VideoCapture", FakeCapture)
    monkeypatch.setattr(usb, "_device_exists", lambda index: True)
    found = scan_usb(4)
    assert found == [UsbCamera(0, 640, 480, _sys_name(0) or "video0")]
    assert found[0].source == "usb:0"
    assert all(capture.released for capture in FakeCapture.opened)
    camera = cameras("usb:0")
    frame = camera.wait_newer(0, timeout=2)
    assert frame is not None
    assert frame.image.shape == (480, 640, 3)
    dead = cameras("/dev/video1")
    wait_state(dead, SourceState.OFFLINE, 2)
    assert dead.reason == "cannot open /dev/video1"


def test_usb_reduced_grabs_without_retrieving(
    monkeypatch: pytest.MonkeyPatch, cameras: Cameras
) -> None:
    """While still, a USB camera in "reduced" mode dequeues every picture (grab) but
    converts (read) about one a second; keyframes mode changes nothing for USB."""
    FakeCapture.opened = []
    monkeypatch.setattr(cv2, "VideoCapture", FakeCapture)
    camera = cameras("usb:0", idle_decode="reduced")
    first = camera.wait_newer(0, timeout=2)
    assert first is not None
    capture = FakeCapture.opened[-1]
    camera.set_still(True)
    time.sleep(0.3)
    reads, grabs = capture.reads, capture.grabs
    time.sleep(2.2)
    assert 1 <= capture.reads - reads <= 4  # ~1 a second instead of ~50
    assert capture.grabs - grabs >= 20
    stats = camera.stats
    assert stats.skipping
    assert stats.skipped >= 20
    assert camera.state is SourceState.STREAMING
    camera.set_still(False)
    seq = camera.stats.frames_read
    assert camera.wait_newer(seq + 10, timeout=2) is not None  # every picture again
    skipped = camera.stats.skipped
    time.sleep(0.3)
    assert camera.stats.skipped == skipped
    assert not camera.stats.skipping
    plain = cameras("usb:0")
    assert plain.wait_newer(0, timeout=2) is not None
    plain.set_still(True)
    time.sleep(0.5)
    assert FakeCapture.opened[-1].grabs == 0
    assert plain.stats.skipped == 0


# --------------------------------------------------------------------------- scripts


def test_make_clip_script(faces_dir: Path, tmp_path: Path) -> None:
    photos = [faces_dir / "deepface_A_img10.jpg", faces_dir / "noface_darknet_dog.jpg"]
    out = tmp_path / "faces.mp4"
    result = subprocess.run(
        [
            str(ROOT / "scripts" / "make_clip"),
            str(out),
            *map(str, photos),
            *("--seconds-per-photo", "1", "--gap", "0.5", "--fps", "10"),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    timeline = json.loads(result.stdout)
    assert [s["kind"] for s in timeline["segments"]] == ["photo", "gap", "photo", "gap"]
    assert timeline["segments"][0]["photo"] == str(photos[0])
    assert timeline["segments"][1]["start"] == 1.0
    assert timeline["frames"] == 30
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.width, stream.height) == ("h264", 1280, 720)
        keyframes = [p.pts for p in container.demux(stream) if p.is_keyframe]
    assert len(keyframes) >= 3  # a keyframe every second


# --------------------------------------------------------------------------- misbehaving streams


def _logged(caplog: pytest.LogCaptureFixture, level: int, text: str) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelno == level and text in record.getMessage()
    ]


def test_mjpeg_that_hangs_up_after_each_frame_backs_off_and_logs_once(
    jpegs: list[bytes], cameras: Cameras, caplog: pytest.LogCaptureFixture
) -> None:
    """Fault injection: a camera closing after every frame was reconnected to in a tight
    loop (7866 "offline" warnings in 30 s, twice the CPU of a working stream). A connection
    that delivered a frame and dropped does not reset the backoff, the camera stays offline
    while it flaps, and that is logged once, as is its coming back."""
    caplog.set_level(logging.INFO, logger="upr_faces_engine.sources")
    with mjpeg_server(jpegs, frames_per_connection=1) as server:
        camera = cameras(server.url, stable_after=1.0)
        states = collect_states(camera)
        time.sleep(4.0)
        assert camera.stats.frames_read >= 3  # every connection did bring a picture
        # backoff 0.2, 0.4, 0.8 then 1.0 s: six connections or so in 4 s, not thousands
        reconnects, connections = camera.stats.reconnects, server.connections
        assert 3 <= connections <= 8
        assert connections - 1 <= reconnects <= connections
        assert camera.state is SourceState.OFFLINE
        assert camera.reason is not None
        assert camera.reason.startswith("unstable stream, dropped ")
        assert camera.reason.endswith(" times in a row (stream ended)")
        # not a flip per connection: the first one, and the retry that dropped again
        assert states.count(SourceState.STREAMING) <= 2
        assert states[-2:] == [SourceState.STREAMING, SourceState.OFFLINE]
        assert len(_logged(caplog, logging.WARNING, "is offline")) == 1
        assert _logged(caplog, logging.INFO, "back online") == []
        server.frames_per_connection = None  # the camera heals
        wait_state(camera, SourceState.STREAMING, 5)
        latest = camera.latest()
        assert latest is not None
        assert camera.wait_newer(latest.seq, timeout=2) is not None
        assert states[-1] is SourceState.STREAMING  # and it stays so
        assert len(_logged(caplog, logging.WARNING, "is offline")) == 1
        assert len(_logged(caplog, logging.INFO, "back online")) == 1


def test_rtsp_that_hangs_up_after_each_frame_backs_off(
    clip: Timeline, cameras: Cameras, caplog: pytest.LogCaptureFixture
) -> None:
    """The same over RTSP: a proxy in front of a real server hangs up every connection
    after two frames."""
    caplog.set_level(logging.INFO, logger="upr_faces_engine.sources")
    with rtsp_server(clip.path) as server, hang_up_proxy(server.port, frames=2) as proxy:
        camera = cameras(proxy.url_for(server.url))
        time.sleep(4.0)
        assert camera.stats.frames_read >= 2
        assert 3 <= proxy.connections <= 8
        assert camera.state is SourceState.OFFLINE
        assert camera.reason is not None
        assert camera.reason.startswith("unstable stream, dropped ")
        assert len(_logged(caplog, logging.WARNING, "is offline")) == 1
        assert _logged(caplog, logging.INFO, "back online") == []


def test_mjpeg_that_falls_silent_after_each_frame_logs_once(
    jpegs: list[bytes], cameras: Cameras, caplog: pytest.LogCaptureFixture
) -> None:
    """A camera that sends one frame per connection and then nothing: each connection
    stalls (read timeout) and the next brings one frame again. Offline is said once, and
    "back online" not at every frame."""
    caplog.set_level(logging.INFO, logger="upr_faces_engine.sources")
    with mjpeg_server(jpegs, frames_per_connection=1, hang_up=False) as server:
        camera = cameras(server.url, read_timeout=0.8)
        time.sleep(4.0)
        assert server.connections >= 3
        assert camera.stats.frames_read >= 3
        assert len(_logged(caplog, logging.WARNING, "is offline")) == 1
        assert _logged(caplog, logging.INFO, "back online") == []


def test_a_short_drop_is_not_flapping(jpegs: list[bytes], cameras: Cameras) -> None:
    """One connection that drops early, then a good one: streaming again at once (only a
    second early drop in a row holds a camera offline)."""
    with mjpeg_server(jpegs, frames_per_connection=1) as server:
        camera = cameras(server.url, retry_backoff=0.5, stable_after=30.0)
        wait_state(camera, SourceState.OFFLINE, 3)
        server.frames_per_connection = None
        wait_state(camera, SourceState.STREAMING, 3)
        assert server.connections == 2


@pytest.mark.parametrize("content_length", [True, False])
def test_mjpeg_of_empty_parts_goes_offline(content_length: bool, cameras: Cameras) -> None:
    """Fault injection: multipart boundaries with empty bodies for ever kept a camera
    "connecting" for ever. It is offline, with a reason, after the read timeout."""
    with mjpeg_server([b""], fps=30, content_length=content_length) as server:
        camera = cameras(server.url)
        wait_state(camera, SourceState.OFFLINE, 4)
        assert camera.reason == "empty frames for 1.5 s (not an image stream)"
        assert camera.latest() is None
        assert camera.stats.frames_read == 0
        assert camera.stats.decode_errors >= 20
        assert server.frames_sent >= camera.stats.decode_errors


@pytest.mark.parametrize("content_length", [True, False])
def test_mjpeg_of_undecodable_frames_is_offline(
    content_length: bool, jpegs: list[bytes], cameras: Cameras
) -> None:
    """Fault injection: garbage JPEG bytes in every part showed "streaming". Nothing a
    consumer would fail to decode is published, and the camera is offline, saying why."""
    garbage = undecodable_jpegs(jpegs[0])
    with mjpeg_server(garbage, fps=30, content_length=content_length) as server:
        camera = cameras(server.url)
        snapshots = cameras(server.snapshot_url, snapshot_interval=0.05)
        states = collect_states(camera)
        for source in (camera, snapshots):
            wait_state(source, SourceState.OFFLINE, 4)
            assert source.reason == "undecodable frames for 1.5 s (not an image stream)"
            assert source.latest() is None
            assert source.stats.decode_errors >= 10
        assert SourceState.STREAMING not in states


def test_mjpeg_with_some_undecodable_frames_keeps_streaming(
    jpegs: list[bytes], cameras: Cameras
) -> None:
    """A bad part now and then is counted and skipped: the camera streams on."""
    garbage = undecodable_jpegs(jpegs[0])
    mixed = [part for pair in zip(jpegs * 2, garbage + garbage[:1], strict=False) for part in pair]
    with mjpeg_server(mixed, fps=20) as server:
        camera = cameras(server.url)
        first = camera.wait_newer(0, timeout=3)
        assert first is not None
        states = collect_states(camera)
        time.sleep(2.5)  # longer than the read timeout
        assert states == []
        assert camera.state is SourceState.STREAMING
        stats = camera.stats
        assert stats.decode_errors >= 10
        assert stats.frames_read >= 10
        latest = camera.latest()
        assert latest is not None
        assert latest.image.shape == (720, 1280, 3)
        assert server.connections == 1


def test_is_jpeg_tells_pictures_from_garbage(jpegs: list[bytes]) -> None:
    image = np.full((120, 160, 3), 40, dtype=np.uint8)
    ok, progressive = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert ok
    ok, grey = cv2.imencode(".jpg", image[:, :, 0])
    assert ok
    for picture in (jpegs[0], encode_jpeg(image), progressive.tobytes(), grey.tobytes()):
        assert is_jpeg(picture)
    for garbage in [*undecodable_jpegs(jpegs[0]), b"", b"\xff\xd8", b"\xff\xd8\xff\xd9"]:
        assert not is_jpeg(garbage)
