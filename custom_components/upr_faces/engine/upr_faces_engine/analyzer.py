"""One frame in, faces with embeddings out. Owns the process-wide ONNX sessions."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from .detector import DEFAULT_MAX_BATCH, Detection, ScrfdDetector
from .embedder import ALIGNED_SIZE, Embedder, align_face
from .errors import ImageError
from .images import MAX_IMAGE_PIXELS, photo_size
from .models import ModelPack, file_sha256

_LOGGER = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
ImageArray = npt.NDArray[np.uint8]

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
MAX_IMAGE_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Face:
    """A detected face and, once embedded, its L2-normalised embedding."""

    detection: Detection
    embedding: FloatArray | None = None

    @property
    def box(self) -> FloatArray:
        """``[x1, y1, x2, y2]`` in image pixels."""
        return self.detection.box

    @property
    def score(self) -> float:
        """Detector confidence."""
        return self.detection.score

    @property
    def landmarks(self) -> FloatArray:
        """Five ``(x, y)`` points: eyes, nose, mouth corners."""
        return self.detection.landmarks


@dataclass(frozen=True, slots=True)
class PhotoEmbedding:
    """The result of embedding a reference photo: a vector, or the reason there is none."""

    embedding: FloatArray | None
    reason: str | None = None
    faces: int = 0


@dataclass(slots=True)
class _SessionPool:
    """Process-wide ONNX sessions: one per (model file, providers, threads)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    sessions: dict[tuple[str, int, tuple[str, ...], int], ort.InferenceSession] = field(
        default_factory=dict
    )

    def get(self, path: Path, providers: tuple[str, ...], threads: int) -> ort.InferenceSession:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_mtime_ns, providers, threads)
        with self.lock:
            session = self.sessions.get(key)
            if session is None:
                options = ort.SessionOptions()
                options.intra_op_num_threads = threads
                options.inter_op_num_threads = 1
                options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
                options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                # Idle worker threads must sleep, not spin: the CPU is shared with decoding.
                options.add_session_config_entry("session.intra_op.allow_spinning", "0")
                options.add_session_config_entry("session.inter_op.allow_spinning", "0")
                options.log_severity_level = 3
                session = ort.InferenceSession(str(path), options, providers=list(providers))
                self.sessions[key] = session
            return session


_POOL = _SessionPool()


def gpu_providers() -> tuple[str, ...]:
    """What to ask for when the GPU is wanted: TensorRT first where it is installed, CUDA."""
    if PROVIDERS["tensorrt"] in ort.get_available_providers():
        return ("tensorrt", "cuda", "cpu")
    return ("cuda", "cpu")


def resolve_providers(requested: Sequence[str]) -> tuple[str, ...]:
    """Map ``cpu``/``cuda``/``tensorrt``/``openvino`` to available ONNX Runtime providers.

    An unavailable accelerator is logged once and replaced by the CPU.
    """
    available = set(ort.get_available_providers())
    chosen: list[str] = []
    for name in requested:
        provider = PROVIDERS.get(name.lower(), name)
        if provider in available:
            if provider not in chosen:
                chosen.append(provider)
        else:
            _LOGGER.warning(
                "Execution provider %s is not available (have: %s); using the CPU instead",
                name,
                ", ".join(sorted(available)),
            )
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return tuple(chosen)


def decode_image(data: bytes) -> ImageArray:
    """Decode JPEG/PNG/... bytes to a BGR ``uint8`` image, or raise :class:`ImageError`."""
    if not data:
        raise ImageError("empty image")
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageError(f"image larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MiB")
    size = photo_size(data)  # refused by its header before a byte is decoded
    if size is not None and size[0] * size[1] > MAX_IMAGE_PIXELS:
        raise ImageError("image has too many pixels")
    buffer = np.frombuffer(data, dtype=np.uint8)
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if image is None or image.ndim != 3:
        raise ImageError("not a decodable image")
    if image.shape[0] * image.shape[1] > MAX_IMAGE_PIXELS:
        raise ImageError("image has too many pixels")
    return np.ascontiguousarray(image, dtype=np.uint8)


