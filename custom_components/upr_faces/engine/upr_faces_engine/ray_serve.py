"""Face analysis on a Ray Serve cluster: detection and recognition as two deployments.

The application (:func:`build_app`, deployed by :func:`deploy`) has one deployment for
detection (``detect``, the ingress) and one for recognition (``embed``). Each replica loads
the model pack's ONNX files itself, from the pack folder (which every node must be able to
read at that path) and checks them by their hashes: :meth:`DetectReplica.describe` gives the
analyzer's photo key, and an engine uses an application only when that key is its own (the
same models and detector settings), never embeddings of another recognizer.
``@serve.batch`` gathers the calls of every camera of every engine into one run of each
model; ``num_replicas`` and the replicas' ``num_cpus``/``num_gpus`` are
:class:`RayServeOptions`.

:class:`RayAnalyzer` is an :class:`~upr_faces_engine.analyzer.Analyzer` whose frames go to
the cluster; reference photos (the gallery) and everything else stay in-process. The Ray
driver does not run in the engine's process: a Ray driver ends its process a minute after
the cluster's GCS goes away, so the engine starts a small bridge process
(``python -m upr_faces_engine.ray_serve bridge``) that holds the deployment handles and
calls them from its threads with the sync API (``.remote(...).result(timeout_s=...)``).
Frames are shrunk to the detector's input before they travel, faces aligned to 112x112
before they do.

Failures: a call that fails because a replica died is retried (a few times, with a short
back-off) and the router takes another replica or the one that replaces it; a call that
still fails, or a bridge that is gone (the cluster stopped: the bridge watches the GCS
port), is analysed in-process, so no frame's result is lost. While the cluster cannot be
reached the analyzer works in-process (``backend == "local-fallback"``, logged once when it
goes and once when it comes back) and tries Ray again every ``retry_interval_s``.

Ray is an extra (``pip install upr-faces-engine[ray]``) and is imported only inside the
functions that need it: importing this module never imports Ray.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import cv2
import numpy as np

from .analyzer import Analyzer, Face, FloatArray, ImageArray, PhotoEmbedding, gpu_providers
from .detector import Detection, ScrfdDetector
from .embedder import ALIGNED_SIZE, align_face
from .models import find_pack

if TYPE_CHECKING:
    from ray.serve.handle import DeploymentHandle

_LOGGER = logging.getLogger(__name__)

DEFAULT_APP: Final = "upr_faces"
DETECT_DEPLOYMENT: Final = "detect"
EMBED_DEPLOYMENT: Final = "embed"
Backend = Literal["ray", "local-fallback"]
_GCS_CHECK_S: Final = 1.0
_GCS_MISSES: Final = 3  # consecutive refused connections to the GCS: the cluster is gone


@dataclass(frozen=True, slots=True)
class RayServeOptions:
    """How the application is deployed and how an engine talks to it."""

    app_name: str = DEFAULT_APP
    detect_replicas: int = 1
    embed_replicas: int = 1
    num_cpus: float = 1.0  # per replica (each deployment)
    num_gpus: float = 0.0  # per replica; above 0 the replicas use CUDA/TensorRT
    threads: int = 0  # ONNX Runtime threads per replica; 0: the replica's CPUs, at least 1
    max_batch_size: int = 16  # calls gathered into one run of a model
    batch_wait_timeout_s: float = 0.005
    request_timeout_s: float = 10.0  # one call, its retries included
    retries: int = 3  # more attempts when a replica died under a call
    retry_interval_s: float = 5.0  # between attempts to reach the cluster while it is away
    connect_timeout_s: float = 120.0  # reaching the cluster and deploying, at most

    def replica_threads(self) -> int:
        """ONNX Runtime's intra-op threads on a replica."""
        return self.threads if self.threads > 0 else max(1, math.ceil(self.num_cpus))


