"""Real camera streams on 127.0.0.1 for tests: clips, an RTSP server, an MJPEG server.

Import from a test module::

    from .streams import make_clip, mjpeg_server, rtsp_server, silent_tcp_server

* :func:`make_clip` writes a 720p H.264 mp4 from photos and returns its timeline.
* :class:`RtspServer` / :func:`rtsp_server` serve a clip, looping, over RTSP with
  ``scripts/simulate_rtsp`` (GStreamer, run by Debian's ``/usr/bin/python3``). It can be
  stopped, killed (SIGKILL, like a camera losing power), paused (SIGSTOP, a hung camera)
  and started again on the same port.
* :class:`MjpegServer` / :func:`mjpeg_server` serve JPEG frames as
  ``multipart/x-mixed-replace`` with aiohttp, in a thread of its own so that blocking and
  async tests can both use it; also stoppable, pausable and restartable on the same port.
  It can also misbehave: hang up (or fall silent) after every few frames
  (``frames_per_connection``, ``hang_up``),
  send empty parts (frames ``[b""]``) or parts no decoder can read
  (:func:`undecodable_jpegs`).
* :class:`HangUpProxy` / :func:`hang_up_proxy` stand in front of an RTSP server and drop
  each connection once it has carried a few whole video frames (a camera that hangs up
  after every picture).
* :func:`silent_tcp_server` (accepts connections, never answers) and :func:`closed_port`.

Every helper cleans up after itself (no thread, no process left behind: the Home Assistant
test plugin fails a test that leaves a thread). The tools are required, not optional: when
GStreamer's RTSP server is missing these helpers fail loudly with the packages to install.
Tests that open sockets need the ``socket_enabled`` fixture under that plugin.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import re
import selectors
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import av
import cv2
import numpy as np
from aiohttp import web
from numpy.typing import NDArray

from upr_faces_dev.clips import Timeline, build_clip

ROOT = Path(__file__).resolve().parent.parent
SIMULATE_RTSP = ROOT / "scripts" / "simulate_rtsp"
SYSTEM_PYTHON = Path("/usr/bin/python3")
HOST = "127.0.0.1"
RTSP_PACKAGES = (
    "gir1.2-gst-rtsp-server-1.0 python3-gst-1.0 python3-gi gstreamer1.0-plugins-good "
    "gstreamer1.0-plugins-bad"
)

type Jpeg = bytes
_REALM = "test camera"
_NONCE = "0123456789abcdef"


def make_clip(
    path: Path | str,
    photos: Sequence[Path | str],
    seconds: float = 3.0,
    fps: int = 15,
    size: tuple[int, int] = (1280, 720),
    gap: float = 2.0,
) -> Timeline:
    """Write an H.264 mp4 showing each photo ``seconds`` then ``gap`` seconds of no face."""
    return build_clip(path, photos, seconds_per_photo=seconds, gap=gap, fps=fps, size=size)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (right now)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


closed_port = free_port


@contextlib.contextmanager
def silent_tcp_server() -> Iterator[int]:
    """A port on 127.0.0.1 that completes TCP handshakes and then never says a word."""
    with socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen(64)  # the kernel accepts into the backlog; nobody reads
        port: int = listener.getsockname()[1]
        yield port


# --------------------------------------------------------------------------- RTSP


class RtspServer:
    """``scripts/simulate_rtsp`` as a subprocess, serving ``clip`` in a loop."""

    def __init__(
        self,
        clip: Path | str,
        *,
        port: int = 0,
        path: str = "/cam",
        user: str | None = None,
        password: str | None = None,
    ) -> None:
        self.clip = Path(clip)
        self.port = port
        self.path = path
        self.user = user
        self.password = password
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: tempfile._TemporaryFileWrapper[bytes] | None = None

    @property
    def url(self) -> str:
        """The stream's address, with the credentials when the server wants some."""
        auth = f"{self.user}:{self.password}@" if self.user else ""
        return f"rtsp://{auth}{HOST}:{self.port}{self.path}"

    def url_with(self, user: str, password: str) -> str:
        """The address with other credentials (to test refusals)."""
        return f"rtsp://{user}:{password}@{HOST}:{self.port}{self.path}"

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 20.0) -> str:
        """Start serving (on the same port as before, after a stop) and return the URL."""
        if self.running:
            raise RuntimeError("RTSP server already running")
        if not SYSTEM_PYTHON.exists():
            raise RuntimeError(f"{SYSTEM_PYTHON} is missing: install {RTSP_PACKAGES}")
        command = [str(SYSTEM_PYTHON), str(SIMULATE_RTSP), str(self.clip)]
        command += ["--port", str(self.port), "--path", self.path, "--host", HOST]
        if self.user:
            command += ["--user", self.user, "--password", self.password or ""]
        self._stderr = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the server
            prefix="simulate_rtsp_", suffix=".log"
        )
        self._process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=self._stderr, stdin=subprocess.DEVNULL
        )
        assert self._process.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        with selectors.DefaultSelector() as selector:
            selector.register(self._process.stdout, selectors.EVENT_READ)
            while not line.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    break
                chunk = os.read(self._process.stdout.fileno(), 4096)
                if not chunk:
                    break
                line += chunk
        if not line.startswith(b"READY "):
            error = self._read_stderr()
            self.stop()
            raise RuntimeError(
                f"simulate_rtsp did not start ({line.decode(errors='replace').strip()!r}): "
                f"{error}\nIf gi/GstRtspServer is missing, install: {RTSP_PACKAGES}"
            )
        url = line.split()[1].decode()
        self.port = int(url.split(":")[2].split("/")[0])
        return self.url

    def _read_stderr(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.flush()
        return Path(self._stderr.name).read_text(errors="replace")[-2000:]

    def _end(self, signum: int) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGCONT)  # in case it was paused
            process.send_signal(signum)
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if process is not None and process.stdout is not None:
            process.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
        self._process = None
        self._stderr = None

    def stop(self) -> None:
        """Stop the server cleanly (SIGTERM)."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), like a camera losing power."""
        self._end(signal.SIGKILL)

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open, nothing is sent."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Undo :meth:`pause`."""
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    def restart(self) -> str:
        """Stop and start again on the same port."""
        self.stop()
        return self.start()

    def __enter__(self) -> RtspServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@contextlib.contextmanager