def read_image(path: Path) -> ImageArray:
    """Read and decode an image file (blocking: call it off the event loop)."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ImageError(f"cannot read {path}: {err.strerror or err}") from err
    return decode_image(data)


def default_threads() -> int:
    """The number of cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def default_session_threads(workers: int | None = None) -> int:
    """ONNX Runtime intra-op threads per session when none are asked: the cores shared
    among the pipeline's worker threads (``workers``; by default one per core, so 1).

    Workers times threads never exceeds the cores: on 2 cores, 2 workers of 1 thread
    analysed about 1.5 times the frames of 1 worker of 2 threads, and 2.3 times those of 2
    workers of 2 threads (oversubscribed), with 12 cameras.
    """
    cores = default_threads()
    return max(1, cores // max(1, workers or cores))


class Analyzer:
    """Detects and embeds faces with one model pack.

    Sessions are shared by every analyzer of the process that uses the same model file,
    providers and thread count. Thread-safe: ONNX Runtime sessions may run concurrently.
    ``threads`` (ONNX Runtime's intra-op threads per session) defaults to the cores
    shared among the pipeline's workers (:func:`default_session_threads`); ``max_batch`` is
    the most frames one detector run takes where the detector's graph allows a batch.
    """

    def __init__(
        self,
        pack: ModelPack,
        *,
        det_size: int = 640,
        threads: int | None = None,
        providers: Sequence[str] = ("cpu",),
        det_threshold: float = 0.5,
        square: bool = True,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        self.pack = pack
        self.threads = threads or default_session_threads()
        self.providers = resolve_providers(providers)
        det_session = _POOL.get(pack.detector, self.providers, self.threads)
        rec_session = _POOL.get(pack.recognizer, self.providers, self.threads)
        # how to feed the models is read from their graphs, not from the settings
        fixed = pack.detector_input_size
        raw_pixels = pack.recognizer_normalises_input
        if fixed is not None:
            _LOGGER.info(
                "Detector %s has a fixed %dx%d input: every frame is letterboxed into it "
                "(the detector size setting does not apply)",
                pack.detector.name,
                *fixed,
            )
        # several frames per detector run where the graph leaves its batch symbolic
        graph_batch = pack.detector_info.batch_size
        self.detector = ScrfdDetector(
            det_session,
            det_size=det_size,
            score_threshold=det_threshold,
            square=square,
            input_size=fixed,
            batch=max_batch if graph_batch is None else 1,
        )
        self.max_batch = max(1, max_batch)
        _LOGGER.debug(
            "Detector %s: batch %s in its graph, up to %d frames per run",
            pack.detector.name,
            graph_batch if graph_batch is not None else "symbolic",
            self.detector.max_batch,
        )
        self.embedder = Embedder(rec_session, raw_pixels=raw_pixels)
        self.embedding_size = self.embedder.embedding_size
        # recognizer file name, content hash and embedding size: part of every cache key
        # (hashing the file is done here, in the constructor, never on an event loop)
        self.model_id = pack.identity
        # what a reference photo's embedding depends on: the recognizer and the detector
        # with its settings (which face is found, its landmarks, or none): the photo
        # cache's key, so that another detector size never reuses an old "no face"; a fixed
        # detector input replaces the settings it overrides, and a recognizer fed raw pixels
        # is marked (its embeddings made before were of doubly normalised pixels)
        detector = pack.detector
        if fixed is None:
            settings = f"{det_size}|{det_threshold:g}|{'square' if square else 'fit'}"
        else:
            settings = f"{fixed[0]}x{fixed[1]}|{det_threshold:g}|fixed"
        self.photo_key = (
            f"{self.model_id}|{detector.stem}:{file_sha256(detector)[:16]}|{settings}"
            f"{'|pixels' if raw_pixels else ''}"
        )

    def detect(self, image: ImageArray) -> list[Detection]:
        """Faces of a BGR image, without embeddings."""
        return self.detector.detect(image)

    def detect_batch(self, images: Sequence[ImageArray]) -> list[list[Detection]]:
        """The faces of each image (in order): several images per detector run where the
        graph allows a batch (:attr:`ScrfdDetector.max_batch`), else one run per image."""
        return self.detector.detect_batch(images)

    def embed(self, image: ImageArray, detections: Sequence[Detection]) -> FloatArray:
        """Embeddings (one row per detection) of faces of one image, in one batch."""
        return self.embed_batch([(image, detections)])[0]

    def embed_batch(
        self, items: Sequence[tuple[ImageArray, Sequence[Detection]]]
    ) -> list[FloatArray]:
        """Embeddings of the faces of several images, all through the recognizer in one
        batch: one ``(n_i, dim)`` array per item (``n_i`` may be 0)."""
        crops = [align_face(image, det.landmarks) for image, dets in items for det in dets]
        vectors = self.embedder.embed_aligned(crops)
        out: list[FloatArray] = []
        start = 0
        for _image, dets in items:
            out.append(vectors[start : start + len(dets)])
            start += len(dets)
        return out

    def analyze(self, image: ImageArray) -> list[Face]:
        """Detect every face of a BGR image and embed them all in one batch."""
        detections = self.detect(image)
        if not detections:
            return []
        vectors = self.embed(image, detections)
        return [Face(det, vectors[i]) for i, det in enumerate(detections)]

    def embed_photo(self, data: bytes) -> PhotoEmbedding:
        """Embed the main face of a reference photo.

        Undecodable bytes give reason ``not_an_image``; no face gives ``no_face``; with
        several faces the largest is used (``faces`` tells how many there were). A photo that
        is already a 112x112 aligned crop with no detectable face is embedded as it is.
        """
        try:
            image = decode_image(data)
        except ImageError:
            return PhotoEmbedding(None, "not_an_image")
        detections = self.detect(image)
        if not detections:
            if image.shape[:2] == (ALIGNED_SIZE, ALIGNED_SIZE):
                return PhotoEmbedding(self.embedder.embed_aligned([image])[0], None, 1)
            return PhotoEmbedding(None, "no_face")
        largest = max(detections, key=lambda det: det.area)
        vector = self.embed(image, [largest])[0]
        return PhotoEmbedding(vector, None, len(detections))