@dataclass(frozen=True, slots=True)
class AnalyzerSettings:
    """What a replica needs to build the same analyzer as the engine's."""

    pack_folder: str
    det_size: int = 640
    det_threshold: float = 0.5
    square: bool = True
    max_batch: int = 8

    @classmethod
    def of(cls, analyzer: Analyzer) -> AnalyzerSettings:
        """The settings of an in-process analyzer."""
        detector = analyzer.detector
        return cls(
            pack_folder=str(analyzer.pack.folder),
            det_size=detector.det_size,
            det_threshold=detector.score_threshold,
            square=detector.square,
            max_batch=int(getattr(analyzer, "max_batch", 8)),
        )

    def build(self, threads: int, gpu: bool) -> Analyzer:
        """The analyzer of a replica (blocking: reads and hashes the model files)."""
        pack = find_pack(Path(self.pack_folder))
        return Analyzer(
            pack,
            det_size=self.det_size,
            threads=threads,
            providers=gpu_providers() if gpu else ("cpu",),
            det_threshold=self.det_threshold,
            square=self.square,
            max_batch=self.max_batch,
        )


# ----------------------------------------------------------------------------- replicas


class DetectReplica:
    """The ``detect`` deployment (the application's ingress): lists of frames in, the
    faces of each frame out. Also ``analyze`` (detection and recognition in the cluster)
    through its handle to the ``embed`` deployment."""

    def __init__(
        self, settings: dict[str, Any], options: dict[str, Any], embed: DeploymentHandle
    ) -> None:
        from ray import serve  # Ray is an extra, imported where it runs

        opts = RayServeOptions(**options)
        self._analyzer = AnalyzerSettings(**settings).build(
            opts.replica_threads(), opts.num_gpus > 0
        )
        self._embed = embed
        self._batched = serve.batch(
            max_batch_size=opts.max_batch_size, batch_wait_timeout_s=opts.batch_wait_timeout_s
        )(self._detect_calls)

    async def __call__(self, images: list[ImageArray]) -> list[list[Detection]]:
        """The faces of each frame (one call of one engine: its due frames)."""
        result: list[list[Detection]] = await self._batched(images)
        return result

    async def _detect_calls(self, calls: list[list[ImageArray]]) -> list[list[list[Detection]]]:
        """Every frame of every call gathered (cameras and engines) in one detector run."""
        flat = [image for images in calls for image in images]
        found = await asyncio.to_thread(self._analyzer.detect_batch, flat)
        out: list[list[list[Detection]]] = []
        start = 0
        for images in calls:
            out.append(found[start : start + len(images)])
            start += len(images)
        return out

    async def analyze(self, images: list[ImageArray]) -> list[tuple[list[Detection], FloatArray]]:
        """Faces and their embeddings of each frame, all in the cluster."""
        found = await self(images)
        crops = [_crops(image, dets) for image, dets in zip(images, found, strict=True)]
        vectors: list[FloatArray] = await self._embed.remote(crops)
        return list(zip(found, vectors, strict=True))

    def describe(self) -> dict[str, Any]:
        """The analyzer's photo key (models and detector settings) and providers."""
        return _describe(self._analyzer)


class EmbedReplica:
    """The ``embed`` deployment: aligned 112x112 faces in, L2-normalised embeddings out."""

    def __init__(self, settings: dict[str, Any], options: dict[str, Any]) -> None:
        from ray import serve  # Ray is an extra, imported where it runs

        opts = RayServeOptions(**options)
        self._analyzer = AnalyzerSettings(**settings).build(
            opts.replica_threads(), opts.num_gpus > 0
        )
        self._batched = serve.batch(
            max_batch_size=opts.max_batch_size, batch_wait_timeout_s=opts.batch_wait_timeout_s
        )(self._embed_calls)

    async def __call__(self, crops: list[ImageArray]) -> list[FloatArray]:
        """One ``(n_i, dim)`` array per ``(n_i, 112, 112, 3)`` array of aligned faces."""
        result: list[FloatArray] = await self._batched(crops)
        return result

    async def _embed_calls(self, calls: list[list[ImageArray]]) -> list[list[FloatArray]]:
        """The faces of every call (cameras and engines) in one recognizer run."""
        flat = [crop for items in calls for faces in items for crop in faces]
        vectors = await asyncio.to_thread(self._analyzer.embedder.embed_aligned, flat)
        out: list[list[FloatArray]] = []
        start = 0
        for items in calls:
            rows: list[FloatArray] = []
            for faces in items:
                rows.append(vectors[start : start + len(faces)])
                start += len(faces)
            out.append(rows)
        return out

    def describe(self) -> dict[str, Any]:
        """The analyzer's photo key (models and detector settings) and providers."""
        return _describe(self._analyzer)