def rtsp_server(
    clip: Path | str,
    *,
    port: int = 0,
    path: str = "/cam",
    user: str | None = None,
    password: str | None = None,
) -> Iterator[RtspServer]:
    """A running :class:`RtspServer`; its ``url`` is the stream's address."""
    server = RtspServer(clip, port=port, path=path, user=user, password=password)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------- MJPEG


def encode_jpeg(image: NDArray[np.uint8], quality: int = 80) -> Jpeg:
    """A BGR image as JPEG bytes."""
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return bytes(data.tobytes())


def jpeg_frames_from_clip(clip: Path | str, count: int = 30, step: int = 3) -> list[Jpeg]:
    """Every ``step``-th frame of a clip, ``count`` at most, as JPEGs."""
    frames: list[Jpeg] = []
    with av.open(str(clip)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index % step == 0:
                frames.append(
                    encode_jpeg(np.asarray(frame.to_ndarray(format="bgr24"), dtype=np.uint8))
                )
                if len(frames) >= count:
                    break
    return frames


def jpeg_frames_from_photos(
    photos: Sequence[Path | str], size: tuple[int, int] = (1280, 720)
) -> list[Jpeg]:
    """Each photo letterboxed onto a ``size`` canvas, as JPEGs."""
    width, height = size
    frames: list[Jpeg] = []
    for photo in photos:
        image = cv2.imread(str(photo), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"cannot read {photo}")
        scale = min(width / image.shape[1], height / image.shape[0])
        fitted = cv2.resize(image, (int(image.shape[1] * scale), int(image.shape[0] * scale)))
        canvas = np.full((height, width, 3), 90, dtype=np.uint8)
        y0, x0 = (height - fitted.shape[0]) // 2, (width - fitted.shape[1]) // 2
        canvas[y0 : y0 + fitted.shape[0], x0 : x0 + fitted.shape[1]] = fitted
        frames.append(encode_jpeg(canvas))
    return frames


class MjpegServer:
    """An HTTP camera on 127.0.0.1: ``/mjpeg`` streams the frames in a loop at ``fps``,
    ``/snapshot.jpg`` returns the current one. Runs its own event loop in a thread."""

    def __init__(
        self,
        frames: Sequence[Jpeg | NDArray[np.uint8]] | Path | str,
        *,
        fps: float = 15.0,
        port: int = 0,
        path: str = "/mjpeg",
        user: str | None = None,
        password: str | None = None,
        boundary: str = "frameboundary",
        content_length: bool = True,
        digest: bool = False,
        frames_per_connection: int | None = None,
        hang_up: bool = True,
    ) -> None:
        if isinstance(frames, Path | str):
            frames = jpeg_frames_from_clip(frames)
        self.frames: list[Jpeg] = [f if isinstance(f, bytes) else encode_jpeg(f) for f in frames]
        if not self.frames:
            raise ValueError("no frames to serve")
        self.fps = fps
        self.port = port
        self.path = path
        self.user = user
        self.password = password
        self.boundary = boundary
        self.content_length = content_length
        self.digest = digest
        # hang up after this many frames on each connection (None: stream for ever); may
        # be changed while serving, for the connections that come next
        self.frames_per_connection = frames_per_connection
        self.hang_up = hang_up  # after them: hang up, or keep the connection and say nothing
        self.frames_sent = 0
        self.clients = 0
        self.connections = 0  # stream requests answered, all connections together
        self._paused = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._closing: asyncio.Event | None = None

    @property
    def url(self) -> str:
        """The stream's address (with credentials when the server wants some)."""
        auth = f"{self.user}:{self.password}@" if self.user else ""
        return f"http://{auth}{HOST}:{self.port}{self.path}"

    @property
    def snapshot_url(self) -> str:
        """A single-image address on the same server."""
        auth = f"{self.user}:{self.password}@" if self.user else ""
        return f"http://{auth}{HOST}:{self.port}/snapshot.jpg"

    @property
    def running(self) -> bool:
        """Whether the server thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def _authorized(self, request: web.Request) -> bool:
        if not self.user:
            return True
        header = request.headers.get("Authorization", "")
        if not self.digest:
            token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            return header == f"Basic {token}"
        if not header.startswith("Digest "):
            return False
        fields = dict(re.findall(r'(\w+)="?([^",]*)"?', header[len("Digest ") :]))

        def md5(text: str) -> str:
            return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()

        ha1 = md5(f"{self.user}:{_REALM}:{self.password}")
        ha2 = md5(f"{request.method}:{fields.get('uri', '')}")
        expected = md5(
            f"{ha1}:{_NONCE}:{fields.get('nc', '')}:{fields.get('cnonce', '')}:auth:{ha2}"
        )
        return fields.get("username") == self.user and fields.get("response") == expected

    def _challenge(self) -> web.Response:
        if self.digest:
            value = f'Digest realm="{_REALM}", nonce="{_NONCE}", qop="auth", algorithm=MD5'
        else:
            value = f'Basic realm="{_REALM}"'
        return web.Response(status=401, headers={"WWW-Authenticate": value})

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return self._challenge()
        assert self._closing is not None
        response = web.StreamResponse(
            headers={
                "Content-Type": f"multipart/x-mixed-replace; boundary={self.boundary}",
                "Cache-Control": "no-cache",
            }
        )
        await response.prepare(request)
        self.clients += 1
        self.connections += 1
        index = 0
        interval = 1.0 / self.fps
        limit = self.frames_per_connection
        try:
            while not self._closing.is_set():
                if limit is not None and index >= limit:
                    if self.hang_up:
                        break
                    await self._closing.wait()
                    break
                if self._paused.is_set():
                    await asyncio.sleep(0.05)
                    continue
                data = self.frames[index % len(self.frames)]
                head = f"--{self.boundary}\r\nContent-Type: image/jpeg\r\n"
                if self.content_length:
                    head += f"Content-Length: {len(data)}\r\n"
                await response.write(head.encode() + b"\r\n" + data + b"\r\n")
                self.frames_sent += 1
                index += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), interval)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.clients -= 1
            # Drop the connection rather than end the multipart politely: a server going
            # away does not say goodbye.
            if request.transport is not None:
                request.transport.abort()
        return response

    async def _snapshot(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._challenge()
        self.frames_sent += 1
        return web.Response(body=self.frames[0], content_type="image/jpeg")

    async def _start_site(self) -> None:
        self._closing = asyncio.Event()
        app = web.Application()
        app.router.add_get(self.path, self._stream)
        app.router.add_get("/snapshot.jpg", self._snapshot)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, self.port, reuse_address=True)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1]

    async def _stop_site(self) -> None:
        if self._closing is not None:
            self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def start(self, timeout: float = 10.0) -> str:
        """Start serving (on the same port as before, after a stop) and return the URL."""
        if self.running:
            raise RuntimeError("MJPEG server already running")
        self._paused.clear()
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=loop.run_forever, name="test mjpeg server", daemon=True
        )
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._start_site(), loop).result(timeout)
        except BaseException:
            self.stop()
            raise
        return self.url

    def stop(self) -> None:
        """Close every connection and the listening socket; join the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._stop_site(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
        loop.close()
        self._loop = None
        self._thread = None

    def pause(self) -> None:
        """Keep connections open but send nothing (a hung camera)."""
        self._paused.set()

    def resume(self) -> None:
        """Undo :meth:`pause`."""
        self._paused.clear()

    def restart(self) -> str:
        """Stop and start again on the same port."""
        self.stop()
        return self.start()

    def __enter__(self) -> MjpegServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@contextlib.contextmanager
def mjpeg_server(
    frames: Sequence[Jpeg | NDArray[np.uint8]] | Path | str,
    *,
    fps: float = 15.0,
    port: int = 0,
    user: str | None = None,
    password: str | None = None,
    content_length: bool = True,
    digest: bool = False,
    frames_per_connection: int | None = None,
    hang_up: bool = True,
) -> Iterator[MjpegServer]:
    """A running :class:`MjpegServer`; its ``url`` is the stream's address. With ``user``
    it wants Basic authentication, or Digest with ``digest=True``; with
    ``frames_per_connection`` it hangs up after that many frames on every connection (or,
    with ``hang_up=False``, keeps it open and silent)."""
    server = MjpegServer(
        frames,
        fps=fps,
        port=port,
        user=user,
        password=password,
        content_length=content_length,
        digest=digest,
        frames_per_connection=frames_per_connection,
        hang_up=hang_up,
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def undecodable_jpegs(jpeg: Jpeg) -> list[Jpeg]:
    """Parts that begin as a JPEG does and that no decoder can read (checked with OpenCV):
    garbage after the start marker, ``jpeg`` cut inside its headers, and ``jpeg`` with
    everything from its scan on replaced by garbage."""
    scan = jpeg.find(b"\xff\xda")
    if scan < 0:
        raise ValueError("not a baseline JPEG")
    variants = [
        b"\xff\xd8" + b"\x00 not a picture " * 400 + b"\xff\xd9",
        jpeg[:100],
        jpeg[:scan] + b" garbage " * 400 + b"\xff\xd9",
    ]
    for data in variants:
        if cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR) is not None:
            raise ValueError("OpenCV decodes a part meant to be undecodable")
    return variants


# --------------------------------------------------------------------------- hanging up


class HangUpProxy:
    """A TCP proxy on 127.0.0.1 in front of an RTSP server that hangs up each connection
    once it has carried ``frames`` whole video frames (interleaved RTP packets on channel 0
    with the marker bit): a camera that drops its stream after every picture or two.
    ``connections`` counts the connections it took. Runs one thread of its own."""

    def __init__(self, upstream_port: int, *, frames: int = 2) -> None:
        self.upstream_port = upstream_port
        self.frames = frames
        self.port = 0
        self.connections = 0
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def url_for(self, url: str) -> str:
        """``url`` (the RTSP server's) pointed at the proxy."""
        return url.replace(f"{HOST}:{self.upstream_port}/", f"{HOST}:{self.port}/", 1)

    def start(self) -> None:
        """Listen and start relaying."""
        listener = socket.socket()
        listener.bind((HOST, 0))
        listener.listen(16)
        listener.setblocking(False)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="test hang-up proxy", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Close every connection and the listener; join the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def _run(self) -> None:
        listener = self._listener
        assert listener is not None
        peers: dict[socket.socket, socket.socket] = {}
        parsers: dict[socket.socket, _RtspFrames] = {}  # keyed by the upstream socket
        with selectors.DefaultSelector() as selector:
            selector.register(listener, selectors.EVENT_READ)

            def drop(sock: socket.socket) -> None:
                other = peers.pop(sock, None)
                for end in (sock, other):
                    if end is None:
                        continue
                    peers.pop(end, None)
                    parsers.pop(end, None)
                    with contextlib.suppress(KeyError, ValueError):
                        selector.unregister(end)
                    end.close()

            try:
                while not self._stop.is_set():
                    for key, _events in selector.select(0.05):
                        sock = key.fileobj
                        assert isinstance(sock, socket.socket)
                        if sock is listener:
                            with contextlib.suppress(BlockingIOError):
                                client, _address = listener.accept()
                                self.connections += 1
                                try:
                                    upstream = socket.create_connection(
                                        (HOST, self.upstream_port), timeout=5
                                    )
                                except OSError:  # the server is down: so is the proxy
                                    client.close()
                                    continue
                                client.settimeout(5)
                                peers[client], peers[upstream] = upstream, client
                                parsers[upstream] = _RtspFrames()
                                selector.register(client, selectors.EVENT_READ)
                                selector.register(upstream, selectors.EVENT_READ)
                            continue
                        if sock not in peers:
                            continue
                        try:
                            data = sock.recv(65536)
                            if data:
                                peers[sock].sendall(data)
                        except OSError:
                            data = b""
                        parser = parsers.get(sock)
                        if not data or (parser is not None and parser.feed(data) >= self.frames):
                            drop(sock)
            finally:
                for sock in list(peers):
                    drop(sock)
                listener.close()

    def __enter__(self) -> HangUpProxy:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class _RtspFrames:
    """Counts the whole video frames in what an RTSP server sends over TCP: RTSP answers
    (head and body) and interleaved packets (``$``, channel, length, data)."""

    def __init__(self) -> None:
        self._buffer = b""
        self.frames = 0

    def feed(self, data: bytes) -> int:
        self._buffer += data
        while self._buffer:
            if self._buffer[0] == 0x24:  # '$'
                if len(self._buffer) < 4:
                    break
                channel, size = self._buffer[1], int.from_bytes(self._buffer[2:4], "big")
                if len(self._buffer) < 4 + size:
                    break
                packet, self._buffer = self._buffer[4 : 4 + size], self._buffer[4 + size :]
                if channel == 0 and len(packet) >= 2 and packet[1] & 0x80:  # RTP marker
                    self.frames += 1
                continue
            head_end = self._buffer.find(b"\r\n\r\n")
            if head_end < 0:
                break
            found = re.search(rb"(?im)^content-length:\s*(\d+)", self._buffer[:head_end])
            end = head_end + 4 + (int(found.group(1)) if found else 0)
            if len(self._buffer) < end:
                break
            self._buffer = self._buffer[end:]
        return self.frames


@contextlib.contextmanager
def hang_up_proxy(upstream_port: int, *, frames: int = 2) -> Iterator[HangUpProxy]:
    """A running :class:`HangUpProxy` in front of the RTSP server on ``upstream_port``."""
    proxy = HangUpProxy(upstream_port, frames=frames)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