def _describe(analyzer: Analyzer) -> dict[str, Any]:
    return {
        "photo_key": analyzer.photo_key,
        "model_id": analyzer.model_id,
        "providers": list(analyzer.providers),
        "threads": analyzer.threads,
    }


def _crops(image: ImageArray, detections: Sequence[Detection]) -> ImageArray:
    """The aligned faces of one frame as one ``(n, 112, 112, 3)`` array."""
    if not detections:
        return np.zeros((0, ALIGNED_SIZE, ALIGNED_SIZE, 3), dtype=np.uint8)
    return np.stack([align_face(image, det.landmarks) for det in detections])


def build_app(settings: AnalyzerSettings, options: RayServeOptions) -> Any:
    """The Serve application: ``embed`` bound into ``detect`` (its ingress)."""
    from ray import serve  # Ray is an extra

    actor_options: dict[str, Any] = {"num_cpus": options.num_cpus}
    if options.num_gpus > 0:
        actor_options["num_gpus"] = options.num_gpus
    common: dict[str, Any] = {
        "ray_actor_options": actor_options,
        "max_ongoing_requests": max(8, options.max_batch_size * 2),
        "health_check_period_s": 2.0,
        "graceful_shutdown_timeout_s": 5.0,
    }
    embed = serve.deployment(
        EmbedReplica, name=EMBED_DEPLOYMENT, num_replicas=options.embed_replicas, **common
    )
    detect = serve.deployment(
        DetectReplica, name=DETECT_DEPLOYMENT, num_replicas=options.detect_replicas, **common
    )
    plain_settings, plain_options = asdict(settings), asdict(options)
    return detect.bind(plain_settings, plain_options, embed.bind(plain_settings, plain_options))


# ----------------------------------------------------------------------------- deploying


def connect(address: str) -> None:
    """Join the cluster at ``address`` as a driver (quietly); no-op when already joined.

    The calling process ends a minute after the cluster's GCS goes away (Ray's rule for
    drivers): call it from a short-lived process or the bridge, never from the engine."""
    import ray  # Ray is an extra

    if ray.is_initialized():
        return
    ray.init(
        address=address,
        namespace="upr_faces",
        logging_level=logging.WARNING,
        log_to_driver=False,
    )
    _quiet()


def _quiet() -> None:
    """Ray's and Serve's own INFO lines stay out of the engine's log (a filter: Serve sets
    its logger's level again when it makes a handle)."""
    for name in ("ray", "ray.serve"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.WARNING)
        if _WARNINGS_ONLY not in logger.filters:
            logger.addFilter(_WARNINGS_ONLY)


def _warnings_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING


_WARNINGS_ONLY: Final = _warnings_only


def ensure_app(settings: AnalyzerSettings, options: RayServeOptions) -> bool:
    """Deploy the application unless it is deployed already (True when this call deployed
    it); wait until it runs. Needs :func:`connect` first."""
    from ray import serve  # Ray is an extra
    from ray.serve.schema import ApplicationStatus

    deadline = time.monotonic() + options.connect_timeout_s
    # Serve itself first, without HTTP proxies (handles only; no port 8000 on every node)
    serve.start(http_options={"location": "NoServer"})
    app = serve.status().applications.get(options.app_name)
    if app is not None and app.status in (ApplicationStatus.RUNNING, ApplicationStatus.DEPLOYING):
        while app is not None and app.status == ApplicationStatus.DEPLOYING:
            if time.monotonic() > deadline:
                raise TimeoutError(f"Ray Serve application {options.app_name} is still deploying")
            time.sleep(0.5)
            app = serve.status().applications.get(options.app_name)
        if app is not None and app.status == ApplicationStatus.RUNNING:
            return False
    serve.run(build_app(settings, options), name=options.app_name, route_prefix=None)
    return True


def deploy(address: str, settings: AnalyzerSettings, options: RayServeOptions) -> dict[str, Any]:
    """Deploy the application on the cluster at ``address`` (idempotent: an application
    already there is kept); what its replicas describe, and whether this call deployed it."""
    connect(address)
    deployed = ensure_app(settings, options)
    handle = _handle(options.app_name, DETECT_DEPLOYMENT)
    described: dict[str, Any] = handle.describe.remote().result(timeout_s=options.request_timeout_s)
    return {**described, "deployed": deployed}


def _handle(app_name: str, deployment: str) -> DeploymentHandle:
    from ray import serve  # Ray is an extra

    handle: DeploymentHandle = serve.get_deployment_handle(deployment, app_name=app_name)
    return handle


# ----------------------------------------------------------------------------- the bridge


class BridgeLostError(Exception):
    """The bridge process is gone, refused to start, or did not answer in time."""


class RemoteError(Exception):
    """The cluster failed a call (after its retries); the bridge is still there."""


_RETRYABLE_NAMES: Final = (
    "RayActorError",  # ActorDiedError, ActorUnavailableError: a replica killed under a call
    "WorkerCrashedError",
    "NodeDiedError",
    "ObjectLostError",
    "LocalRayletDiedError",
)


def _retryable() -> tuple[type[BaseException], ...]:
    import ray.exceptions  # Ray is an extra

    return tuple(getattr(ray.exceptions, name) for name in _RETRYABLE_NAMES)


def _gcs_port(address: str) -> tuple[str, int] | None:
    """The GCS ``(host, port)`` of a ``host:port`` address (None for ``auto`` or ``ray://``)."""
    host, sep, port = address.rpartition(":")
    if not sep or "://" in address or not port.isdigit():
        return None
    return host.strip("[]") or "127.0.0.1", int(port)


def _gcs_reachable(where: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(where, timeout=2.0):
            return True
    except OSError:
        return False


def bridge_main(fd: int, config: dict[str, Any]) -> int:
    """The bridge process: join the cluster, ensure the application, answer calls."""
    conn = Connection(fd)
    send_lock = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        with send_lock, contextlib.suppress(OSError):  # the engine went away: nobody to tell
            conn.send(message)

    # ends with its engine, even while Ray is still connecting (when nothing reads the end)
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()

    address: str = config["address"]
    settings = AnalyzerSettings(**config["settings"])
    options = RayServeOptions(**config["options"])
    gcs = _gcs_port(address)
    try:
        if gcs is not None and not _gcs_reachable(gcs):  # spares the engine Ray's own errors
            raise ConnectionError(f"nothing answers at {address}")
        described = deploy(address, settings, options)
    except Exception as err:  # whatever Ray raises, the engine falls back
        send(("refused", f"{type(err).__name__}: {err}"[:300]))
        os._exit(1)  # Ray's threads need not be waited for
    if described["photo_key"] != config["photo_key"]:
        send(("refused", "the application serves other models or detector settings"))
        os._exit(1)
    send(("ready", described))
    detect = _handle(options.app_name, DETECT_DEPLOYMENT)
    handles = {
        "detect": detect,
        "embed": _handle(options.app_name, EMBED_DEPLOYMENT),
        "analyze": detect.analyze,
    }
    _quiet()
    from ray.serve.handle import DeploymentResponse  # Ray is an extra

    retryable = _retryable()
    if gcs is not None:
        threading.Thread(target=_watch_gcs, args=(gcs, send), daemon=True).start()

    def answer(request_id: int, kind: str, payload: Any) -> None:
        deadline = time.monotonic() + options.request_timeout_s
        attempt = 0
        while True:
            try:
                left = max(0.1, deadline - time.monotonic())
                response = handles[kind].remote(payload)
                assert isinstance(response, DeploymentResponse)  # not a streaming handle
                result = response.result(timeout_s=left)
            except retryable as err:
                attempt += 1
                if attempt > options.retries or time.monotonic() >= deadline:
                    send((request_id, False, f"{type(err).__name__} after {attempt} attempts"))
                    return
                time.sleep(min(0.2 * 2 ** (attempt - 1), max(0.0, deadline - time.monotonic())))
                continue
            except Exception as err:  # the engine analyses it in-process
                send((request_id, False, f"{type(err).__name__}: {err}"[:300]))
                return
            send((request_id, True, (result, attempt)))
            return

    with ThreadPoolExecutor(max_workers=32, thread_name_prefix="upr_faces-ray") as pool:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):  # the engine is gone
                break
            if message[0] == "stop":
                break
            pool.submit(answer, *message)
        os._exit(0)  # Ray's threads need not be waited for


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(0)


def _watch_gcs(where: tuple[str, int], send: Callable[[tuple[Any, ...]], None]) -> None:
    misses = 0
    while True:
        time.sleep(_GCS_CHECK_S)
        misses = 0 if _gcs_reachable(where) else misses + 1
        if misses >= _GCS_MISSES:
            send(("lost", f"the cluster's GCS at {where[0]}:{where[1]} is gone"))
            os._exit(0)


@dataclass
class _Bridge:
    """The engine's side of one bridge process."""

    process: subprocess.Popen[bytes]
    conn: Connection
    ready: threading.Event = field(default_factory=threading.Event)
    dead: threading.Event = field(default_factory=threading.Event)
    reason: str = ""
    described: dict[str, Any] = field(default_factory=dict)
    pending: dict[int, Future[Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    send_lock: threading.Lock = field(default_factory=threading.Lock)
    next_id: int = 0

    @classmethod
    def start(cls, config: dict[str, Any]) -> _Bridge:
        ours, theirs = socket.socketpair()
        env = {
            **os.environ,
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
            # this very package, wherever the engine found it
            "PYTHONPATH": os.pathsep.join(
                p
                for p in (str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH"))
                if p
            ),
        }
        try:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "upr_faces_engine.ray_serve",
                    "bridge",
                    "--fd",
                    str(theirs.fileno()),
                    "--config",
                    json.dumps(config),
                ],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # the engine stops it; a ^C of the engine's group not
            )
        finally:
            theirs.close()
        bridge = cls(process, Connection(ours.detach()))
        threading.Thread(target=bridge._read, name="upr_faces-ray-bridge", daemon=True).start()
        return bridge

    def _read(self) -> None:
        try:
            while True:
                message = self.conn.recv()
                head = message[0]
                if head == "ready":
                    self.described = message[1]
                    self.ready.set()
                elif head in ("refused", "lost"):
                    self._die(str(message[1]))
                    return
                else:
                    with self.lock:
                        future = self.pending.pop(head, None)
                    if future is not None:
                        ok, value = message[1], message[2]
                        if ok:
                            future.set_result(value)
                        else:
                            future.set_exception(RemoteError(str(value)))
        except (EOFError, OSError):
            self._die("the bridge process ended")

    def _die(self, reason: str) -> None:
        with self.lock:
            if self.dead.is_set():
                return
            self.reason = reason
            self.dead.set()
            pending, self.pending = self.pending, {}
        self.ready.set()  # whoever waits for it wakes up
        for future in pending.values():
            future.set_exception(BridgeLostError(reason))
        # not on the caller's thread (a camera's frame waits to be analysed in-process)
        threading.Thread(target=self.close, name="upr_faces-ray-close", daemon=True).start()

    def call(self, kind: str, payload: Any, timeout: float) -> tuple[Any, int]:
        """(result, retries) of one call of a deployment; raises BridgeLostError or
        RemoteError."""
        future: Future[Any] = Future()
        with self.lock:
            if self.dead.is_set():
                raise BridgeLostError(self.reason)
            request_id = self.next_id
            self.next_id += 1
            self.pending[request_id] = future
        try:
            with self.send_lock:
                self.conn.send((request_id, kind, payload))
        except OSError as err:
            self._die(f"the bridge process ended ({err})")
        try:
            result: tuple[Any, int] = future.result(timeout)
        except FutureTimeout:
            self._die(f"no answer within {timeout:.0f} s")
            raise BridgeLostError(self.reason) from None
        return result

    def close(self) -> None:
        """Stop the process (it also stops by itself when the connection closes)."""
        with contextlib.suppress(OSError):
            self.conn.close()  # the bridge ends by itself when it reads the end
        for stop in (None, self.process.terminate, self.process.kill):
            if stop is not None:
                stop()
            try:
                self.process.wait(3)
                return
            except subprocess.TimeoutExpired:
                continue


# ----------------------------------------------------------------------------- the analyzer


@dataclass(slots=True)
class RayStats:
    """What went where since the analyzer started."""

    frames_remote: int = 0  # frames detected on the cluster
    frames_local: int = 0  # frames detected in-process while Ray was configured
    calls_failed: int = 0  # calls the cluster failed (analysed in-process instead)
    retries: int = 0  # attempts repeated because a replica died under them
    fallbacks: int = 0  # times the cluster went away


class RayAnalyzer(Analyzer):
    """An :class:`Analyzer` whose frames are analysed on a Ray Serve cluster.

    Built from an in-process analyzer, whose sessions and settings it shares: the photos
    of the gallery, and every frame while the cluster cannot be reached, are analysed by
    that one. ``start()`` begins reaching the cluster in the background (frames are
    analysed in-process until it answers); ``close()`` stops the bridge.
    """

    def __init__(
        self, local: Analyzer, address: str, options: RayServeOptions | None = None
    ) -> None:
        # the same pack, sessions, settings and keys as the in-process analyzer
        vars(self).update(vars(local))
        self.local = local
        self.address = address
        self.options = options or RayServeOptions()
        self.stats = RayStats()
        self._stats_lock = threading.Lock()
        self._settings = AnalyzerSettings.of(local)
        self._bridge: _Bridge | None = None
        self._state_lock = threading.Lock()
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._connected_once = False
        self._away_logged = False
        self.last_error: str | None = None

    # -------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Reach the cluster in the background, and again whenever it goes away."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._supervise, name="upr_faces-ray-supervisor", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        """Stop trying and stop the bridge; frames are analysed in-process from now on."""
        self._stopping.set()
        self._wake.set()
        with self._state_lock:
            bridge, self._bridge = self._bridge, None
        if bridge is not None:
            with contextlib.suppress(OSError), bridge.send_lock:
                bridge.conn.send(("stop",))
            bridge.close()
        if self._thread is not None:
            self._thread.join(10)

    def wait_ready(self, timeout: float) -> bool:
        """Wait until frames go to the cluster; whether they do."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.backend == "ray":
                return True
            time.sleep(0.1)
        return self.backend == "ray"

    @property
    def backend(self) -> Backend:
        """``ray`` while frames go to the cluster, ``local-fallback`` while they cannot."""
        bridge = self._bridge
        if bridge is not None and bridge.ready.is_set() and not bridge.dead.is_set():
            return "ray"
        return "local-fallback"

    def info(self) -> dict[str, Any]:
        """The backend, the address, the replicas' description and the counters."""
        bridge = self._bridge
        return {
            "backend": self.backend,
            "address": self.address,
            "app": self.options.app_name,
            "replicas": bridge.described if bridge is not None and bridge.ready.is_set() else {},
            "last_error": self.last_error,
            **asdict(self.stats),
        }

    def _config(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "settings": asdict(self._settings),
            "options": asdict(self.options),
            "photo_key": self.local.photo_key,
        }

    def _supervise(self) -> None:
        while not self._stopping.is_set():
            bridge = _Bridge.start(self._config())
            bridge.ready.wait(self.options.connect_timeout_s)
            if not bridge.ready.is_set():
                bridge._die(f"no answer within {self.options.connect_timeout_s:.0f} s")
            if bridge.dead.is_set():
                self._went_away(bridge.reason)
                self._wake.wait(self.options.retry_interval_s)
                self._wake.clear()
                continue
            with self._state_lock:
                if self._stopping.is_set():
                    bridge.close()
                    return
                self._bridge = bridge
            self._came_back(bridge.described)
            bridge.dead.wait()
            with self._state_lock:
                if self._bridge is bridge:
                    self._bridge = None
            if not self._stopping.is_set():
                self._count("fallbacks")
                self._went_away(bridge.reason)

    def _went_away(self, reason: str) -> None:
        self.last_error = reason
        if not self._away_logged:
            self._away_logged = True
            _LOGGER.warning(
                "Ray Serve at %s cannot be used (%s): analysing frames in-process, "
                "trying again every %.0f s",
                self.address,
                reason,
                self.options.retry_interval_s,
            )

    def _came_back(self, described: dict[str, Any]) -> None:
        self.last_error = None
        if self._away_logged or not self._connected_once:
            _LOGGER.info(
                "Frames are analysed on Ray Serve at %s (application %s, providers %s)%s",
                self.address,
                self.options.app_name,
                ", ".join(described.get("providers", [])),
                " again" if self._connected_once else "",
            )
        self._connected_once = True
        self._away_logged = False

    def _count(self, name: str, value: int = 1) -> None:
        with self._stats_lock:
            setattr(self.stats, name, getattr(self.stats, name) + value)

    def _call(self, kind: str, payload: Any) -> Any | None:
        """The cluster's answer, or None when it is to be done in-process."""
        bridge = self._bridge
        if bridge is None or not bridge.ready.is_set():
            return None
        try:
            result, retries = bridge.call(kind, payload, self.options.request_timeout_s + 2.0)
        except BridgeLostError:
            return None  # the supervisor logs it and reconnects
        except RemoteError as err:
            self._count("calls_failed")
            self.last_error = str(err)
            _LOGGER.debug("Ray Serve failed a %s call (%s): analysed in-process", kind, err)
            return None
        self._count("retries", retries)
        return result

    # -------------------------------------------------------------- analysis

    def detect(self, image: ImageArray) -> list[Detection]:
        """Faces of a BGR image, on the cluster (in-process while it cannot be reached)."""
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Sequence[ImageArray]) -> list[list[Detection]]:
        """The faces of each image, in order; one call for all of them."""
        if not images:
            return []
        shrunk = [_shrink(self.local.detector, image) for image in images]
        found = self._call("detect", [small for small, _factor in shrunk])
        if found is None or len(found) != len(images):
            self._count("frames_local", len(images))
            return self.local.detect_batch(images)
        self._count("frames_remote", len(images))
        return [_scaled(dets, factor) for dets, (_s, factor) in zip(found, shrunk, strict=True)]

    def embed(self, image: ImageArray, detections: Sequence[Detection]) -> FloatArray:
        """One embedding row per detection of one image."""
        return self.embed_batch([(image, detections)])[0]

    def embed_batch(
        self, items: Sequence[tuple[ImageArray, Sequence[Detection]]]
    ) -> list[FloatArray]:
        """One ``(n_i, dim)`` array per item; the faces aligned here, embedded there."""
        if not items:
            return []
        if not any(dets for _image, dets in items):
            empty = np.zeros((0, self.embedding_size), dtype=np.float32)
            return [empty for _item in items]
        crops = [_crops(image, dets) for image, dets in items]
        vectors = self._call("embed", crops)
        if vectors is None or len(vectors) != len(items):
            return self.local.embed_batch(items)
        return [np.asarray(rows, dtype=np.float32) for rows in vectors]

    def analyze(self, image: ImageArray) -> list[Face]:
        """Detect and embed every face of a BGR image in one call of the cluster (the whole
        frame travels: the faces are aligned there)."""
        answer = self._call("analyze", [image])
        if answer is None or len(answer) != 1:
            self._count("frames_local")
            return self.local.analyze(image)
        self._count("frames_remote")
        detections, vectors = answer[0]
        return [Face(det, vectors[i]) for i, det in enumerate(detections)]

    def embed_photo(self, data: bytes) -> PhotoEmbedding:
        """Reference photos are embedded in-process (the gallery is the engine's)."""
        return self.local.embed_photo(data)


def _letterbox(height: int, width: int, in_w: int, in_h: int) -> tuple[int, int]:
    """The size an image is resized to inside the detector's input (as the detector does)."""
    if height / width > in_h / in_w:
        new_h = in_h
        return int(new_h / (height / width)), new_h
    new_w = in_w
    return new_w, int(new_w * (height / width))


def _shrink(detector: ScrfdDetector, image: ImageArray) -> tuple[ImageArray, float]:
    """The frame resized to what the detector would resize it to (so a quarter of a 720p
    frame travels), and the factor back to the frame's coordinates. Unchanged (factor 1)
    when the detector would enlarge it, or when the smaller frame would not give the
    detector exactly the same input."""
    height, width = image.shape[:2]
    in_w, in_h = detector.input_size_for(height, width)
    new_w, new_h = _letterbox(height, width, in_w, in_h)
    if new_w >= width or new_h >= height or new_w < 1 or new_h < 1:
        return image, 1.0
    if detector.input_size_for(new_h, new_w) != (in_w, in_h):
        return image, 1.0
    if _letterbox(new_h, new_w, in_w, in_h) != (new_w, new_h):
        return image, 1.0
    small = np.asarray(cv2.resize(image, (new_w, new_h)), dtype=np.uint8)
    return small, height / new_h


def _scaled(detections: Sequence[Detection], factor: float) -> list[Detection]:
    if factor == 1.0:
        return list(detections)
    return [
        Detection(
            (det.box * factor).astype(np.float32),
            det.score,
            (det.landmarks * factor).astype(np.float32),
        )
        for det in detections
    ]


# ----------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m upr_faces_engine.ray_serve deploy|bridge ...``."""
    parser = argparse.ArgumentParser(prog="python -m upr_faces_engine.ray_serve")
    commands = parser.add_subparsers(dest="command", required=True)
    dep = commands.add_parser("deploy", help="deploy the analyzer on a cluster (idempotent)")
    dep.add_argument("--address", required=True, help="the cluster's GCS (host:port)")
    dep.add_argument("--pack", required=True, type=Path, help="the model pack folder")
    dep.add_argument("--det-size", type=int, default=640)
    dep.add_argument("--square", action="store_true", help="letterbox into a square input")
    add_options(dep)
    bridge = commands.add_parser("bridge", help="(the engine starts it)")
    bridge.add_argument("--fd", type=int, required=True)
    bridge.add_argument("--config", required=True)
    args = parser.parse_args(argv)
    if args.command == "bridge":
        return bridge_main(args.fd, json.loads(args.config))
    logging.basicConfig(level=logging.WARNING)
    pack = find_pack(args.pack.resolve())
    settings = AnalyzerSettings(str(pack.folder), det_size=args.det_size, square=args.square)
    described = deploy(args.address, settings, options_from(args))
    print(json.dumps(described))
    return 0


def add_options(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """The deployment's options (``--ray-replicas`` and so on with ``prefix="ray-"``)."""
    defaults = RayServeOptions()
    parser.add_argument(
        f"--{prefix}replicas",
        dest="ray_replicas",
        type=int,
        default=defaults.detect_replicas,
        help="replicas of each deployment (detection, recognition)",
    )
    parser.add_argument(
        f"--{prefix}cpus",
        dest="ray_cpus",
        type=float,
        default=defaults.num_cpus,
        help="CPUs per replica",
    )
    parser.add_argument(
        f"--{prefix}gpus",
        dest="ray_gpus",
        type=float,
        default=defaults.num_gpus,
        help="GPUs per replica (above 0: CUDA/TensorRT on the replicas)",
    )
    parser.add_argument(
        f"--{prefix}app",
        dest="ray_app",
        default=defaults.app_name,
        help="the Serve application's name",
    )


def options_from(args: argparse.Namespace) -> RayServeOptions:
    """The options :func:`add_options` parsed."""
    return RayServeOptions(
        app_name=args.ray_app,
        detect_replicas=args.ray_replicas,
        embed_replicas=args.ray_replicas,
        num_cpus=args.ray_cpus,
        num_gpus=args.ray_gpus,
    )


if __name__ == "__main__":  # the module by its own name, so Ray pickles its classes by name
    from upr_faces_engine.ray_serve import main as _main

    sys.exit(_main())
